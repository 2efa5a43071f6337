//! Zero-copy, allocation-free NetFlow v5 / v9 (and IPFIX) decoding with a bounded template cache.
//!
//! # Guarantees
//!
//! * **No panics** on any input bytes: every length is checked once when a structure is framed,
//!   and the views built on top ([`V5Packet`], [`Record`], ...) cannot fail afterwards. The crate
//!   is `#![forbid(unsafe_code)]` and fuzzed.
//! * **Zero-copy**: records are views borrowing the datagram; fields are read through offsets
//!   computed once per template ([`Template`](template::Template)), not decoded eagerly.
//! * **No heap allocation per packet** once an exporter's templates are cached: [`Decoder::decode`]
//!   reuses its buffers, and iterating records or building [`Flow`]s allocates nothing.
//! * **Nothing lost silently**: a data set whose template is unknown is kept pending
//!   ([`DecodedDatagram::waiting`]) and decoded when the template arrives; one that waits in vain is
//!   reported ([`DecodedDatagram::expired`]); every loss or framing problem is a typed [`DecodeError`]
//!   in [`DecodedDatagram::issues`], per set, while the rest of the datagram is still decoded.
//! * **Bounded state**: templates per exporter, exporters, fields per template and the pending
//!   buffer all have limits ([`Limits`]). A full cache evicts the exporter seen least recently
//!   (counted: [`Decoder::exporters_evicted`]) rather than lock new exporters out; what that
//!   leaves a spoofing attacker is said at [`TemplateCache`](template::TemplateCache).
//!
//! # Which entry point
//!
//! * [`Decoder`] for a collector: one per process (or per thread), fed every datagram with the
//!   exporter's address and the receive time. It dispatches on the version, learns templates,
//!   and yields [`DataSet`]s of [`Record`]s, or normalized [`Flow`]s directly. A biflow
//!   record (RFC 5103: the reverse direction in reverse IEs of the same record) is two flows,
//!   forward then reverse ([`Record::flows`]).
//! * [`V5Packet`], [`V9Packet`], [`IpfixPacket`] for stateless access to headers and sets.
//! * [`sequence::SequenceTracker`] to turn header sequence numbers into loss counts per exporter.
//! * With the `emit` feature, [`emit`] builds v5 and v9 packets (the mirror of the decoder),
//!   for generators and tests.
//!
//! # Where things are
//!
//! The root holds what almost every user names: the [`Decoder`] and its [`DecodedDatagram`],
//! the views ([`V5Packet`], [`V9Packet`], [`IpfixPacket`], [`FlowSet`], [`DataSet`],
//! [`Record`], [`V5Record`]), what a record becomes ([`Flow`], with the [`RecordOrigin`] and
//! [`Header`] it is read against), [`FieldId`], [`ExporterKey`], [`Limits`] and the error
//! ([`DecodeError`], [`ExceededLimit`], [`TemplateProblem`]). The rest lives in modules named for
//! what it is:
//!
//! | module | what is in it |
//! |---|---|
//! | [`template`] | compiled templates, their field specs and keys, the [`TemplateCache`](template::TemplateCache) |
//! | [`pending`] | data sets waiting for their template, and those given up |
//! | [`options`] | what options data announced per observation domain: sampling, interface names |
//! | [`sequence`] | loss accounting from header sequence numbers (collector policy, not decoding) |
//! | [`time`] | the exporters' clocks turned into Unix milliseconds |
//! | [`iter`] | the iterators, named after what they yield |
//! | `emit` | packet builders (feature `emit`) |
//!
//! # Example
//!
//! ```
//! use netflow_wire::{Decoder, Limits};
//! use std::net::{IpAddr, Ipv4Addr};
//!
//! # #[rustfmt::skip]
//! let datagram: &[u8] = &[
//!     0, 9, 0, 2, 0, 0, 0, 100, 0x65, 0x92, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, // v9 header
//!     0, 0, 0, 24,                 // template flowset, 24 bytes
//!     1, 0, 0, 4,                  // template 256, 4 fields
//!     0, 8, 0, 4, 0, 12, 0, 4,     // IPV4_SRC_ADDR/4, IPV4_DST_ADDR/4
//!     0, 4, 0, 1, 0, 1, 0, 2,      // PROTOCOL/1, IN_BYTES/2
//!     1, 0, 0, 15,                 // data flowset for template 256, 15 bytes
//!     10, 0, 0, 1, 192, 0, 2, 7, 6, 5, 220, // one record
//! ];
//! let mut decoder = Decoder::new(Limits::default());
//! let exporter = IpAddr::V4(Ipv4Addr::LOCALHOST);
//! let decoded = decoder.decode(exporter, 1_700_000_000_000_000, datagram)?;
//! assert!(decoded.issues().is_empty());
//! let flows: Vec<_> = decoded.flows().collect();
//! assert_eq!(flows.len(), 1);
//! assert_eq!(flows[0].src_addr, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
//! assert_eq!((flows[0].protocol, flows[0].bytes), (6, 1500));
//! # Ok::<(), netflow_wire::DecodeError>(())
//! ```
//!
//! # Features
//!
//! * `emit`: packet builders in [`emit`] (no extra dependencies).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
// The docs link to `emit`, which exists with its feature only (docs.rs builds all features).
#![cfg_attr(not(feature = "emit"), allow(rustdoc::broken_intra_doc_links))]
#![doc(test(attr(deny(warnings))))]

mod cache;
mod decoded;
mod decoder;
mod error;
mod exporters;
mod field;
mod flow;
mod header;
mod ipfix;
mod key;
pub mod options;
pub mod pending;
mod record;
mod report;
pub mod sequence;
pub mod template;
pub mod time;
mod v5;
mod v9;
mod wire;

#[cfg(feature = "emit")]
pub mod emit;

/// The iterators of the decoded datagram and of the views, named after what they yield.
pub mod iter {
    pub use crate::decoded::{DataSets, Flows};
    pub use crate::record::{FieldValues, RecordFlows, Records};
    pub use crate::v9::FlowSets;
}

pub use cache::Limits;
pub use decoded::{DataSet, DecodedDatagram};
pub use decoder::Decoder;
pub use error::{DecodeError, ExceededLimit, TemplateProblem};
pub use field::FieldId;
pub use flow::Flow;
pub use header::{Header, RecordOrigin};
pub use ipfix::IpfixPacket;
pub use key::ExporterKey;
pub use record::Record;
pub use v5::{V5Packet, V5Record};
pub use v9::{FlowSet, V9Packet};
