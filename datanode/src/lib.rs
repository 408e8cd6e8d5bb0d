//! The datanode role: the blob store ([`store`]) served over gRPC
//! ([`service`]) and the framed protocol ([`framed`]) on one port, next to
//! the part every node shares (registration and heartbeats, the framed server
//! loop: `strata_node`).

pub mod framed;
pub mod repair;
pub mod service;
pub mod store;
pub mod telemetry;

use std::future::Future;

use anyhow::Context;
use std::sync::Arc;
use strata_common::config::NodeConfig;
use strata_common::types::NodeRole;
use strata_node::agent::Agent;
use strata_proto::data::data_server::DataServer;
use strata_rpc::channels::WINDOW;
use strata_rpc::datanode::MAX_MESSAGE;

/// The gRPC `Data` service with message limits for whole blobs.
pub fn data_server(service: Arc<service::DataService>) -> DataServer<service::DataService> {
    DataServer::from_arc(service).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

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
    let disk_reports = {
        let (store, stats) = (store.clone(), agent.stats.clone());
        tokio::spawn(async move {
            loop {
                *stats.lost_partitions.lock().unwrap() = store.lost_partitions();
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    };
    let figures = tokio::spawn(telemetry::run(store.clone(), agent.stats.clone()));
    let heartbeats = tokio::spawn(async move {
        agent.heartbeat_loop(interval, move |response, _| repairer.on_assignments(response.data_partitions)).await;
    });
    let service = Arc::new(service::DataService::new(store.clone()));
    let router = tonic::transport::Server::builder()
        .layer(strata_common::telemetry::GrpcMetrics)
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW * 4)
        .add_service(data_server(service.clone()))
        .add_service(info);
    let result = strata_node::framed_server::serve_port(listener, service, router, shutdown).await;
    heartbeats.abort();
    figures.abort();
    bad_blobs.abort();
    disk_reports.abort();
    store.shutdown();
    tracing::info!("datanode stopped");
    result.context("serving gRPC")
}
