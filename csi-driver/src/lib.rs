//! Strata's CSI driver: Kubernetes PersistentVolumeClaims on Strata,
//! served over gRPC on a Unix socket as the CSI specification (v1) asks.
//!
//! - [`controller`] makes, resizes, lists and removes PVCs:
//!   a PVC is a Strata volume (`mode: volume`) or a directory of a shared
//!   volume (`mode: subdir`), made through the sdk and the master;
//! - [`node`] stages (one FUSE mount per volume per node, bind-mounted per
//!   PVC), publishes (bind mounts into pods, read-only when asked), stats,
//!   and the repair pass that keeps mounts alive across plugin restarts and
//!   FUSE process deaths;
//! - [`identity`] answers with the plugin's name, capabilities and readiness;
//! - [`request`] checks capabilities, capacity ranges and StorageClass parameters;
//! - [`secrets`] checks the access key a StorageClass's secrets carry;
//! - [`ids`] defines the volume id format.

pub mod controller;
pub mod identity;
pub mod ids;
pub mod mounts;
pub mod node;
pub mod request;
pub mod secrets;
pub mod state;
mod status;

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Context;
pub use mounts::FuseScope;
use strata_common::types::Redundancy;
use strata_proto::csi::controller_server::ControllerServer;
use strata_proto::csi::identity_server::IdentityServer;
use strata_proto::csi::node_server::NodeServer;
use strata_sdk::MasterClient;
use tonic::transport::{Channel, Endpoint, Server};

/// Which CSI services one plugin process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The cluster-wide provisioner (a Deployment next to the sidecars).
    Controller,
    /// The per-node plugin (a DaemonSet, privileged, with mount propagation).
    Node,
    Both,
}

/// Everything a CSI plugin process is started with.
#[derive(Debug, Clone)]
pub struct CsiConfig {
    /// The Unix socket to serve on (a stale one is replaced).
    pub socket: PathBuf,
    /// This node's id as Kubernetes knows it (NodeGetInfo).
    pub node_id: String,
    pub role: Role,
    pub masters: Vec<String>,
    /// Staging records, FUSE logs and disk caches (node role); must
    /// survive plugin restarts (a host path in Kubernetes).
    pub state_dir: PathBuf,
    /// The `strata` binary that runs `strata mount` (node role).
    pub strata: PathBuf,
    /// Where the FUSE processes live (node role).
    pub fuse_scope: mounts::FuseScope,
    /// The shared volume of `subdir` StorageClasses naming none.
    pub default_volume: String,
    /// The redundancy of `volume` StorageClasses naming none.
    pub default_redundancy: Redundancy,
}

/// The socket path of a CSI endpoint: `unix:///csi/csi.sock` or a bare absolute path.
pub fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    anyhow::ensure!(path.starts_with('/'), "endpoint {endpoint:?} is not unix:///ABSOLUTE/PATH");
    Ok(PathBuf::from(path))
}

/// Serves the CSI services of `config.role` until `shutdown` completes.
pub async fn serve(config: CsiConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let master = || MasterClient::new(config.masters.clone());
    let serves_controller = config.role != Role::Node;
    let identity = identity::IdentityService { master: master()?, controller: serves_controller };
    let controller = if serves_controller {
        Some(ControllerServer::new(controller::ControllerService::new(controller::ControllerConfig {
            masters: config.masters.clone(),
            default_volume: config.default_volume.clone(),
            default_redundancy: config.default_redundancy,
        })?))
    } else {
        None
    };
    let node = if config.role != Role::Controller {
        let mounter = mounts::Mounter {
            strata: config.strata.clone(),
            masters: config.masters.clone(),
            state_dir: config.state_dir.clone(),
            scope: config.fuse_scope,
        };
        let service = node::NodeService::new(config.node_id.clone(), master()?, mounter)?;
        service.start_repairs().await.context("adopting the volumes staged before this start")?;
        Some(NodeServer::new(service))
    } else {
        None
    };
    if let Some(dir) = config.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(&config.socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the stale socket {}", config.socket.display()));
        }
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&config.socket)
        .with_context(|| format!("listening on {}", config.socket.display()))?;
    tracing::info!(socket = %config.socket.display(), node_id = %config.node_id, role = ?config.role, fuse_scope = ?config.fuse_scope, "csi plugin serving");
    Server::builder()
        .layer(strata_common::telemetry::GrpcMetrics)
        .add_service(IdentityServer::new(identity))
        .add_optional_service(controller)
        .add_optional_service(node)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), shutdown)
        .await
        .context("serving csi")?;
    Ok(())
}

/// A gRPC channel to a CSI plugin's Unix socket (as kubelet and the sidecars open it).
pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let socket = socket.to_path_buf();
    // The URI is required by the API and ignored by the connector.
    let channel = Endpoint::from_static("http://csi.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
            }
        }))
        .await
        .context("connecting to the csi socket")?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_absolute_socket_paths() {
        assert_eq!(socket_path("unix:///csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert_eq!(socket_path("/run/csi.sock").unwrap(), PathBuf::from("/run/csi.sock"));
        assert!(socket_path("unix://relative.sock").is_err());
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
    }
}
