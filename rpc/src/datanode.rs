//! gRPC calls to one datanode: the `Data` service's control calls (delete,
//! list, stats) and, for comparison with the framed protocol, blob reads and
//! writes, with message limits large enough for a whole blob and an
//! end-to-end CRC32 on every payload.

use std::time::Duration;

use bytes::Bytes;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::data::{self as pb, data_client::DataClient};
use tonic::transport::Channel;

use crate::channels::Channels;

/// Largest message on the data path: a 64 MiB piece plus its envelope.
pub const MAX_MESSAGE: usize = (64 << 20) + (1 << 20);

/// Time allowed for one piece to be written (and fsynced) or read.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub fn client(channels: &Channels, address: &str) -> Result<DataClient<Channel>> {
    Ok(DataClient::new(channels.get(address)?)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

fn with_timeout<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Writes a piece to `address` over gRPC (which forwards it to `forward`, if
/// any). The data path uses the framed protocol; this stays for comparison.
pub async fn grpc_write_piece(
    channels: &Channels,
    address: &str,
    partition_id: u64,
    blob_id: u64,
    meta: pb::BlobMeta,
    data: Bytes,
    forward: Vec<String>,
) -> Result<()> {
    let crc32 = crc32fast::hash(&data);
    let request = pb::WriteBlobRequest { partition_id, blob_id, meta: Some(meta), data, crc32, forward };
    client(channels, address)?
        .write_blob(with_timeout(request))
        .await
        .map_err(|s| StrataError::from(s).context(&format!("writing blob {blob_id} to {address}")))?;
    Ok(())
}

/// Bytes [offset, offset + length) of the piece `address` stores, over gRPC,
/// checked against the CRC32 the datanode computed after its own block checks.
pub async fn grpc_read_piece(
    channels: &Channels,
    address: &str,
    partition_id: u64,
    blob_id: u64,
    offset: u64,
    length: u64,
) -> Result<pb::ReadBlobResponse> {
    let request = pb::ReadBlobRequest { partition_id, blob_id, offset, length, verify: true, drop_behind: false };
    let response = client(channels, address)?
        .read_blob(with_timeout(request))
        .await
        .map_err(|s| StrataError::from(s).context(&format!("reading blob {blob_id} from {address}")))?
        .into_inner();
    if crc32fast::hash(&response.data) != response.crc32 {
        return Err(StrataError::new(
            ErrorCode::Corrupted,
            format!("blob {blob_id} from {address} damaged in transit"),
        ));
    }
    Ok(response)
}

/// Deletes blobs on one datanode; answers how many were there.
pub async fn delete_pieces(channels: &Channels, address: &str, blobs: Vec<pb::BlobId>) -> Result<u64> {
    let response = client(channels, address)?
        .delete_blobs(with_timeout(pb::DeleteBlobsRequest { blobs }))
        .await
        .map_err(|s| StrataError::from(s).context(&format!("deleting blobs on {address}")))?;
    Ok(response.into_inner().deleted)
}

/// The store counters of one datanode.
pub async fn store_stats(channels: &Channels, address: &str) -> Result<pb::StoreStatsResponse> {
    let response = client(channels, address)?
        .store_stats(with_timeout(pb::StoreStatsRequest {}))
        .await
        .map_err(|s| StrataError::from(s).context(&format!("reading store stats of {address}")))?;
    Ok(response.into_inner())
}
