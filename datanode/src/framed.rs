//! The datanode's side of the framed data protocol (see
//! `strata_sdk::data::framed`): blob writes (with forwarding to followers)
//! and reads on connections the listener recognised as framed. A read of
//! whole blocks goes from the segment file to the socket with sendfile(2):
//! no copy through this process, and no CRC pass here (the reader checks the
//! CRC the header carries, made of the stored block CRCs, and asks again
//! with `verify` when it finds damage).

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use strata_common::{Result, StrataError};
use strata_proto::data::{ReadBlobRequest, ReadBlobResponse, WriteBlobRequest};
use strata_sdk::data::framed::{
    KIND_PING, KIND_READ, KIND_WRITE, READ_BUFFER, STATUS_ERR, STATUS_OK, encode_error, read_frame, write_frame,
    write_frame_head,
};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use crate::service::DataService;
use crate::store::FileRange;
use crate::store::files::advise;

/// Time a reader may take to make room in its socket for more of a blob.
const SEND_STALL: Duration = Duration::from_secs(20);

/// What a request is answered with: bytes, or a range of a segment file
/// (to drop from the page cache once received, with `drop_behind`).
enum Reply {
    Bytes(Vec<u8>, Bytes),
    File { header: Vec<u8>, range: FileRange, drop_behind: bool },
}

/// A range sent with `drop_behind`.
struct SentRange {
    file: Arc<File>,
    offset: u64,
    length: u64,
}

/// Ranges sent with `drop_behind` on one connection, dropped from the page
/// cache at the ages in [`DROP_AT`] (looked at when a request arrives) and
/// when the reader leaves. Not at once and more than once: pages the socket
/// still holds are not dropped, and the kernel releases sent buffers some
/// time after the reader has the bytes (a freed buffer goes back to the CPU
/// that made it, whenever that CPU next handles network work).
#[derive(Default)]
struct DropBehind {
    /// (when sent, drops done, range), oldest first.
    sent: VecDeque<(Instant, usize, SentRange)>,
}

/// Ages at which a range sent with drop-behind is dropped.
const DROP_AT: [Duration; 3] = [Duration::from_millis(20), Duration::from_millis(250), Duration::from_secs(2)];
/// Ranges a connection remembers at most (the oldest go first).
const DROP_BEHIND_MAX: usize = 256;

impl DropBehind {
    fn push(&mut self, range: SentRange) {
        if self.sent.len() == DROP_BEHIND_MAX {
            self.sent.pop_front();
        }
        self.sent.push_back((Instant::now(), 0, range));
    }

    fn expire(&mut self) {
        for (sent, drops, range) in self.sent.iter_mut() {
            if *drops < DROP_AT.len() && sent.elapsed() >= DROP_AT[*drops] {
                range.drop_pages();
                *drops += 1;
            }
        }
        while self.sent.front().is_some_and(|(_, drops, _)| *drops == DROP_AT.len()) {
            self.sent.pop_front();
        }
    }
}

impl Drop for DropBehind {
    /// The reader left: a last drop of what was not dropped enough yet.
    fn drop(&mut self) {
        for (_, drops, range) in &self.sent {
            if *drops < DROP_AT.len() {
                range.drop_pages();
            }
        }
    }
}

impl SentRange {
    fn drop_pages(&self) {
        advise(&self.file, self.offset, self.length, libc::POSIX_FADV_DONTNEED);
    }
}

/// Whether a connection's first byte starts a framed request.
pub fn is_framed(first: u8) -> bool {
    matches!(first, KIND_WRITE | KIND_READ | KIND_PING)
}

/// Serves framed requests on `stream` until the peer closes it.
pub async fn serve_connection(stream: TcpStream, service: Arc<DataService>) {
    let (r, w) = stream.into_split();
    let (mut r, mut w) = (BufReader::with_capacity(READ_BUFFER, r), BufWriter::with_capacity(1 << 20, w));
    let mut behind = DropBehind::default();
    loop {
        let frame = read_frame(&mut r).await;
        behind.expire();
        let (kind, header, payload) = match frame {
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
            KIND_PING => Ok(Reply::Bytes(Vec::new(), Bytes::new())),
            other => Err(StrataError::invalid(format!("unknown frame kind {other}"))),
        };
        let written = match result {
            Ok(Reply::Bytes(header, payload)) => write_frame(&mut w, STATUS_OK, &header, &payload).await,
            Ok(Reply::File { header, range, drop_behind }) => {
                let sent = drop_behind.then(|| SentRange {
                    file: range.file.clone(),
                    offset: range.file_offset,
                    length: range.length,
                });
                let written = write_file_frame(&mut w, &header, range).await;
                if let (Some(sent), Ok(())) = (sent, &written) {
                    behind.push(sent);
                }
                written
            }
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
        return Ok(Reply::File { header: response.encode_to_vec(), range, drop_behind: request.drop_behind });
    }
    let mut response = service.read(request).await?;
    // The payload travels raw after the header.
    let data = std::mem::take(&mut response.data);
    Ok(Reply::Bytes(response.encode_to_vec(), data))
}

/// A frame whose payload is a range of a segment file, sent by the kernel.
async fn write_file_frame(w: &mut BufWriter<OwnedWriteHalf>, header: &[u8], range: FileRange) -> std::io::Result<()> {
    write_frame_head(w, STATUS_OK, header, range.length as u32).await?;
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
    advise(file, offset, length, libc::POSIX_FADV_WILLNEED);
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

    const PAGE: u64 = 4096;

    fn pages_spanned(range: &FileRange) -> usize {
        ((range.file_offset + range.length).div_ceil(PAGE) - range.file_offset / PAGE) as usize
    }

    /// Pages of the range in the page cache (mincore).
    fn resident_pages(range: &FileRange) -> usize {
        let start = range.file_offset / PAGE * PAGE;
        let len = (range.file_offset + range.length - start) as usize;
        let mut pages = vec![0u8; len.div_ceil(PAGE as usize)];
        // SAFETY: a private read-only mapping of an open file, unmapped before returning;
        // mincore writes one byte per page of it into `pages`.
        unsafe {
            let fd = range.file.as_raw_fd();
            let address = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd, start as i64);
            assert_ne!(address, libc::MAP_FAILED);
            assert_eq!(libc::mincore(address, len, pages.as_mut_ptr()), 0);
            libc::munmap(address, len);
        }
        pages.iter().filter(|p| **p & 1 == 1).count()
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
            let answer = pool.read(&address, 1, 9, offset, length, false).await.unwrap();
            let end = (offset + length).min(len);
            assert_eq!(answer.data, data.slice(offset as usize..end as usize), "{offset}+{length}");
            assert_eq!(answer.stored_length, len);
        }
        assert_eq!(store.totals().unwrap().corrupt_blocks, 0);

        // Drop-behind: a range sent with it leaves the page cache once the
        // reader asks for more (partial pages at its ends may stay); one sent
        // without it stays.
        let first = store.locate_whole_blocks(1, 9, 0, BLOCK_SIZE).unwrap().unwrap();
        let kept = store.locate_whole_blocks(1, 9, 2 * BLOCK_SIZE, BLOCK_SIZE).unwrap().unwrap();
        pool.read(&address, 1, 9, 0, BLOCK_SIZE, true).await.unwrap();
        assert!(resident_pages(&first) > 2, "sent pages are cached until the reader has them");
        // Later requests on the connection drop it once it is old enough
        // (and the ranges the reads above sent with drop-behind).
        let deadline = Instant::now() + Duration::from_secs(5);
        while resident_pages(&first) > 2 {
            assert!(Instant::now() < deadline, "{} pages of a dropped range stayed", resident_pages(&first));
            tokio::time::sleep(DROP_AT[0]).await;
            pool.read(&address, 1, 9, 3 * BLOCK_SIZE, 1000, false).await.unwrap();
        }
        pool.read(&address, 1, 9, 2 * BLOCK_SIZE, BLOCK_SIZE, false).await.unwrap();
        for _ in 0..3 {
            tokio::time::sleep(DROP_AT[0]).await;
            pool.read(&address, 1, 9, 3 * BLOCK_SIZE, 1000, false).await.unwrap();
        }
        assert_eq!(resident_pages(&kept), pages_spanned(&kept), "kept without drop-behind");

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
        let error = pool.read(&address, 1, 9, BLOCK_SIZE, BLOCK_SIZE, false).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Corrupted, "{error}");
        assert_eq!(store.totals().unwrap().corrupt_blocks, 1);
        assert_eq!(store.bad_blobs(10).unwrap(), vec![(1, 9)]);
        let answer = pool.read(&address, 1, 9, 2 * BLOCK_SIZE, BLOCK_SIZE, true).await.unwrap();
        assert_eq!(answer.data, data.slice(2 * BLOCK_SIZE as usize..3 * BLOCK_SIZE as usize));
        store.shutdown();
    }
}
