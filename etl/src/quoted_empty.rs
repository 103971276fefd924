/*!
Which CSV fields are a quoted empty string (`""`).

arrow-csv reads both `1,,` and `1,""` as a null. Conveyor tells them apart:
an unquoted empty field is a missing value (null), while `""` is an empty
string, which makes its column text (README, "No silent changes").

[`QuotedEmpties`] wraps the bytes under the CSV parser and notes each `""`
field as it passes, by record and column, in [`EmptyCells`], which the
typing drains batch by batch. It reads ahead of the parser by at most the
parser's buffer, so the cells it holds stay few. It splits records and
fields the way csv-core (arrow-csv's parser) does: fields end at the
delimiter outside quotes, `""` inside quotes is a quote, records end at
`\n`, `\r` or `\r\n`, and an empty line is no record.
*/

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// Quoted-empty fields seen and not yet typed: (record, column), both from
/// 0, records counted from the start of the bytes read (a header included).
#[derive(Clone, Default)]
pub struct EmptyCells(Arc<Mutex<VecDeque<(u64, usize)>>>);

impl EmptyCells {
    /// Takes the cells of the records before `end`.
    pub fn take_before(&self, end: u64) -> Vec<(u64, usize)> {
        let mut cells = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = cells.iter().take_while(|(record, _)| *record < end).count();
        cells.drain(..n).collect()
    }

    fn push(&self, record: u64, column: usize) {
        let mut cells = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cells.push_back((record, column));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Between records: line ends here are empty lines, not records.
    StartRecord,
    /// Inside a record, outside quotes.
    InRecord,
    Quoted,
    /// A quote inside a quoted field: a doubled quote, or the field's end.
    QuoteInQuoted,
}

pub struct QuotedEmpties<R> {
    inner: R,
    delimiter: u8,
    quote: u8,
    state: State,
    /// In `InRecord`: whether the next byte starts a field.
    at_field_start: bool,
    /// The quoted field being read has a byte between its quotes.
    has_text: bool,
    record: u64,
    /// The column, but for the delimiters in `uncounted`.
    column: usize,
    /// Stretches of the buffer being scanned, outside quotes, whose
    /// delimiters are not in `column` yet. They are counted only when a
    /// quoted-empty field needs its column, or when the buffer ends inside a
    /// record; a record without a `""` field is never counted at all.
    uncounted: Vec<(usize, usize)>,
    cells: EmptyCells,
    finished: bool,
}

impl<R> QuotedEmpties<R> {
    pub fn new(inner: R, delimiter: u8, quote: u8) -> Self {
        QuotedEmpties {
            inner,
            delimiter,
            quote,
            state: State::StartRecord,
            at_field_start: true,
            has_text: false,
            record: 0,
            column: 0,
            uncounted: Vec::new(),
            cells: EmptyCells::default(),
            finished: false,
        }
    }

    /// Where the quoted-empty fields are noted.
    pub fn cells(&self) -> EmptyCells {
        self.cells.clone()
    }

    /// The quoted field that just closed (in `bytes`, the buffer being
    /// scanned) ends here.
    fn end_quoted_field(&mut self, bytes: &[u8]) {
        if !self.has_text {
            self.count_columns(bytes);
            self.cells.push(self.record, self.column);
        }
    }

    /// Brings `column` up to date with the stretches of `bytes` passed.
    fn count_columns(&mut self, bytes: &[u8]) {
        for (from, to) in self.uncounted.drain(..) {
            self.column += count_byte(&bytes[from..to], self.delimiter);
        }
    }

    fn end_record(&mut self) {
        self.record += 1;
        self.column = 0;
        self.uncounted.clear();
        self.state = State::StartRecord;
    }

    fn scan(&mut self, bytes: &[u8]) {
        self.scan_buffer(bytes);
        // The buffer goes: what the record so far passed is counted now.
        self.count_columns(bytes);
    }

    /// Most records hold no quote at all: outside quotes the scan jumps from
    /// quote or line end to the next with memchr, and notes the stretch it
    /// passed, to count its delimiters only if a `""` field follows in the
    /// same record, instead of stopping at each field.
    fn scan_buffer(&mut self, bytes: &[u8]) {
        let (delimiter, quote) = (self.delimiter, self.quote);
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::StartRecord => {
                    if bytes[i] == b'\n' || bytes[i] == b'\r' {
                        // An empty line (or the \n of a \r\n).
                        i += 1;
                        continue;
                    }
                    self.state = State::InRecord;
                    self.at_field_start = true;
                }
                State::InRecord => {
                    let next = memchr::memchr3(quote, b'\n', b'\r', &bytes[i..]);
                    let stop = next.map_or(bytes.len(), |at| i + at);
                    if stop > i {
                        self.uncounted.push((i, stop));
                        self.at_field_start = bytes[stop - 1] == delimiter;
                    }
                    let Some(_) = next else { return };
                    i = stop;
                    if bytes[i] == quote {
                        if self.at_field_start {
                            self.has_text = false;
                            self.state = State::Quoted;
                        } else {
                            // A quote inside an unquoted field is text.
                            self.at_field_start = false;
                        }
                    } else {
                        self.end_record();
                    }
                    i += 1;
                }
                State::Quoted => {
                    match memchr::memchr(quote, &bytes[i..]) {
                        Some(0) => {}
                        Some(at) => {
                            self.has_text = true;
                            i += at;
                        }
                        None => {
                            self.has_text = true;
                            return;
                        }
                    }
                    self.state = State::QuoteInQuoted;
                    i += 1;
                }
                State::QuoteInQuoted => {
                    let b = bytes[i];
                    if b == quote {
                        self.has_text = true;
                        self.state = State::Quoted;
                        i += 1;
                    } else if b == delimiter {
                        self.end_quoted_field(bytes);
                        self.column += 1;
                        self.state = State::InRecord;
                        self.at_field_start = true;
                        i += 1;
                    } else if b == b'\n' || b == b'\r' {
                        self.end_quoted_field(bytes);
                        self.end_record();
                        i += 1;
                    } else {
                        // Text after the closing quote joins the field.
                        self.state = State::InRecord;
                        self.at_field_start = false;
                    }
                }
            }
        }
    }

    /// The last record may have no line end.
    fn finish(&mut self) {
        if !self.finished {
            if self.state == State::QuoteInQuoted {
                self.end_quoted_field(&[]);
            }
            if self.state != State::StartRecord {
                self.end_record();
            }
        }
        self.finished = true;
    }
}

/// How many times `byte` occurs in `bytes`. Counted in runs of at most 255
/// into a `u8`, which the compiler turns into 16 bytes per instruction; a
/// `usize` count went 4 bytes at a time, three quarters of the scan's time.
fn count_byte(bytes: &[u8], byte: u8) -> usize {
    bytes
        .chunks(255)
        .map(|run| run.iter().fold(0u8, |n, &b| n + u8::from(b == byte)) as usize)
        .sum()
}

impl<R: Read> Read for QuotedEmpties<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish();
        } else {
            self.scan(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells_of(data: &[u8], chunk: usize) -> Vec<(u64, usize)> {
        let mut scan = QuotedEmpties::new(data, b',', b'"');
        let cells = scan.cells();
        let mut buf = vec![0u8; chunk];
        while scan.read(&mut buf).unwrap() > 0 {}
        cells.take_before(u64::MAX)
    }

    #[test]
    fn bytes_are_counted_in_runs_of_any_length() {
        let bytes: Vec<u8> = (0..3000u32)
            .map(|i| if i % 7 == 0 { b',' } else { b'a' })
            .collect();
        for len in [0, 1, 254, 255, 256, 511, 3000] {
            let naive = bytes[..len].iter().filter(|&&b| b == b',').count();
            assert_eq!(count_byte(&bytes[..len], b','), naive, "length {len}");
        }
        assert_eq!(count_byte(&[b','; 600], b','), 600);
    }

    /// The rules, one byte at a time: what the scan must agree with.
    fn cells_one_byte_at_a_time(data: &[u8]) -> Vec<(u64, usize)> {
        #[derive(PartialEq)]
        enum St {
            Start,
            InRecord { at_field_start: bool },
            Quoted,
            QuoteInQuoted,
        }
        let (mut st, mut record, mut column, mut text) = (St::Start, 0u64, 0usize, false);
        let mut cells = Vec::new();
        for &b in data {
            let line_end = b == b'\n' || b == b'\r';
            if st == St::Start {
                if line_end {
                    continue;
                }
                st = St::InRecord {
                    at_field_start: true,
                };
            }
            st = match st {
                St::Start => unreachable!(),
                St::InRecord { at_field_start } => match b {
                    b',' => {
                        column += 1;
                        St::InRecord {
                            at_field_start: true,
                        }
                    }
                    b'"' if at_field_start => {
                        text = false;
                        St::Quoted
                    }
                    _ if line_end => {
                        (record, column) = (record + 1, 0);
                        St::Start
                    }
                    _ => St::InRecord {
                        at_field_start: false,
                    },
                },
                St::Quoted if b == b'"' => St::QuoteInQuoted,
                St::Quoted => {
                    text = true;
                    St::Quoted
                }
                St::QuoteInQuoted => match b {
                    b'"' => {
                        text = true;
                        St::Quoted
                    }
                    b',' => {
                        if !text {
                            cells.push((record, column));
                        }
                        column += 1;
                        St::InRecord {
                            at_field_start: true,
                        }
                    }
                    _ if line_end => {
                        if !text {
                            cells.push((record, column));
                        }
                        (record, column) = (record + 1, 0);
                        St::Start
                    }
                    _ => St::InRecord {
                        at_field_start: false,
                    },
                },
            };
        }
        if st == St::QuoteInQuoted && !text {
            cells.push((record, column));
        }
        cells
    }

    #[test]
    fn the_scan_agrees_with_the_rules_on_random_bytes() {
        let alphabet = b"a,,\"\"\"\n\r";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for case in 0..2_000 {
            let len = case % 97;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let want = cells_one_byte_at_a_time(&data);
            for chunk in [1, 2, 5, 16, 4096] {
                assert_eq!(
                    cells_of(&data, chunk),
                    want,
                    "{:?} in chunks of {chunk}",
                    String::from_utf8_lossy(&data)
                );
            }
        }
    }

    #[test]
    fn delimiters_inside_quotes_do_not_count_towards_the_column() {
        // Columns counted late: across quoted fields holding delimiters,
        // and across a buffer that ends inside the record.
        let data = b"x,\"a,b\",y,\"\"\n\"p,\"\"q\",,\"\",\"\"\nlong,unquoted,row,\"\"";
        let want = vec![(0, 3), (1, 2), (1, 3), (2, 3)];
        for chunk in [1, 2, 3, 5, 8, 13, 1024] {
            assert_eq!(cells_of(data, chunk), want, "chunks of {chunk}");
        }
    }

    #[test]
    fn only_whole_quoted_empty_fields_are_noted_by_record_and_column() {
        let data =
            b"a,b,c\r\n1,\"\",\"\"\n\n2,,\"x\"\"\"\n\"\",\"\"\"\",\"a\nb\"\n\"\"x,\" \",\"\"";
        let want = vec![(1, 1), (1, 2), (3, 0), (4, 2)];
        // However the bytes arrive.
        for chunk in [1, 2, 3, 7, 1024] {
            assert_eq!(cells_of(data, chunk), want, "chunks of {chunk}");
        }
        let mut scan = QuotedEmpties::new(&data[..], b',', b'"');
        let cells = scan.cells();
        std::io::copy(&mut scan, &mut std::io::sink()).unwrap();
        assert_eq!(cells.take_before(3), vec![(1, 1), (1, 2)]);
        assert_eq!(cells.take_before(u64::MAX), vec![(3, 0), (4, 2)]);
    }
}
