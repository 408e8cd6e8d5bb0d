//! The data path of the client: blobs written durably to a data partition
//! (replicated through the partition's primary, or erasure-coded by the
//! client onto K+M datanodes) and read back by range, degraded to a decode
//! when shards are missing, slow or damaged. A blob that cannot be written
//! whole is written again, under a new id, to another partition, so one dead
//! datanode never blocks writers.

pub mod file;
pub mod reader;

pub use strata_rpc::blob_reader::BlobReader;
pub use strata_rpc::datanode as node;
pub use strata_rpc::{ec, framed};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use strata_common::types::Redundancy;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::data as data_pb;
use strata_proto::master as master_pb;
use strata_proto::meta::BlobRef;

use crate::MasterClient;
use crate::rpc::Channels;
use strata_rpc::blob_reader::AVOID_FOR;

/// Blob ids fetched from the master at a time.
const ID_BATCH: u64 = 256;
/// A blob write gives up after this long (each attempt goes to another partition).
const WRITE_DEADLINE: Duration = Duration::from_secs(120);

/// What the data path did, for reports and tests.
#[derive(Default)]
pub struct DataStats {
    pub blobs_written: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Blob writes that failed on one partition and were done again on another.
    pub rewrites: AtomicU64,
    pub bytes_read: AtomicU64,
}

struct View {
    redundancy: Redundancy,
    partitions: Vec<master_pb::DataPartition>,
}

pub struct DataClient {
    masters: Vec<String>,
    volume: String,
    /// The volume's name, id and creation time: what names its blobs apart
    /// from those of any other volume, of this cluster or another.
    identity: String,
    view: RwLock<Arc<View>>,
    channels: Channels,
    /// Connections to the datanodes, the ones that failed lately (writes go
    /// to partitions without them, reads try them last) and read counters.
    nodes: BlobReader,
    /// Allocated blob ids not used yet: [next, end).
    ids: tokio::sync::Mutex<(u64, u64)>,
    next_partition: AtomicUsize,
    /// Partitions that failed a write lately, until when.
    avoid: Mutex<HashMap<u64, Instant>>,
    /// See [`DataClient::set_drop_behind`].
    drop_behind: AtomicBool,
    pub stats: DataStats,
}

fn parse_view(volume: &master_pb::Volume) -> Result<View> {
    let redundancy = Redundancy::try_from(
        volume.redundancy.as_ref().ok_or_else(|| StrataError::internal("the volume has no redundancy"))?,
    )?;
    if volume.data_partitions.is_empty() {
        return Err(StrataError::internal(format!("volume {} has no data partitions", volume.name)));
    }
    let width = redundancy.width() as usize;
    if let Some(p) = volume.data_partitions.iter().find(|p| p.members.len() != width) {
        return Err(StrataError::internal(format!(
            "data partition {} has {} members, not {width}",
            p.id,
            p.members.len()
        )));
    }
    Ok(View { redundancy, partitions: volume.data_partitions.clone() })
}

/// From `start` on in round-robin order, the first partition not avoided
/// itself and with no member in `bad_nodes`, else the first not avoided.
fn choose_partition<'a>(
    partitions: &'a [master_pb::DataPartition],
    start: usize,
    avoided: impl Fn(u64) -> bool,
    bad_nodes: &std::collections::HashSet<String>,
) -> Option<&'a master_pb::DataPartition> {
    let n = partitions.len();
    let candidates = || (0..n).map(|i| &partitions[(start + i) % n]).filter(|p| !avoided(p.id));
    candidates().find(|p| !p.members.iter().any(|m| bad_nodes.contains(&m.address))).or_else(|| candidates().next())
}

impl DataClient {
    pub async fn open(master: &MasterClient, volume: &str) -> Result<DataClient> {
        let record = master.get_volume(volume).await?;
        let view = parse_view(&record)?;
        Ok(DataClient {
            masters: master.masters().to_vec(),
            volume: volume.to_string(),
            identity: format!("volume {} id {} created {}", record.name, record.id, record.created_at_ms),
            view: RwLock::new(Arc::new(view)),
            channels: Channels::default(),
            nodes: BlobReader::default(),
            ids: tokio::sync::Mutex::new((0, 0)),
            next_partition: AtomicUsize::new(rand::random::<u32>() as usize),
            avoid: Mutex::new(HashMap::new()),
            drop_behind: AtomicBool::new(false),
            stats: DataStats::default(),
        })
    }

    /// A client of the volume's masters.
    pub fn master(&self) -> Result<MasterClient> {
        MasterClient::new(self.masters.clone())
    }

    /// Asks the master for the volume's data partitions again (after repair moved members).
    pub async fn refresh(&self) -> Result<()> {
        let view = parse_view(&self.master()?.get_volume(&self.volume).await?)?;
        *self.view.write().unwrap() = Arc::new(view);
        Ok(())
    }

    fn view(&self) -> Arc<View> {
        self.view.read().unwrap().clone()
    }

    /// What tells this volume's blobs from any other volume's: blob ids
    /// restart in a new volume or cluster, so a client cache kept across
    /// mounts is only valid for the same identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn redundancy(&self) -> Redundancy {
        self.view().redundancy
    }

    async fn next_blob_id(&self) -> Result<u64> {
        let mut ids = self.ids.lock().await;
        if ids.0 >= ids.1 {
            let start = self.master()?.alloc_blob_ids(&self.volume, ID_BATCH).await?;
            *ids = (start, start + ID_BATCH);
        }
        ids.0 += 1;
        Ok(ids.0 - 1)
    }

    /// The next partition in round-robin order that is not being avoided,
    /// preferring one with no avoided member (a hung follower costs a write
    /// the seconds it takes to notice; paying them once per partition it
    /// holds would stall writers for as many rounds).
    fn pick_partition(&self) -> Option<master_pb::DataPartition> {
        let view = self.view();
        let now = Instant::now();
        let mut avoid = self.avoid.lock().unwrap();
        avoid.retain(|_, until| *until > now);
        let start = self.next_partition.fetch_add(1, Ordering::Relaxed);
        choose_partition(&view.partitions, start, |id| avoid.contains_key(&id), &self.nodes.avoided_nodes()).cloned()
    }

    fn avoid_partition(&self, id: u64) {
        self.avoid.lock().unwrap().insert(id, Instant::now() + AVOID_FOR);
    }

    /// Writes `data` as one new blob, durable on every member of its
    /// partition when this returns; another partition is tried on failure.
    /// `NoSpace` once every partition of the volume has answered that a
    /// member's disk is full.
    pub async fn write_blob(&self, data: Bytes) -> Result<BlobRef> {
        if data.is_empty() {
            return Err(StrataError::invalid("a blob cannot be empty"));
        }
        let started = Instant::now();
        let mut full = std::collections::HashSet::new();
        loop {
            let Some(partition) = self.pick_partition() else {
                if self.view().partitions.iter().all(|p| full.contains(&p.id)) {
                    return Err(StrataError::new(
                        ErrorCode::NoSpace,
                        format!("every data partition of volume {} is full", self.volume),
                    ));
                }
                if started.elapsed() > WRITE_DEADLINE {
                    return Err(StrataError::unavailable("no data partition accepted the write"));
                }
                // Every partition failed lately: look again at the cluster and retry them.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = self.refresh().await;
                self.avoid.lock().unwrap().clear();
                self.nodes.forget_failures();
                continue;
            };
            let blob_id = self.next_blob_id().await?;
            match self.write_to(&partition, blob_id, &data).await {
                Ok(codec) => {
                    self.stats.blobs_written.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes_written.fetch_add(data.len() as u64, Ordering::Relaxed);
                    return Ok(BlobRef {
                        data_partition: partition.id,
                        blob_id,
                        offset: 0,
                        blob_size: data.len() as u64,
                        codec,
                    });
                }
                Err(e) if e.code == ErrorCode::InvalidArgument => return Err(e),
                Err(e) => {
                    if e.code == ErrorCode::NoSpace {
                        full.insert(partition.id);
                    }
                    tracing::warn!(partition_id = partition.id, blob_id, error = %e, "blob write failed; writing it elsewhere");
                    self.stats.rewrites.fetch_add(1, Ordering::Relaxed);
                    self.avoid_partition(partition.id);
                    self.nodes.note_failed_node(&e);
                    self.forget_partial(&partition, blob_id);
                    if started.elapsed() > WRITE_DEADLINE {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Writes a blob to every member of `partition`; answers its codec.
    async fn write_to(&self, partition: &master_pb::DataPartition, blob_id: u64, data: &Bytes) -> Result<u32> {
        let blob_size = data.len() as u64;
        match self.view().redundancy {
            Redundancy::Replicated { .. } => {
                let meta = data_pb::BlobMeta { blob_size, ..Default::default() };
                let forward = partition.members[1..].iter().map(|m| m.address.clone()).collect();
                let primary = &partition.members[0].address;
                self.nodes.pool.write(primary, partition.id, blob_id, meta, data, forward).await?;
                Ok(ec::CODEC_REPLICA)
            }
            Redundancy::ErasureCoded { data: k, parity: m } => {
                let (k, m) = (k as usize, m as usize);
                let shards = tokio::task::block_in_place(|| ec::encode(data, k, m))?;
                let writes = shards.into_iter().zip(&partition.members).enumerate().map(|(i, (shard, member))| {
                    let meta = data_pb::BlobMeta {
                        codec: ec::CODEC_RS_GF8,
                        shard: i as u32,
                        data_shards: k as u32,
                        parity_shards: m as u32,
                        blob_size,
                    };
                    let address = member.address.as_str();
                    async move { self.nodes.pool.write(address, partition.id, blob_id, meta, &shard, Vec::new()).await }
                });
                for result in join_all(writes).await {
                    result?;
                }
                Ok(ec::CODEC_RS_GF8)
            }
        }
    }

    /// Best effort: removes what a failed write left on the members that took it.
    fn forget_partial(&self, partition: &master_pb::DataPartition, blob_id: u64) {
        let members: Vec<String> = partition.members.iter().map(|m| m.address.clone()).collect();
        let partition_id = partition.id;
        tokio::spawn(async move {
            let channels = Channels::default();
            for address in members {
                let blob = data_pb::BlobId { partition_id, blob_id };
                if let Err(e) = node::delete_pieces(&channels, &address, vec![blob]).await {
                    tracing::debug!(partition_id, blob_id, %address, error = %e, "cleaning up a failed write failed");
                }
            }
        });
    }

    /// The data partition `id` of the volume, looked up again if not known
    /// (readers, and a cachenode reading a blob on this client's behalf).
    pub async fn partition(&self, id: u64) -> Result<master_pb::DataPartition> {
        if let Some(p) = self.view().partitions.iter().find(|p| p.id == id) {
            return Ok(p.clone());
        }
        self.refresh().await?;
        self.view()
            .partitions
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or_else(|| StrataError::not_found(format!("data partition {id} is not in volume {}", self.volume)))
    }

    /// For a client that keeps what it reads in a disk cache of its own:
    /// datanodes then drop the whole blocks they send from their page cache
    /// once received (on one machine, a mount's cold stream otherwise kept
    /// every byte three times in memory: segments, disk cache and the
    /// kernel's cache of the mount, and ran at half speed once memory the
    /// host had taken back had to be touched again).
    pub fn set_drop_behind(&self, on: bool) {
        self.drop_behind.store(on, Ordering::Relaxed);
    }

    fn drop_behind(&self) -> bool {
        self.drop_behind.load(Ordering::Relaxed)
    }

    /// Bytes [offset, offset + length) of a blob (offsets within the blob).
    /// A failed read looks at the partition's members again (repair may have
    /// moved them) and tries once more.
    pub async fn read(&self, blob: &BlobRef, offset: u64, length: u64) -> Result<Bytes> {
        self.read_with_crc(blob, offset, length).await.map(|(bytes, _)| bytes)
    }

    /// Like [`DataClient::read`], with the CRC32 of the bytes when the read
    /// already knows it (a replica's answer carries it; a decoded range does
    /// not), so a cache storing them need not compute it again.
    pub async fn read_with_crc(&self, blob: &BlobRef, offset: u64, length: u64) -> Result<(Bytes, Option<u32>)> {
        match self.read_once(blob, offset, length).await {
            Err(e) if e.code != ErrorCode::InvalidArgument => {
                tracing::debug!(blob_id = blob.blob_id, error = %e, "blob read failed; refreshing the volume view");
                if self.refresh().await.is_err() {
                    return Err(e);
                }
                self.read_once(blob, offset, length).await
            }
            other => other,
        }
    }

    async fn read_once(&self, blob: &BlobRef, offset: u64, length: u64) -> Result<(Bytes, Option<u32>)> {
        let partition = self.partition(blob.data_partition).await?;
        let redundancy = self.view().redundancy;
        let (bytes, crc) = self.nodes.read(&partition, redundancy, blob, offset, length, self.drop_behind()).await?;
        self.stats.bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok((bytes, crc))
    }

    /// What this client's reads had to do around failed or slow datanodes.
    pub fn read_counters(&self) -> &BlobReader {
        &self.nodes
    }

    /// Deletes blobs from every member of their partitions (garbage collection).
    pub async fn delete_blobs(&self, blobs: &[(u64, u64)]) -> Result<()> {
        let mut by_partition: HashMap<u64, Vec<data_pb::BlobId>> = HashMap::new();
        for (partition_id, blob_id) in blobs {
            by_partition
                .entry(*partition_id)
                .or_default()
                .push(data_pb::BlobId { partition_id: *partition_id, blob_id: *blob_id });
        }
        for (partition_id, ids) in by_partition {
            let partition = self.partition(partition_id).await?;
            let deletes =
                partition.members.iter().map(|m| node::delete_pieces(&self.channels, &m.address, ids.clone()));
            for result in join_all(deletes).await {
                result?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for DataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataClient").field("volume", &self.volume).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(id: u64, nodes: &[&str]) -> master_pb::DataPartition {
        let members =
            nodes.iter().map(|a| master_pb::PartitionMember { address: a.to_string(), ..Default::default() }).collect();
        master_pb::DataPartition { id, members, ..Default::default() }
    }

    #[test]
    fn writes_steer_clear_of_partitions_holding_a_failed_node() {
        let partitions = [partition(1, &["a", "b"]), partition(2, &["b", "c"]), partition(3, &["c", "d"])];
        let none = std::collections::HashSet::new();
        let b_down: std::collections::HashSet<String> = ["b".to_string()].into();
        let pick = |start, avoided: &[u64], bad| {
            choose_partition(&partitions, start, |id| avoided.contains(&id), bad).map(|p| p.id)
        };
        assert_eq!(pick(0, &[], &none), Some(1), "round robin from the start");
        assert_eq!(pick(1, &[2], &none), Some(3), "an avoided partition is skipped");
        assert_eq!(pick(0, &[], &b_down), Some(3), "every partition holding b is passed over");
        assert_eq!(pick(0, &[3], &b_down), Some(1), "with none clean left, any partition not avoided");
        assert_eq!(pick(0, &[1, 2, 3], &none), None);
    }
}
