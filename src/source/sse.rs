//! An incremental parser for server-sent events (`text/event-stream`), as
//! Marathon's `/v2/events` serves them (docs/FORMATS.md §3).
//!
//! Bytes are fed in whatever chunks the network delivers; complete events
//! come out. Line ends may be LF, CRLF or a lone CR, and a CRLF split across
//! two chunks is one line end, not two. Comments (`:…`) and blank-line
//! keep-alives are skipped, several `data:` lines are joined with `\n`, and
//! `event:` defaults to `"message"`. `id:` and `retry:` are ignored: Marathon
//! sends neither and has no replay, so groupd resyncs after a reconnect.
//!
//! One deliberate difference from the WHATWG algorithm: a blank line before
//! any `data:` line keeps the pending `event:` name instead of resetting it.
//! Marathon never sends that, and docs/FORMATS.md asks for blank lines *inside* a
//! frame to be ignored, so a stray keep-alive between `event:` and `data:`
//! cannot relabel the event.
//!
//! Memory is bounded: a line or an event longer than the cap is an error
//! (the caller drops the connection), never an ever-growing buffer.

use std::fmt;

/// Default cap for one line and for one event's data (Marathon's largest
/// events carry a whole app definition; 16 MiB is far above any real one).
pub const DEFAULT_MAX_LINE: usize = 16 * 1024 * 1024;

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `"message"` when the frame had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The stream cannot be parsed further; reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("event stream line longer than {limit} bytes without a line end; not read, groupd reconnects and resyncs (check that source.urls names Marathon: its events are far smaller)")]
    LineTooLong { limit: usize },
    #[error("event stream event larger than {limit} bytes of data; not read, groupd reconnects and resyncs (check that source.urls names Marathon: its events are far smaller)")]
    EventTooLarge { limit: usize },
}

/// Incremental parser state; see the module documentation.
pub struct SseParser {
    max: usize,
    /// The current line, without its line end.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF of the next chunk belongs
    /// to that line end.
    after_cr: bool,
    /// Nothing has been seen yet (a leading BOM is dropped).
    at_start: bool,
    /// Bytes of a leading BOM seen so far while `at_start`: a BOM split
    /// across chunks is still a BOM (found by fuzzing).
    bom_seen: usize,
    event: Option<String>,
    data: String,
    /// Whether a `data:` field was seen for the pending event (an empty
    /// `data:` line still makes an event).
    has_data: bool,
    lines: u64,
}

impl fmt::Debug for SseParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseParser")
            .field("pending_line_bytes", &self.line.len())
            .field("lines", &self.lines)
            .finish()
    }
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new(DEFAULT_MAX_LINE)
    }
}

impl SseParser {
    /// `max` bounds one line and one event's data, in bytes.
    pub fn new(max: usize) -> SseParser {
        SseParser {
            max,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            bom_seen: 0,
            event: None,
            data: String::new(),
            has_data: false,
            lines: 0,
        }
    }

    /// Complete lines seen so far (keep-alives included): a liveness signal
    /// that a slow trickle of bytes without line ends does not fake.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Feed one chunk; returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.at_start && !rest.is_empty() {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let want = &BOM[self.bom_seen..];
            let n = want.len().min(rest.len());
            if rest[..n] == want[..n] {
                self.bom_seen += n;
                rest = &rest[n..];
                if self.bom_seen < BOM.len() {
                    // Maybe a BOM, split across chunks: wait for the rest.
                    return Ok(out);
                }
                self.at_start = false;
            } else {
                // Not a BOM after all: what was held back is line content.
                self.at_start = false;
                self.push_bytes(&BOM[..self.bom_seen])?;
            }
        }
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            rest = rest.strip_prefix(b"\n").unwrap_or(rest);
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push_bytes(&rest[..end])?;
            self.end_line(&mut out)?;
            let after = &rest[end + 1..];
            rest = if rest[end] == b'\r' {
                match after.first() {
                    Some(b'\n') => &after[1..],
                    Some(_) => after,
                    None => {
                        self.after_cr = true;
                        after
                    }
                }
            } else {
                after
            };
        }
        self.push_bytes(rest)?;
        Ok(out)
    }

    /// The stream ended. A frame without its closing blank line is
    /// incomplete and is dropped (as browsers do); nothing else is pending.
    pub fn finish(&mut self) {
        self.line.clear();
        self.reset_event();
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.max {
            return Err(SseError::LineTooLong { limit: self.max });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.lines += 1;
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data {
                out.push(self.take_event());
            }
            return Ok(());
        }
        if line.first() == Some(&b':') {
            return Ok(()); // comment
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => self.push_data(value)?,
            _ => {} // id, retry, unknown fields
        }
        // Keep the allocation for the next line.
        self.line = line;
        self.line.clear();
        Ok(())
    }

    fn push_data(&mut self, value: &str) -> Result<(), SseError> {
        let extra = value.len() + usize::from(self.has_data);
        if self.data.len() + extra > self.max {
            self.reset_event();
            return Err(SseError::EventTooLarge { limit: self.max });
        }
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(value);
        self.has_data = true;
        Ok(())
    }

    fn take_event(&mut self) -> SseEvent {
        let event = SseEvent {
            event: self
                .event
                .take()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_string()),
            data: std::mem::take(&mut self.data),
        };
        self.has_data = false;
        event
    }

    fn reset_event(&mut self) {
        self.event = None;
        self.data.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c).expect("valid stream"));
        }
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn lf_crlf_and_lone_cr_line_ends() {
        for stream in [
            &b"event: a\ndata: 1\n\n"[..],
            b"event: a\r\ndata: 1\r\n\r\n",
            b"event: a\rdata: 1\r\r",
        ] {
            assert_eq!(parse_all(&[stream]), vec![ev("a", "1")], "{stream:?}");
        }
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let got = parse_all(&[b"event: a\r", b"\ndata: 1\r", b"\n\r", b"\n"]);
        assert_eq!(got, vec![ev("a", "1")]);
        // A CR at the end of a chunk followed by a non-LF starts a new line.
        let got = parse_all(&[b"data: 1\r", b"\r"]);
        assert_eq!(got, vec![ev("message", "1")]);
    }

    #[test]
    fn comments_keepalives_and_multiline_data() {
        let got = parse_all(&[
            b"\r\n\r\n: keep-alive\r\n\r\nevent: x\r\ndata: a\r\ndata:b\r\ndata\r\n\r\n\r\n",
        ]);
        assert_eq!(got, vec![ev("x", "a\nb\n")]);
    }

    #[test]
    fn blank_line_between_event_and_data_keeps_the_name() {
        let got = parse_all(&[b"event: x\r\n\r\ndata: 1\r\n\r\n"]);
        assert_eq!(got, vec![ev("x", "1")]);
    }

    #[test]
    fn default_name_and_empty_data_event() {
        assert_eq!(parse_all(&[b"data:\n\n"]), vec![ev("message", "")]);
        assert_eq!(parse_all(&[b"event: only\n\n"]), vec![]);
    }

    #[test]
    fn incomplete_frame_at_end_is_not_an_event() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: a\ndata: 1\n").expect("ok").is_empty());
        p.finish();
        assert!(p.feed(b"\n").expect("ok").is_empty());
    }

    #[test]
    fn bom_is_dropped_and_utf8_split_across_chunks_survives() {
        let text = "data: grüße\n\n".as_bytes();
        let (a, b) = text.split_at(9); // inside "ü"
        let mut chunks = vec![&b"\xEF\xBB\xBF"[..], a, b];
        assert_eq!(parse_all(&chunks), vec![ev("message", "grüße")]);
        chunks.remove(0);
        assert_eq!(parse_all(&chunks), vec![ev("message", "grüße")]);
    }

    #[test]
    fn long_lines_and_events_are_errors_not_memory() {
        let mut p = SseParser::new(8);
        assert!(p.feed(b"data: 12").is_ok());
        assert_eq!(
            p.feed(b"3"),
            Err(SseError::LineTooLong { limit: 8 }),
            "9 bytes without a line end"
        );
        let mut p = SseParser::new(12);
        assert_eq!(
            p.feed(b"data: 12345\ndata: 12345\ndata: 12345\n"),
            Err(SseError::EventTooLarge { limit: 12 }),
            "each line fits, the event does not"
        );
    }

    #[test]
    fn line_counter_counts_keepalives() {
        let mut p = SseParser::default();
        p.feed(b"\r\n\r\n:x\r\nda").expect("ok");
        assert_eq!(p.lines(), 3);
    }
}
