//! The mount's block caches through real processes: sequential reads fetch
//! ahead, a second read comes from memory, a restarted mount reads from its
//! disk cache, a damaged cached block is detected and read again, and with
//! both levels off reads still work (straight from the datanodes).

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use strata_sdk::cache::CacheReport;
use strata_sdk::cache::disk::{SLOT_HEADER, cache_file_name};
use strata_sdk::cache::read_report as cache_report;

const BLOCK: usize = 1 << 20;

/// 24 MiB and a bit: 25 cache blocks, the last one short.
fn contents() -> Vec<u8> {
    (0..24 * BLOCK + 12_345).map(|i| (i * 7 % 251) as u8).collect()
}

/// Drops the kernel's cached pages of `path`, so the next read reaches the mount.
fn drop_pages(path: &Path) {
    let file = fs::File::open(path).unwrap();
    // SAFETY: a valid descriptor.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "fadvise");
}

/// Reads the whole file in 128 KiB requests, like a sequential reader.
fn read_sequentially(path: &Path) -> Vec<u8> {
    drop_pages(path);
    let mut file = fs::File::open(path).unwrap();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 128 << 10];
    loop {
        let n = file.read(&mut chunk).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn wait_for(mountpoint: &Path, what: &str, done: impl Fn(&CacheReport) -> bool) -> CacheReport {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = cache_report(mountpoint).unwrap();
        if done(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "{what}: {report:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reads_come_from_memory_then_from_disk_after_a_restart() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let data = contents();
    let flags = ["--mem-cache", "64MiB", "--cache-size", "256MiB"];

    let mount = Mount::with_args(&cluster, "cached", &flags);
    let file = mount.path.join("dataset.bin");
    fs::write(&file, &data).unwrap();
    assert!(read_sequentially(&file) == data, "first read");
    let first = cache_report(&mount.path).unwrap();
    assert_eq!(first.remote_blocks, 25, "each block fetched once: {first:?}");
    assert!(first.prefetched_blocks > 0, "sequential reads fetch ahead: {first:?}");
    assert!(first.memory.enabled && first.disk.enabled);

    assert!(read_sequentially(&file) == data, "second read");
    let second = cache_report(&mount.path).unwrap();
    assert_eq!(second.remote_blocks, 25, "nothing fetched again: {second:?}");
    assert_eq!(second.remote_bytes, first.remote_bytes);
    assert!(second.memory.hits >= first.memory.hits + 25, "{second:?}");
    assert!(second.delegation_hits > first.delegation_hits, "the second open asked no metanode: {second:?}");

    // Random reads inside cached blocks.
    drop_pages(&file);
    let mut handle = fs::File::open(&file).unwrap();
    for offset in [5 * BLOCK + 4_000, 17, 24 * BLOCK + 100, 11 * BLOCK - 2_000] {
        let mut buffer = vec![0u8; 4096];
        handle.seek(SeekFrom::Start(offset as u64)).unwrap();
        handle.read_exact(&mut buffer[..4096.min(data.len() - offset)]).unwrap();
        assert!(buffer[..4096.min(data.len() - offset)] == data[offset..(offset + 4096).min(data.len())]);
    }
    drop(handle);
    wait_for(&mount.path, "every block written to the disk cache", |r| r.disk.blocks == 25);
    let cache_dir = mount.cache_dir();
    mount.unmount();

    // A new mount process on the same cache directory: everything from disk.
    let mount = Mount::with_args(&cluster, "cached", &flags);
    assert_eq!(cache_report(&mount.path).unwrap().disk.blocks, 25, "the disk cache is indexed again at start");
    assert!(read_sequentially(&file) == data, "read after a restart");
    let restarted = cache_report(&mount.path).unwrap();
    assert_eq!(restarted.remote_blocks, 0, "{restarted:?}");
    assert_eq!(restarted.disk.hits, 25, "{restarted:?}");
    mount.unmount();

    // Damage one cached block: detected, dropped, fetched again; reads stay right.
    // The first slot of the cache file holds a block (slots are taken in order).
    let damaged = cache_dir.join(cache_file_name(BLOCK as u64));
    let mut bytes = fs::read(&damaged).unwrap();
    bytes[SLOT_HEADER as usize + 1000] ^= 0x55;
    fs::write(&damaged, bytes).unwrap();
    let mount = Mount::with_args(&cluster, "cached", &["--mem-cache", "0", "--cache-size", "256MiB"]);
    assert!(read_sequentially(&file) == data, "read with a damaged cached block");
    let report = cache_report(&mount.path).unwrap();
    assert!(!report.memory.enabled);
    assert_eq!(report.corrupt_disk_blocks, 1, "{report:?}");
    assert_eq!(report.remote_blocks, 1, "only the damaged block is fetched again: {report:?}");
    mount.unmount();

    // Both levels off: reads go straight to the datanodes; without
    // delegations, every open asks the metanodes.
    let flags = ["--mem-cache", "0", "--cache-size", "0", "--no-delegations"];
    let mount = Mount::with_args(&cluster, "uncached", &flags);
    // Reads that keep jumping far apart fetch their own bytes, not whole blocks.
    let file = fs::File::open(mount.path.join("dataset.bin")).unwrap();
    for offset in [20 << 20, 2 << 20, 14 << 20, (23 << 20) + 4096] {
        let mut buffer = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buffer, offset as u64).unwrap();
        assert!(buffer == data[offset..offset + 4096], "random read at {offset}");
    }
    let report = cache_report(&mount.path).unwrap();
    assert!(report.random_reads >= 2, "{report:?}");
    assert!(report.remote_bytes < 3 << 20, "4 small reads, not 4 blocks: {report:?}");
    assert!(read_sequentially(&mount.path.join("dataset.bin")) == data, "uncached read");
    assert!(read_sequentially(&mount.path.join("dataset.bin")) == data, "uncached read again");
    let report = cache_report(&mount.path).unwrap();
    assert!(!report.memory.enabled && !report.disk.enabled, "{report:?}");
    assert_eq!(report.remote_blocks, 0);
    assert!(report.remote_bytes >= data.len() as u64, "{report:?}");
    assert_eq!(report.delegation_hits, 0, "{report:?}");
}

/// `strata dev --net-delay-ms/--net-mbit` puts a delaying proxy in front of
/// every datanode: the datanodes advertise the proxies, data crosses them
/// intact, and a second epoch over a dataset comes from the mount's caches.
#[test]
fn epochs_over_an_emulated_network_come_from_the_caches() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--net-delay-ms", "2", "--net-mbit", "1000"]);
    let listed: serde_json::Value = serde_json::from_str(&cluster.strata_ok(&["node", "list", "--json"])).unwrap();
    let datanodes = cluster.nodes_of("datanode");
    for node in &datanodes {
        let address = node["address"].as_str().unwrap();
        let advertised = node["advertise"].as_str().expect("a datanode behind a proxy advertises it");
        assert_ne!(address, advertised);
        assert!(listed.to_string().contains(advertised), "the master knows the proxy address {advertised}: {listed}");
    }

    let mount = Mount::with_args(&cluster, "train", &["--mem-cache", "64MiB"]);
    let samples: Vec<Vec<u8>> = (0..20).map(|i| (0..300_000).map(|j| ((i * 31 + j) % 251) as u8).collect()).collect();
    let dir = mount.path.join("dataset");
    fs::create_dir(&dir).unwrap();
    for (i, sample) in samples.iter().enumerate() {
        fs::write(dir.join(format!("s{i}")), sample).unwrap();
    }
    for epoch in 0..2 {
        let before = cache_report(&mount.path).unwrap();
        for (i, sample) in samples.iter().enumerate().rev() {
            drop_pages(&dir.join(format!("s{i}")));
            assert!(fs::read(dir.join(format!("s{i}"))).unwrap() == *sample, "epoch {epoch} sample {i}");
        }
        let after = cache_report(&mount.path).unwrap();
        let fetched = after.remote_bytes - before.remote_bytes;
        if epoch == 0 {
            assert_eq!(fetched, 20 * 300_000, "the first epoch reads every sample from the datanodes");
        } else {
            assert_eq!(fetched, 0, "the second epoch is served by the caches: {after:?}");
        }
    }
}
