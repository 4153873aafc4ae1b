//! Where groupd's log lines go, and in which shape.
//!
//! * Under systemd, stderr is a stream to journald, and systemd says so in
//!   `JOURNAL_STREAM=<dev>:<inode>` (of that stream). Only when stderr still
//!   *is* that stream (a child whose stderr was redirected inherits the
//!   variable but not the stream) are lines sent to journald natively, with
//!   their fields (`GROUPD_TASK=…`) and priority, so `journalctl -p warning
//!   -u groupd` and `journalctl GROUPD_TASK=…` work. If the journald socket
//!   cannot be opened, plain text on stderr still reaches the journal.
//! * Otherwise text on stderr, coloured only when stderr is a terminal:
//!   escape codes in a file or a pipe are noise.
//! * `--log-format json|text` forces that format on stderr, journal or not.
//!
//! The filter is `GROUPD_LOG` (`info` by default), `RUST_LOG` syntax.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (fields as keys), for log shippers.
    Json,
}

/// Where the lines go, decided before anything is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Journald,
    Stderr(LogFormat),
}

/// The choice, from the flag, `JOURNAL_STREAM` and stderr's identity
/// (device, inode); pure so it can be tested without systemd.
pub fn choose_output(
    flag: Option<LogFormat>,
    journal_stream: Option<&str>,
    stderr_id: Option<(u64, u64)>,
) -> Output {
    if let Some(format) = flag {
        return Output::Stderr(format);
    }
    match (journal_stream.and_then(parse_journal_stream), stderr_id) {
        (Some(journal), Some(stderr)) if journal == stderr => Output::Journald,
        _ => Output::Stderr(LogFormat::Text),
    }
}

/// `JOURNAL_STREAM`'s `<device>:<inode>`, both decimal (systemd.exec(5)).
pub fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// (device, inode) of our stderr, if it is open.
fn stderr_id() -> Option<(u64, u64)> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Install the global subscriber. Call once, first thing in `main`.
pub fn init(flag: Option<LogFormat>) {
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    let output = choose_output(flag, journal_stream.as_deref(), stderr_id());
    let filter = || EnvFilter::try_from_env("GROUPD_LOG").unwrap_or_else(|_| "info".into());
    let registry = tracing_subscriber::registry().with(filter());
    let stderr_text = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    };
    let used = match output {
        Output::Journald => match tracing_journald::layer() {
            Ok(journald) => {
                registry
                    .with(journald.with_field_prefix(Some("GROUPD".into())))
                    .init();
                output
            }
            Err(e) => {
                registry.with(stderr_text()).init();
                tracing::warn!(
                    "JOURNAL_STREAM is set but the journald socket cannot be used ({e}); logging text to stderr"
                );
                Output::Stderr(LogFormat::Text)
            }
        },
        Output::Stderr(LogFormat::Text) => {
            registry.with(stderr_text()).init();
            output
        }
        Output::Stderr(LogFormat::Json) => {
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_writer(std::io::stderr),
                )
                .init();
            output
        }
    };
    tracing::debug!(output = ?used, "log output chosen");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_values() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("0:1\n"), Some((0, 1)));
        assert_eq!(parse_journal_stream(""), None);
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("8:"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
        assert_eq!(parse_journal_stream("-1:1"), None);
        assert_eq!(parse_journal_stream("1:2:3"), None);
    }

    #[test]
    fn journald_only_when_stderr_is_the_journal_stream() {
        let text = Output::Stderr(LogFormat::Text);
        assert_eq!(
            choose_output(None, Some("8:42"), Some((8, 42))),
            Output::Journald
        );
        // Inherited variable, redirected stderr: not the journal.
        assert_eq!(choose_output(None, Some("8:42"), Some((8, 43))), text);
        assert_eq!(choose_output(None, Some("9:42"), Some((8, 42))), text);
        assert_eq!(choose_output(None, None, Some((8, 42))), text);
        assert_eq!(choose_output(None, Some("8:42"), None), text);
        assert_eq!(choose_output(None, Some("garbage"), Some((8, 42))), text);
    }

    #[test]
    fn the_flag_wins() {
        assert_eq!(
            choose_output(Some(LogFormat::Json), Some("8:42"), Some((8, 42))),
            Output::Stderr(LogFormat::Json)
        );
        assert_eq!(
            choose_output(Some(LogFormat::Text), Some("8:42"), Some((8, 42))),
            Output::Stderr(LogFormat::Text)
        );
    }

    #[test]
    fn stderr_has_an_identity() {
        // The test harness's stderr is open: a real (dev, ino) comes back.
        assert!(stderr_id().is_some());
    }
}
