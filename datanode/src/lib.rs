//! The datanode role. For now it runs the part every node shares (see
//! `strata_sdk::node_agent`): it registers with the master, heartbeats its
//! capacity and the partitions it holds, and serves its identity. The
//! datanode services themselves arrive with their own issues.

use std::future::Future;

use strata_common::config::NodeConfig;
use strata_common::types::NodeRole;

/// Runs a datanode until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    strata_sdk::node_agent::serve(NodeRole::Datanode, config, shutdown).await
}
