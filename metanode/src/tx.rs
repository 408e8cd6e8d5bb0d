//! The participant's side of a transaction across meta partitions.
//!
//! Prepare validates this partition's steps against its current state,
//! allocates a new inode if asked, and locks every record the steps will
//! write (other commands touching them fail retryably until the transaction
//! ends). Commit applies the steps and releases the locks; abort only
//! releases them. The primary (first participant) also records the outcome,
//! so a participant left prepared by a coordinator that died learns it by
//! resolving with the primary; the primary aborts what it never committed.

use prost::Message;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{Dentry, Inode, MutateReply, TxPrepareOp, TxState, TxStep, tx_step::Step};
use strata_raftstore::KvRead;

use crate::keys;
use crate::ops::{allocate_inode, validate_name};
use crate::read::check_owned;
use crate::txn::{S_IFDIR, S_IFLNK, S_IFMT, Txn, dir_is_empty, get_dentry, is_dir, partition_info, read_u64};

/// A prepared transaction as stored here.
pub struct Prepared {
    pub allocated_ino: u64,
    pub op: TxPrepareOp,
}

fn conflict(what: String) -> StrataError {
    StrataError::new(ErrorCode::Conflict, what)
}

pub fn load(kv: &impl KvRead, txid: u64) -> Result<Option<Prepared>> {
    let Some(bytes) = kv.get(&keys::tx(txid))? else { return Ok(None) };
    let allocated_ino = keys::u64_at(&bytes, 0)?;
    let op = TxPrepareOp::decode(&bytes[8..])
        .map_err(|e| StrataError::new(ErrorCode::Corrupted, format!("decoding prepared transaction {txid:x}: {e}")))?;
    Ok(Some(Prepared { allocated_ino, op }))
}

/// Every transaction prepared here and not finished, oldest txid first.
pub fn pending(kv: &impl KvRead) -> Result<Vec<Prepared>> {
    let mut out = Vec::new();
    for (key, _) in kv.scan_prefix(keys::TX_PREFIX)? {
        if let Some(p) = load(kv, keys::u64_at(&key, 1)?)? {
            out.push(p);
        }
    }
    Ok(out)
}

pub fn outcome(kv: &impl KvRead, txid: u64) -> Result<TxState> {
    let state = kv.get(&keys::tx_outcome(txid))?.and_then(|v| v.first().copied());
    Ok(state.and_then(|s| TxState::try_from(s as i32).ok()).unwrap_or(TxState::Unknown))
}

/// The keys of the records the steps write, given the inode prepare allocated.
fn locked_keys(steps: &[TxStep], allocated_ino: u64) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for step in steps.iter().filter_map(|s| s.step.as_ref()) {
        match step {
            Step::NewInode(_) => keys.push(keys::inode(allocated_ino)),
            Step::AddEntry(e) => {
                keys.push(keys::dentry(e.parent, &e.name));
                keys.push(keys::inode(e.parent));
            }
            Step::RemoveEntry(e) => {
                keys.push(keys::dentry(e.parent, &e.name));
                keys.push(keys::inode(e.parent));
            }
            Step::AdjustInode(a) => keys.push(keys::inode(a.ino)),
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

fn validate(txn: &mut Txn<'_, '_>, step: &Step) -> Result<u64> {
    let info = partition_info(txn.kv())?.ok_or_else(|| StrataError::unavailable("partition not initialised"))?;
    match step {
        Step::NewInode(n) => {
            let file_type = n.mode & S_IFMT;
            if file_type == 0 || (file_type == S_IFLNK && n.symlink_target.is_empty()) {
                return Err(StrataError::invalid("a new inode needs a file type (and a symlink a target)"));
            }
            allocate_inode(txn)
        }
        Step::AddEntry(e) => {
            validate_name(&e.name)?;
            check_owned(&info, e.parent)?;
            txn.must_dir(e.parent)?;
            match (get_dentry(txn.kv(), e.parent, &e.name)?, e.replace_ino) {
                (None, 0) => {}
                (Some(_), 0) => {
                    return Err(StrataError::new(
                        ErrorCode::AlreadyExists,
                        format!("{:?} exists in directory {}", String::from_utf8_lossy(&e.name), e.parent),
                    ));
                }
                (Some(d), expected) if d.ino == expected => {}
                (_, expected) => return Err(conflict(format!("the entry no longer points to inode {expected}"))),
            }
            Ok(0)
        }
        Step::RemoveEntry(e) => {
            check_owned(&info, e.parent)?;
            txn.must_dir(e.parent)?;
            match get_dentry(txn.kv(), e.parent, &e.name)? {
                Some(d) if d.ino == e.expect_ino => Ok(0),
                Some(_) => Err(conflict("the entry points to another inode now".into())),
                None => Err(StrataError::not_found(format!(
                    "no {:?} in directory {}",
                    String::from_utf8_lossy(&e.name),
                    e.parent
                ))),
            }
        }
        Step::AdjustInode(a) => {
            check_owned(&info, a.ino)?;
            let inode = txn.must_inode(a.ino)?;
            if a.remove_empty_dir {
                if !is_dir(&inode) {
                    return Err(StrataError::new(ErrorCode::NotDir, format!("inode {} is not a directory", a.ino)));
                }
                if !dir_is_empty(txn.kv(), a.ino)? {
                    return Err(StrataError::new(ErrorCode::NotEmpty, format!("directory {} is not empty", a.ino)));
                }
            }
            if a.nlink_delta > 0 && is_dir(&inode) {
                return Err(StrataError::new(ErrorCode::NotPermitted, "hard links to directories are not allowed"));
            }
            if a.nlink_delta > 0 && inode.nlink == 0 {
                return Err(StrataError::not_found(format!("inode {} has been unlinked", a.ino)));
            }
            if a.quota.is_some_and(|q| q != inode.quota) && (is_dir(&inode) || inode.nlink > 1) {
                StrataError::same_quota(inode.quota, a.quota.unwrap_or_default())?;
            }
            Ok(0)
        }
    }
}

pub fn prepare(txn: &mut Txn<'_, '_>, partition_id: u64, op: TxPrepareOp) -> Result<MutateReply> {
    if let Some(existing) = load(txn.kv(), op.txid)? {
        return Ok(MutateReply { allocated_ino: existing.allocated_ino, ..Default::default() });
    }
    if op.primary == partition_id && outcome(txn.kv(), op.txid)? != TxState::Unknown {
        return Err(conflict(format!("transaction {:x} was already resolved", op.txid)));
    }
    let mut allocated_ino = 0;
    for step in op.steps.iter().filter_map(|s| s.step.as_ref()) {
        let ino = validate(txn, step)?;
        if ino != 0 {
            allocated_ino = ino;
        }
    }
    for key in locked_keys(&op.steps, allocated_ino) {
        if let Some(holder) = read_u64(txn.kv(), &keys::tx_lock(&key))?
            && holder != op.txid
        {
            return Err(StrataError::unavailable(format!("a record is locked by transaction {holder:x}")));
        }
        txn.put(&keys::tx_lock(&key), &op.txid.to_be_bytes());
    }
    let mut record = allocated_ino.to_be_bytes().to_vec();
    record.extend(op.encode_to_vec());
    txn.put(&keys::tx(op.txid), &record);
    Ok(MutateReply { allocated_ino, ..Default::default() })
}

fn apply_step(txn: &mut Txn<'_, '_>, step: &Step, allocated_ino: u64) -> Result<()> {
    let now = txn.now_ns;
    match step {
        Step::NewInode(n) => {
            let directory = n.mode & S_IFMT == S_IFDIR;
            txn.put_inode(Inode {
                ino: allocated_ino,
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                size: if n.mode & S_IFMT == S_IFLNK { n.symlink_target.len() as u64 } else { 0 },
                nlink: if directory { 2 } else { 1 },
                atime_ns: now,
                mtime_ns: now,
                ctime_ns: now,
                crtime_ns: now,
                rdev: n.rdev,
                symlink_target: n.symlink_target.clone(),
                parent: if directory { n.parent } else { 0 },
                quota: n.quota,
            });
            txn.add_inode_count(1)?;
        }
        Step::AddEntry(e) => {
            txn.put_dentry(e.parent, &e.name, Dentry { ino: e.ino, file_type: e.file_type });
            let delta = i32::from(e.file_type == S_IFDIR) - i32::from(e.replace_ino != 0 && e.replace_is_dir);
            let parent = txn.must_dir(e.parent)?;
            txn.touch_dir(parent, delta);
        }
        Step::RemoveEntry(e) => {
            txn.delete_dentry(e.parent, &e.name);
            let parent = txn.must_dir(e.parent)?;
            txn.touch_dir(parent, -i32::from(e.is_dir));
        }
        Step::AdjustInode(a) => {
            if a.remove_empty_dir {
                return txn.delete_inode(a.ino);
            }
            let mut inode = txn.must_inode(a.ino)?;
            inode.nlink = inode.nlink.saturating_add_signed(a.nlink_delta);
            if let Some(quota) = a.quota {
                inode.quota = quota;
            }
            inode.ctime_ns = now;
            if a.new_parent != 0 && is_dir(&inode) {
                inode.parent = a.new_parent;
            }
            if !is_dir(&inode) && inode.nlink == 0 {
                txn.put(&keys::orphan(inode.ino), &now.to_be_bytes());
            }
            txn.put_inode(inode);
        }
    }
    Ok(())
}

/// Commits or aborts a transaction prepared here; finishing one that is not
/// (any more) prepared here does nothing, so retries are harmless.
pub fn finish(txn: &mut Txn<'_, '_>, partition_id: u64, txid: u64, commit: bool) -> Result<()> {
    let Some(prepared) = load(txn.kv(), txid)? else {
        // A retry is harmless, but the primary never reverses its decision:
        // a coordinator too slow to commit before the primary resolved the
        // transaction as aborted must learn it (and abort the others).
        return match outcome(txn.kv(), txid)? {
            TxState::Aborted if commit => Err(conflict(format!("transaction {txid:x} was aborted"))),
            TxState::Committed if !commit => Err(conflict(format!("transaction {txid:x} was committed"))),
            _ => Ok(()),
        };
    };
    txn.tx = Some(txid);
    if commit {
        for step in prepared.op.steps.iter().filter_map(|s| s.step.as_ref()) {
            apply_step(txn, step, prepared.allocated_ino)?;
        }
    }
    for key in locked_keys(&prepared.op.steps, prepared.allocated_ino) {
        txn.delete(&keys::tx_lock(&key));
    }
    txn.delete(&keys::tx(txid));
    if prepared.op.primary == partition_id {
        let state = if commit { TxState::Committed } else { TxState::Aborted };
        txn.put(&keys::tx_outcome(txid), &[state as u8]);
    }
    Ok(())
}

/// At the primary: the outcome of `txid`, deciding it (abort) when its
/// coordinator is gone: prepared past the deadline, or never prepared here.
pub fn resolve(txn: &mut Txn<'_, '_>, partition_id: u64, txid: u64) -> Result<TxState> {
    let known = outcome(txn.kv(), txid)?;
    if known != TxState::Unknown {
        return Ok(known);
    }
    match load(txn.kv(), txid)? {
        Some(p) if p.op.primary != partition_id => Err(StrataError::invalid("only the primary resolves a transaction")),
        Some(p) if txn.now_ns <= p.op.deadline_ns => Ok(TxState::Prepared),
        Some(_) => {
            finish(txn, partition_id, txid, false)?;
            Ok(TxState::Aborted)
        }
        None => {
            // Never prepared here: make sure it never will be.
            txn.put(&keys::tx_outcome(txid), &[TxState::Aborted as u8]);
            Ok(TxState::Aborted)
        }
    }
}
