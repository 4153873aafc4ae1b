//! `groupd`: the per-agent daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use groupd::config::Config;
use groupd::logging::LogFormat;
use groupd::nft::Nft;

#[derive(Parser)]
#[command(
    name = "groupd",
    version,
    about = "Network security groups for Mesos tasks, enforced with nftables"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, default_value = "/etc/groupd/groupd.toml", global = true)]
    config: PathBuf,
    /// Log lines as text or JSON on stderr. Without it: natively to
    /// journald when stderr is the journal (under systemd), else text.
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    /// Delete groupd's nftables tables and exit (removes all protection).
    #[arg(long)]
    cleanup: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the configuration file and exit.
    CheckConfig,
    /// Keep etcd equal to the master's view for agents with
    /// `[source] kind = "etcd"` (needs `[publish]`; run a few, one leads).
    Publish,
}

fn main() -> ExitCode {
    if let Some(code) = groupd::cli_assets::render_if_requested(Cli::command) {
        return code;
    }
    let cli = Cli::parse();
    groupd::logging::init(cli.log_format);
    let config = Config::load(&cli.config);
    if cli.cleanup {
        // Removal must work even with a broken or missing config.
        let table = match &config {
            Ok(c) => c.daemon.table.clone(),
            Err(e) => {
                eprintln!("groupd: {e}; cleaning up the default table \"groupd\"");
                "groupd".to_string()
            }
        };
        return match Nft::open().and_then(|mut n| n.cleanup(&table)) {
            Ok(n) => {
                eprintln!("groupd: removed {n} table(s) named {table:?}");
                ExitCode::SUCCESS
            }
            Err(e @ groupd::nft::NftError::OwnedByOther { .. }) => {
                eprintln!("groupd: cleanup failed: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("groupd: cleanup failed: {e} (groupd needs CAP_NET_ADMIN)");
                ExitCode::FAILURE
            }
        };
    }
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("groupd: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => check_config(&config, &cli.config),
        Command::Publish => on_runtime("groupd publish", groupd::publish::run(config)),
        Command::Run => {
            one_malloc_arena();
            on_runtime("groupd", groupd::daemon::run(config))
        }
    }
}

/// `groupd check-config`: the parse already passed; now what only the
/// filesystem can tell. Warnings go to stderr and keep exit 0.
fn check_config(config: &Config, path: &std::path::Path) -> ExitCode {
    // Read again for the line numbers; it was readable a moment ago.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let findings = config.check_offline(&text);
    let shown = path.display();
    for warning in &findings.warnings {
        eprintln!("groupd: {shown}: warning: {warning}");
    }
    for error in &findings.errors {
        eprintln!("groupd: {shown}: {error}");
    }
    if !findings.errors.is_empty() {
        return ExitCode::from(2);
    }
    match findings.warnings.len() {
        0 => println!("{shown}: ok"),
        n => println!("{shown}: ok ({n} warning{})", if n == 1 { "" } else { "s" }),
    }
    ExitCode::SUCCESS
}

/// One glibc malloc arena for every thread. The big allocations (a cluster
/// snapshot parsed on one runtime thread, compiled and applied on another)
/// otherwise land in per-thread arenas that never give their free memory to
/// each other: at 33,000 tasks that is tens of megabytes of resident memory
/// for nothing. groupd allocates from one thread at a time, so one arena
/// costs it no contention.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Run one of groupd's commands to completion on a two-thread runtime.
fn on_runtime(name: &str, work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("groupd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
