//! The shipped unit (`systemd/groupd.service`) is valid for systemd and
//! hardened: `systemd-analyze verify` accepts it and `systemd-analyze
//! security --offline=yes` rates its exposure at most 4.0 (`make deps`
//! installs systemd-analyze).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MAX_EXPOSURE: f64 = 4.0;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/groupd.service")
}

fn systemd_analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}); install it with `make deps` (package systemd)"
            )
        })
}

/// A scratch directory removed on drop, also when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("groupd-{name}-{}", std::process::id()));
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

#[test]
fn unit_verifies_with_the_built_binary() {
    let unit = std::fs::read_to_string(unit_path()).expect("read the unit");
    // The installed path does not exist on a build machine, and `verify`
    // checks that ExecStart= is executable: verify a copy that runs the
    // binary this build made, with nothing else changed.
    assert!(unit.contains("ExecStart=/usr/bin/groupd "), "{unit}");
    let copy = unit.replace(
        "=/usr/bin/groupd ",
        &format!("={} ", env!("CARGO_BIN_EXE_groupd")),
    );
    let scratch = Scratch::new("unit-verify");
    let path = scratch.0.join("groupd.service");
    std::fs::write(&path, copy).expect("write the unit copy");
    let out = systemd_analyze(&["verify", path.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stdout}{stderr}"
    );
    // Warnings (unknown keys, bad values) do not fail verify: none may
    // mention the unit.
    assert!(
        !stderr.contains("groupd.service") && !stdout.contains("groupd.service"),
        "systemd-analyze verify complains: {stdout}{stderr}"
    );
}

#[test]
fn unit_exposure_is_at_most_4() {
    let out = systemd_analyze(&[
        "security",
        "--offline=yes",
        unit_path().to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for groupd.service:"))
        .unwrap_or_else(|| panic!("no exposure level in: {stdout}{stderr}"));
    let exposure: f64 = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure line {line:?}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{stdout}"
    );
}

#[test]
fn bridge_sysctls_are_optional_and_the_only_writable_proc_path() {
    let unit = std::fs::read_to_string(unit_path()).expect("read the unit");
    let writable: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
        .collect();
    // Without "-", the unit fails to start where br_netfilter is not loaded.
    assert_eq!(writable, ["-/proc/sys/net/bridge"], "{unit}");
    assert!(unit.contains("\nProtectKernelTunables=yes\n"), "{unit}");
}
