//! The datanode's gRPC `Data` service over its [`Store`]: checks what arrives
//! (CRC32 of the payload, piece metadata), fans writes out to the followers a
//! replicated partition's primary was given, and answers after every copy is
//! durable.

use std::sync::Arc;

use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::data::{self as pb, data_server::Data};
use strata_rpc::framed::FramedPool;
use tonic::{Request, Response, Status};

use crate::store::record::PieceMeta;
use crate::store::{FileRange, Store};

type RpcResult<T> = std::result::Result<Response<T>, Status>;

/// Blobs listed per `ListBlobs` page at most.
const LIST_LIMIT: u32 = 10_000;

pub struct DataService {
    store: Arc<Store>,
    /// Framed connections to followers, for forwarded writes.
    pool: FramedPool,
}

impl DataService {
    pub fn new(store: Arc<Store>) -> Self {
        DataService { store, pool: FramedPool::default() }
    }

    /// Reads a range of a stored piece, with the CRC32 the reader checks.
    pub async fn read(&self, r: pb::ReadBlobRequest) -> Result<pb::ReadBlobResponse> {
        let (data, location) = self.store.read(r.partition_id, r.blob_id, r.offset, r.length).await?;
        // The read checked every block it returns: whole blocks need no second pass.
        let crc32 = location.range_crc(r.offset, data.len() as u64).unwrap_or_else(|| crc32fast::hash(&data));
        Ok(pb::ReadBlobResponse { crc32, data, meta: Some(location.meta.into()), stored_length: location.len.into() })
    }

    /// Where a read of whole blocks lies in a segment file (None: any other
    /// read, which [`DataService::read`] checks block by block).
    pub async fn locate_whole_blocks(&self, r: &pb::ReadBlobRequest) -> Result<Option<FileRange>> {
        let (store, partition, blob, offset, length) =
            (self.store.clone(), r.partition_id, r.blob_id, r.offset, r.length);
        tokio::task::spawn_blocking(move || store.locate_whole_blocks(partition, blob, offset, length))
            .await
            .map_err(|e| StrataError::internal(format!("locating a blob: {e}")))?
    }

    /// Stores a piece; with `forward`, writes it to those followers too and
    /// answers after every copy is durable.
    pub async fn write(&self, request: pb::WriteBlobRequest) -> Result<()> {
        let meta = PieceMeta::try_from(&request.meta.unwrap_or_default())?;
        if crc32fast::hash(&request.data) != request.crc32 {
            return Err(StrataError::new(ErrorCode::Corrupted, "the blob's payload fails its CRC32"));
        }
        let local = self.store.write(request.partition_id, request.blob_id, meta, request.data.clone());
        let forwards = request.forward.iter().map(|address| {
            self.pool.write(address, request.partition_id, request.blob_id, meta.into(), &request.data, Vec::new())
        });
        let (local, remote) = futures::join!(local, futures::future::join_all(forwards));
        local.map_err(|e| e.context("storing the blob locally"))?;
        for (result, follower) in remote.into_iter().zip(&request.forward) {
            // The client writes the whole blob elsewhere, and steers clear of
            // the follower for a while: its error is retryable for the client.
            result.map_err(|e| {
                StrataError::unavailable(format!("follower {follower} failed: {e}")).with_failed_node(follower)
            })?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Data for DataService {
    async fn write_blob(&self, request: Request<pb::WriteBlobRequest>) -> RpcResult<pb::WriteBlobResponse> {
        let request = request.into_inner();
        let (partition_id, blob_id) = (request.partition_id, request.blob_id);
        self.write(request).await.map_err(|e| {
            tracing::warn!(partition_id, blob_id, error = %e, "blob write failed");
            Status::from(e)
        })?;
        Ok(Response::new(pb::WriteBlobResponse {}))
    }

    async fn read_blob(&self, request: Request<pb::ReadBlobRequest>) -> RpcResult<pb::ReadBlobResponse> {
        Ok(Response::new(self.read(request.into_inner()).await?))
    }

    async fn delete_blobs(&self, request: Request<pb::DeleteBlobsRequest>) -> RpcResult<pb::DeleteBlobsResponse> {
        let mut deleted = 0;
        for blob in request.into_inner().blobs {
            if self.store.delete(blob.partition_id, blob.blob_id).await? {
                deleted += 1;
            }
        }
        Ok(Response::new(pb::DeleteBlobsResponse { deleted }))
    }

    async fn list_blobs(&self, request: Request<pb::ListBlobsRequest>) -> RpcResult<pb::ListBlobsResponse> {
        let r = request.into_inner();
        let limit = r.limit.clamp(1, LIST_LIMIT) as usize;
        let blobs = self
            .store
            .list(r.partition_id, r.after, limit)?
            .into_iter()
            .map(|(blob_id, loc)| pb::ListedBlob {
                blob_id,
                meta: Some(loc.meta.into()),
                stored_length: loc.len.into(),
            })
            .collect();
        Ok(Response::new(pb::ListBlobsResponse { blobs }))
    }

    async fn store_stats(&self, _request: Request<pb::StoreStatsRequest>) -> RpcResult<pb::StoreStatsResponse> {
        let t = self.store.totals()?;
        Ok(Response::new(pb::StoreStatsResponse {
            blobs: t.blobs,
            live_bytes: t.live_bytes,
            segment_bytes: t.segment_bytes,
            segments: t.segments,
            corrupt_blocks: t.corrupt_blocks,
            compactions: t.compactions,
            scrubbed_bytes: t.scrubbed_bytes,
            bad_blobs: t.bad_blobs,
            repaired_blobs: t.repaired_blobs,
        }))
    }
}
