//! The meta partition's state machine: applies `MutateRequest`s (a
//! `MetaCommand` plus the client's request id). A command either applies
//! whole or not at all; its reply (success or error) is stored under its
//! request id, so a retried request is answered without applying twice.

use prost::Message;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{MutateReply, MutateRequest, meta_command::Op};
use strata_raftstore::{ApplyBatch, KvRead, StateMachine};

use crate::txn::Txn;
use crate::{attrs, extents, gc, keys, locks, ops, rename, tx};

/// Request ids are remembered for this many applied entries.
pub const REQUEST_WINDOW: u64 = 200_000;
/// Request ids pruned per command at most.
const PRUNE_BATCH: usize = 4096;

/// The state machine of one meta partition.
pub struct MetaMachine {
    partition_id: u64,
    /// Applied entries a request id is remembered for.
    request_window: u64,
}

impl MetaMachine {
    pub fn new(partition_id: u64) -> Self {
        MetaMachine { partition_id, request_window: REQUEST_WINDOW }
    }

    /// The same machine remembering request ids for `window` applied entries (tests).
    pub fn with_request_window(partition_id: u64, window: u64) -> Self {
        MetaMachine { partition_id, request_window: window.max(1) }
    }

    /// Pruning runs every this many entries (an eighth of the window, at most 1024).
    fn prune_every(&self) -> u64 {
        (self.request_window / 8).clamp(1, 1024)
    }
}

/// Encodes a command's outcome for the proposer: 0 + `MutateReply`, or
/// 1 + error code name + NUL + message.
pub fn encode_outcome(result: &Result<MutateReply>) -> Vec<u8> {
    match result {
        Ok(reply) => {
            let mut out = vec![0];
            out.extend(reply.encode_to_vec());
            out
        }
        Err(e) => {
            let mut out = vec![1];
            out.extend_from_slice(e.code.name().as_bytes());
            out.push(0);
            out.extend_from_slice(e.message.as_bytes());
            out
        }
    }
}

pub fn decode_outcome(bytes: &[u8]) -> Result<MutateReply> {
    match bytes.split_first() {
        Some((0, reply)) => {
            MutateReply::decode(reply).map_err(|e| StrataError::internal(format!("decoding reply: {e}")))
        }
        Some((1, err)) => {
            let (code, message) = err.split_at(err.iter().position(|b| *b == 0).unwrap_or(err.len()));
            let code = ErrorCode::from_name(&String::from_utf8_lossy(code)).unwrap_or(ErrorCode::Internal);
            Err(StrataError::new(code, String::from_utf8_lossy(message.get(1..).unwrap_or_default())))
        }
        _ => Err(StrataError::internal("empty command outcome")),
    }
}

fn execute(txn: &mut Txn<'_, '_>, partition_id: u64, op: Option<Op>) -> Result<MutateReply> {
    let op = op.ok_or_else(|| StrataError::invalid("command without an operation"))?;
    if !matches!(op, Op::Init(_)) && crate::txn::partition_info(txn.kv())?.is_none() {
        return Err(StrataError::unavailable("the meta partition is not initialised yet"));
    }
    let inode = match op {
        Op::Init(op) => ops::init(txn, op)?,
        Op::Create(op) => Some(ops::create(txn, op)?),
        Op::Unlink(op) => Some(ops::unlink(txn, op)?),
        Op::Rename(op) => Some(rename::rename(txn, op)?),
        Op::Link(op) => Some(ops::link(txn, op)?),
        Op::SetAttr(op) => Some(attrs::set_attr(txn, op)?),
        Op::SetXattr(op) => Some(attrs::set_xattr(txn, op)?),
        Op::RemoveXattr(op) => Some(attrs::remove_xattr(txn, op)?),
        Op::Evict(op) => ops::evict(txn, op.ino)?,
        Op::Lock(op) => {
            locks::set_lock(txn, op)?;
            None
        }
        Op::RenewSession(op) => {
            locks::renew_session(txn, op)?;
            None
        }
        Op::EndSession(op) => {
            locks::end_session(txn, op.session)?;
            None
        }
        Op::ExpireSessions(_) => {
            locks::expire_sessions(txn)?;
            None
        }
        Op::WriteExtents(op) => Some(extents::write(txn, op)?),
        Op::PunchHole(op) => Some(extents::punch_hole(txn, op)?),
        Op::DropFreed(op) => {
            gc::drop_freed(txn, &op.keys);
            None
        }
        Op::CloseRange(op) => {
            ops::close_range(txn, op.margin)?;
            None
        }
        Op::GrantTerm(op) => {
            txn.put(keys::GRANT_TERM, &op.term.to_be_bytes());
            None
        }
        Op::TxPrepare(op) => return tx::prepare(txn, partition_id, op),
        Op::TxFinish(op) => {
            tx::finish(txn, partition_id, op.txid, op.commit)?;
            None
        }
        Op::TxResolve(op) => {
            let state = tx::resolve(txn, partition_id, op.txid)?;
            return Ok(MutateReply { tx_state: state as i32, ..Default::default() });
        }
    };
    if let Some(holder) = txn.locked {
        return Err(StrataError::unavailable(format!("a record is locked by transaction {holder:x}")));
    }
    Ok(MutateReply { inode, ..Default::default() })
}

/// Forgets request ids older than the window. It resumes after the last key
/// it deleted (kept under `Qc`) rather than from the start of the range,
/// which would walk over the tombstones of every earlier prune.
fn prune_request_ids(batch: &mut ApplyBatch<'_>, index: u64, window: u64) -> Result<()> {
    let Some(oldest_kept) = index.checked_sub(window) else {
        return Ok(());
    };
    let cursor = batch.get(keys::REQUEST_PRUNE_CURSOR)?.unwrap_or_default();
    let mut last = None;
    for (key, _) in batch.scan(keys::REQUEST_INDEX_PREFIX, &cursor, PRUNE_BATCH)? {
        if keys::u64_at(&key, 1)? >= oldest_kept {
            break;
        }
        batch.delete(&key);
        batch.delete(&keys::request(keys::u64_at(&key, 9)?));
        last = Some(key);
    }
    if let Some(key) = last {
        batch.put(keys::REQUEST_PRUNE_CURSOR, &key[keys::REQUEST_INDEX_PREFIX.len()..]);
    }
    Ok(())
}

impl StateMachine for MetaMachine {
    fn apply(&mut self, batch: &mut ApplyBatch<'_>, index: u64, command: &[u8]) -> Vec<u8> {
        let request = match MutateRequest::decode(command) {
            Ok(r) => r,
            Err(e) => {
                return encode_outcome(&Err(StrataError::internal(format!("undecodable command at {index}: {e}"))));
            }
        };
        let id = request.request_id;
        if id != 0 {
            match batch.get(&keys::request(id)) {
                Ok(Some(stored)) if stored.len() >= 8 => return stored[8..].to_vec(),
                Ok(Some(stored)) => {
                    let what = format!("stored reply of request {id:x} is {} bytes", stored.len());
                    return encode_outcome(&Err(StrataError::new(ErrorCode::Corrupted, what)));
                }
                Ok(None) => {}
                Err(e) => return encode_outcome(&Err(e)),
            }
        }
        let command = request.command.unwrap_or_default();
        let result = {
            let mut txn = Txn::new(batch, command.now_ns);
            execute(&mut txn, self.partition_id, command.op).map(|mut reply| {
                reply.touched = std::mem::take(&mut txn.touched).into_iter().collect();
                reply
            })
        };
        if result.is_err() {
            batch.discard();
        }
        let reply = encode_outcome(&result);
        // A retryable failure did not apply: the retry must run the command again.
        let applied = !matches!(&result, Err(e) if e.is_retryable());
        if id != 0 && applied {
            let mut stored = index.to_be_bytes().to_vec();
            stored.extend_from_slice(&reply);
            batch.put(&keys::request(id), &stored);
            batch.put(&keys::request_index(index, id), b"");
        }
        if index.is_multiple_of(self.prune_every())
            && let Err(e) = prune_request_ids(batch, index, self.request_window)
        {
            tracing::warn!(error = %e, "pruning request ids failed");
        }
        reply
    }
}
