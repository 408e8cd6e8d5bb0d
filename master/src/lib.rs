//! The Strata master: the cluster's source of truth for nodes, volumes and
//! their partitions, and users. Its state is one Raft group (group id
//! [`MASTER_GROUP`]) hosted by `strata-raftstore` on every master replica;
//! only the leader answers requests, followers point clients at it.

pub mod console;
mod events;
mod liveness;
mod placement;
mod quotas;
mod repair;
mod server;
mod service;
mod state;
#[cfg(test)]
mod state_tests;
mod telemetry;

pub use server::run;
pub use state::MASTER_GROUP;
