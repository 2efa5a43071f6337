//! Hour arithmetic shared by both backends: partition bounds, names and the retention cutoff.
//!
//! Flows are kept in hour-sized ranges `[h, h + 1 h)` of their `ts` (UTC). PostgreSQL keeps one
//! partition per range; SQLite has no partitions but applies retention at the same hour
//! boundaries, so both backends forget exactly the same flows.

use crate::StoreError;

/// One hour in microseconds.
pub(crate) const HOUR_MICROS: i64 = 3_600_000_000;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// 0001-01-01T00:00:00Z, the first instant both backends store.
pub(crate) const MIN_TS_MICROS: i64 = -62_135_596_800_000_000;
/// 9999-12-31T23:59:59.999999Z, the last instant both backends store.
pub(crate) const MAX_TS_MICROS: i64 = 253_402_300_800_000_000 - 1;

/// Checks that `ts` is within years 1..=9999 (PostgreSQL's `timestamptz` reaches further, but
/// partition names and the SQLite store keep to four-digit years).
pub(crate) fn check_ts(ts_micros: i64) -> Result<(), StoreError> {
    if (MIN_TS_MICROS..=MAX_TS_MICROS).contains(&ts_micros) {
        Ok(())
    } else {
        Err(StoreError::TimestampOutOfRange { ts_micros })
    }
}

/// The hour number (hours since the Unix epoch, floored) that contains `ts_micros`.
pub(crate) fn hour_of(ts_micros: i64) -> i64 {
    ts_micros.div_euclid(HOUR_MICROS)
}

/// The retention cutoff for `now` and `days`: the start of the hour `days` days before `now`.
/// Everything strictly before it is forgotten, everything at or after it is kept.
pub(crate) fn retention_cutoff(now_micros: i64, days: u32) -> i64 {
    let back = i64::from(days).saturating_mul(DAY_MICROS);
    hour_of(now_micros.saturating_sub(back)).saturating_mul(HOUR_MICROS)
}

/// Civil date (proleptic Gregorian) of a day number since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d and m are in small ranges by construction
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Day number since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDDHH` of an hour number: the suffix of that hour's partition name.
pub(crate) fn hour_suffix(hour: i64) -> String {
    let (y, m, d) = civil_from_days(hour.div_euclid(24));
    format!("{y:04}{m:02}{d:02}{:02}", hour.rem_euclid(24))
}

/// The hour number of a `YYYYMMDDHH` suffix, if it is one.
pub(crate) fn parse_hour_suffix(s: &str) -> Option<i64> {
    if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = s.get(0..4)?.parse().ok()?;
    let m: u32 = s.get(4..6)?.parse().ok()?;
    let d: u32 = s.get(6..8)?.parse().ok()?;
    let h: i64 = s.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 {
        return None;
    }
    let hour = days_from_civil(y, m, d) * 24 + h;
    // reject dates like 0231 that do not round-trip
    (hour_suffix(hour) == s).then_some(hour)
}

/// A `timestamptz` literal for the start of an hour, e.g. `2024-05-01 13:00:00+00`.
pub(crate) fn hour_literal(hour: i64) -> String {
    let (y, m, d) = civil_from_days(hour.div_euclid(24));
    format!("{y:04}-{m:02}-{d:02} {:02}:00:00+00", hour.rem_euclid(24))
}

/// A `timestamptz` literal of an instant to the microsecond, e.g.
/// `2024-05-01 13:05:09.000001+00`. `ts_micros` must pass [`check_ts`].
pub(crate) fn ts_literal(ts_micros: i64) -> String {
    let hour = hour_of(ts_micros);
    let us = ts_micros - hour * HOUR_MICROS;
    let (min, sec, frac) = (us / 60_000_000, us / 1_000_000 % 60, us % 1_000_000);
    let h = hour_literal(hour);
    // "YYYY-MM-DD HH" of the hour's literal, then the rest of the instant
    format!("{}:{min:02}:{sec:02}.{frac:06}+00", &h[..h.len() - 9])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_civil_round_trip_and_known_dates() {
        assert_eq!(hour_suffix(0), "1970010100");
        assert_eq!(hour_literal(0), "1970-01-01 00:00:00+00");
        assert_eq!(ts_literal(0), "1970-01-01 00:00:00.000000+00");
        assert_eq!(ts_literal(-1), "1969-12-31 23:59:59.999999+00");
        assert_eq!(
            ts_literal(1_709_208_123_456_789),
            "2024-02-29 12:02:03.456789+00"
        );
        assert_eq!(ts_literal(MIN_TS_MICROS), "0001-01-01 00:00:00.000000+00");
        assert_eq!(ts_literal(MAX_TS_MICROS), "9999-12-31 23:59:59.999999+00");
        assert_eq!(hour_suffix(hour_of(MIN_TS_MICROS)), "0001010100");
        assert_eq!(hour_suffix(hour_of(MAX_TS_MICROS)), "9999123123");
        assert_eq!(hour_suffix(hour_of(-1)), "1969123123");
        // 2024-02-29 12:xx is a leap day
        assert_eq!(
            parse_hour_suffix("2024022912"),
            Some(hour_of(1_709_208_000_000_000))
        );
        for hour in (hour_of(MIN_TS_MICROS)..hour_of(MAX_TS_MICROS)).step_by(7919) {
            assert_eq!(parse_hour_suffix(&hour_suffix(hour)), Some(hour));
        }
        assert_eq!(parse_hour_suffix("2023022912"), None);
        assert_eq!(parse_hour_suffix("202302291"), None);
    }

    #[test]
    fn test_retention_cutoff_is_hour_aligned() {
        let now = 1_700_000_123_456_789;
        let c = retention_cutoff(now, 5);
        assert_eq!(c % HOUR_MICROS, 0);
        assert!(c <= now - 5 * DAY_MICROS && c > now - 5 * DAY_MICROS - HOUR_MICROS);
        assert_eq!(retention_cutoff(i64::MIN, 5), i64::MIN);
    }
}
