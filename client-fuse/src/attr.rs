//! Turning Strata's inodes and errors into what the kernel expects.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use strata_common::StrataError;
use strata_proto::meta::Inode;

/// Block size reported by stat(2) and statfs(2).
pub const BLOCK: u32 = 4096;

pub fn errno(e: &StrataError) -> Errno {
    Errno::from_i32(e.code.errno())
}

pub fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
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
pub fn file_attr(inode: &Inode, size: Option<u64>) -> FileAttr {
    let mut size = size.unwrap_or(inode.size).max(inode.size);
    if inode.mode & libc::S_IFMT == libc::S_IFDIR {
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
        kind: file_type(inode.mode),
        perm: (inode.mode & 0o7777) as u16,
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
