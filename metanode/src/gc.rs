//! Which blobs no file needs any more. Every extent entry holds a reference
//! on its blob (`r` data-partition blob → count); when the last reference
//! goes (overwrite, truncate, reclaimed inode) the blob is queued as freed
//! (`g` time data-partition blob), in the same command. The partition leader
//! deletes queued blobs from the datanodes once they have waited out the grace
//! period (longer than any client keeps an extent map), then drops them from
//! the queue with a `DropFreed` command.

use std::collections::HashMap;

use strata_common::Result;
use strata_proto::meta::BlobRef;
use strata_raftstore::KvRead;

use crate::keys;
use crate::txn::{Txn, read_u64};

/// Reference counts changed by one command, applied together so a blob moved
/// between extents of the same command never looks unreferenced.
#[derive(Default)]
pub struct RefDeltas(HashMap<(u64, u64), i64>);

impl RefDeltas {
    pub fn add(&mut self, blob: Option<&BlobRef>, delta: i64) {
        if let Some(b) = blob {
            *self.0.entry((b.data_partition, b.blob_id)).or_default() += delta;
        }
    }
}

/// Applies `deltas`; blobs left without references are queued as freed.
pub fn apply(txn: &mut Txn<'_, '_>, deltas: RefDeltas) -> Result<()> {
    for ((partition, blob), delta) in deltas.0 {
        if delta == 0 {
            continue;
        }
        let key = keys::blob_refs(partition, blob);
        let count = match txn.blob_refs.get(&(partition, blob)) {
            Some(count) => *count,
            None => read_u64(txn.kv(), &key)?.unwrap_or(0),
        };
        let updated = count.saturating_add_signed(delta);
        txn.blob_refs.insert((partition, blob), updated);
        let freed = keys::freed_blob(txn.now_ns, partition, blob);
        if updated == 0 {
            txn.delete(&key);
            txn.put(&freed, &[]);
        } else {
            txn.put(&key, &updated.to_be_bytes());
            // Referenced again later in the same command: not freed after all.
            txn.delete(&freed);
        }
    }
    Ok(())
}

/// A queued freed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freed {
    pub key: Vec<u8>,
    pub freed_at_ns: i64,
    pub data_partition: u64,
    pub blob_id: u64,
    /// Referenced again since it was queued (an extent map read before the
    /// free was committed to another file of the partition, e.g. an S3
    /// multipart object made of its parts): only its queue entry goes.
    pub referenced: bool,
}

/// Up to `limit` freed blobs queued before `before_ns`, oldest first,
/// starting after the queue key `after` (all when it is empty): the caller's
/// cursor past the entries it already dropped, whose deletions would
/// otherwise be walked again on every round.
pub fn due(kv: &impl KvRead, after: &[u8], before_ns: i64, limit: usize) -> Result<Vec<Freed>> {
    let after = after.strip_prefix(keys::FREED_PREFIX).unwrap_or(&[]);
    let mut out = Vec::new();
    for (key, _) in kv.scan(keys::FREED_PREFIX, after, limit)? {
        let freed_at_ns = keys::u64_at(&key, 1)? as i64;
        if freed_at_ns >= before_ns {
            break;
        }
        let (data_partition, blob_id) = (keys::u64_at(&key, 9)?, keys::u64_at(&key, 17)?);
        let referenced = read_u64(kv, &keys::blob_refs(data_partition, blob_id))?.is_some_and(|n| n > 0);
        out.push(Freed { freed_at_ns, data_partition, blob_id, key, referenced });
    }
    Ok(out)
}

/// How many freed blobs wait in the queue (up to `limit`).
pub fn queued(kv: &impl KvRead, limit: usize) -> Result<usize> {
    Ok(kv.scan(keys::FREED_PREFIX, &[], limit)?.len())
}

/// Forgets freed blobs the datanodes have deleted.
pub fn drop_freed(txn: &mut Txn<'_, '_>, keys: &[Vec<u8>]) {
    for key in keys {
        if key.first() == keys::FREED_PREFIX.first() {
            txn.delete(key);
        }
    }
}
