//! The workloads, each run against one directory with plain file system
//! calls (so any mount can be measured the same way): `seq`, `rand`,
//! `small`, `meta` (mdtest-style) and `epoch` (an ML data loader). Each
//! returns its figures as [`Measure`]s; files a workload keeps between
//! rounds (the `rand` file, the `epoch` dataset) are made once per target.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::io::{AlignedBuf, Rng, create, drop_pages, open_read};
use crate::data::contents;

/// The knobs of every workload (`strata bench --help` documents them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FsConfig {
    /// Concurrent jobs of seq, rand and small.
    pub jobs: usize,
    /// Bytes each seq job writes then reads.
    pub seq_size: u64,
    /// I/O sizes of seq.
    pub io_sizes: Vec<usize>,
    /// seq with O_DIRECT.
    pub direct: bool,
    /// Before every cold read pass (seq read, rand, small read), also empty
    /// the kernel's page cache system-wide (root only): cold then means from
    /// disk on every target (a local file, a passthrough's source file, a
    /// datanode's segments), not only past the FUSE file's own pages.
    #[serde(default)]
    pub drop_caches: bool,
    /// The file rand reads from, and reads per job per block size.
    pub rand_file_size: u64,
    pub rand_ops: usize,
    /// small: files and their size.
    pub small_files: usize,
    pub small_size: usize,
    /// meta: files and threads.
    pub meta_files: usize,
    pub meta_threads: usize,
    /// epoch: dataset files, their size, loader workers and epochs.
    pub epoch_files: usize,
    pub epoch_size: usize,
    pub epoch_workers: usize,
    pub epochs: usize,
}

/// One figure of a workload run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measure {
    pub metric: String,
    pub unit: String,
    pub value: f64,
}

fn measure(metric: impl Into<String>, unit: &str, value: f64) -> Measure {
    Measure { metric: metric.into(), unit: unit.into(), value }
}

fn per_sec(count: f64, started: Instant) -> f64 {
    count / started.elapsed().as_secs_f64().max(1e-9)
}

const MIB: f64 = (1 << 20) as f64;

fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 { format!("{}MiB", bytes >> 20) } else { format!("{}KiB", bytes >> 10) }
}

/// Runs `work(i)` for i in 0..n on n threads; the first error wins.
fn parallel(n: usize, work: impl Fn(usize) -> anyhow::Result<()> + Sync) -> anyhow::Result<()> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n).map(|i| scope.spawn(move || work(i))).collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a job panicked"))?)
    })
}

/// Reads `path` to its end in `io`-byte requests; answers the bytes read.
fn read_through(path: &Path, io: usize, direct: bool) -> anyhow::Result<u64> {
    let mut file = open_read(path, direct)?;
    let mut buffer = AlignedBuf::new(io);
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer.as_mut_slice()[..io]).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// With `--drop-caches`: writes back dirty pages, then empties the page
/// cache, dentries and inodes of the whole machine.
fn cold(config: &FsConfig) -> anyhow::Result<()> {
    if !config.drop_caches {
        return Ok(());
    }
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3\n").context("emptying the page cache (--drop-caches needs root)")
}

/// seq: each job writes its file (then fsync), then reads it cold (pages
/// dropped), then reads it again (the file system's own caches warm).
pub fn seq(dir: &Path, config: &FsConfig) -> anyhow::Result<Vec<Measure>> {
    let mut out = Vec::new();
    for &io in &config.io_sizes {
        let size = (config.seq_size / io as u64).max(1) * io as u64;
        let files: Vec<PathBuf> = (0..config.jobs).map(|j| dir.join(format!("seq-{j}"))).collect();
        let started = Instant::now();
        parallel(config.jobs, |j| {
            let mut file = create(&files[j], config.direct)?;
            let mut buffer = AlignedBuf::new(io);
            buffer.as_mut_slice()[..io].copy_from_slice(&contents(j as u64 + 1, io));
            for _ in 0..size / io as u64 {
                file.write_all(&buffer.as_slice()[..io]).with_context(|| format!("writing {}", files[j].display()))?;
            }
            file.sync_all().context("fsync")
        })?;
        let total = (size * config.jobs as u64) as f64;
        out.push(measure(format!("write {}", size_label(io)), "MiB/s", per_sec(total / MIB, started)));
        for name in ["read", "reread"] {
            for file in &files {
                drop_pages(file)?;
            }
            if name == "read" {
                cold(config)?;
            }
            let started = Instant::now();
            parallel(config.jobs, |j| {
                let read = read_through(&files[j], io, config.direct)?;
                anyhow::ensure!(read == size, "{} read back {read} of {size} bytes", files[j].display());
                Ok(())
            })?;
            out.push(measure(format!("{name} {}", size_label(io)), "MiB/s", per_sec(total / MIB, started)));
        }
        for file in &files {
            fs::remove_file(file).with_context(|| format!("removing {}", file.display()))?;
        }
    }
    Ok(out)
}

/// Makes `path` a file of `size` bytes unless it already is one.
fn ensure_file(path: &Path, size: u64) -> anyhow::Result<()> {
    if fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return Ok(());
    }
    let mut file = create(path, false)?;
    let chunk = contents(7, 4 << 20);
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    file.sync_all().context("fsync")
}

/// rand: 4 KiB and 128 KiB reads at random aligned offsets of one file,
/// `jobs` at a time, after its pages were dropped.
pub fn rand(dir: &Path, config: &FsConfig) -> anyhow::Result<Vec<Measure>> {
    let path = dir.join("rand.dat");
    ensure_file(&path, config.rand_file_size)?;
    let mut out = Vec::new();
    for block in [4usize << 10, 128 << 10] {
        drop_pages(&path)?;
        cold(config)?;
        let slots = (config.rand_file_size / block as u64).max(1);
        let started = Instant::now();
        parallel(config.jobs, |j| {
            let file = open_read(&path, false)?;
            let mut rng = Rng::new(rand_seed(j, block));
            let mut buffer = vec![0u8; block];
            for _ in 0..config.rand_ops {
                let offset = rng.below(slots) * block as u64;
                file.read_exact_at(&mut buffer, offset)
                    .with_context(|| format!("reading {} at {offset}", path.display()))?;
            }
            Ok(())
        })?;
        let ops = (config.rand_ops * config.jobs) as f64;
        out.push(measure(format!("read {}", size_label(block)), "ops/s", per_sec(ops, started)));
    }
    Ok(out)
}

fn rand_seed(job: usize, block: usize) -> u64 {
    // A different sequence each run, so a later round does not replay the same offsets.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_nanos() as u64 ^ ((job as u64) << 32) ^ block as u64
}

/// small: `small_files` files of `small_size` bytes written (create, write,
/// close), read twice with their pages dropped before each pass (the second
/// pass shows the file system's own caches), then stat'ed.
pub fn small(dir: &Path, config: &FsConfig) -> anyhow::Result<Vec<Measure>> {
    let root = dir.join("small");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let body = contents(3, config.small_size);
    let path = |i: usize| root.join(format!("f{i:06}"));
    let jobs = config.jobs.max(1);
    let each = |work: &(dyn Fn(usize) -> anyhow::Result<()> + Sync)| {
        parallel(jobs, |j| (j..config.small_files).step_by(jobs).try_for_each(work))
    };
    let count = config.small_files as f64;
    let mut out = Vec::new();
    let started = Instant::now();
    each(&|i| fs::write(path(i), &body).with_context(|| format!("writing {}", path(i).display())))?;
    out.push(measure("write", "files/s", per_sec(count, started)));
    for name in ["read", "reread"] {
        each(&|i| drop_pages(&path(i)))?;
        if name == "read" {
            cold(config)?;
        }
        let started = Instant::now();
        each(&|i| {
            let mut file = fs::File::open(path(i))?;
            let mut bytes = Vec::with_capacity(config.small_size);
            file.read_to_end(&mut bytes)?;
            anyhow::ensure!(bytes.len() == config.small_size, "{} has {} bytes", path(i).display(), bytes.len());
            Ok(())
        })?;
        out.push(measure(name, "files/s", per_sec(count, started)));
    }
    let started = Instant::now();
    each(&|i| fs::metadata(path(i)).map(|_| ()).with_context(|| format!("stat {}", path(i).display())))?;
    out.push(measure("stat", "ops/s", per_sec(count, started)));
    fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    Ok(out)
}

/// meta: mdtest-style phases over `meta_files` empty files in one directory
/// per thread: create, stat, readdir, rename, unlink.
pub fn meta(dir: &Path, config: &FsConfig) -> anyhow::Result<Vec<Measure>> {
    let threads = config.meta_threads.max(1);
    let per_thread = config.meta_files / threads;
    let root = dir.join("meta");
    let dirs: Vec<PathBuf> = (0..threads).map(|t| root.join(format!("t{t}"))).collect();
    for d in &dirs {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let total = (per_thread * threads) as f64;
    let phase = |work: &(dyn Fn(&Path, usize) -> anyhow::Result<()> + Sync)| -> anyhow::Result<f64> {
        let started = Instant::now();
        parallel(threads, |t| (0..per_thread).try_for_each(|i| work(&dirs[t], i)))?;
        Ok(per_sec(total, started))
    };
    let mut out = vec![measure(
        "create",
        "ops/s",
        phase(&|d, i| fs::File::create(d.join(format!("f{i}"))).map(|_| ()).context("create"))?,
    )];
    out.push(measure(
        "stat",
        "ops/s",
        phase(&|d, i| fs::metadata(d.join(format!("f{i}"))).map(|_| ()).context("stat"))?,
    ));
    let started = Instant::now();
    parallel(threads, |t| {
        let listed = fs::read_dir(&dirs[t])?.count();
        anyhow::ensure!(listed == per_thread, "{} lists {listed} of {per_thread} files", dirs[t].display());
        Ok(())
    })?;
    out.push(measure("readdir", "entries/s", per_sec(total, started)));
    out.push(measure(
        "rename",
        "ops/s",
        phase(&|d, i| fs::rename(d.join(format!("f{i}")), d.join(format!("g{i}"))).context("rename"))?,
    ));
    out.push(measure("unlink", "ops/s", phase(&|d, i| fs::remove_file(d.join(format!("g{i}"))).context("unlink"))?));
    fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    Ok(out)
}

/// epoch: a training loader. A dataset of `epoch_files` files (made once)
/// is read whole by `epoch_workers` workers in a fresh random order each
/// epoch. The kernel's pages are dropped before each epoch, as for a dataset
/// larger than the page cache; what stays is the file system's own caching.
pub fn epoch(dir: &Path, config: &FsConfig) -> anyhow::Result<Vec<Measure>> {
    let root = dir.join("epoch-data");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let files: Vec<PathBuf> = (0..config.epoch_files).map(|i| root.join(format!("sample-{i:06}"))).collect();
    let body = contents(5, config.epoch_size);
    let workers = config.epoch_workers.max(1);
    parallel(workers, |w| {
        for path in files.iter().skip(w).step_by(workers) {
            if !fs::metadata(path).is_ok_and(|m| m.len() == config.epoch_size as u64) {
                fs::write(path, &body).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Ok(())
    })?;
    let mut out = Vec::new();
    for epoch in 0..config.epochs {
        parallel(workers, |w| files.iter().skip(w).step_by(workers).try_for_each(|p| drop_pages(p)))?;
        let mut order: Vec<usize> = (0..files.len()).collect();
        Rng::new(rand_seed(epoch, 0)).shuffle(&mut order);
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        parallel(workers, |_| {
            let mut buffer = Vec::with_capacity(config.epoch_size);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&index) = order.get(i) else { return Ok(()) };
                buffer.clear();
                let mut file = fs::File::open(&files[index])?;
                file.read_to_end(&mut buffer)?;
            }
        })?;
        out.push(measure(format!("{}", epoch + 1), "samples/s", per_sec(files.len() as f64, started)));
    }
    Ok(out)
}
