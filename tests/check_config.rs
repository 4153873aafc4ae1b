//! `groupd check-config` as systemd's ExecStartPre runs it: exit code and
//! message of the built binary on configs that parse but cannot work.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A scratch directory removed on drop, also when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("groupd-cc-{name}-{}", std::process::id()));
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

fn check_config(dir: &Scratch, config: &str) -> (Output, String, String) {
    let path = dir.0.join("groupd.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_groupd"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run groupd");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn missing_password_file_fails_with_key_line_and_path() {
    let dir = Scratch::new("pw");
    let pw = dir.0.join("missing-password");
    let (out, stdout, stderr) = check_config(
        &dir,
        &format!(
            "[source]\nkind = \"marathon\"\nurls = [\"http://m1:8080\"]\nusername = \"ops\"\npassword_file = {:?}\n",
            pw.display().to_string()
        ),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("line 5: source.password_file")
            && stderr.contains(&pw.display().to_string())
            && stderr.contains("fix the path"),
        "{stderr}"
    );
    assert!(!stdout.contains("ok"), "{stdout}");
}

#[test]
fn document_not_there_yet_is_a_warning_and_exit_0() {
    let dir = Scratch::new("later");
    let doc = dir.0.join("cluster.json");
    let (out, stdout, stderr) = check_config(
        &dir,
        &format!(
            "[source]\nkind = \"file\"\npath = {:?}\n",
            doc.display().to_string()
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("warning: line 3: source.path"), "{stderr}");
    assert!(stdout.contains("ok (1 warning)"), "{stdout}");
}

#[test]
fn document_directory_missing_fails() {
    let dir = Scratch::new("nodir");
    let doc = dir.0.join("no-such-dir/cluster.json");
    let (out, stdout, stderr) = check_config(
        &dir,
        &format!(
            "[source]\nkind = \"file\"\npath = {:?}\n",
            doc.display().to_string()
        ),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("line 3: source.path") && stderr.contains("does not exist; create it"),
        "{stderr}"
    );
}

#[test]
fn absurd_verify_interval_fails() {
    let dir = Scratch::new("verify");
    let (out, stdout, stderr) = check_config(
        &dir,
        "[source]\nkind = \"file\"\npath = \"/tmp/x.json\"\n[daemon]\nverify_interval = 86400\n",
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("line 5: daemon.verify_interval must be between 0.1 and 3600"),
        "{stderr}"
    );
}
