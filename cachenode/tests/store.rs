//! The cachenode's store over a real datanode on loopback: read-through with
//! one load per block, damage on its disk found and refetched, contents kept
//! across a restart, and a scan that does not flush the hot set.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use strata_blockcache::BlockKey;
use strata_cachenode::{CacheStore, StoreOptions};
use strata_common::config::{RaftConfig, StoreConfig};
use strata_datanode::service::DataService;
use strata_datanode::store::Store;
use strata_datanode::store::record::PieceMeta;
use strata_node::framed_server::serve_on_loopback;
use strata_proto::data::{CacheBlockRequest, CacheSource};
use strata_rpc::ec::CODEC_REPLICA;

const BLOCK: u64 = 64 << 10;
const PARTITION: u64 = 7;
const BLOB: u64 = 42;
/// Blocks in the test blob (its last one short).
const BLOCKS: u64 = 48;
const BLOB_SIZE: u64 = BLOCKS * BLOCK - 1000;

struct Datanode {
    address: String,
    data: Bytes,
    _dir: tempfile::TempDir,
}

/// A datanode holding one blob, serving the framed protocol on loopback.
async fn datanode() -> Datanode {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { scrub_mb_per_sec: 0, compact_interval_secs: 3600, ..Default::default() };
    let store = Store::open(dir.path(), &config, &RaftConfig::default()).unwrap();
    let data: Bytes = (0..BLOB_SIZE).map(|i| (i * 13 % 251) as u8).collect();
    store.write(PARTITION, BLOB, PieceMeta { blob_size: BLOB_SIZE, ..Default::default() }, data.clone()).await.unwrap();
    let address = serve_on_loopback(Arc::new(DataService::new(store))).await.unwrap();
    Datanode { address, data, _dir: dir }
}

fn request(node: &Datanode, block: u64) -> CacheBlockRequest {
    CacheBlockRequest {
        partition_id: PARTITION,
        blob_id: BLOB,
        blob_size: BLOB_SIZE,
        codec: CODEC_REPLICA,
        block,
        block_size: BLOCK,
        members: vec![node.address.clone()],
        ..Default::default()
    }
}

fn expected(node: &Datanode, block: u64) -> Bytes {
    let start = block * BLOCK;
    node.data.slice(start as usize..(start + BLOCK).min(BLOB_SIZE) as usize)
}

fn options(dir: &std::path::Path, memory_blocks: u64, disk_blocks: u64) -> StoreOptions {
    StoreOptions {
        memory_bytes: memory_blocks * BLOCK,
        disk_dir: dir.to_path_buf(),
        disk_bytes: disk_blocks * BLOCK,
        block_size: BLOCK,
        identity: "test cluster".into(),
    }
}

fn key(block: u64) -> BlockKey {
    BlockKey { data_partition: PARTITION, blob_id: BLOB, block }
}

/// Waits for the background write of `block` to the disk level.
async fn on_disk(store: &CacheStore, block: u64) -> u64 {
    for _ in 0..200 {
        if let Some(offset) = store.disk_offset(&key(block)) {
            return offset;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("block {block} never reached the disk level");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_read_through_once_kept_checked_and_kept_across_restarts() {
    let node = datanode().await;
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(&options(dir.path(), 8, 32)).unwrap();

    // Many readers of one missing block at once: one load from the datanode.
    let wanted = request(&node, 3);
    let asks = (0..8).map(|_| store.block(&wanted));
    for answer in futures::future::join_all(asks).await {
        let (bytes, crc, _) = answer.unwrap();
        assert_eq!(bytes, expected(&node, 3));
        assert_eq!(crc, crc32fast::hash(&bytes));
    }
    assert_eq!(store.report().loads, 1, "concurrent misses share one load");
    let (_, _, source) = store.block(&request(&node, 3)).await.unwrap();
    assert_eq!(source, CacheSource::Memory);
    // The blob's last, short block.
    let (bytes, _, _) = store.block(&request(&node, BLOCKS - 1)).await.unwrap();
    assert_eq!(bytes, expected(&node, BLOCKS - 1));

    // From the disk level once memory lets go of it.
    let offset = on_disk(&store, 3).await;
    store.forget_in_memory(&key(3));
    let (bytes, _, source) = store.block(&request(&node, 3)).await.unwrap();
    assert_eq!((source, bytes), (CacheSource::Disk, expected(&node, 3)));

    // A byte rots on the cachenode's disk: found by the CRC, dropped, read again.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join(strata_blockcache::disk::cache_file_name(BLOCK)))
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset + 77).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], offset + 77).unwrap();
    store.forget_in_memory(&key(3));
    let (bytes, _, source) = store.block(&request(&node, 3)).await.unwrap();
    assert_eq!((source, bytes), (CacheSource::Datanodes, expected(&node, 3)), "damage is never served");
    assert_eq!(store.report().corrupt_blocks, 1);

    // A restart keeps what the disk level held.
    on_disk(&store, BLOCKS - 1).await;
    store.flush().await;
    drop(store);
    let store = CacheStore::open(&options(dir.path(), 8, 32)).unwrap();
    let (bytes, _, source) = store.block(&request(&node, BLOCKS - 1)).await.unwrap();
    assert_eq!((source, bytes), (CacheSource::Disk, expected(&node, BLOCKS - 1)));
    assert_eq!(store.report().loads, 0);

    // Bad requests get a clear error and load nothing.
    let past_end = store.block(&request(&node, BLOCKS)).await.unwrap_err();
    assert_eq!(past_end.code, strata_common::ErrorCode::InvalidRange, "{past_end}");
    let wrong_size = store.block(&CacheBlockRequest { block_size: 4096, ..request(&node, 0) }).await.unwrap_err();
    assert_eq!(wrong_size.code, strata_common::ErrorCode::InvalidArgument, "{wrong_size}");
    let no_members = store.block(&CacheBlockRequest { members: vec![], ..request(&node, 0) }).await.unwrap_err();
    assert_eq!(no_members.code, strata_common::ErrorCode::InvalidArgument, "{no_members}");
    assert_eq!(store.report().loads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_larger_than_the_cache_does_not_flush_the_hot_set() {
    let node = datanode().await;
    let dir = tempfile::tempdir().unwrap();
    // 8 blocks of memory, 12 of disk; a hot set of 4 read often.
    let store = CacheStore::open(&options(dir.path(), 8, 12)).unwrap();
    let hot = 0..4u64;
    let hot_hits = |from: Vec<CacheSource>| from.iter().filter(|s| **s != CacheSource::Datanodes).count();
    let mut sources = Vec::new();
    for round in 0..5 {
        for block in hot.clone() {
            let (bytes, _, source) = store.block(&request(&node, block)).await.unwrap();
            assert_eq!(bytes, expected(&node, block));
            if round == 4 {
                sources.push(source);
            }
        }
    }
    assert_eq!(hot_hits(sources), 4, "the hot set is held before the scan");
    for block in hot.clone() {
        on_disk(&store, block).await;
    }
    // One pass over the rest of the blob: 44 blocks, more than both levels hold.
    for block in 4..BLOCKS {
        let (bytes, _, _) = store.block(&request(&node, block)).await.unwrap();
        assert_eq!(bytes, expected(&node, block));
    }
    let report = store.report();
    assert!(report.rejected > 0, "once full, once-read blocks are turned away: {report:?}");
    let mut after = Vec::new();
    for block in hot.clone() {
        let (bytes, _, source) = store.block(&request(&node, block)).await.unwrap();
        assert_eq!(bytes, expected(&node, block));
        after.push(source);
    }
    assert_eq!(hot_hits(after.clone()), 4, "the hot set survives the scan: {after:?}");
}
