//! The CSI Controller service: makes, resizes, lists and removes the
//! storage behind PVCs. A `volume` PVC is a Strata volume made through the
//! master; a `subdir` PVC is a directory at the root of a shared volume,
//! made through the sdk. Both carry xattrs on their root directory saying
//! which CSI name made them and the capacity asked for, so a repeated
//! request is recognised (CreateVolume and DeleteVolume are idempotent by
//! name and id) and ListVolumes can find them.

use std::sync::Arc;

use strata_common::types::{AccessLevel, Redundancy};
use strata_common::{ErrorCode, StrataError};
use strata_proto::csi::{self as pb, controller_server::Controller, controller_service_capability};
use strata_proto::master as master_pb;
use strata_sdk::MasterClient;
use strata_sdk::cache::CacheConfig;
use strata_sdk::fs::Volume;
use tonic::{Request, Response, Status};

use crate::ids::{VolumeId, dir_name_for, volume_name_for};
use crate::request::{Layout, Parameters, capacity_fits, capacity_for, check_capabilities};
use crate::secrets::Credentials;
use crate::status;

/// The CSI name that made a PVC's root directory.
pub const NAME_XATTR: &[u8] = b"trusted.strata.csi.name";
/// The capacity in bytes a PVC was given (decimal).
pub const CAPACITY_XATTR: &[u8] = b"trusted.strata.csi.capacity";
/// On the root of a volume holding `subdir` PVCs.
pub const SHARED_XATTR: &[u8] = b"trusted.strata.csi.shared";

/// What the controller is set up with.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub masters: Vec<String>,
    /// The shared volume of `subdir` StorageClasses that name none.
    pub default_volume: String,
    /// The redundancy of `volume` StorageClasses that name none.
    pub default_redundancy: Redundancy,
}

pub struct ControllerService {
    master: MasterClient,
    config: Arc<ControllerConfig>,
}

/// A PVC found in the cluster.
struct Found {
    id: VolumeId,
    capacity: u64,
}

impl ControllerService {
    pub fn new(config: ControllerConfig) -> anyhow::Result<ControllerService> {
        let master = MasterClient::new(config.masters.clone())?;
        Ok(ControllerService { master, config: Arc::new(config) })
    }

    /// `volume` by paths, without block caches (the controller only touches metadata).
    async fn open(&self, volume: &str) -> Result<Volume, StrataError> {
        let cache = CacheConfig {
            mem_bytes: 0,
            disk_dir: None,
            disk_bytes: 0,
            block_size: 1 << 20,
            disk_direct_io: false,
            shared_tier: false,
        };
        Volume::connect(&self.master, volume, &cache).await
    }

    /// The PVC `id` names, if it exists (made by this driver).
    async fn find(&self, id: &VolumeId) -> Result<Option<Found>, StrataError> {
        let volume = match self.open(id.volume()).await {
            Ok(volume) => volume,
            Err(e) if e.code == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        recorded(&volume, id).await
    }

    /// Refuses unless `credentials` (if any) allow `need` on `volume`
    /// (a volume that does not exist is left to the caller to refuse).
    async fn authorize(
        &self,
        volume: &str,
        credentials: Option<&Credentials>,
        need: AccessLevel,
    ) -> Result<(), Status> {
        if credentials.is_none() {
            return Ok(());
        }
        match self.master.get_volume(volume).await {
            Ok(record) => crate::secrets::authorize(&self.master, credentials, &record, need).await,
            Err(e) if e.code == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(status::from_strata(e, "looking up the volume")),
        }
    }

    async fn create_volume_pvc(
        &self,
        name: &str,
        redundancy: Redundancy,
        capacity: u64,
        owner: String,
    ) -> Result<VolumeId, Status> {
        let volume_name = volume_name_for(name);
        let request = master_pb::CreateVolumeRequest {
            name: volume_name.clone(),
            redundancy: Some(redundancy.into()),
            capacity_bytes: capacity,
            owner,
            // A retried create of the same name is the same volume.
            request_id: format!("csi:{name}"),
            meta_partitions: 0,
        };
        match self.master.create_volume(request).await {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::AlreadyExists => {
                return Err(Status::already_exists(format!(
                    "volume {volume_name} exists and was not made for {name:?}"
                )));
            }
            Err(e) => return Err(status::from_strata(e, "creating a volume")),
        }
        let volume = self.open(&volume_name).await.map_err(|e| status::from_strata(e, "opening the new volume"))?;
        // The capacity holds on writes as a quota on the whole (still empty)
        // volume, set before the mark that makes a retried create find the PVC.
        volume.set_quota(b"", capacity, 0).await.map_err(|e| status::from_strata(e, "setting the capacity quota"))?;
        mark(&volume, b"", name, capacity).await?;
        Ok(VolumeId::Volume { volume: volume_name })
    }

    async fn create_subdir_pvc(&self, name: &str, shared: &str, capacity: u64) -> Result<VolumeId, Status> {
        let volume = match self.open(shared).await {
            Ok(volume) => volume,
            Err(e) if e.code == ErrorCode::NotFound => {
                return Err(Status::invalid_argument(format!("the shared volume {shared} does not exist")));
            }
            Err(e) => return Err(status::from_strata(e, "opening the shared volume")),
        };
        let dir = dir_name_for(name);
        let made = volume.mkdir_p(dir.as_bytes()).await.map_err(|e| status::from_strata(e, "making the directory"))?;
        match volume.get_xattr(dir.as_bytes(), NAME_XATTR).await {
            Ok(owner) if owner == name.as_bytes() => {}
            Ok(_) => {
                return Err(Status::already_exists(format!("directory {dir} of {shared} belongs to another volume")));
            }
            Err(e) if e.code == ErrorCode::NoData || e.code == ErrorCode::NotFound => {
                // Unmarked: ours only if empty (a create that stopped before marking it).
                let page = volume.list_dir(made.ino, b"", 1).await.map_err(|e| status::from_strata(e, "listing"))?;
                if !page.entries.is_empty() {
                    return Err(Status::already_exists(format!("directory {dir} of {shared} exists and is not empty")));
                }
            }
            Err(e) => return Err(status::from_strata(e, "reading the directory's owner")),
        }
        volume.set_xattr(b"", SHARED_XATTR, b"1", 0).await.map_err(|e| status::from_strata(e, "marking the volume"))?;
        volume
            .meta()
            .set_quota(made.ino, capacity, 0)
            .await
            .map_err(|e| status::from_strata(e, "setting the quota"))?;
        mark(&volume, dir.as_bytes(), name, capacity).await?;
        Ok(VolumeId::Subdir { volume: shared.to_string(), dir })
    }

    /// Every PVC this driver made, sorted by id.
    async fn all(&self) -> Result<Vec<Found>, StrataError> {
        let mut found = Vec::new();
        for volume in self.master.list_volumes().await? {
            let handle = match self.open(&volume.name).await {
                Ok(handle) => handle,
                Err(e) if e.code == ErrorCode::NotFound => continue,
                Err(e) => return Err(e),
            };
            let names = handle.list_xattr(b"").await?;
            if names.iter().any(|n| n == CAPACITY_XATTR) {
                let id = VolumeId::Volume { volume: volume.name.clone() };
                found.extend(recorded(&handle, &id).await?);
            }
            if !names.iter().any(|n| n == SHARED_XATTR) {
                continue;
            }
            let mut after = Vec::new();
            loop {
                let page = handle.list(b"", &after, 1000).await?;
                for entry in page.entries.iter().filter(|e| e.attr.as_ref().is_some_and(|a| a.is_dir())) {
                    let Ok(dir) = std::str::from_utf8(&entry.name) else { continue };
                    let id = VolumeId::Subdir { volume: volume.name.clone(), dir: dir.to_string() };
                    if VolumeId::parse(&id.to_string()).is_some() {
                        found.extend(recorded(&handle, &id).await?);
                    }
                }
                match page.next {
                    Some(next) => after = next,
                    None => break,
                }
            }
        }
        found.sort_by_key(|f| f.id.to_string());
        Ok(found)
    }
}

/// The PVC `id` in its opened `volume`, if its root carries the capacity
/// this driver recorded (`None`: not there, or not made by this driver).
async fn recorded(volume: &Volume, id: &VolumeId) -> Result<Option<Found>, StrataError> {
    let path = id.dir().unwrap_or("");
    let capacity = match volume.get_xattr(path.as_bytes(), CAPACITY_XATTR).await {
        Ok(value) => value,
        Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::NoData) => return Ok(None),
        Err(e) => return Err(e),
    };
    let capacity = std::str::from_utf8(&capacity).ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok(Some(Found { id: id.clone(), capacity }))
}

/// Marks the PVC root `path` of `volume` as made for `name` with `capacity`.
async fn mark(volume: &Volume, path: &[u8], name: &str, capacity: u64) -> Result<(), Status> {
    let marking = |e| status::from_strata(e, "marking the volume's root");
    volume.set_xattr(path, NAME_XATTR, name.as_bytes(), 0).await.map_err(marking)?;
    volume.set_xattr(path, CAPACITY_XATTR, capacity.to_string().as_bytes(), 0).await.map_err(marking)
}

fn volume_message(found: &Found, context: std::collections::HashMap<String, String>) -> pb::Volume {
    pb::Volume {
        capacity_bytes: i64::try_from(found.capacity).unwrap_or(i64::MAX),
        volume_id: found.id.to_string(),
        volume_context: context,
        ..Default::default()
    }
}

fn parse_id(id: &str) -> Result<VolumeId, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("volume id is missing"));
    }
    VolumeId::parse(id).ok_or_else(|| Status::not_found(format!("volume {id:?} was not made by this driver")))
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(Status::invalid_argument("volume name is missing"));
        }
        check_capabilities(&request.volume_capabilities)?;
        if request.volume_content_source.is_some() {
            return Err(Status::invalid_argument("volumes are not made from snapshots or other volumes"));
        }
        let parameters =
            Parameters::parse(&request.parameters, &self.config.default_volume, self.config.default_redundancy)?;
        let range = request.capacity_range.as_ref();
        let capacity = capacity_for(range)?;
        let candidate = match &parameters.layout {
            Layout::Volume { .. } => VolumeId::Volume { volume: volume_name_for(&request.name) },
            Layout::Subdir { volume } => VolumeId::Subdir { volume: volume.clone(), dir: dir_name_for(&request.name) },
        };
        let credentials = Credentials::from_secrets(&request.secrets)?;
        let need = if matches!(candidate, VolumeId::Volume { .. }) { AccessLevel::Owner } else { AccessLevel::Write };
        self.authorize(candidate.volume(), credentials.as_ref(), need).await?;
        let existing = self.find(&candidate).await.map_err(|e| status::from_strata(e, "looking for the volume"))?;
        let id = match existing {
            Some(found) if !capacity_fits(found.capacity, range) => {
                return Err(Status::already_exists(format!(
                    "volume {} exists with {} bytes, outside the range asked for",
                    found.id, found.capacity
                )));
            }
            Some(found) => {
                let volume = volume_message(&found, parameters.mount.to_context());
                return Ok(Response::new(pb::CreateVolumeResponse { volume: Some(volume) }));
            }
            None => match &parameters.layout {
                Layout::Volume { redundancy } => {
                    // Made with a key, the volume is its user's.
                    let owner = match &credentials {
                        Some(credentials) => credentials.user(&self.master).await?,
                        None => String::new(),
                    };
                    self.create_volume_pvc(&request.name, *redundancy, capacity, owner).await?
                }
                Layout::Subdir { volume } => self.create_subdir_pvc(&request.name, volume, capacity).await?,
            },
        };
        tracing::info!(volume_id = %id, name = %request.name, capacity, "csi volume created");
        let volume = volume_message(&Found { id, capacity }, parameters.mount.to_context());
        Ok(Response::new(pb::CreateVolumeResponse { volume: Some(volume) }))
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        let request = request.into_inner();
        let raw = request.volume_id;
        if raw.is_empty() {
            return Err(Status::invalid_argument("volume id is missing"));
        }
        // An id this driver never made names nothing to delete.
        let Some(id) = VolumeId::parse(&raw) else { return Ok(Response::new(pb::DeleteVolumeResponse {})) };
        let credentials = Credentials::from_secrets(&request.secrets)?;
        let need = if matches!(id, VolumeId::Volume { .. }) { AccessLevel::Owner } else { AccessLevel::Write };
        self.authorize(id.volume(), credentials.as_ref(), need).await?;
        if self.find(&id).await.map_err(|e| status::from_strata(e, "looking for the volume"))?.is_none() {
            return Ok(Response::new(pb::DeleteVolumeResponse {}));
        }
        match &id {
            VolumeId::Volume { volume } => match self.master.delete_volume(volume).await {
                Ok(()) => {}
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(status::from_strata(e, "deleting the volume")),
            },
            VolumeId::Subdir { volume, dir } => {
                let handle = self.open(volume).await.map_err(|e| status::from_strata(e, "opening the volume"))?;
                let root =
                    handle.stat(dir.as_bytes()).await.map_err(|e| status::from_strata(e, "finding the directory"))?;
                handle
                    .remove_tree(dir.as_bytes())
                    .await
                    .map_err(|e| status::from_strata(e, "removing the directory"))?;
                handle.meta().remove_quota(root.ino).await.map_err(|e| status::from_strata(e, "removing the quota"))?;
            }
        }
        tracing::info!(volume_id = %id, "csi volume deleted");
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<pb::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<pb::ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        let id = parse_id(&request.volume_id)?;
        if request.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume capabilities are missing"));
        }
        if self.find(&id).await.map_err(|e| status::from_strata(e, "looking for the volume"))?.is_none() {
            return Err(Status::not_found(format!("volume {id} does not exist")));
        }
        let refused = request.volume_capabilities.iter().find_map(crate::request::unsupported);
        let response = match refused {
            Some(why) => pb::ValidateVolumeCapabilitiesResponse { confirmed: None, message: why },
            None => pb::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(pb::validate_volume_capabilities_response::Confirmed {
                    volume_context: request.volume_context,
                    volume_capabilities: request.volume_capabilities,
                    parameters: request.parameters,
                    mutable_parameters: request.mutable_parameters,
                }),
                message: String::new(),
            },
        };
        Ok(Response::new(response))
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let request = request.into_inner();
        if request.max_entries < 0 {
            return Err(Status::invalid_argument("max_entries is never negative"));
        }
        let all = self.all().await.map_err(|e| status::from_strata(e, "listing volumes"))?;
        // The token is the last id of the previous page: pages hold even when volumes come and go.
        let start = match request.starting_token.as_str() {
            "" => 0,
            token => {
                if VolumeId::parse(token).is_none() {
                    return Err(Status::aborted(format!("starting token {token:?} was not handed out here")));
                }
                all.partition_point(|f| f.id.to_string().as_str() <= token)
            }
        };
        let limit = if request.max_entries == 0 { usize::MAX } else { request.max_entries as usize };
        let page: Vec<&Found> = all[start..].iter().take(limit).collect();
        let next_token = match page.last() {
            Some(last) if start + page.len() < all.len() => last.id.to_string(),
            _ => String::new(),
        };
        let entries = page
            .into_iter()
            .map(|f| pb::list_volumes_response::Entry {
                volume: Some(volume_message(f, Default::default())),
                status: None,
            })
            .collect();
        Ok(Response::new(pb::ListVolumesResponse { entries, next_token }))
    }

    async fn get_capacity(
        &self,
        request: Request<pb::GetCapacityRequest>,
    ) -> Result<Response<pb::GetCapacityResponse>, Status> {
        let request = request.into_inner();
        if let Some(why) = request.volume_capabilities.iter().find_map(crate::request::unsupported) {
            return Err(Status::invalid_argument(why));
        }
        let parameters =
            Parameters::parse(&request.parameters, &self.config.default_volume, self.config.default_redundancy)?;
        let nodes = self.master.list_nodes().await.map_err(|e| status::from_strata(e, "listing nodes"))?;
        let raw: u64 = nodes
            .iter()
            .filter(|n| n.role == master_pb::NodeRole::Datanode as i32 && n.alive && !n.decommissioned)
            .filter_map(|n| n.capacity.as_ref())
            .map(|c| c.available_bytes)
            .sum();
        // What a new PVC can hold after its copies or parity.
        let overhead = match &parameters.layout {
            Layout::Volume { redundancy } => redundancy.raw_per_logical(),
            Layout::Subdir { .. } => 1.0,
        };
        let available = (raw as f64 / overhead) as i64;
        Ok(Response::new(pb::GetCapacityResponse {
            available_capacity: available,
            maximum_volume_size: None,
            minimum_volume_size: None,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<pb::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<pb::ControllerGetCapabilitiesResponse>, Status> {
        use controller_service_capability::rpc::Type;
        let capabilities = [Type::CreateDeleteVolume, Type::ListVolumes, Type::GetCapacity, Type::ExpandVolume]
            .into_iter()
            .map(|t| pb::ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(controller_service_capability::Rpc {
                    r#type: t as i32,
                })),
            })
            .collect();
        Ok(Response::new(pb::ControllerGetCapabilitiesResponse { capabilities }))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<pb::ControllerExpandVolumeRequest>,
    ) -> Result<Response<pb::ControllerExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = parse_id(&request.volume_id)?;
        let Some(range) = request.capacity_range.as_ref() else {
            return Err(Status::invalid_argument("capacity range is missing"));
        };
        let capacity = capacity_for(Some(range))?;
        if let Some(why) = request.volume_capability.as_ref().and_then(crate::request::unsupported) {
            return Err(Status::invalid_argument(why));
        }
        let credentials = Credentials::from_secrets(&request.secrets)?;
        let need = if matches!(id, VolumeId::Volume { .. }) { AccessLevel::Owner } else { AccessLevel::Write };
        self.authorize(id.volume(), credentials.as_ref(), need).await?;
        let found = self
            .find(&id)
            .await
            .map_err(|e| status::from_strata(e, "looking for the volume"))?
            .ok_or_else(|| Status::not_found(format!("volume {id} does not exist")))?;
        // Shrinking is not expansion: a smaller request is already met.
        let capacity = capacity.max(found.capacity);
        if capacity > found.capacity {
            if let VolumeId::Volume { volume } = &id {
                self.master
                    .set_volume_capacity(volume, capacity)
                    .await
                    .map_err(|e| status::from_strata(e, "setting the volume's capacity"))?;
            }
            let handle = self.open(id.volume()).await.map_err(|e| status::from_strata(e, "opening the volume"))?;
            let path = id.dir().unwrap_or("").as_bytes();
            handle.set_quota(path, capacity, 0).await.map_err(|e| status::from_strata(e, "raising the quota"))?;
            handle
                .set_xattr(path, CAPACITY_XATTR, capacity.to_string().as_bytes(), 0)
                .await
                .map_err(|e| status::from_strata(e, "recording the new capacity"))?;
            tracing::info!(volume_id = %id, capacity, "csi volume expanded");
        }
        let capacity_bytes = i64::try_from(capacity).unwrap_or(i64::MAX);
        Ok(Response::new(pb::ControllerExpandVolumeResponse { capacity_bytes, node_expansion_required: false }))
    }
}
