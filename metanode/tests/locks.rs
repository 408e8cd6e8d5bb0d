//! Conformance of fcntl byte-range locks and flock, held under expiring sessions.

mod common;

use common::*;
use strata_common::ErrorCode;
use strata_metanode::locks;
use strata_proto::meta::{meta_command::Op, *};

const SECOND: i64 = 1_000_000_000;

fn lock(ino: u64, session: u64, owner: u64, kind: LockKind, start: u64, end: u64) -> LockOp {
    LockOp { ino, session, owner, pid: owner as u32, kind: kind as i32, start, end, flock: false }
}

async fn setup() -> (Ns, u64) {
    let mut ns = Ns::new(None).await;
    let f = ns.file(ROOT, "f").await.unwrap();
    for session in [1, 2] {
        ns.run(0, Op::RenewSession(RenewSessionOp { session, lease_ns: 30 * SECOND })).await.unwrap();
    }
    (ns, f.ino)
}

fn held(ns: &Ns, ino: u64) -> Vec<(u64, u64, i32, u64, u64)> {
    let mut all: Vec<_> = locks::locks_on(&ns.kv(), ino)
        .unwrap()
        .into_iter()
        .map(|l| (l.session, l.owner, l.kind, l.start, l.end))
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_writers_exclude() {
    let (mut ns, f) = setup().await;
    ns.run(0, Op::Lock(lock(f, 1, 10, LockKind::Read, 0, 100))).await.unwrap();
    ns.run(0, Op::Lock(lock(f, 2, 20, LockKind::Read, 50, 150))).await.unwrap();
    let err = ns.run(0, Op::Lock(lock(f, 2, 20, LockKind::Write, 90, 95))).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::WouldBlock);
    // F_GETLK names the lock in the way
    let blocking = locks::conflict(&ns.kv(), &lock(f, 2, 21, LockKind::Write, 0, 10)).unwrap().unwrap();
    assert_eq!((blocking.session, blocking.owner, blocking.start, blocking.end), (1, 10, 0, 100));
    assert!(locks::conflict(&ns.kv(), &lock(f, 2, 21, LockKind::Write, 150, 200)).unwrap().is_none());
    // releasing lets the writer in
    ns.run(0, Op::Lock(lock(f, 1, 10, LockKind::Unlock, 0, 100))).await.unwrap();
    ns.run(0, Op::Lock(lock(f, 2, 20, LockKind::Write, 90, 95))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_locks_split_and_convert() {
    let (mut ns, f) = setup().await;
    let read = LockKind::Read as i32;
    let write = LockKind::Write as i32;
    ns.run(0, Op::Lock(lock(f, 1, 10, LockKind::Read, 0, 100))).await.unwrap();
    // upgrading the middle splits the read lock in three
    ns.run(0, Op::Lock(lock(f, 1, 10, LockKind::Write, 40, 60))).await.unwrap();
    assert_eq!(held(&ns, f), vec![(1, 10, read, 0, 40), (1, 10, read, 60, 100), (1, 10, write, 40, 60)]);
    // unlocking a range that spans pieces trims them
    ns.run(0, Op::Lock(lock(f, 1, 10, LockKind::Unlock, 30, 70))).await.unwrap();
    assert_eq!(held(&ns, f), vec![(1, 10, read, 0, 30), (1, 10, read, 70, 100)]);
    // to end of file
    ns.run(0, Op::Lock(lock(f, 1, 10, LockKind::Write, 200, u64::MAX))).await.unwrap();
    let err = ns.run(0, Op::Lock(lock(f, 2, 20, LockKind::Read, 1 << 40, (1 << 40) + 1))).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::WouldBlock);
    assert_eq!(
        ns.run(0, Op::Lock(lock(f, 1, 10, LockKind::Read, 5, 5))).await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flock_and_posix_locks_are_separate() {
    let (mut ns, f) = setup().await;
    let flock = |session, owner, kind: LockKind| LockOp {
        ino: f,
        session,
        owner,
        pid: 1,
        kind: kind as i32,
        start: 0,
        end: 0,
        flock: true,
    };
    ns.run(0, Op::Lock(flock(1, 10, LockKind::Write))).await.unwrap();
    assert_eq!(ns.run(0, Op::Lock(flock(2, 20, LockKind::Read))).await.unwrap_err().code, ErrorCode::WouldBlock);
    // a POSIX write lock of another owner does not see the flock
    ns.run(0, Op::Lock(lock(f, 2, 20, LockKind::Write, 0, 10))).await.unwrap();
    ns.run(0, Op::Lock(flock(1, 10, LockKind::Unlock))).await.unwrap();
    ns.run(0, Op::Lock(flock(2, 20, LockKind::Read))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_ended_sessions_lose_their_locks() {
    let (mut ns, f) = setup().await;
    ns.run(0, Op::RenewSession(RenewSessionOp { session: 3, lease_ns: SECOND })).await.unwrap();
    ns.run(0, Op::Lock(lock(f, 3, 30, LockKind::Write, 0, 10))).await.unwrap();
    ns.run(0, Op::Lock(lock(f, 1, 10, LockKind::Write, 20, 30))).await.unwrap();
    assert!(!locks::has_expired_sessions(&ns.kv(), ns.clock).unwrap());
    // the lease of session 3 runs out (the commands carry the leader's clock)
    ns.clock += 2 * SECOND;
    assert!(locks::has_expired_sessions(&ns.kv(), ns.clock).unwrap());
    ns.run(0, Op::ExpireSessions(ExpireSessionsOp {})).await.unwrap();
    assert_eq!(held(&ns, f), vec![(1, 10, LockKind::Write as i32, 20, 30)], "only session 1's lock is left");
    // an expired session cannot take new locks
    let err = ns.run(0, Op::Lock(lock(f, 3, 30, LockKind::Read, 0, 10))).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    // ending a session releases at once
    ns.run(0, Op::EndSession(EndSessionOp { session: 1 })).await.unwrap();
    assert!(held(&ns, f).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaiming_an_inode_drops_its_locks() {
    let (mut ns, f) = setup().await;
    ns.run(0, Op::Lock(lock(f, 1, 10, LockKind::Write, 0, 10))).await.unwrap();
    ns.unlink(ROOT, "f", false).await.unwrap();
    assert_eq!(held(&ns, f).len(), 1, "an unlinked but open file keeps its locks");
    ns.run(0, Op::Evict(EvictOp { ino: f })).await.unwrap();
    assert!(held(&ns, f).is_empty());
    ns.run(0, Op::EndSession(EndSessionOp { session: 1 })).await.unwrap();
}
