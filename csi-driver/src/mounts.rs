//! The node's mount plumbing: starting a volume's FUSE process so that it
//! outlives the plugin (and, on a systemd host, the plugin's container),
//! bind mounts (read-only when asked), detaching mounts, telling a healthy
//! mount from a broken one, and statvfs.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use strata_client_fuse::mountinfo::is_mounted;

use crate::request::MountOptions;

/// What a mount point looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Mounted and answering.
    Healthy,
    /// Nothing is mounted there.
    NotMounted,
    /// Mounted, but the file system behind it is gone (its FUSE process
    /// died: ENOTCONN) or fails.
    Broken,
}

/// Whether `path` holds a mount that answers.
pub fn health(path: &Path) -> Health {
    if !is_mounted(path) {
        return Health::NotMounted;
    }
    match std::fs::metadata(path) {
        Ok(_) => Health::Healthy,
        Err(_) => Health::Broken,
    }
}

fn c_path(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).with_context(|| format!("path {} holds a NUL byte", path.display()))
}

/// Bind-mounts `source` on `target`, read-only if `read_only`.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> anyhow::Result<()> {
    let (src, dst) = (c_path(source)?, c_path(target)?);
    // SAFETY: NUL-terminated paths; a bind mount reads no filesystem type or data.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Err(error).with_context(|| format!("bind-mounting {} on {}", source.display(), target.display()));
    }
    if read_only {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        // SAFETY: as above; a remount only changes the flags of the mount at `dst`.
        let rc = unsafe { libc::mount(std::ptr::null(), dst.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            let _ = detach(target);
            return Err(error).with_context(|| format!("making {} read-only", target.display()));
        }
    }
    Ok(())
}

/// Unmounts `path` lazily (at once for new lookups; in-flight users keep
/// what they hold). Nothing mounted there is not an error.
pub fn detach(path: &Path) -> anyhow::Result<()> {
    let target = c_path(path)?;
    // SAFETY: a NUL-terminated path; umount2 has no memory effects.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EINVAL | libc::ENOENT) => Ok(()),
        _ => Err(error).with_context(|| format!("unmounting {}", path.display())),
    }
}

/// Where a volume's FUSE process lives, apart from the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuseScope {
    /// Its own process group (`strata mount` detaches itself): it outlives
    /// the plugin's process, but not a container that ends (its cgroup is
    /// killed with it).
    ProcessGroup,
    /// A transient scope of the host's systemd (`systemd-run --scope`): its
    /// own cgroup, so it outlives the plugin's container too (a DaemonSet
    /// upgrade). Needs the host's `/run/systemd` and PID namespace.
    Systemd,
}

impl FuseScope {
    /// `Systemd` when the host runs systemd (`/run/systemd/system` exists,
    /// the sd_booted(3) test) and `systemd-run` is on the PATH.
    pub fn detect() -> FuseScope {
        let booted = Path::new("/run/systemd/system").is_dir();
        let systemd_run = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("systemd-run").is_file()));
        if booted && systemd_run { FuseScope::Systemd } else { FuseScope::ProcessGroup }
    }
}

/// How the node starts a volume's FUSE process.
#[derive(Debug, Clone)]
pub struct Mounter {
    /// The `strata` binary (this one).
    pub strata: PathBuf,
    pub masters: Vec<String>,
    /// Logs and disk caches of the FUSE processes go below it.
    pub state_dir: PathBuf,
    pub scope: FuseScope,
}

impl Mounter {
    /// Mounts `volume` at `at` with `strata mount`, which starts the FUSE
    /// process in its own process group and returns once it serves: the
    /// process is then no child of the plugin and lives on when the plugin
    /// stops or is killed (in a systemd scope of its own, see
    /// [`FuseScope`]). Its disk cache stays in the state directory, so a
    /// remount after a crash starts warm.
    pub fn mount(&self, volume: &str, at: &Path, options: &MountOptions) -> anyhow::Result<()> {
        std::fs::create_dir_all(at).with_context(|| format!("creating {}", at.display()))?;
        let logs = self.state_dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let output = self.mount_command(volume, at, options).output();
        let output = output.with_context(|| format!("starting {}", self.strata.display()))?;
        if !output.status.success() {
            bail!(
                "mounting volume {volume} at {} failed ({}): {}",
                at.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// The command that mounts `volume` at `at` in the configured scope.
    fn mount_command(&self, volume: &str, at: &Path, options: &MountOptions) -> std::process::Command {
        let log = self.state_dir.join("logs").join(format!("{volume}.log"));
        let mut command = match self.scope {
            FuseScope::ProcessGroup => std::process::Command::new(&self.strata),
            FuseScope::Systemd => {
                // `--scope` runs the command here, with this environment, in a
                // new cgroup; `--collect` unloads the unit even if it failed.
                let mut command = std::process::Command::new("systemd-run");
                command
                    .args(["--scope", "--collect", "--quiet"])
                    .arg(format!("--description=strata FUSE mount of volume {volume} at {}", at.display()))
                    .arg("--")
                    .arg(&self.strata);
                command
            }
        };
        command
            .arg("mount")
            .arg(volume)
            .arg(at)
            .arg("--log")
            .arg(&log)
            .arg("--cache-dir")
            .arg(self.state_dir.join("cache").join(volume))
            .env("STRATA_MASTER", self.masters.join(","))
            .stdin(std::process::Stdio::null());
        if let Some(size) = &options.cache_size {
            command.args(["--cache-size", size]);
        }
        if let Some(size) = &options.mem_cache {
            command.args(["--mem-cache", size]);
        }
        command
    }
}

/// Whether `path` exists, or is a mount point whose file system is gone
/// (which stat cannot see through).
pub fn is_mount_or_exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok() || is_mounted(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(scope: FuseScope) -> Vec<String> {
        let mounter = Mounter {
            strata: PathBuf::from("/bin/strata"),
            masters: vec!["m:1".into()],
            state_dir: PathBuf::from("/state"),
            scope,
        };
        let options = MountOptions { cache_size: Some("1G".into()), ..Default::default() };
        let command = mounter.mount_command("vol", Path::new("/stage/vol"), &options);
        std::iter::once(command.get_program()).chain(command.get_args()).map(|a| a.to_string_lossy().into()).collect()
    }

    #[test]
    fn a_systemd_scope_wraps_the_same_mount_command() {
        let plain = argv(FuseScope::ProcessGroup);
        assert_eq!(plain[..4], ["/bin/strata", "mount", "vol", "/stage/vol"]);
        assert!(plain.ends_with(&["--cache-size".into(), "1G".into()]), "{plain:?}");
        let scoped = argv(FuseScope::Systemd);
        assert_eq!(scoped[..2], ["systemd-run", "--scope"]);
        let separator = scoped.iter().position(|a| a == "--").expect("options end before the command");
        assert_eq!(scoped[separator + 1..], plain[..], "the same mount, inside the scope");
    }
}
