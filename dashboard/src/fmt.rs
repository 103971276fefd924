//! How pages write times, durations, sizes and counts.

use std::time::{Duration, UNIX_EPOCH};

/// `350ms`, `4.2s`, `3m05s`, `2h04m`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// A time in UTC to the second: `2026-11-30 09:00:00`.
pub fn time(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// The value of a `datetime-local` input (`2026-11-30T09:00`) for a time.
pub fn input_time(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .to_string()
}

/// A time the filter form sent: ms since the epoch, RFC 3339, or a
/// `datetime-local` value (read as UTC, with or without seconds).
pub fn parse_time(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Some(ms);
    }
    let full;
    let text = if text.len() == 16 && text.as_bytes().get(10) == Some(&b'T') {
        full = format!("{text}:00");
        full.as_str()
    } else {
        text
    };
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_times_and_sizes_read_well() {
        assert_eq!(duration(350), "350ms");
        assert_eq!(duration(4_200), "4.2s");
        assert_eq!(duration(185_000), "3m05s");
        assert_eq!(duration(7_440_000), "2h04m");
        assert_eq!(time(1_764_493_200_000), "2025-11-30 09:00:00");
        assert_eq!(input_time(1_764_493_200_000), "2025-11-30T09:00:00");
        assert_eq!(parse_time("2025-11-30T09:00"), Some(1_764_493_200_000));
        assert_eq!(parse_time("2025-11-30T09:00:00Z"), Some(1_764_493_200_000));
        assert_eq!(parse_time("1764493200000"), Some(1_764_493_200_000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
