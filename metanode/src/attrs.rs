//! setattr and extended attributes.

use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{Inode, RemoveXattrOp, SetAttrOp, SetXattrOp};

use crate::keys;
use strata_raftstore::KvRead;

use crate::txn::{S_IFMT, S_IFREG, Txn, is_dir};

pub const XATTR_CREATE: u32 = 1;
pub const XATTR_REPLACE: u32 = 2;
/// Longest xattr name (XATTR_NAME_MAX) and value (XATTR_SIZE_MAX).
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_SIZE_MAX: usize = 64 * 1024;

pub fn set_attr(txn: &mut Txn<'_, '_>, op: SetAttrOp) -> Result<Inode> {
    let mut inode = txn.must_inode(op.ino)?;
    let now = txn.now_ns;
    if let Some(mode) = op.mode {
        inode.mode = (inode.mode & S_IFMT) | (mode & 0o7777);
    }
    let owner_changes = op.uid.is_some_and(|u| u != inode.uid) || op.gid.is_some_and(|g| g != inode.gid);
    if let Some(uid) = op.uid {
        inode.uid = uid;
    }
    if let Some(gid) = op.gid {
        inode.gid = gid;
    }
    // As Linux does on chown: a non-directory loses set-user-ID, and set-group-ID
    // when it means "setgid" (group-execute set) rather than mandatory locking.
    if owner_changes && !is_dir(&inode) && op.mode.is_none() {
        inode.mode &= !libc::S_ISUID;
        if inode.mode & libc::S_IXGRP != 0 {
            inode.mode &= !libc::S_ISGID;
        }
    }
    if let Some(size) = op.size {
        if is_dir(&inode) {
            return Err(StrataError::new(ErrorCode::IsDir, "cannot truncate a directory"));
        }
        if inode.mode & S_IFMT != S_IFREG {
            return Err(StrataError::invalid("only regular files have a size to set"));
        }
        if size < inode.size {
            crate::extents::truncate(txn, op.ino, size)?;
        }
        if size != inode.size {
            inode.size = size;
            inode.mtime_ns = now;
        }
    }
    if let Some(quota) = op.quota {
        set_quota_root(txn, &inode, quota)?;
        inode.quota = quota;
    }
    if op.atime_now {
        inode.atime_ns = now;
    } else if let Some(atime) = op.atime_ns {
        inode.atime_ns = atime;
    }
    if op.mtime_now {
        inode.mtime_ns = now;
    } else if let Some(mtime) = op.mtime_ns {
        inode.mtime_ns = mtime;
    }
    inode.ctime_ns = now;
    txn.put_inode(inode.clone());
    Ok(inode)
}

/// Whether `dir` may become the root of quota `quota` (its own number) or
/// leave one (0): only an empty directory, whose usage is then itself, so the
/// counters stay exact without walking a subtree.
fn set_quota_root(txn: &Txn<'_, '_>, dir: &Inode, quota: u64) -> Result<()> {
    if !is_dir(dir) {
        return Err(StrataError::new(ErrorCode::NotDir, format!("inode {} is not a directory", dir.ino)));
    }
    if quota != 0 && quota != dir.ino {
        return Err(StrataError::invalid(format!("a quota on directory {} is numbered {}", dir.ino, dir.ino)));
    }
    if quota != dir.quota && !crate::txn::dir_is_empty(txn.kv(), dir.ino)? {
        return Err(StrataError::new(
            ErrorCode::FailedPrecondition,
            format!("directory {} is not empty: a quota is set on an empty directory", dir.ino),
        ));
    }
    Ok(())
}

fn validate_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.contains(&0) {
        return Err(StrataError::invalid("xattr names are non-empty and without NUL"));
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(StrataError::new(ErrorCode::NameTooLong, "xattr name is too long"));
    }
    Ok(())
}

pub fn set_xattr(txn: &mut Txn<'_, '_>, op: SetXattrOp) -> Result<Inode> {
    validate_xattr_name(&op.name)?;
    if op.value.len() > XATTR_SIZE_MAX {
        return Err(StrataError::invalid(format!("xattr values are at most {XATTR_SIZE_MAX} bytes")));
    }
    if op.flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
        return Err(StrataError::invalid(format!("xattr flags {:#x} are not valid", op.flags)));
    }
    let mut inode = txn.must_inode(op.ino)?;
    let key = keys::xattr(op.ino, &op.name);
    let present = txn.kv().get(&key)?.is_some();
    if op.flags & XATTR_CREATE != 0 && present {
        return Err(StrataError::new(ErrorCode::AlreadyExists, "xattr exists (XATTR_CREATE)"));
    }
    if op.flags & XATTR_REPLACE != 0 && !present {
        return Err(StrataError::new(ErrorCode::NoData, "no such xattr (XATTR_REPLACE)"));
    }
    txn.put(&key, &op.value);
    inode.ctime_ns = txn.now_ns;
    txn.put_inode(inode.clone());
    Ok(inode)
}

pub fn remove_xattr(txn: &mut Txn<'_, '_>, op: RemoveXattrOp) -> Result<Inode> {
    validate_xattr_name(&op.name)?;
    let mut inode = txn.must_inode(op.ino)?;
    let key = keys::xattr(op.ino, &op.name);
    if txn.kv().get(&key)?.is_none() {
        return Err(StrataError::new(ErrorCode::NoData, "no such xattr"));
    }
    txn.delete(&key);
    inode.ctime_ns = txn.now_ns;
    txn.put_inode(inode.clone());
    Ok(inode)
}
