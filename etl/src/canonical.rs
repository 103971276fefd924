/*!
The one text of each date, timestamp and decimal value.

A CSV (or JSON lines) file writes these types in exactly one way, their
canonical text, and a value is read into one of them only when it is that
text, so that every value read comes back byte for byte:

| type | canonical text |
|---|---|
| `date` | `2026-01-05`: a four-digit year, two-digit month and day |
| `timestamp` | `2026-01-05T10:30:00`, then `.` and 1 to 6 digits of the second when it has a fraction, with no trailing zero (`.25`, not `.250`) |
| `timestamptz` | the same, in UTC, then `Z`: `2026-01-05T08:30:00.25Z` |
| `decimal(P,S)` | an optional `-`, the integer digits without leading zeros (`0` alone when there are none), then `.` and exactly `S` digits when `S > 0`: `decimal(10,2)` writes `1.50`, `0.05`, `-12.00` |

Each `parse_*` function reads the usual spellings leniently (a space for the
`T`, a `+02:00` offset, `1.5` for a `decimal(10,2)`), then refuses any text
that is not the canonical one, saying what it would be written as, so the
change is never silent. A value that does not read at all, or that would
lose something (a fraction below the microsecond, a digit beyond the scale,
more digits than the precision) is refused saying why.
*/

/// Why a text is not a value of the type: `None` when it does not read at
/// all, or the reason.
pub type Refusal = Option<String>;

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads `YYYY-M-D` (one or two digits for month and day) into days.
fn lenient_date(s: &[u8]) -> Result<i64, Refusal> {
    let mut parts = s.split(|&b| b == b'-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(None);
    };
    if y.len() != 4 || m.len() > 2 || d.len() > 2 {
        return Err(None);
    }
    let (Some(y), Some(m), Some(d)) = (digits(y), digits(m), digits(d)) else {
        return Err(None);
    };
    let y = i64::from(y);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err(Some("there is no such day".into()));
    }
    Ok(days_from_civil(y, m, d))
}

/// `2026-01-05`; a year outside 0..=9999 (only from a Parquet or Arrow
/// input) carries its sign and all its digits.
pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days));
    if (0..=9999).contains(&y) {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!("{y:+05}-{m:02}-{d:02}")
    }
}

fn canonical<T>(s: &str, value: T, written: String) -> Result<T, Refusal> {
    if written == s {
        Ok(value)
    } else {
        Err(Some(format!("it would be written back as `{written}`")))
    }
}

/// A date (days since 1970-01-01) from its canonical text.
pub fn parse_date(s: &str) -> Result<i32, Refusal> {
    let days = lenient_date(s.as_bytes())?;
    let days = i32::try_from(days).map_err(|_| None::<String>)?;
    // A four-digit year read: ten bytes are two-digit month and day, the
    // canonical text (checked on its shape, without writing it out).
    if s.len() == 10 {
        return Ok(days);
    }
    canonical(s, days, format_date(days))
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `2026-01-05T10:30:00.25`, then `Z` when `utc`.
pub fn format_timestamp(micros: i64, utc: bool) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let date = match i32::try_from(days) {
        Ok(days) => format_date(days),
        Err(_) => format!("(day {days})"),
    };
    let secs = in_day / 1_000_000;
    let frac = in_day % 1_000_000;
    let mut out = format!(
        "{date}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let text = format!("{frac:06}");
        out.push('.');
        out.push_str(text.trim_end_matches('0'));
    }
    if utc {
        out.push('Z');
    }
    out
}

/// A timestamp read by [`lenient_timestamp`].
struct Lenient {
    /// Microseconds since the epoch, in UTC when the text had a zone.
    micros: i64,
    zoned: bool,
    /// The text has the canonical shape: a ten-byte date, `T`, a fraction
    /// of 1 to 6 digits without a trailing zero or none, and no zone but
    /// `Z`. Then it is the canonical text of `micros` (for a `timestamptz`,
    /// when the zone is `Z`), without writing it out to compare.
    canonical: bool,
}

/// Reads `DATE[T ]HH:MM:SS[.fraction][zone]`.
fn lenient_timestamp(s: &str) -> Result<Lenient, Refusal> {
    let b = s.as_bytes();
    let sep = b
        .iter()
        .position(|&c| c == b'T' || c == b' ')
        .ok_or(None::<String>)?;
    let mut canonical = sep == 10 && b[sep] == b'T';
    let days = lenient_date(&b[..sep])?;
    let rest = &b[sep + 1..];
    // The time: HH:MM:SS, then an optional fraction, then an optional zone.
    if rest.len() < 8 || rest[2] != b':' || rest[5] != b':' {
        return Err(None);
    }
    let (Some(h), Some(m), Some(sec)) =
        (digits(&rest[..2]), digits(&rest[3..5]), digits(&rest[6..8]))
    else {
        return Err(None);
    };
    if h > 23 || m > 59 || sec > 59 {
        return Err(Some("there is no such time of day".into()));
    }
    let mut rest = &rest[8..];
    let mut micros = 0i64;
    if let Some(after) = rest.strip_prefix(b".") {
        let n = after.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(None);
        }
        let (frac, tail) = after.split_at(n);
        if frac.len() > 6 && frac[6..].iter().any(|&c| c != b'0') {
            return Err(Some(
                "it has a fraction of a second finer than the microsecond".into(),
            ));
        }
        for i in 0..6 {
            micros = micros * 10 + frac.get(i).map_or(0, |&c| i64::from(c - b'0'));
        }
        canonical &= frac.len() <= 6 && frac.last() != Some(&b'0');
        rest = tail;
    }
    canonical &= matches!(rest, [] | [b'Z']);
    let offset_secs: Option<i64> = match rest {
        [] => None,
        [b'Z'] => Some(0),
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (hh, mm) = match tail {
                [a, b2] => (digits(&[*a, *b2]), Some(0)),
                [a, b2, b':', c, d] | [a, b2, c, d] => (digits(&[*a, *b2]), digits(&[*c, *d])),
                _ => (None, None),
            };
            let (Some(hh), Some(mm)) = (hh, mm) else {
                return Err(None);
            };
            if hh > 23 || mm > 59 {
                return Err(None);
            }
            let secs = i64::from(hh * 3600 + mm * 60);
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => return Err(None),
    };
    let local = days * MICROS_PER_DAY + i64::from(h * 3600 + m * 60 + sec) * 1_000_000 + micros;
    let utc = local - offset_secs.unwrap_or(0) * 1_000_000;
    Ok(Lenient {
        micros: utc,
        zoned: offset_secs.is_some(),
        canonical,
    })
}

/// A timestamp without a zone (µs since the epoch) from its canonical text.
pub fn parse_timestamp(s: &str) -> Result<i64, Refusal> {
    let t = lenient_timestamp(s)?;
    if t.zoned {
        return Err(Some(
            "it has a zone, which a `timestamp` does not keep; declare the column `timestamptz`"
                .into(),
        ));
    }
    if t.canonical {
        return Ok(t.micros);
    }
    canonical(s, t.micros, format_timestamp(t.micros, false))
}

/// An instant (µs since the epoch, UTC) from its canonical text.
pub fn parse_timestamptz(s: &str) -> Result<i64, Refusal> {
    let t = lenient_timestamp(s)?;
    if !t.zoned {
        return Err(Some(format!(
            "it has no zone; a `timestamptz` is written in UTC: `{}`",
            format_timestamp(t.micros, true)
        )));
    }
    if t.canonical {
        return Ok(t.micros);
    }
    canonical(s, t.micros, format_timestamp(t.micros, true))
}

/// `-12.50` for 1250 at scale 2.
pub fn format_decimal(value: i128, scale: u8) -> String {
    let scale = usize::from(scale);
    let digits = value.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// A decimal (the integer of its digits, scaled by `scale`) from its
/// canonical text.
pub fn parse_decimal(s: &str, precision: u8, scale: u8) -> Result<i128, Refusal> {
    let b = s.as_bytes();
    let (negative, body) = match b {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, b),
    };
    let point = body.iter().position(|&c| c == b'.');
    let (int, frac) = match point {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &body[body.len()..]),
    };
    let all_digits = |p: &[u8]| p.iter().all(u8::is_ascii_digit);
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return Err(None);
    }
    let scale_n = usize::from(scale);
    if frac.len() > scale_n && frac[scale_n..].iter().any(|&c| c != b'0') {
        return Err(Some(format!(
            "it has more than {scale} digits after the point, which would be rounded away"
        )));
    }
    // The canonical shape: no `+`, no leading zero but a lone `0`, and
    // exactly `scale` digits after a point (no point at scale 0).
    let shape = b.first() != Some(&b'+')
        && (int == b"0" || int.first().is_some_and(|&c| c != b'0'))
        && match point {
            Some(_) => scale_n > 0 && frac.len() == scale_n,
            None => scale_n == 0,
        };
    let int = &int[int.iter().take_while(|&&c| c == b'0').count()..];
    let max_int = usize::from(precision.saturating_sub(scale));
    if int.len() > max_int {
        return Err(Some(format!(
            "it has {} digits before the point, and a decimal({precision},{scale}) holds {max_int}",
            int.len()
        )));
    }
    let mut value: i128 = 0;
    for i in 0..int.len() + scale_n {
        let d = if i < int.len() {
            int[i]
        } else {
            frac.get(i - int.len()).copied().unwrap_or(b'0')
        };
        value = value * 10 + i128::from(d - b'0');
    }
    if negative {
        value = -value;
    }
    // `-0.00` is written `0.00`.
    if shape && !(negative && value == 0) {
        return Ok(value);
    }
    canonical(s, value, format_decimal(value, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal<T: std::fmt::Debug>(r: Result<T, Refusal>) -> String {
        r.unwrap_err().unwrap_or_else(|| "(does not read)".into())
    }

    /// The shape checks accept a text without writing its value out: every
    /// text they accept must be exactly what the value is written as (a
    /// text they pass over is compared written out, so it cannot be lost).
    #[test]
    fn every_text_accepted_is_what_its_value_is_written_as() {
        let mut accepted = 0;
        let mut dates = Vec::new();
        for y in ["0000", "0001", "1970", "2024", "9999", "197", "19700"] {
            for m in ["1", "01", "2", "02", "12", "13", "001"] {
                for d in ["1", "01", "9", "09", "29", "31", "001"] {
                    dates.push(format!("{y}-{m}-{d}"));
                }
            }
        }
        for s in &dates {
            if let Ok(days) = parse_date(s) {
                assert_eq!(&format_date(days), s);
                accepted += 1;
            }
        }
        for date in &dates {
            for sep in ["T", " ", "t"] {
                for time in ["00:00:00", "23:59:59", "7:00:00", "24:00:00"] {
                    for frac in [
                        "", ".", ".0", ".5", ".50", ".05", ".123456", ".1234560", ".000001",
                        ".100000", ".1234567", ".x",
                    ] {
                        for zone in ["", "Z", "z", "+00:00", "+0530", "-01", "-00:00", "Zx"] {
                            let s = format!("{date}{sep}{time}{frac}{zone}");
                            if let Ok(micros) = parse_timestamp(&s) {
                                assert_eq!(format_timestamp(micros, false), s);
                                accepted += 1;
                            }
                            if let Ok(micros) = parse_timestamptz(&s) {
                                assert_eq!(format_timestamp(micros, true), s);
                                accepted += 1;
                            }
                        }
                    }
                }
            }
        }
        for sign in ["", "-", "+"] {
            for int in ["", "0", "00", "5", "05", "123", "0123"] {
                for point in ["", "."] {
                    for frac in ["", "0", "00", "5", "50", "05", "500", "123"] {
                        let s = format!("{sign}{int}{point}{frac}");
                        for scale in 0..4 {
                            if let Ok(v) = parse_decimal(&s, 10, scale) {
                                assert_eq!(format_decimal(v, scale), s, "scale {scale}");
                                accepted += 1;
                            }
                        }
                    }
                }
            }
        }
        // Not vacuous: a good share of them are canonical.
        assert!(accepted > 1_000, "{accepted} accepted");
    }

    #[test]
    fn days_and_dates_agree_over_the_whole_range() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        for days in -800_000..3_000_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn a_date_reads_only_from_its_canonical_text() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(
            parse_date("2024-02-29").map(format_date).unwrap(),
            "2024-02-29"
        );
        assert_eq!(format_date(parse_date("0001-01-01").unwrap()), "0001-01-01");
        assert_eq!(format_date(parse_date("9999-12-31").unwrap()), "9999-12-31");
        assert!(refusal(parse_date("2026-1-5")).contains("written back as `2026-01-05`"));
        assert!(refusal(parse_date("2023-02-29")).contains("no such day"));
        for bad in ["", "2026-01", "26-01-05", "2026/01/05", "2026-01-05 ", "x"] {
            assert_eq!(parse_date(bad), Err(None), "{bad}");
        }
    }

    #[test]
    fn a_timestamp_reads_only_from_its_canonical_text() {
        for ok in [
            "2026-01-05T10:30:00",
            "2026-01-05T10:30:00.25",
            "2026-01-05T10:30:00.000001",
            "1969-12-31T23:59:59.5",
            "0001-01-01T00:00:00",
        ] {
            let micros = parse_timestamp(ok).unwrap();
            assert_eq!(format_timestamp(micros, false), ok);
        }
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.5"), Ok(1_500_000));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.5"), Ok(-500_000));
        let cases = [
            (
                "2026-01-05 10:30:00",
                "written back as `2026-01-05T10:30:00`",
            ),
            (
                "2026-01-05T10:30:00.250",
                "written back as `2026-01-05T10:30:00.25`",
            ),
            ("2026-01-05T10:30:00.0000001", "finer than the microsecond"),
            ("2026-01-05T10:30:00Z", "declare the column `timestamptz`"),
            ("2026-01-05T24:00:00", "no such time"),
        ];
        for (text, why) in cases {
            assert!(refusal(parse_timestamp(text)).contains(why), "{text}");
        }
        for bad in [
            "2026-01-05",
            "2026-01-05T10:30",
            "2026-01-05T10:30:00.",
            "2026-01-05T1:30:00",
        ] {
            assert_eq!(parse_timestamp(bad), Err(None), "{bad}");
        }
    }

    #[test]
    fn a_timestamptz_is_written_in_utc_and_refuses_other_offsets() {
        let micros = parse_timestamptz("2026-01-05T08:30:00.25Z").unwrap();
        assert_eq!(format_timestamp(micros, true), "2026-01-05T08:30:00.25Z");
        let cases = [
            (
                "2026-01-05T10:30:00+02:00",
                "written back as `2026-01-05T08:30:00Z`",
            ),
            (
                "2026-01-05T08:30:00+00:00",
                "written back as `2026-01-05T08:30:00Z`",
            ),
            (
                "2026-01-05T00:30:00-01",
                "written back as `2026-01-05T01:30:00Z`",
            ),
            ("2026-01-05T08:30:00", "no zone"),
        ];
        for (text, why) in cases {
            assert!(refusal(parse_timestamptz(text)).contains(why), "{text}");
        }
        assert_eq!(parse_timestamptz("2026-01-05T08:30:00+2"), Err(None));
    }

    #[test]
    fn a_decimal_keeps_exactly_its_scale() {
        for (text, p, s, v) in [
            ("1.50", 10, 2, 150),
            ("0.05", 10, 2, 5),
            ("-0.05", 10, 2, -5),
            ("-12.00", 10, 2, -1200),
            ("0", 5, 0, 0),
            ("12345", 5, 0, 12345),
            ("0.12345", 5, 5, 12345),
        ] {
            assert_eq!(parse_decimal(text, p, s), Ok(v), "{text}");
            assert_eq!(format_decimal(v, s), text);
        }
        let big = "9".repeat(28) + "." + &"9".repeat(10);
        assert_eq!(
            format_decimal(parse_decimal(&big, 38, 10).unwrap(), 10),
            big
        );
        let cases = [
            ("1.5", 10, 2, "written back as `1.50`"),
            ("01.50", 10, 2, "written back as `1.50`"),
            ("+1.50", 10, 2, "written back as `1.50`"),
            (".50", 10, 2, "written back as `0.50`"),
            ("-0.00", 10, 2, "written back as `0.00`"),
            ("1.", 10, 0, "written back as `1`"),
            ("1.505", 10, 2, "rounded away"),
            ("123.00", 4, 2, "holds 2"),
        ];
        for (text, p, s, why) in cases {
            assert!(refusal(parse_decimal(text, p, s)).contains(why), "{text}");
        }
        for bad in ["", "-", ".", "1e3", "1,5", " 1.50", "abc"] {
            assert_eq!(parse_decimal(bad, 10, 2), Err(None), "{bad}");
        }
    }
}
