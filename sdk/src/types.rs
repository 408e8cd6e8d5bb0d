//! The sdk's own view of namespace objects, built from the wire types by
//! validating conversions: a front end never handles a `strata_proto` message
//! whose required parts may be missing (an entry with an impossible type, an
//! extent without its blob).

use strata_common::{Result, StrataError};
use strata_proto::meta as pb;

/// The kind of a namespace object, from the type bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// The kind named by `mode`'s `S_IFMT` bits.
    pub fn from_mode(mode: u32) -> Result<FileKind> {
        Ok(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            other => return Err(StrataError::internal(format!("file type bits {other:#o} name no kind"))),
        })
    }

    /// The `S_IFMT` bits naming this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            FileKind::File => libc::S_IFREG,
            FileKind::Dir => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
        }
    }
}

/// Attributes of one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    /// Permission bits (the `0o7777` part of the mode).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub crtime_ns: i64,
    pub rdev: u64,
    pub symlink_target: Vec<u8>,
    /// For a directory, the directory holding it (0 for other kinds: a
    /// file may have several names).
    pub parent: u64,
    /// The root inode of the directory quota it counts against (0: none;
    /// a quota's root names itself).
    pub quota: u64,
}

impl Attr {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }

    pub fn is_file(&self) -> bool {
        self.kind == FileKind::File
    }

    /// The whole `st_mode`: type bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.type_bits() | self.perm
    }
}

impl TryFrom<pb::Inode> for Attr {
    type Error = StrataError;

    fn try_from(inode: pb::Inode) -> Result<Attr> {
        if inode.ino == 0 {
            return Err(StrataError::internal("a metanode answered an inode numbered 0"));
        }
        Ok(Attr {
            ino: inode.ino,
            kind: FileKind::from_mode(inode.mode)
                .map_err(|e| e.context(&format!("reading the attributes of inode {}", inode.ino)))?,
            perm: inode.mode & 0o7777,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            nlink: inode.nlink,
            atime_ns: inode.atime_ns,
            mtime_ns: inode.mtime_ns,
            ctime_ns: inode.ctime_ns,
            crtime_ns: inode.crtime_ns,
            rdev: inode.rdev,
            symlink_target: inode.symlink_target,
            parent: inode.parent,
            quota: inode.quota,
        })
    }
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: FileKind,
    /// The entry's attributes, when asked for and still there.
    pub attr: Option<Attr>,
    /// The extended attribute asked for with the listing, if the inode has it
    /// (only known where `attr` came with the listing).
    pub xattr: Option<Vec<u8>>,
}

impl TryFrom<pb::DirEntry> for DirEntry {
    type Error = StrataError;

    fn try_from(entry: pb::DirEntry) -> Result<DirEntry> {
        if entry.name.is_empty() || entry.ino == 0 {
            return Err(StrataError::internal("a metanode listed an entry without a name or an inode"));
        }
        Ok(DirEntry {
            kind: FileKind::from_mode(entry.file_type)?,
            attr: entry.attr.map(Attr::try_from).transpose()?,
            xattr: entry.xattr,
            name: entry.name,
            ino: entry.ino,
        })
    }
}

/// Where a piece of a file's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub file_offset: u64,
    pub length: u64,
    /// The blob holding the piece; its `offset` is where the piece starts in it.
    pub blob: pb::BlobRef,
}

impl TryFrom<pb::Extent> for Extent {
    type Error = StrataError;

    fn try_from(extent: pb::Extent) -> Result<Extent> {
        let blob = extent
            .blob
            .ok_or_else(|| StrataError::internal(format!("the extent at offset {} has no blob", extent.file_offset)))?;
        if extent.length == 0 || extent.file_offset.checked_add(extent.length).is_none() {
            return Err(StrataError::internal(format!(
                "the extent at offset {} of {} bytes is not a valid range",
                extent.file_offset, extent.length
            )));
        }
        Ok(Extent { file_offset: extent.file_offset, length: extent.length, blob })
    }
}

impl From<Extent> for pb::Extent {
    fn from(extent: Extent) -> pb::Extent {
        pb::Extent { file_offset: extent.file_offset, length: extent.length, blob: Some(extent.blob) }
    }
}

/// A time to set on an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// The metanode's clock when it applies the change (UTIME_NOW).
    Now,
    /// Nanoseconds since the epoch (negative: before it).
    At(i64),
}

/// The attributes one setattr changes; `None` leaves an attribute as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub ino: u64,
    /// Permission bits (the type bits are kept).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A new size: truncates or extends with a hole.
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl From<SetAttr> for pb::SetAttrOp {
    fn from(set: SetAttr) -> pb::SetAttrOp {
        let at = |t: Option<SetTime>| match t {
            Some(SetTime::At(ns)) => Some(ns),
            _ => None,
        };
        pb::SetAttrOp {
            ino: set.ino,
            mode: set.mode,
            uid: set.uid,
            gid: set.gid,
            size: set.size,
            atime_ns: at(set.atime),
            mtime_ns: at(set.mtime),
            atime_now: set.atime == Some(SetTime::Now),
            mtime_now: set.mtime == Some(SetTime::Now),
            quota: None,
        }
    }
}

/// What a lock request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// A byte-range lock (fcntl) or, with `flock`, a whole-file flock(2).
/// Locks belong to (session, owner): the session is the client's lease,
/// the owner its lock owner (a process for POSIX locks, an open file for flock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub ino: u64,
    pub session: u64,
    pub owner: u64,
    pub pid: u32,
    pub kind: LockKind,
    pub start: u64,
    /// Exclusive; `u64::MAX` means to the end of the file.
    pub end: u64,
    pub flock: bool,
}

impl From<Lock> for pb::LockOp {
    fn from(lock: Lock) -> pb::LockOp {
        let kind = match lock.kind {
            LockKind::Read => pb::LockKind::Read,
            LockKind::Write => pb::LockKind::Write,
            LockKind::Unlock => pb::LockKind::Unlock,
        };
        pb::LockOp {
            ino: lock.ino,
            session: lock.session,
            owner: lock.owner,
            pid: lock.pid,
            kind: kind as i32,
            start: lock.start,
            end: lock.end,
            flock: lock.flock,
        }
    }
}

/// A lock that is held (what F_GETLK reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLock {
    /// The session and owner holding it.
    pub session: u64,
    pub owner: u64,
    pub pid: u32,
    /// Read or write (a held lock is never `Unlock`).
    pub kind: LockKind,
    pub start: u64,
    /// Exclusive; `u64::MAX` means to the end of the file.
    pub end: u64,
}

impl TryFrom<pb::LockInfo> for HeldLock {
    type Error = StrataError;

    fn try_from(info: pb::LockInfo) -> Result<HeldLock> {
        let kind = match pb::LockKind::try_from(info.kind) {
            Ok(pb::LockKind::Read) => LockKind::Read,
            Ok(pb::LockKind::Write) => LockKind::Write,
            _ => return Err(StrataError::internal(format!("a metanode reported a held lock of kind {}", info.kind))),
        };
        if info.start > info.end {
            return Err(StrataError::internal("a metanode reported a held lock ending before it starts"));
        }
        Ok(HeldLock { session: info.session, owner: info.owner, pid: info.pid, kind, start: info.start, end: info.end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inode_with_no_kind_is_refused() {
        let inode = pb::Inode { ino: 5, mode: 0o644, ..Default::default() };
        assert!(Attr::try_from(inode).is_err());
        let file = pb::Inode { ino: 5, mode: libc::S_IFREG | 0o644, size: 3, ..Default::default() };
        let attr = Attr::try_from(file).unwrap();
        assert_eq!((attr.kind, attr.perm, attr.size), (FileKind::File, 0o644, 3));
    }

    #[test]
    fn every_kind_names_its_own_type_bits() {
        for bits in
            [libc::S_IFREG, libc::S_IFDIR, libc::S_IFLNK, libc::S_IFIFO, libc::S_IFSOCK, libc::S_IFCHR, libc::S_IFBLK]
        {
            assert_eq!(FileKind::from_mode(bits | 0o755).unwrap().type_bits(), bits);
        }
    }

    #[test]
    fn set_times_go_on_the_wire_as_values_or_now() {
        let set = SetAttr { ino: 4, atime: Some(SetTime::Now), mtime: Some(SetTime::At(-5)), ..Default::default() };
        let op = pb::SetAttrOp::from(set);
        assert_eq!((op.atime_now, op.atime_ns, op.mtime_now, op.mtime_ns), (true, None, false, Some(-5)));
    }

    #[test]
    fn a_held_lock_of_no_kind_is_refused() {
        let info = pb::LockInfo { kind: pb::LockKind::Unlock as i32, end: 4, ..Default::default() };
        assert!(HeldLock::try_from(info).is_err());
        let info = pb::LockInfo {
            kind: pb::LockKind::Write as i32,
            start: 2,
            end: 4,
            pid: 9,
            session: 3,
            ..Default::default()
        };
        let held = HeldLock { session: 3, owner: 0, pid: 9, kind: LockKind::Write, start: 2, end: 4 };
        assert_eq!(HeldLock::try_from(info).unwrap(), held);
    }

    #[test]
    fn an_extent_without_its_blob_is_refused() {
        assert!(Extent::try_from(pb::Extent { file_offset: 0, length: 4, blob: None }).is_err());
        let blob = pb::BlobRef { data_partition: 1, blob_id: 2, ..Default::default() };
        assert!(Extent::try_from(pb::Extent { file_offset: u64::MAX, length: 4, blob: Some(blob) }).is_err());
        let extent = Extent::try_from(pb::Extent { file_offset: 8, length: 4, blob: Some(blob) }).unwrap();
        assert_eq!(pb::Extent::from(extent), pb::Extent { file_offset: 8, length: 4, blob: Some(blob) });
    }

    #[test]
    fn an_entry_without_a_name_is_refused() {
        let entry = pb::DirEntry { name: Vec::new(), ino: 3, file_type: libc::S_IFREG, attr: None, xattr: None };
        assert!(DirEntry::try_from(entry).is_err());
        let entry = pb::DirEntry { name: b"a".to_vec(), ino: 3, file_type: libc::S_IFDIR, attr: None, xattr: None };
        assert_eq!(DirEntry::try_from(entry).unwrap().kind, FileKind::Dir);
    }
}
