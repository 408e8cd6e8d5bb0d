//! The master's gRPC service. Writes become Raft commands proposed by the
//! leader; reads confirm leadership with ReadIndex and then read the applied
//! state; heartbeats only touch the leader's in-memory liveness table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use strata_common::config::MasterConfig;
use strata_common::sys::DiskUsage;
use strata_common::types::{AccessLevel, NodeRole, Redundancy, validate_user_name, validate_volume_name};
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::master as pb;
use strata_raftstore::{Engine, GroupStatus, KvRead, Role};
use tonic::{Request, Response, Status};

use crate::liveness::Liveness;
use crate::placement::{self, Candidate};
use crate::state::{
    AccessKeyRecord, Command, MASTER_GROUP, NodeRecord, Outcome, PlannedMetaPartition, StateReader, UserRecord,
    VolumeRecord,
};

type RpcResult<T> = std::result::Result<Response<T>, Status>;

/// Most blob ids one `AllocBlobIds` call hands out.
const MAX_BLOB_ID_RANGE: u64 = 1_000_000;
/// Most meta partitions a volume may ask to start with (more come by splits).
const MAX_INITIAL_META_PARTITIONS: u32 = 64;

pub struct MasterService {
    pub(crate) engine: Engine,
    pub(crate) config: MasterConfig,
    pub(crate) liveness: Liveness,
    /// Rebuild progress datanodes last reported, by (partition, node).
    pub(crate) repair_progress: Mutex<HashMap<(u64, u64), pb::RepairProgress>>,
    /// When each other master last answered the leader's probe.
    master_seen: Arc<RwLock<HashMap<u64, Instant>>>,
    /// (term, when this replica saw itself lead that term).
    leadership: Mutex<(u64, Instant)>,
    /// Every volume as clients see it, with its members, as of an applied
    /// index: each node's heartbeat asks which partitions it holds, and
    /// decoding every volume record per heartbeat made an idle master's CPU
    /// grow with nodes × volumes.
    volume_view: Mutex<Option<(u64, VolumeView)>>,
    /// What each meta partition's leader last reported of the directory quotas.
    pub(crate) quota_usage: crate::quotas::QuotaUsageTable,
    /// What happened lately, for `strata events` and the console.
    pub(crate) events: crate::events::EventLog,
}

/// Volumes as protos, each with the nodes holding a partition of it.
/// What heartbeats need of the volumes, decoded once per applied index (not
/// once per heartbeat, nor once per partition a heartbeat reports on).
pub(crate) struct VolumeViewData {
    /// Each volume as clients see it, with its member node ids sorted.
    volumes: Vec<(pb::Volume, Vec<u64>)>,
    /// Open-ended meta partition id → what a split decision needs of it.
    open_meta: HashMap<u64, OpenMetaPartition>,
}

type VolumeView = Arc<VolumeViewData>;

impl VolumeViewData {
    /// Every volume as clients see it.
    pub(crate) fn volumes(&self) -> impl Iterator<Item = &pb::Volume> {
        self.volumes.iter().map(|(v, _)| v)
    }

    /// The volumes (as clients see them) with a partition on `node_id`.
    pub(crate) fn volumes_on(&self, node_id: u64) -> impl Iterator<Item = &pb::Volume> {
        self.volumes.iter().filter(move |(_, members)| members.binary_search(&node_id).is_ok()).map(|(v, _)| v)
    }
}

struct OpenMetaPartition {
    volume: String,
    inode_start: u64,
    closing: bool,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn random_token(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

fn new_access_key() -> AccessKeyRecord {
    AccessKeyRecord {
        id: format!("SK{}", random_token(18).to_ascii_uppercase()),
        secret: random_token(40),
        created_at_ms: now_ms(),
    }
}

fn capacity_from(c: Option<&pb::Capacity>) -> DiskUsage {
    c.map(|c| DiskUsage { total_bytes: c.total_bytes, used_bytes: c.used_bytes, available_bytes: c.available_bytes })
        .unwrap_or_default()
}

fn capacity_to(c: DiskUsage) -> pb::Capacity {
    pb::Capacity { total_bytes: c.total_bytes, used_bytes: c.used_bytes, available_bytes: c.available_bytes }
}

impl MasterService {
    pub fn new(engine: Engine, config: MasterConfig, master_seen: Arc<RwLock<HashMap<u64, Instant>>>) -> Self {
        MasterService {
            engine,
            config,
            liveness: Liveness::default(),
            repair_progress: Mutex::new(HashMap::new()),
            master_seen,
            leadership: Mutex::new((0, Instant::now())),
            volume_view: Mutex::new(None),
            quota_usage: Default::default(),
            events: Default::default(),
        }
    }

    /// [`VolumeView`] at least as new as the applied index when called.
    pub(crate) fn volume_view(&self) -> Result<VolumeView> {
        // The applied index is published after the state it covers is written:
        // read it first, and what is read after is at least as new.
        let applied = self.engine.status(MASTER_GROUP).map_or(0, |s| s.applied);
        if let Some((at, view)) = self.volume_view.lock().unwrap().as_ref()
            && *at == applied
            && applied > 0
        {
            return Ok(view.clone());
        }
        let state = StateReader(self.engine.kv(MASTER_GROUP));
        let addresses = Self::addresses(&state.nodes()?);
        let records = state.volumes()?;
        let open_meta = records
            .iter()
            .filter_map(|v| {
                let open = v.meta_partitions.last().filter(|p| p.inode_end.is_none())?;
                let partition =
                    OpenMetaPartition { volume: v.name.clone(), inode_start: open.inode_start, closing: open.closing };
                Some((open.id, partition))
            })
            .collect();
        let volumes = records
            .iter()
            .map(|v| {
                let mut members: Vec<u64> = v.member_ids().collect();
                members.sort_unstable();
                members.dedup();
                (Self::volume_to_proto(v, &addresses), members)
            })
            .collect();
        let view: VolumeView = Arc::new(VolumeViewData { volumes, open_meta });
        *self.volume_view.lock().unwrap() = Some((applied, view.clone()));
        Ok(view)
    }

    pub(crate) fn node_timeout(&self) -> Duration {
        Duration::from_millis(self.config.node_timeout_ms)
    }

    /// `decommissioned`, `alive` (heard from within the node timeout) or `dead`.
    pub(crate) fn node_state(&self, node: &crate::state::NodeRecord) -> &'static str {
        if node.decommissioned {
            "decommissioned"
        } else if self.liveness.is_alive(node.id, self.node_timeout()) {
            "alive"
        } else {
            "dead"
        }
    }

    pub(crate) fn ensure_leader(&self) -> Result<GroupStatus> {
        let status = self
            .engine
            .status(MASTER_GROUP)
            .ok_or_else(|| StrataError::unavailable("the master group is not running yet"))?;
        if status.role != Role::Leader {
            return Err(StrataError::not_leader(self.engine.leader_address(MASTER_GROUP)));
        }
        let mut leadership = self.leadership.lock().unwrap();
        if leadership.0 != status.term {
            *leadership = (status.term, Instant::now());
        }
        Ok(status)
    }

    /// Whether this leader took over so recently that nodes may not have found it yet.
    pub(crate) fn newly_elected(&self) -> bool {
        self.leadership.lock().unwrap().1.elapsed() < self.node_timeout()
    }

    /// How long this replica has led (zero when it does not).
    pub(crate) fn leading_for(&self) -> Duration {
        self.leadership.lock().unwrap().1.elapsed()
    }

    /// Confirms leadership (ReadIndex) and returns the applied state to read.
    pub(crate) async fn read_state(&self) -> Result<StateReader> {
        self.ensure_leader()?;
        self.engine.read_index(MASTER_GROUP).await?;
        Ok(StateReader(self.engine.kv(MASTER_GROUP)))
    }

    pub(crate) async fn propose(&self, command: Command) -> Result<Outcome> {
        self.ensure_leader()?;
        let bytes = serde_json::to_vec(&command).expect("commands serialize");
        let reply = self.engine.propose(MASTER_GROUP, bytes).await?;
        let outcome: Outcome = serde_json::from_slice(&reply)
            .map_err(|e| StrataError::internal(format!("decoding command outcome: {e}")))?;
        outcome.into_result()
    }

    pub(crate) fn candidates(&self, nodes: &[NodeRecord], role: NodeRole) -> Vec<Candidate> {
        nodes
            .iter()
            .filter(|n| n.role == role.as_str() && !n.decommissioned)
            .filter_map(|n| {
                let health = self.liveness.get(n.id)?;
                // A datanode with a failed disk takes no new data.
                (health.last_seen.elapsed() < self.node_timeout() && health.lost_partitions.is_empty())
                    .then_some(Candidate { node_id: n.id, free_bytes: health.capacity.available_bytes })
            })
            .collect()
    }

    /// Places a new volume's partitions on live nodes.
    fn plan_volume(
        &self,
        nodes: &[NodeRecord],
        redundancy: Redundancy,
        meta_partitions: u32,
    ) -> Result<(Vec<PlannedMetaPartition>, Vec<Vec<u64>>)> {
        let mut rng = rand::rng();
        let metanodes = self.candidates(nodes, NodeRole::Metanode);
        let datanodes = self.candidates(nodes, NodeRole::Datanode);
        let span = self.config.meta_partition_inode_span;
        let count = match meta_partitions {
            0 => self.config.initial_meta_partitions.max(1) as u64,
            n => n as u64,
        };
        let mut meta = Vec::new();
        for i in 0..count {
            let inode_start = 1 + i * span;
            let inode_end = (i + 1 < count).then_some(1 + (i + 1) * span);
            let what = format!("a meta partition with {} replicas", self.config.meta_replicas);
            let members = placement::pick(&metanodes, self.config.meta_replicas as usize, &what, &mut rng)?;
            meta.push(PlannedMetaPartition { inode_start, inode_end, members });
        }
        let what = format!("a {redundancy} data partition");
        let data = (0..self.config.initial_data_partitions)
            .map(|_| placement::pick(&datanodes, redundancy.width() as usize, &what, &mut rng))
            .collect::<Result<Vec<_>>>()?;
        Ok((meta, data))
    }

    pub(crate) fn volume_to_proto(volume: &VolumeRecord, addresses: &HashMap<u64, String>) -> pb::Volume {
        let members = |ids: &[u64]| {
            ids.iter()
                .map(|id| pb::PartitionMember { node_id: *id, address: addresses.get(id).cloned().unwrap_or_default() })
                .collect::<Vec<_>>()
        };
        let redundancy: Option<pb::Redundancy> = volume.redundancy.parse::<Redundancy>().ok().map(Into::into);
        pb::Volume {
            id: volume.id,
            name: volume.name.clone(),
            redundancy,
            capacity_bytes: volume.capacity_bytes,
            owner: volume.owner.clone(),
            created_at_ms: volume.created_at_ms,
            // Soft state, filled in where it is answered (`with_usage`).
            used_bytes: 0,
            inodes: 0,
            trash_secs: volume.trash_secs,
            meta_partitions: volume
                .meta_partitions
                .iter()
                .map(|p| pb::MetaPartition {
                    id: p.id,
                    inode_start: p.inode_start,
                    inode_end: p.inode_end,
                    members: members(&p.members),
                    closing: p.closing,
                })
                .collect(),
            data_partitions: volume
                .data_partitions
                .iter()
                .map(|p| pb::DataPartition {
                    id: p.id,
                    redundancy,
                    members: members(&p.members),
                    rebuilding: p.rebuilding.clone(),
                })
                .collect(),
            grants: volume
                .grants
                .iter()
                .map(|(key, level)| pb::BucketGrant {
                    access_key_id: key.clone(),
                    level: AccessLevel::to_wire(Some(*level)) as i32,
                })
                .collect(),
            quotas: volume
                .quotas
                .iter()
                .map(|(root, q)| pb::Quota { root: *root, max_bytes: q.max_bytes, max_inodes: q.max_inodes })
                .collect(),
        }
    }

    pub(crate) fn addresses(nodes: &[NodeRecord]) -> HashMap<u64, String> {
        nodes.iter().map(|n| (n.id, n.address.clone())).collect()
    }

    /// A user as listed: access key ids without their secrets.
    fn user_to_proto(user: UserRecord) -> pb::User {
        let name = user.name.clone();
        pb::User {
            name: user.name,
            created_at_ms: user.created_at_ms,
            access_keys: user
                .access_keys
                .into_iter()
                .map(|k| pb::AccessKey {
                    access_key_id: k.id,
                    secret_access_key: String::new(),
                    user: name.clone(),
                    created_at_ms: k.created_at_ms,
                })
                .collect(),
        }
    }

    /// Drives the split of a volume's open-ended meta partition: past the
    /// configured inode count it is asked to close; once it reports the end
    /// it chose, a new open-ended partition starts there.
    async fn maybe_split(&self, view: &VolumeViewData, report: &pb::MetaPartitionReport) -> Result<()> {
        let Some(open) = view.open_meta.get(&report.partition_id) else {
            return Ok(());
        };
        let (name, partition_id) = (open.volume.clone(), report.partition_id);
        match (open.closing, report.inode_end) {
            (true, Some(bound)) => {
                let state = StateReader(self.engine.kv(MASTER_GROUP));
                let metanodes = self.candidates(&state.nodes()?, NodeRole::Metanode);
                let what = format!("a meta partition with {} replicas", self.config.meta_replicas);
                let members = placement::pick(&metanodes, self.config.meta_replicas as usize, &what, &mut rand::rng())?;
                self.propose(Command::SplitMetaPartition { volume: name.clone(), partition_id, bound, members })
                    .await?;
                tracing::info!(volume = %name, partition_id, bound, "meta partition split: a new open-ended partition starts at the bound");
            }
            (false, None)
                if report.next_inode.saturating_sub(open.inode_start) >= self.config.meta_partition_split_inodes =>
            {
                self.propose(Command::RequestSplit { volume: name.clone(), partition_id }).await?;
                tracing::info!(volume = %name, partition_id, next_inode = report.next_inode, "asked the open-ended meta partition to close for a split");
            }
            _ => {}
        }
        Ok(())
    }

    /// The meta partitions `node_id` must host.
    fn meta_assignments(view: &VolumeViewData, node_id: u64) -> Vec<pb::MetaPartitionAssignment> {
        let mut out = Vec::new();
        for volume in view.volumes_on(node_id) {
            for partition in &volume.meta_partitions {
                if partition.members.iter().any(|m| m.node_id == node_id) {
                    out.push(pb::MetaPartitionAssignment {
                        volume_id: volume.id,
                        partition: Some(partition.clone()),
                        volume_name: volume.name.clone(),
                    });
                }
            }
        }
        out
    }

    /// The volume `name` as a client gets it, after a change to it.
    async fn volume_answer(&self, name: &str) -> RpcResult<pb::Volume> {
        let state = self.read_state().await?;
        let volume =
            state.volume(name)?.ok_or_else(|| StrataError::not_found(format!("volume {name} does not exist")))?;
        Ok(Response::new(self.with_usage(Self::volume_to_proto(&volume, &Self::addresses(&state.nodes()?)))))
    }

    /// `volume` with the usage its meta partitions last reported.
    fn with_usage(&self, mut volume: pb::Volume) -> pb::Volume {
        let partitions = volume.meta_partitions.iter().map(|p| p.id);
        (volume.used_bytes, volume.inodes) = self.quota_usage.volume_usage(partitions);
        volume
    }

    fn master_infos(&self, status: &GroupStatus) -> Vec<pb::NodeInfo> {
        let seen = self.master_seen.read().unwrap();
        status
            .voters
            .iter()
            .map(|id| {
                let is_self = *id == status.node_id;
                let last = if is_self { Some(Duration::ZERO) } else { seen.get(id).map(|t| t.elapsed()) };
                pb::NodeInfo {
                    id: *id,
                    role: pb::NodeRole::Master as i32,
                    address: self.engine.addresses().get(*id).unwrap_or_default(),
                    alive: last.is_some_and(|d| d < self.node_timeout()),
                    last_heartbeat_ms_ago: last.map(|d| d.as_millis() as u64),
                    capacity: None,
                    partitions_held: 0,
                    partitions_assigned: 0,
                    is_leader: *id == status.leader_id,
                    decommissioned: false,
                    cache: None,
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl pb::master_server::Master for MasterService {
    async fn register_node(&self, request: Request<pb::RegisterNodeRequest>) -> RpcResult<pb::RegisterNodeResponse> {
        let req = request.into_inner();
        let role = NodeRole::try_from(req.role)?;
        if role == NodeRole::Master {
            return Err(StrataError::invalid("masters are Raft members, they do not register").into());
        }
        if req.address.is_empty() {
            return Err(StrataError::invalid("a node must register with the address it serves on").into());
        }
        let command = Command::RegisterNode {
            id: req.node_id,
            role: role.as_str().into(),
            address: req.address,
            now_ms: now_ms(),
        };
        let Outcome::Node(node) = self.propose(command).await? else {
            return Err(StrataError::internal("register returned no node").into());
        };
        self.liveness.record(node.id, crate::liveness::Health::now(capacity_from(req.capacity.as_ref())));
        tracing::info!(node_id = node.id, role = %node.role, address = %node.address, "node registered");
        Ok(Response::new(pb::RegisterNodeResponse {
            node_id: node.id,
            heartbeat_interval_ms: self.config.node_heartbeat_interval_ms,
        }))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> RpcResult<pb::HeartbeatResponse> {
        let req = request.into_inner();
        self.ensure_leader()?;
        // The leader's applied state is enough to know the node exists.
        let kv = self.engine.kv(MASTER_GROUP);
        if kv.get(crate::state::node_key(req.node_id).as_bytes())?.is_none() {
            return Err(StrataError::not_found(format!("node {} is not registered", req.node_id)).into());
        }
        let health = crate::liveness::Health {
            partitions_held: req.partitions_held,
            lost_partitions: req.lost_partitions.clone(),
            cache: req.cache,
            ..crate::liveness::Health::now(capacity_from(req.capacity.as_ref()))
        };
        self.liveness.record(req.node_id, health);
        self.quota_usage.record(&req.meta_reports);
        let view = self.volume_view()?;
        for report in &req.meta_reports {
            if let Err(e) = self.maybe_split(&view, report).await {
                tracing::warn!(partition_id = report.partition_id, error = %e, "splitting a meta partition failed");
            }
        }
        // Metanodes drop partitions missing from this list: it must come from
        // a state at least as new as every committed change (ReadIndex).
        self.record_rebuilds(req.node_id, &req.rebuilt, &req.repairs).await;
        self.engine.read_index(MASTER_GROUP).await?;
        let view = self.volume_view()?;
        let meta_partitions = Self::meta_assignments(&view, req.node_id);
        let data_partitions = Self::data_assignments(&view, req.node_id);
        let quota_limits = self.quota_limits(&view, req.node_id);
        Ok(Response::new(pb::HeartbeatResponse { meta_partitions, data_partitions, quota_limits }))
    }

    async fn list_nodes(&self, _request: Request<pb::ListNodesRequest>) -> RpcResult<pb::ListNodesResponse> {
        let state = self.read_state().await?;
        let status = self.ensure_leader()?;
        let mut assigned: HashMap<u64, u64> = HashMap::new();
        for volume in state.volumes()? {
            for id in volume.member_ids() {
                *assigned.entry(id).or_default() += 1;
            }
        }
        let mut nodes = self.master_infos(&status);
        for node in state.nodes()? {
            let health = self.liveness.get(node.id);
            let role: NodeRole = node.role.parse()?;
            nodes.push(pb::NodeInfo {
                id: node.id,
                role: pb::NodeRole::from(role) as i32,
                address: node.address,
                alive: self.liveness.is_alive(node.id, self.node_timeout()),
                last_heartbeat_ms_ago: health.as_ref().map(|h| h.last_seen.elapsed().as_millis() as u64),
                capacity: health.as_ref().map(|h| capacity_to(h.capacity)),
                partitions_held: health.as_ref().map(|h| h.partitions_held).unwrap_or(0),
                partitions_assigned: assigned.get(&node.id).copied().unwrap_or(0),
                is_leader: false,
                decommissioned: node.decommissioned,
                cache: health.as_ref().and_then(|h| h.cache),
            });
        }
        let repairs = self.repairs(&state)?;
        Ok(Response::new(pb::ListNodesResponse { nodes, repairs }))
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> RpcResult<pb::ClusterStatusResponse> {
        let status = self
            .engine
            .status(MASTER_GROUP)
            .ok_or_else(|| StrataError::unavailable("the master group is not running yet"))?;
        let addresses = self.engine.addresses();
        Ok(Response::new(pb::ClusterStatusResponse {
            self_id: status.node_id,
            leader_id: status.leader_id,
            leader_address: addresses.get(status.leader_id).unwrap_or_default(),
            term: status.term,
            applied_index: status.applied,
            commit_index: status.commit,
            masters: status
                .voters
                .iter()
                .map(|id| pb::MasterPeer { id: *id, address: addresses.get(*id).unwrap_or_default() })
                .collect(),
        }))
    }

    async fn create_volume(&self, request: Request<pb::CreateVolumeRequest>) -> RpcResult<pb::Volume> {
        let req = request.into_inner();
        validate_volume_name(&req.name)?;
        let redundancy = Redundancy::try_from(
            req.redundancy.as_ref().ok_or_else(|| StrataError::invalid("redundancy is missing"))?,
        )?;
        if req.capacity_bytes == 0 {
            return Err(StrataError::invalid("a volume needs a capacity above zero").into());
        }
        if req.meta_partitions > MAX_INITIAL_META_PARTITIONS {
            return Err(StrataError::invalid(format!(
                "a volume starts with at most {MAX_INITIAL_META_PARTITIONS} meta partitions, not {}",
                req.meta_partitions
            ))
            .into());
        }
        let state = self.read_state().await?;
        let nodes = state.nodes()?;
        if let Some(existing) = state.volume(&req.name)? {
            if !req.request_id.is_empty() && existing.request_id == req.request_id {
                return Ok(Response::new(Self::volume_to_proto(&existing, &Self::addresses(&nodes))));
            }
            return Err(
                StrataError::new(ErrorCode::AlreadyExists, format!("volume {} already exists", req.name)).into()
            );
        }
        let (meta, data) = match self.plan_volume(&nodes, redundancy, req.meta_partitions) {
            Ok(plan) => plan,
            Err(e) if self.newly_elected() => {
                return Err(
                    StrataError::unavailable(format!("new leader still hearing from nodes: {}", e.message)).into()
                );
            }
            Err(e) => return Err(e.into()),
        };
        let command = Command::CreateVolume {
            name: req.name,
            redundancy: redundancy.to_string(),
            capacity_bytes: req.capacity_bytes,
            owner: req.owner,
            request_id: req.request_id,
            now_ms: now_ms(),
            meta,
            data,
        };
        let Outcome::Volume(volume) = self.propose(command).await? else {
            return Err(StrataError::internal("create volume returned no volume").into());
        };
        tracing::info!(volume_id = volume.id, volume = %volume.name, redundancy = %volume.redundancy, "volume created");
        Ok(Response::new(Self::volume_to_proto(&volume, &Self::addresses(&nodes))))
    }

    async fn list_volumes(&self, _request: Request<pb::ListVolumesRequest>) -> RpcResult<pb::ListVolumesResponse> {
        let state = self.read_state().await?;
        let addresses = Self::addresses(&state.nodes()?);
        let volumes = state.volumes()?.iter().map(|v| self.with_usage(Self::volume_to_proto(v, &addresses))).collect();
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn get_volume(&self, request: Request<pb::GetVolumeRequest>) -> RpcResult<pb::Volume> {
        self.volume_answer(&request.into_inner().name).await
    }

    async fn list_events(&self, request: Request<pb::ListEventsRequest>) -> RpcResult<pb::ListEventsResponse> {
        let req = request.into_inner();
        let status = self.ensure_leader()?;
        let events = self.events.list(req.after_seq, req.limit as usize);
        Ok(Response::new(pb::ListEventsResponse { events, master_id: status.node_id }))
    }

    async fn delete_volume(&self, request: Request<pb::DeleteVolumeRequest>) -> RpcResult<pb::DeleteVolumeResponse> {
        let name = request.into_inner().name;
        self.propose(Command::DeleteVolume { name: name.clone() }).await?;
        tracing::info!(volume = %name, "volume deleted");
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }

    async fn decommission_node(
        &self,
        request: Request<pb::DecommissionNodeRequest>,
    ) -> RpcResult<pb::DecommissionNodeResponse> {
        let node_id = request.into_inner().node_id;
        let state = self.read_state().await?;
        let node = state
            .nodes()?
            .into_iter()
            .find(|n| n.id == node_id)
            .ok_or_else(|| StrataError::not_found(format!("node {node_id} is not registered")))?;
        if node.role != NodeRole::Datanode.as_str() {
            return Err(StrataError::invalid(format!("node {node_id} is a {}, not a datanode", node.role)).into());
        }
        self.propose(Command::DecommissionNode { id: node_id }).await?;
        let partitions_moved =
            state.volumes()?.iter().flat_map(|v| &v.data_partitions).filter(|p| p.members.contains(&node_id)).count()
                as u64;
        tracing::info!(node_id, partitions_moved, "datanode decommissioned; its partitions move away");
        Ok(Response::new(pb::DecommissionNodeResponse { partitions_moved }))
    }

    async fn alloc_blob_ids(&self, request: Request<pb::AllocBlobIdsRequest>) -> RpcResult<pb::AllocBlobIdsResponse> {
        let pb::AllocBlobIdsRequest { volume, count } = request.into_inner();
        if !(1..=MAX_BLOB_ID_RANGE).contains(&count) {
            return Err(StrataError::invalid(format!("ask for 1 to {MAX_BLOB_ID_RANGE} blob ids, not {count}")).into());
        }
        let Outcome::BlobIds(start) = self.propose(Command::AllocBlobIds { volume, count }).await? else {
            return Err(StrataError::internal("allocating blob ids returned no range").into());
        };
        Ok(Response::new(pb::AllocBlobIdsResponse { start, count }))
    }

    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> RpcResult<pb::User> {
        let name = request.into_inner().name;
        validate_user_name(&name)?;
        let command = Command::CreateUser { name, access_key: new_access_key(), now_ms: now_ms() };
        let Outcome::User(user) = self.propose(command).await? else {
            return Err(StrataError::internal("create user returned no user").into());
        };
        // The one answer carrying the new key's secret.
        let secrets: HashMap<String, String> =
            user.access_keys.iter().map(|k| (k.id.clone(), k.secret.clone())).collect();
        let mut user = Self::user_to_proto(user);
        for key in &mut user.access_keys {
            key.secret_access_key = secrets.get(&key.access_key_id).cloned().unwrap_or_default();
        }
        Ok(Response::new(user))
    }

    async fn list_users(&self, _request: Request<pb::ListUsersRequest>) -> RpcResult<pb::ListUsersResponse> {
        let state = self.read_state().await?;
        let users = state.users()?.into_iter().map(Self::user_to_proto).collect();
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn delete_user(&self, request: Request<pb::DeleteUserRequest>) -> RpcResult<pb::DeleteUserResponse> {
        let name = request.into_inner().name;
        self.propose(Command::DeleteUser { name }).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn create_access_key(&self, request: Request<pb::CreateAccessKeyRequest>) -> RpcResult<pb::AccessKey> {
        let user = request.into_inner().user;
        let command = Command::CreateAccessKey { user: user.clone(), access_key: new_access_key() };
        let Outcome::AccessKey(key) = self.propose(command).await? else {
            return Err(StrataError::internal("create access key returned no key").into());
        };
        Ok(Response::new(pb::AccessKey {
            access_key_id: key.id,
            secret_access_key: key.secret,
            user,
            created_at_ms: key.created_at_ms,
        }))
    }

    async fn delete_access_key(
        &self,
        request: Request<pb::DeleteAccessKeyRequest>,
    ) -> RpcResult<pb::DeleteAccessKeyResponse> {
        let access_key_id = request.into_inner().access_key_id;
        self.propose(Command::DeleteAccessKey { access_key_id }).await?;
        Ok(Response::new(pb::DeleteAccessKeyResponse {}))
    }

    async fn set_bucket_grant(
        &self,
        request: Request<pb::SetBucketGrantRequest>,
    ) -> RpcResult<pb::SetBucketGrantResponse> {
        let request = request.into_inner();
        let level = AccessLevel::from_wire(request.level)?;
        if request.access_key_id.is_empty() {
            return Err(StrataError::invalid("a grant names an access key").into());
        }
        let command =
            Command::SetGrant { volume: request.volume.clone(), access_key_id: request.access_key_id.clone(), level };
        self.propose(command).await?;
        let level = level.map_or("none", AccessLevel::as_str);
        tracing::info!(volume = %request.volume, access_key_id = %request.access_key_id, level, "bucket grant set");
        Ok(Response::new(pb::SetBucketGrantResponse {}))
    }

    async fn set_volume_capacity(&self, request: Request<pb::SetVolumeCapacityRequest>) -> RpcResult<pb::Volume> {
        let request = request.into_inner();
        if request.capacity_bytes == 0 {
            return Err(StrataError::invalid("a volume needs a capacity above zero").into());
        }
        let command = Command::SetCapacity { volume: request.name.clone(), capacity_bytes: request.capacity_bytes };
        self.propose(command).await?;
        tracing::info!(volume = %request.name, capacity_bytes = request.capacity_bytes, "volume capacity set");
        self.volume_answer(&request.name).await
    }

    async fn set_volume_options(&self, request: Request<pb::SetVolumeOptionsRequest>) -> RpcResult<pb::Volume> {
        let request = request.into_inner();
        let command = Command::SetOptions { volume: request.name.clone(), trash_secs: request.trash_secs };
        self.propose(command).await?;
        tracing::info!(volume = %request.name, trash_secs = ?request.trash_secs, "volume options set");
        self.volume_answer(&request.name).await
    }

    async fn set_quota(&self, request: Request<pb::SetQuotaRequest>) -> RpcResult<pb::QuotaStatus> {
        let request = request.into_inner();
        Ok(Response::new(self.set_quota_of(&request.volume, request.quota).await?))
    }

    async fn delete_quota(&self, request: Request<pb::DeleteQuotaRequest>) -> RpcResult<pb::DeleteQuotaResponse> {
        let request = request.into_inner();
        self.delete_quota_of(&request.volume, request.root).await?;
        Ok(Response::new(pb::DeleteQuotaResponse {}))
    }

    async fn list_quotas(&self, request: Request<pb::ListQuotasRequest>) -> RpcResult<pb::ListQuotasResponse> {
        let quotas = self.quota_statuses(&request.into_inner().volume).await?;
        Ok(Response::new(pb::ListQuotasResponse { quotas }))
    }

    async fn get_access_key(&self, request: Request<pb::GetAccessKeyRequest>) -> RpcResult<pb::AccessKey> {
        let access_key_id = request.into_inner().access_key_id;
        let state = self.read_state().await?;
        let Some((user, key)) = state.access_key(&access_key_id)? else {
            return Err(StrataError::not_found(format!("access key {access_key_id} does not exist")).into());
        };
        Ok(Response::new(pb::AccessKey {
            access_key_id: key.id,
            secret_access_key: key.secret,
            user,
            created_at_ms: key.created_at_ms,
        }))
    }
}
