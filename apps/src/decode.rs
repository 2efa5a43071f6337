//! `netflow-decode`: decode every NetFlow/IPFIX datagram of a capture into JSON lines.

use std::io::Write;
use std::path::Path;

use netflow_wire::{DecodeError, Decoder, ExporterKey, Limits};

use crate::capture::{self, CaptureStats};
use crate::flowjson;

/// What a decode run saw, printed as the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// What the capture held.
    pub capture: CaptureStats,
    /// UDP datagrams decoded as NetFlow (after the port filter).
    pub packets: u64,
    /// Datagrams whose header could not be decoded.
    pub bad_packets: u64,
    /// Data records decoded (flows and options records).
    pub records: u64,
    /// Flows printed: one a record, two for a biflow record whose halves both carry traffic.
    pub flows: u64,
    /// Data records that are not flows (options data, no addresses).
    pub other_records: u64,
    /// Data sets that arrived before their template (decoded later if it came).
    pub template_misses: u64,
    /// Data sets lost: their template never came, or the pending buffer was full.
    pub sets_lost: u64,
    /// Other per-set problems (bad templates, limits, trailing bytes...).
    pub set_errors: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "packets {} (bad {}), records {}, flows {}, other records {}, template misses {}, sets lost {}, errors {}; capture: {} frames, {} UDP, {} not UDP, {} unreadable",
            self.packets,
            self.bad_packets,
            self.records,
            self.flows,
            self.other_records,
            self.template_misses,
            self.sets_lost,
            self.set_errors,
            self.capture.frames,
            self.capture.udp,
            self.capture.not_udp,
            self.capture.unreadable
        )
    }
}

/// Decodes `file` (datagrams to `port` only, when given) with one template cache, writing one
/// JSON line per flow to `out` (counters as exported; a biflow record's forward half, then its
/// reverse half). Sampling rates the exporters
/// announced (v5 header, v9/IPFIX options data) are written to `log`, one line each. Exporters are keyed by address, or by address and port
/// with `key_by_port`. Problems are written to `log`, one line each.
pub fn run(
    file: &Path,
    port: Option<u16>,
    key_by_port: bool,
    out: &mut impl Write,
    log: &mut impl Write,
) -> anyhow::Result<Summary> {
    let mut decoder = Decoder::new(Limits::default());
    let mut s = Summary::default();
    let mut io_err = None;
    let mut v5_sampling = std::collections::BTreeMap::new();
    s.capture = capture::for_each_udp(file, |d| {
        if io_err.is_some() || port.is_some_and(|p| p != d.dst.port()) {
            return;
        }
        s.packets += 1;
        let key = if key_by_port {
            ExporterKey::from(d.src)
        } else {
            ExporterKey::from(d.src.ip())
        };
        let decoded = match decoder.decode(key, d.ts_micros, d.payload) {
            Ok(x) => x,
            Err(e) => {
                s.bad_packets += 1;
                let _ = writeln!(log, "{} -> {}: {e}", d.src, d.dst);
                return;
            }
        };
        s.template_misses += decoded.waiting_count() as u64;
        // A datagram lists its first 64 problems; the rest are counted only.
        s.set_errors += (decoded.issue_count() - decoded.issues().len()) as u64;
        for issue in decoded.issues() {
            match issue {
                DecodeError::PendingDropped { .. } => {
                    s.template_misses += 1;
                    s.sets_lost += 1;
                }
                _ => s.set_errors += 1,
            }
            let _ = writeln!(log, "{} -> {}: {issue}", d.src, d.dst);
        }
        s.sets_lost += decoded.expired_count() as u64;
        for e in decoded.expired() {
            let _ = writeln!(
                log,
                "data set of template {} ({} bytes) lost: template never arrived",
                e.key, e.bytes
            );
        }
        let h = decoded.header();
        if h.version == 5 && h.sampling_interval() > 1 {
            v5_sampling.insert(d.src.ip(), h.sampling_interval());
        }
        for set in decoded.data_sets() {
            let ctx = set.context();
            for r in set.records() {
                s.records += 1;
                // A biflow record (RFC 5103) is two flows, forward then reverse: a line each.
                let mut flows = r.flows(ctx).peekable();
                if flows.peek().is_none() {
                    s.other_records += 1;
                }
                for f in flows {
                    s.flows += 1;
                    if let Err(e) =
                        flowjson::write_flow(out, &ctx.header, set.key().template_id, &f)
                    {
                        io_err = Some(e);
                        return;
                    }
                }
            }
        }
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    // Sampling rates, printed apart from the flows (whose counters stay as exported).
    let mut rates: Vec<String> = v5_sampling
        .iter()
        .map(|(a, r)| format!("exporter {a} v5: 1 in {r} (header)"))
        .collect();
    for (k, info) in decoder.domains() {
        if let Some(r) = info.default_rate() {
            rates.push(format!(
                "exporter {} v{} domain {}: 1 in {r} (options data)",
                k.exporter, k.version, k.domain
            ));
        }
        for (id, r) in &info.samplers {
            rates.push(format!(
                "exporter {} v{} domain {} sampler {id}: 1 in {r} (options data)",
                k.exporter, k.version, k.domain
            ));
        }
    }
    rates.sort();
    for r in rates {
        writeln!(log, "sampling: {r}")?;
    }
    for e in decoder.expire(i64::MAX) {
        s.sets_lost += 1;
        writeln!(
            log,
            "data set of template {} ({} bytes) lost: template never arrived",
            e.key, e.bytes
        )?;
    }
    Ok(s)
}
