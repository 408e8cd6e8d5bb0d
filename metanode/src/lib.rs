//! The metanode: hosts the meta partitions the master assigns to it, each a
//! Raft group (one RocksDB, one engine thread and one transport for all of
//! them), holding a volume's namespace by inode range: inodes, dentries and
//! xattrs in RocksDB, never all in memory.

mod attrs;
mod keys;
pub mod machine;
mod ops;
pub mod read;
mod rename;
mod txn;

pub use machine::MetaMachine;

use std::future::Future;

use strata_common::config::NodeConfig;
use strata_common::types::NodeRole;

/// Runs a metanode until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    strata_sdk::node_agent::serve(NodeRole::Metanode, config, shutdown).await
}
