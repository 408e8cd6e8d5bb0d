//! The state machine's view of its group's key space: [`GroupKv`] for reads
//! from any thread, [`ApplyBatch`] for the writes of one applied command.

use std::sync::Arc;

use rocksdb::{DB, Direction, IteratorMode, WriteBatch};
use strata_common::{Result, StrataError};

use crate::keys;

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

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get(keys::data_key(self.group, key))
            .map_err(|e| StrataError::internal(format!("reading group {} key: {e}", self.group)))
    }

    /// Every key/value whose key starts with `prefix`, in key order, with keys
    /// relative to the group (as the state machine wrote them).
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = keys::data_key(self.group, prefix);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item.map_err(|e| {
                StrataError::internal(format!("scanning group {}: {e}", self.group))
            })?;
            if !key.starts_with(&start) {
                break;
            }
            out.push((key[keys::data_prefix_len()..].to_vec(), value.to_vec()));
        }
        Ok(out)
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
        ApplyBatch {
            kv,
            batch: WriteBatch::default(),
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.batch.put(keys::data_key(self.kv.group, key), value);
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.batch.delete(keys::data_key(self.kv.group, key));
    }

    /// Reads the state as it was before this command.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.kv.get(key)
    }

    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.kv.scan_prefix(prefix)
    }
}
