//! Where the built `groupd` writes its log lines: journald (its native
//! protocol, checked against a socket of the test's own) only when stderr is
//! the stream `JOURNAL_STREAM` names, plain text (no colour) otherwise.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
#[ignore = "needs root: runs groupd, which needs CAP_NET_ADMIN, in namespaces it creates"]
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
#[ignore = "needs root: runs groupd, which needs CAP_NET_ADMIN, in namespaces it creates"]
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

/// In the child, before exec: a private mount namespace where
/// `/run/systemd/journal` is `journal_dir` (so the journald socket groupd
/// connects to is the test's), leaving the host's /run untouched.
fn private_journal_dir(cmd: &mut Command, journal_dir: &Path) {
    // Prepared before fork: pre_exec must not allocate.
    let source = CString::new(journal_dir.as_os_str().as_encoded_bytes()).expect("path");
    let root = CString::new("/").expect("c string");
    let run_systemd = CString::new("/run/systemd").expect("c string");
    let tmpfs = CString::new("tmpfs").expect("c string");
    let target = CString::new("/run/systemd/journal").expect("c string");
    // SAFETY: only async-signal-safe syscalls on pointers prepared above.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                run_systemd.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ))?;
            check(libc::mkdir(target.as_ptr(), 0o755))?;
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))
        });
    }
}

#[test]
#[ignore = "needs root: runs groupd, which needs CAP_NET_ADMIN, in namespaces it creates"]
fn under_the_journal_fields_and_priority_go_to_journald_natively() {
    let dir = Scratch::new("journald");
    let journal_dir = dir.0.join("journal");
    std::fs::create_dir_all(&journal_dir).expect("journal dir");
    let socket = UnixDatagram::bind(journal_dir.join("socket")).expect("bind journald socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");

    let config = dir.0.join("groupd.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"file\"\npath = {:?}\n",
            dir.0.join("c.json")
        ),
    )
    .expect("write config");
    let stderr_file = dir.0.join("stderr");
    let err = std::fs::File::create(&stderr_file).expect("stderr file");
    let meta = std::fs::metadata(&stderr_file).expect("stat");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_groupd"));
    cmd.arg("--config")
        .arg(&config)
        .arg("check-config")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("GROUPD_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(err);
    private_journal_dir(&mut cmd, &journal_dir);
    let status = cmd.status().expect("run groupd");
    assert!(status.success(), "{status}");

    // The first datagram is journald's empty liveness probe; then entries.
    let mut buf = vec![0u8; 65536];
    let fields = loop {
        let n = socket.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no journald entry from groupd ({e}); its stderr: {}",
                std::fs::read_to_string(&stderr_file).unwrap_or_default()
            )
        });
        let fields = parse_native(&buf[..n]);
        if fields.iter().any(|(k, _)| k == "MESSAGE") {
            break fields;
        }
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("MESSAGE"), Some("log output chosen"), "{fields:?}");
    assert_eq!(field("GROUPD_OUTPUT"), Some("Journald"), "{fields:?}");
    assert_eq!(field("SYSLOG_IDENTIFIER"), Some("groupd"), "{fields:?}");
    // tracing-journald's mapping: debug is 6 (info), info 5, warn 4, error 3.
    assert_eq!(field("PRIORITY"), Some("6"), "{fields:?}");
    let stderr = std::fs::read_to_string(&stderr_file).expect("stderr");
    assert!(
        !stderr.contains("log output chosen"),
        "also on stderr: {stderr}"
    );
}

/// Fields of one entry in journald's native protocol: `NAME=value\n`, or
/// `NAME\n` + 64-bit little-endian length + value + `\n`.
fn parse_native(mut data: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let end = data
            .iter()
            .position(|&b| b == b'=' || b == b'\n')
            .unwrap_or_else(|| panic!("truncated entry: {data:?}"));
        let name = String::from_utf8_lossy(&data[..end]).into_owned();
        let rest = &data[end + 1..];
        let value;
        if data[end] == b'=' {
            let stop = rest.iter().position(|&b| b == b'\n').expect("line end");
            value = &rest[..stop];
            data = &rest[stop + 1..];
        } else {
            let len = u64::from_le_bytes(rest[..8].try_into().expect("length")) as usize;
            value = &rest[8..8 + len];
            assert_eq!(rest[8 + len], b'\n', "field {name} not terminated");
            data = &rest[8 + len + 1..];
        }
        fields.push((name, String::from_utf8_lossy(value).into_owned()));
    }
    fields
}
