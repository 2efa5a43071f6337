//! A blocking client for the parts of the [Grafolean](https://grafolean.com) HTTP API that a
//! NetFlow bot uses, and an in-process stand-in backend for tests.
//!
//! # Guarantees
//!
//! * **Only valid values are sent.** A [`ValueBatch`] holds [`ValuePath`]s (which can only
//!   be built from paths the backend accepts), each at most once, with finite [`Number`]s.
//!   The real backend rejects a whole batch for one bad path and answers 500 to a repeated
//!   path; neither can happen through this crate.
//! * **Every call has a timeout**; idempotent reads are retried with exponential backoff
//!   after transport errors, timeouts and 5xx; a values POST is retried a bounded number of
//!   times only where it cannot duplicate data ([`ClientConfig::post_retries`]).
//! * **The bot token never appears in logs or errors.** It travels as the `b` query
//!   parameter, so errors name the API path without the query, and text from the HTTP stack
//!   is redacted. (ureq itself prints request URLs only at `trace` level: keep the `ureq`
//!   target at `debug` or quieter in production log filters.)
//! * **No panics on network data**, and errors are an [`Error`] enum to act on:
//!   [`Error::Unauthorized`] (bad token), [`Error::Forbidden`] (missing permission, e.g. an
//!   account bot suggesting an entity), [`Error::NotFound`], [`Error::Rejected`] (400 with
//!   the server's message), [`Error::Server`] (5xx), [`Error::Timeout`], [`Error::Transport`]
//!   (also an untrusted server certificate), [`Error::CaFile`] (a CA file that cannot be used).
//! * **HTTPS** (`BACKEND_URL=https://...`) is verified against the bundled Mozilla roots, or
//!   the system's with `platform-certs`; a self-hosted Grafolean with a private CA is trusted
//!   by adding that CA's PEM file with [`ClientConfig::with_ca_file`] (`BACKEND_CA_FILE`).
//!
//! # Which call to use
//!
//! | bot step | call |
//! |---|---|
//! | start-up | [`Client::wait_until_ready`], then [`Client::profile`] |
//! | read jobs (every `JOBS_REFRESH_INTERVAL`) | [`Client::job_config`] |
//! | send one account's aggregates | [`Client::post_values`] with a [`ValueBatch`] |
//! | suggest a newly seen exporter | [`Client::suggest_entity`] with [`NewEntity::netflow_exporter`] |
//! | build `topprotocol` paths | [`protocol_segment`]; addresses: [`Segment::ip`] |
//!
//! The single calls ([`Client::accounts`], [`Client::entities`], [`Client::entity`],
//! [`Client::credential`], [`Client::sensor`], [`Client::status`]) are public too.
//!
//! # Example
//!
//! ```
//! use grafolean_client::{Client, Segment, Token, ValueBatch, ValuePath};
//! # use grafolean_client::test_server::{BotKind, TestServer};
//! # let server = TestServer::start()?;
//! # let account = server.add_account("NetFlow test account");
//! # let (bot, token) = server.add_bot(BotKind::Systemwide);
//! # let cred = server.add_credential(account, "Default NetFlow credential");
//! # let sensor = server.add_sensor(account, "Default NetFlow sensor", None);
//! # server.add_netflow_entity(account, "router", "10.0.0.1", cred, sensor, Some(bot));
//! # let backend_url = server.url();
//!
//! // BACKEND_URL already ends in /api; a token read from a file is trimmed.
//! let client = Client::new(&backend_url, Token::new(&token)?)?;
//! client.wait_until_ready(None)?;
//!
//! for account in client.job_config()?.accounts {
//!     let mut batch = ValueBatch::new();
//!     let total = ValuePath::new("netflow.1min.ingress")?;
//!     for job in &account.entities {
//!         // netflow.1min.ingress.entity.E.topip.10%2e0%2e0%2e1
//!         let entity = total
//!             .child(&Segment::new("entity")?)?
//!             .child(&Segment::from(job.entity_id.0))?;
//!         let top = entity.child(&Segment::new("topip")?)?.child(&Segment::ip(job.exporter))?;
//!         batch.insert(top, 1500u64);
//!     }
//!     batch.insert(total, 1500u64);
//!     client.post_values(account.account.id, &batch)?;
//! }
//! # assert_eq!(server.values().len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! * `test-server`: `test_server`, an in-process HTTP server that behaves like the real
//!   backend for these calls (token check, permissions of systemwide and account bots, path
//!   and value validation, 500 on a repeated path) with fault knobs, for end-to-end tests.
//! * `platform-certs`: verify HTTPS servers with the operating system's certificate store.
//!   Without it, HTTPS uses the bundled Mozilla roots (`webpki-roots`). A
//!   [`ClientConfig::ca_file`] adds to either.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod config;
mod error;
mod jobs;
mod model;
mod path;
mod protocol;
mod roots;
mod transport;
mod values;

#[cfg(feature = "test-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-server")))]
pub mod test_server;

pub use client::{Client, PostReport};
pub use config::{ClientConfig, Token};
pub use error::Error;
pub use jobs::{
    AccountJobs, EntityJob, JobConfig, NETFLOW_PROTOCOL, SensorJob, SkipReason, Skipped,
};
pub use model::{
    Account, AccountId, Credential, CredentialId, Entity, EntityId, NewEntity, Profile,
    ProtocolSettings, Sensor, SensorId, SensorRef, StatusInfo, UserId,
};
pub use path::{MAX_PATH_LEN, PathError, Segment, ValuePath, validate_path};
pub use protocol::{protocol_keyword, protocol_segment};
pub use values::{Number, ValueBatch};
