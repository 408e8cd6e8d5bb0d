//! The bulk data protocol: length-framed messages over plain TCP, on the
//! datanode's gRPC port (the datanode tells the two apart by the first byte:
//! HTTP/2 starts with "PRI", a frame with its kind). A frame is a kind byte,
//! a prost header and a raw payload, both length-prefixed; the payload's
//! CRC32 travels in the header. It replaced gRPC for blob reads and writes
//! after `strata bench transport` measured both (docs/PERFORMANCE.md).
//! One request at a time per connection; [`FramedPool`] keeps idle
//! connections per datanode for reuse.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use strata_common::aligned::AlignedBuf;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::data::{
    BlobMeta, CacheBlockRequest, CacheBlockResponse, ReadBlobRequest, ReadBlobResponse, WriteBlobRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const KIND_WRITE: u8 = 1;
pub const KIND_READ: u8 = 2;
/// Answered at once with an empty frame: is the node there at all?
pub const KIND_PING: u8 = 3;
/// A block from a cachenode ([`CacheBlockRequest`]).
pub const KIND_CACHE_READ: u8 = 4;
pub const STATUS_OK: u8 = 0;
pub const STATUS_ERR: u8 = 1;
/// Largest header accepted (headers are small prost messages).
const MAX_HEADER: u32 = 64 << 10;
/// Largest payload accepted: a whole blob.
pub const MAX_PAYLOAD: u64 = 64 << 20;
/// Buffer of a connection's writes (a header and a small payload go out in
/// one syscall; payloads larger than it go straight to the socket).
const WRITE_BUFFER: usize = 1 << 20;
/// Buffer of a connection's reads: small, because a buffered reader reads
/// large payloads straight into their own buffer only while its buffer is
/// empty, so whatever it holds is copied once more.
pub const READ_BUFFER: usize = 64 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time allowed for one request (a write includes the fsyncs of every copy).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// A request in flight this long has its node probed (see [`hung`]).
const PROBE_AFTER: Duration = Duration::from_secs(2);
/// Time a probe has to be answered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per datanode.
const IDLE_PER_ADDRESS: usize = 8;

pub async fn write_frame<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    kind: u8,
    header: &[u8],
    payload: &[u8],
) -> std::io::Result<()> {
    write_frame_head(w, kind, header, payload.len() as u32).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// A frame up to its payload, which `payload_len` bytes must follow.
pub async fn write_frame_head<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    kind: u8,
    header: &[u8],
    payload_len: u32,
) -> std::io::Result<()> {
    w.write_u8(kind).await?;
    w.write_u32(header.len() as u32).await?;
    w.write_all(header).await?;
    w.write_u32(payload_len).await
}

pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>, Bytes)> {
    let kind = r.read_u8().await?;
    let header_len = r.read_u32().await?;
    if header_len > MAX_HEADER {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame header too large"));
    }
    let mut header = vec![0; header_len as usize];
    r.read_exact(&mut header).await?;
    let payload_len = r.read_u32().await? as u64;
    if payload_len > MAX_PAYLOAD {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame payload too large"));
    }
    // Page-aligned, so a block can go to the disk cache (O_DIRECT) as it is.
    let mut payload = AlignedBuf::for_overwrite(payload_len as usize);
    r.read_exact(payload.as_mut_slice()).await?;
    Ok((kind, header, Bytes::from_owner(payload)))
}

/// An error as a frame header: code name, NUL, message, and when a node
/// behind the answering one failed, NUL and that node's address.
pub fn encode_error(e: &StrataError) -> Vec<u8> {
    let mut header = format!("{}\0{}", e.code.name(), e.message.replace('\0', " "));
    if let Some(node) = &e.failed_node {
        header.push('\0');
        header.push_str(node);
    }
    header.into_bytes()
}

fn decode_error(header: &[u8]) -> StrataError {
    let text = String::from_utf8_lossy(header);
    let mut parts = text.splitn(3, '\0');
    let (code, message) = match (parts.next(), parts.next()) {
        (Some(code), Some(message)) => (code, message),
        _ => ("internal", text.as_ref()),
    };
    let error = StrataError::new(ErrorCode::from_name(code).unwrap_or(ErrorCode::Internal), message.to_string());
    match parts.next() {
        Some(node) if !node.is_empty() => error.with_failed_node(node),
        _ => error,
    }
}

fn io_error(address: &str, e: std::io::Error) -> StrataError {
    StrataError::unavailable(format!("data connection to {address}: {e}"))
}

/// One connection to a node serving the framed protocol.
pub struct FramedConn {
    address: String,
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
}

impl FramedConn {
    pub async fn connect(address: &str) -> Result<FramedConn> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| StrataError::new(ErrorCode::Timeout, format!("connecting to {address} timed out")))?
            .map_err(|e| io_error(address, e))?;
        stream.set_nodelay(true).map_err(|e| io_error(address, e))?;
        let (r, w) = stream.into_split();
        Ok(FramedConn {
            address: address.to_string(),
            reader: BufReader::with_capacity(READ_BUFFER, r),
            writer: BufWriter::with_capacity(WRITE_BUFFER, w),
        })
    }

    /// One request of any kind, answered with the reply's header and payload;
    /// an error is the node's answer or the connection failing.
    pub async fn request(&mut self, kind: u8, header: &[u8], payload: &[u8]) -> Result<(Vec<u8>, Bytes)> {
        self.call(kind, header, payload).await?
    }

    /// One exchange. The outer error is the connection failing (it must be
    /// dropped), or the node no longer answering probes; the inner one is
    /// the datanode's answer.
    async fn call(&mut self, kind: u8, header: &[u8], payload: &[u8]) -> Result<Result<(Vec<u8>, Bytes)>> {
        let FramedConn { address, reader, writer } = self;
        tokio::select! {
            answer = exchange(address, reader, writer, kind, header, payload) => answer,
            // A timeout, not unavailable: the pool must not retry it on a new connection.
            () = hung(address) => {
                Err(StrataError::new(ErrorCode::Timeout, format!("datanode {address} stopped answering")))
            }
        }
    }
}

/// Sends one request on a connection's halves and reads its answer, within
/// [`CALL_TIMEOUT`]; errors as [`FramedConn::call`]'s.
async fn exchange(
    address: &str,
    reader: &mut BufReader<OwnedReadHalf>,
    writer: &mut BufWriter<OwnedWriteHalf>,
    kind: u8,
    header: &[u8],
    payload: &[u8],
) -> Result<Result<(Vec<u8>, Bytes)>> {
    let exchange = async {
        write_frame(writer, kind, header, payload).await?;
        read_frame(reader).await
    };
    let (status, header, payload) = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| StrataError::new(ErrorCode::Timeout, format!("request to {address} timed out")))?
        .map_err(|e| io_error(address, e))?;
    if status != STATUS_OK {
        return Ok(Err(decode_error(&header)));
    }
    Ok(Ok((header, payload)))
}

/// Completes only if the node at `address` stops answering while a request
/// to it is in flight. A long request is normal (a write waits for the fsyncs
/// of every copy, and queues behind others); a node that is stopped or cut
/// off is not, and its connection stays open and silent until the request's
/// timeout. So after [`PROBE_AFTER`] the node is pinged on a fresh connection,
/// again and again while the request lasts: one ping unanswered within
/// [`PROBE_TIMEOUT`] and the node is taken for hung.
async fn hung(address: &str) {
    tokio::time::sleep(PROBE_AFTER).await;
    loop {
        let probe = async {
            let FramedConn { address, mut reader, mut writer } = FramedConn::connect(address).await?;
            exchange(&address, &mut reader, &mut writer, KIND_PING, &[], &[]).await
        };
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            // An answer, even an error, comes from a live node.
            Ok(Ok(_)) => tokio::time::sleep(PROBE_AFTER / 2).await,
            Ok(Err(e)) => {
                tracing::warn!(%address, error = %e, "a datanode with a request in flight failed a probe");
                return;
            }
            Err(_) => {
                tracing::warn!(%address, "a datanode with a request in flight did not answer a probe");
                return;
            }
        }
    }
}

/// Idle connections per datanode address.
#[derive(Default)]
pub struct FramedPool {
    idle: Mutex<HashMap<String, Vec<FramedConn>>>,
}

impl FramedPool {
    fn give_back(&self, conn: FramedConn) {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.entry(conn.address.clone()).or_default();
        if list.len() < IDLE_PER_ADDRESS {
            list.push(conn);
        }
    }

    /// One request on a pooled connection. A connection that failed is
    /// dropped; an idle one the server closed is replaced once.
    async fn call(&self, address: &str, kind: u8, header: &[u8], payload: &[u8]) -> Result<(Vec<u8>, Bytes)> {
        let mut reused = true;
        loop {
            let idle = self.idle.lock().unwrap().get_mut(address).and_then(Vec::pop);
            let mut conn = match idle {
                Some(conn) => conn,
                None => {
                    reused = false;
                    FramedConn::connect(address).await.map_err(|e| e.with_failed_node(address))?
                }
            };
            match conn.call(kind, header, payload).await.map_err(|e| e.with_failed_node(address)) {
                Ok(answer) => {
                    self.give_back(conn);
                    return answer;
                }
                // An idle connection may have been closed by a restarted node:
                // forget them all and try once on a new one (requests are idempotent).
                Err(e) if reused && e.code == ErrorCode::Unavailable => {
                    self.idle.lock().unwrap().remove(address);
                    reused = false;
                    tracing::debug!(%address, error = %e, "stale data connection; reconnecting");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stores a piece on `address`, which also writes it to `forward`.
    pub async fn write(
        &self,
        address: &str,
        partition_id: u64,
        blob_id: u64,
        meta: BlobMeta,
        data: &Bytes,
        forward: Vec<String>,
    ) -> Result<()> {
        let header = WriteBlobRequest {
            partition_id,
            blob_id,
            meta: Some(meta),
            data: Bytes::new(),
            crc32: crc32fast::hash(data),
            forward,
        };
        self.call(address, KIND_WRITE, &header.encode_to_vec(), data).await.map(drop)
    }

    /// Bytes [offset, offset + length) of the piece `address` stores, with
    /// the datanode's answer (metadata, stored length), CRC checked. Bytes
    /// that fail the check are asked for once more with `verify` (the node
    /// checks its blocks and records damage it finds): what fails again is
    /// an error for the caller to read elsewhere.
    pub async fn read(
        &self,
        address: &str,
        partition_id: u64,
        blob_id: u64,
        offset: u64,
        length: u64,
        drop_behind: bool,
    ) -> Result<ReadBlobResponse> {
        let mut request = ReadBlobRequest { partition_id, blob_id, offset, length, verify: false, drop_behind };
        loop {
            let (header, data) = self.call(address, KIND_READ, &request.encode_to_vec(), &[]).await?;
            let mut response = ReadBlobResponse::decode(header.as_slice())
                .map_err(|e| StrataError::internal(format!("a read header from {address}: {e}")))?;
            if crc32fast::hash(&data) == response.crc32 {
                response.data = data;
                return Ok(response);
            }
            if request.verify {
                return Err(StrataError::new(
                    ErrorCode::Corrupted,
                    format!("blob {blob_id} from {address} damaged in transit"),
                ));
            }
            tracing::warn!(%address, blob_id, "a blob read failed its CRC; asking the node to check its copy");
            request.verify = true;
        }
    }

    /// A block from the cachenode at `address` (with `fill_only`, no bytes:
    /// the node loaded and kept it), CRC checked.
    pub async fn cache_read(&self, address: &str, request: &CacheBlockRequest) -> Result<(CacheBlockResponse, Bytes)> {
        let (header, data) = self.call(address, KIND_CACHE_READ, &request.encode_to_vec(), &[]).await?;
        let response = CacheBlockResponse::decode(header.as_slice())
            .map_err(|e| StrataError::internal(format!("a cache read header from {address}: {e}")))?;
        if !request.fill_only && crc32fast::hash(&data) != response.crc32 {
            return Err(StrataError::new(
                ErrorCode::Corrupted,
                format!(
                    "block {} of blob {} from cachenode {address} damaged in transit",
                    request.block, request.blob_id
                ),
            ));
        }
        Ok((response, data))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A node on a loopback port that answers pings at once and other
    /// requests after `delay`, or, `silent`, accepts connections and never answers.
    async fn node(delay: Duration, silent: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                if silent {
                    held.push(stream);
                    continue;
                }
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    while let Ok((kind, _, _)) = read_frame(&mut r).await {
                        if kind != KIND_PING {
                            tokio::time::sleep(delay).await;
                        }
                        write_frame(&mut w, STATUS_OK, b"", b"").await.unwrap();
                    }
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn a_slow_node_is_waited_for_and_a_silent_one_given_up_on() {
        let slow = node(PROBE_AFTER * 3, false).await;
        let answer = FramedPool::default().call(&slow, KIND_WRITE, b"", b"data").await;
        assert!(answer.is_ok(), "a node answering probes gets all the time its request needs: {answer:?}");

        let silent = node(Duration::ZERO, true).await;
        let started = Instant::now();
        let err = FramedPool::default().call(&silent, KIND_WRITE, b"", b"data").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Timeout, "{err}");
        assert!(err.message.contains("stopped answering"), "{err}");
        assert_eq!(err.failed_node.as_deref(), Some(silent.as_str()), "the hung node is named");
        assert!(started.elapsed() < CALL_TIMEOUT, "given up on by its probe, not by the request's timeout");
    }

    #[test]
    fn an_error_header_round_trips_with_and_without_a_failed_node() {
        let plain = StrataError::new(ErrorCode::NoSpace, "disk full");
        assert_eq!(decode_error(&encode_error(&plain)), plain);
        let behind = StrataError::unavailable("follower failed").with_failed_node("127.0.0.1:7001");
        assert_eq!(decode_error(&encode_error(&behind)), behind);
        let garbage = decode_error(b"no separator");
        assert_eq!((garbage.code, garbage.failed_node), (ErrorCode::Internal, None));
    }
}
