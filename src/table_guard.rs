//! `daemon.table_guard`: keep other processes from changing groupd's tables.
//!
//! - owner: the kernel refuses their changes (owned, persistent tables,
//!   Linux 6.9+); nothing to repair, and nothing groupd can count.
//! - notify: nf_tables notifications name every change by someone else;
//!   the daemon repairs it at once (see [`crate::nft::monitor`]).
//!
//! `auto` tries owner and falls back to notify where the kernel refuses the
//! owner flags. The periodic read-back stays the safety net in both.

use anyhow::{bail, Context as _};
use tokio::sync::mpsc;
use tracing::info;

use crate::config::TableGuard;
use crate::nft::monitor::{self, Monitor, Touch};
use crate::nft::Nft;

/// The guard in force.
pub enum Active {
    Owner,
    /// Foreign changes, one per burst.
    Notify(mpsc::Receiver<Touch>),
}

impl Active {
    /// For `groupctl status` and the metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Active::Owner => "owner",
            Active::Notify(_) => "notify",
        }
    }
}

/// Set up the guard `wanted` for the tables named `table`, all writes going
/// through `nft` (in owner mode, the only socket the kernel lets change them).
pub fn start(nft: &mut Nft, table: &str, wanted: TableGuard) -> anyhow::Result<Active> {
    if wanted != TableGuard::Notify {
        let owned = nft
            .own_tables(table)
            .context("cannot take ownership of groupd's nftables tables")?;
        if owned {
            info!("table guard: owner (the kernel refuses changes to groupd's tables by other processes; they stay when groupd exits)");
            return Ok(Active::Owner);
        }
        if wanted == TableGuard::Owner {
            bail!("daemon.table_guard = \"owner\", but this kernel cannot own nftables tables (NFT_TABLE_F_OWNER + NFT_TABLE_F_PERSIST need Linux 6.9 or newer); set it to \"auto\" or \"notify\"");
        }
    }
    let port = nft.port_id()?;
    let monitor = Monitor::open(table, port)
        .context("cannot subscribe to nf_tables notifications (NFNLGRP_NFTABLES)")?;
    info!("table guard: notify (changes to groupd's tables by other processes are repaired as soon as the kernel reports them)");
    Ok(Active::Notify(monitor::spawn(monitor)?))
}

/// The next foreign change in notify mode; never in owner mode, nor after
/// the listener stopped (it logged why).
pub async fn touched(active: &mut Active) -> Touch {
    if let Active::Notify(rx) = active {
        if let Some(t) = rx.recv().await {
            return t;
        }
    }
    std::future::pending().await
}
