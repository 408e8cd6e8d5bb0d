//! Namespace commands that create, link and remove names, with the errors
//! POSIX gives. Each runs inside one [`Txn`]: all of it applies or none.

use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{CreateOp, Dentry, InitPartition, Inode, LinkOp, UnlinkOp};

use crate::keys;
use crate::txn::{S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, Txn, dir_is_empty, get_dentry, is_dir, partition_info, read_u64};

/// Longest name in a directory, as NAME_MAX.
pub const NAME_MAX: usize = 255;
/// Longest symlink target, as PATH_MAX minus the NUL.
pub const SYMLINK_MAX: usize = 4095;
/// Most hard links to one inode.
pub const LINK_MAX: u32 = 65_000;
pub const ROOT_INO: u64 = 1;

/// Checks a name for a new or existing directory entry.
pub fn validate_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(StrataError::invalid(format!("{:?} is not a valid file name", String::from_utf8_lossy(name))));
    }
    if name.len() > NAME_MAX {
        return Err(StrataError::new(
            ErrorCode::NameTooLong,
            format!("name of {} bytes exceeds {NAME_MAX}", name.len()),
        ));
    }
    Ok(())
}

/// The error telling the client an operation needs a transaction: an inode it
/// touches lives in another partition.
pub fn cross_partition(ino: u64) -> StrataError {
    StrataError::new(ErrorCode::CrossPartition, format!("inode {ino} lives in another meta partition"))
}

/// Fails with [`cross_partition`] unless `ino` belongs to this partition.
pub fn require_local(txn: &Txn<'_, '_>, ino: u64) -> Result<()> {
    let info = partition_info(txn.kv())?.ok_or_else(|| StrataError::unavailable("partition not initialised"))?;
    if ino >= info.inode_start && info.inode_end.is_none_or(|end| ino < end) {
        return Ok(());
    }
    Err(cross_partition(ino))
}

fn exists(parent: u64, name: &[u8]) -> StrataError {
    StrataError::new(
        ErrorCode::AlreadyExists,
        format!("{:?} exists in directory {parent}", String::from_utf8_lossy(name)),
    )
}

fn no_entry(parent: u64, name: &[u8]) -> StrataError {
    StrataError::not_found(format!("no {:?} in directory {parent}", String::from_utf8_lossy(name)))
}

/// Sets the partition's range once; the partition of inode 1 also makes the root.
pub fn init(txn: &mut Txn<'_, '_>, op: InitPartition) -> Result<Option<Inode>> {
    if partition_info(txn.kv())?.is_some() {
        return Ok(None);
    }
    use prost::Message;
    txn.put(keys::PARTITION, &op.encode_to_vec());
    let mut next = op.inode_start.max(ROOT_INO);
    let mut root = None;
    if op.inode_start <= ROOT_INO {
        let inode = Inode {
            ino: ROOT_INO,
            mode: S_IFDIR | 0o755,
            nlink: 2,
            atime_ns: txn.now_ns,
            mtime_ns: txn.now_ns,
            ctime_ns: txn.now_ns,
            crtime_ns: txn.now_ns,
            parent: ROOT_INO,
            ..Default::default()
        };
        txn.put_inode(inode.clone());
        txn.add_inode_count(1)?;
        root = Some(inode);
        next = ROOT_INO + 1;
    }
    txn.put(keys::NEXT_INODE, &next.to_be_bytes());
    Ok(root)
}

/// Closes an open-ended partition `margin` inodes above what it has
/// allocated; the bound is decided here, at apply, so it is above every inode
/// the partition ever hands out. Closing a closed partition changes nothing.
pub fn close_range(txn: &mut Txn<'_, '_>, margin: u64) -> Result<()> {
    let mut info = partition_info(txn.kv())?.ok_or_else(|| StrataError::unavailable("partition not initialised"))?;
    if info.inode_end.is_some() {
        return Ok(());
    }
    let next = read_u64(txn.kv(), keys::NEXT_INODE)?.unwrap_or(info.inode_start);
    info.inode_end = Some(next.saturating_add(margin.max(1)));
    use prost::Message;
    txn.put(keys::PARTITION, &info.encode_to_vec());
    Ok(())
}

pub fn allocate_inode(txn: &mut Txn<'_, '_>) -> Result<u64> {
    let info = partition_info(txn.kv())?
        .ok_or_else(|| StrataError::unavailable("the meta partition is not initialised yet"))?;
    let next = read_u64(txn.kv(), keys::NEXT_INODE)?.unwrap_or(info.inode_start);
    if info.inode_end.is_some_and(|end| next >= end) {
        return Err(StrataError::new(ErrorCode::NoSpace, "the meta partition has used its whole inode range"));
    }
    txn.put(keys::NEXT_INODE, &(next + 1).to_be_bytes());
    Ok(next)
}

pub fn create(txn: &mut Txn<'_, '_>, op: CreateOp) -> Result<Inode> {
    validate_name(&op.name)?;
    let parent = txn.must_dir(op.parent)?;
    if get_dentry(txn.kv(), op.parent, &op.name)?.is_some() {
        return Err(exists(op.parent, &op.name));
    }
    let file_type = match op.mode & S_IFMT {
        0 => S_IFREG,
        t @ (S_IFREG | S_IFDIR | S_IFLNK | libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK) => t,
        other => {
            return Err(StrataError::invalid(format!("file type {other:o} is not supported")));
        }
    };
    let directory = file_type == S_IFDIR;
    if file_type == S_IFLNK {
        if op.symlink_target.is_empty() {
            return Err(StrataError::not_found("a symlink needs a target"));
        }
        if op.symlink_target.len() > SYMLINK_MAX {
            return Err(StrataError::new(ErrorCode::NameTooLong, "symlink target is too long"));
        }
    } else if !op.symlink_target.is_empty() {
        return Err(StrataError::invalid("only symlinks have a target"));
    }
    // Set-group-ID directories hand their group (and, to subdirectories, the bit) down.
    let mut mode = file_type | (op.mode & 0o7777);
    let mut gid = op.gid;
    if parent.mode & libc::S_ISGID != 0 {
        gid = parent.gid;
        if directory {
            mode |= libc::S_ISGID;
        }
    }
    let ino = allocate_inode(txn)?;
    let now = txn.now_ns;
    let inode = Inode {
        ino,
        mode,
        uid: op.uid,
        gid,
        size: if file_type == S_IFLNK { op.symlink_target.len() as u64 } else { 0 },
        nlink: if directory { 2 } else { 1 },
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
        crtime_ns: now,
        rdev: op.rdev,
        symlink_target: op.symlink_target,
        parent: if directory { op.parent } else { 0 },
        quota: parent.quota,
    };
    txn.put_inode(inode.clone());
    txn.add_inode_count(1)?;
    txn.put_dentry(op.parent, &op.name, Dentry { ino, file_type });
    txn.touch_dir(parent, if directory { 1 } else { 0 });
    Ok(inode)
}

/// Drops one link of a non-directory; at zero links it becomes an orphan
/// until its last open handle is closed ([`evict`]).
pub fn drop_link(txn: &mut Txn<'_, '_>, mut inode: Inode) -> Inode {
    inode.nlink = inode.nlink.saturating_sub(1);
    inode.ctime_ns = txn.now_ns;
    if inode.nlink == 0 {
        txn.put(&keys::orphan(inode.ino), &txn.now_ns.to_be_bytes());
    }
    txn.put_inode(inode.clone());
    inode
}

/// Removes an empty directory's inode; its parent loses the `..` link.
pub fn remove_dir(txn: &mut Txn<'_, '_>, mut dir: Inode) -> Result<Inode> {
    if !dir_is_empty(txn.kv(), dir.ino)? {
        return Err(StrataError::new(ErrorCode::NotEmpty, format!("directory {} is not empty", dir.ino)));
    }
    txn.delete_inode(dir.ino)?;
    dir.nlink = 0;
    dir.ctime_ns = txn.now_ns;
    Ok(dir)
}

pub fn unlink(txn: &mut Txn<'_, '_>, op: UnlinkOp) -> Result<Inode> {
    if op.directory && op.name == b"." {
        return Err(StrataError::invalid("cannot remove '.'"));
    }
    if op.directory && op.name == b".." {
        return Err(StrataError::new(ErrorCode::NotEmpty, "cannot remove '..'"));
    }
    validate_name(&op.name)?;
    let parent = txn.must_dir(op.parent)?;
    let dentry = get_dentry(txn.kv(), op.parent, &op.name)?.ok_or_else(|| no_entry(op.parent, &op.name))?;
    require_local(txn, dentry.ino)?;
    let inode = txn.must_inode(dentry.ino)?;
    let removed = match (op.directory, is_dir(&inode)) {
        (true, false) => {
            return Err(StrataError::new(ErrorCode::NotDir, "rmdir of a non-directory"));
        }
        (false, true) => return Err(StrataError::new(ErrorCode::IsDir, "unlink of a directory")),
        (true, true) => remove_dir(txn, inode)?,
        (false, false) => {
            let removed = drop_link(txn, inode);
            if op.evict && removed.nlink == 0 {
                txn.delete_inode(removed.ino)?;
            }
            removed
        }
    };
    txn.delete_dentry(op.parent, &op.name);
    txn.touch_dir(parent, if op.directory { -1 } else { 0 });
    Ok(removed)
}

pub fn link(txn: &mut Txn<'_, '_>, op: LinkOp) -> Result<Inode> {
    validate_name(&op.new_name)?;
    require_local(txn, op.ino)?;
    let mut inode = txn.must_inode(op.ino)?;
    if is_dir(&inode) {
        return Err(StrataError::new(ErrorCode::NotPermitted, "hard links to directories are not allowed"));
    }
    if inode.nlink == 0 {
        return Err(StrataError::not_found(format!("inode {} has been unlinked", op.ino)));
    }
    if inode.nlink >= LINK_MAX {
        return Err(StrataError::new(ErrorCode::TooManyLinks, format!("inode {} has {LINK_MAX} links", op.ino)));
    }
    let parent = txn.must_dir(op.new_parent)?;
    StrataError::same_quota(inode.quota, parent.quota)?;
    if get_dentry(txn.kv(), op.new_parent, &op.new_name)?.is_some() {
        return Err(exists(op.new_parent, &op.new_name));
    }
    inode.nlink += 1;
    inode.ctime_ns = txn.now_ns;
    txn.put_inode(inode.clone());
    txn.put_dentry(op.new_parent, &op.new_name, Dentry { ino: inode.ino, file_type: inode.mode & S_IFMT });
    txn.touch_dir(parent, 0);
    Ok(inode)
}

/// The last handle of `ino` closed: reclaim it if nothing links to it.
pub fn evict(txn: &mut Txn<'_, '_>, ino: u64) -> Result<Option<Inode>> {
    let Some(inode) = txn.inode(ino)? else {
        return Ok(None);
    };
    if inode.nlink == 0 {
        txn.delete_inode(ino)?;
        return Ok(None);
    }
    Ok(Some(inode))
}
