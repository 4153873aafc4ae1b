//! CPU time and resident memory of a process, from /proc.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// utime + stime, seconds.
    pub cpu: f64,
    /// VmRSS, MiB.
    pub rss_mb: f64,
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Fields 14 and 15 of /proc/PID/stat, counted after the command name,
/// which is in parentheses and may contain spaces.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

fn rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmRSS:")
}

/// Peak resident memory so far (VmHWM), MiB.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmHWM:")
}

/// A `/proc/PID/status` memory field (`VmHWM:`, `VmRSS:`), MiB.
pub fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub fn sample(pid: u32) -> Sample {
    let at = Instant::now();
    Sample {
        at,
        cpu: cpu_seconds(pid).unwrap_or_else(|| panic!("read /proc/{pid}/stat")),
        rss_mb: rss_mb(pid).unwrap_or_else(|| panic!("read /proc/{pid}/status")),
    }
}

/// CPU used between two samples, in percent of one core.
pub fn cpu_percent(a: &Sample, b: &Sample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall > 0.0 {
        100.0 * (b.cpu - a.cpu) / wall
    } else {
        0.0
    }
}
