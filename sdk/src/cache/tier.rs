//! L3, the shared cache tier, as a client sees it: which cachenode holds a
//! block, and asking it. A block goes to the cachenode that scores highest
//! for it by rendezvous hashing over the live cachenodes the master lists
//! (refreshed every few seconds), so adding or removing one moves only the
//! blocks it wins or held. A cachenode that does not answer within a short
//! deadline, or cannot be reached, is passed over for a while (its blocks go
//! to the next in each block's order); nothing of it reaches the
//! application: a block the tier cannot give is read from the datanodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_blockcache::{BlockKey, mix};
use strata_common::types::Redundancy;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::data::{CacheBlockRequest, CacheSource};
use strata_proto::master as master_pb;
use strata_proto::meta::BlobRef;
use strata_rpc::framed::FramedPool;

use crate::MasterClient;

/// How long a cachenode has to answer for one block before the client reads
/// it from the datanodes instead.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// A cachenode that failed is passed over this long.
const DOWN_FOR: Duration = Duration::from_secs(30);
/// How often the list of cachenodes is asked for again.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// A cachenode a block may be placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheNode {
    pub id: u64,
    pub address: String,
}

/// The cachenodes in the order `key` prefers them (rendezvous hashing:
/// each node's score for the key is a hash of both; the highest wins).
pub fn preference<'a>(key: &BlockKey, nodes: &'a [CacheNode]) -> Vec<&'a CacheNode> {
    let hash = key.stable_hash();
    let mut scored: Vec<(u64, &CacheNode)> = nodes.iter().map(|n| (mix(hash ^ mix(n.id)), n)).collect();
    scored.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    scored.into_iter().map(|(_, n)| n).collect()
}

/// What the shared tier did for one client.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TierReport {
    pub enabled: bool,
    /// Live cachenodes known.
    pub nodes: u64,
    /// Blocks a cachenode had in memory or on disk.
    pub hits: u64,
    /// Blocks a cachenode read from the datanodes for this client.
    pub fills: u64,
    /// Bytes the tier returned.
    pub bytes: u64,
    /// Blocks the tier could not give (read from the datanodes instead).
    pub failures: u64,
}

pub struct SharedTier {
    master: MasterClient,
    nodes: RwLock<Vec<CacheNode>>,
    pool: FramedPool,
    /// Cachenodes (by address) passed over until when.
    down: Mutex<HashMap<String, Instant>>,
    hits: AtomicU64,
    fills: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
}

impl SharedTier {
    /// The tier of the cluster `master` leads, its cachenodes listed now and
    /// every few seconds after (for as long as the tier is in use). One per
    /// cluster in a process: volumes opened by one process (an S3
    /// gateway's buckets) share its node list, connections and counters.
    pub async fn open(master: MasterClient) -> Arc<SharedTier> {
        static OPEN: Mutex<Vec<(Vec<String>, Weak<SharedTier>)>> = Mutex::new(Vec::new());
        let mut masters = master.masters().to_vec();
        masters.sort();
        let known = {
            let mut open = OPEN.lock().unwrap();
            open.retain(|(_, tier)| tier.strong_count() > 0);
            open.iter().find(|(m, _)| *m == masters).and_then(|(_, tier)| tier.upgrade())
        };
        if let Some(tier) = known {
            return tier;
        }
        let tier = Self::start(master).await;
        OPEN.lock().unwrap().push((masters, Arc::downgrade(&tier)));
        tier
    }

    async fn start(master: MasterClient) -> Arc<SharedTier> {
        let tier = Arc::new(SharedTier {
            master,
            nodes: RwLock::new(Vec::new()),
            pool: FramedPool::default(),
            down: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            fills: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        if let Err(e) = tier.refresh().await {
            tracing::warn!(error = %e, "listing the cachenodes failed; the shared cache tier is off until it works");
        }
        tokio::spawn(keep_refreshing(Arc::downgrade(&tier)));
        tier
    }

    async fn refresh(&self) -> Result<()> {
        let listed = self.master.list_nodes().await?;
        let nodes: Vec<CacheNode> = listed
            .into_iter()
            .filter(|n| n.role == master_pb::NodeRole::Cachenode as i32 && n.alive && !n.decommissioned)
            .map(|n| CacheNode { id: n.id, address: n.address })
            .collect();
        *self.nodes.write().unwrap() = nodes;
        Ok(())
    }

    /// The cachenodes known now.
    pub fn nodes(&self) -> Vec<CacheNode> {
        self.nodes.read().unwrap().clone()
    }

    /// How many cachenodes are known now (without copying the list).
    pub fn node_count(&self) -> usize {
        self.nodes.read().unwrap().len()
    }

    /// The cachenode to ask for `key`: the first in its preference that is
    /// not passed over.
    fn node_for(&self, key: &BlockKey) -> Option<CacheNode> {
        let nodes = self.nodes.read().unwrap();
        let now = Instant::now();
        let mut down = self.down.lock().unwrap();
        down.retain(|_, until| *until > now);
        preference(key, &nodes).into_iter().find(|n| !down.contains_key(&n.address)).cloned()
    }

    /// The block `request` names (see [`request_for`]) from its cachenode,
    /// with its CRC32; `None` when there is no cachenode or it could not
    /// give the block in time (the caller reads the datanodes).
    pub async fn block(&self, request: &CacheBlockRequest) -> Option<(Bytes, u32)> {
        let key = BlockKey { data_partition: request.partition_id, blob_id: request.blob_id, block: request.block };
        let node = self.node_for(&key)?;
        let asked = tokio::time::timeout(DEADLINE, self.pool.cache_read(&node.address, request)).await;
        let answer = match asked {
            Ok(answer) => answer,
            Err(_) => Err(StrataError::new(ErrorCode::Timeout, format!("cachenode {} is slow", node.address))
                .with_failed_node(&node.address)),
        };
        match answer {
            Ok((response, bytes)) => {
                let counter = match CacheSource::try_from(response.source) {
                    Ok(CacheSource::Memory | CacheSource::Disk) => &self.hits,
                    _ => &self.fills,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Some((bytes, response.crc32))
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if e.failed_node.as_deref() == Some(node.address.as_str()) {
                    tracing::info!(address = %node.address, error = %e, "passing over a cachenode that failed");
                    self.down.lock().unwrap().insert(node.address.clone(), Instant::now() + DOWN_FOR);
                } else {
                    tracing::debug!(address = %node.address, blob_id = request.blob_id, error = %e, "a cachenode could not give a block");
                }
                None
            }
        }
    }

    pub fn report(&self) -> TierReport {
        TierReport {
            enabled: true,
            nodes: self.node_count() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            fills: self.fills.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

async fn keep_refreshing(tier: Weak<SharedTier>) {
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        let Some(tier) = tier.upgrade() else { return };
        if let Err(e) = tier.refresh().await {
            tracing::debug!(error = %e, "listing the cachenodes failed; keeping the last list");
        }
    }
}

/// The framed request for block `index` of `blob`, naming the partition's
/// members so the cachenode can read the block itself (with its bytes;
/// set `fill_only` for a warm-up).
pub fn request_for(
    blob: &BlobRef,
    index: u64,
    block_size: u64,
    partition: &master_pb::DataPartition,
    redundancy: Redundancy,
) -> CacheBlockRequest {
    let (data_shards, parity_shards) = match redundancy {
        Redundancy::Replicated { .. } => (0, 0),
        Redundancy::ErasureCoded { data, parity } => (data, parity),
    };
    let rebuilding = partition
        .members
        .iter()
        .enumerate()
        .filter(|(_, m)| partition.rebuilding.contains(&m.node_id))
        .map(|(i, _)| i as u32)
        .collect();
    CacheBlockRequest {
        partition_id: partition.id,
        blob_id: blob.blob_id,
        blob_size: blob.blob_size,
        codec: blob.codec,
        block: index,
        block_size,
        members: partition.members.iter().map(|m| m.address.clone()).collect(),
        rebuilding,
        data_shards,
        parity_shards,
        fill_only: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: impl IntoIterator<Item = u64>) -> Vec<CacheNode> {
        ids.into_iter().map(|id| CacheNode { id, address: format!("node-{id}") }).collect()
    }

    fn owner(key: &BlockKey, nodes: &[CacheNode]) -> u64 {
        preference(key, nodes)[0].id
    }

    #[test]
    fn adding_or_removing_a_cachenode_moves_only_its_share_of_blocks() {
        let keys: Vec<BlockKey> =
            (0..20_000).map(|i| BlockKey { data_partition: 1 + i % 7, blob_id: i / 4, block: i % 4 }).collect();
        let four = nodes(1..=4);
        let five = nodes(1..=5);
        let three = nodes([1, 2, 4]);
        let mut per_node: HashMap<u64, usize> = HashMap::new();
        let (mut moved_on_add, mut moved_on_remove) = (0, 0);
        for key in &keys {
            let before = owner(key, &four);
            *per_node.entry(before).or_default() += 1;
            let added = owner(key, &five);
            if added != before {
                assert_eq!(added, 5, "a block moves only to the new node");
                moved_on_add += 1;
            }
            let removed = owner(key, &three);
            if removed != before {
                assert_eq!(before, 3, "only the removed node's blocks move");
                moved_on_remove += 1;
            }
        }
        let share = keys.len() as f64;
        // Expected: a fifth of the blocks to the new node, a quarter off the removed one.
        assert!((moved_on_add as f64 / share - 0.20).abs() < 0.02, "{moved_on_add} moved on add");
        assert!((moved_on_remove as f64 / share - 0.25).abs() < 0.02, "{moved_on_remove} moved on remove");
        for (node, count) in per_node {
            assert!((count as f64 / share - 0.25).abs() < 0.02, "node {node} holds {count}");
        }
    }
}
