//! The state machine's view of its group's key space: [`GroupKv`] for reads
//! from any thread, [`ApplyBatch`] for the writes of one applied command.

use std::sync::Arc;

use rocksdb::{DB, Direction, IteratorMode, ReadOptions, WriteBatch};
use strata_common::{Result, StrataError};

use crate::keys;

/// Reads of a group's key space, for code that runs both while applying a
/// command and when serving reads.
pub trait KvRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` key/values whose key starts with `prefix` and sorts after
    /// `prefix + after` (all of them when `after` is empty), in key order,
    /// keys relative to the group.
    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(prefix, &[], usize::MAX)
    }

    /// Up to `limit` key/values with keys in [`prefix + from`, `prefix + to`),
    /// in key order. The iterator is bounded at `to`, so it never walks the
    /// (possibly deleted) keys past it.
    fn scan_range(&self, prefix: &[u8], from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// The key/value with the greatest key at or before `prefix + at` among
    /// the keys starting with `prefix`.
    fn last_at_or_before(&self, prefix: &[u8], at: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
}

/// Read access to one group's state-machine data. Cheap to clone; safe to use
/// from any thread. Reads see everything applied so far on this node.
#[derive(Clone)]
pub struct GroupKv {
    db: Arc<DB>,
    group: u64,
}

impl GroupKv {
    pub(crate) fn new(db: Arc<DB>, group: u64) -> Self {
        GroupKv { db, group }
    }

    pub fn group_id(&self) -> u64 {
        self.group
    }
}

impl KvRead for GroupKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get(keys::data_key(self.group, key))
            .map_err(|e| StrataError::internal(format!("reading group {} key: {e}", self.group)))
    }

    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let full_prefix = keys::data_key(self.group, prefix);
        let mut start = full_prefix.clone();
        start.extend_from_slice(after);
        let mut opts = ReadOptions::default();
        if let Some(end) = keys::next_prefix(&full_prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let mut out = Vec::new();
        let iter = self.db.iterator_opt(IteratorMode::From(&start, Direction::Forward), opts);
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (key, value) =
                item.map_err(|e| StrataError::internal(format!("scanning group {}: {e}", self.group)))?;
            if !after.is_empty() && key.as_ref() == start.as_slice() {
                continue; // strictly after the cookie
            }
            out.push((key[keys::data_prefix_len()..].to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn scan_range(&self, prefix: &[u8], from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let full_prefix = keys::data_key(self.group, prefix);
        let start = [full_prefix.as_slice(), from].concat();
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound([full_prefix.as_slice(), to].concat());
        let mut out = Vec::new();
        for item in self.db.iterator_opt(IteratorMode::From(&start, Direction::Forward), opts).take(limit) {
            let (key, value) =
                item.map_err(|e| StrataError::internal(format!("scanning group {}: {e}", self.group)))?;
            out.push((key[keys::data_prefix_len()..].to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn last_at_or_before(&self, prefix: &[u8], at: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let full_prefix = keys::data_key(self.group, prefix);
        let target = [full_prefix.as_slice(), at].concat();
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(full_prefix.clone());
        let mut iter = self.db.raw_iterator_opt(opts);
        iter.seek_for_prev(&target);
        iter.status().map_err(|e| StrataError::internal(format!("seeking in group {}: {e}", self.group)))?;
        match (iter.key(), iter.value()) {
            (Some(key), Some(value)) if key.starts_with(&full_prefix) => {
                Ok(Some((key[keys::data_prefix_len()..].to_vec(), value.to_vec())))
            }
            _ => Ok(None),
        }
    }
}

/// The writes of one command being applied, committed by the engine together
/// with the group's applied index.
pub struct ApplyBatch<'a> {
    kv: &'a GroupKv,
    pub(crate) batch: WriteBatch,
}

impl<'a> ApplyBatch<'a> {
    pub(crate) fn new(kv: &'a GroupKv) -> Self {
        ApplyBatch { kv, batch: WriteBatch::default() }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.batch.put(keys::data_key(self.kv.group, key), value);
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.batch.delete(keys::data_key(self.kv.group, key));
    }

    /// Drops every write staged so far, so a command that fails halfway changes nothing.
    pub fn discard(&mut self) {
        self.batch.clear();
    }
}

/// Reads see the state as it was before this command.
impl KvRead for ApplyBatch<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.kv.get(key)
    }

    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.kv.scan(prefix, after, limit)
    }

    fn scan_range(&self, prefix: &[u8], from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.kv.scan_range(prefix, from, to, limit)
    }

    fn last_at_or_before(&self, prefix: &[u8], at: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.kv.last_at_or_before(prefix, at)
    }
}
