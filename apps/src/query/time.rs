//! Time windows of `netflow-query`: nfdump's `-t 2026/12/06.14:00:00[-2026/12/06.15:00:00]`,
//! ISO 8601 (`2026-12-06T14:00:00Z`, `2026-12-06T16:00:00+02:00`), `--last 15m`. Times are
//! UTC unless they carry an offset; microseconds since the Unix epoch.

/// One microsecond-resolution instant parsed from text.
fn civil_to_micros(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> i64 {
    // days from civil (H. Hinnant)
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((mo + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)) * 1_000_000)
        + i64::from(us)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Formats microseconds since the epoch as ISO 8601 UTC: `2026-12-06T14:00:00.250000Z`
/// (fraction only when not zero).
pub fn iso(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if frac == 0 {
        base + "Z"
    } else {
        format!("{base}.{frac:06}Z")
    }
}

fn num(s: &str, lo: u32, hi: u32) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 4 {
        return None;
    }
    s.parse().ok().filter(|n| (lo..=hi).contains(n))
}

/// Parses one instant: `YYYY/MM/DD[.hh[:mm[:ss]]]` (nfdump) or
/// `YYYY-MM-DD[(T| )hh:mm[:ss[.frac]]][Z|±hh:mm]` (ISO 8601).
pub fn parse_instant(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not a time (2026/12/06.14:00:00 or 2026-12-06T14:00:00Z)");
    let s = s.trim();
    let (date, rest, sep) = if s.contains('/') {
        match s.split_once('.') {
            Some((d, t)) => (d, t, '/'),
            None => (s, "", '/'),
        }
    } else {
        match s.find(['T', 't', ' ']) {
            Some(i) => (&s[..i], &s[i + 1..], '-'),
            None => (s, "", '-'),
        }
    };
    let parts: Vec<&str> = date.split(sep).collect();
    let [y, mo, d] = parts[..] else {
        return Err(bad());
    };
    let y = i64::from(num(y, 1, 9999).filter(|_| y.len() == 4).ok_or_else(bad)?);
    let mo = num(mo, 1, 12).ok_or_else(bad)?;
    let d = num(d, 1, days_in_month(y, mo)).ok_or_else(bad)?;
    // the offset: Z, +hh:mm, -hh:mm, +hhmm (ISO only)
    let (clock, offset_us) = if sep == '-' {
        if let Some(c) = rest.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else if let Some(i) = rest.rfind(['+', '-']) {
            let (c, off) = rest.split_at(i);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let off = off[1..].replace(':', "");
            if off.len() != 4 {
                return Err(bad());
            }
            let h = num(&off[..2], 0, 23).ok_or_else(bad)?;
            let m = num(&off[2..], 0, 59).ok_or_else(bad)?;
            (
                c,
                sign * (i64::from(h) * 3600 + i64::from(m) * 60) * 1_000_000,
            )
        } else {
            (rest, 0)
        }
    } else {
        (rest, 0)
    };
    let (clock, frac) = match clock.split_once(['.', ',']) {
        Some((c, f)) if sep == '-' => (c, f),
        _ => (clock, ""),
    };
    let hms: Vec<&str> = if clock.is_empty() {
        Vec::new()
    } else {
        clock.split(':').collect()
    };
    if hms.len() > 3 || (sep == '-' && hms.len() == 1) {
        return Err(bad());
    }
    let field = |i: usize, hi| {
        hms.get(i)
            .map_or(Some(0), |v| num(v, 0, hi).filter(|_| v.len() == 2))
    };
    let h = field(0, 23).ok_or_else(bad)?;
    let mi = field(1, 59).ok_or_else(bad)?;
    let sec = field(2, 60).ok_or_else(bad)?.min(59);
    let us = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let mut f = frac.to_owned();
        f.truncate(6);
        while f.len() < 6 {
            f.push('0');
        }
        f.parse().map_err(|_| bad())?
    };
    Ok(civil_to_micros(y, mo, d, h, mi, sec, us) - offset_us)
}

/// Parses `-t START[-END]`; END defaults to `now_us`. The `-` between the two times is found
/// by trying each `-` until both sides are times (ISO dates contain `-` themselves).
pub fn parse_window(s: &str, now_us: i64) -> Result<(i64, i64), String> {
    let s = s.trim();
    if let Ok(start) = parse_instant(s) {
        return Ok((start, now_us));
    }
    for (i, _) in s.match_indices('-') {
        if let (Ok(a), Ok(b)) = (parse_instant(&s[..i]), parse_instant(&s[i + 1..])) {
            if a > b {
                return Err(format!("-t {s}: the window ends before it starts"));
            }
            return Ok((a, b));
        }
    }
    Err(format!(
        "-t {s}: expected START[-END], times like 2026/12/06.14:00:00 or 2026-12-06T14:00:00Z"
    ))
}

/// Parses `--last` durations: `90s`, `15m`, `2h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a duration like 90s, 15m, 2h or 7d");
    let (n, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, 's'),
    };
    let n: i64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let mul = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mul)
        .and_then(|v| v.checked_mul(1_000_000))
        .filter(|v| *v < 10_000 * 366 * 86_400 * 1_000_000)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_796_565_600_000_000; // 2026-12-06T14:00:00Z

    #[test]
    fn test_nfdump_and_iso_forms() {
        assert_eq!(iso(T), "2026-12-06T14:00:00Z");
        assert_eq!(parse_instant("2026/12/06.14:00:00"), Ok(T));
        assert_eq!(parse_instant("2026/12/06.14"), Ok(T));
        assert_eq!(parse_instant("2026/12/06"), Ok(T - 14 * 3_600_000_000));
        assert_eq!(parse_instant("2026-12-06T14:00:00Z"), Ok(T));
        assert_eq!(parse_instant("2026-12-06 14:00"), Ok(T));
        assert_eq!(parse_instant("2026-12-06T16:00:00+02:00"), Ok(T));
        assert_eq!(parse_instant("2026-12-06T13:30:00-0030"), Ok(T));
        assert_eq!(parse_instant("2026-12-06T14:00:00.25Z"), Ok(T + 250_000));
        assert_eq!(iso(T + 250_000), "2026-12-06T14:00:00.250000Z");
        for bad in [
            "2026/13/06",
            "2026/02/30",
            "2026-12-06T25:00:00Z",
            "yesterday",
            "2026-12-06T14",
            "",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_windows_and_durations() {
        assert_eq!(
            parse_window("2026/12/06.14:00:00-2026/12/06.15:00:00", 0),
            Ok((T, T + 3_600_000_000))
        );
        assert_eq!(
            parse_window("2026-12-06T14:00:00Z-2026-12-06T15:00:00Z", 0),
            Ok((T, T + 3_600_000_000))
        );
        assert_eq!(parse_window("2026-12-06T14:00:00Z", 7), Ok((T, 7)));
        assert!(parse_window("2026/12/06.15:00-2026/12/06.14:00", 0).is_err());
        assert_eq!(parse_duration("15m"), Ok(900_000_000));
        assert_eq!(parse_duration("2d"), Ok(172_800_000_000));
        assert_eq!(parse_duration("90"), Ok(90_000_000));
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("99999999999999d").is_err());
    }
}
