//! Incremental RecordIO framing (Mesos `docs/recordio.md`, docs/FORMATS.md §5):
//! `<decimal byte length>\n<record bytes>` repeated, no separator after a
//! record. Proxies re-chunk the stream, so a record or its length line may
//! be split anywhere: bytes are fed as they come and complete records come
//! out. Lengths are byte counts, never characters.
//!
//! Everything about the input is bounded: the length line (at most
//! [`MAX_LENGTH_DIGITS`] ASCII digits, nothing else) and the record size
//! (the caller's limit). A violation is an error and the framer stays
//! failed: after a framing error nothing that follows can be trusted.

/// Digits in a length line: more than any `u64` needs is not a length.
pub const MAX_LENGTH_DIGITS: usize = 20;

/// Default largest record: a SUBSCRIBED snapshot of a very large cluster
/// (about 280,000 tasks with two statuses each). The snapshot is parsed
/// while it arrives, so this bounds the input, not a buffer.
pub const DEFAULT_MAX_RECORD: usize = 256 * 1024 * 1024;

/// Default largest event record after the snapshot: events are held whole
/// while parsed, and real ones (a TASK_ADDED with a big label) are
/// kilobytes.
pub const DEFAULT_MAX_EVENT: usize = 16 * 1024 * 1024;

/// Why the stream cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("RecordIO length line has a non-digit byte {byte:#04x} after {digits} digits (not a RecordIO stream?)")]
    NotADigit { byte: u8, digits: usize },
    #[error("RecordIO length line longer than {MAX_LENGTH_DIGITS} digits")]
    LengthTooLong,
    #[error("RecordIO length line is empty")]
    EmptyLength,
    #[error("RecordIO record of {length} bytes exceeds the limit of {limit} bytes; not read, groupd reconnects (check that source.urls names a Mesos master: a real one sends no such record)")]
    RecordTooLarge { length: u128, limit: usize },
    #[error("RecordIO stream ended inside a record ({got} of {length} bytes)")]
    TruncatedRecord { got: usize, length: usize },
    #[error("RecordIO stream ended inside a length line")]
    TruncatedLength,
    #[error("RecordIO framing failed earlier; reconnect")]
    Failed,
}

#[derive(Debug)]
enum State {
    /// Reading the digits of a length line.
    Length {
        digits: usize,
        value: u128,
    },
    /// Inside a record of `length` bytes, `got` of them seen.
    Record {
        length: usize,
        got: usize,
    },
    Failed,
}

/// What [`RecordIoParser::next_piece`] found in a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// The next bytes of the current record (never empty).
    Bytes(&'a [u8]),
    /// The current record is complete (also for an empty record).
    End,
}

/// The framer. Feed it chunks, take records ([`RecordIoParser::feed`]), or
/// take the pieces of records as they come without anything being buffered
/// ([`RecordIoParser::next_piece`]), e.g. to parse a snapshot of a hundred
/// megabytes while it arrives.
#[derive(Debug)]
pub struct RecordIoParser {
    state: State,
    /// The record being collected by [`RecordIoParser::feed`].
    buf: Vec<u8>,
    max_record: usize,
    records: u64,
}

impl RecordIoParser {
    pub fn new(max_record: usize) -> RecordIoParser {
        RecordIoParser {
            state: State::Length {
                digits: 0,
                value: 0,
            },
            buf: Vec::new(),
            max_record,
            records: 0,
        }
    }

    /// Complete records so far (liveness: a trickle of bytes that never
    /// completes a record does not count).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes of the record being read (or of the length line) seen so far.
    pub fn pending(&self) -> usize {
        match self.state {
            State::Length { digits, .. } => digits,
            State::Record { got, .. } => got,
            State::Failed => 0,
        }
    }

    /// The length of the record being read, once its length line is complete.
    pub fn record_length(&self) -> Option<usize> {
        match self.state {
            State::Record { length, .. } => Some(length),
            _ => None,
        }
    }

    /// Feed one chunk; returns the records it completed, in order. Empty
    /// records carry no event: counted, not returned.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<Vec<u8>>, RecordIoError> {
        let mut out = Vec::new();
        while let Some(piece) = self.next_piece(&mut chunk)? {
            match piece {
                Piece::Bytes(bytes) => {
                    if self.buf.is_empty() {
                        // Grow as bytes arrive, not by the claimed length: a
                        // lying length line must not allocate 256 MiB up front.
                        let length = self.record_length().unwrap_or_default();
                        self.buf.reserve(length.min(64 * 1024));
                    }
                    self.buf.extend_from_slice(bytes);
                }
                Piece::End if self.buf.is_empty() => {}
                Piece::End => out.push(std::mem::take(&mut self.buf)),
            }
        }
        Ok(out)
    }

    /// The next piece of a record in `chunk`, advancing `chunk` past it;
    /// `None` once `chunk` is used up. Nothing is buffered: a record's bytes
    /// are handed out as they come. After an error the framer stays failed.
    pub fn next_piece<'a>(
        &mut self,
        chunk: &mut &'a [u8],
    ) -> Result<Option<Piece<'a>>, RecordIoError> {
        match self.piece(chunk) {
            Ok(piece) => Ok(piece),
            Err(e) => {
                self.state = State::Failed;
                self.buf = Vec::new();
                Err(e)
            }
        }
    }

    /// The stream ended: fine between records, an error inside one.
    pub fn finish(&self) -> Result<(), RecordIoError> {
        match self.state {
            State::Length { digits: 0, .. } => Ok(()),
            State::Length { .. } => Err(RecordIoError::TruncatedLength),
            State::Record { length, got } => Err(RecordIoError::TruncatedRecord { got, length }),
            State::Failed => Err(RecordIoError::Failed),
        }
    }

    fn piece<'a>(&mut self, chunk: &mut &'a [u8]) -> Result<Option<Piece<'a>>, RecordIoError> {
        loop {
            match self.state {
                State::Failed => return Err(RecordIoError::Failed),
                State::Record { length, got } if got == length => {
                    self.records += 1;
                    self.state = State::Length {
                        digits: 0,
                        value: 0,
                    };
                    return Ok(Some(Piece::End));
                }
                State::Record { length, got } => {
                    if chunk.is_empty() {
                        return Ok(None);
                    }
                    let take = (length - got).min(chunk.len());
                    let (bytes, rest) = chunk.split_at(take);
                    *chunk = rest;
                    self.state = State::Record {
                        length,
                        got: got + take,
                    };
                    return Ok(Some(Piece::Bytes(bytes)));
                }
                State::Length { digits, value } => {
                    let Some((&byte, rest)) = chunk.split_first() else {
                        return Ok(None);
                    };
                    *chunk = rest;
                    self.length_byte(byte, digits, value)?;
                }
            }
        }
    }

    fn length_byte(&mut self, byte: u8, digits: usize, value: u128) -> Result<(), RecordIoError> {
        match byte {
            b'0'..=b'9' => {
                if digits >= MAX_LENGTH_DIGITS {
                    return Err(RecordIoError::LengthTooLong);
                }
                // 20 digits fit in a u128 with room to spare.
                let value = value * 10 + u128::from(byte - b'0');
                self.state = State::Length {
                    digits: digits + 1,
                    value,
                };
                Ok(())
            }
            b'\n' if digits == 0 => Err(RecordIoError::EmptyLength),
            b'\n' => self.start_record(value),
            _ => Err(RecordIoError::NotADigit { byte, digits }),
        }
    }

    /// The length is checked against the limit before any byte of the
    /// record is read; nothing is allocated for it here.
    fn start_record(&mut self, value: u128) -> Result<(), RecordIoError> {
        let too_large = RecordIoError::RecordTooLarge {
            length: value,
            limit: self.max_record,
        };
        let length = usize::try_from(value).map_err(|_| too_large.clone())?;
        if length > self.max_record {
            return Err(too_large);
        }
        self.state = State::Record { length, got: 0 };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn all(parser: &mut RecordIoParser, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(parser.feed(c).expect("valid"));
        }
        out
    }

    #[test]
    fn frames_records_in_one_chunk() {
        let mut p = RecordIoParser::new(1024);
        let records = all(&mut p, &[b"5\nhello3\nabc"]);
        assert_eq!(records, vec![b"hello".to_vec(), b"abc".to_vec()]);
        assert_eq!(p.records(), 2);
        p.finish().expect("clean end");
    }

    #[test]
    fn lengths_are_bytes_not_chars() {
        let record = "{\"a\":\"é→\"}".as_bytes();
        let framed = [format!("{}\n", record.len()).as_bytes(), record].concat();
        let mut p = RecordIoParser::new(1024);
        assert_eq!(all(&mut p, &[&framed]), vec![record.to_vec()]);
    }

    #[test]
    fn split_length_line_and_record() {
        let mut p = RecordIoParser::new(1024);
        let records = all(
            &mut p,
            &[b"1", b"2", b"\nhello", b" worl", b"d!", b"2\n", b"ok"],
        );
        assert_eq!(records, vec![b"hello world!".to_vec(), b"ok".to_vec()]);
    }

    #[test]
    fn empty_record_is_skipped_but_counted() {
        let mut p = RecordIoParser::new(1024);
        assert_eq!(all(&mut p, &[b"0\n2\nhi"]), vec![b"hi".to_vec()]);
        assert_eq!(p.records(), 2);
    }

    #[test]
    fn bad_length_lines_are_errors() {
        let cases: &[(&[u8], RecordIoError)] = &[
            (
                b"12a\n",
                RecordIoError::NotADigit {
                    byte: b'a',
                    digits: 2,
                },
            ),
            (
                b"-1\n",
                RecordIoError::NotADigit {
                    byte: b'-',
                    digits: 0,
                },
            ),
            (
                b" 5\n",
                RecordIoError::NotADigit {
                    byte: b' ',
                    digits: 0,
                },
            ),
            (
                b"5\r\nhello",
                RecordIoError::NotADigit {
                    byte: b'\r',
                    digits: 1,
                },
            ),
            (b"\n", RecordIoError::EmptyLength),
            (b"123456789012345678901\n", RecordIoError::LengthTooLong),
            (
                b"{\"type\":\"SUBSCRIBED\"}",
                RecordIoError::NotADigit {
                    byte: b'{',
                    digits: 0,
                },
            ),
        ];
        for (input, want) in cases {
            let mut p = RecordIoParser::new(1024);
            assert_eq!(p.feed(input).expect_err("bad"), *want, "{input:?}");
            // Failed for good.
            assert_eq!(p.feed(b"2\nok").expect_err("failed"), RecordIoError::Failed);
        }
    }

    #[test]
    fn record_size_is_bounded_before_reading() {
        let mut p = RecordIoParser::new(10);
        assert_eq!(
            p.feed(b"11\n").expect_err("too large"),
            RecordIoError::RecordTooLarge {
                length: 11,
                limit: 10
            }
        );
        // 20 nines: larger than usize on 32-bit, larger than any limit.
        let mut p = RecordIoParser::new(DEFAULT_MAX_RECORD);
        assert!(matches!(
            p.feed(b"99999999999999999999\n"),
            Err(RecordIoError::RecordTooLarge { .. })
        ));
        let mut p = RecordIoParser::new(10);
        assert_eq!(all(&mut p, &[b"10\n0123456789"]).len(), 1);
    }

    #[test]
    fn a_1_gib_length_line_is_refused_without_allocating_it() {
        let mut p = RecordIoParser::new(DEFAULT_MAX_RECORD);
        assert_eq!(
            p.feed(b"1073741824\n{\"type\":").expect_err("too large"),
            RecordIoError::RecordTooLarge {
                length: 1 << 30,
                limit: DEFAULT_MAX_RECORD
            }
        );
        assert_eq!(p.buf.capacity(), 0, "nothing was reserved for it");
        // Within the limit, a lying length reserves at most 64 KiB up front.
        let mut p = RecordIoParser::new(DEFAULT_MAX_RECORD);
        assert!(p.feed(b"200000000\n{").expect("framed").is_empty());
        assert!(p.buf.capacity() <= 64 * 1024, "{}", p.buf.capacity());
    }

    #[test]
    fn pieces_are_handed_out_unbuffered_and_frame_like_feed() {
        let mut p = RecordIoParser::new(1024);
        let mut chunk: &[u8] = b"5\nhel";
        assert_eq!(p.next_piece(&mut chunk), Ok(Some(Piece::Bytes(b"hel"))));
        assert_eq!(p.next_piece(&mut chunk), Ok(None));
        assert_eq!(p.pending(), 3);
        let mut chunk: &[u8] = b"lo0\n2\nok";
        assert_eq!(p.next_piece(&mut chunk), Ok(Some(Piece::Bytes(b"lo"))));
        assert_eq!(p.next_piece(&mut chunk), Ok(Some(Piece::End)));
        // An empty record is a record too (liveness).
        assert_eq!(p.next_piece(&mut chunk), Ok(Some(Piece::End)));
        assert_eq!(p.next_piece(&mut chunk), Ok(Some(Piece::Bytes(b"ok"))));
        assert_eq!(p.next_piece(&mut chunk), Ok(Some(Piece::End)));
        assert_eq!(p.next_piece(&mut chunk), Ok(None));
        assert_eq!(p.records(), 3);
        assert_eq!(p.buf.capacity(), 0, "pieces are never collected");
        p.finish().expect("clean end");
    }

    #[test]
    fn truncation_is_reported_at_the_end() {
        let mut p = RecordIoParser::new(1024);
        all(&mut p, &[b"10\nabc"]);
        assert_eq!(
            p.finish(),
            Err(RecordIoError::TruncatedRecord { got: 3, length: 10 })
        );
        let mut p = RecordIoParser::new(1024);
        all(&mut p, &[b"3\nabc12"]);
        assert_eq!(p.finish(), Err(RecordIoError::TruncatedLength));
        assert_eq!(p.pending(), 2);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every byte value at every position of
        // a short valid stream.
        let valid = b"3\nabc2\nxy";
        for pos in 0..valid.len() {
            for b in 0..=255u8 {
                let mut input = valid.to_vec();
                input[pos] = b;
                let mut p = RecordIoParser::new(8);
                for chunk in input.chunks(2) {
                    if p.feed(chunk).is_err() {
                        break;
                    }
                }
                let _ = p.finish();
            }
        }
    }

    fn recordio_fixtures(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("fixture dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                recordio_fixtures(&path, out);
            } else if path.extension().is_some_and(|e| e == "recordio") {
                out.push(path);
            }
        }
    }

    #[test]
    fn fixtures_frame_the_same_however_split() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mesos");
        let mut files = Vec::new();
        recordio_fixtures(&root, &mut files);
        assert!(!files.is_empty(), "no *.recordio fixtures");
        for file in files {
            let bytes = std::fs::read(&file).expect("read fixture");
            let mut p = RecordIoParser::new(DEFAULT_MAX_RECORD);
            let whole = all(&mut p, &[&bytes]);
            p.finish().expect("fixture ends between records");
            assert!(whole.len() > 1, "{}", file.display());
            for r in &whole {
                serde_json::from_slice::<serde_json::Value>(r).expect("each record is JSON");
            }
            for cut in 0..=bytes.len() {
                let mut p = RecordIoParser::new(DEFAULT_MAX_RECORD);
                let (a, b) = bytes.split_at(cut);
                assert_eq!(all(&mut p, &[a, b]), whole, "{} cut {cut}", file.display());
                p.finish().expect("clean end");
            }
            let mut p = RecordIoParser::new(DEFAULT_MAX_RECORD);
            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(all(&mut p, &bytewise), whole, "{}", file.display());
        }
    }
}
