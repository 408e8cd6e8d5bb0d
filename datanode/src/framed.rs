//! The datanode's framed requests (protocol in `strata_rpc::framed`, server
//! loop in `strata_node::framed_server`): blob writes (with forwarding to
//! followers) and reads. A read of whole blocks is answered with the range of
//! the segment file, which the server loop sends with sendfile(2): no copy
//! through this process, and no CRC pass here (the reader checks the CRC the
//! header carries, made of the stored block CRCs, and asks again with
//! `verify` when it finds damage).

use bytes::Bytes;
use prost::Message;
use strata_common::{Result, StrataError};
use strata_node::framed_server::{FileSlice, FramedHandler, Reply};
use strata_proto::data::{ReadBlobRequest, ReadBlobResponse, WriteBlobRequest};
use strata_rpc::framed::{KIND_READ, KIND_WRITE};

use crate::service::DataService;

impl FramedHandler for DataService {
    async fn handle(&self, kind: u8, header: Vec<u8>, payload: Bytes) -> Result<Reply> {
        match kind {
            KIND_WRITE => handle_write(self, &header, payload).await.map(|()| Reply::empty()),
            KIND_READ => handle_read(self, &header).await,
            other => Err(StrataError::invalid(format!("unknown frame kind {other}"))),
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
        let slice = FileSlice { file: range.file, offset: range.file_offset, length: range.length };
        return Ok(Reply::File { header: response.encode_to_vec(), slice, drop_behind: request.drop_behind });
    }
    let mut response = service.read(request).await?;
    // The payload travels raw after the header.
    let data = std::mem::take(&mut response.data);
    Ok(Reply::Bytes { header: response.encode_to_vec(), payload: data })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use strata_common::ErrorCode;
    use strata_common::config::{RaftConfig, StoreConfig};
    use strata_node::framed_server::{DROP_AT, serve_on_loopback};
    use strata_rpc::framed::FramedPool;

    use super::*;
    use crate::store::record::{BLOCK_SIZE, PieceMeta};
    use crate::store::{FileRange, Store};

    /// A datanode's framed protocol on a loopback port, over `store`.
    async fn serve(store: Arc<Store>) -> String {
        serve_on_loopback(Arc::new(DataService::new(store))).await.unwrap()
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
