//! Grafolean HTTP API client for bots (see issue 4).
