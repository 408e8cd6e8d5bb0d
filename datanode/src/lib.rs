//! The datanode role: the blob store ([`store`]) served over gRPC
//! ([`service`]), next to the part every node shares (registration and
//! heartbeats, see `strata_sdk::node_agent`).

pub mod framed;
pub mod repair;
pub mod service;
pub mod store;

use std::future::Future;

use anyhow::Context;
use std::sync::Arc;
use strata_common::config::NodeConfig;
use strata_common::types::NodeRole;
use strata_proto::data::data_server::DataServer;
use strata_sdk::data::node::MAX_MESSAGE;
use strata_sdk::node_agent::Agent;

use strata_sdk::rpc::WINDOW;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

/// The gRPC `Data` service with message limits for whole blobs.
pub fn data_server(service: Arc<service::DataService>) -> DataServer<service::DataService> {
    DataServer::from_arc(service).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

/// Serves one port for both protocols: each accepted connection's first
/// byte says whether it is a framed data connection or HTTP/2 for gRPC.
pub async fn serve(
    listener: TcpListener,
    service: Arc<service::DataService>,
    router: tonic::transport::server::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel::<std::io::Result<TcpStream>>(64);
    let acceptor = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            // See strata_common::net: gRPC answers must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            let (service, grpc_tx) = (service.clone(), grpc_tx.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                let peeked = tokio::time::timeout(std::time::Duration::from_secs(10), stream.peek(&mut first)).await;
                match peeked {
                    Ok(Ok(1)) if framed::is_framed(first[0]) => framed::serve_connection(stream, service).await,
                    Ok(Ok(1)) => {
                        let _ = grpc_tx.send(Ok(stream)).await;
                    }
                    _ => {}
                }
            });
        }
    });
    let result = router.serve_with_incoming_shutdown(ReceiverStream::new(grpc_rx), shutdown).await;
    acceptor.abort();
    result
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
    let heartbeats = tokio::spawn(async move {
        agent.heartbeat_loop(interval, move |response| repairer.on_assignments(response.data_partitions)).await;
    });
    let service = Arc::new(service::DataService::new(store.clone()));
    let router = tonic::transport::Server::builder()
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW * 4)
        .add_service(data_server(service.clone()))
        .add_service(info);
    let result = serve(listener, service, router, shutdown).await;
    heartbeats.abort();
    bad_blobs.abort();
    disk_reports.abort();
    store.shutdown();
    tracing::info!("datanode stopped");
    result.context("serving gRPC")
}
