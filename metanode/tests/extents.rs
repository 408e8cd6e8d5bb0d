//! Conformance of the extent map: append, overwrite (newest wins), sparse
//! holes, truncate, and reclamation with the inode.

mod common;

use common::*;
use strata_common::ErrorCode;
use strata_metanode::extents::{self, MAX_EXTENT, blob};
use strata_proto::meta::{meta_command::Op, *};

fn ext(file_offset: u64, length: u64, blob_id: u64, blob_offset: u64) -> Extent {
    Extent { file_offset, length, blob: Some(blob(7, blob_id, blob_offset)) }
}

/// (file offset, length, blob id, blob offset) of what `read` returns.
fn layout(ns: &Ns, ino: u64, offset: u64, length: u64) -> Vec<(u64, u64, u64, u64)> {
    extents::read(&ns.kv(), ino, offset, length)
        .unwrap()
        .iter()
        .map(|e| (e.file_offset, e.length, e.blob.unwrap().blob_id, e.blob.unwrap().offset))
        .collect()
}

async fn write(ns: &mut Ns, ino: u64, extents: Vec<Extent>) -> strata_common::Result<Inode> {
    ns.run(0, Op::WriteExtents(WriteExtentsOp { ino, extents })).await.map(Option::unwrap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_overwrites_resolve_newest_wins() {
    let mut ns = Ns::new(None).await;
    let f = ns.file(ROOT, "f").await.unwrap();
    // append two pieces
    write(&mut ns, f.ino, vec![ext(0, 100, 1, 0)]).await.unwrap();
    let grown = write(&mut ns, f.ino, vec![ext(100, 100, 2, 0)]).await.unwrap();
    assert_eq!(grown.size, 200);
    assert!(grown.mtime_ns > f.mtime_ns);
    assert_eq!(layout(&ns, f.ino, 0, 1000), vec![(0, 100, 1, 0), (100, 100, 2, 0)]);
    // overwrite the middle of the first: it splits around the new piece
    write(&mut ns, f.ino, vec![ext(40, 20, 3, 5)]).await.unwrap();
    assert_eq!(layout(&ns, f.ino, 0, 1000), vec![(0, 40, 1, 0), (40, 20, 3, 5), (60, 40, 1, 60), (100, 100, 2, 0)]);
    // a write spanning several pieces replaces all it covers
    write(&mut ns, f.ino, vec![ext(30, 100, 4, 0)]).await.unwrap();
    assert_eq!(layout(&ns, f.ino, 0, 1000), vec![(0, 30, 1, 0), (30, 100, 4, 0), (130, 70, 2, 30)]);
    // reads are clipped to the asked range
    assert_eq!(layout(&ns, f.ino, 25, 10), vec![(25, 5, 1, 25), (30, 5, 4, 0)]);
    // extents in one command apply in order: the later one wins where they overlap
    write(&mut ns, f.ino, vec![ext(0, 50, 5, 0), ext(10, 10, 6, 0)]).await.unwrap();
    assert_eq!(layout(&ns, f.ino, 0, 60), vec![(0, 10, 5, 0), (10, 10, 6, 0), (20, 30, 5, 20), (50, 10, 4, 20)]);
    assert_eq!(ns.get(f.ino).unwrap().size, 200, "overwrites inside the file keep its size");
    assert_eq!(strata_metanode::read::stats(&ns.kv(), 0).unwrap().data_bytes, 200, "statfs usage follows sizes");
    let op = SetAttrOp { ino: f.ino, size: Some(50), ..Default::default() };
    ns.run(0, Op::SetAttr(op)).await.unwrap();
    ns.unlink(ROOT, "f", false).await.unwrap();
    assert_eq!(strata_metanode::read::stats(&ns.kv(), 0).unwrap().data_bytes, 50, "unlinked but open still counts");
    ns.run(0, Op::Evict(EvictOp { ino: f.ino })).await.unwrap();
    assert_eq!(strata_metanode::read::stats(&ns.kv(), 0).unwrap().data_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_files_have_holes_and_truncate_trims() {
    let mut ns = Ns::new(None).await;
    let f = ns.file(ROOT, "sparse").await.unwrap();
    // a piece far beyond the end: everything before it is a hole
    let big = write(&mut ns, f.ino, vec![ext(5 << 30, 4096, 1, 0)]).await.unwrap();
    assert_eq!(big.size, (5 << 30) + 4096, "files beyond 4 GiB");
    assert_eq!(layout(&ns, f.ino, 0, 5 << 30), vec![], "a hole has no extents");
    write(&mut ns, f.ino, vec![ext(0, 1000, 2, 0)]).await.unwrap();
    // truncate inside the first piece: it is cut, the far one is dropped
    let op = SetAttrOp { ino: f.ino, size: Some(600), ..Default::default() };
    assert_eq!(ns.run(0, Op::SetAttr(op)).await.unwrap().unwrap().size, 600);
    assert_eq!(layout(&ns, f.ino, 0, u64::MAX), vec![(0, 600, 2, 0)]);
    // growing again by truncate leaves a hole (reads as zeros)
    let op = SetAttrOp { ino: f.ino, size: Some(10_000), ..Default::default() };
    ns.run(0, Op::SetAttr(op)).await.unwrap();
    assert_eq!(layout(&ns, f.ino, 0, u64::MAX), vec![(0, 600, 2, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_extents_are_refused_and_data_goes_with_the_inode() {
    let mut ns = Ns::new(None).await;
    let f = ns.file(ROOT, "f").await.unwrap();
    let d = ns.mkdir(ROOT, "d").await.unwrap();
    assert_eq!(write(&mut ns, d.ino, vec![ext(0, 1, 1, 0)]).await.unwrap_err().code, ErrorCode::IsDir);
    assert_eq!(write(&mut ns, f.ino, vec![ext(0, 0, 1, 0)]).await.unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(
        write(&mut ns, f.ino, vec![ext(0, MAX_EXTENT + 1, 1, 0)]).await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    let no_blob = Extent { file_offset: 0, length: 1, blob: None };
    assert_eq!(write(&mut ns, f.ino, vec![no_blob]).await.unwrap_err().code, ErrorCode::InvalidArgument);
    // a refused command changed nothing
    assert_eq!(ns.get(f.ino).unwrap().size, 0);
    // a long file's pieces: more than one scan page
    let pieces: Vec<Extent> = (0..3000).map(|i| ext(i * 10, 10, 100 + i, 0)).collect();
    write(&mut ns, f.ino, pieces).await.unwrap();
    assert_eq!(layout(&ns, f.ino, 0, u64::MAX).len(), 3000);
    write(&mut ns, f.ino, vec![ext(5, 29_990, 9, 0)]).await.unwrap();
    assert_eq!(layout(&ns, f.ino, 0, u64::MAX), vec![(0, 5, 100, 0), (5, 29_990, 9, 0), (29_995, 5, 2_999 + 100, 5)]);
    // unlink + last close reclaims the inode and its extents
    ns.unlink(ROOT, "f", false).await.unwrap();
    assert_eq!(layout(&ns, f.ino, 0, u64::MAX).len(), 3, "still readable while open");
    ns.run(0, Op::Evict(EvictOp { ino: f.ino })).await.unwrap();
    assert!(layout(&ns, f.ino, 0, u64::MAX).is_empty());
}

/// Blob ids queued as freed, in order.
fn freed(ns: &Ns) -> Vec<u64> {
    let mut ids: Vec<u64> =
        strata_metanode::gc::due(&ns.kv(), &[], i64::MAX, 10_000).unwrap().iter().map(|f| f.blob_id).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_freed_when_the_last_extent_using_them_goes() {
    let mut ns = Ns::new(None).await;
    let f = ns.file(ROOT, "f").await.unwrap();
    write(&mut ns, f.ino, vec![ext(0, 100, 1, 0), ext(100, 100, 2, 0)]).await.unwrap();
    // Splitting blob 1 around an overwrite keeps it referenced twice.
    write(&mut ns, f.ino, vec![ext(40, 20, 3, 0)]).await.unwrap();
    assert!(freed(&ns).is_empty());
    // Covering both remaining pieces of blob 1 frees it; blob 3 goes with it.
    write(&mut ns, f.ino, vec![ext(0, 100, 4, 0)]).await.unwrap();
    assert_eq!(freed(&ns), vec![1, 3]);
    // A rewrite in one command that drops and re-adds the same blob keeps it.
    write(&mut ns, f.ino, vec![ext(0, 100, 5, 0), ext(0, 50, 4, 0)]).await.unwrap();
    assert_eq!(freed(&ns), vec![1, 3], "blob 4 still holds bytes 0..50");
    // Truncating below blob 2 frees it.
    let op = SetAttrOp { ino: f.ino, size: Some(100), ..Default::default() };
    ns.run(0, Op::SetAttr(op)).await.unwrap();
    assert_eq!(freed(&ns), vec![1, 2, 3]);
    // The leader forgets what it deleted; the queue only holds the rest.
    let queued = strata_metanode::gc::due(&ns.kv(), &[], i64::MAX, 10).unwrap();
    let first_two: Vec<Vec<u8>> = queued.iter().take(2).map(|f| f.key.clone()).collect();
    ns.run(0, Op::DropFreed(DropFreedOp { keys: first_two })).await.unwrap();
    assert_eq!(strata_metanode::gc::queued(&ns.kv(), 10).unwrap(), 1);
    // Reclaiming the inode frees everything it still used.
    ns.unlink(ROOT, "f", false).await.unwrap();
    ns.run(0, Op::Evict(EvictOp { ino: f.ino })).await.unwrap();
    let left = freed(&ns);
    assert!(left.contains(&4) && left.contains(&5), "{left:?}");
    // Grace: nothing freed after a point in time is due before it.
    let now = queued.last().unwrap().freed_at_ns;
    assert!(strata_metanode::gc::due(&ns.kv(), &[], now, 10).unwrap().iter().all(|f| f.freed_at_ns < now));
}
