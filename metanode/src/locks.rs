//! Byte-range locks (fcntl) and whole-file locks (flock) shared by every
//! client, held under client sessions that expire. A lock belongs to
//! (session, owner). POSIX semantics: an owner's new lock replaces the parts
//! of its own locks it overlaps (splitting them); locks of different owners
//! conflict when they overlap and one is a write lock. flock and POSIX locks
//! live side by side and do not conflict with each other.

use prost::Message;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{LockInfo, LockKind, LockOp, RenewSessionOp};
use strata_raftstore::KvRead;

use crate::keys;
use crate::txn::{Txn, read_u64};

/// Sessions expired per command at most (the rest go with the next one).
const EXPIRE_BATCH: usize = 256;

fn kind_of(op: &LockOp) -> Result<LockKind> {
    match LockKind::try_from(op.kind) {
        Ok(LockKind::Unspecified) | Err(_) => Err(StrataError::invalid(format!("lock kind {} is not valid", op.kind))),
        Ok(kind) => Ok(kind),
    }
}

fn decode(bytes: &[u8]) -> Result<LockInfo> {
    LockInfo::decode(bytes).map_err(|e| StrataError::new(ErrorCode::Corrupted, format!("decoding a stored lock: {e}")))
}

/// Every lock on `ino`.
pub fn locks_on(kv: &impl KvRead, ino: u64) -> Result<Vec<LockInfo>> {
    kv.scan_prefix(&keys::locks(ino))?.iter().map(|(_, v)| decode(v)).collect()
}

/// The first lock of another owner that the described lock would conflict with.
pub fn conflict(kv: &impl KvRead, op: &LockOp) -> Result<Option<LockInfo>> {
    let kind = kind_of(op)?;
    if kind == LockKind::Unlock {
        return Ok(None);
    }
    let (start, end) = range(op)?;
    Ok(locks_on(kv, op.ino)?.into_iter().find(|held| {
        let other_owner = (held.session, held.owner) != (op.session, op.owner);
        let either_writes = held.kind == LockKind::Write as i32 || kind == LockKind::Write;
        other_owner && either_writes && held.flock == op.flock && held.start < end && start < held.end
    }))
}

fn range(op: &LockOp) -> Result<(u64, u64)> {
    if op.flock {
        return Ok((0, u64::MAX));
    }
    if op.end <= op.start {
        return Err(StrataError::invalid(format!("lock range [{}, {}) is empty", op.start, op.end)));
    }
    Ok((op.start, op.end))
}

fn session_alive(kv: &impl KvRead, session: u64, now_ns: i64) -> Result<bool> {
    Ok(read_u64(kv, &keys::session(session))?.is_some_and(|expiry| expiry as i64 > now_ns))
}

fn put_lock(txn: &mut Txn<'_, '_>, lock: &LockInfo, ino: u64) {
    txn.put(&keys::lock(ino, lock.session, lock.owner, lock.start), &lock.encode_to_vec());
    txn.put(&keys::session_lock(lock.session, ino, lock.owner, lock.start), b"");
}

fn delete_lock(txn: &mut Txn<'_, '_>, lock: &LockInfo, ino: u64) {
    txn.delete(&keys::lock(ino, lock.session, lock.owner, lock.start));
    txn.delete(&keys::session_lock(lock.session, ino, lock.owner, lock.start));
}

/// F_SETLK / flock: takes, changes or releases a lock, or fails with WouldBlock.
pub fn set_lock(txn: &mut Txn<'_, '_>, op: LockOp) -> Result<()> {
    let kind = kind_of(&op)?;
    let (start, end) = range(&op)?;
    txn.must_inode(op.ino)?;
    if kind != LockKind::Unlock && !session_alive(txn.kv(), op.session, txn.now_ns)? {
        return Err(StrataError::new(ErrorCode::FailedPrecondition, format!("session {:x} has expired", op.session)));
    }
    if let Some(held) = conflict(txn.kv(), &op)? {
        return Err(StrataError::new(
            ErrorCode::WouldBlock,
            format!("range [{}, {}) is locked by pid {} of session {:x}", held.start, held.end, held.pid, held.session),
        ));
    }
    // Replace this owner's own overlapping locks, keeping the parts outside the new range.
    let own: Vec<LockInfo> = locks_on(txn.kv(), op.ino)?
        .into_iter()
        .filter(|l| (l.session, l.owner, l.flock) == (op.session, op.owner, op.flock) && l.start < end && start < l.end)
        .collect();
    for old in own {
        delete_lock(txn, &old, op.ino);
        if old.start < start {
            put_lock(txn, &LockInfo { end: start, ..old }, op.ino);
        }
        if old.end > end {
            put_lock(txn, &LockInfo { start: end, ..old }, op.ino);
        }
    }
    if kind != LockKind::Unlock {
        let lock = LockInfo {
            session: op.session,
            owner: op.owner,
            pid: op.pid,
            kind: kind as i32,
            start,
            end,
            flock: op.flock,
        };
        put_lock(txn, &lock, op.ino);
    }
    Ok(())
}

pub fn renew_session(txn: &mut Txn<'_, '_>, op: RenewSessionOp) -> Result<()> {
    if op.lease_ns <= 0 {
        return Err(StrataError::invalid("a session lease must be positive"));
    }
    let expiry = txn.now_ns.saturating_add(op.lease_ns);
    txn.put(&keys::session(op.session), &(expiry as u64).to_be_bytes());
    Ok(())
}

/// Releases every lock of `session` and forgets it.
pub fn end_session(txn: &mut Txn<'_, '_>, session: u64) -> Result<()> {
    let prefix = keys::session_locks(session);
    for (key, _) in txn.kv().scan_prefix(&prefix)? {
        let ino = keys::u64_at(&key, 9)?;
        let owner = keys::u64_at(&key, 17)?;
        let start = keys::u64_at(&key, 25)?;
        txn.delete(&keys::lock(ino, session, owner, start));
        txn.delete(&key);
    }
    txn.delete(&keys::session(session));
    Ok(())
}

/// Ends the sessions whose lease ran out before the command's time.
pub fn expire_sessions(txn: &mut Txn<'_, '_>) -> Result<()> {
    let mut expired = Vec::new();
    for (key, value) in txn.kv().scan(keys::SESSION_PREFIX, &[], usize::MAX)? {
        if expired.len() == EXPIRE_BATCH {
            break;
        }
        if (keys::u64_at(&value, 0)? as i64) <= txn.now_ns {
            expired.push(keys::u64_at(&key, 1)?);
        }
    }
    for session in expired {
        tracing::info!(session = format!("{session:x}"), "session expired; releasing its locks");
        end_session(txn, session)?;
    }
    Ok(())
}

/// Whether any session's lease has run out by `now_ns`.
pub fn has_expired_sessions(kv: &impl KvRead, now_ns: i64) -> Result<bool> {
    for (_, value) in kv.scan_prefix(keys::SESSION_PREFIX)? {
        if (keys::u64_at(&value, 0)? as i64) <= now_ns {
            return Ok(true);
        }
    }
    Ok(false)
}
