//! `marathon-sim`: a simulated Marathon for `make demo` and shell scripts.
//! Serves a fixture (or an empty cluster) and the control API under
//! `/_sim/` on the same port; see the docs of `groupd_sim`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use groupd_sim::{Auth, MarathonSim, SimOptions};

#[derive(Parser)]
#[command(
    name = "marathon-sim",
    about = "A simulated Marathon: /v2/apps, /v2/tasks, /v2/pods, /v2/events (SSE) and a control API under /_sim/"
)]
struct Args {
    /// Address to listen on (port 0: any free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A /v2/apps?embed=apps.tasks (or /v2/groups) document to start from.
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Keep-alive period of the event stream, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    keepalive_ms: u64,
    /// Require HTTP basic auth with this user (with --password-file).
    #[arg(long, requires = "password_file")]
    username: Option<String>,
    #[arg(long, requires = "username")]
    password_file: Option<PathBuf>,
    /// Require `Authorization: token=<contents of this file>` (DC/OS).
    #[arg(long, conflicts_with = "username")]
    token_file: Option<PathBuf>,
    /// Answer /v2/pods* with 404, like a Marathon before 1.4 (no pods).
    #[arg(long)]
    no_pods: bool,
}

/// A secret file's contents without the trailing newline editors add.
fn read_secret(path: &PathBuf) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let secret = text.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(secret)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let auth = match (&args.username, &args.password_file, &args.token_file) {
        (Some(username), Some(file), None) => Some(Auth::Basic {
            username: username.clone(),
            password: read_secret(file)?,
        }),
        (None, None, Some(file)) => Some(Auth::Token(read_secret(file)?)),
        _ => None,
    };
    let options = SimOptions {
        keepalive: Duration::from_millis(args.keepalive_ms.max(1)),
        auth,
        pods: !args.no_pods,
        ..SimOptions::default()
    };
    let sim = MarathonSim::start(args.listen, options)
        .with_context(|| format!("listening on {}", args.listen))?;
    if let Some(path) = &args.fixture {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let apps = sim
            .load_fixture(&bytes)
            .with_context(|| format!("loading {}", path.display()))?;
        tracing::info!("serving {apps} apps from {}", path.display());
    }
    // Scripts read the URL from the first line (useful with port 0).
    println!("marathon-sim listening on {}", sim.url());
    loop {
        std::thread::park();
    }
}
