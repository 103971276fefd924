/*!
A bound on the length of one record, so that hostile or broken input cannot
make a streaming reader buffer without end. A CSV field with a stray opening
quote would otherwise swallow the rest of the file into one record; a JSON
line without a newline does the same.

[`RecordGuard`] wraps the file under the parser. It scans the bytes as they
pass (quote-aware for CSV) and fails the read with `InvalidData`, naming the
line where the record started, once one record grows past the limit. The
worker reports it as a non-retryable data error naming the file.
*/

use std::io::{Read, Seek, SeekFrom};

#[derive(Clone, Copy, Debug)]
pub enum Framing {
    /// RFC 4180: a newline inside double quotes does not end the record.
    Csv { quote: u8 },
    /// One record per line.
    Lines,
}

pub struct RecordGuard<R> {
    inner: R,
    framing: Framing,
    max: u64,
    in_quotes: bool,
    record_len: u64,
    line: u64,
    record_line: u64,
}

impl<R> RecordGuard<R> {
    pub fn new(inner: R, framing: Framing, max: u64) -> Self {
        RecordGuard {
            inner,
            framing,
            max,
            in_quotes: false,
            record_len: 0,
            line: 1,
            record_line: 1,
        }
    }

    fn scan(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let quote = match self.framing {
            Framing::Csv { quote } => Some(quote),
            Framing::Lines => None,
        };
        let mut rest = bytes;
        loop {
            let hit = match quote {
                Some(q) => memchr::memchr2(q, b'\n', rest),
                None => memchr::memchr(b'\n', rest),
            };
            let Some(at) = hit else {
                self.record_len += rest.len() as u64;
                return self.check();
            };
            self.record_len += at as u64;
            self.check()?;
            if rest[at] == b'\n' {
                self.line += 1;
                if self.in_quotes {
                    self.record_len += 1;
                } else {
                    self.record_len = 0;
                    self.record_line = self.line;
                }
            } else {
                self.in_quotes = !self.in_quotes;
                self.record_len += 1;
            }
            self.check()?;
            rest = &rest[at + 1..];
        }
    }

    fn check(&self) -> std::io::Result<()> {
        if self.record_len <= self.max {
            return Ok(());
        }
        let hint = if self.in_quotes {
            " (an unclosed quote?)"
        } else {
            ""
        };
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the record starting at line {} is longer than the worker's max_record of {} bytes{hint}",
                self.record_line, self.max
            ),
        ))
    }
}

impl<R: Read> Read for RecordGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scan(&buf[..n])?;
        Ok(n)
    }
}

impl<R: Seek> Seek for RecordGuard<R> {
    /// Only rewinding to the start is meaningful: the scan starts over.
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let at = self.inner.seek(pos)?;
        if at != 0 {
            return Err(std::io::Error::other(
                "RecordGuard can only seek back to the start",
            ));
        }
        self.in_quotes = false;
        self.record_len = 0;
        self.line = 1;
        self.record_line = 1;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8], framing: Framing, max: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        RecordGuard::new(data, framing, max).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn quoted_newlines_belong_to_the_record_and_long_records_fail_naming_their_line() {
        let csv = Framing::Csv { quote: b'"' };
        // Records of at most 12 bytes pass, quoted newlines included.
        assert!(read_all(b"a,b\n\"x\ny\",2\n\"q\"\"q\",3\n", csv, 12).is_ok());
        let err = read_all(b"a,b\n1,2\n\"never closed,3\n4,5\n6,7\n", csv, 12).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let text = err.to_string();
        assert!(
            text.contains("starting at line 3") && text.contains("unclosed quote"),
            "{text}"
        );
        let err = read_all(b"{\"a\":1}\n{\"a\":\"0123456789\"}\n", Framing::Lines, 12).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
