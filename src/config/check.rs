//! `groupd check-config`: what can be known offline beyond the file's own
//! syntax, so that a config that parses but cannot work is caught before
//! systemd starts the daemon (the unit runs check-config as ExecStartPre).
//!
//! * Files groupd reads (`password_file`, `token_file`, `ca_file`) exist, are
//!   files and can be read; their contents are checked by building the very
//!   HTTP client the source will build (token syntax, PEM bundle), without
//!   contacting any master.
//! * `source.path` (kind = "file"): its directory must exist; the file may
//!   appear later (groupd waits for it), which is only a warning.

use std::fs::File;
use std::path::Path;

use super::{spans::KeyLines, Config, SourceKind};
use crate::source::http::{MasterClient, MasterSettings, Timeouts};

/// The outcome: errors make check-config fail, warnings are printed only.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Config {
    /// The offline checks; `text` is the config file's text, for the lines
    /// named in messages.
    pub fn check_offline(&self, text: &str) -> Findings {
        let mut findings = Findings::default();
        let lines = KeyLines::parse(text);
        let at = |key: &str| match lines.line("source", key) {
            Some(line) => format!("line {line}: "),
            None => String::new(),
        };
        let s = &self.source;
        let files = [
            ("password_file", &s.password_file),
            ("token_file", &s.token_file),
            ("ca_file", &s.ca_file),
            ("cert_file", &s.cert_file),
            ("key_file", &s.key_file),
        ];
        let mut unreadable = false;
        for (key, path) in files {
            let Some(path) = path else { continue };
            if let Err(problem) = readable_file(path) {
                unreadable = true;
                findings.errors.push(format!(
                    "{}source.{key} = {:?}: {problem}; create it (readable by root) or fix the path",
                    at(key),
                    path.display().to_string()
                ));
            }
        }
        let remote = matches!(s.kind, SourceKind::Mesos | SourceKind::Marathon);
        if remote && !unreadable {
            // The files can be read: are their contents usable?
            let settings = MasterSettings::from_source(s, Timeouts::default());
            if let Err(e) = MasterClient::new(&settings) {
                findings.errors.push(e.to_string());
            }
        }
        if let Some(p) = &self.publish {
            let files = [
                ("password_file", &p.password_file),
                ("ca_file", &p.ca_file),
                ("cert_file", &p.cert_file),
                ("key_file", &p.key_file),
            ];
            for (key, path) in files {
                let Some(path) = path else { continue };
                if let Err(problem) = readable_file(path) {
                    findings.errors.push(format!(
                        "publish.{key} = {:?}: {problem}; create it (readable by root) or fix the path",
                        path.display().to_string()
                    ));
                }
            }
        }
        if s.kind == SourceKind::File {
            if let Some(path) = &s.path {
                check_document_path(path, &at("path"), &mut findings);
            }
        }
        findings
    }
}

/// Why a file groupd reads cannot be read.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("cannot open it ({0})")]
    Open(std::io::Error),
    #[error("cannot read its metadata ({0})")]
    Metadata(std::io::Error),
    #[error("is a directory, not a file")]
    Directory,
}

/// Why `path` cannot be read as a file, if it cannot.
fn readable_file(path: &Path) -> Result<(), Unreadable> {
    let file = File::open(path).map_err(Unreadable::Open)?;
    let meta = file.metadata().map_err(Unreadable::Metadata)?;
    if meta.is_dir() {
        return Err(Unreadable::Directory);
    }
    Ok(())
}

/// `source.path`: an error when it can never work, a warning when it does
/// not exist yet.
fn check_document_path(path: &Path, at: &str, findings: &mut Findings) {
    let shown = path.display().to_string();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        findings.errors.push(format!(
            "{at}source.path = {shown:?}: its directory {} does not exist; create it or fix the path",
            dir.display()
        ));
        return;
    }
    if !path.exists() {
        findings.warnings.push(format!(
            "{at}source.path = {shown:?} does not exist yet; groupd keeps the persisted view (or the kernel's rules) until it appears"
        ));
        return;
    }
    if let Err(problem) = readable_file(path) {
        findings.errors.push(format!(
            "{at}source.path = {shown:?}: {problem}; point it at the cluster document"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A scratch directory removed on drop, also when the test fails.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("groupd-check-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }
        fn file(&self, name: &str, contents: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, contents).expect("write");
            path.display().to_string()
        }
        fn missing(&self, name: &str) -> String {
            self.0.join(name).display().to_string()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn check(text: &str) -> Findings {
        Config::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .check_offline(text)
    }

    fn marathon(extra: &str) -> String {
        format!("[source]\nkind = \"marathon\"\nurls = [\"http://m1:8080\"]\n{extra}")
    }

    #[test]
    fn missing_credential_files_are_errors_with_key_line_and_fix() {
        let dir = Scratch::new("missing-creds");
        let pw = dir.missing("pw");
        let f = check(&marathon(&format!(
            "username = \"ops\"\npassword_file = \"{pw}\"\n"
        )));
        assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
        let e = &f.errors[0];
        assert!(e.starts_with("line 5: source.password_file"), "{e}");
        assert!(e.contains(&pw) && e.contains("No such file"), "{e}");
        assert!(e.contains("fix the path"), "{e}");

        let f = check(&marathon(&format!(
            "token_file = \"{}\"\nca_file = \"{}\"\n",
            dir.missing("tok"),
            dir.missing("ca.pem")
        )));
        assert_eq!(f.errors.len(), 2, "{:?}", f.errors);
        assert!(f.errors[0].starts_with("line 4: source.token_file"));
        assert!(f.errors[1].starts_with("line 5: source.ca_file"));
    }

    #[test]
    fn a_directory_is_not_a_credential_file() {
        let dir = Scratch::new("dir-creds");
        let f = check(&marathon(&format!(
            "token_file = \"{}\"\n",
            dir.0.display()
        )));
        assert!(
            f.errors.len() == 1 && f.errors[0].contains("is a directory"),
            "{:?}",
            f.errors
        );
    }

    #[test]
    fn unusable_contents_are_caught_without_a_master() {
        let dir = Scratch::new("bad-contents");
        let f = check(&marathon(&format!(
            "token_file = \"{}\"\n",
            dir.file("tok", "\n")
        )));
        assert!(
            f.errors.len() == 1 && f.errors[0].contains("is empty"),
            "{:?}",
            f.errors
        );
        let f = check(&marathon(&format!(
            "ca_file = \"{}\"\n",
            dir.file("ca.pem", "not a certificate\n")
        )));
        assert!(
            f.errors.len() == 1 && f.errors[0].contains("source.ca_file"),
            "{:?}",
            f.errors
        );
    }

    #[test]
    fn readable_credentials_pass() {
        let dir = Scratch::new("good-creds");
        let f = check(&marathon(&format!(
            "username = \"ops\"\npassword_file = \"{}\"\n",
            dir.file("pw", "hunter2\n")
        )));
        assert!(f.errors.is_empty() && f.warnings.is_empty(), "{f:?}");
    }

    #[test]
    fn file_source_directory_must_exist_the_file_may_come_later() {
        let dir = Scratch::new("file-source");
        let no_dir = format!("{}/state.json", dir.missing("nodir"));
        let f = check(&format!("[source]\nkind = \"file\"\npath = \"{no_dir}\"\n"));
        assert_eq!(f.errors.len(), 1, "{f:?}");
        assert!(
            f.errors[0].starts_with("line 3: source.path")
                && f.errors[0].contains("does not exist"),
            "{f:?}"
        );

        let later = dir.missing("state.json");
        let f = check(&format!("[source]\nkind = \"file\"\npath = \"{later}\"\n"));
        assert!(f.errors.is_empty(), "{f:?}");
        assert_eq!(f.warnings.len(), 1, "{f:?}");
        assert!(f.warnings[0].contains("does not exist yet"), "{f:?}");

        let there = dir.file("state.json", "{}");
        let f = check(&format!("[source]\nkind = \"file\"\npath = \"{there}\"\n"));
        assert!(f.errors.is_empty() && f.warnings.is_empty(), "{f:?}");

        let is_dir = dir.0.display().to_string();
        let f = check(&format!("[source]\nkind = \"file\"\npath = \"{is_dir}\"\n"));
        assert!(
            f.errors.len() == 1 && f.errors[0].contains("is a directory"),
            "{f:?}"
        );
    }
}

#[cfg(test)]
mod verify_interval_tests {
    use crate::config::Config;

    fn with_interval(value: &str) -> Result<Config, String> {
        // The message as check-config prints it.
        Config::parse(&format!(
            "[source]\nkind = \"file\"\npath = \"/x.json\"\n[daemon]\nverify_interval = {value}\n"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn verify_interval_must_be_positive_and_sane() {
        for bad in ["0", "-5", "0.01", "3601", "1e9", "nan", "inf"] {
            let err = with_interval(bad).expect_err(bad);
            assert!(
                err.starts_with("line 5: daemon.verify_interval must be between 0.1 and 3600"),
                "{bad}: {err}"
            );
        }
        for good in ["0.1", "10", "45", "3600"] {
            assert!(with_interval(good).is_ok(), "{good}");
        }
    }
}
