/*!
What the PostgreSQL source and sink share: the session, errors that never
show a password, and the binary COPY format's constants.

A session sets `standard_conforming_strings = on` (so a backslash in a
literal is never an escape: params become literals with
`conveyor_flow::params::sql_literal`) and `application_name = conveyor`.
A load's session also sets `TimeZone = UTC` (see the sink); an extract's
keeps the server's, which its query may rely on (`current_date`).

# The binary COPY format
`COPY ... (FORMAT binary)` frames rows as: an 11-byte signature, a 32-bit
flags word and a header extension; then per row a 16-bit field count and,
per field, a 32-bit length (-1: NULL) and the value in the type's binary
form (`typsend`/`typreceive`); then a field count of -1. Integers are big
endian; a date is days and a timestamp microseconds since 2000-01-01; a
numeric is base-10000 digits ([`numeric_to_i128`], [`i128_to_numeric`]).
*/

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use conveyor_schemas::names::{check_sql_table, quote_sql_ident};
use conveyor_schemas::redact::{redact_in, redact_url};

use conveyor_etl::error::{EtlError, Result};

/// The first bytes of a binary COPY stream.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
pub const DAYS_1970_TO_2000: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub const MICROS_1970_TO_2000: i64 = 946_684_800_000_000;

/// A server's session, opened for `url`.
pub struct Session {
    pub client: postgres::Client,
    /// The URL with its password hidden, for every message.
    pub shown: String,
    /// The URL itself, to hide it in what the server or client says.
    pub(crate) url: String,
}

impl Session {
    /// Connects to `url` (a libpq URL or key=value string) and sets the
    /// session up.
    pub fn connect(url: &str) -> Result<Session> {
        let shown = redact_url(url);
        let mut config = postgres::Config::from_str(url).map_err(|e| {
            EtlError::Spec(format!(
                "PostgreSQL URL `{shown}` is not valid: {}",
                redact_in(&e.to_string(), url)
            ))
        })?;
        config.application_name("conveyor");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(15));
        }
        let client = config.connect(postgres::NoTls).map_err(|e| EtlError::Io {
            file: PathBuf::from(&shown),
            source: std::io::Error::other(format!(
                "cannot connect: {}",
                redact_in(&describe(&e), url)
            )),
        })?;
        let mut session = Session {
            client,
            shown,
            url: url.to_string(),
        };
        session.execute_batch("SET standard_conforming_strings = on")?;
        Ok(session)
    }

    /// Runs statements with no parameters.
    pub fn execute_batch(&mut self, sql: &str) -> Result<()> {
        self.client.batch_execute(sql).map_err(|e| self.error(e))
    }

    /// The error `e` of this session, as a task error: its password hidden,
    /// retryable when the server or the network may get better.
    pub fn error(&self, e: postgres::Error) -> EtlError {
        error(&self.shown, &self.url, e)
    }

    /// A data error about this session's server.
    pub fn data(&self, message: impl Into<String>) -> EtlError {
        EtlError::data(std::path::Path::new(&self.shown), message)
    }
}

/// `e`, met while talking to the server at `url` (shown as `shown`).
pub fn error(shown: &str, url: &str, e: postgres::Error) -> EtlError {
    let text = redact_in(&describe(&e), url);
    let class = e.code().map(|c| c.code()[..2].to_string());
    match class.as_deref() {
        // Data exceptions and integrity violations: the rows are wrong.
        Some("22") | Some("23") | Some("21") => EtlError::data(std::path::Path::new(shown), text),
        // Connection trouble, serialization failures and deadlocks,
        // insufficient resources, operator intervention, system errors.
        Some("08") | Some("40") | Some("53") | Some("57") | Some("58") | None => EtlError::Io {
            file: PathBuf::from(shown),
            source: std::io::Error::other(text),
        },
        // Syntax, undefined objects, permissions: the task's spec is wrong.
        Some(_) => EtlError::Spec(format!("{shown}: {text}")),
    }
}

/// The server's message with its detail and hint, or the client's.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!(" (where: {w})"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}

/// A table name, checked (`table` or `schema.table`) and quoted.
pub fn quoted_table(table: &str) -> Result<String> {
    let (schema, name) = check_sql_table(table).map_err(|e| EtlError::Spec(e.to_string()))?;
    Ok(match schema {
        Some(s) => format!("{}.{}", quote_sql_ident(s), quote_sql_ident(name)),
        None => quote_sql_ident(name),
    })
}

/// The fence table beside `table`: in its schema, if it names one.
pub fn fence_table(table: &str) -> Result<String> {
    let (schema, _) = check_sql_table(table).map_err(|e| EtlError::Spec(e.to_string()))?;
    Ok(match schema {
        Some(s) => format!("{}.\"conveyor_commits\"", quote_sql_ident(s)),
        None => "\"conveyor_commits\"".to_string(),
    })
}

/// A numeric's binary form as an integer scaled by `10^scale`; `Err` with
/// the reason when it is not a finite number that fits.
pub fn numeric_to_i128(b: &[u8], scale: i8) -> std::result::Result<i128, String> {
    if b.len() < 8 {
        return Err("a numeric value is truncated".into());
    }
    let ndigits = i16::from_be_bytes([b[0], b[1]]) as usize;
    let weight = i16::from_be_bytes([b[2], b[3]]) as i32;
    let sign = u16::from_be_bytes([b[4], b[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN is not a decimal".into()),
        0xD000 | 0xF000 => return Err("infinity is not a decimal".into()),
        _ => return Err(format!("a numeric has the unknown sign {sign:#x}")),
    }
    if b.len() < 8 + 2 * ndigits {
        return Err("a numeric value is truncated".into());
    }
    let mut acc: i128 = 0;
    let overflow = || format!("does not fit in 38 digits with scale {scale}");
    for i in 0..ndigits {
        let d = u16::from_be_bytes([b[8 + 2 * i], b[9 + 2 * i]]) as i128;
        if d == 0 {
            continue;
        }
        // The power of ten of this digit in the scaled integer.
        let pow = 4 * (weight - i as i32) + scale as i32;
        if pow >= 0 {
            let f = 10i128.checked_pow(pow as u32).ok_or_else(overflow)?;
            acc = d
                .checked_mul(f)
                .and_then(|v| acc.checked_add(v))
                .ok_or_else(overflow)?;
        } else {
            let f = 10i128.pow((-pow).min(4) as u32);
            if d % f != 0 {
                return Err(format!("has more than {scale} digits after the point"));
            }
            acc += d / f;
        }
    }
    if acc.unsigned_abs() >= 10u128.pow(38) {
        return Err(overflow());
    }
    Ok(if sign == 0x4000 { -acc } else { acc })
}

/// The binary form of the numeric `v / 10^scale`, appended to `out`.
pub fn i128_to_numeric(v: i128, scale: i8, out: &mut Vec<u8>) {
    let scale = scale.max(0) as usize;
    let digits = v.unsigned_abs().to_string();
    // Integer and fraction digits, the fraction padded to `scale`.
    let (int, frac) = if digits.len() > scale {
        (
            &digits[..digits.len() - scale],
            digits[digits.len() - scale..].to_string(),
        )
    } else {
        ("", format!("{:0>scale$}", digits))
    };
    // Base-10000 groups aligned on the point.
    let int_pad = (4 - int.len() % 4) % 4;
    let int_text = format!("{}{int}", "0".repeat(int_pad));
    let frac_pad = (4 - frac.len() % 4) % 4;
    let frac_text = format!("{frac}{}", "0".repeat(frac_pad));
    let group = |s: &str| -> Vec<u16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0u16, |a, d| a * 10 + (d - b'0') as u16))
            .collect()
    };
    let int_groups = group(&int_text);
    let frac_groups = group(&frac_text);
    let mut weight = int_groups.len() as i32 - 1;
    let mut all: Vec<u16> = int_groups.into_iter().chain(frac_groups).collect();
    // No leading or trailing zero groups.
    let lead = all.iter().take_while(|d| **d == 0).count();
    all.drain(..lead);
    weight -= lead as i32;
    while all.last() == Some(&0) {
        all.pop();
    }
    if all.is_empty() {
        weight = 0;
    }
    let sign: u16 = if v < 0 && !all.is_empty() { 0x4000 } else { 0 };
    out.extend_from_slice(&((8 + 2 * all.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(all.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as i16).to_be_bytes());
    for d in all {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_round_trip_through_the_binary_form() {
        for (v, s) in [
            (0i128, 0i8),
            (0, 5),
            (1, 0),
            (-1, 0),
            (12345, 2),
            (-12345, 2),
            (1, 9),
            (10000, 0),
            (100000000, 4),
            (5, 1),
            (99999999999999999999999999999999999999, 0),
            (-99999999999999999999999999999999999999, 10),
            (123456789012345678901234567890, 30),
            (7, 38),
        ] {
            let mut buf = Vec::new();
            i128_to_numeric(v, s, &mut buf);
            assert_eq!(
                i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize,
                buf.len() - 4
            );
            assert_eq!(numeric_to_i128(&buf[4..], s), Ok(v), "{v} scale {s}");
        }
    }

    #[test]
    fn special_numerics_and_overflow_are_errors() {
        let nan = [0, 0, 0, 0, 0xC0, 0, 0, 0];
        assert!(numeric_to_i128(&nan, 0).unwrap_err().contains("NaN"));
        let inf = [0, 0, 0, 0, 0xD0, 0, 0, 0];
        assert!(numeric_to_i128(&inf, 0).unwrap_err().contains("infinity"));
        // 1 * 10000^10 = 10^40: more than 38 digits.
        let big = [0, 1, 0, 10, 0, 0, 0, 0, 0, 1];
        assert!(numeric_to_i128(&big, 0).unwrap_err().contains("38 digits"));
    }

    #[test]
    fn tables_are_checked_and_quoted() {
        assert_eq!(
            quoted_table("public.colors").unwrap(),
            "\"public\".\"colors\""
        );
        assert_eq!(fence_table("s.t").unwrap(), "\"s\".\"conveyor_commits\"");
        assert_eq!(fence_table("t").unwrap(), "\"conveyor_commits\"");
        assert!(quoted_table("x; DROP TABLE y").is_err());
    }
}
