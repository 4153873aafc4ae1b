//! The .deb as an operator gets it: built with `make deb` (cargo-deb),
//! installed, removed and purged with dpkg into a scratch root.
//!
//! dpkg here is `--root=<scratch> --force-script-chrootless`: the files land
//! under the scratch root and its own package database, and the maintainer
//! scripts run with `DPKG_ROOT=<scratch>` (no chroot, so no shell or libc is
//! needed in the scratch root). deb-systemd-helper honours DPKG_ROOT (the
//! unit is enabled inside the scratch root), and groupd's scripts prefix
//! their paths with it and skip `groupd --cleanup` (another root's package
//! must not touch the running kernel's tables). As a second fence every
//! dpkg call runs in its own mount and network namespace with
//! /run/systemd hidden, so nothing reaches the host's systemd or nftables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// A scratch root removed on drop (also when an assertion fails).
struct ScratchRoot(PathBuf);

impl ScratchRoot {
    fn new() -> ScratchRoot {
        let dir = std::env::temp_dir().join(format!("groupd-pkg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
        ] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the scratch dpkg database");
        }
        std::fs::write(dir.join("var/lib/dpkg/status"), "").expect("empty dpkg status");
        ScratchRoot(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }

    /// `dpkg --root=<scratch> …` fenced in fresh mount and network namespaces.
    fn dpkg(&self, args: &[&str]) -> Output {
        let root = format!("--root={}", self.0.display());
        Command::new("unshare")
            .args(["--mount", "--net", "--propagation", "private", "--"])
            .args(["sh", "-c", HIDE_SYSTEMD, "sh", "dpkg", &root])
            .args(["--force-not-root", "--force-script-chrootless"])
            .args(args)
            .output()
            .expect("run dpkg (needs unshare from util-linux)")
    }
}

/// Hide a running systemd from the maintainer scripts (they would talk to
/// the host's), then run the command given.
const HIDE_SYSTEMD: &str =
    "if [ -d /run/systemd/system ]; then mount -t tmpfs none /run/systemd || exit 1; fi; exec \"$@\"";

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `make deb`: installs cargo-deb when missing (the Makefile's deb-deps),
/// reuses the release build when it is up to date; prints the paths of the
/// .deb and of the debug symbols' .ddeb.
fn build_deb() -> (PathBuf, PathBuf) {
    let out = Command::new("make")
        .args(["-s", "deb"])
        .current_dir(MANIFEST_DIR)
        .output()
        .expect("run make deb");
    let stdout = ok("make deb", &out);
    let printed = |suffix: &str| {
        let line = stdout
            .lines()
            .map(str::trim)
            .find(|l| l.ends_with(suffix))
            .unwrap_or_else(|| panic!("make deb printed no {suffix} path:\n{stdout}"));
        PathBuf::from(MANIFEST_DIR).join(line)
    };
    (printed(".deb"), printed(".ddeb"))
}

fn exists(root: &ScratchRoot, rel: &str) -> bool {
    root.path(rel).symlink_metadata().is_ok()
}

/// Whether the ELF file carries DWARF (`readelf -S` lists .debug_info).
fn has_debug_info(binary: &Path) -> bool {
    let out = Command::new("readelf")
        .arg("-S")
        .arg(binary)
        .output()
        .expect("run readelf (binutils)");
    ok("readelf", &out).contains(".debug_info")
}

#[test]
#[ignore = "needs root: builds the .deb (minutes the first time) and runs dpkg with unshare"]
fn the_deb_installs_works_and_purges_only_what_groupd_wrote() {
    let (deb, ddeb) = build_deb();
    let deb_arg = deb.to_string_lossy().into_owned();
    let ddeb_arg = ddeb.to_string_lossy().into_owned();

    // The control scripts cargo-deb assembled: restart on upgrade, start on
    // install (only when systemd runs), stop before the tables are removed.
    let control = tempdir("control");
    ok(
        "dpkg-deb -e",
        &Command::new("dpkg-deb")
            .args(["-e", &deb_arg])
            .arg(&control.0)
            .output()
            .expect("dpkg-deb"),
    );
    let postinst = read(&control.0.join("postinst"));
    assert!(
        postinst.contains("deb-systemd-helper enable groupd.service")
            && postinst.contains("_dh_action=restart")
            && postinst.contains("_dh_action=start"),
        "postinst enables, starts on install and restarts on upgrade:\n{postinst}"
    );
    let prerm = read(&control.0.join("prerm"));
    let stop = prerm
        .find("deb-systemd-invoke stop")
        .expect("prerm stops the unit");
    let cleanup = prerm.find("--cleanup").expect("prerm removes the tables");
    assert!(stop < cleanup, "stop before cleanup:\n{prerm}");
    assert!(control.0.join("md5sums").exists(), "md5sums in the package");

    let root = ScratchRoot::new();
    ok(
        "dpkg -i",
        &root.dpkg(&["--force-depends", "-i", &deb_arg, &ddeb_arg]),
    );

    // Files: stripped binaries (their debug info in groupd-dbgsym), the unit
    // (enabled), man pages, completions, config.
    for bin in ["usr/bin/groupd", "usr/bin/groupctl"] {
        let path = root.path(bin);
        assert!(path.exists(), "{bin} installed");
        assert!(!has_debug_info(&path), "{bin} is stripped");
    }
    let debug_files = find_files(&root.path("usr/lib/debug"), ".debug");
    assert!(
        debug_files.len() >= 2 && debug_files.iter().all(|f| has_debug_info(f)),
        "groupd-dbgsym holds the debug info of both binaries: {debug_files:?}"
    );
    let unit = [
        "lib/systemd/system/groupd.service",
        "usr/lib/systemd/system/groupd.service",
    ]
    .into_iter()
    .find(|u| exists(&root, u))
    .expect("groupd.service installed");
    assert_eq!(
        read(&root.path(unit)),
        read(&Path::new(MANIFEST_DIR).join("systemd/groupd.service")),
        "the unit as in the repository"
    );
    assert!(
        exists(
            &root,
            "etc/systemd/system/multi-user.target.wants/groupd.service"
        ),
        "postinst enabled the unit (in the scratch root)"
    );
    let completions = [
        "usr/share/bash-completion/completions/groupctl",
        "usr/share/bash-completion/completions/groupd",
        "usr/share/zsh/vendor-completions/_groupctl",
        "usr/share/zsh/vendor-completions/_groupd",
        "usr/share/fish/vendor_completions.d/groupctl.fish",
        "usr/share/fish/vendor_completions.d/groupd.fish",
    ];
    for file in completions {
        assert!(!read(&root.path(file)).is_empty(), "{file} installed");
    }
    assert!(read(&root.path(completions[4])).contains("complete -c groupctl"));
    let config = read(&root.path("etc/groupd/groupd.toml"));
    assert!(
        config.contains("path = \"/etc/groupd/cluster.json\""),
        "the file source outside what purge removes:\n{config}"
    );
    let conffiles = read(&root.path("var/lib/dpkg/info/groupd.conffiles"));
    assert!(conffiles.contains("/etc/groupd/groupd.toml"), "{conffiles}");
    // md5sums: dpkg checks every installed file against them.
    assert!(!read(&root.path("var/lib/dpkg/info/groupd.md5sums")).is_empty());
    let verify = ok("dpkg --verify", &root.dpkg(&["--verify", "groupd"]));
    assert_eq!(verify.trim(), "", "every file matches its md5sum");

    // An upgrade (the same version again: prerm upgrade, postinst configure
    // <old version>) runs the restart path of the scripts and keeps the unit
    // enabled and the config.
    ok(
        "dpkg -i (upgrade)",
        &root.dpkg(&["--force-depends", "-i", &deb_arg]),
    );
    assert!(exists(
        &root,
        "etc/systemd/system/multi-user.target.wants/groupd.service"
    ));
    assert_eq!(read(&root.path("etc/groupd/groupd.toml")), config);

    // The man pages render, with the right NAME.
    for (name, about) in [
        ("groupd", "Network security groups for Mesos tasks"),
        ("groupctl", "Inspect what groupd enforces"),
    ] {
        let page = ["usr/share/man/man1/{}.1.gz", "usr/share/man/man1/{}.1"]
            .into_iter()
            .map(|p| root.path(&p.replace("{}", name)))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("man page of {name} installed"));
        let out = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .output()
            .expect("run man (man-db)");
        let text = ok("man -l", &out);
        let after_name = text
            .split_once("NAME")
            .map(|(_, rest)| rest.trim_start())
            .unwrap_or("");
        assert!(
            after_name.starts_with(&format!("{name} - {about}")),
            "{name}.1 NAME section:\n{text}"
        );
        assert!(text.contains("SYNOPSIS"), "{name}.1:\n{text}");
    }

    // The bash completion loads and registers groupctl.
    let script = format!(
        "source {} && complete -p groupctl",
        root.path(completions[0]).display()
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &script])
        .output()
        .expect("run bash");
    assert!(ok("bash completion", &out).contains("groupctl"));

    // check-config accepts the shipped config (paths moved into the scratch
    // root and the file source pointed at a temp file).
    let work = tempdir("check");
    let doc = work.0.join("cluster.json");
    std::fs::write(&doc, "{\"apps\": []}").expect("write the cluster document");
    let checked = config
        .replace("/etc/groupd/cluster.json", &doc.to_string_lossy())
        .replace(
            "/etc/groupd/policies",
            &root.path("etc/groupd/policies").to_string_lossy(),
        )
        .replace("/var/lib/groupd", &work.0.join("state").to_string_lossy())
        .replace("/run/groupd", &work.0.to_string_lossy());
    let checked_path = work.0.join("groupd.toml");
    std::fs::write(&checked_path, checked).expect("write the config");
    let out = Command::new(root.path("usr/bin/groupd"))
        .arg("--config")
        .arg(&checked_path)
        .arg("check-config")
        .output()
        .expect("run the installed groupd");
    assert!(ok("groupd check-config", &out).contains(": ok"));

    // What an operator and groupd put in place while it ran.
    std::fs::write(root.path("etc/groupd/cluster.json"), "{}").expect("operator document");
    let state = root.path("var/lib/groupd");
    std::fs::create_dir_all(&state).expect("state dir");
    let ours = [
        "snapshot.json",
        "snapshot.json.tmp",
        "journal.jsonl",
        "journal.jsonl.tmp",
        "view.json",
        "view.json.tmp",
    ];
    for f in ours.iter().chain(&["notes.txt"]) {
        std::fs::write(state.join(f), "x").expect("state file");
    }

    ok("dpkg -r", &root.dpkg(&["-r", "groupd-dbgsym", "groupd"]));
    assert!(!exists(&root, "usr/bin/groupd"), "binary removed");
    assert!(
        exists(&root, "etc/groupd/groupd.toml"),
        "remove keeps the config"
    );
    assert!(
        state.join("snapshot.json").exists(),
        "remove keeps the state"
    );

    ok("dpkg -P", &root.dpkg(&["-P", "groupd-dbgsym", "groupd"]));
    assert!(
        !exists(&root, "etc/groupd/groupd.toml"),
        "purge removes the config"
    );
    assert!(
        !exists(
            &root,
            "etc/systemd/system/multi-user.target.wants/groupd.service"
        ),
        "purge removes the enablement"
    );
    for f in ours {
        assert!(!state.join(f).exists(), "purge removes groupd's {f}");
    }
    assert!(
        exists(&root, "etc/groupd/cluster.json"),
        "purge keeps the operator's cluster document"
    );
    assert!(
        state.join("notes.txt").exists(),
        "purge keeps files groupd did not write"
    );
    let status = read(&root.path("var/lib/dpkg/status"));
    assert!(!status.contains("Package: groupd"), "purged: {status}");
}

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(role: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("groupd-pkg-{role}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    TempDir(dir)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Files under `dir` (recursively) whose name ends with `suffix`.
fn find_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_files(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}
