//! The datanode's side of the framed data protocol (see
//! `strata_sdk::data::framed`): blob writes (with forwarding to followers)
//! and reads on connections the listener recognised as framed. A read of
//! whole blocks goes from the segment file to the socket with sendfile(2):
//! no copy through this process, and no CRC pass here (the reader checks the
//! CRC the header carries, made of the stored block CRCs, and asks again
//! with `verify` when it finds damage).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use strata_common::{Result, StrataError};
use strata_proto::data::{ReadBlobRequest, ReadBlobResponse, WriteBlobRequest};
use strata_sdk::data::framed::{
    KIND_READ, KIND_WRITE, READ_BUFFER, STATUS_ERR, STATUS_OK, encode_error, read_frame, write_frame,
};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use crate::service::DataService;
use crate::store::FileRange;

/// Time a reader may take to make room in its socket for more of a blob.
const SEND_STALL: Duration = Duration::from_secs(20);

/// What a request is answered with: bytes, or a range of a segment file.
enum Reply {
    Bytes(Vec<u8>, Bytes),
    File(Vec<u8>, FileRange),
}

/// Whether a connection's first byte starts a framed request.
pub fn is_framed(first: u8) -> bool {
    first == KIND_WRITE || first == KIND_READ
}

/// Serves framed requests on `stream` until the peer closes it.
pub async fn serve_connection(stream: TcpStream, service: Arc<DataService>) {
    let (r, w) = stream.into_split();
    let (mut r, mut w) = (BufReader::with_capacity(READ_BUFFER, r), BufWriter::with_capacity(1 << 20, w));
    loop {
        let (kind, header, payload) = match read_frame(&mut r).await {
            Ok(frame) => frame,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(error = %e, "framed connection ended");
                }
                return;
            }
        };
        let result = match kind {
            KIND_WRITE => {
                handle_write(&service, &header, payload).await.map(|()| Reply::Bytes(Vec::new(), Bytes::new()))
            }
            KIND_READ => handle_read(&service, &header).await,
            other => Err(StrataError::invalid(format!("unknown frame kind {other}"))),
        };
        let written = match result {
            Ok(Reply::Bytes(header, payload)) => write_frame(&mut w, STATUS_OK, &header, &payload).await,
            Ok(Reply::File(header, range)) => write_file_frame(&mut w, &header, range).await,
            Err(e) => write_frame(&mut w, STATUS_ERR, &encode_error(&e), &[]).await,
        };
        if written.is_err() {
            return;
        }
    }
}

async fn handle_write(service: &DataService, header: &[u8], payload: Bytes) -> Result<()> {
    let mut request = WriteBlobRequest::decode(header).map_err(|e| StrataError::invalid(format!("header: {e}")))?;
    request.data = payload;
    service.write(request).await
}

async fn handle_read(service: &DataService, header: &[u8]) -> Result<Reply> {
    let request = ReadBlobRequest::decode(header).map_err(|e| StrataError::invalid(format!("header: {e}")))?;
    if !request.verify
        && let Some(range) = service.locate_whole_blocks(&request).await?
    {
        let response = ReadBlobResponse {
            crc32: range.crc32,
            data: Bytes::new(),
            meta: Some(range.location.meta.into()),
            stored_length: range.location.len.into(),
        };
        return Ok(Reply::File(response.encode_to_vec(), range));
    }
    let mut response = service.read(request).await?;
    // The payload travels raw after the header.
    let data = std::mem::take(&mut response.data);
    Ok(Reply::Bytes(response.encode_to_vec(), data))
}

/// A frame whose payload is a range of a segment file, sent by the kernel.
async fn write_file_frame(w: &mut BufWriter<OwnedWriteHalf>, header: &[u8], range: FileRange) -> std::io::Result<()> {
    w.write_u8(STATUS_OK).await?;
    w.write_u32(header.len() as u32).await?;
    w.write_all(header).await?;
    w.write_u32(range.length as u32).await?;
    w.flush().await?;
    // A blocking thread waits for the disk; it sends on its own descriptor
    // of the socket, so the socket outlives it whatever happens here.
    let socket = w.get_ref().as_ref().as_fd().try_clone_to_owned()?;
    tokio::task::spawn_blocking(move || send_file(&socket, &range.file, range.file_offset, range.length))
        .await
        .map_err(std::io::Error::other)?
}

/// sendfile(2) of `length` bytes of `file` from `offset` to the (non-blocking) `socket`.
fn send_file(socket: &OwnedFd, file: &File, mut offset: u64, mut length: u64) -> std::io::Result<()> {
    // The whole range in one disk request: segments have no kernel
    // read-ahead (see `FileCache`), and sendfile alone reads 64 KiB at a time.
    // SAFETY: fadvise on an open descriptor; it only starts reads into the page cache.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), offset as i64, length as i64, libc::POSIX_FADV_WILLNEED) };
    while length > 0 {
        let mut at = offset as libc::off_t;
        // SAFETY: both descriptors are open for the call; `at` is a valid offset cell.
        let n = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut at, length as usize) };
        if n > 0 {
            offset += n as u64;
            length -= n as u64;
            continue;
        }
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the segment file ended early"));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => wait_writable(socket)?,
            _ => return Err(e),
        }
    }
    Ok(())
}

fn wait_writable(socket: &OwnedFd) -> std::io::Result<()> {
    let mut poll = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut poll, 1, SEND_STALL.as_millis() as i32) };
    match rc {
        0 => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the reader stopped taking data")),
        rc if rc < 0 => {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted { Ok(()) } else { Err(e) }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use strata_common::ErrorCode;
    use strata_common::config::{RaftConfig, StoreConfig};
    use strata_sdk::data::framed::FramedPool;

    use super::*;
    use crate::store::Store;
    use crate::store::record::{BLOCK_SIZE, PieceMeta};

    /// A datanode's framed protocol on a loopback port, over `store`.
    async fn serve(store: Arc<Store>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let service = Arc::new(DataService::new(store));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve_connection(stream, service.clone()));
            }
        });
        address
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn whole_blocks_are_sent_from_the_file_and_damage_there_is_found_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig { scrub_mb_per_sec: 0, compact_interval_secs: 3600, ..Default::default() };
        let store = Store::open(dir.path(), &config, &RaftConfig::default()).unwrap();
        let len = 3 * BLOCK_SIZE + 1000;
        let data: Bytes = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        store.write(1, 9, PieceMeta { blob_size: len, ..Default::default() }, data.clone()).await.unwrap();
        let address = serve(store.clone()).await;
        let pool = FramedPool::default();

        // Whole blocks, whole blocks to the blob's end, past it, and a part of a block.
        for (offset, length) in [(0, len), (BLOCK_SIZE, 2 * BLOCK_SIZE), (2 * BLOCK_SIZE, 10 * BLOCK_SIZE), (5, 100)] {
            let whole = store.locate_whole_blocks(1, 9, offset, length).unwrap().is_some();
            assert_eq!(whole, offset != 5, "{offset}+{length} is sent from the file iff whole blocks");
            let answer = pool.read(&address, 1, 9, offset, length).await.unwrap();
            let end = (offset + length).min(len);
            assert_eq!(answer.data, data.slice(offset as usize..end as usize), "{offset}+{length}");
            assert_eq!(answer.stored_length, len);
        }
        assert_eq!(store.totals().unwrap().corrupt_blocks, 0);

        // A byte of the second block goes bad on disk.
        let range = store.locate_whole_blocks(1, 9, BLOCK_SIZE, BLOCK_SIZE).unwrap().unwrap();
        let segment = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", range.file.as_raw_fd()))
            .unwrap();
        let mut byte = [0u8];
        segment.read_exact_at(&mut byte, range.file_offset + 100).unwrap();
        segment.write_all_at(&[byte[0] ^ 0x40], range.file_offset + 100).unwrap();

        // The reader finds it, the node records it, and the other blocks still read.
        let error = pool.read(&address, 1, 9, BLOCK_SIZE, BLOCK_SIZE).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Corrupted, "{error}");
        assert_eq!(store.totals().unwrap().corrupt_blocks, 1);
        assert_eq!(store.bad_blobs(10).unwrap(), vec![(1, 9)]);
        let answer = pool.read(&address, 1, 9, 2 * BLOCK_SIZE, BLOCK_SIZE).await.unwrap();
        assert_eq!(answer.data, data.slice(2 * BLOCK_SIZE as usize..3 * BLOCK_SIZE as usize));
        store.shutdown();
    }
}
