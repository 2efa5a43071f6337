//! Flow storage (see issue 3): PostgreSQL bulk writer and the embedded SQLite store.
