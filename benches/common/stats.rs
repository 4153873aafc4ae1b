//! Small statistics and CPU-time helpers (no extra crates).

use std::time::Duration;

/// Summary of a sample, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p99: f64,
    pub n: usize,
}

pub fn summary(samples: &[f64]) -> Summary {
    assert!(!samples.is_empty(), "no samples");
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    // Nearest rank: with 200 samples p99 is the 2nd largest.
    let rank = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
    Summary {
        median,
        min: v[0],
        max: v[n - 1],
        p99: v[rank - 1],
        n,
    }
}

/// User and system CPU time of the calling thread. The kernel runs an
/// nf_tables batch synchronously inside the sender's sendmsg, so the system
/// time of the applying thread is the kernel's share of a transaction.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub user: Duration,
    pub sys: Duration,
}

pub fn thread_cpu() -> Cpu {
    // SAFETY: getrusage fills the struct we own; RUSAGE_THREAD is Linux-only.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let d = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Cpu {
        user: d(ru.ru_utime),
        sys: d(ru.ru_stime),
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(o.user),
            sys: self.sys.saturating_sub(o.sys),
        }
    }
}

/// Seconds, printed with a unit that keeps 2–3 significant digits.
pub fn fmt_s(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}
