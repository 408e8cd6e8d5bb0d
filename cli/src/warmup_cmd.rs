//! `strata warmup PATH…`: loads files into a cache level before a job reads
//! them (L3: the cluster's cachenodes pull the blocks from the datanodes
//! themselves; L2: the files are read through the mount they are on, which
//! keeps them in its disk cache), with a progress line (files, bytes, rate,
//! ETA; a fresh line every few seconds when not on a terminal) and a
//! `--json` summary. And `strata cache stats` without a mount point: the
//! shared tier cluster-wide, per cachenode.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use strata_client_fuse::mountinfo::strata_mount_containing;
use strata_common::size::format_size;
use strata_sdk::MasterClient;
use strata_sdk::cache::CacheConfig;
use strata_sdk::cache::DEFAULT_BLOCK_SIZE;
use strata_sdk::fs::Volume;
use strata_sdk::warmup::{self, WarmProgress, WarmSummary};

use crate::admin::{CacheNodeView, print_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Level {
    /// The mount's own disk cache (PATH must be on a Strata mount).
    L2,
    /// The cluster's cachenodes.
    L3,
}

#[derive(Debug, Args)]
pub struct WarmupArgs {
    /// Files or directories (whole trees) on a Strata mount, or paths in
    /// the volume given with --volume.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "l3")]
    pub level: Level,
    /// Blocks (L3) or files (L2) loaded at once.
    #[arg(long, default_value_t = 16)]
    pub threads: usize,
    /// The volume the paths are in, when they are not paths on a mount.
    #[arg(long)]
    pub volume: Option<String>,
}

/// The volume and the paths in it that `args` name.
fn resolve(args: &WarmupArgs) -> anyhow::Result<(String, Vec<Vec<u8>>)> {
    if let Some(volume) = &args.volume {
        let paths = args.paths.iter().map(|p| p.as_os_str().as_encoded_bytes().to_vec()).collect();
        return Ok((volume.clone(), paths));
    }
    let mut volume = None;
    let mut paths = Vec::new();
    for path in &args.paths {
        let (point, name) = strata_mount_containing(path)
            .with_context(|| format!("{} is not on a Strata mount (name the volume with --volume)", path.display()))?;
        if volume.as_ref().is_some_and(|v| *v != name) {
            anyhow::bail!("the paths are on mounts of different volumes");
        }
        volume = Some(name);
        let inside = path.canonicalize()?.strip_prefix(&point)?.to_path_buf();
        let mut bytes = b"/".to_vec();
        bytes.extend_from_slice(inside.as_os_str().as_encoded_bytes());
        paths.push(bytes);
    }
    Ok((volume.expect("at least one path"), paths))
}

pub async fn run(masters: Vec<String>, args: WarmupArgs, json: bool) -> anyhow::Result<()> {
    if args.level == Level::L2 {
        return warm_through_mount(&args, json);
    }
    let (name, paths) = resolve(&args)?;
    let master = MasterClient::new(masters)?;
    let cache = CacheConfig {
        mem_bytes: 0,
        disk_dir: None,
        disk_bytes: 0,
        block_size: DEFAULT_BLOCK_SIZE,
        disk_direct_io: false,
        shared_tier: true,
    };
    let volume = Volume::connect(&master, &name, &cache).await.with_context(|| format!("opening volume {name}"))?;
    let files = warmup::collect(&volume, &paths).await.context("listing the files to warm")?;
    let progress = Arc::new(WarmProgress::default());
    let started = Instant::now();
    let shown = ProgressLine::start(progress.clone(), files.len() as u64, started, json);
    let result = warmup::warm(&volume, &files, args.threads, &progress).await;
    shown.stop();
    result.context("warming the shared cache tier")?;
    finish(&progress, files.len() as u64, started, json)
}

/// Reads the files through their mount, `threads` at a time (L2).
fn warm_through_mount(args: &WarmupArgs, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(args.volume.is_none(), "--level l2 warms through a mount: give paths on it, not --volume");
    let mut files = Vec::new();
    for path in &args.paths {
        strata_mount_containing(path).with_context(|| format!("{} is not on a Strata mount", path.display()))?;
        collect_local(path, &mut files)?;
    }
    let progress = Arc::new(WarmProgress::default());
    progress.bytes_total.store(files.iter().map(|(_, size)| size).sum(), Ordering::Relaxed);
    let started = Instant::now();
    let shown = ProgressLine::start(progress.clone(), files.len() as u64, started, json);
    let queue = Mutex::new(files.iter());
    let failed = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..args.threads.max(1) {
            scope.spawn(|| {
                let mut buffer = vec![0u8; 1 << 20];
                while let Some((path, _)) = queue.lock().unwrap().next() {
                    if let Err(e) = read_through(path, &mut buffer, &progress) {
                        *failed.lock().unwrap() = Some(format!("reading {}: {e}", path.display()));
                        return;
                    }
                    progress.files_done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    shown.stop();
    if let Some(e) = failed.into_inner().unwrap() {
        anyhow::bail!(e);
    }
    finish(&progress, files.len() as u64, started, json)
}

fn read_through(path: &Path, buffer: &mut [u8], progress: &WarmProgress) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    loop {
        let n = file.read(buffer)?;
        if n == 0 {
            return Ok(());
        }
        progress.bytes_done.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn collect_local(path: &Path, files: &mut Vec<(PathBuf, u64)>) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        files.push((path.to_path_buf(), meta.len()));
    } else if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            collect_local(&entry.path(), files)?;
        }
    }
    Ok(())
}

/// The progress line, drawn by a thread of its own until stopped: one
/// line rewritten on a terminal, a line every five seconds otherwise,
/// nothing with `--json`.
struct ProgressLine {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl ProgressLine {
    fn start(progress: Arc<WarmProgress>, files: u64, started: Instant, json: bool) -> ProgressLine {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let terminal = std::io::stderr().is_terminal();
            let every = if terminal { Duration::from_millis(250) } else { Duration::from_secs(5) };
            let mut last = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if json || last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                let line = progress_line(&progress, files, started);
                if terminal {
                    eprint!("\r{line}\x1b[K");
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!("{line}");
                }
            }
        });
        ProgressLine { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn progress_line(progress: &WarmProgress, files: u64, started: Instant) -> String {
    let done = progress.bytes_done.load(Ordering::Relaxed);
    let total = progress.bytes_total.load(Ordering::Relaxed).max(done);
    let seconds = started.elapsed().as_secs_f64().max(1e-3);
    let rate = done as f64 / seconds;
    let eta = if rate > 0.0 && total > done { format!("{:.0}s", (total - done) as f64 / rate) } else { "-".into() };
    format!(
        "{}/{files} files  {} of {}  {}/s  ETA {eta}",
        progress.files_done.load(Ordering::Relaxed),
        format_size(done),
        format_size(total),
        format_size(rate as u64),
    )
}

fn finish(progress: &WarmProgress, files: u64, started: Instant, json: bool) -> anyhow::Result<()> {
    let seconds = started.elapsed().as_secs_f64();
    let bytes = progress.bytes_done.load(Ordering::Relaxed);
    let summary = WarmSummary {
        files,
        bytes,
        blocks: progress.blocks_done.load(Ordering::Relaxed),
        blocks_failed: progress.blocks_failed.load(Ordering::Relaxed),
        seconds,
        bytes_per_sec: bytes as f64 / seconds.max(1e-9),
    };
    if json {
        return print_json(&summary);
    }
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    println!(
        "warmed {} files, {} in {:.1}s ({}/s){}",
        summary.files,
        format_size(summary.bytes),
        summary.seconds,
        format_size(summary.bytes_per_sec as u64),
        match summary.blocks_failed {
            0 => String::new(),
            n => format!("; {n} blocks not taken by the tier (run it again to finish)"),
        }
    );
    Ok(())
}

/// The shared tier cluster-wide: what each cachenode holds and its hits.
pub async fn cluster_cache_stats(master: &MasterClient, json: bool) -> anyhow::Result<()> {
    let nodes = master.list_nodes().await?;
    let cachenodes: Vec<(u64, String, bool, CacheNodeView)> = nodes
        .into_iter()
        .filter(|n| n.role == strata_proto::master::NodeRole::Cachenode as i32)
        .map(|n| (n.id, n.address, n.alive, n.cache.map(CacheNodeView::from).unwrap_or_else(empty_view)))
        .collect();
    if json {
        let rows: Vec<serde_json::Value> = cachenodes
            .iter()
            .map(|(id, address, alive, view)| serde_json::json!({"id": id, "address": address, "alive": alive, "cache": view}))
            .collect();
        return print_json(&rows);
    }
    if cachenodes.is_empty() {
        println!("no cachenodes: the shared cache tier is off");
        return Ok(());
    }
    println!(
        "{:<6} {:<22} {:<6} {:>10} {:>10} {:>9} {:>12} {:>12} {:>10}",
        "ID", "ADDRESS", "STATE", "HITS", "MISSES", "HIT RATE", "MEMORY", "DISK", "EVICTIONS"
    );
    for (id, address, alive, c) in &cachenodes {
        println!(
            "{id:<6} {address:<22} {:<6} {:>10} {:>10} {:>9} {:>12} {:>12} {:>10}",
            if *alive { "alive" } else { "dead" },
            c.hits,
            c.misses,
            c.hit_ratio.map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
            format_size(c.memory_bytes),
            format_size(c.disk_bytes),
            c.evictions
        );
    }
    Ok(())
}

fn empty_view() -> CacheNodeView {
    CacheNodeView::from(strata_proto::master::CacheTierReport::default())
}
