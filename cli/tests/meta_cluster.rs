//! The namespace under failures, through real processes: concurrent clients
//! create, rename and unlink while the partition's leader metanode is killed
//! with SIGKILL and restarted, again and again. Every acknowledged operation
//! must be there exactly once afterwards, and no client may see an error.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use strata_sdk::MetaClient;

const ROOT: u64 = 1;
const CLIENTS: usize = 3;

/// One client's work: its own directory with files, some renamed into a
/// shared directory, some unlinked. Returns the names that must exist.
struct Done {
    dir: u64,
    /// Names left in the client's directory.
    own: BTreeSet<String>,
    /// Names moved into the shared directory.
    moved: BTreeSet<String>,
    /// Files unlinked (orphans until evicted: nobody holds them open, but no client evicts here).
    unlinked: u64,
}

async fn client_work(meta: Arc<MetaClient>, client: usize, shared: u64, stop: Arc<AtomicBool>) -> Done {
    let dir = meta.mkdir(ROOT, format!("client-{client}").as_bytes(), 0o755, 0, 0).await.expect("mkdir");
    let mut own = BTreeSet::new();
    let mut moved = BTreeSet::new();
    let mut unlinked = 0;
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) || i < 30 {
        let name = format!("f{i:05}");
        meta.create(dir.ino, name.as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0)
            .await
            .unwrap_or_else(|e| panic!("client {client} create {name}: {e}"));
        match i % 3 {
            0 => {
                let target = format!("c{client}-{name}");
                meta.rename(dir.ino, name.as_bytes(), shared, target.as_bytes(), 0)
                    .await
                    .unwrap_or_else(|e| panic!("client {client} rename {name}: {e}"));
                moved.insert(target);
            }
            1 => {
                meta.unlink(dir.ino, name.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("client {client} unlink {name}: {e}"));
                unlinked += 1;
            }
            _ => {
                own.insert(name);
            }
        }
        i += 1;
    }
    Done { dir: dir.ino, own, moved, unlinked }
}

async fn list(meta: &MetaClient, dir: u64) -> Vec<String> {
    let mut names = Vec::new();
    let mut after = Vec::new();
    loop {
        let (page, more) = meta.readdir(dir, &after, 100, false).await.unwrap();
        after = page.last().map(|e| e.name.clone()).unwrap_or_default();
        names.extend(page.into_iter().map(|e| String::from_utf8(e.name).unwrap()));
        if !more {
            return names;
        }
    }
}

#[test]
fn namespace_survives_leader_kills_under_concurrent_clients() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let meta = Arc::new(runtime.block_on(open_volume(cluster.masters())));
    let shared = runtime.block_on(meta.mkdir(ROOT, b"shared", 0o777, 0, 0)).unwrap().ino;

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> =
        (0..CLIENTS).map(|c| runtime.spawn(client_work(meta.clone(), c, shared, stop.clone()))).collect();

    // Directories spread over partitions, so moves into `shared` are transactions across them.
    let partitions: Vec<u64> =
        runtime.block_on(meta.partition_stats()).unwrap().into_iter().map(|(id, _)| id).collect();
    assert!(partitions.len() > 1);

    // Kill the leader of a partition (a different one each round) while the clients work.
    for round in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        runtime.block_on(meta.partition_stats()).unwrap();
        let partition = partitions[round % partitions.len()];
        let leader = meta.partition_leader(partition).expect("a known leader");
        let victim = cluster.node_at(&leader);
        kill(cluster.pid_of(victim), libc::SIGKILL);
        eprintln!("round {round}: killed metanode {victim} leading partition {partition}");
        std::thread::sleep(Duration::from_secs(3));
        cluster.restart(victim);
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = workers.into_iter().map(|w| runtime.block_on(w).expect("a client failed")).collect();

    let spread: std::collections::BTreeSet<u64> =
        results.iter().map(|d| meta.partition_id_of(d.dir).unwrap()).collect();
    let shared_partition = meta.partition_id_of(shared).unwrap();
    eprintln!("client directories on partitions {spread:?}, shared on {shared_partition}");
    assert!(spread.iter().any(|p| *p != shared_partition), "some moves crossed partitions");

    // Every acknowledged operation is there exactly once.
    let mut all_moved = BTreeSet::new();
    for done in &results {
        let listed = runtime.block_on(list(&meta, done.dir));
        assert_eq!(listed, done.own.iter().cloned().collect::<Vec<_>>(), "client directory {}", done.dir);
        all_moved.extend(done.moved.iter().cloned());
    }
    let listed = runtime.block_on(list(&meta, shared));
    assert_eq!(listed, all_moved.into_iter().collect::<Vec<_>>());
    // Links add up: the root holds the shared and the client directories.
    let root = runtime.block_on(meta.getattr(ROOT)).unwrap();
    assert_eq!(root.nlink as usize, 2 + 1 + CLIENTS);
    // No inode was created twice: root, shared, client dirs, live files, orphans.
    let files: u64 = results.iter().map(|d| (d.own.len() + d.moved.len()) as u64).sum();
    let orphans: u64 = results.iter().map(|d| d.unlinked).sum();
    let stats = runtime.block_on(meta.partition_stats()).unwrap();
    let inodes: u64 = stats.iter().map(|(_, s)| s.inode_count).sum();
    assert_eq!(inodes, 2 + CLIENTS as u64 + files + orphans);

    // fsck agrees: no broken invariant, and the unlinked files are (young) orphans.
    let report: serde_json::Value = serde_json::from_str(&cluster.strata_ok(&["fsck", "default", "--json"])).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["orphans"].as_u64(), Some(orphans));
    assert_eq!(report["inodes"].as_u64(), Some(inodes));
    // ...and with no grace period, those orphans are reported as leaked.
    let out = cluster.strata(&["fsck", "default", "--grace-secs", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("was unlinked"));
}

#[test]
fn locks_are_shared_across_clients_and_die_with_their_session() {
    use strata_sdk::types::{Lock, LockKind};

    let mut cluster = DevCluster::new();
    cluster.start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let alice = runtime.block_on(open_volume(cluster.masters()));
    let bob = runtime.block_on(open_volume(cluster.masters()));
    let file = runtime.block_on(alice.create(ROOT, b"locked", libc::S_IFREG | 0o644, 0, 0, 0)).unwrap();
    let (alice_session, bob_session) = (0xa11ce, 0xb0b);
    runtime.block_on(alice.renew_session(alice_session, Duration::from_secs(2))).unwrap();
    runtime.block_on(bob.renew_session(bob_session, Duration::from_secs(60))).unwrap();
    let write = |session, owner| Lock {
        ino: file.ino,
        session,
        owner,
        pid: 1,
        kind: LockKind::Write,
        start: 0,
        end: u64::MAX,
        flock: false,
    };

    runtime.block_on(alice.lock(write(alice_session, 1))).unwrap();
    let err = runtime.block_on(bob.lock(write(bob_session, 2))).unwrap_err();
    assert_eq!(err.code, strata_common::ErrorCode::WouldBlock);
    let holder = runtime.block_on(bob.get_lock(write(bob_session, 2))).unwrap().expect("bob sees alice's lock");
    assert_eq!(holder.session, alice_session);

    // Alice's client dies: it stops renewing. Within the lease plus a leader round, her lock is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match runtime.block_on(bob.lock(write(bob_session, 2))) {
            Ok(()) => break,
            Err(e) if e.code == strata_common::ErrorCode::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("bob never got the lock: {e}"),
        }
    }
    let err = runtime.block_on(alice.lock(write(alice_session, 1))).unwrap_err();
    assert_eq!(err.code, strata_common::ErrorCode::FailedPrecondition, "an expired session cannot lock again");
}

#[test]
fn posix_rules_hold_across_partitions() {
    use strata_common::ErrorCode;

    let mut cluster = DevCluster::new();
    cluster.start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let meta = runtime.block_on(open_volume(cluster.masters()));
    let run = |f: std::pin::Pin<
        Box<dyn std::future::Future<Output = strata_common::Result<strata_sdk::types::Attr>> + '_>,
    >| runtime.block_on(f);
    let code = |r: strata_common::Result<strata_sdk::types::Attr>| r.expect_err("should fail").code;

    // Directories until two live in partitions other than the root's.
    let root_partition = meta.partition_id_of(ROOT).unwrap();
    let mut remote = Vec::new();
    for i in 0..6 {
        let d = run(Box::pin(meta.mkdir(ROOT, format!("d{i}").as_bytes(), 0o755, 0, 0))).unwrap();
        if meta.partition_id_of(d.ino).unwrap() != root_partition {
            remote.push(d.ino);
        }
    }
    assert!(remote.len() >= 2, "directories spread over partitions");
    let (x, y) = (remote[0], remote[1]);
    let root_links = run(Box::pin(meta.getattr(ROOT))).unwrap().nlink;
    assert_eq!(root_links, 2 + 6);

    // A file moves from the root's partition into x's, replacing a file there.
    let f = run(Box::pin(meta.create(ROOT, b"f", libc::S_IFREG | 0o644, 0, 0, 0))).unwrap();
    let g = run(Box::pin(meta.create(x, b"g", libc::S_IFREG | 0o644, 0, 0, 0))).unwrap();
    run(Box::pin(meta.rename(ROOT, b"f", x, b"g", 0))).unwrap();
    assert_eq!(run(Box::pin(meta.lookup(x, b"g"))).unwrap().ino, f.ino);
    assert_eq!(code(run(Box::pin(meta.lookup(ROOT, b"f")))), ErrorCode::NotFound);
    assert_eq!(run(Box::pin(meta.getattr(g.ino))).unwrap().nlink, 0, "the replaced file lost its link");

    // NOREPLACE and EXCHANGE across partitions.
    let h = run(Box::pin(meta.create(y, b"h", libc::S_IFREG | 0o644, 0, 0, 0))).unwrap();
    assert_eq!(code(run(Box::pin(meta.rename(x, b"g", y, b"h", 1)))), ErrorCode::AlreadyExists);
    run(Box::pin(meta.rename(x, b"g", y, b"h", 2))).unwrap();
    assert_eq!(run(Box::pin(meta.lookup(x, b"g"))).unwrap().ino, h.ino);
    assert_eq!(run(Box::pin(meta.lookup(y, b"h"))).unwrap().ino, f.ino);

    // A directory moves across partitions; its parent links follow; not into itself.
    let sub = run(Box::pin(meta.mkdir(x, b"sub", 0o755, 0, 0))).unwrap();
    assert_eq!(run(Box::pin(meta.getattr(x))).unwrap().nlink, 3);
    run(Box::pin(meta.rename(x, b"sub", y, b"moved", 0))).unwrap();
    assert_eq!(run(Box::pin(meta.getattr(sub.ino))).unwrap().parent, y);
    assert_eq!((run(Box::pin(meta.getattr(x))).unwrap().nlink, run(Box::pin(meta.getattr(y))).unwrap().nlink), (2, 3));
    let y_name = (0..6)
        .map(|i| format!("d{i}"))
        .find(|n| run(Box::pin(meta.lookup(ROOT, n.as_bytes()))).unwrap().ino == y)
        .unwrap();
    assert_eq!(
        code(run(Box::pin(meta.rename(ROOT, y_name.as_bytes(), sub.ino, b"inside", 0)))),
        ErrorCode::InvalidArgument
    );

    // Hard links across partitions count.
    let linked = run(Box::pin(meta.link(f.ino, x, b"f-link"))).unwrap();
    assert_eq!(linked.nlink, 2);
    run(Box::pin(meta.unlink(y, b"h"))).unwrap();
    assert_eq!(run(Box::pin(meta.getattr(f.ino))).unwrap().nlink, 1);

    // rmdir of a remote directory: refused while not empty, then done.
    assert_eq!(code(run(Box::pin(meta.rmdir(ROOT, y_name.as_bytes())))), ErrorCode::NotEmpty);
    run(Box::pin(meta.rmdir(y, b"moved"))).unwrap();
    run(Box::pin(meta.rmdir(ROOT, y_name.as_bytes()))).unwrap();
    assert_eq!(code(run(Box::pin(meta.getattr(y)))), ErrorCode::NotFound);
    assert_eq!(run(Box::pin(meta.getattr(ROOT))).unwrap().nlink, root_links - 1);

    // statfs: the volume's capacity, its files, the bytes extents gave them.
    let fs = runtime.block_on(meta.statfs()).unwrap();
    assert_eq!(fs.capacity_bytes, 100 << 30);
    let blob = strata_proto::meta::BlobRef { data_partition: 1, blob_id: 1, offset: 0, blob_size: 1 << 20, codec: 0 };
    let extent = strata_sdk::types::Extent { file_offset: 0, length: 4096, blob };
    runtime.block_on(meta.write_extents(f.ino, vec![extent])).unwrap();
    let after = runtime.block_on(meta.statfs()).unwrap();
    assert_eq!(after.used_bytes, fs.used_bytes + 4096);
    assert_eq!(after.files, fs.files);
    let (extents, size) = runtime.block_on(meta.get_extents(f.ino, 0, u64::MAX)).unwrap();
    assert_eq!((extents.len(), size), (1, 4096));
    let df: serde_json::Value =
        serde_json::from_str(&cluster.strata_ok(&["volume", "df", "default", "--json"])).unwrap();
    assert_eq!(df["used_bytes"].as_u64(), Some(after.used_bytes));
    assert_eq!(df["files"].as_u64(), Some(after.files));

    // The metadata benchmark runs against this cluster and reports every phase.
    let rows_file = cluster.cluster_dir().join("bench.json");
    cluster.strata_ok(&[
        "bench",
        "meta-sdk",
        "--files",
        "20",
        "--clients",
        "1,2",
        "--json-file",
        rows_file.to_str().unwrap(),
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&rows_file).unwrap()).unwrap();
    let phases: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["workload"].as_str().unwrap()).collect();
    assert_eq!(phases, ["create", "stat", "readdir", "rename", "unlink"].repeat(2));
    assert!(rows.as_array().unwrap().iter().all(|r| r["strata_ops_per_sec"].as_f64().unwrap() > 0.0));

    let report: serde_json::Value =
        serde_json::from_str(&cluster.strata_ok(&["fsck", "default", "--json", "--grace-secs", "3600"])).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report:#}");
}

#[test]
fn namespace_grows_through_partition_splits() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--meta-split-inodes", "100"]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let old_view = runtime.block_on(open_volume(cluster.masters()));
    let partitions_in = |c: &DevCluster| -> usize {
        let info: serde_json::Value =
            serde_json::from_str(&c.strata_ok(&["volume", "info", "default", "--json"])).unwrap();
        info["meta_partitions"].as_array().unwrap().len()
    };
    assert_eq!(partitions_in(&cluster), 3);

    // Fill a directory of the open-ended partition past the split threshold.
    let last = runtime.block_on(old_view.partition_stats()).unwrap().last().unwrap().0;
    let mut dir = 0;
    for i in 0..6 {
        let d = runtime.block_on(old_view.mkdir(ROOT, format!("d{i}").as_bytes(), 0o755, 0, 0)).unwrap();
        if old_view.partition_id_of(d.ino).unwrap() == last {
            dir = d.ino;
        }
    }
    assert_ne!(dir, 0, "a directory landed in the open-ended partition");
    for i in 0..150 {
        runtime.block_on(old_view.create(dir, format!("f{i}").as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0)).unwrap();
    }
    // The master asks it to close, it closes at a bound of its own, a new partition opens there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while partitions_in(&cluster) < 4 {
        assert!(Instant::now() < deadline, "no split happened");
        std::thread::sleep(Duration::from_millis(300));
    }

    // A fresh client spreads new directories over all four partitions; the new one works.
    let fresh = runtime.block_on(open_volume(cluster.masters()));
    let stats = runtime.block_on(fresh.partition_stats()).unwrap();
    assert_eq!(stats.len(), 4);
    let (newest, newest_stats) = *stats.last().unwrap();
    assert!(newest_stats.inode_start > stats[2].1.inode_start, "the new partition starts above the closed one");
    assert_eq!(stats[2].1.inode_end, Some(newest_stats.inode_start), "ranges meet exactly");
    let mut in_newest = 0;
    for i in 0..8 {
        let d = runtime.block_on(fresh.mkdir(ROOT, format!("e{i}").as_bytes(), 0o755, 0, 0)).unwrap();
        if fresh.partition_id_of(d.ino).unwrap() == newest {
            in_newest = d.ino;
        }
    }
    assert_ne!(in_newest, 0);
    runtime.block_on(fresh.create(in_newest, b"file", libc::S_IFREG | 0o644, 0, 0, 0)).unwrap();
    // The old client finds inodes of the new partition by refreshing its view.
    assert_eq!(runtime.block_on(old_view.lookup(in_newest, b"file")).unwrap().nlink, 1);
    // Files keep going into the closed partition's directory (it kept a margin).
    runtime.block_on(old_view.create(dir, b"after-split", libc::S_IFREG | 0o644, 0, 0, 0)).unwrap();

    let report: serde_json::Value = serde_json::from_str(&cluster.strata_ok(&["fsck", "default", "--json"])).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report:#}");
}

/// A metanode down while its partitions move far past the log they keep
/// comes back through snapshots streamed over the network (files written
/// from a RocksDB snapshot, sent in chunks, installed in batches), and then
/// carries a quorum on its own with one of the others down.
#[test]
fn a_lagging_metanode_catches_up_from_streamed_snapshots() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--raft-log-retain", "20"]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let meta = runtime.block_on(open_volume(cluster.masters()));
    let metanodes: Vec<u64> = cluster.nodes_of("metanode").iter().map(|n| n["id"].as_u64().unwrap()).collect();
    let lagging = metanodes[0];
    kill(cluster.pid_of(lagging), libc::SIGKILL);

    let dir = runtime.block_on(meta.mkdir(ROOT, b"while-down", 0o755, 0, 0)).unwrap();
    for i in 0..300 {
        runtime.block_on(meta.create(dir.ino, format!("f{i:03}").as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0)).unwrap();
    }
    cluster.restart(lagging);
    let log = cluster.cluster_dir().join(format!("metanode-{lagging}/node.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("snapshot received") && text.contains("installed snapshot") {
            break;
        }
        assert!(Instant::now() < deadline, "metanode {lagging} installed no snapshot:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let it apply what followed the snapshot, then take another member away:
    // the two left need the restarted one for every quorum.
    std::thread::sleep(Duration::from_secs(3));
    kill(cluster.pid_of(metanodes[1]), libc::SIGKILL);
    let names = runtime.block_on(list(&meta, dir.ino));
    assert_eq!(names.len(), 300, "every file is there through the caught-up member");
    runtime.block_on(meta.create(dir.ino, b"after", libc::S_IFREG | 0o644, 0, 0, 0)).unwrap();
    cluster.restart(metanodes[1]);
    let report: serde_json::Value = serde_json::from_str(&cluster.strata_ok(&["fsck", "default", "--json"])).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report:#}");
}
