//! Bulk data throughput through the sdk: N streams each write a file with
//! 1 MiB writes (durable when the writer's flush returns) and read it back in
//! 4 MiB reads, on a replicated and an erasure-coded volume; the same on a
//! local directory (write + fsync, read back) in the same run. Before each
//! read phase the page cache is emptied (when running as root), so both read
//! from disk. Also the
//! Reed-Solomon codec on its own, next to a plain memory copy.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use strata_proto::master as pb;
use strata_sdk::data::file::{DEFAULT_BLOB_SIZE, FileWriter, read_file};
use strata_sdk::data::{DataClient, ec};
use strata_sdk::{MasterClient, MetaClient};

const ROOT: u64 = 1;
const MIB: usize = 1 << 20;
const WRITE_SIZE: usize = MIB;
const READ_SIZE: usize = 4 * MIB;

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    pub workload: String,
    pub streams: usize,
    pub bytes: u64,
    pub strata_mib_s: f64,
    pub baseline_mib_s: f64,
}

impl ThroughputRow {
    pub fn ratio(&self) -> f64 {
        if self.baseline_mib_s > 0.0 { self.strata_mib_s / self.baseline_mib_s } else { 0.0 }
    }
}

pub fn print_table(rows: &[ThroughputRow], baseline: &str) {
    println!(
        "{:<24} {:>7} {:>10} {:>12} {:>14} {:>7}",
        "workload",
        "streams",
        "MiB",
        "strata MiB/s",
        format!("{baseline} MiB/s"),
        "ratio"
    );
    for r in rows {
        println!(
            "{:<24} {:>7} {:>10} {:>12.1} {:>14.1} {:>7.3}",
            r.workload,
            r.streams,
            r.bytes >> 20,
            r.strata_mib_s,
            r.baseline_mib_s,
            r.ratio()
        );
    }
}

/// Deterministic pseudo-random bytes (xorshift64, 8 at a time) for test and
/// benchmark files: the same seed always gives the same contents.
pub fn contents(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes dirty pages back and empties the kernel's page cache (root only),
/// so that the read phases that follow read from disk, Strata's datanodes and
/// the local directory alike. Answers whether it could.
pub fn drop_caches() -> bool {
    // SAFETY: sync has no memory effects.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn mib_per_sec(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / MIB as f64 / seconds.max(1e-9)
}

/// A volume for the benchmark, created if missing.
pub async fn bench_volume(
    master: &MasterClient,
    name: &str,
    redundancy: &str,
) -> anyhow::Result<(MetaClient, DataClient)> {
    if master.get_volume(name).await.is_err() {
        let redundancy: strata_common::types::Redundancy = redundancy.parse()?;
        master
            .create_volume(pb::CreateVolumeRequest {
                name: name.into(),
                redundancy: Some(redundancy.into()),
                capacity_bytes: 1 << 40,
                owner: "bench".into(),
                request_id: format!("bench-volume-{name}"),
                meta_partitions: 0,
            })
            .await?;
    }
    let meta = MetaClient::open(master, name).await?;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while meta.partition_stats().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "volume {name} never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok((meta, DataClient::open(master, name).await?))
}

/// Write then read `streams` files of `size` bytes on Strata; (write, read) MiB/s.
async fn strata_pass(
    meta: &Arc<MetaClient>,
    data: &Arc<DataClient>,
    run: &str,
    streams: usize,
    size: usize,
) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let writers = (0..streams).map(|s| {
        let (meta, data, name) = (meta.clone(), data.clone(), format!("{run}-{s}"));
        tokio::spawn(async move {
            let ino = meta.create(ROOT, name.as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0).await?.ino;
            let mut writer = FileWriter::new(data, meta, ino, DEFAULT_BLOB_SIZE);
            let chunk = contents(s as u64, WRITE_SIZE);
            for i in 0..size / WRITE_SIZE {
                writer.write((i * WRITE_SIZE) as u64, &chunk).await?;
            }
            writer.flush().await?;
            Ok::<u64, anyhow::Error>(ino)
        })
    });
    let mut inodes = Vec::new();
    for w in writers.collect::<Vec<_>>() {
        inodes.push(w.await??);
    }
    let write = mib_per_sec((streams * size) as u64, started.elapsed().as_secs_f64());

    drop_caches();
    let started = Instant::now();
    let readers = inodes.into_iter().map(|ino| {
        let (meta, data) = (meta.clone(), data.clone());
        tokio::spawn(async move {
            let mut total = 0;
            for i in 0..size.div_ceil(READ_SIZE) {
                total += read_file(&meta, &data, ino, (i * READ_SIZE) as u64, READ_SIZE as u64).await?.len();
            }
            anyhow::ensure!(total == size, "read {total} of {size} bytes");
            Ok::<(), anyhow::Error>(())
        })
    });
    for r in readers.collect::<Vec<_>>() {
        r.await??;
    }
    let read = mib_per_sec((streams * size) as u64, started.elapsed().as_secs_f64());
    for s in 0..streams {
        let name = format!("{run}-{s}");
        let ino = meta.unlink(ROOT, name.as_bytes()).await?.ino;
        meta.evict(ino).await?;
    }
    Ok((write, read))
}

/// The same on a local directory: write + fsync, then read back.
async fn local_pass(dir: &Path, run: &str, streams: usize, size: usize) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let writers = (0..streams).map(|s| {
        let path = dir.join(format!("{run}-{s}"));
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::create(&path)?;
            let chunk = contents(s as u64, WRITE_SIZE);
            for _ in 0..size / WRITE_SIZE {
                file.write_all(&chunk)?;
            }
            file.sync_all()?;
            Ok::<_, std::io::Error>(path)
        })
    });
    let mut paths = Vec::new();
    for w in writers.collect::<Vec<_>>() {
        paths.push(w.await??);
    }
    let write = mib_per_sec((streams * size) as u64, started.elapsed().as_secs_f64());
    drop_caches();
    let started = Instant::now();
    let readers = paths.iter().cloned().map(|path| {
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(&path)?;
            let mut buf = vec![0u8; READ_SIZE];
            while file.read(&mut buf)? > 0 {}
            Ok::<_, std::io::Error>(())
        })
    });
    for r in readers.collect::<Vec<_>>() {
        r.await??;
    }
    let read = mib_per_sec((streams * size) as u64, started.elapsed().as_secs_f64());
    for p in paths {
        std::fs::remove_file(p)?;
    }
    Ok((write, read))
}

/// Sequential write and read, Strata next to the local directory, per stream count.
pub async fn compare(
    label: &str,
    meta: Arc<MetaClient>,
    data: Arc<DataClient>,
    local: &Path,
    streams: usize,
    size: usize,
) -> anyhow::Result<Vec<ThroughputRow>> {
    let run = format!("data-{}-{streams}", std::process::id());
    let (local_write, local_read) = local_pass(local, &run, streams, size).await?;
    let (write, read) = strata_pass(&meta, &data, &run, streams, size).await?;
    let bytes = (streams * size) as u64;
    Ok(vec![
        ThroughputRow {
            workload: format!("{label} write"),
            streams,
            bytes,
            strata_mib_s: write,
            baseline_mib_s: local_write,
        },
        ThroughputRow {
            workload: format!("{label} read"),
            streams,
            bytes,
            strata_mib_s: read,
            baseline_mib_s: local_read,
        },
    ])
}

/// Reed-Solomon encode and decode (two data shards lost) of 4 MiB blobs on
/// one core, next to copying the same bytes.
pub fn codec(k: usize, m: usize, blobs: usize) -> anyhow::Result<Vec<ThroughputRow>> {
    let blob = contents(7, DEFAULT_BLOB_SIZE);
    let bytes = (blobs * blob.len()) as u64;
    let started = Instant::now();
    let mut copies = 0usize;
    for _ in 0..blobs {
        let copy = blob.clone();
        copies += copy[copy.len() / 2] as usize;
    }
    let copy = mib_per_sec(bytes, started.elapsed().as_secs_f64());
    std::hint::black_box(copies);

    let started = Instant::now();
    let mut shards = Vec::new();
    for _ in 0..blobs {
        shards = ec::encode(&blob, k, m)?;
    }
    let encode = mib_per_sec(bytes, started.elapsed().as_secs_f64());

    let started = Instant::now();
    for _ in 0..blobs {
        let mut columns: Vec<Option<Vec<u8>>> =
            shards.iter().enumerate().map(|(i, s)| (i >= 2).then(|| s.to_vec())).collect();
        ec::reconstruct(&mut columns, k, m)?;
    }
    let decode = mib_per_sec(bytes, started.elapsed().as_secs_f64());
    let label = format!("ec:{k}+{m}");
    Ok(vec![
        ThroughputRow {
            workload: format!("{label} encode"),
            streams: 1,
            bytes,
            strata_mib_s: encode,
            baseline_mib_s: copy,
        },
        ThroughputRow {
            workload: format!("{label} decode (2 lost)"),
            streams: 1,
            bytes,
            strata_mib_s: decode,
            baseline_mib_s: copy,
        },
    ])
}
