//! Facts about the local machine a node reports: disk space of its data directory.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Result, StrataError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

/// Inodes of a file system (statvfs's files counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InodeUsage {
    pub total: u64,
    pub used: u64,
    pub available: u64,
}

/// Space of the file system holding `path` (statvfs).
pub fn disk_usage(path: &Path) -> Result<DiskUsage> {
    usage_and_inodes(path).map(|(space, _)| space)
}

/// Space and inodes of the file system holding `path` (one statvfs).
pub fn usage_and_inodes(path: &Path) -> Result<(DiskUsage, InodeUsage)> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StrataError::invalid(format!("path {} contains a NUL byte", path.display())))?;
    // SAFETY: statvfs only writes into the struct we pass, and c_path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(StrataError::internal(format!("statvfs {}: {err}", path.display())));
    }
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    let free = st.f_bfree as u64 * frsize;
    let space = DiskUsage {
        total_bytes: total,
        used_bytes: total.saturating_sub(free),
        available_bytes: st.f_bavail as u64 * frsize,
    };
    let files = st.f_files as u64;
    let inodes =
        InodeUsage { total: files, used: files.saturating_sub(st.f_ffree as u64), available: st.f_favail as u64 };
    Ok((space, inodes))
}

/// posix_fadvise(2): a hint about a range of `file`'s page cache (0, 0: all
/// of it). A hint that fails changes nothing, so its result is not looked at.
pub fn advise(file: &std::fs::File, offset: u64, length: u64, advice: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: fadvise on an open descriptor; it only affects the page cache.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), offset as i64, length as i64, advice) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_space_of_an_existing_directory() {
        let usage = disk_usage(Path::new("/")).unwrap();
        assert!(usage.total_bytes > 0);
        assert!(usage.available_bytes <= usage.total_bytes);
    }

    #[test]
    fn missing_directory_is_an_error() {
        assert!(disk_usage(Path::new("/does/not/exist")).is_err());
    }
}
