//! `groupctl`: what groupd enforces and why.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use groupd::status::{EndpointRow, GroupRow, Request};

#[derive(Parser)]
#[command(
    name = "groupctl",
    version,
    about = "Inspect what groupd enforces",
    after_help = "Exit status: 0 ok; 1 groupd refused the request, or (status) groupd is degraded or not in sync; 2 groupd cannot be reached."
)]
struct Cli {
    /// groupd's unix socket.
    #[arg(long, default_value = "/run/groupd/groupd.sock", global = true)]
    socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Local endpoints (`show groups` for groups; `--all` for every task).
    Show {
        #[arg(value_parser = ["groups"])]
        what: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Source, last sync, transactions, drift, drops.
    ///
    /// Exit status (for scripts and monitoring): 0 in sync (the source's
    /// last answer was complete and the kernel holds it); 1 degraded or not
    /// in sync (the reason on stderr); 2 groupd cannot be reached.
    Status,
    /// The nftables ruleset groupd intends, as `nft list table inet groupd` and
    /// `nft list table bridge groupd` print it (`--json`: as `nft -j` prints it).
    Ruleset,
    /// Verdict of this agent for a new flow SRC -> DST, and the rule that decides it.
    Explain {
        /// Source IP or task ID, or "host" for this agent.
        src: String,
        /// Destination IP or task ID.
        dst: String,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, value_parser = ["tcp", "udp", "icmp"], default_value = "tcp")]
        proto: String,
    },
    /// Recent drops and the rule that dropped each (needs `[drops] log = true`).
    Drops {
        /// Keep printing new drops as they come (`--json`: one object a line).
        #[arg(long)]
        follow: bool,
        /// Only drops from or to this task ID.
        #[arg(long)]
        task: Option<String>,
    },
}

fn ask(socket: &PathBuf, req: &Request) -> Result<serde_json::Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to {} ({e}); is groupd running? (use --socket PATH)",
            socket.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| format!("write to groupd: {e}"))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| format!("read from groupd: {e}"))?;
    serde_json::from_str(&reply).map_err(|e| format!("bad answer from groupd: {e}"))
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

/// Control characters from the master never reach the operator's terminal.
fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s
    }
}

/// Like [`clean`] but without shortening (a reason is a sentence).
fn clean_long(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// "3h12m", "45s": how long ago `then` (unix seconds) was.
fn ago(then: Option<f64>, now: f64) -> String {
    let Some(then) = then else {
        return "never".into();
    };
    let s = (now - then).max(0.0) as u64;
    let text = match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    };
    format!("{text} ago")
}

/// `groupctl status` for people: health first, then what is enforced,
/// then what was dropped and why (`--json` has every field).
fn status_text(v: &serde_json::Value, now: f64) -> String {
    let h = &v["health"];
    let text = |x: &serde_json::Value| clean(x.as_str().unwrap_or("?"));
    let num = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    let mut out = format!(
        "source      {} ({}), last snapshot {}\n",
        text(&h["source"]),
        text(&h["source_state"]),
        ago(h["last_sync_unix"].as_f64(), now)
    );
    if let Some(reason) = h["degraded_reason"].as_str() {
        out.push_str(&format!("degraded    {}\n", clean_long(reason)));
    }
    if let Some(revision) = h["source_revision"].as_i64() {
        out.push_str(&format!(
            "etcd        revision {revision}, publisher {}, {} full range reads\n",
            h["source_publisher"]
                .as_str()
                .map(clean)
                .unwrap_or_else(|| "(none yet)".into()),
            num(&h["source_full_reads"])
        ));
    }
    out.push_str(&format!(
        "daemon      up {}; {} transactions ({} failed), last apply {:.1} ms\n",
        ago(h["started_unix"].as_f64(), now).trim_end_matches(" ago"),
        num(&h["transactions"]),
        num(&h["transaction_errors"]),
        h["last_apply_ms"].as_f64().unwrap_or(0.0)
    ));
    out.push_str(&format!(
        "kernel      {} set elements; last read-back {}, {} drift repairs\n",
        num(&v["kernel_elements"]),
        ago(h["last_verify_unix"].as_f64(), now),
        num(&h["drift_repairs"])
    ));
    out.push_str(&guard_line(h));
    out.push_str(&format!(
        "cluster     {} tasks, {} endpoints; {} task interfaces on this agent\n",
        num(&v["tasks"]),
        num(&v["endpoints"]),
        num(&v["task_interfaces"])
    ));
    let conflicts = h["conflicts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for c in conflicts {
        out.push_str(&format!(
            "conflict    {}\n",
            clean_long(c.as_str().unwrap_or("?"))
        ));
    }
    out.push_str("dropped (packets, bytes, since the table was created):\n");
    if let Some(drops) = v["dropped_packets_bytes"].as_object() {
        for (id, pb) in drops {
            let reason = groupd::status::drop_reason_text(id).unwrap_or(id);
            out.push_str(&format!(
                "  {:<52} {:>12} {:>14}\n",
                clean(reason),
                num(&pb[0]),
                num(&pb[1])
            ));
        }
    }
    out
}

/// `groupctl status`'s exit code: 0 in sync, 1 not (the reason on stderr).
fn status_exit(v: &serde_json::Value) -> ExitCode {
    let problem = match serde_json::from_value::<groupd::daemon::Health>(v["health"].clone()) {
        Ok(health) => groupd::status::sync_problem(&health),
        Err(e) => Some(format!(
            "cannot read groupd's health ({e}); is groupctl as new as groupd?"
        )),
    };
    match problem {
        None => ExitCode::SUCCESS,
        Some(p) => {
            eprintln!("groupctl: not in sync: {}", clean_long(&p));
            ExitCode::from(EXIT_NOT_IN_SYNC)
        }
    }
}

/// Exit codes besides 0.
const EXIT_NOT_IN_SYNC: u8 = 1;
const EXIT_UNREACHABLE: u8 = 2;

/// Which table guard is in force, and what it did.
fn guard_line(h: &serde_json::Value) -> String {
    let num = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    match h["table_guard"].as_str() {
        Some("owner") => "guard       owner (others are refused by the kernel)
"
        .to_string(),
        Some("notify") => format!(
            "guard       notify: {} changes by other processes seen, {} repaired at once
",
            num(&h["tamper_notifications"]),
            num(&h["tamper_repairs"])
        ),
        _ => String::new(),
    }
}

/// How often `groupctl drops --follow` asks for new drops.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// `groupctl drops`: what was dropped, by which rule; `--follow` polls.
fn drops(cli: &Cli, follow: bool, task: Option<String>) -> ExitCode {
    use groupd::drops::{format_line, DropsAnswer};
    let mut after = None;
    loop {
        let req = Request::Drops {
            task: task.clone(),
            after,
        };
        let answer = ask(&cli.socket, &req).and_then(|v| {
            serde_json::from_value::<DropsAnswer>(v).map_err(|e| format!("unexpected answer: {e}"))
        });
        let a = match answer {
            Ok(a) => a,
            Err(e) => {
                eprintln!("groupctl: {e}");
                return ExitCode::FAILURE;
            }
        };
        if after.is_none() {
            if !a.enabled {
                eprintln!("groupctl: drops are not logged; set `[drops] log = true` in groupd's config and restart groupd");
                return ExitCode::FAILURE;
            }
            if let Some(e) = &a.listener_error {
                eprintln!("groupctl: groupd cannot receive its drops: {e}");
            }
            if a.lost > 0 {
                eprintln!("groupctl: {} drop(s) were not recorded (groupd was behind); the counters in `groupctl status` have them all", a.lost);
            }
            if a.drops.is_empty() && !follow && !cli.json {
                eprintln!("groupctl: no drops recorded since groupd started");
            }
        }
        if cli.json && !follow {
            println!(
                "{}",
                serde_json::to_string_pretty(&a.drops).unwrap_or_default()
            );
            return ExitCode::SUCCESS;
        }
        for r in &a.drops {
            if cli.json {
                println!("{}", serde_json::to_string(r).unwrap_or_default());
            } else {
                println!("{}", format_line(r));
            }
        }
        if !follow {
            return ExitCode::SUCCESS;
        }
        let _ = std::io::stdout().flush();
        // A restarted groupd counts from 1 again: then everything it has is new.
        after = Some(if after.is_some_and(|seen| a.last_seq < seen) {
            0
        } else {
            a.last_seq
        });
        std::thread::sleep(FOLLOW_POLL);
    }
}

fn main() -> ExitCode {
    if let Some(code) = groupd::cli_assets::render_if_requested(Cli::command) {
        return code;
    }
    let cli = Cli::parse();
    if let Command::Drops { follow, task } = &cli.command {
        return drops(&cli, *follow, task.clone());
    }
    let req = match &cli.command {
        Command::Show { what: Some(_), .. } => Request::Groups,
        Command::Show { what: None, all } => Request::Show { all: *all },
        Command::Status => Request::Status,
        Command::Ruleset => Request::Ruleset,
        // Answered above (it may poll).
        Command::Drops { .. } => return ExitCode::SUCCESS,
        Command::Explain {
            src,
            dst,
            port,
            proto,
        } => Request::Explain {
            src: src.clone(),
            dst: dst.clone(),
            port: *port,
            proto: match proto.as_str() {
                "udp" => groupd::explain::Proto::Udp,
                "icmp" => groupd::explain::Proto::Icmp,
                _ => groupd::explain::Proto::Tcp,
            },
        },
    };
    let v = match ask(&cli.socket, &req) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("groupctl: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    // groupd answered, but refused the request (e.g. an unknown task).
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        eprintln!("groupctl: groupd: {}", clean_long(err));
        return ExitCode::FAILURE;
    }
    let exit = match req {
        Request::Status => status_exit(&v),
        _ => ExitCode::SUCCESS,
    };
    if cli.json {
        // The ruleset in the libnftables schema, comparable with `nft -j list
        // table`; every other answer as groupd sent it.
        let v = match (&req, v.get("nftables_json")) {
            (Request::Ruleset, Some(doc)) => doc.clone(),
            _ => v,
        };
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return exit;
    }
    let text = match req {
        Request::Show { .. } => match serde_json::from_value::<Vec<EndpointRow>>(v) {
            Ok(rows) => table(
                &[
                    "TASK",
                    "APP",
                    "IPS",
                    "IFACE",
                    "GROUPS",
                    "STATE",
                    "ENFORCEMENT",
                ],
                rows.iter()
                    .map(|r| {
                        vec![
                            clean(&r.task),
                            clean(&r.app),
                            r.ips
                                .iter()
                                .map(|i| i.to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                            r.interfaces.join(","),
                            if r.groups.is_empty() {
                                "(none)".into()
                            } else {
                                clean(&r.groups.join(","))
                            },
                            r.task_state.trim_start_matches("TASK_").to_string(),
                            r.enforcement.clone(),
                        ]
                    })
                    .collect(),
            ),
            Err(e) => format!("unexpected answer: {e}"),
        },
        Request::Groups => match serde_json::from_value::<Vec<GroupRow>>(v) {
            Ok(rows) => table(
                &[
                    "GROUP",
                    "OPEN",
                    "MEMBERS",
                    "LOCAL",
                    "ADDRESSES",
                    "LOCAL MEMBERS",
                ],
                rows.iter()
                    .map(|r| {
                        vec![
                            clean(&r.group),
                            if r.open { "yes".into() } else { "".into() },
                            r.members.len().to_string(),
                            r.local_members.len().to_string(),
                            r.addresses.to_string(),
                            clean(&r.local_members.join(",")),
                        ]
                    })
                    .collect(),
            ),
            Err(e) => format!("unexpected answer: {e}"),
        },
        Request::Status => status_text(&v, now_unix()),
        Request::Explain { .. } => {
            match serde_json::from_value::<groupd::explain::Explanation>(v) {
                Ok(e) => {
                    let mut out =
                        format!("{}\n{}\n", e.verdict.to_uppercase(), clean_long(&e.reason));
                    out.push_str("\npath through the ruleset:\n");
                    for s in &e.steps {
                        out.push_str(&format!("  {:<28} {}\n", s.chain, s.rule));
                    }
                    out
                }
                Err(e) => format!("unexpected answer: {e}"),
            }
        }
        // Already newline-terminated, byte for byte what `nft list table`
        // prints: no extra line, so `diff` against nft is empty.
        Request::Ruleset => {
            print!("{}", groupd::status::ruleset_text(&v));
            return ExitCode::SUCCESS;
        }
        Request::Drops { .. } => String::new(),
    };
    println!("{text}");
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_etcd_revision_and_publisher() {
        let v = serde_json::json!({
            "health": {
                "source": "etcd", "source_state": "in-sync", "source_revision": 4711,
                "source_publisher": "m1:42", "source_full_reads": 1, "started_unix": 100.0
            }
        });
        let text = status_text(&v, 1100.0);
        assert!(
            text.contains("etcd        revision 4711, publisher m1:42, 1 full range reads"),
            "{text}"
        );
        let other = serde_json::json!({"health": {"source": "file", "source_state": "in-sync"}});
        assert!(!status_text(&other, 1100.0).contains("revision"));
    }

    #[test]
    fn status_reads_for_people_and_keeps_every_number() {
        let v = serde_json::json!({
            "health": {
                "source": "file", "source_state": "degraded",
                "degraded_reason": "file /x: truncated JSON",
                "last_sync_unix": 1000.0, "transactions": 12, "transaction_errors": 1,
                "last_apply_ms": 0.44, "drift_repairs": 2, "last_verify_unix": 1090.0,
                "conflicts": ["IP 10.233.0.1 is claimed by 2 live tasks (a, b)"],
                "started_unix": 100.0, "table_guard": "notify",
                "tamper_notifications": 4, "tamper_repairs": 3
            },
            "tasks": 3, "endpoints": 2, "task_interfaces": 1, "kernel_elements": 40,
            "dropped_packets_bytes": {"r1_r4_egress_denied": [5, 420], "r99_future": [1, 2]}
        });
        let text = status_text(&v, 1100.0);
        for want in [
            "file (degraded), last snapshot 100s ago",
            "degraded    file /x: truncated JSON",
            "up 16m40s; 12 transactions (1 failed), last apply 0.4 ms",
            "40 set elements; last read-back 10s ago, 2 drift repairs",
            "3 tasks, 2 endpoints; 1 task interfaces",
            "guard       notify: 4 changes by other processes seen, 3 repaired at once",
            "conflict    IP 10.233.0.1 is claimed by 2 live tasks (a, b)",
            "egress denied (R1, R4)",
            "420",
            "r99_future",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        // A daemon that never synced, and an answer missing fields.
        let text = status_text(&serde_json::json!({"health": {}}), 5.0);
        assert!(text.contains("last snapshot never"), "{text}");
        let owner = serde_json::json!({"table_guard": "owner"});
        assert_eq!(
            guard_line(&owner),
            "guard       owner (others are refused by the kernel)\n"
        );
        assert_eq!(ago(Some(0.0), 7300.0), "2h01m ago");
    }
}
