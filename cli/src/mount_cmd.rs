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
    /// Log file of a background mount (default: /tmp/strata-mount-VOLUME.log).
    #[arg(long)]
    pub log: Option<PathBuf>,
}

/// Whether `path` is a mount point right now (from /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().any(|line| line.split(' ').nth(4).is_some_and(|p| Path::new(p) == path))
}

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
        .arg(&args.volume)
        .arg(&args.mountpoint)
        .env("STRATA_MASTER", masters.join(","))
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
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

/// Unmounts a Strata mount point (the serving process then exits).
pub fn unmount(mountpoint: &Path) -> anyhow::Result<()> {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path; umount2 has no memory effects.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    // Not root: the setuid helper may do it.
    let status = std::process::Command::new("fusermount3").arg("-u").arg(mountpoint).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => Err(error).with_context(|| format!("unmounting {}", mountpoint.display())),
    }
}
