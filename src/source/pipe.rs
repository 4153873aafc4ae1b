//! A document parsed while it arrives. The async side hands the body's bytes
//! to a [`Feed`]; a parse on a blocking thread reads them with
//! `std::io::Read` (e.g. `serde_json::Deserializer::from_reader`). At most
//! [`DEPTH`] pieces are in flight, so a snapshot of a hundred megabytes is
//! never held whole: memory follows what the parser keeps, not the size of
//! the document. A parser that stops early (an error, or it has all it
//! needs) makes the next [`Feed::send`] fail, so the reader stops too.

use std::io::Read;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Pieces queued between the reader and the parser.
pub const DEPTH: usize = 8;

/// The async end: bytes go in here.
#[derive(Debug)]
pub struct Feed {
    tx: mpsc::Sender<Vec<u8>>,
}

/// The parser stopped reading (it failed or finished): its result says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserGone;

impl Feed {
    /// Queue `bytes` for the parser; waits while [`DEPTH`] pieces are queued.
    pub async fn send(&self, bytes: &[u8]) -> Result<(), ParserGone> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.tx.send(bytes.to_vec()).await.map_err(|_| ParserGone)
    }
}

/// The blocking end: reads what was sent, then end of file once the
/// [`Feed`] is dropped.
#[derive(Debug)]
pub struct PipeReader {
    rx: mpsc::Receiver<Vec<u8>>,
    piece: Vec<u8>,
    pos: usize,
    /// The first [`START`] bytes read, for error messages.
    start: Vec<u8>,
}

/// Bytes of the start of the input a [`PipeReader`] remembers.
pub const START: usize = 40;

impl PipeReader {
    /// The first bytes read so far (at most [`START`]): what an error
    /// message can quote of a body that is not what it should be.
    pub fn start(&self) -> &[u8] {
        &self.start
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.piece.len() {
            match self.rx.blocking_recv() {
                Some(piece) => {
                    self.piece = piece;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let rest = self.piece.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        let room = START.saturating_sub(self.start.len());
        self.start.extend_from_slice(&rest[..n.min(room)]);
        Ok(n)
    }
}

/// Start `parse` on a blocking thread, reading what the returned [`Feed`]
/// is given. Drop the feed when the document is complete; then await the
/// handle for the result.
pub fn spawn<T, F>(parse: F) -> (Feed, JoinHandle<T>)
where
    T: Send + 'static,
    F: FnOnce(PipeReader) -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel(DEPTH);
    let reader = PipeReader {
        rx,
        piece: Vec::new(),
        pos: 0,
        start: Vec::new(),
    };
    let handle = tokio::task::spawn_blocking(move || parse(reader));
    (Feed { tx }, handle)
}

/// What a blocking parse's [`JoinHandle`] gave, as text when it panicked
/// (never expected: the parsers do not panic on any input).
pub async fn join<T>(handle: JoinHandle<T>) -> Result<T, String> {
    handle.await.map_err(|e| {
        format!("the parser stopped unexpectedly ({e}); this is a groupd bug, please report it")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_in_order_then_end_of_file() {
        let (feed, handle) = spawn(|mut r| {
            let mut all = Vec::new();
            r.read_to_end(&mut all).map(|_| all)
        });
        for piece in [&b"{\"a\""[..], b"", b":1}"] {
            feed.send(piece).await.expect("parser reads");
        }
        drop(feed);
        let all = join(handle).await.expect("joined").expect("read");
        assert_eq!(all, b"{\"a\":1}");
    }

    #[tokio::test]
    async fn a_parser_that_stops_stops_the_feed() {
        let (feed, handle) = spawn(|mut r| {
            let mut one = [0u8; 1];
            r.read_exact(&mut one).map(|_| one[0])
        });
        let mut refused = false;
        for _ in 0..(DEPTH * 4) {
            if feed.send(b"xyz").await.is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        let first = join(handle).await.expect("joined").expect("read");
        assert_eq!(first, b'x');
        // Once the parser is gone the feed refuses (maybe after DEPTH more).
        if !refused {
            let mut sent = 0;
            while feed.send(b"z").await.is_ok() {
                sent += 1;
                assert!(sent <= DEPTH, "the feed never noticed");
            }
        }
    }
}
