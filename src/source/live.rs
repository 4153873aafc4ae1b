//! An open event stream and its liveness, shared by the Marathon (SSE) and
//! Mesos (RecordIO) readers: the stream is alive while a complete frame (an
//! SSE line, a RecordIO record) arrives within `silence` of the read that
//! waits for it. Bytes that never complete a frame do not count, so a
//! trickle cannot keep a dead stream open; the reader says when a frame
//! completed ([`LiveStream::alive`]).

use std::time::Duration;

use tokio::time::Instant;

use super::http::{ByteStream, HttpError};

#[derive(Debug)]
pub struct LiveStream {
    stream: ByteStream,
    silence: Duration,
    /// When the stream counts as silent, unless a frame completes first.
    deadline: Instant,
}

impl LiveStream {
    pub fn new(stream: ByteStream, silence: Duration) -> LiveStream {
        LiveStream {
            stream,
            silence,
            deadline: Instant::now() + silence,
        }
    }

    /// The URL that answered (after redirects), redacted.
    pub fn url(&self) -> &str {
        self.stream.url()
    }

    /// A new allowance (the heartbeat interval a master announced).
    pub fn set_silence(&mut self, silence: Duration) {
        self.silence = silence;
        self.alive();
    }

    /// Count silence from now: a read begins, or a frame completed.
    pub fn alive(&mut self) {
        self.deadline = Instant::now() + self.silence;
    }

    /// Do not count `waited` (time the reader spent on its consumer, not
    /// waiting for the master).
    pub fn forgive(&mut self, waited: Duration) {
        self.deadline += waited;
    }

    /// The next chunk, `None` at the end of the stream;
    /// [`HttpError::Stalled`] once the deadline passes. Cancel-safe.
    pub async fn next_chunk(&mut self) -> Result<Option<impl AsRef<[u8]>>, HttpError> {
        self.stream.next_chunk(self.deadline, self.silence).await
    }
}
