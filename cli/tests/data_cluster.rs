//! The data path through real processes: files written through the sdk into
//! erasure-coded and replicated volumes, datanodes killed with SIGKILL,
//! segment files damaged on disk; everything must read back byte-identical.

mod common;

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use strata_bench::data::contents;
use strata_proto::master as pb;
use strata_sdk::data::file::{DEFAULT_BLOB_SIZE, FileWriter, read_file};
use strata_sdk::data::{DataClient, node};
use strata_sdk::rpc::Channels;
use strata_sdk::{MasterClient, MetaClient};

const ROOT: u64 = 1;
const MIB: usize = 1 << 20;

struct Volume {
    meta: Arc<MetaClient>,
    data: Arc<DataClient>,
}

async fn create_volume(masters: Vec<String>, name: &str, redundancy: &str) -> Volume {
    let master = MasterClient::new(masters).unwrap();
    let redundancy: strata_common::types::Redundancy = redundancy.parse().unwrap();
    master
        .create_volume(pb::CreateVolumeRequest {
            name: name.into(),
            redundancy: Some(redundancy.into()),
            capacity_bytes: 100 << 30,
            owner: "test".into(),
            request_id: format!("create-{name}"),
            meta_partitions: 0,
        })
        .await
        .unwrap();
    let meta = MetaClient::open(&master, name).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while meta.partition_stats().await.is_err() {
        assert!(Instant::now() < deadline, "meta partitions of {name} never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let data = DataClient::open(&master, name).await.unwrap();
    Volume { meta: Arc::new(meta), data: Arc::new(data) }
}

/// Creates `name` and writes `len` bytes of `contents(seed)` in 1 MiB writes.
async fn write_file(v: &Volume, name: &str, seed: u64, len: usize) -> u64 {
    let ino = v.meta.create(ROOT, name.as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0).await.unwrap().ino;
    let mut writer = FileWriter::new(v.data.clone(), v.meta.clone(), ino, DEFAULT_BLOB_SIZE);
    let bytes = contents(seed, len);
    for (i, chunk) in bytes.chunks(MIB).enumerate() {
        writer.write((i * MIB) as u64, chunk).await.unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }
    writer.flush().await.unwrap_or_else(|e| panic!("flushing {name}: {e}"));
    ino
}

/// Reads a whole file in 4 MiB ranges and compares it with `contents(seed)`.
async fn check_file(v: &Volume, ino: u64, seed: u64, len: usize) {
    let expected = contents(seed, len);
    let step = 4 * MIB;
    for start in (0..len).step_by(step) {
        let got = read_file(&v.meta, &v.data, ino, start as u64, step as u64)
            .await
            .unwrap_or_else(|e| panic!("reading inode {ino} at {start}: {e}"));
        let end = (start + step).min(len);
        assert!(got[..] == expected[start..end], "inode {ino}: bytes at {start}..{end} differ");
    }
}

/// Writes `count` files of `len` bytes, `parallel` at a time; answers their inodes.
async fn write_files(v: &Arc<Volume>, prefix: &str, count: u64, len: usize, parallel: usize) -> Vec<u64> {
    let mut inodes = Vec::new();
    for batch in (0..count).collect::<Vec<_>>().chunks(parallel) {
        let writes = batch.iter().map(|i| {
            let v = v.clone();
            let name = format!("{prefix}-{i}");
            let seed = *i;
            tokio::spawn(async move { write_file(&v, &name, seed, len).await })
        });
        for w in writes.collect::<Vec<_>>() {
            inodes.push(w.await.unwrap());
        }
    }
    inodes
}

async fn check_files(v: &Arc<Volume>, inodes: &[u64], len: usize) {
    let reads = inodes.iter().enumerate().map(|(i, ino)| {
        let v = v.clone();
        let ino = *ino;
        tokio::spawn(async move { check_file(&v, ino, i as u64, len).await })
    });
    for r in reads.collect::<Vec<_>>() {
        r.await.unwrap();
    }
}

fn segment_files(node: &serde_json::Value) -> Vec<PathBuf> {
    let dir = PathBuf::from(node["data_dir"].as_str().unwrap()).join("disk0/segments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// Flips one byte every `stride` bytes of each segment file of `node`; answers how many.
fn damage_segments(node: &serde_json::Value, stride: u64) -> u64 {
    let mut flipped = 0;
    for path in segment_files(node) {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut at = stride / 2;
        while at < len {
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at).unwrap();
            file.write_all_at(&[byte[0] ^ 0x5a], at).unwrap();
            flipped += 1;
            at += stride;
        }
        file.sync_all().unwrap();
    }
    flipped
}

async fn corrupt_blocks(nodes: &[serde_json::Value]) -> u64 {
    let channels = Channels::default();
    let mut total = 0;
    for n in nodes {
        total += node::store_stats(&channels, n["address"].as_str().unwrap()).await.unwrap().corrupt_blocks;
    }
    total
}

/// Ids of the datanodes in the volume's data partitions, per partition.
async fn data_members(masters: Vec<String>, volume: &str) -> Vec<Vec<u64>> {
    let master = MasterClient::new(masters).unwrap();
    let view = master.get_volume(volume).await.unwrap();
    view.data_partitions.iter().map(|p| p.members.iter().map(|m| m.node_id).collect()).collect()
}

fn store_of(datanodes: &[serde_json::Value], id: u64) -> &serde_json::Value {
    datanodes.iter().find(|n| n["id"] == id).unwrap()
}

/// Waits until no member is being rebuilt and every member of every data partition is alive.
async fn wait_for_repair(cluster: &DevCluster, volume: &str) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let status = cluster.status().expect("status");
        let alive: Vec<u64> =
            nodes(&status).iter().filter(|n| n["alive"] == true).map(|n| n["id"].as_u64().unwrap()).collect();
        let repairs = status["repairs"].as_array().map(|r| r.len()).unwrap_or(0);
        let members = data_members(cluster.masters(), volume).await;
        if repairs == 0 && members.iter().flatten().all(|m| alive.contains(m)) {
            return;
        }
        assert!(Instant::now() < deadline, "repair did not finish: {:#}", status["repairs"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erasure_coded_data_survives_lost_datanodes_damage_and_repair() {
    let mut cluster = DevCluster::new();
    // Scrub at a production node's 16 MiB/s each, so a pass ends in time.
    cluster.start_with(&["--datanodes", "8", "--repair-delay", "3", "--scrub-mb-per-sec", "128"]);
    let volume = Arc::new(create_volume(cluster.masters(), "coded", "ec:4+2").await);
    // 1 GiB: 16 files of 64 MiB, 4 written at a time.
    let len = 64 * MIB;
    let inodes = write_files(&volume, "big", 16, len, 4).await;
    check_files(&volume, &inodes, len).await;
    // Every shard is there; one may still be given up on as slow on a loaded machine.
    let (degraded, slow) = (
        volume.data.read_counters().degraded_reads.load(Ordering::Relaxed),
        volume.data.read_counters().slow_shards.load(Ordering::Relaxed),
    );
    assert!(degraded <= slow, "all shards were there, yet {degraded} reads were degraded ({slow} slow shards)");

    // Two members of the first data partition die.
    let datanodes = cluster.nodes_of("datanode");
    let first = data_members(cluster.masters(), "coded").await[0].clone();
    let killed = [first[0], first[1]];
    for id in killed {
        kill(store_of(&datanodes, id)["pid"].as_u64().unwrap(), libc::SIGKILL);
    }
    check_files(&volume, &inodes, len).await;
    assert!(
        volume.data.read_counters().degraded_reads.load(Ordering::Relaxed) > 0,
        "reads decoded around the dead nodes"
    );

    // The master replaces them; the new members rebuild their shards.
    wait_for_repair(&cluster, "coded").await;
    let members = data_members(cluster.masters(), "coded").await;
    assert!(members.iter().flatten().all(|m| !killed.contains(m)), "dead nodes replaced: {members:?}");

    // A live member's segments are damaged on disk: reads go around the
    // damage, and the damaged blobs are rewritten (found by reads and scrub).
    let victim_id = members[0].iter().copied().find(|m| !killed.contains(m)).unwrap();
    let victim = store_of(&datanodes, victim_id).clone();
    let address = victim["address"].as_str().unwrap().to_string();
    let channels = Channels::default();
    let scrubbed_before = node::store_stats(&channels, &address).await.unwrap().scrubbed_bytes;
    let flipped = damage_segments(&victim, 3 * MIB as u64 + 4093);
    assert!(flipped > 20, "only {flipped} bytes flipped");
    let degraded_before = volume.data.read_counters().degraded_reads.load(Ordering::Relaxed);
    check_files(&volume, &inodes, len).await;
    assert!(corrupt_blocks(std::slice::from_ref(&victim)).await > 0, "the damaged blocks were counted");
    assert!(volume.data.read_counters().degraded_reads.load(Ordering::Relaxed) > degraded_before);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stats = node::store_stats(&channels, &address).await.unwrap();
        let full_pass = stats.scrubbed_bytes >= scrubbed_before + stats.segment_bytes;
        if full_pass && stats.bad_blobs == 0 && stats.repaired_blobs > 0 {
            eprintln!(
                "flipped {flipped} bytes: {} corrupt blocks, {} blobs rewritten",
                stats.corrupt_blocks, stats.repaired_blobs
            );
            break;
        }
        assert!(Instant::now() < deadline, "damage not repaired: {stats:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Two other members die: everything still reads back.
    let others: Vec<u64> = members[0].iter().copied().filter(|m| *m != victim_id).take(2).collect();
    for id in &others {
        kill(store_of(&datanodes, *id)["pid"].as_u64().unwrap(), libc::SIGKILL);
    }
    check_files(&volume, &inodes, len).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicated_writes_go_on_when_a_datanode_dies_mid_stream_then_repair_and_drain() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--repair-delay", "3"]);
    let volume = Arc::new(create_volume(cluster.masters(), "rep", "replica:3").await);
    let datanodes = cluster.nodes_of("datanode");
    let victim = datanodes[3]["pid"].as_u64().unwrap();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        kill(victim, libc::SIGKILL);
    });
    // A stream of 6 MiB files (a blob and a half each), 3 at a time, across the kill.
    let len = 6 * MIB;
    let started = Instant::now();
    let mut inodes = Vec::new();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(10) || round < 4 {
        let batch = write_files(&volume, &format!("r{round}"), 3, len, 3).await;
        inodes.extend(batch.into_iter().map(|ino| (ino, round)));
        round += 1;
    }
    killer.await.unwrap();
    assert!(!alive(victim));
    // Files of round r have seeds 0..3 by position in their batch.
    for chunk in inodes.chunks(3) {
        let batch: Vec<u64> = chunk.iter().map(|(ino, _)| *ino).collect();
        check_files(&volume, &batch, len).await;
    }
    eprintln!(
        "{} files written across the kill, {} blob writes redone on another partition",
        inodes.len(),
        volume.data.stats.rewrites.load(Ordering::Relaxed)
    );

    // The dead node is replaced and its replicas copied from the others.
    wait_for_repair(&cluster, "rep").await;
    let dead = datanodes[3]["id"].as_u64().unwrap();
    assert!(data_members(cluster.masters(), "rep").await.iter().flatten().all(|m| *m != dead));

    // Draining a live member moves its partitions away; the data stays readable.
    let members = data_members(cluster.masters(), "rep").await;
    let drained = members[0][0];
    let out = cluster.strata_ok(&["node", "decommission", &drained.to_string()]);
    assert!(out.contains("being drained"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let after = data_members(cluster.masters(), "rep").await;
        if after.iter().flatten().all(|m| *m != drained) {
            break;
        }
        assert!(Instant::now() < deadline, "node {drained} still holds data: {after:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_for_repair(&cluster, "rep").await;
    let status = cluster.status().unwrap();
    let node = nodes(&status).into_iter().find(|n| n["id"] == drained).unwrap();
    assert_eq!(node["decommissioned"], true);
    // Reads must not need the drained node: stop it first.
    kill(store_of(&datanodes, drained)["pid"].as_u64().unwrap(), libc::SIGKILL);
    for chunk in inodes.chunks(3) {
        let batch: Vec<u64> = chunk.iter().map(|(ino, _)| *ino).collect();
        check_files(&volume, &batch, len).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overwrites_inside_an_erasure_coded_file_read_back() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let volume = create_volume(cluster.masters(), "coded", "ec:4+2").await;
    let len = 20 * MIB;
    let ino = write_file(&volume, "f", 1, len).await;
    let mut model = contents(1, len);
    // Random-sized overwrites at unaligned offsets, some crossing blob boundaries,
    // then a write past the end that leaves a hole.
    let mut writer = FileWriter::new(volume.data.clone(), volume.meta.clone(), ino, DEFAULT_BLOB_SIZE);
    for (i, (offset, size)) in
        [(1, 10), (4 * MIB - 100, 300), (777_777, 1_500_000), (12 * MIB + 5, 3 * MIB), (len - 7, 7)]
            .into_iter()
            .enumerate()
    {
        let bytes = contents(100 + i as u64, size);
        writer.write(offset as u64, &bytes).await.unwrap();
        model[offset..offset + size].copy_from_slice(&bytes);
    }
    let tail = contents(200, 1000);
    writer.write((len + MIB) as u64, &tail).await.unwrap();
    writer.flush().await.unwrap();
    model.resize(len + MIB, 0);
    model.extend_from_slice(&tail);

    let got = read_file(&volume.meta, &volume.data, ino, 0, u64::MAX).await.unwrap();
    assert_eq!(got.len(), model.len());
    assert!(got[..] == model[..], "the file differs from the model");
    let piece = read_file(&volume.meta, &volume.data, ino, 777_000, 5000).await.unwrap();
    assert!(piece[..] == model[777_000..782_000]);
    let hole = read_file(&volume.meta, &volume.data, ino, len as u64 + 10, 100).await.unwrap();
    assert!(hole.iter().all(|b| *b == 0), "a hole reads as zeros");
}

async fn stored_bytes(nodes: &[serde_json::Value]) -> u64 {
    let channels = Channels::default();
    let mut total = 0;
    for n in nodes {
        total += node::store_stats(&channels, n["address"].as_str().unwrap()).await.unwrap().segment_bytes;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_files_give_their_space_back() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--gc-grace", "2", "--compact-interval", "2"]);
    let volume = Arc::new(create_volume(cluster.masters(), "coded", "ec:4+2").await);
    let datanodes = cluster.nodes_of("datanode");
    let before = stored_bytes(&datanodes).await;
    // 1 GiB of files.
    let len = 64 * MIB;
    let inodes = write_files(&volume, "gc", 16, len, 4).await;
    let full = stored_bytes(&datanodes).await;
    assert!(full - before >= 3 * (len as u64) * 16 / 2, "EC 4+2 stores 1.5x the data: {} bytes", full - before);

    for (i, ino) in inodes.iter().enumerate() {
        volume.meta.unlink(ROOT, format!("gc-{i}").as_bytes()).await.unwrap();
        volume.meta.evict(*ino).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = stored_bytes(&datanodes).await;
        // Everything the files took comes back, but for less than one blob per node.
        if now <= before + 6 * (DEFAULT_BLOB_SIZE as u64) {
            eprintln!("stored bytes: {before} before, {full} with 1 GiB of files, {now} after deleting them");
            break;
        }
        assert!(Instant::now() < deadline, "space not given back: {now} bytes stored, {before} before the files");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let df = cluster.strata_ok(&["volume", "df", "coded", "--json"]);
    assert!(df.contains("\"used_bytes\": 0") || df.contains("\"used_bytes\":0"), "{df}");
}

/// Makes a directory immutable (`chattr +i`: even root cannot create files
/// in it) until dropped: a disk that stopped taking writes.
struct ImmutableDir(PathBuf);

impl ImmutableDir {
    fn new(dir: PathBuf) -> ImmutableDir {
        let status = std::process::Command::new("chattr").arg("+i").arg(&dir).status().expect("chattr runs");
        assert!(status.success(), "chattr +i {}", dir.display());
        ImmutableDir(dir)
    }
}

impl Drop for ImmutableDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_disk_moves_its_partitions_elsewhere() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--repair-delay", "3"]);
    let volume = Arc::new(create_volume(cluster.masters(), "rep", "replica:3").await);
    let len = 6 * MIB;
    let inodes = write_files(&volume, "before", 4, len, 4).await;
    let members = data_members(cluster.masters(), "rep").await;
    let victim = members[0][1];
    let datanodes = cluster.nodes_of("datanode");
    let disk = PathBuf::from(store_of(&datanodes, victim)["data_dir"].as_str().unwrap()).join("disk0");
    let _broken = ImmutableDir::new(disk);

    // The node stays alive but reports its partitions lost: they move away.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = data_members(cluster.masters(), "rep").await;
        if now.iter().flatten().all(|m| *m != victim) {
            break;
        }
        assert!(Instant::now() < deadline, "node {victim} still holds data: {now:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_for_repair(&cluster, "rep").await;
    let status = cluster.status().unwrap();
    assert!(nodes(&status).iter().any(|n| n["id"] == victim && n["alive"] == true), "the node itself is alive");
    check_files(&volume, &inodes, len).await;
    // New writes go around it too.
    let more = write_files(&volume, "after", 4, len, 4).await;
    check_files(&volume, &more, len).await;
}
