//! rename(2) and renameat2(2) within a partition: over an existing target,
//! of directories (never into their own subtree), RENAME_NOREPLACE and
//! RENAME_EXCHANGE.

use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{Dentry, Inode, RenameOp};

use crate::ops::{ROOT_INO, drop_link, remove_dir, require_local, validate_name};
use crate::txn::{S_IFMT, Txn, get_dentry, is_dir};

pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

fn dentry_of(inode: &Inode) -> Dentry {
    Dentry { ino: inode.ino, file_type: inode.mode & S_IFMT }
}

/// Whether `dir` is `ancestor` or lies below it, walking parent links up to
/// the root. The walk stops at the first ancestor held by another partition:
/// clients check the whole chain before moving a directory across parents.
fn is_within(txn: &Txn<'_, '_>, mut dir: u64, ancestor: u64) -> Result<bool> {
    for _ in 0..4096 {
        if dir == ancestor {
            return Ok(true);
        }
        if dir == ROOT_INO || require_local(txn, dir).is_err() {
            return Ok(false);
        }
        dir = txn.must_inode(dir)?.parent;
    }
    Err(StrataError::internal("directory parent chain does not reach the root"))
}

pub fn rename(txn: &mut Txn<'_, '_>, op: RenameOp) -> Result<Inode> {
    if op.flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 || op.flags == RENAME_NOREPLACE | RENAME_EXCHANGE {
        return Err(StrataError::invalid(format!("rename flags {:#x} are not valid", op.flags)));
    }
    validate_name(&op.src_name)?;
    validate_name(&op.dst_name)?;
    txn.must_dir(op.src_parent)?;
    txn.must_dir(op.dst_parent)?;
    let src_dentry = get_dentry(txn.kv(), op.src_parent, &op.src_name)?
        .ok_or_else(|| StrataError::not_found(format!("no {:?} to rename", String::from_utf8_lossy(&op.src_name))))?;
    require_local(txn, src_dentry.ino)?;
    for set in op.set_xattrs.iter().cloned() {
        if set.ino != src_dentry.ino {
            return Err(StrataError::invalid("a rename sets xattrs of the moved inode only"));
        }
        crate::attrs::set_xattr(txn, set)?;
    }
    let src = txn.must_inode(src_dentry.ino)?;
    let to_quota = txn.must_inode(op.dst_parent)?.quota;
    if op.src_parent != op.dst_parent {
        let from_quota = txn.must_inode(op.src_parent)?.quota;
        if is_dir(&src) || op.flags == RENAME_EXCHANGE {
            StrataError::same_quota(from_quota, to_quota)?;
        } else if src.quota != to_quota && src.nlink > 1 {
            // Its other names stay in the old quota: it cannot count in both.
            StrataError::same_quota(src.quota, to_quota)?;
        }
    }
    let dst_dentry = get_dentry(txn.kv(), op.dst_parent, &op.dst_name)?;
    if let Some(d) = &dst_dentry {
        require_local(txn, d.ino)?;
    }

    if op.flags == RENAME_NOREPLACE && dst_dentry.is_some() {
        return Err(StrataError::new(ErrorCode::AlreadyExists, "rename target exists (RENAME_NOREPLACE)"));
    }
    if op.src_parent == op.dst_parent && op.src_name == op.dst_name {
        return Ok(src);
    }
    // A directory may not move below itself.
    if is_dir(&src) && op.src_parent != op.dst_parent && is_within(txn, op.dst_parent, src.ino)? {
        return Err(StrataError::invalid("cannot move a directory into its own subtree"));
    }
    if op.flags == RENAME_EXCHANGE {
        let dst_dentry = dst_dentry.ok_or_else(|| StrataError::not_found("RENAME_EXCHANGE target does not exist"))?;
        let dst = txn.must_inode(dst_dentry.ino)?;
        if is_dir(&dst) && op.src_parent != op.dst_parent && is_within(txn, op.src_parent, dst.ino)? {
            return Err(StrataError::invalid("cannot move a directory into its own subtree"));
        }
        return exchange(txn, &op, src, dst);
    }
    if let Some(existing) = dst_dentry {
        if existing.ino == src.ino {
            return Ok(src); // two links to the same inode: nothing to do
        }
        let target = txn.must_inode(existing.ino)?;
        match (is_dir(&src), is_dir(&target)) {
            (true, false) => {
                return Err(StrataError::new(ErrorCode::NotDir, "cannot replace a file with a directory"));
            }
            (false, true) => {
                return Err(StrataError::new(ErrorCode::IsDir, "cannot replace a directory with a file"));
            }
            (true, true) => {
                remove_dir(txn, target)?;
                let dst_parent = txn.must_dir(op.dst_parent)?;
                txn.touch_dir(dst_parent, -1);
            }
            (false, false) => {
                let replaced = drop_link(txn, target);
                if op.evict_replaced && replaced.nlink == 0 {
                    txn.delete_inode(replaced.ino)?;
                }
            }
        }
    }
    txn.delete_dentry(op.src_parent, &op.src_name);
    txn.put_dentry(op.dst_parent, &op.dst_name, dentry_of(&src));
    let mut moved = src;
    moved.ctime_ns = txn.now_ns;
    let moved_dir = is_dir(&moved);
    if moved_dir && op.src_parent != op.dst_parent {
        moved.parent = op.dst_parent;
    }
    if !moved_dir {
        // A file (one name) moves into its new directory's quota; its bytes go with it.
        moved.quota = to_quota;
    }
    txn.put_inode(moved.clone());
    // Re-read the parents: replacing a directory above may have changed them.
    let cross = moved_dir && op.src_parent != op.dst_parent;
    let src_parent = txn.must_dir(op.src_parent)?;
    txn.touch_dir(src_parent, if cross { -1 } else { 0 });
    if op.src_parent != op.dst_parent {
        let dst_parent = txn.must_dir(op.dst_parent)?;
        txn.touch_dir(dst_parent, if cross { 1 } else { 0 });
    }
    Ok(moved)
}

fn exchange(txn: &mut Txn<'_, '_>, op: &RenameOp, mut src: Inode, mut dst: Inode) -> Result<Inode> {
    txn.put_dentry(op.src_parent, &op.src_name, dentry_of(&dst));
    txn.put_dentry(op.dst_parent, &op.dst_name, dentry_of(&src));
    let now = txn.now_ns;
    src.ctime_ns = now;
    dst.ctime_ns = now;
    let mut src_parent_links = 0;
    if op.src_parent != op.dst_parent {
        if is_dir(&src) {
            src.parent = op.dst_parent;
            src_parent_links -= 1;
        }
        if is_dir(&dst) {
            dst.parent = op.src_parent;
            src_parent_links += 1;
        }
    }
    txn.put_inode(src.clone());
    txn.put_inode(dst);
    let src_parent = txn.must_dir(op.src_parent)?;
    txn.touch_dir(src_parent, src_parent_links);
    if op.src_parent != op.dst_parent {
        let dst_parent = txn.must_dir(op.dst_parent)?;
        txn.touch_dir(dst_parent, -src_parent_links);
    }
    Ok(src)
}
