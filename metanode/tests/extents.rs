//! Conformance of the extent map: append, overwrite (newest wins), sparse
//! holes, truncate, and reclamation with the inode.

mod common;

use common::*;
use strata_common::ErrorCode;
use strata_metanode::extents::{self, CHUNK, MAX_EXTENT, blob};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_shared_by_two_files_lives_until_both_let_go() {
    let mut ns = Ns::new(None).await;
    let part = ns.file(ROOT, "part").await.unwrap();
    let whole = ns.file(ROOT, "whole").await.unwrap();
    write(&mut ns, part.ino, vec![ext(0, 100, 1, 0)]).await.unwrap();
    // The part's extents referenced at an offset of another file (a splice).
    write(&mut ns, whole.ino, vec![ext(500, 100, 1, 0)]).await.unwrap();
    ns.unlink(ROOT, "part", false).await.unwrap();
    ns.run(0, Op::Evict(EvictOp { ino: part.ino })).await.unwrap();
    assert!(freed(&ns).is_empty(), "the whole file still holds blob 1");
    assert_eq!(layout(&ns, whole.ino, 0, u64::MAX), vec![(500, 100, 1, 0)]);
    // Freed, then referenced again from an extent map read before the free
    // committed: the queue entry stays but is marked, and is never deleted.
    write(&mut ns, whole.ino, vec![ext(500, 100, 2, 0)]).await.unwrap();
    assert_eq!(freed(&ns), vec![1]);
    write(&mut ns, whole.ino, vec![ext(0, 100, 1, 0)]).await.unwrap();
    let queued = strata_metanode::gc::due(&ns.kv(), &[], i64::MAX, 10).unwrap();
    assert_eq!(queued.len(), 1);
    assert!(queued[0].referenced, "blob 1 is in use again: the collector must not delete it");
}

/// What a file's bytes map to, 4 KiB at a time: (blob id, blob offset).
fn cells(ns: &Ns, ino: u64, cells: usize) -> Vec<Option<(u64, u64)>> {
    let mut out = vec![None; cells];
    for (offset, length, blob, blob_offset) in layout(ns, ino, 0, u64::MAX) {
        assert!(offset % 4096 == 0 && length % 4096 == 0, "pieces stay on the 4 KiB grid");
        for i in 0..length / 4096 {
            out[(offset / 4096 + i) as usize] = Some((blob, blob_offset + i * 4096));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extents_across_chunks_match_a_model_and_overwrites_keep_one_key_per_chunk() {
    let mut ns = Ns::new(None).await;
    let f = ns.file(ROOT, "f").await.unwrap();
    let chunk_keys = |ns: &Ns| extents::stored_chunks(&ns.kv(), f.ino).unwrap();
    // One extent over ten chunk boundaries: stored in pieces, read back whole.
    let start = CHUNK / 2;
    write(&mut ns, f.ino, vec![ext(start, 10 * CHUNK, 1, 0)]).await.unwrap();
    assert_eq!(layout(&ns, f.ino, 0, u64::MAX), vec![(start, 10 * CHUNK, 1, 0)]);
    assert_eq!(layout(&ns, f.ino, CHUNK, CHUNK), vec![(CHUNK, CHUNK, 1, CHUNK - start)]);
    assert_eq!(chunk_keys(&ns), 11);

    // Random overwrites, punches and a truncate against a model of 4 KiB cells.
    let total = (11 * CHUNK / 4096) as usize;
    let mut model: Vec<Option<(u64, u64)>> = vec![None; total];
    for i in 0..(10 * CHUNK / 4096) as usize {
        model[(start / 4096) as usize + i] = Some((1, i as u64 * 4096));
    }
    let mut seed = 20261130u64;
    let mut next = |below: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % below
    };
    for i in 0..300u64 {
        let cell = next(total as u64 - 64);
        let cells_long = 1 + next(63);
        let (offset, length) = (cell * 4096, cells_long * 4096);
        if i % 10 == 9 {
            ns.run(0, Op::PunchHole(PunchHoleOp { ino: f.ino, offset, length })).await.unwrap();
            model[cell as usize..(cell + cells_long) as usize].fill(None);
        } else {
            write(&mut ns, f.ino, vec![ext(offset, length, 100 + i, 8192)]).await.unwrap();
            for c in 0..cells_long {
                model[(cell + c) as usize] = Some((100 + i, 8192 + c * 4096));
            }
        }
    }
    assert_eq!(cells(&ns, f.ino, total), model);
    assert!(chunk_keys(&ns) <= 11, "overwrites rewrite chunk keys, they add none");
    let cut_at = 5 * CHUNK + 3 * 4096;
    let op = SetAttrOp { ino: f.ino, size: Some(cut_at), ..Default::default() };
    ns.run(0, Op::SetAttr(op)).await.unwrap();
    model[(cut_at / 4096) as usize..].fill(None);
    assert_eq!(cells(&ns, f.ino, total), model);
    assert_eq!(chunk_keys(&ns), 6, "a truncate drops the chunks past the new end");

    // Reclaiming the inode frees every blob it referenced, in any piece.
    ns.unlink(ROOT, "f", false).await.unwrap();
    ns.run(0, Op::Evict(EvictOp { ino: f.ino })).await.unwrap();
    assert_eq!(chunk_keys(&ns), 0);
    let left = freed(&ns);
    let used: std::collections::BTreeSet<u64> = model.iter().flatten().map(|(blob, _)| *blob).collect();
    assert!(used.iter().all(|blob| left.contains(blob)), "{used:?} not all in {left:?}");
}
