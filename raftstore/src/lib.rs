//! A multi-raft engine: many raft-rs groups on one node, their logs, hard
//! states and state-machine data in one RocksDB, every group's log writes of a
//! ready round committed in one synced write batch, and peers reached through
//! a [`Transport`] that batches messages per destination node.
//!
//! A service hosts its replicated state by implementing [`StateMachine`]: the
//! engine applies committed commands to it through an [`ApplyBatch`] that
//! writes into the group's own key space, and takes and installs snapshots of
//! that key space itself, so state machines never deal with Raft internals.

mod db;
mod engine;
mod keys;
mod kv;
mod logger;
mod peer;
mod quiesce;
mod snapfile;
mod snapshot;
mod storage;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transport;

pub use db::open_db;
pub use engine::{Engine, GroupSpec, GroupStatus, Role};
pub use kv::{ApplyBatch, GroupKv, KvRead};
pub use transport::{AddressBook, GrpcTransport, RaftService, Transport};

/// A replicated state machine hosted by one Raft group.
pub trait StateMachine: Send + 'static {
    /// Applies one committed command. Writes go into `batch`, which the engine
    /// commits atomically with the new applied index. Reads through `batch`
    /// see the state before this command. The returned bytes go back to the
    /// proposer if it is waiting on this node.
    fn apply(&mut self, batch: &mut ApplyBatch<'_>, index: u64, command: &[u8]) -> Vec<u8>;

    /// Called after a snapshot replaced the group's whole key space, so that
    /// in-memory caches can be rebuilt from `kv`.
    fn restored(&mut self, _kv: &GroupKv) {}
}
