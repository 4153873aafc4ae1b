//! groupd: network security groups for IP-per-task workloads on Mesos agents.
//!
//! The flow, one module per step:
//! `source` (master -> [`source::SourceUpdate`]s of a [`model::ClusterView`])
//! and `binding` (which local interface carries which IP) -> `state`
//! ([`state::DesiredState`], compiled by `compile`, pure: what changed
//! becomes a [`state::Delta`]) -> `nft` (one atomic netlink transaction;
//! read back and diffed against the kernel to repair drift); `daemon` runs
//! the loop, `status` serves groupctl. docs/ARCHITECTURE.md has the map.

pub mod binding;
pub mod cli_assets;
pub mod compile;
pub mod config;
pub mod daemon;
pub mod drops;
pub mod etcd;
pub mod explain;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod net;
pub mod nft;
pub mod publish;
pub mod redact;
pub mod ruleset;
pub mod source;
pub mod state;
pub mod status;
pub mod table_guard;
pub mod task_log;
pub mod view_store;
