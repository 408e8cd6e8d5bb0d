//! What every node does towards the master: keep a stable
//! node id in its data directory, register, heartbeat with its capacity and
//! the partitions it holds, re-register if the master forgot it, and serve
//! its identity on the `Node` gRPC service.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strata_common::config::NodeConfig;
use strata_common::files::{read_json, write_json};
use strata_common::sys::disk_usage;
use strata_common::types::NodeRole;
use strata_common::{ErrorCode, StrataError};
use strata_proto::master as pb;
use strata_proto::node as node_pb;

use strata_rpc::MasterClient;

/// The identity a node keeps in its data directory across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: u64,
    pub role: String,
}

const IDENTITY_FILE: &str = "node.json";

impl NodeIdentity {
    pub fn load(data_dir: &Path) -> strata_common::Result<Option<NodeIdentity>> {
        read_json(&data_dir.join(IDENTITY_FILE))
    }

    /// Writes the identity durably (temp file, fsync, rename, fsync of the directory).
    pub fn store(&self, data_dir: &Path) -> strata_common::Result<()> {
        write_json(&data_dir.join(IDENTITY_FILE), self, true)
    }
}

/// Shared counters the node's services update and the heartbeat reports.
#[derive(Default)]
pub struct NodeStats {
    pub partitions_held: AtomicU64,
    /// Inode counters of the meta partitions this node leads (metanodes).
    pub meta_reports: std::sync::Mutex<Vec<pb::MetaPartitionReport>>,
    /// Data partitions whose copy this node finished rebuilding (datanodes),
    /// reported until the master's assignments no longer list it as rebuilding.
    pub rebuilt: std::sync::Mutex<Vec<u64>>,
    /// Rebuilds in progress (datanodes).
    pub repairs: std::sync::Mutex<Vec<pb::RepairProgress>>,
    /// Data partitions on a failed disk (datanodes).
    pub lost_partitions: std::sync::Mutex<Vec<u64>>,
    /// The store's contents and counters (cachenodes).
    pub cache: std::sync::Mutex<Option<pb::CacheTierReport>>,
}

pub struct NodeInfoService {
    node_id: Arc<AtomicU64>,
    role: NodeRole,
    started: Instant,
}

#[tonic::async_trait]
impl node_pb::node_server::Node for NodeInfoService {
    async fn info(
        &self,
        _r: tonic::Request<node_pb::NodeInfoRequest>,
    ) -> Result<tonic::Response<node_pb::NodeInfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(node_pb::NodeInfoResponse {
            node_id: self.node_id.load(Ordering::Relaxed),
            role: self.role.as_str().to_string(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}

fn capacity(data_dir: &Path) -> pb::Capacity {
    match disk_usage(data_dir) {
        Ok(u) => {
            pb::Capacity { total_bytes: u.total_bytes, used_bytes: u.used_bytes, available_bytes: u.available_bytes }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading disk usage failed");
            pb::Capacity::default()
        }
    }
}

/// A node's link to the master: identity, registration and heartbeats.
pub struct Agent {
    client: MasterClient,
    role: NodeRole,
    address: String,
    data_dir: PathBuf,
    node_id: Arc<AtomicU64>,
    started: Instant,
    /// What the heartbeats report; the node's services update it.
    pub stats: Arc<NodeStats>,
}

impl Agent {
    /// Checks the data directory's identity against the configuration.
    pub fn new(role: NodeRole, config: &NodeConfig) -> anyhow::Result<Agent> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let stored = NodeIdentity::load(&config.data_dir)?;
        if let Some(identity) = &stored {
            if identity.role != role.as_str() {
                anyhow::bail!("{} belongs to a {}, not a {role}", config.data_dir.display(), identity.role);
            }
            if config.node_id != 0 && config.node_id != identity.node_id {
                anyhow::bail!(
                    "configured node id {} differs from id {} stored in {}",
                    config.node_id,
                    identity.node_id,
                    config.data_dir.display()
                );
            }
        }
        let known_id = stored.map(|i| i.node_id).unwrap_or(config.node_id);
        Ok(Agent {
            client: MasterClient::new(config.masters.clone())?,
            role,
            address: config.advertised().to_string(),
            data_dir: config.data_dir.clone(),
            node_id: Arc::new(AtomicU64::new(known_id)),
            started: Instant::now(),
            stats: Arc::new(NodeStats::default()),
        })
    }

    /// The node's id: 0 until the first registration if the master assigns it.
    pub fn node_id(&self) -> u64 {
        self.node_id.load(Ordering::Relaxed)
    }

    /// The `Node` gRPC service telling who this node is.
    pub fn info_service(&self) -> node_pb::node_server::NodeServer<NodeInfoService> {
        node_pb::node_server::NodeServer::new(NodeInfoService {
            node_id: self.node_id.clone(),
            role: self.role,
            started: self.started,
        })
    }

    async fn try_register(&self) -> Result<Duration, StrataError> {
        let request = pb::RegisterNodeRequest {
            node_id: self.node_id(),
            role: pb::NodeRole::from(self.role) as i32,
            address: self.address.clone(),
            capacity: Some(capacity(&self.data_dir)),
        };
        let response = self
            .client
            .call("registering with the master", |mut c| {
                let request = request.clone();
                async move { c.register_node(request).await }
            })
            .await?;
        let identity = NodeIdentity { node_id: response.node_id, role: self.role.as_str().into() };
        if NodeIdentity::load(&self.data_dir)?.as_ref() != Some(&identity) {
            identity.store(&self.data_dir)?;
        }
        self.node_id.store(response.node_id, Ordering::Relaxed);
        tracing::info!(node_id = response.node_id, "registered with the master");
        Ok(Duration::from_millis(response.heartbeat_interval_ms.max(100)))
    }

    /// Registers, retrying until the master accepts; returns the heartbeat interval.
    pub async fn register(&self) -> Duration {
        loop {
            match self.try_register().await {
                Ok(interval) => return interval,
                Err(e) => {
                    tracing::warn!(error = %e, "registration failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Heartbeats every `interval` forever, handing each answer to `on_response`;
    /// registers again if the master has forgotten this node.
    pub async fn heartbeat_loop(
        self,
        mut interval: Duration,
        mut on_response: impl FnMut(pb::HeartbeatResponse, Instant) + Send,
    ) {
        loop {
            tokio::time::sleep(interval).await;
            let request = pb::HeartbeatRequest {
                node_id: self.node_id(),
                capacity: Some(capacity(&self.data_dir)),
                partitions_held: self.stats.partitions_held.load(Ordering::Relaxed),
                meta_reports: self.stats.meta_reports.lock().unwrap().clone(),
                rebuilt: self.stats.rebuilt.lock().unwrap().clone(),
                repairs: self.stats.repairs.lock().unwrap().clone(),
                lost_partitions: self.stats.lost_partitions.lock().unwrap().clone(),
                cache: *self.stats.cache.lock().unwrap(),
            };
            let sent_at = Instant::now();
            let heartbeat = self.client.call("heartbeating", |mut c| {
                let request = request.clone();
                async move { c.heartbeat(request).await }
            });
            match heartbeat.await {
                Ok(response) => on_response(response, sent_at),
                Err(e) if e.code == ErrorCode::NotFound => {
                    tracing::warn!("the master does not know this node; registering again");
                    interval = self.register().await;
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }
}

/// Runs a node that has no services of its own yet: the `Node` service on the
/// configured address and the master agent, until `shutdown` resolves.
pub async fn serve(
    role: NodeRole,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let agent = Agent::new(role, &config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let info = agent.info_service();
    tracing::info!(%role, listen = %config.listen, node_id = agent.node_id(), "node started");
    let heartbeats = tokio::spawn(async move {
        let interval = agent.register().await;
        agent.heartbeat_loop(interval, |_, _| {}).await;
    });
    let result = tonic::transport::Server::builder()
        .layer(strata_common::telemetry::GrpcMetrics)
        .add_service(info)
        .serve_with_incoming_shutdown(strata_common::net::incoming(listener), shutdown)
        .await;
    heartbeats.abort();
    tracing::info!(%role, "node stopped");
    result.context("serving gRPC")
}
