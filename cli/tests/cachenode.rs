//! The shared cache tier through real processes: `strata dev` with two
//! cachenodes, mounts with fresh caches. A block one mount read comes to a
//! fresh mount from a cachenode (no byte from the datanodes); a cachenode
//! killed between files costs the application nothing; `strata warmup`
//! fills the tier (at L3 without the data passing through it) so a fresh
//! mount reads nothing from the datanodes; `strata node list` and `strata
//! cache stats` show what the cachenodes hold and their hits.

mod common;

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use strata_sdk::cache::read_report as cache_report;

const MIB: usize = 1 << 20;

fn contents(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed * 31) % 251) as u8).collect()
}

/// Reads a file whole through the mount, past the kernel's page cache.
fn read_cold(path: &Path) -> Vec<u8> {
    let mut file = fs::File::open(path).unwrap();
    // SAFETY: a valid descriptor.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    out
}

/// A fresh mount: own memory and disk caches, nothing in them.
fn fresh<'a>(cluster: &'a DevCluster, name: &str) -> Mount<'a> {
    Mount::with_args(cluster, name, &["--mem-cache", "64MiB", "--cache-size", "256MiB"])
}

fn cachenodes(cluster: &DevCluster) -> Vec<Value> {
    let listed: Value = serde_json::from_str(&cluster.strata_ok(&["cache", "stats", "--json"])).unwrap();
    listed.as_array().unwrap().clone()
}

fn total_hits(cluster: &DevCluster) -> u64 {
    cachenodes(cluster).iter().map(|n| n["cache"]["hits"].as_u64().unwrap()).sum()
}

#[test]
fn the_shared_tier_serves_fresh_mounts_survives_a_dead_cachenode_and_is_warmed() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--cachenodes", "2", "--cachenode-memory-mb", "64", "--cachenode-disk-mb", "256"]);
    let (first, second) = (contents(24 * MIB + 12_345, 1), contents(24 * MIB + 999, 2));
    let tree = [("dir/a.bin", contents(5 * MIB, 3)), ("dir/sub/b.bin", contents(3 * MIB + 10, 4))];
    {
        let writer = Mount::with_args(&cluster, "writer", &["--no-shared-cache"]);
        fs::write(writer.path.join("first.bin"), &first).unwrap();
        fs::write(writer.path.join("second.bin"), &second).unwrap();
        fs::create_dir_all(writer.path.join("dir/sub")).unwrap();
        for (name, data) in &tree {
            fs::write(writer.path.join(name), data).unwrap();
        }
        fs::write(writer.path.join("dir/empty"), b"").unwrap();
        writer.unmount();
    }

    // A fresh mount's reads are filled by the cachenodes from the datanodes...
    let one = fresh(&cluster, "one");
    assert!(read_cold(&one.path.join("first.bin")) == first, "first read through the tier");
    let report = cache_report(&one.path).unwrap();
    assert_eq!(report.shared.nodes, 2, "{report:?}");
    assert_eq!((report.shared.fills, report.shared.failures), (25, 0), "25 blocks filled by the tier: {report:?}");
    assert_eq!((report.remote_blocks, report.remote_bytes), (0, 0), "the mount read no datanode: {report:?}");

    // ...and a second fresh mount gets every block from them.
    let two = fresh(&cluster, "two");
    assert!(read_cold(&two.path.join("first.bin")) == first, "second mount");
    let report = cache_report(&two.path).unwrap();
    assert_eq!((report.shared.hits, report.shared.fills), (25, 0), "every block from L3: {report:?}");
    assert_eq!((report.remote_blocks, report.remote_bytes), (0, 0), "0 bytes from the datanodes: {report:?}");

    // The cachenodes report it (heartbeats every second).
    let deadline = Instant::now() + Duration::from_secs(20);
    while total_hits(&cluster) < 25 {
        assert!(Instant::now() < deadline, "cachenode hits never reached 25: {:?}", cachenodes(&cluster));
        std::thread::sleep(Duration::from_millis(250));
    }
    let listed = cluster.strata_ok(&["node", "list"]);
    assert!(listed.contains("cache: memory") && listed.contains("hit ratio"), "{listed}");
    for node in cachenodes(&cluster) {
        assert!(node["cache"]["memory_bytes"].as_u64().unwrap() > 0, "both hold blocks: {node}");
    }

    // A cachenode dies mid-epoch: the next file reads whole and exact; the
    // dead node's blocks come from the datanodes, the rest from the live one.
    let victim = cluster.nodes_of("cachenode")[0]["id"].as_u64().unwrap();
    kill(cluster.pid_of(victim), libc::SIGKILL);
    assert!(read_cold(&two.path.join("second.bin")) == second, "read across a dead cachenode");
    let report = cache_report(&two.path).unwrap();
    let new_blocks = report.shared.fills + report.shared.failures;
    assert_eq!(new_blocks, 25, "every block of the new file asked of the tier once: {report:?}");
    assert!(report.shared.failures > 0, "the dead cachenode was asked and passed over: {report:?}");
    assert_eq!(report.remote_blocks, report.shared.failures, "what the tier failed came from the datanodes");
    cluster.strata_ok(&["dev", "restart", &victim.to_string()]);
    drop((one, two));

    // Warm-up at L3: the tree's blocks go to the cachenodes (the command
    // asks without taking the bytes), then a fresh mount reads no datanode.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cachenodes(&cluster).iter().any(|n| n["alive"] != true) {
        assert!(Instant::now() < deadline, "the restarted cachenode never came back");
        std::thread::sleep(Duration::from_millis(250));
    }
    let summary: Value =
        serde_json::from_str(&cluster.strata_ok(&["warmup", "--volume", "default", "/dir", "--json"])).unwrap();
    assert_eq!(summary["files"], 3, "{summary}");
    assert_eq!(summary["blocks"], 5 + 4, "{summary}");
    assert_eq!(summary["blocks_failed"], 0, "{summary}");
    assert_eq!(summary["bytes"], 8 * MIB as u64 + 10, "{summary}");
    let three = fresh(&cluster, "three");
    for (name, data) in &tree {
        assert!(read_cold(&three.path.join(name)) == *data, "{name} after warm-up");
    }
    let report = cache_report(&three.path).unwrap();
    assert_eq!(report.shared.hits, 9, "every block warm in L3: {report:?}");
    assert_eq!((report.remote_blocks, report.remote_bytes), (0, 0), "{report:?}");

    // Warm-up of paths on a mount (its volume found from the mount), again:
    // nothing left to load, nothing fails.
    let summary: Value =
        serde_json::from_str(&cluster.strata_ok(&["warmup", three.path.join("dir").to_str().unwrap(), "--json"]))
            .unwrap();
    assert_eq!((summary["files"].as_u64(), summary["blocks_failed"].as_u64()), (Some(3), Some(0)), "{summary}");

    // Warm-up at L2 through a mount without the tier: its own disk cache
    // takes the files, and reading them again fetches nothing.
    let local =
        Mount::with_args(&cluster, "local", &["--no-shared-cache", "--mem-cache", "0", "--cache-size", "256MiB"]);
    let summary: Value = serde_json::from_str(&cluster.strata_ok(&[
        "warmup",
        local.path.join("dir").to_str().unwrap(),
        "--level",
        "l2",
        "--json",
    ]))
    .unwrap();
    assert_eq!(summary["files"], 3, "{summary}");
    let warmed = cache_report(&local.path).unwrap();
    assert!(warmed.disk.blocks >= 9 && !warmed.shared.enabled, "{warmed:?}");
    for (name, data) in &tree {
        assert!(read_cold(&local.path.join(name)) == *data, "{name} from L2");
    }
    let after = cache_report(&local.path).unwrap();
    assert_eq!(after.remote_blocks, warmed.remote_blocks, "nothing fetched again: {after:?}");

    // Bad input: a path on no mount, without --volume.
    let out = cluster.strata(&["warmup", "/tmp"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not on a Strata mount"));
}
