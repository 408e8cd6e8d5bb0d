//! `strata mount` and `strata umount`. A mount runs in the background by
//! default: the command starts itself again with `--foreground`, detached,
//! logging to a file, and returns once the mount point is live (or with the
//! child's error).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use strata_client_fuse::MountConfig;
use strata_common::size::{format_size, parse_size};
use strata_sdk::cache::CacheConfig;

#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// The volume to mount.
    pub volume: String,
    pub mountpoint: PathBuf,
    /// Stay attached (serve until unmounted or interrupted).
    #[arg(long)]
    pub foreground: bool,
    /// Seconds the kernel may cache attributes.
    #[arg(long, default_value_t = 1.0)]
    pub attr_timeout: f64,
    /// Seconds the kernel may cache names.
    #[arg(long, default_value_t = 1.0)]
    pub entry_timeout: f64,
    /// FUSE session threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Async worker threads of the mount (the tokio runtime that talks to
    /// metanodes, datanodes and the disk cache; session threads hand it each
    /// request). 0: a quarter of the machine's cores, at least one (see
    /// `runtime`: fewer workers wake each other less per request).
    #[arg(long, default_value_t = 0)]
    pub io_threads: usize,
    /// Log file of a background mount (default: /tmp/strata-mount-VOLUME.log).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// L2 cache directory on local disk, reused after a restart (default:
    /// ~/.cache/strata/mounts/ + the mount point's path). One mount per directory.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Bytes the L2 disk cache may hold; 0 turns it off.
    #[arg(long, default_value = DEFAULT_CACHE_SIZE)]
    pub cache_size: String,
    /// Bytes the L1 memory cache may hold; 0 turns it off.
    #[arg(long, default_value = DEFAULT_MEM_CACHE)]
    pub mem_cache: String,
    /// Bytes per cached block (the unit fetched from datanodes and cached).
    #[arg(long, default_value = DEFAULT_CACHE_BLOCK)]
    pub cache_block: String,
    /// The kernel's read-ahead for the mount (needs root; 0 keeps the
    /// kernel's 128 KiB, with which sequential reads are about half as fast).
    #[arg(long, default_value = DEFAULT_KERNEL_READ_AHEAD)]
    pub kernel_read_ahead: String,
    /// Read and write the L2 disk cache with O_DIRECT: less CPU per block
    /// stored, but blocks read back always come from the disk, never from
    /// spare memory (for caches much larger than memory).
    #[arg(long)]
    pub cache_direct_io: bool,
    /// Do not ask the cluster's cachenodes (L3) for blocks the mount's own
    /// caches miss: read them from the datanodes.
    #[arg(long)]
    pub no_shared_cache: bool,
    /// Do not ask the metanodes for delegations: every open, lookup and
    /// stat past the kernel's timeouts asks them again (no recall streams).
    #[arg(long)]
    pub no_delegations: bool,
    /// Global flags for the foreground process of a background mount
    /// (`--metrics`, `--log-format`, `--log-level`).
    #[arg(skip)]
    pub global_args: Vec<String>,
}

pub const DEFAULT_CACHE_SIZE: &str = "4GiB";
pub const DEFAULT_MEM_CACHE: &str = "512MiB";
pub const DEFAULT_CACHE_BLOCK: &str = "1MiB";
pub const DEFAULT_KERNEL_READ_AHEAD: &str = "4MiB";

impl MountArgs {
    /// A background mount of `volume` at `mountpoint` with every default.
    pub fn new(volume: &str, mountpoint: &Path) -> MountArgs {
        MountArgs {
            volume: volume.to_string(),
            mountpoint: mountpoint.to_path_buf(),
            foreground: false,
            attr_timeout: 1.0,
            entry_timeout: 1.0,
            threads: 4,
            io_threads: 0,
            log: None,
            cache_dir: None,
            cache_size: DEFAULT_CACHE_SIZE.into(),
            mem_cache: DEFAULT_MEM_CACHE.into(),
            cache_block: DEFAULT_CACHE_BLOCK.into(),
            kernel_read_ahead: DEFAULT_KERNEL_READ_AHEAD.into(),
            cache_direct_io: false,
            no_shared_cache: false,
            no_delegations: false,
            global_args: Vec::new(),
        }
    }

    /// The mount's async worker threads (`--io-threads`, 0 resolved).
    pub fn io_threads(&self) -> usize {
        if self.io_threads > 0 {
            return self.io_threads;
        }
        crate::runtime::shared_machine_workers()
    }

    fn cache_config(&self) -> anyhow::Result<CacheConfig> {
        let disk_dir = match &self.cache_dir {
            Some(dir) => dir.clone(),
            None => {
                let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache"));
                let mountpoint = self.mountpoint.canonicalize().unwrap_or_else(|_| self.mountpoint.clone());
                let name = mountpoint.to_string_lossy().trim_start_matches('/').replace('/', "_");
                home.join(".cache/strata/mounts").join(name)
            }
        };
        Ok(CacheConfig {
            mem_bytes: parse_size(&self.mem_cache).context("--mem-cache")?,
            disk_dir: Some(disk_dir),
            disk_bytes: parse_size(&self.cache_size).context("--cache-size")?,
            block_size: parse_size(&self.cache_block).context("--cache-block")?,
            disk_direct_io: self.cache_direct_io,
            shared_tier: !self.no_shared_cache,
        })
    }
}

pub use strata_client_fuse::mountinfo::{is_mounted, unmount};

pub async fn mount(masters: Vec<String>, args: MountArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.mountpoint)
        .with_context(|| format!("creating mount point {}", args.mountpoint.display()))?;
    if is_mounted(&args.mountpoint) {
        anyhow::bail!("{} is already a mount point", args.mountpoint.display());
    }
    if !args.foreground {
        return mount_in_background(&masters, &args);
    }
    let config = MountConfig {
        masters,
        volume: args.volume.clone(),
        attr_timeout: Duration::from_secs_f64(args.attr_timeout),
        entry_timeout: Duration::from_secs_f64(args.entry_timeout),
        threads: args.threads,
        cache: args.cache_config()?,
        kernel_read_ahead: parse_size(&args.kernel_read_ahead).context("--kernel-read-ahead")?,
        delegations: !args.no_delegations,
    };
    let mounted = strata_client_fuse::mount(&config, &args.mountpoint, tokio::runtime::Handle::current()).await?;
    let served = tokio::task::spawn_blocking(move || mounted.join());
    let mountpoint = args.mountpoint.clone();
    tokio::select! {
        result = served => result.context("mount thread")?,
        () = crate::serve::shutdown_signal() => {
            tracing::info!(mountpoint = %mountpoint.display(), "unmounting on a signal");
            unmount(&mountpoint)
        }
    }
}

fn mount_in_background(masters: &[String], args: &MountArgs) -> anyhow::Result<()> {
    let log = args.log.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/strata-mount-{}.log", args.volume)));
    let child = start_mount_process(masters, args, &log)?;
    println!("{} mounted at {} (pid {}, log {})", args.volume, args.mountpoint.display(), child.id(), log.display());
    Ok(())
}

/// Starts `strata mount --foreground` for `args` in its own process group
/// (a Ctrl-C meant for the caller does not reach it), logging to `log`, and
/// returns once the mount point is live; the child's error if it exits first.
pub fn start_mount_process(masters: &[String], args: &MountArgs, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg("mount")
        .arg("--foreground")
        .args(["--attr-timeout", &args.attr_timeout.to_string()])
        .args(["--entry-timeout", &args.entry_timeout.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--io-threads", &args.io_threads.to_string()])
        .args(["--cache-size", &args.cache_size, "--mem-cache", &args.mem_cache, "--cache-block", &args.cache_block])
        .args(["--kernel-read-ahead", &args.kernel_read_ahead])
        .arg(&args.volume)
        .arg(&args.mountpoint)
        .env("STRATA_MASTER", masters.join(","))
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    if let Some(dir) = &args.cache_dir {
        command.arg("--cache-dir").arg(dir);
    }
    if args.no_delegations {
        command.arg("--no-delegations");
    }
    if args.no_shared_cache {
        command.arg("--no-shared-cache");
    }
    if args.cache_direct_io {
        command.arg("--cache-direct-io");
    }
    command.args(&args.global_args);
    let mut child = command.spawn().context("starting the mount process")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_mounted(&args.mountpoint) {
        if let Some(status) = child.try_wait()? {
            let output = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("the mount process exited ({status}):\n{output}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("{} did not appear within 60 s (see {})", args.mountpoint.display(), log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}

/// `strata cache stats MOUNTPOINT`.
pub fn cache_stats(mountpoint: &Path, json: bool) -> anyhow::Result<()> {
    let report = strata_sdk::cache::read_report(mountpoint)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("block size {}", format_size(report.block_size));
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "level", "hits", "misses", "hit rate", "hit bytes", "held", "capacity"
    );
    for (name, level) in [("memory", &report.memory), ("disk", &report.disk)] {
        if !level.enabled {
            println!("{name:<8} off");
            continue;
        }
        let lookups = level.hits + level.misses;
        let rate = if lookups == 0 { 0.0 } else { level.hits as f64 * 100.0 / lookups as f64 };
        println!(
            "{name:<8} {:>10} {:>10} {:>9.1}% {:>12} {:>12} {:>12}",
            level.hits,
            level.misses,
            rate,
            format_size(level.hit_bytes),
            format_size(level.bytes),
            format_size(level.capacity)
        );
    }
    let shared = &report.shared;
    if shared.enabled {
        println!(
            "cachenodes ({}): {} hits, {} filled from datanodes, {} failed, {} returned",
            shared.nodes,
            shared.hits,
            shared.fills,
            shared.failures,
            format_size(shared.bytes)
        );
    } else {
        println!("cachenodes: off");
    }
    println!(
        "datanodes: {} blocks loaded ({} by read-ahead), {} read in all",
        report.remote_blocks,
        report.prefetched_blocks,
        format_size(report.remote_bytes)
    );
    println!("metadata: {} lookups, attributes and opens answered from delegations", report.delegation_hits);
    if report.disk_writes_skipped > 0 {
        println!("blocks not written to disk because its writes fell behind: {}", report.disk_writes_skipped);
    }
    if report.corrupt_disk_blocks > 0 {
        println!("disk cache blocks dropped for a bad checksum: {}", report.corrupt_disk_blocks);
    }
    Ok(())
}
