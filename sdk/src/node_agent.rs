//! What every metanode and datanode does towards the master: keep a stable
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
use tokio_stream::wrappers::TcpListenerStream;

use crate::MasterClient;

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
}

struct NodeInfoService {
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
        Ok(u) => pb::Capacity {
            total_bytes: u.total_bytes,
            used_bytes: u.used_bytes,
            available_bytes: u.available_bytes,
        },
        Err(e) => {
            tracing::warn!(error = %e, "reading disk usage failed");
            pb::Capacity::default()
        }
    }
}

/// Runs a metanode or datanode's common part until `shutdown` resolves: the
/// `Node` service on the configured address and the master agent.
pub async fn serve(
    role: NodeRole,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let stored = NodeIdentity::load(&config.data_dir)?;
    if let Some(identity) = &stored {
        if identity.role != role.as_str() {
            anyhow::bail!(
                "{} belongs to a {}, not a {role}",
                config.data_dir.display(),
                identity.role
            );
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
    let node_id = Arc::new(AtomicU64::new(known_id));
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let client = MasterClient::new(config.masters.clone())?;
    let stats = Arc::new(NodeStats::default());
    let agent = tokio::spawn(run_agent(
        client,
        role,
        config.listen.clone(),
        config.data_dir.clone(),
        node_id.clone(),
        stats,
    ));
    tracing::info!(%role, listen = %config.listen, node_id = known_id, "node started");

    let info = NodeInfoService {
        node_id,
        role,
        started: Instant::now(),
    };
    let result = tonic::transport::Server::builder()
        .add_service(node_pb::node_server::NodeServer::new(info))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    agent.abort();
    tracing::info!(%role, "node stopped");
    result.context("serving gRPC")
}

async fn register(
    client: &MasterClient,
    role: NodeRole,
    address: &str,
    data_dir: &Path,
    node_id: &AtomicU64,
) -> Result<Duration, StrataError> {
    let request = pb::RegisterNodeRequest {
        node_id: node_id.load(Ordering::Relaxed),
        role: pb::NodeRole::from(role) as i32,
        address: address.to_string(),
        capacity: Some(capacity(data_dir)),
    };
    let response = client
        .call("registering with the master", |mut c| {
            let request = request.clone();
            async move { c.register_node(request).await }
        })
        .await?;
    if node_id.load(Ordering::Relaxed) != response.node_id {
        let identity = NodeIdentity {
            node_id: response.node_id,
            role: role.as_str().into(),
        };
        identity
            .store(data_dir)
            .map_err(|e| StrataError::internal(format!("storing node identity: {e:#}")))?;
        node_id.store(response.node_id, Ordering::Relaxed);
    } else if NodeIdentity::load(data_dir).ok().flatten().is_none() {
        let identity = NodeIdentity {
            node_id: response.node_id,
            role: role.as_str().into(),
        };
        identity
            .store(data_dir)
            .map_err(|e| StrataError::internal(format!("storing node identity: {e:#}")))?;
    }
    tracing::info!(node_id = response.node_id, "registered with the master");
    Ok(Duration::from_millis(
        response.heartbeat_interval_ms.max(100),
    ))
}

async fn run_agent(
    client: MasterClient,
    role: NodeRole,
    address: String,
    data_dir: PathBuf,
    node_id: Arc<AtomicU64>,
    stats: Arc<NodeStats>,
) {
    let mut interval = loop {
        match register(&client, role, &address, &data_dir, &node_id).await {
            Ok(interval) => break interval,
            Err(e) => {
                tracing::warn!(error = %e, "registration failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        tokio::time::sleep(interval).await;
        let request = pb::HeartbeatRequest {
            node_id: node_id.load(Ordering::Relaxed),
            capacity: Some(capacity(&data_dir)),
            partitions_held: stats.partitions_held.load(Ordering::Relaxed),
        };
        let result = client
            .call(
                "heartbeating",
                |mut c| async move { c.heartbeat(request).await },
            )
            .await;
        match result {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::NotFound => {
                tracing::warn!("the master does not know this node; registering again");
                if let Ok(new_interval) =
                    register(&client, role, &address, &data_dir, &node_id).await
                {
                    interval = new_interval;
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
