//! Where the built `groupd` writes its log lines: journald only when stderr
//! is the stream `JOURNAL_STREAM` names, plain text (no colour) otherwise.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A scratch directory removed on drop, also when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("groupd-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `groupd check-config` with stderr going to `stderr_file` and
/// `JOURNAL_STREAM` set to `journal_stream`; its stderr.
fn run(dir: &Scratch, journal_stream: &str, stderr_file: &Path) -> String {
    let config = dir.0.join("groupd.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"file\"\npath = {:?}\n",
            dir.0.join("c.json")
        ),
    )
    .expect("write config");
    let err = std::fs::File::create(stderr_file).expect("stderr file");
    let status = Command::new(env!("CARGO_BIN_EXE_groupd"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env("JOURNAL_STREAM", journal_stream)
        .env_remove("GROUPD_LOG")
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .expect("run groupd");
    assert!(status.success());
    std::fs::read_to_string(stderr_file).expect("read stderr")
}

#[test]
fn journal_stream_of_our_stderr_means_journald_or_a_text_fallback() {
    let dir = Scratch::new("journal");
    let stderr_file = dir.0.join("stderr");
    std::fs::write(&stderr_file, "").expect("create");
    let meta = std::fs::metadata(&stderr_file).expect("stat");
    let stderr = run(
        &dir,
        &format!("{}:{}", meta.dev(), meta.ino()),
        &stderr_file,
    );
    if Path::new("/run/systemd/journal/socket").exists() {
        // Journald took the log lines: none on stderr but check-config's own.
        assert!(!stderr.contains(" WARN "), "{stderr}");
    } else {
        // No journald here: said once, in plain text, on stderr.
        assert!(
            stderr.contains("WARN") && stderr.contains("journald socket cannot be used"),
            "{stderr}"
        );
        assert!(
            !stderr.contains('\u{1b}'),
            "colour codes in a file: {stderr:?}"
        );
    }
}

#[test]
fn journal_stream_of_another_file_means_text() {
    let dir = Scratch::new("other");
    let stderr_file = dir.0.join("stderr");
    let other = dir.0.join("other");
    std::fs::write(&other, "").expect("create");
    let meta = std::fs::metadata(&other).expect("stat");
    let stderr = run(
        &dir,
        &format!("{}:{}", meta.dev(), meta.ino()),
        &stderr_file,
    );
    // Inherited variable, redirected stderr: no journald attempt at all.
    assert!(!stderr.contains("journald"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
