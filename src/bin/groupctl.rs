//! `groupctl`: what groupd enforces and why.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use groupd::status::{EndpointRow, GroupRow, Request};

#[derive(Parser)]
#[command(name = "groupctl", version, about = "Inspect what groupd enforces")]
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
    /// Source, last sync, transactions, drift.
    Status,
    /// The nftables ruleset groupd intends (what `nft list table` should show).
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
    let v: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| format!("bad answer from groupd: {e}"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("groupd: {err}"));
    }
    Ok(v)
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let req = match &cli.command {
        Command::Show { what: Some(_), .. } => Request::Groups,
        Command::Show { what: None, all } => Request::Show { all: *all },
        Command::Status => Request::Status,
        Command::Ruleset => Request::Ruleset,
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
            return ExitCode::FAILURE;
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
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
        Request::Status => serde_json::to_string_pretty(&v).unwrap_or_default(),
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
        Request::Ruleset => format!(
            "{}{}",
            v.get("inet").and_then(|x| x.as_str()).unwrap_or(""),
            v.get("bridge").and_then(|x| x.as_str()).unwrap_or("")
        ),
    };
    println!("{text}");
    ExitCode::SUCCESS
}
