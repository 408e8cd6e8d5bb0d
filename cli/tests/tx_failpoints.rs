//! Transactions across meta partitions whose coordinator (the client, here
//! this test process) stops at the two moments that matter, through the sdk's
//! failpoints: after every participant prepared (they must resolve with the
//! primary and abort), and after the primary committed but before the others
//! did (they must resolve with the primary and commit). Real metanodes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use strata_common::ErrorCode;
use strata_sdk::MetaClient;

const ROOT: u64 = 1;
/// Longer than the transaction deadline (20 s) plus a resolution round.
const RESOLVED_WITHIN: Duration = Duration::from_secs(60);

/// Two directories whose entries live in different partitions.
async fn two_partitions(meta: &MetaClient) -> (u64, u64) {
    let mut dirs: Vec<(u64, u64)> = Vec::new();
    for i in 0..8 {
        let dir = meta.mkdir(ROOT, format!("d{i}").as_bytes(), 0o755, 0, 0).await.unwrap().ino;
        let partition = meta.partition_id_of(dir).unwrap();
        if let Some(&(other, _)) = dirs.iter().find(|(_, p)| *p != partition) {
            return (other, dir);
        }
        dirs.push((dir, partition));
    }
    panic!("every directory landed in one partition");
}

async fn exists(meta: &MetaClient, dir: u64, name: &[u8]) -> bool {
    match meta.lookup(dir, name).await {
        Ok(_) => true,
        Err(e) if e.code == ErrorCode::NotFound => false,
        Err(e) => panic!("lookup: {e}"),
    }
}

/// Waits until `name` is in `to` and not in `from`.
async fn wait_moved(meta: &MetaClient, from: u64, to: u64, name: &[u8]) -> Duration {
    let started = Instant::now();
    while exists(meta, from, name).await || !exists(meta, to, name).await {
        assert!(started.elapsed() < RESOLVED_WITHIN, "the transaction was never resolved");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    started.elapsed()
}

#[test]
fn a_coordinator_that_stops_mid_transaction_is_resolved_by_the_participants() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let meta = open_volume(cluster.masters()).await;
        let (a, b) = two_partitions(&meta).await;
        for name in [&b"f1"[..], b"f2"] {
            meta.create(a, name, libc::S_IFREG | 0o644, 0, 0, 0).await.unwrap();
        }

        // 1. Stopped after every prepare: nothing moved, then the participants abort.
        fail::cfg("sdk::tx_after_prepare", "return").unwrap();
        let stopped = meta.rename(a, b"f1", b, b"f1", 0).await;
        fail::remove("sdk::tx_after_prepare");
        assert!(stopped.is_err(), "the coordinator stopped before committing");
        assert!(exists(&meta, a, b"f1").await && !exists(&meta, b, b"f1").await, "nothing moved");
        // Once the prepared participants abort, their locks are gone and the rename goes through.
        let started = Instant::now();
        meta.rename(a, b"f1", b, b"f1", 0).await.expect("the rename after the abort");
        println!("after an abandoned prepare, the rename went through in {:?}", started.elapsed());
        assert!(!exists(&meta, a, b"f1").await && exists(&meta, b, b"f1").await);

        // 2. Stopped after the primary committed: the others commit on their own.
        fail::cfg("sdk::tx_after_primary_commit", "return").unwrap();
        let stopped = meta.rename(a, b"f2", b, b"f2", 0).await;
        fail::remove("sdk::tx_after_primary_commit");
        assert!(stopped.is_err(), "the coordinator stopped after the primary's commit");
        let waited = wait_moved(&meta, a, b, b"f2").await;
        println!("after a commit at the primary only, the rename was complete in {waited:?}");
        // The names are usable again: both directories take new entries with those names.
        meta.create(a, b"f2", libc::S_IFREG | 0o644, 0, 0, 0).await.expect("a new f2 in a");
        meta.unlink(b, b"f2").await.expect("f2 in b is an ordinary entry");
    });
    let fsck = cluster.strata(&["fsck", "default"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
}
