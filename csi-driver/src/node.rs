//! The CSI Node service. A staged PVC is a bind mount of its directory in
//! a per-volume FUSE mount the plugin keeps under its state directory (one
//! FUSE process per volume per node, however many PVCs of it are staged);
//! a published PVC is a bind mount of the staging path, read-only when
//! asked. The FUSE processes are not the plugin's children, so a plugin
//! restart leaves every mount serving; the [`NodeService::repair`] pass
//! (at start and every few seconds) remounts a volume whose FUSE process
//! died and binds its staging and published paths again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_common::ErrorCode;
use strata_common::sys::{DiskUsage, InodeUsage};
use strata_proto::csi::{self as pb, node_server::Node, node_service_capability};
use strata_sdk::MasterClient;
use tonic::{Request, Response, Status};

use crate::ids::VolumeId;
use crate::mounts::{self, Health, Mounter};
use crate::request::{MountOptions, is_reader_only, unsupported};
use crate::state::{Records, Staged};

/// How often mounts are checked and repaired.
pub const REPAIR_PERIOD: Duration = Duration::from_secs(2);

pub struct NodeService {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    node_id: String,
    master: MasterClient,
    mounter: Mounter,
    records: Records,
    /// Held while mounts change: RPCs and repairs of one node never interleave.
    changing: Mutex<()>,
}

fn internal(error: anyhow::Error) -> Status {
    tracing::warn!(error = %format!("{error:#}"), "csi node request failed");
    Status::internal(format!("{error:#}"))
}

fn path_of(field: &str, value: &str) -> Result<PathBuf, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is missing")));
    }
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(Status::invalid_argument(format!("{field} {value:?} is not an absolute path")));
    }
    Ok(path)
}

fn volume_id_of(raw: &str) -> Result<VolumeId, Status> {
    if raw.is_empty() {
        return Err(Status::invalid_argument("volume id is missing"));
    }
    VolumeId::parse(raw).ok_or_else(|| Status::not_found(format!("volume {raw:?} was not made by this driver")))
}

fn capability_of(capability: Option<&pb::VolumeCapability>) -> Result<&pb::VolumeCapability, Status> {
    let capability = capability.ok_or_else(|| Status::invalid_argument("volume capability is missing"))?;
    match unsupported(capability) {
        Some(why) => Err(Status::invalid_argument(why)),
        None => Ok(capability),
    }
}

impl NodeInner {
    /// Where `volume`'s FUSE mount lives on this node.
    fn base(&self, volume: &str) -> PathBuf {
        self.mounter.state_dir.join("mounts").join(volume)
    }

    /// The path staged PVCs of `staged` bind from.
    fn source(&self, staged: &Staged) -> PathBuf {
        let base = self.base(&staged.volume);
        match &staged.dir {
            Some(dir) => base.join(dir),
            None => base,
        }
    }

    /// Makes `volume`'s FUSE mount serve (mounting it, or remounting a dead one).
    fn ensure_base(&self, volume: &str, options: &MountOptions) -> anyhow::Result<()> {
        let base = self.base(volume);
        match mounts::health(&base) {
            Health::Healthy => return Ok(()),
            Health::Broken => {
                tracing::warn!(volume, path = %base.display(), "volume mount is broken, mounting it again");
                mounts::detach(&base)?;
            }
            Health::NotMounted => {}
        }
        self.mounter.mount(volume, &base, options)
    }

    /// Makes `target` a healthy bind of `source` (read-only if asked).
    fn ensure_bind(source: &Path, target: &Path, read_only: bool) -> anyhow::Result<()> {
        match mounts::health(target) {
            Health::Healthy => return Ok(()),
            Health::Broken => {
                tracing::warn!(path = %target.display(), "bind mount is broken, binding it again");
                mounts::detach(target)?;
            }
            Health::NotMounted => {}
        }
        mounts::bind(source, target, read_only)
    }

    /// Unmounts `volume`'s FUSE mount when no staged PVC uses it any more.
    fn release_base(&self, volume: &str) -> anyhow::Result<()> {
        if self.records.all()?.iter().any(|s| s.volume == volume) {
            return Ok(());
        }
        let base = self.base(volume);
        if mounts::health(&base) != Health::NotMounted {
            mounts::detach(&base)?;
        }
        Ok(())
    }

    /// Brings every recorded mount back to health.
    fn repair(&self) -> anyhow::Result<()> {
        let _changing = self.changing.lock().unwrap();
        for staged in self.records.all()? {
            let repaired = self.ensure_base(&staged.volume, &staged.options()).and_then(|()| {
                Self::ensure_bind(&self.source(&staged), &staged.staging_path, staged.read_only)?;
                for (target, read_only) in &staged.targets {
                    Self::ensure_bind(&staged.staging_path, target, *read_only)?;
                }
                Ok(())
            });
            if let Err(e) = repaired {
                tracing::warn!(volume_id = %staged.volume_id, error = %format!("{e:#}"), "repairing a staged volume failed");
            }
        }
        Ok(())
    }

    fn stage(&self, id: &VolumeId, staging: &Path, options: &MountOptions) -> Result<(), Status> {
        let _changing = self.changing.lock().unwrap();
        if let Some(existing) = self.records.get(staging).map_err(internal)?
            && existing.volume_id != id.to_string()
        {
            return Err(Status::already_exists(format!(
                "{} already stages volume {}",
                staging.display(),
                existing.volume_id
            )));
        }
        let staged = Staged::new(id, staging, options);
        self.ensure_base(id.volume(), options).map_err(internal)?;
        let source = self.source(&staged);
        if !source.is_dir() {
            self.release_base(id.volume()).map_err(internal)?;
            return Err(Status::not_found(format!("volume {id} has no directory {}", id.dir().unwrap_or("/"))));
        }
        // Recorded first: a crash after the bind leaves a mount the next start adopts.
        self.records.put(&staged).map_err(internal)?;
        Self::ensure_bind(&source, staging, options.read_only).map_err(internal)?;
        tracing::info!(volume_id = %id, staging = %staging.display(), "volume staged");
        Ok(())
    }

    fn unstage(&self, staging: &Path) -> Result<(), Status> {
        let _changing = self.changing.lock().unwrap();
        let staged = self.records.get(staging).map_err(internal)?;
        while mounts::health(staging) != Health::NotMounted {
            mounts::detach(staging).map_err(internal)?;
        }
        if let Some(staged) = staged {
            self.records.remove(staging).map_err(internal)?;
            self.release_base(&staged.volume).map_err(internal)?;
            tracing::info!(volume_id = %staged.volume_id, staging = %staging.display(), "volume unstaged");
        }
        Ok(())
    }

    fn publish(&self, id: &VolumeId, staging: &Path, target: &Path, read_only: bool) -> Result<(), Status> {
        let _changing = self.changing.lock().unwrap();
        let Some(mut staged) = self.records.get(staging).map_err(internal)?.filter(|s| s.volume_id == id.to_string())
        else {
            return Err(Status::failed_precondition(format!("volume {id} is not staged at {}", staging.display())));
        };
        let read_only = read_only || staged.read_only;
        if mounts::health(target) == Health::Healthy {
            return match staged.targets.get(target) {
                Some(published) if *published == read_only => Ok(()),
                Some(_) => Err(Status::already_exists(format!(
                    "{} is published with another read-only setting",
                    target.display()
                ))),
                None => Err(Status::already_exists(format!("{} holds another mount", target.display()))),
            };
        }
        std::fs::create_dir_all(target).map_err(|e| internal(e.into()))?;
        staged.targets.insert(target.to_path_buf(), read_only);
        self.records.put(&staged).map_err(internal)?;
        Self::ensure_bind(staging, target, read_only).map_err(internal)?;
        tracing::info!(volume_id = %id, target = %target.display(), read_only, "volume published");
        Ok(())
    }

    fn unpublish(&self, target: &Path) -> Result<(), Status> {
        let _changing = self.changing.lock().unwrap();
        while mounts::health(target) != Health::NotMounted {
            mounts::detach(target).map_err(internal)?;
        }
        if target.exists() {
            // Only an empty mount point is removed (rmdir), never data.
            if let Err(e) = std::fs::remove_dir(target) {
                tracing::warn!(target = %target.display(), error = %e, "removing an unpublished target failed");
            }
        }
        for mut staged in self.records.all().map_err(internal)? {
            if staged.targets.remove(target).is_some() {
                self.records.put(&staged).map_err(internal)?;
                tracing::info!(volume_id = %staged.volume_id, target = %target.display(), "volume unpublished");
            }
        }
        Ok(())
    }
}

impl NodeService {
    pub fn new(node_id: String, master: MasterClient, mounter: Mounter) -> anyhow::Result<NodeService> {
        let records = Records::open(&mounter.state_dir)?;
        let inner = NodeInner { node_id, master, mounter, records, changing: Mutex::new(()) };
        Ok(NodeService { inner: Arc::new(inner) })
    }

    /// Adopts what an earlier run staged, repairing broken mounts, then
    /// keeps checking every [`REPAIR_PERIOD`] in the background.
    pub async fn start_repairs(&self) -> anyhow::Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.repair()).await??;
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REPAIR_PERIOD).await;
                let inner = inner.clone();
                match tokio::task::spawn_blocking(move || inner.repair()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "checking staged volumes failed"),
                    Err(e) => tracing::warn!(error = %e, "the repair pass panicked"),
                }
            }
        });
        Ok(())
    }

    /// Runs `work` on a blocking thread (mounts and processes block).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&NodeInner) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner)).await.map_err(|e| Status::internal(e.to_string()))?
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = volume_id_of(&request.volume_id)?;
        let staging = path_of("staging target path", &request.staging_target_path)?;
        capability_of(request.volume_capability.as_ref())?;
        let options = MountOptions::from_context(&request.volume_context)?;
        match std::fs::metadata(&staging) {
            Ok(meta) if !meta.is_dir() => {
                return Err(Status::invalid_argument(format!("{} is not a directory", staging.display())));
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir_all(&staging).map_err(|e| internal(e.into()))?,
        }
        let credentials = crate::secrets::Credentials::from_secrets(&request.secrets)?;
        match self.inner.master.get_volume(id.volume()).await {
            Ok(volume) => {
                let need = if options.read_only {
                    strata_common::types::AccessLevel::Read
                } else {
                    strata_common::types::AccessLevel::Write
                };
                crate::secrets::authorize(&self.inner.master, credentials.as_ref(), &volume, need).await?;
            }
            Err(e) if e.code == ErrorCode::NotFound => {
                return Err(Status::not_found(format!("volume {id} does not exist")));
            }
            Err(e) => return Err(crate::status::from_strata(e, "looking up the volume")),
        }
        self.blocking(move |inner| inner.stage(&id, &staging, &options)).await?;
        Ok(Response::new(pb::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        let request = request.into_inner();
        if request.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume id is missing"));
        }
        let staging = path_of("staging target path", &request.staging_target_path)?;
        self.blocking(move |inner| inner.unstage(&staging)).await?;
        Ok(Response::new(pb::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = volume_id_of(&request.volume_id)?;
        let target = path_of("target path", &request.target_path)?;
        if request.staging_target_path.is_empty() {
            return Err(Status::failed_precondition("staging target path is missing: the volume must be staged first"));
        }
        let staging = path_of("staging target path", &request.staging_target_path)?;
        let capability = capability_of(request.volume_capability.as_ref())?;
        let read_only = request.readonly || is_reader_only(capability);
        self.blocking(move |inner| inner.publish(&id, &staging, &target, read_only)).await?;
        Ok(Response::new(pb::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        if request.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume id is missing"));
        }
        let target = path_of("target path", &request.target_path)?;
        self.blocking(move |inner| inner.unpublish(&target)).await?;
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        volume_id_of(&request.volume_id)?;
        let path = path_of("volume path", &request.volume_path)?;
        let stats = tokio::task::spawn_blocking(move || {
            if !mounts::is_mount_or_exists(&path) {
                return Err(Status::not_found(format!("{} does not exist", path.display())));
            }
            Ok(match (mounts::health(&path), strata_common::sys::usage_and_inodes(&path)) {
                (Health::Healthy, Ok(usage)) => volume_stats(usage),
                (health, usage) => {
                    let why = match usage {
                        Err(e) => format!("{} cannot be read: {e}", path.display()),
                        Ok(_) => format!("{} is {health:?}", path.display()),
                    };
                    pb::NodeGetVolumeStatsResponse {
                        usage: Vec::new(),
                        volume_condition: Some(pb::VolumeCondition { abnormal: true, message: why }),
                    }
                }
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(stats))
    }

    async fn node_expand_volume(
        &self,
        request: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        volume_id_of(&request.volume_id)?;
        let path = path_of("volume path", &request.volume_path)?;
        if !mounts::is_mount_or_exists(&path) {
            return Err(Status::not_found(format!("{} does not exist", path.display())));
        }
        // The mount reads the capacity from the cluster: nothing to grow on the node.
        let capacity_bytes = request.capacity_range.map_or(0, |r| r.required_bytes.max(r.limit_bytes));
        Ok(Response::new(pb::NodeExpandVolumeResponse { capacity_bytes }))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::rpc::Type;
        let capabilities = [Type::StageUnstageVolume, Type::GetVolumeStats, Type::ExpandVolume, Type::VolumeCondition]
            .into_iter()
            .map(|t| pb::NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(node_service_capability::Rpc { r#type: t as i32 })),
            })
            .collect();
        Ok(Response::new(pb::NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _request: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: self.inner.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

fn volume_stats((space, inodes): (DiskUsage, InodeUsage)) -> pb::NodeGetVolumeStatsResponse {
    use pb::volume_usage::Unit;
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let entry = |unit: Unit, total, used, available| pb::VolumeUsage {
        total: signed(total),
        used: signed(used),
        available: signed(available),
        unit: unit as i32,
    };
    pb::NodeGetVolumeStatsResponse {
        usage: vec![
            entry(Unit::Bytes, space.total_bytes, space.used_bytes, space.available_bytes),
            entry(Unit::Inodes, inodes.total, inodes.used, inodes.available),
        ],
        volume_condition: Some(pb::VolumeCondition { abnormal: false, message: String::new() }),
    }
}
