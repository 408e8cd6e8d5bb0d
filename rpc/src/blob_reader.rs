//! Reads of blobs from the datanodes of their partition, for every reader
//! (the sdk's data path and the cachenode's read-through): a replica at a
//! time, spread by blob id and falling through to the others; an
//! erasure-coded range from its data shards, decoded around a shard that is
//! missing, slow, damaged or being rebuilt. Nodes that failed are
//! remembered for a while and tried last (and steered clear of by writers).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use strata_common::types::Redundancy;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::data as data_pb;
use strata_proto::master as master_pb;
use strata_proto::meta::BlobRef;

use crate::ec;
use crate::framed::FramedPool;

/// A node that could not be reached or hung is left alone this long.
pub const AVOID_FOR: Duration = Duration::from_secs(30);
/// A shard that has not answered in this long is read around (decoded from others).
const SLOW_SHARD: Duration = Duration::from_secs(3);

/// The datanodes as one reader sees them: pooled connections, the nodes
/// that failed lately, and what its reads had to do.
#[derive(Default)]
pub struct BlobReader {
    /// Connections of the framed data protocol, per datanode (writers use them too).
    pub pool: FramedPool,
    /// Datanodes (by address) that were unreachable or hung lately, until when.
    avoid_nodes: Mutex<HashMap<String, Instant>>,
    /// Reads that had to decode around a missing, slow or damaged shard or replica.
    pub degraded_reads: AtomicU64,
    /// Shard reads given up on as slow or hung (decoded around, though the
    /// shard may be intact: a loaded node is not a lost one).
    pub slow_shards: AtomicU64,
}

impl BlobReader {
    /// Remembers the node an error names as unreachable or hung, if any.
    pub fn note_failed_node(&self, error: &StrataError) {
        if let Some(address) = &error.failed_node {
            tracing::info!(%address, "steering clear of a datanode that failed");
            self.avoid_nodes.lock().unwrap().insert(address.clone(), Instant::now() + AVOID_FOR);
        }
    }

    /// The addresses of the datanodes being steered clear of now.
    pub fn avoided_nodes(&self) -> HashSet<String> {
        let now = Instant::now();
        let mut nodes = self.avoid_nodes.lock().unwrap();
        nodes.retain(|_, until| *until > now);
        nodes.keys().cloned().collect()
    }

    /// Gives every node another chance.
    pub fn forget_failures(&self) {
        self.avoid_nodes.lock().unwrap().clear();
    }

    /// Bytes [offset, offset + length) of `blob`, stored in `partition` of a
    /// volume of `redundancy`, with their CRC32 when the read knows it (a
    /// replica's answer carries it; a decoded range does not).
    pub async fn read(
        &self,
        partition: &master_pb::DataPartition,
        redundancy: Redundancy,
        blob: &BlobRef,
        offset: u64,
        length: u64,
        drop_behind: bool,
    ) -> Result<(Bytes, Option<u32>)> {
        match blob.codec {
            ec::CODEC_REPLICA => {
                let answer = self.read_replicated(partition, blob, offset, length, drop_behind).await?;
                Ok((answer.data, Some(answer.crc32)))
            }
            ec::CODEC_RS_GF8 => {
                Ok((self.read_coded(partition, blob, offset, length, redundancy, drop_behind).await?, None))
            }
            other => Err(StrataError::new(ErrorCode::Corrupted, format!("unknown blob codec {other}"))),
        }
    }

    async fn read_replicated(
        &self,
        partition: &master_pb::DataPartition,
        blob: &BlobRef,
        offset: u64,
        length: u64,
        drop_behind: bool,
    ) -> Result<data_pb::ReadBlobResponse> {
        let n = partition.members.len();
        // Spread readers over the replicas, members being rebuilt last; fall
        // through to the others on failure.
        let first = (blob.blob_id as usize) % n;
        let mut order: Vec<&master_pb::PartitionMember> = (0..n).map(|i| &partition.members[(first + i) % n]).collect();
        let bad_nodes = self.avoided_nodes();
        order.sort_by_key(|m| (partition.rebuilding.contains(&m.node_id), bad_nodes.contains(&m.address)));
        let mut last_error = StrataError::unavailable("no replica was tried");
        for (i, member) in order.into_iter().enumerate() {
            let read = self.pool.read(&member.address, partition.id, blob.blob_id, offset, length, drop_behind);
            match read.await {
                Ok(r) => {
                    if i > 0 {
                        self.degraded_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(r);
                }
                Err(e) => {
                    tracing::debug!(partition_id = partition.id, blob_id = blob.blob_id, error = %e, "replica read failed");
                    self.note_failed_node(&e);
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    async fn read_coded(
        &self,
        partition: &master_pb::DataPartition,
        blob: &BlobRef,
        offset: u64,
        length: u64,
        redundancy: Redundancy,
        drop_behind: bool,
    ) -> Result<Bytes> {
        let Redundancy::ErasureCoded { data: k, parity: m } = redundancy else {
            return Err(StrataError::internal("an erasure-coded blob in a replicated volume"));
        };
        let (k, m) = (k as usize, m as usize);
        let pieces = ec::pieces(blob.blob_size, k, offset, length);
        let fetches = pieces.iter().map(|p| {
            let member = &partition.members[p.shard];
            let address = member.address.as_str();
            let rebuilding = partition.rebuilding.contains(&member.node_id);
            async move {
                if rebuilding {
                    return Err(StrataError::unavailable(format!("shard on {address} is being rebuilt")));
                }
                let read = self.pool.read(address, partition.id, blob.blob_id, p.shard_offset, p.length, drop_behind);
                match tokio::time::timeout(SLOW_SHARD, read).await {
                    Ok(Ok(r)) if r.data.len() as u64 == p.length => Ok(r.data),
                    Ok(Ok(r)) => Err(StrataError::new(ErrorCode::Corrupted, format!("short shard: {}", r.data.len()))),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(StrataError::new(ErrorCode::Timeout, format!("shard on {address} is slow"))),
                }
            }
        });
        let results = join_all(fetches).await;
        let failed: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_err()).map(|(i, _)| i).collect();
        let total: u64 = pieces.iter().map(|p| p.length).sum();
        let mut out = BytesMut::zeroed(total as usize);
        for (piece, result) in pieces.iter().zip(&results) {
            if let Ok(bytes) = result {
                let at = (piece.blob_offset - offset) as usize;
                out[at..at + bytes.len()].copy_from_slice(bytes);
            }
        }
        if failed.is_empty() {
            return Ok(out.freeze());
        }
        self.degraded_reads.fetch_add(1, Ordering::Relaxed);
        for i in &failed {
            if let Err(e) = &results[*i] {
                if e.code == ErrorCode::Timeout {
                    self.slow_shards.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(partition_id = partition.id, blob_id = blob.blob_id, shard = pieces[*i].shard, error = %e, "shard unreadable; decoding around it");
            }
        }
        // Rebuild the failed pieces' columns from any K shards.
        let lost: Vec<usize> = failed.iter().map(|i| pieces[*i].shard).collect();
        let from = failed.iter().map(|i| pieces[*i].shard_offset).min().expect("failed is not empty");
        let to = failed.iter().map(|i| pieces[*i].shard_offset + pieces[*i].length).max().expect("not empty");
        let columns = self.read_columns(partition, blob.blob_id, (k, m), &lost, from..to, drop_behind).await?;
        for i in failed {
            let piece = pieces[i];
            let column = columns[piece.shard].as_ref().expect("reconstructed");
            let start = (piece.shard_offset - from) as usize;
            let at = (piece.blob_offset - offset) as usize;
            out[at..at + piece.length as usize].copy_from_slice(&column[start..start + piece.length as usize]);
        }
        Ok(out.freeze())
    }

    /// Columns [from, to) of every data shard, read from the shards not in
    /// `lost` and decoded.
    async fn read_columns(
        &self,
        partition: &master_pb::DataPartition,
        blob_id: u64,
        (k, m): (usize, usize),
        lost: &[usize],
        std::ops::Range { start: from, end: to }: std::ops::Range<u64>,
        drop_behind: bool,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let usable = |s: &usize| !lost.contains(s) && !partition.rebuilding.contains(&partition.members[*s].node_id);
        let reads = (0..k + m).filter(usable).map(|shard| {
            let address = partition.members[shard].address.as_str();
            async move {
                let read = self.pool.read(address, partition.id, blob_id, from, to - from, drop_behind);
                let result = tokio::time::timeout(SLOW_SHARD * 2, read).await;
                (shard, result)
            }
        });
        let mut columns: Vec<Option<Vec<u8>>> = vec![None; k + m];
        for (shard, result) in join_all(reads).await {
            match result {
                Ok(Ok(r)) if r.data.len() as u64 == to - from => columns[shard] = Some(r.data.to_vec()),
                Ok(Ok(_)) => tracing::warn!(shard, "shard returned a short read"),
                Ok(Err(e)) => tracing::info!(shard, error = %e, "shard unreadable while decoding"),
                Err(_) => tracing::info!(shard, "shard too slow while decoding"),
            }
        }
        tokio::task::block_in_place(|| ec::reconstruct(&mut columns, k, m))?;
        Ok(columns)
    }
}
