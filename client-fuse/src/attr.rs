//! Turning Strata's inodes and errors into what the kernel expects.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use strata_common::StrataError;
use strata_sdk::types::{Attr, FileKind};

/// Block size reported by stat(2) and statfs(2).
pub const BLOCK: u32 = 4096;

/// The errno a failed request answers with; every error reply comes through
/// here, so this is where the mount counts its errors by code.
pub fn errno(e: &StrataError) -> Errno {
    metrics::counter!(strata_common::telemetry::ERRORS_TOTAL, "service" => "fuse", "code" => e.code.name())
        .increment(1);
    Errno::from_i32(e.code.errno())
}

pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::File => FileType::RegularFile,
    }
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// The kernel's view of an inode; `size` overrides the stored size (data
/// still buffered in this mount).
pub fn file_attr(inode: &Attr, size: Option<u64>) -> FileAttr {
    let mut size = size.unwrap_or(inode.size).max(inode.size);
    if inode.is_dir() {
        // Directories report one block, as most local file systems do (du agrees).
        size = size.max(u64::from(BLOCK));
    }
    FileAttr {
        ino: INodeNo(inode.ino),
        size,
        blocks: size.div_ceil(512),
        atime: time(inode.atime_ns),
        mtime: time(inode.mtime_ns),
        ctime: time(inode.ctime_ns),
        crtime: time(inode.crtime_ns),
        kind: file_type(inode.kind),
        perm: inode.perm as u16,
        nlink: inode.nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev: inode.rdev as u32,
        blksize: BLOCK,
        flags: 0,
    }
}

/// Nanoseconds since the epoch of a time the kernel sent.
pub fn to_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}
