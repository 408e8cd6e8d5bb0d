//! File contents over the data path and the extent map: a writer that buffers
//! sequential writes, cuts them into blobs, keeps a few blob writes in flight
//! and commits their extents in write order once they are durable; and a
//! reader that assembles a range from the extents covering it, holes as zeros.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::try_join_all;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::BlobRef;
use tokio::task::JoinHandle;

use super::DataClient;
use crate::MetaClient;
use crate::cache::BlockCache;
use crate::types::Extent;

/// Default size at which buffered data is cut into a blob.
pub const DEFAULT_BLOB_SIZE: usize = 4 << 20;
/// Blob writes of one file in flight at once.
const IN_FLIGHT: usize = 4;
/// Extents committed per metadata operation at most.
pub const EXTENTS_PER_COMMIT: usize = 256;

struct Pending {
    file_offset: u64,
    length: u64,
    write: JoinHandle<Result<BlobRef>>,
}

/// Writes of one open file. Data is durable and visible once [`flush`](Self::flush) returns.
pub struct FileWriter {
    data: Arc<DataClient>,
    meta: Arc<MetaClient>,
    ino: u64,
    blob_size: usize,
    buffer: BytesMut,
    buffer_offset: u64,
    in_flight: VecDeque<Pending>,
}

impl FileWriter {
    pub fn new(data: Arc<DataClient>, meta: Arc<MetaClient>, ino: u64, blob_size: usize) -> FileWriter {
        FileWriter {
            data,
            meta,
            ino,
            blob_size: blob_size.clamp(4096, 64 << 20),
            buffer: BytesMut::new(),
            buffer_offset: 0,
            in_flight: VecDeque::new(),
        }
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Buffers `bytes` at `offset`; full blobs go out as they fill.
    pub async fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        if !self.buffer.is_empty() && offset != self.buffer_offset + self.buffer.len() as u64 {
            self.cut().await?;
        }
        if self.buffer.is_empty() {
            self.buffer_offset = offset;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = rest.len().min(self.blob_size - self.buffer.len());
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buffer.len() == self.blob_size {
                self.cut().await?;
            }
        }
        Ok(())
    }

    /// Sends the buffered bytes as one blob.
    async fn cut(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let blob = self.buffer.split().freeze();
        let file_offset = self.buffer_offset;
        self.buffer_offset += blob.len() as u64;
        let length = blob.len() as u64;
        let data = self.data.clone();
        let write = tokio::spawn(async move { data.write_blob(blob).await });
        self.in_flight.push_back(Pending { file_offset, length, write });
        if self.in_flight.len() > IN_FLIGHT {
            self.commit(1).await?;
        }
        Ok(())
    }

    /// Waits for the oldest `count` blob writes and commits their extents, in order.
    async fn commit(&mut self, count: usize) -> Result<()> {
        let mut extents = Vec::new();
        let mut failure = None;
        for pending in self.in_flight.drain(..count.min(self.in_flight.len())) {
            let result = pending.write.await.map_err(|e| StrataError::internal(format!("blob write task: {e}")));
            match result.and_then(|r| r) {
                Ok(blob) => extents.push(Extent { file_offset: pending.file_offset, length: pending.length, blob }),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        // What did become durable is committed even if a neighbour failed.
        for (i, chunk) in extents.chunks(EXTENTS_PER_COMMIT).enumerate() {
            if let Err(e) = self.meta.write_extents(self.ino, chunk.to_vec()).await {
                if e.code == ErrorCode::QuotaExceeded {
                    // Refused, so never referenced: the blobs go now, not at an fsck.
                    let unused = &extents[i * EXTENTS_PER_COMMIT..];
                    let blobs: Vec<(u64, u64)> =
                        unused.iter().map(|x| (x.blob.data_partition, x.blob.blob_id)).collect();
                    if let Err(cleanup) = self.data.delete_blobs(&blobs).await {
                        tracing::warn!(ino = self.ino, error = %cleanup, "deleting blobs a quota refused failed");
                    }
                }
                return Err(e);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether writes wait to be made durable and visible.
    pub fn has_pending(&self) -> bool {
        !self.buffer.is_empty() || !self.in_flight.is_empty()
    }

    /// Makes everything written so far durable and visible (fsync, close).
    pub async fn flush(&mut self) -> Result<()> {
        self.cut().await?;
        self.commit(self.in_flight.len()).await
    }
}

/// Bytes [offset, offset + length) of file `ino`, clipped to its size, read
/// straight from the datanodes (no cache); holes read as zeros.
pub async fn read_file(meta: &MetaClient, data: &DataClient, ino: u64, offset: u64, length: u64) -> Result<Bytes> {
    let (extents, size) = meta.get_extents(ino, offset, length).await?;
    let end = offset.saturating_add(length).min(size);
    assemble(&extents, offset, end, |blob, length| async move { data.read(&blob, blob.offset, length).await }).await
}

/// Bytes [offset, end) of a file from the `extents` covering them (clipped
/// to the range, in file order) read through `cache`; gaps are holes.
pub async fn read_extents(cache: &BlockCache, extents: &[Extent], offset: u64, end: u64) -> Result<Bytes> {
    assemble(extents, offset, end, |blob, length| async move { cache.read(&blob, blob.offset, length).await }).await
}

/// [`read_extents`] for a read at random: see [`BlockCache::read_random`].
pub async fn read_extents_random(cache: &Arc<BlockCache>, extents: &[Extent], offset: u64, end: u64) -> Result<Bytes> {
    assemble(extents, offset, end, |blob, length| async move { cache.read_random(&blob, blob.offset, length).await })
        .await
}

/// Assembles [offset, end) from clipped extents, reading each extent's
/// bytes (`length` from its blob offset) with `read`; gaps read as zeros.
async fn assemble<F, Fut>(extents: &[Extent], offset: u64, end: u64, read: F) -> Result<Bytes>
where
    F: Fn(BlobRef, u64) -> Fut,
    Fut: std::future::Future<Output = Result<Bytes>>,
{
    if end <= offset {
        return Ok(Bytes::new());
    }
    let in_range: Vec<&Extent> = extents.iter().filter(|e| e.file_offset >= offset && e.file_offset < end).collect();
    // One extent covering the whole range: its bytes as they come, no copy.
    if let [e] = in_range.as_slice()
        && e.file_offset == offset
        && e.length >= end - offset
    {
        return read(e.blob, end - offset).await;
    }
    let mut out = BytesMut::zeroed((end - offset) as usize);
    let reads = in_range.iter().map(|e| {
        let length = e.length.min(end - e.file_offset);
        let read = &read;
        async move { Ok::<_, StrataError>((e.file_offset, read(e.blob, length).await?)) }
    });
    for (file_offset, bytes) in try_join_all(reads).await? {
        let at = (file_offset - offset) as usize;
        out[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    Ok(out.freeze())
}
