//! The cachenode: the shared cache tier (L3) between the clients' own caches
//! and the datanodes. It keeps blocks of blobs in memory and on a local disk
//! ([`store`]) and answers the framed protocol's cache reads on the same
//! server loop as the datanodes (`strata_node::framed_server`): a block it
//! does not hold it reads from the blob's partition itself, so a client pays
//! one hop whatever the level that answers. Clients choose the cachenode of
//! a block by rendezvous hashing over the live cachenodes the master lists
//! (`strata_sdk::cache::tier`); the cachenode registers and heartbeats like
//! any node, reporting what it holds and its hit counters.

pub mod store;
mod telemetry;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use prost::Message;
use strata_common::config::NodeConfig;
use strata_common::types::NodeRole;
use strata_common::{Result, StrataError};
use strata_node::agent::Agent;
use strata_node::framed_server::{FramedHandler, Reply};
use strata_proto::data::{CacheBlockRequest, CacheBlockResponse};
use strata_rpc::framed::KIND_CACHE_READ;

pub use store::{CacheStore, StoreOptions};

/// Answers cache reads from a [`CacheStore`].
pub struct CacheService {
    store: Arc<CacheStore>,
}

impl CacheService {
    pub fn new(store: Arc<CacheStore>) -> CacheService {
        CacheService { store }
    }
}

impl FramedHandler for CacheService {
    fn serves(&self, kind: u8) -> bool {
        kind == KIND_CACHE_READ
    }

    async fn handle(&self, _kind: u8, header: Vec<u8>, _payload: Bytes) -> Result<Reply> {
        let request = CacheBlockRequest::decode(header.as_slice())
            .map_err(|e| StrataError::invalid(format!("cache read header: {e}")))?;
        let (block, crc32, source) = self.store.block(&request).await?;
        let response = CacheBlockResponse { crc32, source: source as i32 };
        let payload = if request.fill_only { Bytes::new() } else { block };
        Ok(Reply::Bytes { header: response.encode_to_vec(), payload })
    }
}

/// What the disk level's blocks belong to: the cluster, named by its masters
/// (partition and blob ids are unique within a cluster, not across clusters).
fn cluster_identity(config: &NodeConfig) -> String {
    let mut masters = config.masters.clone();
    masters.sort();
    format!("cluster of masters {}", masters.join(","))
}

/// Runs a cachenode until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let agent = Agent::new(NodeRole::Cachenode, &config)?;
    let tier = &config.cache;
    let options = StoreOptions {
        memory_bytes: tier.memory_mb << 20,
        disk_dir: tier.disk_dir.clone().unwrap_or_else(|| config.data_dir.join("cache")),
        disk_bytes: tier.disk_mb << 20,
        block_size: tier.block_size,
        identity: cluster_identity(&config),
    };
    let store = CacheStore::open(&options).context("opening the cache store")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let info = agent.info_service();
    let interval = agent.register().await;
    tracing::info!(listen = %config.listen, node_id = agent.node_id(), memory_mb = tier.memory_mb, disk_mb = tier.disk_mb, "cachenode started");
    let figures = tokio::spawn(telemetry::run(store.clone(), agent.stats.clone()));
    let heartbeats = tokio::spawn(async move { agent.heartbeat_loop(interval, |_, _| ()).await });
    let router = tonic::transport::Server::builder().layer(strata_common::telemetry::GrpcMetrics).add_service(info);
    let service = Arc::new(CacheService::new(store));
    let result = strata_node::framed_server::serve_port(listener, service, router, shutdown).await;
    heartbeats.abort();
    figures.abort();
    tracing::info!("cachenode stopped");
    result.context("serving")
}
