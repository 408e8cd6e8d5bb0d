//! The datanode role: the blob store ([`store`]) served over gRPC
//! ([`service`]), next to the part every node shares (registration and
//! heartbeats, see `strata_sdk::node_agent`).

pub mod repair;
pub mod service;
pub mod store;

use std::future::Future;

use anyhow::Context;
use strata_common::config::NodeConfig;
use strata_common::types::NodeRole;
use strata_proto::data::data_server::DataServer;
use strata_sdk::data::node::MAX_MESSAGE;
use strata_sdk::node_agent::Agent;
use tokio_stream::wrappers::TcpListenerStream;

/// Runs a datanode until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let agent = Agent::new(NodeRole::Datanode, &config)?;
    let store = store::Store::open(&config.data_dir, &config.store, &config.raft).context("opening the blob store")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let info = agent.info_service();
    // Rebuilds need the node id (who am I in a partition): learn it first.
    let interval = agent.register().await;
    let repairer = repair::Repairer::new(store.clone(), agent.node_id(), agent.stats.clone());
    tracing::info!(listen = %config.listen, node_id = agent.node_id(), "datanode started");
    let bad_blobs = tokio::spawn(repairer.clone().repair_bad_blobs());
    let heartbeats = tokio::spawn(async move {
        agent.heartbeat_loop(interval, move |response| repairer.on_assignments(response.data_partitions)).await;
    });
    let data = DataServer::new(service::DataService::new(store.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let result = tonic::transport::Server::builder()
        .add_service(data)
        .add_service(info)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    heartbeats.abort();
    bad_blobs.abort();
    store.shutdown();
    tracing::info!("datanode stopped");
    result.context("serving gRPC")
}
