//! The master's replicated state: records stored as JSON under key prefixes
//! in the group's key space, and the commands that change them. Everything
//! non-deterministic (ids of keys, placement, clock) is decided by the leader
//! and carried inside the command, so every replica applies the same bytes
//! to the same result.

use serde::{Deserialize, Serialize};
use strata_common::types::AccessLevel;
use strata_common::{ErrorCode, Result, StrataError};
use strata_raftstore::{ApplyBatch, GroupKv, KvRead, StateMachine};

/// Raft group id of the master's state.
pub const MASTER_GROUP: u64 = 1;
/// Ids the master assigns to nodes start here, clear of master ids and of
/// the ids `strata dev` hands out.
const FIRST_ASSIGNED_NODE_ID: u64 = 1000;

const NODE_PREFIX: &str = "node/";
const VOLUME_PREFIX: &str = "vol/";
const USER_PREFIX: &str = "user/";
const ACCESS_KEY_PREFIX: &str = "akey/";
const COUNTER_PREFIX: &str = "ctr/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub role: String,
    pub address: String,
    pub registered_at_ms: u64,
    /// Being drained: nothing new goes here and its data partitions move away.
    #[serde(default)]
    pub decommissioned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaPartitionRecord {
    pub id: u64,
    pub inode_start: u64,
    /// None for the open-ended last partition.
    pub inode_end: Option<u64>,
    pub members: Vec<u64>,
    /// A split asked this open-ended partition to close its range.
    #[serde(default)]
    pub closing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPartitionRecord {
    pub id: u64,
    pub members: Vec<u64>,
    /// Members whose copy is being rebuilt after replacing a lost one.
    #[serde(default)]
    pub rebuilding: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub id: u64,
    pub name: String,
    /// `replica:N` or `ec:K+M`.
    pub redundancy: String,
    pub capacity_bytes: u64,
    pub owner: String,
    pub created_at_ms: u64,
    /// Id of the request that created it, so a retried create is recognised.
    pub request_id: String,
    pub meta_partitions: Vec<MetaPartitionRecord>,
    pub data_partitions: Vec<DataPartitionRecord>,
    /// The next blob id to hand out: ids are never reused within the volume.
    #[serde(default)]
    pub next_blob_id: u64,
    /// Access keys besides the owner's that may use the volume as a bucket.
    #[serde(default)]
    pub grants: std::collections::BTreeMap<String, AccessLevel>,
    /// Directory quotas, by the inode number of their root directory.
    #[serde(default)]
    pub quotas: std::collections::BTreeMap<u64, QuotaRecord>,
    /// Seconds a deleted file stays in the volume's trash (0: no trash).
    #[serde(default)]
    pub trash_secs: u64,
}

/// The limits of a directory quota (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub max_bytes: u64,
    pub max_inodes: u64,
}

impl VolumeRecord {
    pub fn member_ids(&self) -> impl Iterator<Item = u64> + '_ {
        let meta = self.meta_partitions.iter().flat_map(|p| p.members.iter());
        let data = self.data_partitions.iter().flat_map(|p| p.members.iter());
        meta.chain(data).copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    pub id: String,
    pub secret: String,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub created_at_ms: u64,
    pub access_keys: Vec<AccessKeyRecord>,
}

/// A meta partition the leader placed: inode range and members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMetaPartition {
    pub inode_start: u64,
    pub inode_end: Option<u64>,
    pub members: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterNode {
        id: u64,
        role: String,
        address: String,
        now_ms: u64,
    },
    CreateVolume {
        name: String,
        redundancy: String,
        capacity_bytes: u64,
        owner: String,
        request_id: String,
        now_ms: u64,
        meta: Vec<PlannedMetaPartition>,
        data: Vec<Vec<u64>>,
    },
    /// Asks the open-ended meta partition `partition_id` of `volume` to close its range.
    RequestSplit {
        volume: String,
        partition_id: u64,
    },
    /// Records that the closing partition ended at `bound` and adds a new
    /// open-ended partition from `bound` on `members`.
    SplitMetaPartition {
        volume: String,
        partition_id: u64,
        bound: u64,
        members: Vec<u64>,
    },
    DeleteVolume {
        name: String,
    },
    /// Gives `access_key_id` `level` on a volume (`None`: takes it away).
    SetGrant {
        volume: String,
        access_key_id: String,
        level: Option<AccessLevel>,
    },
    /// Sets a volume's capacity.
    SetCapacity {
        volume: String,
        capacity_bytes: u64,
    },
    /// Sets a volume's policies; `None` leaves one as it is.
    SetOptions {
        volume: String,
        trash_secs: Option<u64>,
    },
    /// Sets the directory quota rooted at inode `root` (`None`: removes it).
    SetQuota {
        volume: String,
        root: u64,
        limits: Option<QuotaRecord>,
    },
    /// Puts `new` in place of member `old` of a data partition; `new` rebuilds its copy.
    ReplaceDataMember {
        volume: String,
        partition_id: u64,
        old: u64,
        new: u64,
    },
    /// `node` finished rebuilding its copy of a data partition.
    DataRebuilt {
        volume: String,
        partition_id: u64,
        node: u64,
    },
    DecommissionNode {
        id: u64,
    },
    /// Hands out `count` fresh blob ids of `volume`.
    AllocBlobIds {
        volume: String,
        count: u64,
    },
    CreateUser {
        name: String,
        access_key: AccessKeyRecord,
        now_ms: u64,
    },
    DeleteUser {
        name: String,
    },
    CreateAccessKey {
        user: String,
        access_key: AccessKeyRecord,
    },
    DeleteAccessKey {
        access_key_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Node(NodeRecord),
    Volume(VolumeRecord),
    User(UserRecord),
    AccessKey(AccessKeyRecord),
    Done,
    /// The first of the blob ids allocated.
    BlobIds(u64),
    Failed {
        code: String,
        message: String,
    },
}

impl Outcome {
    pub fn into_result(self) -> Result<Outcome> {
        match self {
            Outcome::Failed { code, message } => {
                let code = ErrorCode::from_name(&code).unwrap_or(ErrorCode::Internal);
                Err(StrataError::new(code, message))
            }
            other => Ok(other),
        }
    }
}

pub fn node_key(id: u64) -> String {
    format!("{NODE_PREFIX}{id:020}")
}
fn volume_key(name: &str) -> String {
    format!("{VOLUME_PREFIX}{name}")
}
fn user_key(name: &str) -> String {
    format!("{USER_PREFIX}{name}")
}
fn access_key_key(id: &str) -> String {
    format!("{ACCESS_KEY_PREFIX}{id}")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StrataError::internal(format!("decoding stored {what}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

/// Reads of the master's state, from any replica's applied key space.
pub struct StateReader(pub GroupKv);

impl StateReader {
    fn get<T: for<'de> Deserialize<'de>>(&self, key: &str, what: &str) -> Result<Option<T>> {
        self.0.get(key.as_bytes())?.map(|b| decode(&b, what)).transpose()
    }
    fn list<T: for<'de> Deserialize<'de>>(&self, prefix: &str, what: &str) -> Result<Vec<T>> {
        self.0.scan_prefix(prefix.as_bytes())?.iter().map(|(_, v)| decode(v, what)).collect()
    }
    pub fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.list(NODE_PREFIX, "node")
    }
    pub fn volume(&self, name: &str) -> Result<Option<VolumeRecord>> {
        self.get(&volume_key(name), "volume")
    }
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        self.list(VOLUME_PREFIX, "volume")
    }
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        self.list(USER_PREFIX, "user")
    }
    /// The access key `id` and the user holding it.
    pub fn access_key(&self, id: &str) -> Result<Option<(String, AccessKeyRecord)>> {
        let Some(user) = self.get::<String>(&access_key_key(id), "access key")? else {
            return Ok(None);
        };
        let Some(record) = self.get::<UserRecord>(&user_key(&user), "user")? else {
            return Ok(None);
        };
        Ok(record.access_keys.into_iter().find(|k| k.id == id).map(|k| (user, k)))
    }
}

/// The master's state machine. It keeps nothing in memory: every record is
/// read from and written to the group's key space.
pub struct MasterMachine;

impl StateMachine for MasterMachine {
    fn apply(&mut self, batch: &mut ApplyBatch<'_>, index: u64, command: &[u8]) -> Vec<u8> {
        let outcome = match serde_json::from_slice::<Command>(command) {
            Ok(cmd) => apply(batch, cmd),
            Err(e) => Err(StrataError::internal(format!("undecodable master command at index {index}: {e}"))),
        };
        let outcome = outcome.unwrap_or_else(|e| Outcome::Failed { code: e.code.name().into(), message: e.message });
        encode(&outcome)
    }
}

struct Tx<'a, 'b>(&'a mut ApplyBatch<'b>);

impl Tx<'_, '_> {
    fn get<T: for<'de> Deserialize<'de>>(&self, key: &str, what: &str) -> Result<Option<T>> {
        self.0.get(key.as_bytes())?.map(|b| decode(&b, what)).transpose()
    }
    fn put<T: Serialize>(&mut self, key: &str, value: &T) {
        self.0.put(key.as_bytes(), &encode(value));
    }
    fn delete(&mut self, key: &str) {
        self.0.delete(key.as_bytes());
    }
    /// Returns `n` fresh ids from the named counter, never reused.
    fn next_ids(&mut self, counter: &str, n: u64, first: u64) -> Result<u64> {
        let key = format!("{COUNTER_PREFIX}{counter}");
        let next: u64 = self.get(&key, "counter")?.unwrap_or(first);
        self.put(&key, &(next + n));
        Ok(next)
    }
}

fn apply(batch: &mut ApplyBatch<'_>, cmd: Command) -> Result<Outcome> {
    let mut tx = Tx(batch);
    match cmd {
        Command::RegisterNode { id, role, address, now_ms } => register_node(&mut tx, id, role, address, now_ms),
        Command::CreateVolume { name, redundancy, capacity_bytes, owner, request_id, now_ms, meta, data } => {
            if let Some(existing) = tx.get::<VolumeRecord>(&volume_key(&name), "volume")? {
                if existing.request_id == request_id && !request_id.is_empty() {
                    return Ok(Outcome::Volume(existing));
                }
                return Err(StrataError::new(ErrorCode::AlreadyExists, format!("volume {name} already exists")));
            }
            let id = tx.next_ids("volume", 1, 1)?;
            let partitions = meta.len() as u64 + data.len() as u64;
            let first_partition = tx.next_ids("partition", partitions, 1)?;
            let meta_partitions = meta
                .into_iter()
                .enumerate()
                .map(|(i, m)| MetaPartitionRecord {
                    id: first_partition + i as u64,
                    inode_start: m.inode_start,
                    inode_end: m.inode_end,
                    members: m.members,
                    closing: false,
                })
                .collect::<Vec<_>>();
            let first_data = first_partition + meta_partitions.len() as u64;
            let data_partitions = data
                .into_iter()
                .enumerate()
                .map(|(i, members)| DataPartitionRecord { id: first_data + i as u64, members, rebuilding: Vec::new() })
                .collect();
            let volume = VolumeRecord {
                id,
                name: name.clone(),
                redundancy,
                capacity_bytes,
                owner,
                created_at_ms: now_ms,
                request_id,
                meta_partitions,
                data_partitions,
                next_blob_id: 1,
                grants: Default::default(),
                quotas: Default::default(),
                trash_secs: 0,
            };
            tx.put(&volume_key(&name), &volume);
            Ok(Outcome::Volume(volume))
        }
        Command::RequestSplit { volume, partition_id } => {
            let Some(mut record) = tx.get::<VolumeRecord>(&volume_key(&volume), "volume")? else {
                return Err(StrataError::not_found(format!("volume {volume} does not exist")));
            };
            if let Some(last) = record.meta_partitions.last_mut()
                && last.id == partition_id
                && last.inode_end.is_none()
                && !last.closing
            {
                last.closing = true;
                tx.put(&volume_key(&volume), &record);
            }
            Ok(Outcome::Volume(record))
        }
        Command::SplitMetaPartition { volume, partition_id, bound, members } => {
            let Some(mut record) = tx.get::<VolumeRecord>(&volume_key(&volume), "volume")? else {
                return Err(StrataError::not_found(format!("volume {volume} does not exist")));
            };
            let Some(last) = record.meta_partitions.last_mut() else {
                return Err(StrataError::internal(format!("volume {volume} has no meta partitions")));
            };
            // Only the closing open-ended partition splits, once: a repeat is a no-op.
            if last.id != partition_id || last.inode_end.is_some() || !last.closing || bound <= last.inode_start {
                return Ok(Outcome::Volume(record));
            }
            last.inode_end = Some(bound);
            last.closing = false;
            let id = tx.next_ids("partition", 1, 1)?;
            record.meta_partitions.push(MetaPartitionRecord {
                id,
                inode_start: bound,
                inode_end: None,
                members,
                closing: false,
            });
            tx.put(&volume_key(&volume), &record);
            Ok(Outcome::Volume(record))
        }
        Command::ReplaceDataMember { volume, partition_id, old, new } => {
            let mut record = must_volume(&tx, &volume)?;
            let partition = data_partition(&mut record, partition_id)?;
            // Applied once: a repeat (or a stale plan) finds `old` gone and changes nothing.
            let Some(slot) = partition.members.iter().position(|m| *m == old) else {
                return Ok(Outcome::Done);
            };
            if partition.members.contains(&new) {
                return Err(StrataError::invalid(format!("node {new} is already in data partition {partition_id}")));
            }
            partition.members[slot] = new;
            partition.rebuilding.retain(|n| *n != old);
            partition.rebuilding.push(new);
            tx.put(&volume_key(&volume), &record);
            Ok(Outcome::Done)
        }
        Command::DataRebuilt { volume, partition_id, node } => {
            let mut record = must_volume(&tx, &volume)?;
            let partition = data_partition(&mut record, partition_id)?;
            if partition.rebuilding.contains(&node) {
                partition.rebuilding.retain(|n| *n != node);
                tx.put(&volume_key(&volume), &record);
            }
            Ok(Outcome::Done)
        }
        Command::DecommissionNode { id } => {
            let Some(mut node) = tx.get::<NodeRecord>(&node_key(id), "node")? else {
                return Err(StrataError::not_found(format!("node {id} is not registered")));
            };
            node.decommissioned = true;
            tx.put(&node_key(id), &node);
            Ok(Outcome::Node(node))
        }
        Command::AllocBlobIds { volume, count } => {
            let Some(mut record) = tx.get::<VolumeRecord>(&volume_key(&volume), "volume")? else {
                return Err(StrataError::not_found(format!("volume {volume} does not exist")));
            };
            let start = record.next_blob_id.max(1);
            record.next_blob_id = start
                .checked_add(count)
                .ok_or_else(|| StrataError::new(ErrorCode::NoSpace, "the volume's blob ids are exhausted"))?;
            tx.put(&volume_key(&volume), &record);
            Ok(Outcome::BlobIds(start))
        }
        Command::DeleteVolume { name } => {
            if tx.get::<VolumeRecord>(&volume_key(&name), "volume")?.is_none() {
                return Err(StrataError::not_found(format!("volume {name} does not exist")));
            }
            tx.delete(&volume_key(&name));
            Ok(Outcome::Done)
        }
        Command::SetGrant { volume, access_key_id, level } => {
            let Some(mut record) = tx.get::<VolumeRecord>(&volume_key(&volume), "volume")? else {
                return Err(StrataError::not_found(format!("volume {volume} does not exist")));
            };
            match level {
                Some(level) => {
                    if tx.get::<String>(&access_key_key(&access_key_id), "access key")?.is_none() {
                        return Err(StrataError::not_found(format!("access key {access_key_id} does not exist")));
                    }
                    record.grants.insert(access_key_id, level);
                }
                None => {
                    record.grants.remove(&access_key_id);
                }
            }
            tx.put(&volume_key(&volume), &record);
            Ok(Outcome::Done)
        }
        Command::SetCapacity { volume, capacity_bytes } => {
            let Some(mut record) = tx.get::<VolumeRecord>(&volume_key(&volume), "volume")? else {
                return Err(StrataError::not_found(format!("volume {volume} does not exist")));
            };
            record.capacity_bytes = capacity_bytes;
            tx.put(&volume_key(&volume), &record);
            Ok(Outcome::Done)
        }
        Command::SetOptions { volume, trash_secs } => {
            let Some(mut record) = tx.get::<VolumeRecord>(&volume_key(&volume), "volume")? else {
                return Err(StrataError::not_found(format!("volume {volume} does not exist")));
            };
            if let Some(trash_secs) = trash_secs {
                record.trash_secs = trash_secs;
            }
            tx.put(&volume_key(&volume), &record);
            Ok(Outcome::Done)
        }
        Command::SetQuota { volume, root, limits } => {
            let Some(mut record) = tx.get::<VolumeRecord>(&volume_key(&volume), "volume")? else {
                return Err(StrataError::not_found(format!("volume {volume} does not exist")));
            };
            match limits {
                Some(limits) => {
                    record.quotas.insert(root, limits);
                }
                None if record.quotas.remove(&root).is_none() => {
                    return Err(StrataError::not_found(format!("volume {volume} has no quota on inode {root}")));
                }
                None => {}
            }
            tx.put(&volume_key(&volume), &record);
            Ok(Outcome::Done)
        }
        Command::CreateUser { name, access_key, now_ms } => {
            if tx.get::<UserRecord>(&user_key(&name), "user")?.is_some() {
                return Err(StrataError::new(ErrorCode::AlreadyExists, format!("user {name} already exists")));
            }
            tx.put(&access_key_key(&access_key.id), &name);
            let user = UserRecord { name: name.clone(), created_at_ms: now_ms, access_keys: vec![access_key] };
            tx.put(&user_key(&name), &user);
            Ok(Outcome::User(user))
        }
        Command::DeleteUser { name } => {
            let Some(user) = tx.get::<UserRecord>(&user_key(&name), "user")? else {
                return Err(StrataError::not_found(format!("user {name} does not exist")));
            };
            for key in &user.access_keys {
                tx.delete(&access_key_key(&key.id));
            }
            tx.delete(&user_key(&name));
            Ok(Outcome::Done)
        }
        Command::CreateAccessKey { user, access_key } => {
            let Some(mut record) = tx.get::<UserRecord>(&user_key(&user), "user")? else {
                return Err(StrataError::not_found(format!("user {user} does not exist")));
            };
            tx.put(&access_key_key(&access_key.id), &user);
            record.access_keys.push(access_key.clone());
            tx.put(&user_key(&user), &record);
            Ok(Outcome::AccessKey(access_key))
        }
        Command::DeleteAccessKey { access_key_id } => {
            let Some(user) = tx.get::<String>(&access_key_key(&access_key_id), "access key")? else {
                return Err(StrataError::not_found(format!("access key {access_key_id} does not exist")));
            };
            tx.delete(&access_key_key(&access_key_id));
            if let Some(mut record) = tx.get::<UserRecord>(&user_key(&user), "user")? {
                record.access_keys.retain(|k| k.id != access_key_id);
                tx.put(&user_key(&user), &record);
            }
            Ok(Outcome::Done)
        }
    }
}

fn must_volume(tx: &Tx<'_, '_>, name: &str) -> Result<VolumeRecord> {
    tx.get::<VolumeRecord>(&volume_key(name), "volume")?
        .ok_or_else(|| StrataError::not_found(format!("volume {name} does not exist")))
}

fn data_partition(volume: &mut VolumeRecord, id: u64) -> Result<&mut DataPartitionRecord> {
    let name = volume.name.clone();
    volume
        .data_partitions
        .iter_mut()
        .find(|p| p.id == id)
        .ok_or_else(|| StrataError::not_found(format!("volume {name} has no data partition {id}")))
}

fn register_node(tx: &mut Tx<'_, '_>, id: u64, role: String, address: String, now_ms: u64) -> Result<Outcome> {
    let existing = if id == 0 { None } else { tx.get::<NodeRecord>(&node_key(id), "node")? };
    let record = match existing {
        Some(existing) if existing.role != role => {
            return Err(StrataError::new(
                ErrorCode::AlreadyExists,
                format!("node id {id} is already registered as a {}", existing.role),
            ));
        }
        // A known node coming back, perhaps on another address.
        Some(existing) => NodeRecord { address, ..existing },
        None => {
            let id = if id == 0 { tx.next_ids("node", 1, FIRST_ASSIGNED_NODE_ID)? } else { id };
            NodeRecord { id, role, address, registered_at_ms: now_ms, decommissioned: false }
        }
    };
    tx.put(&node_key(record.id), &record);
    Ok(Outcome::Node(record))
}
