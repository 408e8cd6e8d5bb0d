//! Running a metanode: register to learn its id, open its RocksDB and raft
//! engine, host its partitions again, then serve `Meta`, Raft traffic and
//! `Node` on one address while heartbeats bring new partition assignments.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use strata_common::config::NodeConfig;
use strata_common::types::NodeRole;
use strata_node::agent::Agent;
use strata_proto::meta::meta_server::MetaServer;
use strata_raftstore::{AddressBook, Engine, GrpcTransport, RaftService, open_db};

use crate::host::PartitionHost;
use crate::service::MetaService;

/// How often a metanode looks for freed blobs to delete.
const GC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a metanode until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let agent = Agent::new(NodeRole::Metanode, &config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    // The node id is the Raft id of every replica here: learn it before starting Raft.
    let interval = agent.register().await;
    let node_id = agent.node_id();
    let db = open_db(&config.data_dir.join("rocksdb"), &config.raft)?;
    let addresses = AddressBook::new();
    let transport = GrpcTransport::new(node_id, addresses.clone());
    let engine = Engine::start(node_id, db, config.raft.clone(), transport, addresses);
    let host = Arc::new(PartitionHost::new(engine.clone(), node_id, &config, agent.stats.clone()));
    host.restore().await.context("hosting the partitions held before the restart")?;
    tracing::info!(node_id, listen = %config.listen, "metanode started");

    let info = agent.info_service();
    let (assignments_tx, mut assignments_rx) = tokio::sync::mpsc::channel(4);
    let quota_host = host.clone();
    let heartbeats = tokio::spawn(agent.heartbeat_loop(interval, move |response, sent_at| {
        quota_host.quotas.update(&response.quota_limits, sent_at);
        let _ = assignments_tx.try_send(response.meta_partitions);
    }));
    let reconciler = {
        let host = host.clone();
        tokio::spawn(async move {
            while let Some(assigned) = assignments_rx.recv().await {
                host.reconcile(&assigned).await;
            }
        })
    };
    let collector = {
        let host = host.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(GC_INTERVAL).await;
                host.collect_garbage().await;
            }
        })
    };
    let sampler = strata_raftstore::telemetry::spawn_sampler(engine.clone());
    let result = tonic::transport::Server::builder()
        .layer(strata_common::telemetry::GrpcMetrics)
        .add_service(MetaServer::new(MetaService::new(host)))
        .add_service(RaftService::new(engine.clone()).into_server())
        .add_service(info)
        .serve_with_incoming_shutdown(strata_common::net::incoming(listener), shutdown)
        .await;
    heartbeats.abort();
    reconciler.abort();
    sampler.abort();
    collector.abort();
    engine.shutdown();
    tracing::info!(node_id, "metanode stopped");
    result.context("serving gRPC")
}
