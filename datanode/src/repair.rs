//! Rebuilding what this datanode should hold but does not: a whole data
//! partition after the master made this node a replacement member (every
//! blob listed by the other members, copied from a replica or re-encoded
//! from K shards), and single blobs the store found corrupt (read or scrub).
//! Partition rebuilds run a few at a time; progress and completion go to the
//! master in heartbeats.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use strata_common::types::Redundancy;
use strata_common::{ErrorCode, Result, StrataError};
use strata_node::agent::NodeStats;
use strata_proto::data::{BlobMeta, ListBlobsRequest, ListedBlob};
use strata_proto::master::{self as pb, DataPartition, RepairProgress};
use strata_rpc::channels::Channels;
use strata_rpc::framed::FramedPool;
use strata_rpc::{datanode as node, ec};
use tokio::sync::Semaphore;

use crate::store::Store;
use crate::store::record::PieceMeta;

/// Partition rebuilds running at once on this node.
const CONCURRENT_REBUILDS: usize = 2;
/// Blobs listed per request.
const LIST_PAGE: u32 = 5_000;
/// A rebuild that failed is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often corrupt blobs are looked for.
const BAD_BLOB_EVERY: Duration = Duration::from_secs(2);

pub struct Repairer {
    store: Arc<Store>,
    node_id: u64,
    stats: Arc<NodeStats>,
    channels: Channels,
    pool: FramedPool,
    partitions: RwLock<HashMap<u64, DataPartition>>,
    running: Mutex<HashSet<u64>>,
    failed_at: Mutex<HashMap<u64, Instant>>,
    progress: Mutex<HashMap<u64, (u64, u64)>>,
    permits: Semaphore,
}

fn redundancy(p: &DataPartition) -> Result<Redundancy> {
    Redundancy::try_from(p.redundancy.as_ref().ok_or_else(|| StrataError::internal("partition without redundancy"))?)
}

impl Repairer {
    pub fn new(store: Arc<Store>, node_id: u64, stats: Arc<NodeStats>) -> Arc<Repairer> {
        Arc::new(Repairer {
            store,
            node_id,
            stats,
            channels: Channels::default(),
            pool: FramedPool::default(),
            partitions: RwLock::new(HashMap::new()),
            running: Mutex::new(HashSet::new()),
            failed_at: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            permits: Semaphore::new(CONCURRENT_REBUILDS),
        })
    }

    /// Takes the master's latest view of this node's data partitions and
    /// starts the rebuilds it asks for.
    pub fn on_assignments(self: &Arc<Self>, assignments: Vec<pb::DataPartitionAssignment>) {
        let partitions: HashMap<u64, DataPartition> =
            assignments.into_iter().filter_map(|a| a.partition).map(|p| (p.id, p)).collect();
        let mine = |p: &DataPartition| p.rebuilding.contains(&self.node_id);
        // The master has recorded these rebuilds: stop reporting them.
        self.stats.rebuilt.lock().unwrap().retain(|id| partitions.get(id).is_some_and(mine));
        let reported: Vec<u64> = self.stats.rebuilt.lock().unwrap().clone();
        for p in partitions.values().filter(|p| mine(p) && !reported.contains(&p.id)) {
            let recently_failed = self.failed_at.lock().unwrap().get(&p.id).is_some_and(|t| t.elapsed() < RETRY_AFTER);
            if recently_failed || !self.running.lock().unwrap().insert(p.id) {
                continue;
            }
            let (me, partition) = (self.clone(), p.clone());
            tokio::spawn(async move { me.run_rebuild(partition).await });
        }
        *self.partitions.write().unwrap() = partitions;
    }

    async fn run_rebuild(self: Arc<Self>, partition: DataPartition) {
        let id = partition.id;
        let result = match self.permits.acquire().await {
            Ok(_permit) => self.rebuild_partition(&partition).await,
            Err(_) => Err(StrataError::unavailable("shutting down")),
        };
        match result {
            Ok(blobs) => {
                tracing::info!(partition_id = id, blobs, "data partition rebuilt");
                self.stats.rebuilt.lock().unwrap().push(id);
            }
            Err(e) => {
                tracing::warn!(partition_id = id, error = %e, "rebuilding a data partition failed; will retry");
                self.failed_at.lock().unwrap().insert(id, Instant::now());
            }
        }
        self.progress.lock().unwrap().remove(&id);
        self.publish_progress();
        self.running.lock().unwrap().remove(&id);
    }

    fn publish_progress(&self) {
        let reports = self
            .progress
            .lock()
            .unwrap()
            .iter()
            .map(|(id, (done, total))| RepairProgress {
                partition_id: *id,
                node_id: self.node_id,
                blobs_done: *done,
                blobs_total: *total,
            })
            .collect();
        *self.stats.repairs.lock().unwrap() = reports;
    }

    /// Members to copy from: everyone but this node and those still rebuilding.
    fn sources(&self, partition: &DataPartition) -> Vec<(usize, String)> {
        partition
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.node_id != self.node_id && !partition.rebuilding.contains(&m.node_id))
            .map(|(i, m)| (i, m.address.clone()))
            .collect()
    }

    /// Every blob any source holds, with what one of them says about it.
    async fn list_all(&self, partition: &DataPartition) -> Result<BTreeMap<u64, ListedBlob>> {
        let mut all = BTreeMap::new();
        let mut listed_by = 0;
        for (_, address) in self.sources(partition) {
            let mut after = 0;
            let listed = async {
                loop {
                    let request = ListBlobsRequest { partition_id: partition.id, after, limit: LIST_PAGE };
                    let page = node::client(&self.channels, &address)?
                        .list_blobs(request)
                        .await
                        .map_err(StrataError::from)?
                        .into_inner()
                        .blobs;
                    let Some(last) = page.last() else { return Ok::<_, StrataError>(()) };
                    after = last.blob_id;
                    for blob in page {
                        all.entry(blob.blob_id).or_insert(blob);
                    }
                }
            };
            match listed.await {
                Ok(()) => listed_by += 1,
                Err(e) => tracing::info!(partition_id = partition.id, %address, error = %e, "listing blobs failed"),
            }
        }
        if listed_by == 0 {
            return Err(StrataError::unavailable("no member could list the partition's blobs"));
        }
        Ok(all)
    }

    /// Copies in every blob of `partition` this node lacks; answers how many.
    async fn rebuild_partition(&self, partition: &DataPartition) -> Result<u64> {
        let me = partition
            .members
            .iter()
            .position(|m| m.node_id == self.node_id)
            .ok_or_else(|| StrataError::invalid("this node is not a member"))?;
        let blobs = self.list_all(partition).await?;
        let total = blobs.len() as u64;
        let mut done = 0;
        let mut rebuilt = 0;
        for (blob_id, listed) in blobs {
            if self.store.location(partition.id, blob_id)?.is_none() {
                let meta = listed.meta.unwrap_or_default();
                if self.rebuild_blob(partition, me, blob_id, &meta, listed.stored_length).await? {
                    rebuilt += 1;
                }
            }
            done += 1;
            if done % 16 == 0 || done == total {
                self.progress.lock().unwrap().insert(partition.id, (done, total));
                self.publish_progress();
            }
        }
        Ok(rebuilt)
    }

    /// Writes this node's copy (replica or shard `me`) of one blob, from the
    /// other members. False if the blob is gone everywhere (deleted meanwhile).
    async fn rebuild_blob(
        &self,
        partition: &DataPartition,
        me: usize,
        blob_id: u64,
        listed: &BlobMeta,
        stored_length: u64,
    ) -> Result<bool> {
        let sources = self.sources(partition);
        match redundancy(partition)? {
            Redundancy::Replicated { .. } => {
                let mut last = StrataError::unavailable("no replica to copy from");
                for (_, address) in &sources {
                    match self.pool.read(address, partition.id, blob_id, 0, stored_length, false).await {
                        Ok(r) => {
                            let meta = PieceMeta { blob_size: listed.blob_size, ..Default::default() };
                            self.store.write(partition.id, blob_id, meta, r.data).await?;
                            return Ok(true);
                        }
                        Err(e) => last = e,
                    }
                }
                if last.code == ErrorCode::NotFound { Ok(false) } else { Err(last) }
            }
            Redundancy::ErasureCoded { data: k, parity: m } => {
                let (k, m) = (k as usize, m as usize);
                let shard_len = ec::shard_len(listed.blob_size, k);
                let reads = sources.iter().map(|(index, address)| async move {
                    let read = self.pool.read(address, partition.id, blob_id, 0, shard_len, false).await;
                    (*index, read)
                });
                let mut shards: Vec<Option<Vec<u8>>> = vec![None; k + m];
                let mut missing_everywhere = true;
                for (index, read) in join_all(reads).await {
                    match read {
                        Ok(r) if r.data.len() as u64 == shard_len => shards[index] = Some(r.data.to_vec()),
                        Ok(_) => missing_everywhere = false,
                        Err(e) => missing_everywhere &= e.code == ErrorCode::NotFound,
                    }
                }
                if shards.iter().all(Option::is_none) && missing_everywhere {
                    return Ok(false);
                }
                shards[me] = None;
                tokio::task::block_in_place(|| ec::reconstruct_all(&mut shards, k, m))?;
                let shard = shards[me].take().expect("reconstructed");
                let meta = PieceMeta {
                    codec: ec::CODEC_RS_GF8 as u8,
                    shard: me as u8,
                    data_shards: k as u8,
                    parity_shards: m as u8,
                    blob_size: listed.blob_size,
                };
                self.store.write(partition.id, blob_id, meta, shard.into()).await?;
                Ok(true)
            }
        }
    }

    /// Rewrites blobs the store found corrupt, from the other members, forever.
    pub async fn repair_bad_blobs(self: Arc<Self>) {
        loop {
            tokio::time::sleep(BAD_BLOB_EVERY).await;
            let bad = match self.store.bad_blobs(64) {
                Ok(bad) => bad,
                Err(e) => {
                    tracing::warn!(error = %e, "listing corrupt blobs failed");
                    continue;
                }
            };
            for (partition_id, blob_id) in bad {
                let Some(partition) = self.partitions.read().unwrap().get(&partition_id).cloned() else { continue };
                let Some(me) = partition.members.iter().position(|m| m.node_id == self.node_id) else { continue };
                let Ok(Some(location)) = self.store.location(partition_id, blob_id) else { continue };
                let meta: BlobMeta = location.meta.into();
                match self.rebuild_blob(&partition, me, blob_id, &meta, location.len.into()).await {
                    Ok(_) => {
                        self.store.count_repaired();
                        tracing::info!(partition_id, blob_id, "corrupt blob rewritten from the other members");
                    }
                    Err(e) => tracing::warn!(partition_id, blob_id, error = %e, "repairing a corrupt blob failed"),
                }
            }
        }
    }
}
