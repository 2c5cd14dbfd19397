//! Times and windows on the command line: `--since` / `--until` as RFC 3339 or relative to
//! now (`-1h`), `--window` as a duration (`1m`) or a request count (`1000req`).

use serde::Serialize;

/// How the time series is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", content = "size", rename_all = "snake_case")]
pub enum Window {
    /// Windows of this many milliseconds from the first request (or `--since`).
    Millis(i64),
    /// Windows of this many requests.
    Requests(u64),
}

impl Window {
    /// About 20 windows over `span_ms`, rounded up to a round duration.
    pub fn auto(span_ms: i64) -> Window {
        const STEPS: [i64; 14] = [
            1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000,
            3_600_000, 10_800_000, 21_600_000, 86_400_000,
        ];
        let want = span_ms / 20;
        Window::Millis(
            STEPS
                .iter()
                .copied()
                .find(|&s| s >= want)
                .unwrap_or(86_400_000 * (want / 86_400_000 + 1)),
        )
    }
}

fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    })
}

/// A duration such as `500ms`, `30s`, `5m`, `2h`, `1d`, in milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}': expected a number and a unit (500ms, 30s, 5m, 2h, 1d)"))?;
    let ms = unit_ms(unit.trim())
        .ok_or_else(|| format!("'{s}': unknown unit '{unit}', expected ms, s, m, h or d"))?;
    let v = n * ms as f64;
    if !(1.0..1e15).contains(&v) {
        return Err(format!("'{s}': must be at least 1 ms"));
    }
    Ok(v.round() as i64)
}

/// `--window`: a duration (`1m`) or a request count (`1000req`).
pub fn parse_window(s: &str) -> Result<Window, String> {
    if let Some(n) = s.trim().strip_suffix("req") {
        let n: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("'{s}': expected a whole number of requests, e.g. 1000req"))?;
        if n == 0 {
            return Err(format!("'{s}': a window holds at least one request"));
        }
        return Ok(Window::Requests(n));
    }
    parse_duration(s).map(Window::Millis)
}

/// `--since` / `--until`: RFC 3339 (`2026-11-30T04:00:00Z`, `…+01:00`, fractions allowed),
/// `now`, or relative to `now_ms` (`-1h`, `-30m`), as Unix milliseconds.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let t = s.trim();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(rel) = t.strip_prefix('-') {
        return parse_duration(rel).map(|d| now_ms - d).map_err(|e| {
            format!("{e}; a time is RFC 3339 (2026-11-30T04:00:00Z) or relative (-1h)")
        });
    }
    rfc3339(t).ok_or_else(|| {
        format!(
            "'{s}': expected RFC 3339 (2026-11-30T04:00:00Z), `now` or a relative time (-1h, -30m)"
        )
    })
}

fn rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if digits == 0 {
            return None;
        }
        let f: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        ms = f.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6
            && o.is_ascii()
            && (o.starts_with('+') || o.starts_with('-'))
            && &o[3..4] == ":" =>
        {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_relative_times_count_back() {
        let t = parse_time("2026-11-30T04:13:22.5Z", 0).expect("parses");
        assert_eq!(t, 1_796_012_002_500);
        assert_eq!(format_ms(t), "2026-11-30T04:13:22.500Z");
        assert_eq!(parse_time("2026-11-30T05:13:22.5+01:00", 0), Ok(t));
        assert_eq!(parse_time("-1h", 10_000_000), Ok(10_000_000 - 3_600_000));
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("2026-13-01T00:00:00Z", 0).is_err());
        assert!(parse_time("2026-11-30T04:13:22+0é00", 0).is_err());
        assert!(parse_time("2026-11-30T04:13:22é", 0).is_err());
    }

    #[test]
    fn windows_are_durations_or_counts() {
        assert_eq!(parse_window("1m"), Ok(Window::Millis(60_000)));
        assert_eq!(parse_window("1000req"), Ok(Window::Requests(1000)));
        assert_eq!(parse_window("1.5s"), Ok(Window::Millis(1500)));
        assert!(parse_window("0req").is_err());
        assert!(parse_window("5 parsecs").is_err());
        assert_eq!(Window::auto(600_000), Window::Millis(30_000));
    }
}
