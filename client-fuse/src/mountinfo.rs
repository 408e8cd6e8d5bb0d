//! Whether a path is a mount point, and unmounting one: shared by the
//! `strata mount` command and the CSI node plugin, which both manage mounts.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Whether `path` is a mount point right now (from /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    // A dead FUSE mount cannot be resolved (ENOTCONN): its path is taken as given.
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().any(|line| line.split(' ').nth(4).is_some_and(|p| Path::new(&unescape(p)) == path))
}

/// The source a Strata mount of `volume` shows in mountinfo.
pub fn source_of(volume: &str) -> String {
    format!("strata:{volume}")
}

/// The Strata mount holding `path`, if any: its mount point and volume (the
/// innermost where mounts nest).
pub fn strata_mount_containing(path: &Path) -> Option<(PathBuf, String)> {
    let path = path.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|line| {
            // Fields: ... mount-point ... - fstype source options
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            // The subtype is not always kept (`fuse` then, not `fuse.strata`).
            if !matches!(*fields.get(dash + 1)?, "fuse" | "fuse.strata") {
                return None;
            }
            let volume = fields.get(dash + 2)?.strip_prefix("strata:")?;
            let point = PathBuf::from(unescape(fields.get(4)?));
            path.starts_with(&point).then(|| (point, volume.to_string()))
        })
        .max_by_key(|(point, _)| point.as_os_str().len())
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts a mount point (a Strata mount's serving process then exits);
/// falls back to `fusermount3 -u` when not root.
pub fn unmount(mountpoint: &Path) -> anyhow::Result<()> {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path; umount2 has no memory effects.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    let status = std::process::Command::new("fusermount3").arg("-u").arg(mountpoint).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => Err(error).with_context(|| format!("unmounting {}", mountpoint.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_mount_points_read_back_as_paths() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_fresh_directory_is_not() {
        assert!(is_mounted(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()));
    }
}
