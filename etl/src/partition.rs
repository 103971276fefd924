/*!
Cutting one file into partitions that workers read in parallel.

Partition `i` of `n` of a file of `len` bytes is the byte range
`[boundary(i·len/n), boundary((i+1)·len/n))`, where `boundary(p)` is the first
offset at or after `p` that starts a record. Every partition computes its own
two boundaries with the same function, so neighbours agree on where one ends
and the next begins without talking to each other: no row is read twice or
lost.

A record starts at offset 0, at the end of the file, and just after a newline
that is not inside a quoted field. Whether a newline is inside quotes depends
on every byte before it, so a CSV boundary first counts the quote characters
before `p` (a fast, vectorised pass over the prefix, no parsing), then steps
forward to the first newline at even quote parity. JSON lines need no count:
a newline never occurs inside a JSON value.
*/

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

/// How records are framed.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// RFC 4180: a newline inside `quote`s does not end the record.
    Csv { quote: u8 },
    /// One record per line.
    Lines,
}

const CHUNK: usize = 4 << 20;

/// The byte range of partition `index` of `count`.
pub fn range(
    file: &File,
    len: u64,
    index: u32,
    count: u32,
    cut: Cut,
) -> std::io::Result<(u64, u64)> {
    let nominal = |i: u32| (len as u128 * i as u128 / count.max(1) as u128) as u64;
    let start = boundary(file, len, nominal(index), cut)?;
    let end = boundary(file, len, nominal(index + 1), cut)?;
    Ok((start, end.max(start)))
}

/// The first offset at or after `at` where a record starts.
pub fn boundary(file: &File, len: u64, at: u64, cut: Cut) -> std::io::Result<u64> {
    if at == 0 || at >= len {
        return Ok(at.min(len));
    }
    // A record starts at `p` when byte `p - 1` is a newline outside quotes,
    // so the scan begins at `at - 1`.
    let from = at - 1;
    let mut in_quotes = match cut {
        Cut::Csv { quote } => count_byte(file, from, quote)? % 2 == 1,
        Cut::Lines => false,
    };
    let mut buf = vec![0u8; CHUNK];
    let mut pos = from;
    while pos < len {
        let n = read_at_most(file, &mut buf, pos)?;
        if n == 0 {
            break;
        }
        let mut rest = &buf[..n];
        let mut base = pos;
        loop {
            let hit = match cut {
                Cut::Csv { quote } => memchr::memchr2(quote, b'\n', rest),
                Cut::Lines => memchr::memchr(b'\n', rest),
            };
            let Some(k) = hit else { break };
            if rest[k] == b'\n' {
                if !in_quotes {
                    return Ok(base + k as u64 + 1);
                }
            } else {
                in_quotes = !in_quotes;
            }
            base += k as u64 + 1;
            rest = &rest[k + 1..];
        }
        pos += n as u64;
    }
    Ok(len)
}

/// How many times `byte` occurs in the file's first `end` bytes.
pub(crate) fn count_byte(file: &File, end: u64, byte: u8) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let mut count = 0u64;
    while pos < end {
        let want = ((end - pos) as usize).min(CHUNK);
        let n = read_at_most(file, &mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        // A plain loop the compiler vectorises; far faster than a parse.
        count += buf[..n].iter().filter(|&&b| b == byte).count() as u64;
        pos += n as u64;
    }
    Ok(count)
}

fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads the byte range `[start, end)` of a file.
pub struct RangeReader {
    file: File,
    pos: u64,
    end: u64,
}

impl RangeReader {
    pub fn new(file: File, start: u64, end: u64) -> Self {
        RangeReader {
            file,
            pos: start,
            end,
        }
    }
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(left) as usize;
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> (File, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "conveyor-partition-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        std::fs::write(&path, bytes).unwrap();
        (File::open(&path).unwrap(), path)
    }

    #[test]
    fn partitions_cover_the_file_once_and_never_cut_a_quoted_newline() {
        // Quoted fields with newlines, commas and doubled quotes, and a CRLF row.
        let mut data = b"id,note\r\n".to_vec();
        for i in 0..400 {
            let note = match i % 4 {
                0 => "\"two\nlines\"".to_string(),
                1 => "\"with \"\"quotes\"\", and comma\"".to_string(),
                2 => "\"\n\n\"".to_string(),
                _ => format!("plain{i}"),
            };
            data.extend_from_slice(format!("{i},{note}\n").as_bytes());
        }
        let (file, path) = file_with(&data);
        let len = data.len() as u64;
        for count in [1u32, 2, 3, 7, 64, 1000] {
            let mut expected_start = 0;
            let mut rows = 0;
            for index in 0..count {
                let (s, e) = range(&file, len, index, count, Cut::Csv { quote: b'"' }).unwrap();
                assert_eq!(
                    s, expected_start,
                    "partition {index} of {count} starts where the last ended"
                );
                expected_start = e;
                let mut reader = csv_records(&data[s as usize..e as usize]);
                rows += reader.len();
                reader.clear();
            }
            assert_eq!(expected_start, len, "{count} partitions reach the end");
            assert_eq!(
                rows, 401,
                "{count} partitions: header + 400 records, each once"
            );
        }
        let _ = std::fs::remove_file(path);
    }

    /// Splits CSV bytes into records, quote-aware (test oracle).
    fn csv_records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        let mut q = false;
        for &b in bytes {
            cur.push(b);
            if b == b'"' {
                q = !q;
            } else if b == b'\n' && !q {
                out.push(std::mem::take(&mut cur));
            }
        }
        assert!(cur.is_empty(), "a partition ended inside a record: {cur:?}");
        out
    }

    #[test]
    fn line_partitions_end_after_a_newline() {
        let data = b"{\"a\":1}\n{\"a\":22}\n{\"a\":333}\n";
        let (file, path) = file_with(data);
        let len = data.len() as u64;
        let cuts: Vec<_> = (0..3)
            .map(|i| range(&file, len, i, 3, Cut::Lines).unwrap())
            .collect();
        assert_eq!(cuts, vec![(0, 17), (17, 27), (27, 27)]);
        let _ = std::fs::remove_file(path);
    }
}
