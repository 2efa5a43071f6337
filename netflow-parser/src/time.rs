//! Flow times: sysUptime-relative (v5, v9 FIRST/LAST_SWITCHED), absolute seconds, milliseconds
//! and NTP timestamps (IPFIX), all to Unix milliseconds.

/// Unix milliseconds of a sysUptime instant `t`, given the export time (Unix ms) and the
/// exporter's uptime at export.
///
/// Correct across the 32-bit wrap of sysUptime (every 49.7 days): the distance between `t` and
/// `uptime` is taken modulo 2^32 as a signed serial number (RFC 1982 style), so a flow that
/// started just before the wrap and is exported just after it lies a few ms in the past, not
/// 49.7 days in the future. An instant up to 24.8 days after `uptime` (clock skew) lies after the
/// export time.
#[inline]
pub fn uptime_to_unix_ms(export_ms: u64, uptime: u32, t: u32) -> u64 {
    let behind = uptime.wrapping_sub(t);
    if behind <= i32::MAX as u32 {
        export_ms.saturating_sub(u64::from(behind))
    } else {
        export_ms.saturating_add(u64::from(t.wrapping_sub(uptime)))
    }
}

/// [`uptime_to_unix_ms`] for the many instants of one packet: the export time and uptime taken
/// once, each instant then a subtraction and a clamp (no branch). For export times below 2^62
/// ms (any a header can carry: 32-bit seconds), the only ones [`UptimeClock::new`] takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UptimeClock {
    export_ms: i64,
    uptime: u32,
}

impl UptimeClock {
    /// The clock of a packet exported at `export_ms` (Unix ms) with this sysUptime; `None` for
    /// an export time of 2^62 ms or more.
    #[inline]
    pub(crate) fn new(export_ms: u64, uptime: u32) -> Option<UptimeClock> {
        let export_ms = i64::try_from(export_ms).ok().filter(|&e| e < 1 << 62)?;
        Some(UptimeClock { export_ms, uptime })
    }

    /// Unix milliseconds of the sysUptime instant `t`: as [`uptime_to_unix_ms`].
    #[inline(always)]
    pub(crate) fn unix_ms(&self, t: u32) -> u64 {
        // How far `t` lies behind the export uptime, signed; the sum cannot overflow.
        let behind = i64::from(self.uptime.wrapping_sub(t) as i32);
        (self.export_ms - behind).max(0) as u64
    }
}

/// Seconds between the NTP era 0 epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Unix milliseconds of a 64-bit NTP timestamp (RFC 7011 §6.1.9/§6.1.10: dateTimeMicroseconds,
/// dateTimeNanoseconds): 32 bits of seconds since 1900, 32 bits of fraction. 0 before 1970.
#[inline]
pub fn ntp_to_unix_ms(ntp: u64) -> u64 {
    let secs = ntp >> 32;
    let frac_ms = ((ntp & 0xffff_ffff) * 1000) >> 32;
    secs.checked_sub(NTP_UNIX_OFFSET)
        .map_or(0, |s| s * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_plain() {
        assert_eq!(uptime_to_unix_ms(1_000_000, 50_000, 40_000), 990_000);
        assert_eq!(uptime_to_unix_ms(1_000_000, 50_000, 50_000), 1_000_000);
    }

    #[test]
    fn test_uptime_wrap() {
        // Flow started 1 s before sysUptime wrapped; exported 2 s after the wrap.
        let start = u32::MAX - 999;
        assert_eq!(
            uptime_to_unix_ms(10_000_000, 2_000, start),
            10_000_000 - 3_000
        );
        // A last-switched a little after the export uptime (skew) stays close, not 49.7 days off.
        assert_eq!(uptime_to_unix_ms(10_000_000, 2_000, 2_500), 10_000_500);
        assert_eq!(uptime_to_unix_ms(10_000_000, u32::MAX - 10, 5), 10_000_016);
    }

    /// The per-packet clock agrees with the function everywhere it is defined, saturation at 0
    /// and the 2^31 boundary included.
    #[test]
    fn uptime_clock_matches_the_function() {
        let exports = [0, 1, 999, 1 << 31, 1_700_000_000_000, (1 << 62) - 1];
        let instants = [
            0,
            1,
            1000,
            i32::MAX as u32,
            1 << 31,
            (1 << 31) + 1,
            u32::MAX - 1,
            u32::MAX,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        assert!(UptimeClock::new(1 << 62, 0).is_none());
        assert!(UptimeClock::new(u64::MAX, 0).is_none());
        for &e in &exports {
            for &up in &instants {
                for &t in &instants {
                    let clock = UptimeClock::new(e, up).unwrap();
                    assert_eq!(
                        clock.unix_ms(t),
                        uptime_to_unix_ms(e, up, t),
                        "{e} {up} {t}"
                    );
                }
                for _ in 0..2000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (up, t) = (x as u32, (x >> 32) as u32);
                    let clock = UptimeClock::new(e, up).unwrap();
                    assert_eq!(
                        clock.unix_ms(t),
                        uptime_to_unix_ms(e, up, t),
                        "{e} {up} {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn ntp() {
        assert_eq!(ntp_to_unix_ms(NTP_UNIX_OFFSET << 32), 0);
        assert_eq!(
            ntp_to_unix_ms(((NTP_UNIX_OFFSET + 2) << 32) | 0x8000_0000),
            2_500
        );
        assert_eq!(ntp_to_unix_ms(5), 0);
    }
}
