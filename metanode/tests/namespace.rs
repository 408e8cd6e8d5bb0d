//! Conformance of the namespace operations: each command proposed through a
//! real raft engine and applied by the real state machine on RocksDB; reads
//! through the same functions the metanode serves them with.

mod common;

use common::*;
use strata_common::ErrorCode;
use strata_metanode::read;
use strata_proto::meta::{meta_command::Op, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_exists_and_init_is_idempotent() {
    let mut ns = Ns::new(None).await;
    let root = ns.attr(ROOT);
    assert_eq!((root.mode, root.nlink), (DIR | 0o755, 2));
    ns.run(0, Op::Init(InitPartition { volume_id: 1, inode_start: 1, inode_end: None })).await.unwrap();
    assert_eq!(read::stats(&ns.kv(), 0).unwrap().inode_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_every_file_type_with_posix_errors() {
    let mut ns = Ns::new(None).await;
    let d = ns.mkdir(ROOT, "d").await.unwrap();
    assert_eq!((d.nlink, d.parent), (2, ROOT));
    assert_eq!(ns.attr(ROOT).nlink, 3, "a subdirectory links its parent");
    let f = ns.file(d.ino, "f").await.unwrap();
    assert_eq!((f.nlink, f.uid, f.gid, f.size), (1, 1000, 100, 0));
    assert_eq!(ns.lookup(d.ino, "f").unwrap(), f);
    assert_eq!(ns.attr(d.ino).mtime_ns, f.ctime_ns, "creating touches the parent");

    let op = CreateOp {
        parent: ROOT,
        name: "l".into(),
        mode: libc::S_IFLNK | 0o777,
        symlink_target: b"d/f".to_vec(),
        ..Default::default()
    };
    let l = ns.run(0, Op::Create(op)).await.unwrap().unwrap();
    assert_eq!(l.size, 3);
    assert_eq!(read::readlink(&ns.kv(), l.ino).unwrap(), b"d/f");
    for (name, mode, rdev) in [
        ("fifo", libc::S_IFIFO, 0),
        ("sock", libc::S_IFSOCK, 0),
        ("chr", libc::S_IFCHR, 0x0103),
        ("blk", libc::S_IFBLK, 0x0801),
    ] {
        let op = CreateOp { parent: ROOT, name: name.into(), mode: mode | 0o600, rdev, ..Default::default() };
        let inode = ns.run(0, Op::Create(op)).await.unwrap().unwrap();
        assert_eq!((inode.mode & libc::S_IFMT, inode.rdev), (mode, rdev));
    }

    assert_eq!(code(ns.file(d.ino, "f").await), ErrorCode::AlreadyExists);
    assert_eq!(code(ns.mkdir(d.ino, "f").await), ErrorCode::AlreadyExists);
    assert_eq!(code(ns.file(999, "x").await), ErrorCode::NotFound);
    assert_eq!(code(ns.file(f.ino, "x").await), ErrorCode::NotDir);
    assert_eq!(code(ns.file(ROOT, &"n".repeat(256)).await), ErrorCode::NameTooLong);
    ns.file(ROOT, &"n".repeat(255)).await.unwrap();
    assert_eq!(code(ns.file(ROOT, "a/b").await), ErrorCode::InvalidArgument);
    assert_eq!(code(ns.file(ROOT, "..").await), ErrorCode::InvalidArgument);
    let empty_link = CreateOp { parent: ROOT, name: "bad".into(), mode: libc::S_IFLNK | 0o777, ..Default::default() };
    assert_eq!(code(ns.run(0, Op::Create(empty_link)).await), ErrorCode::NotFound);
    assert_eq!(code(ns.lookup(ROOT, "missing")), ErrorCode::NotFound);
    assert_eq!(code(ns.lookup(f.ino, "x")), ErrorCode::NotDir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setgid_directories_pass_their_group_down() {
    let mut ns = Ns::new(None).await;
    let op = CreateOp {
        parent: ROOT,
        name: "shared".into(),
        mode: DIR | libc::S_ISGID | 0o775,
        uid: 5,
        gid: 77,
        ..Default::default()
    };
    let shared = ns.run(0, Op::Create(op)).await.unwrap().unwrap();
    let f = ns.file(shared.ino, "f").await.unwrap();
    assert_eq!(f.gid, 77);
    let sub = ns.mkdir(shared.ino, "sub").await.unwrap();
    assert_eq!((sub.gid, sub.mode & libc::S_ISGID), (77, libc::S_ISGID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_rmdir_orphans_and_evict() {
    let mut ns = Ns::new(None).await;
    let d = ns.mkdir(ROOT, "d").await.unwrap();
    let f = ns.file(d.ino, "f").await.unwrap();
    assert_eq!(code(ns.unlink(ROOT, "d", true).await), ErrorCode::NotEmpty);
    assert_eq!(code(ns.unlink(ROOT, "d", false).await), ErrorCode::IsDir);
    assert_eq!(code(ns.unlink(d.ino, "f", true).await), ErrorCode::NotDir);
    assert_eq!(code(ns.unlink(d.ino, "nope", false).await), ErrorCode::NotFound);
    assert_eq!(code(ns.unlink(ROOT, ".", true).await), ErrorCode::InvalidArgument);

    let gone = ns.unlink(d.ino, "f", false).await.unwrap();
    assert_eq!(gone.nlink, 0);
    assert_eq!(read::orphans(&ns.kv(), 10).unwrap().iter().map(|o| o.0).collect::<Vec<_>>(), vec![f.ino]);
    assert!(ns.get(f.ino).is_some(), "an unlinked file stays until its last close");
    ns.run(0, Op::Evict(EvictOp { ino: f.ino })).await.unwrap();
    assert!(ns.get(f.ino).is_none());
    assert!(read::orphans(&ns.kv(), 10).unwrap().is_empty());

    ns.unlink(ROOT, "d", true).await.unwrap();
    assert!(ns.get(d.ino).is_none());
    assert_eq!(ns.attr(ROOT).nlink, 2);
    assert_eq!(read::stats(&ns.kv(), 0).unwrap().inode_count, 1, "only the root is left");
    assert_eq!(code(ns.file(d.ino, "late").await), ErrorCode::NotFound, "no creating in a removed directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_unlink_reclaims_only_the_last_link_in_one_command() {
    let mut ns = Ns::new(None).await;
    let evicting =
        |parent, name: &str| Op::Unlink(UnlinkOp { parent, name: name.into(), directory: false, evict: true });
    let f = ns.file(ROOT, "f").await.unwrap();
    ns.link(f.ino, ROOT, "g").await.unwrap();
    let still_linked = ns.run(0, evicting(ROOT, "f")).await.unwrap().unwrap();
    assert_eq!(still_linked.nlink, 1);
    assert!(ns.get(f.ino).is_some(), "a file with a link left is kept");
    let last = ns.run(0, evicting(ROOT, "g")).await.unwrap().unwrap();
    assert_eq!((last.ino, last.nlink), (f.ino, 0));
    assert!(ns.get(f.ino).is_none(), "the last link's unlink reclaimed the inode");
    assert!(read::orphans(&ns.kv(), 10).unwrap().is_empty(), "and left no orphan behind");
    assert_eq!(read::stats(&ns.kv(), 0).unwrap().inode_count, 1, "only the root is left");
    let d = ns.mkdir(ROOT, "d").await.unwrap();
    let rmdir = Op::Unlink(UnlinkOp { parent: ROOT, name: "d".into(), directory: true, evict: true });
    ns.run(0, rmdir).await.unwrap();
    assert!(ns.get(d.ino).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_count() {
    let mut ns = Ns::new(None).await;
    let f = ns.file(ROOT, "f").await.unwrap();
    let d = ns.mkdir(ROOT, "d").await.unwrap();
    assert_eq!(ns.link(f.ino, d.ino, "g").await.unwrap().nlink, 2);
    assert_eq!(ns.lookup(d.ino, "g").unwrap().ino, f.ino);
    assert_eq!(code(ns.link(f.ino, ROOT, "d").await), ErrorCode::AlreadyExists);
    assert_eq!(code(ns.link(d.ino, ROOT, "dlink").await), ErrorCode::NotPermitted);
    assert_eq!(ns.unlink(ROOT, "f", false).await.unwrap().nlink, 1);
    assert!(read::orphans(&ns.kv(), 10).unwrap().is_empty(), "still linked, not an orphan");
    assert_eq!(ns.unlink(d.ino, "g", false).await.unwrap().nlink, 0);
    assert_eq!(code(ns.link(f.ino, ROOT, "back").await), ErrorCode::NotFound, "no linking an unlinked inode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rules() {
    let mut ns = Ns::new(None).await;
    let a = ns.mkdir(ROOT, "a").await.unwrap();
    let b = ns.mkdir(ROOT, "b").await.unwrap();
    let f = ns.file(a.ino, "f").await.unwrap();
    let g = ns.file(b.ino, "g").await.unwrap();

    // plain move across directories
    ns.rename(a.ino, "f", b.ino, "f2", 0).await.unwrap();
    assert_eq!(ns.lookup(b.ino, "f2").unwrap().ino, f.ino);
    assert_eq!(code(ns.lookup(a.ino, "f")), ErrorCode::NotFound);
    // over an existing file: the target loses its link
    ns.rename(b.ino, "f2", b.ino, "g", 0).await.unwrap();
    assert_eq!(ns.lookup(b.ino, "g").unwrap().ino, f.ino);
    assert_eq!(ns.get(g.ino).unwrap().nlink, 0);
    // RENAME_NOREPLACE
    ns.file(b.ino, "h").await.unwrap();
    assert_eq!(code(ns.rename(b.ino, "g", b.ino, "h", 1).await), ErrorCode::AlreadyExists);
    // RENAME_EXCHANGE swaps a file and a directory between parents
    let sub = ns.mkdir(a.ino, "sub").await.unwrap();
    ns.rename(b.ino, "h", a.ino, "sub", 2).await.unwrap();
    assert_eq!(ns.lookup(b.ino, "h").unwrap().ino, sub.ino);
    assert_eq!(ns.get(sub.ino).unwrap().parent, b.ino);
    assert_eq!((ns.attr(a.ino).nlink, ns.attr(b.ino).nlink), (2, 3), "the directory's .. moved");
    assert_eq!(code(ns.rename(a.ino, "sub", b.ino, "missing", 2).await), ErrorCode::NotFound);
    // directory moves
    let d1 = ns.mkdir(ROOT, "d1").await.unwrap();
    let deep = ns.mkdir(d1.ino, "deep").await.unwrap();
    assert_eq!(code(ns.rename(ROOT, "d1", deep.ino, "loop", 0).await), ErrorCode::InvalidArgument);
    assert_eq!(code(ns.rename(ROOT, "d1", d1.ino, "self", 0).await), ErrorCode::InvalidArgument);
    assert_eq!(code(ns.rename(ROOT, "d1", b.ino, "g", 0).await), ErrorCode::NotDir);
    assert_eq!(code(ns.rename(b.ino, "g", ROOT, "d1", 0).await), ErrorCode::IsDir);
    let empty = ns.mkdir(ROOT, "empty").await.unwrap();
    assert_eq!(code(ns.rename(ROOT, "empty", ROOT, "d1", 0).await), ErrorCode::NotEmpty);
    let root_links = ns.attr(ROOT).nlink;
    ns.rename(ROOT, "d1", ROOT, "empty", 0).await.unwrap();
    assert!(ns.get(empty.ino).is_none(), "the replaced empty directory is gone");
    assert_eq!(ns.attr(ROOT).nlink, root_links - 1);
    // a failed rename changed nothing
    assert_eq!(ns.names(ROOT), ["a", "b", "empty"]);
    // renaming onto itself or onto another link of the same inode is a no-op
    ns.rename(b.ino, "g", b.ino, "g", 0).await.unwrap();
    ns.link(f.ino, b.ino, "g-link").await.unwrap();
    ns.rename(b.ino, "g", b.ino, "g-link", 0).await.unwrap();
    assert_eq!(ns.names(b.ino), ["g", "g-link", "h"]);
    assert_eq!(code(ns.rename(b.ino, "g", b.ino, "x", 3).await), ErrorCode::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setattr_and_xattrs() {
    let mut ns = Ns::new(None).await;
    let f = ns.file(ROOT, "f").await.unwrap();
    let op = SetAttrOp {
        ino: f.ino,
        mode: Some(0o4711),
        uid: Some(7),
        size: Some(4096),
        mtime_ns: Some(55),
        atime_now: true,
        ..Default::default()
    };
    let changed = ns.run(0, Op::SetAttr(op)).await.unwrap().unwrap();
    assert_eq!((changed.mode, changed.uid, changed.size, changed.mtime_ns), (REG | 0o4711, 7, 4096, 55));
    assert!(changed.ctime_ns > f.ctime_ns && changed.atime_ns == changed.ctime_ns);
    // chown clears set-user-ID and (with group-execute) set-group-ID on files
    let setid = SetAttrOp { ino: f.ino, mode: Some(0o6755), ..Default::default() };
    ns.run(0, Op::SetAttr(setid)).await.unwrap();
    let chowned =
        ns.run(0, Op::SetAttr(SetAttrOp { ino: f.ino, uid: Some(8), ..Default::default() })).await.unwrap().unwrap();
    assert_eq!(chowned.mode & 0o7777, 0o0755);
    let same_owner = SetAttrOp { ino: f.ino, mode: Some(0o4755), ..Default::default() };
    ns.run(0, Op::SetAttr(same_owner)).await.unwrap();
    let unchanged =
        ns.run(0, Op::SetAttr(SetAttrOp { ino: f.ino, uid: Some(8), ..Default::default() })).await.unwrap().unwrap();
    assert_eq!(unchanged.mode & 0o7777, 0o4755, "chown to the same owner keeps the bits");
    let truncate_dir = SetAttrOp { ino: ROOT, size: Some(0), ..Default::default() };
    assert_eq!(code(ns.run(0, Op::SetAttr(truncate_dir)).await), ErrorCode::IsDir);

    let set = |name: &str, value: &str, flags| {
        Op::SetXattr(SetXattrOp { ino: f.ino, name: name.into(), value: value.into(), flags })
    };
    assert_eq!(code(ns.run(0, set("user.a", "1", 2)).await), ErrorCode::NoData);
    ns.run(0, set("user.a", "1", 1)).await.unwrap();
    assert_eq!(code(ns.run(0, set("user.a", "2", 1)).await), ErrorCode::AlreadyExists);
    ns.run(0, set("user.a", "2", 2)).await.unwrap();
    ns.run(0, set("user.b", "", 0)).await.unwrap();
    assert_eq!(read::get_xattr(&ns.kv(), f.ino, b"user.a").unwrap(), b"2");
    assert_eq!(read::list_xattr(&ns.kv(), f.ino).unwrap(), vec![b"user.a".to_vec(), b"user.b".to_vec()]);
    ns.run(0, Op::RemoveXattr(RemoveXattrOp { ino: f.ino, name: "user.a".into() })).await.unwrap();
    assert_eq!(code(read::get_xattr(&ns.kv(), f.ino, b"user.a")), ErrorCode::NoData);
    assert_eq!(
        code(ns.run(0, Op::RemoveXattr(RemoveXattrOp { ino: f.ino, name: "user.a".into() })).await),
        ErrorCode::NoData
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readdir_pages_with_stable_cookies() {
    let mut ns = Ns::new(None).await;
    let d = ns.mkdir(ROOT, "big").await.unwrap();
    for i in 0..250 {
        ns.file(d.ino, &format!("f{i:04}")).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cookie = Vec::new();
    loop {
        let (page, more) = read::readdir(&ns.kv(), d.ino, &cookie, 64, true, b"").unwrap();
        assert!(page.iter().all(|e| e.attr.as_ref().is_some_and(|a| a.ino == e.ino)), "readdirplus carries attributes");
        cookie = page.last().map(|e| e.name.clone()).unwrap_or_default();
        seen.extend(page.into_iter().map(|e| String::from_utf8(e.name).unwrap()));
        if !more {
            break;
        }
        // entries removed between pages do not disturb the listing
        if seen.len() == 64 {
            ns.unlink(d.ino, "f0063", false).await.unwrap();
        }
    }
    let expected: Vec<String> = (0..250).map(|i| format!("f{i:04}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_requests_apply_once() {
    let mut ns = Ns::new(None).await;
    let op = || Op::Create(CreateOp { parent: ROOT, name: "once".into(), mode: REG | 0o600, ..Default::default() });
    let first = ns.run(42, op()).await.unwrap();
    let retry = ns.run(42, op()).await.unwrap();
    assert_eq!(first, retry, "the retry gets the first answer, not EEXIST");
    assert_eq!(code(ns.run(43, op()).await), ErrorCode::AlreadyExists, "a new request is a new create");
    assert_eq!(read::stats(&ns.kv(), 0).unwrap().inode_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_remembered_for_a_window_then_forgotten() {
    let mut ns = Ns::with_request_window(40).await;
    let create = |i: u64| {
        Op::Create(CreateOp { parent: ROOT, name: format!("f{i}").into(), mode: REG | 0o600, ..Default::default() })
    };
    for i in 1..=300 {
        ns.run(1000 + i, create(i)).await.unwrap();
    }
    // A recent request retried gets its first answer...
    let recent = ns.run(1000 + 299, create(299)).await.unwrap().unwrap();
    assert_eq!(recent.ino, ns.lookup(ROOT, "f299").unwrap().ino);
    // ...one far older than the window is forgotten: it runs again (and finds its name taken).
    assert_eq!(ns.run(1000 + 1, create(1)).await.unwrap_err().code, ErrorCode::AlreadyExists);
    // Pruning kept up: only about a window's worth of ids is stored.
    let stored_ids = {
        use strata_raftstore::KvRead;
        ns.kv().scan(b"q", b"", 10_000).unwrap().len()
    };
    assert!(stored_ids <= 40 + 40 / 8 + 2, "{stored_ids} request ids still stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_is_not_remembered() {
    // A partition not initialised yet refuses creates with a retryable error...
    let mut ns = Ns::uninitialised().await;
    let op = || Op::Create(CreateOp { parent: ROOT, name: "early".into(), mode: REG | 0o600, ..Default::default() });
    let err = ns.run(7, op()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // ...and once it is ready, the retry of the same request runs for real.
    ns.run(0, Op::Init(InitPartition { volume_id: 1, inode_start: 1, inode_end: None })).await.unwrap();
    let created = ns.run(7, op()).await.unwrap().unwrap();
    assert_eq!(ns.lookup(ROOT, "early").unwrap().ino, created.ino);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inode_range_is_enospc() {
    let mut ns = Ns::new(Some(4)).await;
    ns.file(ROOT, "a").await.unwrap();
    ns.file(ROOT, "b").await.unwrap();
    assert_eq!(code(ns.file(ROOT, "c").await), ErrorCode::NoSpace);
    assert_eq!(ns.names(ROOT), ["a", "b"]);
}
