//! `mesos-sim`: a simulated Mesos master for `make demo` and shell scripts.
//! Serves a fixture (or an empty cluster), the v1 operator API and
//! `/master/state`, and the control API under `/_sim/` on the same port;
//! see the docs of `groupd_sim::mesos`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use groupd_sim::mesos::{Auth, MesosOptions, MesosSim};

#[derive(Parser)]
#[command(
    name = "mesos-sim",
    about = "A simulated Mesos master: POST /api/v1 (SUBSCRIBE, GET_STATE), /master/state and a control API under /_sim/"
)]
struct Args {
    /// Address to listen on (port 0: any free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:5050")]
    listen: SocketAddr,
    /// A /master/state document or a SUBSCRIBE capture (RecordIO or one
    /// record per line) to start from.
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// HEARTBEAT period of SUBSCRIBE streams, in milliseconds.
    #[arg(long, default_value_t = 15_000)]
    heartbeat_ms: u64,
    /// Require HTTP basic auth with this user (with --password-file).
    #[arg(long, requires = "password_file")]
    username: Option<String>,
    #[arg(long, requires = "username")]
    password_file: Option<PathBuf>,
    /// Answer /api/v1 with 404, like a master before 1.0.
    #[arg(long)]
    old_mesos: bool,
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
    let auth = match (&args.username, &args.password_file) {
        (Some(username), Some(file)) => Some(Auth::Basic {
            username: username.clone(),
            password: read_secret(file)?,
        }),
        _ => None,
    };
    let options = MesosOptions {
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(1)),
        auth,
        old_mesos: args.old_mesos,
        ..MesosOptions::default()
    };
    let sim = MesosSim::start(args.listen, options)
        .with_context(|| format!("listening on {}", args.listen))?;
    if let Some(path) = &args.fixture {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let tasks = sim
            .load_fixture(&bytes)
            .with_context(|| format!("loading {}", path.display()))?;
        tracing::info!("serving {tasks} tasks from {}", path.display());
    }
    // Scripts read the URL from the first line (useful with port 0).
    println!("mesos-sim listening on {}", sim.url());
    loop {
        std::thread::park();
    }
}
