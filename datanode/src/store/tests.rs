//! The store against real files and a real RocksDB in a temporary directory.

use std::os::unix::fs::{FileExt, MetadataExt};

use bytes::Bytes;
use strata_common::ErrorCode;
use strata_common::config::{RaftConfig, StoreConfig};

use super::record::{BLOCK_SIZE, PieceMeta};
use super::*;

fn config(segment_mb: u64) -> StoreConfig {
    StoreConfig { segment_size_mb: segment_mb, scrub_mb_per_sec: 0, compact_interval_secs: 3600, ..Default::default() }
}

fn open(dir: &Path, segment_mb: u64) -> Arc<Store> {
    Store::open(dir, &config(segment_mb), &RaftConfig::default()).unwrap()
}

fn pattern(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ranged_reads_return_the_written_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64);
    let data = pattern(1, 300_001);
    let meta = PieceMeta { blob_size: 300_001, ..Default::default() };
    store.write(5, 1, meta, data.clone()).await.unwrap();
    for (offset, length) in [(0, 300_001), (1, 10), (65_530, 20), (BLOCK_SIZE * 4, 50_000), (299_990, 100)] {
        let (bytes, location) = store.read(5, 1, offset, length).await.unwrap();
        let end = (offset + length).min(300_001) as usize;
        assert_eq!(bytes, data.slice(offset as usize..end), "range {offset}+{length}");
        assert_eq!(location.meta, meta);
    }
    assert!(store.read(5, 1, 300_001, 10).await.unwrap().0.is_empty());
    assert_eq!(store.read(5, 1, 300_002, 1).await.unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(store.read(5, 2, 0, 1).await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(store.read(6, 1, 0, 1).await.unwrap_err().code, ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_are_all_durable_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1);
    let writes = (0..40u64).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.write(1 + i % 3, i, PieceMeta::default(), pattern(i, 100_000)).await })
    });
    for w in writes {
        w.await.unwrap().unwrap();
    }
    let before = store.totals().unwrap();
    assert_eq!(before.blobs, 40);
    assert!(before.segments >= 4, "1 MiB segments hold at most 10 such blobs: {before:?}");
    drop(store);

    let store = open(dir.path(), 1);
    assert_eq!(store.totals().unwrap(), before);
    for i in 0..40u64 {
        assert_eq!(store.read(1 + i % 3, i, 0, u64::MAX).await.unwrap().0, pattern(i, 100_000));
    }
    let listed: Vec<u64> = store.list(2, 0, 100).unwrap().into_iter().map(|(b, _)| b).collect();
    assert_eq!(listed, (0..40).filter(|i| i % 3 == 1).collect::<Vec<_>>());
    assert_eq!(store.list(2, 4, 2).unwrap().iter().map(|(b, _)| *b).collect::<Vec<_>>(), vec![7, 10]);
    // More writes after the restart land in the resumed or a new segment.
    store.write(9, 1, PieceMeta::default(), pattern(99, 10)).await.unwrap();
    assert_eq!(store.read(9, 1, 0, 10).await.unwrap().0, pattern(99, 10));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_is_detected_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64);
    let data = pattern(7, 200_000);
    store.write(3, 42, PieceMeta::default(), data.clone()).await.unwrap();
    let location = store.location(3, 42).unwrap().unwrap();
    let path = files::segment_path(&[dir.path().join("disk0")], location.segment).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    // Damage the third block.
    let at = location.data_offset() + 2 * BLOCK_SIZE + 17;
    file.write_all_at(&[data[(2 * BLOCK_SIZE + 17) as usize] ^ 0x40], at).unwrap();
    file.sync_all().unwrap();

    // Blocks before the damage still read; a range touching it does not.
    assert_eq!(store.read(3, 42, 0, 2 * BLOCK_SIZE).await.unwrap().0, data.slice(..2 * BLOCK_SIZE as usize));
    let err = store.read(3, 42, 2 * BLOCK_SIZE + 100, 10).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Corrupted);
    assert_eq!(store.totals().unwrap().corrupt_blocks, 1);
    assert_eq!(store.bad_blobs(10).unwrap(), vec![(3, 42)]);

    // Rewriting the blob (what repair does) clears it.
    store.write(3, 42, PieceMeta::default(), data.clone()).await.unwrap();
    assert_eq!(store.read(3, 42, 0, u64::MAX).await.unwrap().0, data);
    assert!(store.bad_blobs(10).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_returns_the_space_of_deleted_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1);
    for i in 0..30u64 {
        store.write(1, i, PieceMeta::default(), pattern(i, 200_000)).await.unwrap();
    }
    let full = store.totals().unwrap();
    for i in 0..30u64 {
        if i % 5 != 0 {
            assert!(store.delete(1, i).await.unwrap());
        }
    }
    assert!(!store.delete(1, 1).await.unwrap(), "a second delete finds nothing");
    let deleted = store.totals().unwrap();
    assert_eq!(deleted.blobs, 6);
    assert_eq!(deleted.segment_bytes, full.segment_bytes, "deleting alone frees nothing");

    let compactor = store.clone();
    let compacted = tokio::task::spawn_blocking(move || compactor.compact_once(0.5)).await.unwrap().unwrap();
    assert!(compacted >= 4, "only {compacted} segments compacted");
    let after = store.totals().unwrap();
    // Left: the unsealed last segment (5 records, 4 of them dead; too small
    // to be sealed early) and the 5 live blobs moved out of the 5 sealed
    // ones: a third of the start.
    assert!(
        after.segment_bytes <= full.segment_bytes * 34 / 100,
        "segments still hold {} of {} bytes",
        after.segment_bytes,
        full.segment_bytes
    );
    assert_eq!(after.blobs, 6);
    let on_disk: u64 = std::fs::read_dir(dir.path().join("disk0/segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, after.segment_bytes, "segment files and bookkeeping agree");
    for i in (0..30u64).step_by(5) {
        assert_eq!(store.read(1, i, 0, u64::MAX).await.unwrap().0, pattern(i, 200_000));
    }
    assert_eq!(store.read(1, 1, 0, 1).await.unwrap_err().code, ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn scrub_finds_damage_nobody_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { scrub_mb_per_sec: 64, compact_interval_secs: 3600, ..Default::default() };
    let store = Store::open(dir.path(), &config, &RaftConfig::default()).unwrap();
    for i in 0..5u64 {
        store.write(2, i, PieceMeta::default(), pattern(i, 100_000)).await.unwrap();
    }
    let location = store.location(2, 3).unwrap().unwrap();
    let path = files::segment_path(&[dir.path().join("disk0")], location.segment).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&[0xff, 0xff, 0xff, 0xff], location.data_offset() + 99_990).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.bad_blobs(10).unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "scrub never found the damage");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(store.bad_blobs(10).unwrap(), vec![(2, 3)]);
    assert!(store.totals().unwrap().scrubbed_bytes >= 400_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mostly_dead_active_segment_is_sealed_and_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1024);
    for i in 0..20u64 {
        store.write(4, i, PieceMeta::default(), pattern(i, 1 << 20)).await.unwrap();
    }
    for i in 1..20u64 {
        store.delete(4, i).await.unwrap();
    }
    assert_eq!(store.totals().unwrap().segments, 1, "everything went to the active segment");
    // Damage the header of a dead record: compaction must still find the live one.
    let location = store.location(4, 0).unwrap().unwrap();
    let path = files::segment_path(&[dir.path().join("disk0")], location.segment).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&[0xee; 8], location.record_offset + location.record_len() + 8).unwrap();
    let compactor = store.clone();
    let compacted = tokio::task::spawn_blocking(move || compactor.compact_once(0.5)).await.unwrap().unwrap();
    assert_eq!(compacted, 1);
    let after = store.totals().unwrap();
    assert!(after.segment_bytes < 2 << 20, "{after:?}");
    assert_eq!(store.read(4, 0, 0, u64::MAX).await.unwrap().0, pattern(0, 1 << 20));
    store.write(4, 100, PieceMeta::default(), pattern(100, 10)).await.unwrap();
    assert_eq!(store.read(4, 100, 0, 10).await.unwrap().0, pattern(100, 10));
}

#[tokio::test(flavor = "multi_thread")]
async fn records_start_on_pages_and_a_store_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64);
    let sizes = [10usize, 100_000, 5000, 1 << 20, 1];
    for (i, len) in sizes.iter().enumerate() {
        store.write(3, i as u64, PieceMeta::default(), pattern(i as u64, *len)).await.unwrap();
    }
    let page = record::PAGE;
    for (i, len) in sizes.iter().enumerate() {
        let location = store.location(3, i as u64).unwrap().unwrap();
        assert_eq!(location.record_offset % page, 0, "blob {i} starts on a page");
        if *len as u64 >= record::ALIGNED_DATA_MIN {
            assert_eq!(location.data_offset() % page, 0, "blob {i}'s data starts on a page");
        }
        assert_eq!(store.read(3, i as u64, 0, u64::MAX).await.unwrap().0, pattern(i as u64, *len));
    }
    // Space ahead of the appends is reserved in one piece, past the file's size.
    let location = store.location(3, 0).unwrap().unwrap();
    let path = files::segment_path(&[dir.path().join("disk0")], location.segment).unwrap();
    let file = std::fs::metadata(path).unwrap();
    assert_eq!(file.len(), store.totals().unwrap().segment_bytes);
    assert!(file.blocks() * 512 >= 32 << 20, "{} bytes allocated", file.blocks() * 512);
    drop(store);

    // The index says the segments are of another format: the store is not opened.
    let db = strata_raftstore::open_db(&dir.path().join("index"), &RaftConfig::default()).unwrap();
    assert_eq!(db.get([keys::FORMAT]).unwrap().unwrap(), record::VERSION.to_be_bytes());
    db.put([keys::FORMAT], 1u16.to_be_bytes()).unwrap();
    drop(db);
    let Err(err) = Store::open(dir.path(), &config(64), &RaftConfig::default()) else {
        panic!("a store of format 1 was opened");
    };
    assert!(err.message.contains("format 1"), "{err}");
}

/// A small file system of `size` bytes mounted at `dir` (tmpfs), unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: u64) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs at {} (the tests run as root)", dir.display());
        SmallFs(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_with_no_space_and_takes_them_again_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _fs = SmallFs::mount(&disk, 8 << 20);
    let ballast = disk.join("ballast");
    std::fs::write(&ballast, vec![1u8; 3 << 20]).unwrap();
    let config = StoreConfig { data_dirs: vec![disk.clone()], ..config(64) };
    let store = Store::open(dir.path(), &config, &RaftConfig::default()).unwrap();

    let mut stored = 0u64;
    let err = loop {
        match store.write(1, stored, PieceMeta::default(), pattern(stored, 1 << 20)).await {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 8, "8 MiB of blobs went into a file system of 8 MiB");
    };
    assert_eq!(err.code, ErrorCode::NoSpace, "{err}");
    assert!(stored >= 2, "only {stored} blobs fitted");
    // Past a probe of the disk: full, not failed.
    tokio::time::sleep(health::PROBE_EVERY * 2).await;
    assert!(!store.shared.health.is_failed(0), "a full disk was taken for a failed one");
    for i in 0..stored {
        assert_eq!(store.read(1, i, 0, u64::MAX).await.unwrap().0, pattern(i, 1 << 20));
    }
    std::fs::remove_file(&ballast).unwrap();
    store.write(1, stored, PieceMeta::default(), pattern(stored, 1 << 20)).await.unwrap();
    assert_eq!(store.read(1, stored, 0, u64::MAX).await.unwrap().0, pattern(stored, 1 << 20));
}

/// A crash between the segment's fsync and the index commit (failpoint):
/// the write is not acknowledged, and after a restart the blob is absent, the
/// blobs acknowledged before are all there and new writes work.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn failpoint_between_data_sync_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64);
    store.write(1, 1, PieceMeta::default(), pattern(1, 100_000)).await.unwrap();
    fail::cfg("datanode::between_data_sync_and_index", &format!("return({})", dir.path().display())).unwrap();
    let lost = store.write(1, 2, PieceMeta::default(), pattern(2, 100_000)).await;
    fail::remove("datanode::between_data_sync_and_index");
    assert!(lost.is_err(), "a write whose index did not commit is not acknowledged");
    let before = store.totals().unwrap();
    store.shutdown();
    drop(store);

    let store = open(dir.path(), 64);
    assert_eq!(store.read(1, 1, 0, u64::MAX).await.unwrap().0, pattern(1, 100_000));
    assert_eq!(store.read(1, 2, 0, 1).await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(store.totals().unwrap().blobs, before.blobs, "only acknowledged blobs are counted");
    store.write(1, 2, PieceMeta::default(), pattern(3, 50_000)).await.unwrap();
    assert_eq!(store.read(1, 2, 0, u64::MAX).await.unwrap().0, pattern(3, 50_000));
    assert!(store.bad_blobs(10).unwrap().is_empty());
}
