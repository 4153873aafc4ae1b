//! The only place that runs `ip` and `sysctl`. Every helper takes the name
//! of a namespace and runs *inside* it (`ip -n NS`, `ip netns exec NS`), so
//! no command here can touch the host's network namespace by accident.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Runs a command to completion and fails with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    check(cmd, &out)?;
    Ok(out)
}

fn check(cmd: &Command, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

fn assert_ns(ns: &str) {
    // An empty name would make `ip -n ""` fail, but be explicit: the host
    // namespace is never a valid target.
    assert!(!ns.is_empty(), "harness bug: empty namespace name");
}

/// `ip netns add NAME`. Fails if the name exists: it might not be ours.
pub fn netns_add(name: &str) -> Result<()> {
    assert_ns(name);
    run(Command::new("ip").args(["netns", "add", name]))
        .with_context(|| format!("ip netns add {name}"))?;
    Ok(())
}

/// Deletes namespaces in one `ip -batch` (one fork for all). `-force` keeps
/// going after an error so one failure does not leak the rest.
pub fn netns_del(names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let script: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
    batch(Command::new("ip").args(["-force", "-batch", "-"]), &script)
}

/// Runs `ip` commands (one per line, without the leading `ip`) inside `ns`.
pub fn ip_batch(ns: &str, lines: &[String]) -> Result<()> {
    assert_ns(ns);
    let script: String = lines.iter().map(|l| format!("{l}\n")).collect();
    batch(Command::new("ip").args(["-n", ns, "-batch", "-"]), &script)
        .with_context(|| format!("in netns {ns}:\n{script}"))
}

fn batch(cmd: &mut Command, script: &str) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .context("writing ip batch script")?;
    let out = child.wait_with_output().context("waiting for ip")?;
    check(cmd, &out)
}

/// `ip -n NS ARGS` and its stdout (used with `-j` for JSON queries).
pub fn ip_query(ns: &str, args: &[&str]) -> Result<String> {
    assert_ns(ns);
    let out = run(Command::new("ip").arg("-n").arg(ns).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sets per-netns sysctls inside `ns` with one `sysctl -w` call.
pub fn sysctl(ns: &str, settings: &[(String, String)]) -> Result<()> {
    assert_ns(ns);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "sysctl", "-q", "-w"]);
    cmd.args(settings.iter().map(|(k, v)| format!("{k}={v}")));
    run(&mut cmd).with_context(|| format!("sysctl in netns {ns}"))?;
    Ok(())
}

/// True if the sysctl `key` exists inside `ns` (e.g. bridge-nf-call-* only
/// exists when br_netfilter is loaded; the harness never loads modules).
pub fn sysctl_exists(ns: &str, key: &str) -> bool {
    assert_ns(ns);
    Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-n", key])
        .stdin(Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Convenience for building sysctl lists.
pub fn kv(key: impl Into<String>, value: impl ToString) -> (String, String) {
    (key.into(), value.to_string())
}

/// `ip netns exec NS ARGS...` with captured output, success or not.
pub fn ns_exec(ns: &str, args: &[&str]) -> Output {
    assert_ns(ns);
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip netns exec {ns} {args:?}: {e}"))
}
