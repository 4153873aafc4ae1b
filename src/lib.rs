//! groupd: network security groups for IP-per-task workloads on Mesos agents.
//!
//! The flow, one module per step:
//! `source` (master -> [`model::ClusterView`]) -> `binding` (which local
//! interface carries which IP) -> `compile` (view + bindings + policy ->
//! desired ruleset, pure) -> `nft` (diff against the kernel, one atomic
//! netlink transaction) ; `daemon` runs the loop, `status` serves groupctl.

pub mod binding;
pub mod compile;
pub mod config;
pub mod daemon;
pub mod explain;
pub mod metrics;
pub mod model;
pub mod net;
pub mod nft;
pub mod ruleset;
pub mod sim;
pub mod source;
pub mod state;
pub mod status;
pub mod table_guard;
