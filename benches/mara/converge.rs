//! Convergence latency: from the moment the simulator has written a
//! `status_update_event` (TASK_RUNNING with the task's IP) to groupd's event
//! stream, to the moment the kernel commits the task's endpoint element.
//!
//! One event at a time, 1,000 of them, each for a staging task of `/new`
//! (a remote task in the groups of local app 0, so the transaction also
//! adds its group memberships), with 10,000 running tasks known. Start:
//! `WriteRecord.at` of the event (taken right after the write to the socket
//! returned). End: reception of the NEWSETELEM notification for
//! `endpoints4` carrying the task's address ([`crate::common::nlwatch`], [`crate::common::converge`]).

use std::time::Duration;

use super::{new_ip, Agent};
use crate::common::converge::{measure, Result};

pub fn run(agent: &Agent, events: usize) -> Result {
    measure(
        &agent.ns,
        "marathon",
        events.min(agent.new_tasks.len()),
        |i| {
            let ip = new_ip(i);
            let change = agent
                .sim
                .set_task_ips(&agent.new_tasks[i], vec![ip.into()])
                .expect("set_task_ips");
            let written = agent
                .sim
                .wait_written(change.last_seq, Duration::from_secs(10))
                .unwrap_or_else(|| {
                    panic!("event {} was not written to the stream", change.last_seq)
                });
            (ip, written.at)
        },
    )
}
