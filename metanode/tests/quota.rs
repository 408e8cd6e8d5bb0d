//! Directory quotas in one partition: the counters follow every change to
//! the quota's inodes exactly, a quota only goes on an empty directory,
//! subtrees and multiply-linked files do not move between quotas (a file
//! with one name does, with its bytes), and a leader refuses growth past a
//! limit given what other partitions use.

mod common;

use common::*;
use std::time::Instant;
use strata_common::ErrorCode;
use strata_metanode::extents::blob;
use strata_metanode::quota::{QuotaLimits, report};
use strata_proto::master::{Quota, QuotaLimit, QuotaUsage};
use strata_proto::meta::{meta_command::Op, tx_step::Step, *};

async fn make_root(ns: &mut Ns, dir: u64, quota: u64) -> strata_common::Result<Option<Inode>> {
    ns.run(0, Op::SetAttr(SetAttrOp { ino: dir, quota: Some(quota), ..Default::default() })).await
}

async fn grow(ns: &mut Ns, ino: u64, to: u64) -> strata_common::Result<Option<Inode>> {
    let extent = Extent { file_offset: 0, length: to, blob: Some(blob(7, ino, 0)) };
    ns.run(0, Op::WriteExtents(WriteExtentsOp { ino, extents: vec![extent] })).await
}

/// (bytes, inodes) of each quota the partition reports.
fn usage(ns: &Ns) -> Vec<(u64, u64, u64)> {
    report(&ns.kv()).unwrap().iter().map(|u| (u.root, u.bytes, u.inodes)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_creates_writes_truncates_and_removals() {
    let mut ns = Ns::new(None).await;
    let pvc = ns.mkdir(ROOT, "pvc").await.unwrap();
    make_root(&mut ns, pvc.ino, pvc.ino).await.unwrap();
    assert_eq!(ns.attr(pvc.ino).quota, pvc.ino);
    assert_eq!(usage(&ns), vec![(pvc.ino, 0, 1)], "the root counts itself");

    let sub = ns.mkdir(pvc.ino, "sub").await.unwrap();
    let f = ns.file(sub.ino, "f").await.unwrap();
    assert_eq!((sub.quota, f.quota), (pvc.ino, pvc.ino), "new inodes inherit their parent's quota");
    grow(&mut ns, f.ino, 5000).await.unwrap();
    assert_eq!(usage(&ns), vec![(pvc.ino, 5000, 3)]);

    ns.run(0, Op::SetAttr(SetAttrOp { ino: f.ino, size: Some(1000), ..Default::default() })).await.unwrap();
    assert_eq!(usage(&ns), vec![(pvc.ino, 1000, 3)], "a truncate gives bytes back");

    let outside = ns.file(ROOT, "outside").await.unwrap();
    grow(&mut ns, outside.ino, 777).await.unwrap();
    assert_eq!(usage(&ns), vec![(pvc.ino, 1000, 3)], "files outside the quota do not count");

    ns.unlink(sub.ino, "f", false).await.unwrap();
    assert_eq!(usage(&ns), vec![(pvc.ino, 1000, 3)], "an unlinked file still open keeps its space");
    ns.run(0, Op::Evict(EvictOp { ino: f.ino })).await.unwrap();
    assert_eq!(usage(&ns), vec![(pvc.ino, 0, 2)], "reclaimed, it gives it back");
    ns.unlink(pvc.ino, "sub", true).await.unwrap();
    make_root(&mut ns, pvc.ino, 0).await.unwrap();
    assert_eq!(usage(&ns), vec![], "an empty directory can leave its quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_go_on_empty_directories_and_entries_stay_inside_theirs() {
    let mut ns = Ns::new(None).await;
    let full = ns.mkdir(ROOT, "full").await.unwrap();
    ns.file(full.ino, "x").await.unwrap();
    assert_eq!(code(make_root(&mut ns, full.ino, full.ino).await), ErrorCode::FailedPrecondition);
    let f = ns.file(ROOT, "plain").await.unwrap();
    assert_eq!(code(make_root(&mut ns, f.ino, f.ino).await), ErrorCode::NotDir);
    let a = ns.mkdir(ROOT, "a").await.unwrap();
    assert_eq!(code(make_root(&mut ns, a.ino, full.ino).await), ErrorCode::InvalidArgument, "numbered by its root");
    make_root(&mut ns, a.ino, a.ino).await.unwrap();

    ns.file(a.ino, "in").await.unwrap();
    ns.mkdir(ROOT, "d").await.unwrap();
    assert_eq!(code(ns.rename(ROOT, "d", a.ino, "d", 0).await), ErrorCode::CrossQuota, "a subtree stays out");
    assert_eq!(code(ns.link(f.ino, a.ino, "hard").await), ErrorCode::CrossQuota);
    ns.link(f.ino, ROOT, "plain2").await.unwrap();
    let two_names = ns.rename(ROOT, "plain", a.ino, "plain", 0).await;
    assert_eq!(code(two_names), ErrorCode::CrossQuota, "a file whose other name stays out");
    ns.unlink(ROOT, "plain2", false).await.unwrap();
    grow(&mut ns, f.ino, 300).await.unwrap();
    ns.rename(ROOT, "plain", a.ino, "plain", 0).await.expect("a file with one name moves in");
    assert_eq!(ns.attr(f.ino).quota, a.ino);
    assert_eq!(usage(&ns), vec![(a.ino, 300, 3)], "its bytes came with it");
    ns.rename(a.ino, "in", ROOT, "out", 0).await.expect("and out");
    assert_eq!(ns.lookup(ROOT, "out").unwrap().quota, 0);
    let inner = ns.mkdir(a.ino, "inner").await.unwrap();
    ns.rename(a.ino, "plain", inner.ino, "moved", 0).await.expect("a move inside one quota");
    ns.rename(ROOT, "a", ROOT, "a2", 0).await.expect("the quota's root itself may be renamed");
    assert_eq!(usage(&ns), vec![(a.ino, 300, 3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_refuses_growth_past_a_limit_counting_other_partitions() {
    let mut ns = Ns::new(None).await;
    let pvc = ns.mkdir(ROOT, "pvc").await.unwrap();
    make_root(&mut ns, pvc.ino, pvc.ino).await.unwrap();
    let f = ns.file(pvc.ino, "f").await.unwrap();
    grow(&mut ns, f.ino, 600).await.unwrap();

    let limits = QuotaLimits::default();
    let set = |max_bytes, max_inodes, elsewhere_bytes| {
        limits.update(
            &[QuotaLimit {
                partition_id: PARTITION,
                quota: Some(Quota { root: pvc.ino, max_bytes, max_inodes }),
                elsewhere: Some(QuotaUsage { root: pvc.ino, bytes: elsewhere_bytes, inodes: 1 }),
            }],
            Instant::now(),
        );
    };
    let write_to = |end: u64| {
        let extent = Extent { file_offset: 0, length: end, blob: Some(blob(7, 1, 0)) };
        Op::WriteExtents(WriteExtentsOp { ino: f.ino, extents: vec![extent] })
    };
    let create = Op::Create(CreateOp { parent: pvc.ino, name: b"g".to_vec(), mode: REG | 0o644, ..Default::default() });
    let check = |op: &Op| limits.check(PARTITION, &ns.kv(), op).map_err(|e| e.code);

    assert_eq!(check(&write_to(5000)), Ok(()), "no limits known: nothing refused");
    set(1000, 0, 300);
    assert_eq!(check(&write_to(700)), Ok(()), "300 elsewhere + 700 here = 1000");
    assert_eq!(check(&write_to(701)), Err(ErrorCode::QuotaExceeded));
    assert_eq!(check(&write_to(400)), Ok(()), "an overwrite inside the file grows nothing");
    set(0, 4, 0);
    assert_eq!(check(&create), Ok(()), "1 elsewhere + 2 here + 1 new = 4");
    set(0, 3, 0);
    assert_eq!(check(&create), Err(ErrorCode::QuotaExceeded));
    let outside = Op::Create(CreateOp { parent: ROOT, name: b"h".to_vec(), mode: REG | 0o644, ..Default::default() });
    assert_eq!(check(&outside), Ok(()), "another quota's limits do not apply");
}

#[test]
fn a_leader_asks_the_master_about_a_quota_it_has_not_heard_of_once() {
    let limits = QuotaLimits::default();
    let quota = Quota { root: 40, max_bytes: 100, max_inodes: 0 };
    let new_inode = |quota| {
        let step = Step::NewInode(NewInode { mode: REG | 0o644, quota, ..Default::default() });
        Op::TxPrepare(TxPrepareOp { steps: vec![TxStep { step: Some(step) }], ..Default::default() })
    };
    let tag = Op::SetAttr(SetAttrOp { ino: 40, quota: Some(40), ..Default::default() });
    let untag = Op::SetAttr(SetAttrOp { ino: 40, quota: Some(0), ..Default::default() });

    assert!(limits.should_ask(PARTITION, &tag), "a directory becoming a root");
    assert!(limits.should_ask(PARTITION, &new_inode(40)), "a new inode under an unknown root");
    assert!(!limits.should_ask(PARTITION, &new_inode(0)), "no quota named");
    assert!(!limits.should_ask(PARTITION, &untag), "a root going away names none");

    let before_asking = Instant::now();
    limits.set_limits(PARTITION, &[], Instant::now());
    assert!(!limits.should_ask(PARTITION, &new_inode(40)), "the master was asked a moment ago");
    limits.set_limits(PARTITION, &[quota], Instant::now());
    assert!(!limits.should_ask(PARTITION, &new_inode(40)), "known now");

    // A heartbeat answer sent before the master was asked is older: it keeps nothing out.
    limits.update(&[], before_asking);
    assert!(!limits.should_ask(PARTITION, &new_inode(40)), "still known after an older heartbeat");
}
