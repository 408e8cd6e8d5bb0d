//! One group's Raft log and state in the node's RocksDB, behind raft-rs's
//! [`Storage`] trait. The engine's ready loop is the only writer: it stages
//! log appends, hard states and snapshot installs into the shared write batch
//! and then updates the in-memory copies kept here.

use std::collections::VecDeque;
use std::sync::Arc;

use prost_raft::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use rocksdb::{DB, Direction, IteratorMode, ReadOptions, WriteBatch};

use crate::keys;
use crate::snapfile::{Descriptor, SnapshotFiles, SnapshotReader};
use crate::snapshot::SnapshotData;

/// The log index and term a freshly bootstrapped group starts from. Starting
/// above zero means a member added later cannot replay the log from index 1
/// (the bootstrap membership is not in the log), so it always gets a snapshot.
pub const BOOTSTRAP_INDEX: u64 = 5;
pub const BOOTSTRAP_TERM: u64 = 5;

/// Recent log entries kept in memory: appends to followers and term lookups
/// are served from here instead of RocksDB (whose log range is full of
/// truncation tombstones).
const ENTRY_CACHE: usize = 1024;

pub struct GroupStorage {
    db: Arc<DB>,
    group: u64,
    /// A contiguous suffix of the log, ending at `last_index`.
    cache: VecDeque<Entry>,
    hard: HardState,
    conf: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    applied: u64,
    peers: Vec<(u64, String)>,
    /// This node's snapshot files (made when a follower needs one).
    files: Arc<SnapshotFiles>,
}

/// Bytes of snapshot pairs written per batch while installing.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

fn other(err: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(err.to_string().into()))
}

fn encode_pair(a: u64, b: u64) -> Vec<u8> {
    let mut v = a.to_be_bytes().to_vec();
    v.extend_from_slice(&b.to_be_bytes());
    v
}

/// The u64 at `at` of the stored value of raft state `what`; a value too
/// short is `Corrupted`, naming it.
pub(crate) fn decode_u64(what: &str, v: &[u8], at: usize) -> strata_common::Result<u64> {
    v.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(|| {
        strata_common::StrataError::new(
            strata_common::ErrorCode::Corrupted,
            format!("stored raft state {what} is {} bytes, too short", v.len()),
        )
    })
}

/// The (index, term) pair stored as raft state `what`.
pub(crate) fn decode_pair(what: &str, v: &[u8]) -> strata_common::Result<(u64, u64)> {
    Ok((decode_u64(what, v, 0)?, decode_u64(what, v, 8)?))
}

impl GroupStorage {
    /// Loads a group's state; a group never seen before loads as empty.
    pub fn load(db: Arc<DB>, group: u64, files: Arc<SnapshotFiles>) -> raft::Result<GroupStorage> {
        if db.get(keys::state_key(group, keys::INSTALLING)).map_err(other)?.is_some() {
            discard_partial_install(&db, group)?;
        }
        let get = |kind| db.get(keys::state_key(group, kind)).map_err(other);
        let hard = match get(keys::HARD_STATE)? {
            Some(b) => HardState::decode(b.as_slice()).map_err(other)?,
            None => HardState::default(),
        };
        let conf = match get(keys::CONF_STATE)? {
            Some(b) => ConfState::decode(b.as_slice()).map_err(other)?,
            None => ConfState::default(),
        };
        let (truncated_index, truncated_term) =
            get(keys::TRUNCATED)?.map(|v| decode_pair("truncated", &v)).transpose().map_err(other)?.unwrap_or((0, 0));
        let applied = get(keys::APPLIED)?
            .map(|v| decode_u64("applied", &v, 0))
            .transpose()
            .map_err(other)?
            .unwrap_or(truncated_index);
        let peers = match get(keys::PEERS)? {
            Some(b) => SnapshotData::decode(&b).map_err(other)?.peers,
            None => Vec::new(),
        };
        let mut storage = GroupStorage {
            db,
            group,
            cache: VecDeque::new(),
            hard,
            conf,
            truncated_index,
            truncated_term,
            last_index: truncated_index,
            applied,
            peers,
            files,
        };
        storage.last_index = storage.find_last_index()?;
        Ok(storage)
    }

    fn find_last_index(&self) -> raft::Result<u64> {
        let upper = keys::log_key(self.group, u64::MAX);
        let lower = keys::log_key(self.group, 0);
        let mut iter = self.db.iterator(IteratorMode::From(&upper, Direction::Reverse));
        match iter.next() {
            Some(Ok((key, _))) if key.as_ref() >= lower.as_slice() && key.len() == upper.len() => {
                Ok(keys::log_index(&key).unwrap_or(self.truncated_index))
            }
            Some(Err(e)) => Err(other(e)),
            _ => Ok(self.truncated_index),
        }
    }

    pub fn is_initialized(&self) -> bool {
        !self.conf.voters.is_empty() || !self.conf.learners.is_empty()
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }
    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }
    pub fn last_index_value(&self) -> u64 {
        self.last_index
    }
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }
    pub fn peers(&self) -> &[(u64, String)] {
        &self.peers
    }

    /// Stages the initial state of a brand-new group whose members are `voters`.
    pub fn bootstrap(&mut self, wb: &mut WriteBatch, voters: &[(u64, String)]) {
        self.conf = ConfState { voters: voters.iter().map(|(id, _)| *id).collect(), ..Default::default() };
        self.hard = HardState { term: BOOTSTRAP_TERM, vote: 0, commit: BOOTSTRAP_INDEX };
        self.truncated_index = BOOTSTRAP_INDEX;
        self.truncated_term = BOOTSTRAP_TERM;
        self.last_index = BOOTSTRAP_INDEX;
        self.applied = BOOTSTRAP_INDEX;
        self.peers = voters.to_vec();
        wb.put(keys::state_key(self.group, keys::CONF_STATE), self.conf.encode_to_vec());
        wb.put(keys::state_key(self.group, keys::HARD_STATE), self.hard.encode_to_vec());
        wb.put(keys::state_key(self.group, keys::TRUNCATED), encode_pair(BOOTSTRAP_INDEX, BOOTSTRAP_TERM));
        self.stage_applied(wb, BOOTSTRAP_INDEX);
        self.stage_peers(wb);
    }

    /// Stages new log entries, dropping any conflicting suffix they replace.
    pub fn append(&mut self, wb: &mut WriteBatch, entries: &[Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        for e in entries {
            wb.put(keys::log_key(self.group, e.index), e.encode_to_vec());
        }
        // Keep the cache a contiguous suffix: drop what the new entries replace.
        while self.cache.back().is_some_and(|c| c.index >= first.index) {
            self.cache.pop_back();
        }
        if self.cache.back().is_some_and(|c| c.index + 1 != first.index) {
            self.cache.clear();
        }
        self.cache.extend(entries.iter().cloned());
        while self.cache.len() > ENTRY_CACHE {
            self.cache.pop_front();
        }
        if last.index < self.last_index {
            wb.delete_range(keys::log_key(self.group, last.index + 1), keys::log_key(self.group, self.last_index + 1));
        }
        debug_assert!(first.index > self.truncated_index);
        self.last_index = last.index;
    }

    /// Whether `hs` changes the term or the vote: what must be on disk before
    /// this node answers anyone. A commit index alone need not be (a restart
    /// learns it again from the leader; it is written in order with what
    /// is applied after it, so it is never behind the applied index).
    pub fn changes_term_or_vote(&self, hs: &HardState) -> bool {
        hs.term != self.hard.term || hs.vote != self.hard.vote
    }

    pub fn set_hard_state(&mut self, wb: &mut WriteBatch, hs: HardState) {
        wb.put(keys::state_key(self.group, keys::HARD_STATE), hs.encode_to_vec());
        self.hard = hs;
    }

    /// Raises the commit index (from a light ready) and stages it.
    pub fn set_commit(&mut self, wb: &mut WriteBatch, commit: u64) {
        let mut hs = self.hard.clone();
        hs.commit = commit;
        self.set_hard_state(wb, hs);
    }

    pub fn stage_applied(&mut self, wb: &mut WriteBatch, index: u64) {
        wb.put(keys::state_key(self.group, keys::APPLIED), index.to_be_bytes());
        self.applied = index;
    }

    pub fn set_conf_state(&mut self, wb: &mut WriteBatch, conf: ConfState) {
        wb.put(keys::state_key(self.group, keys::CONF_STATE), conf.encode_to_vec());
        self.conf = conf;
    }

    /// Records the address of a peer (added, or learned from a snapshot).
    pub fn set_peer(&mut self, wb: &mut WriteBatch, id: u64, address: Option<String>) {
        self.peers.retain(|(p, _)| *p != id);
        if let Some(address) = address {
            self.peers.push((id, address));
        }
        self.stage_peers(wb);
    }

    fn stage_peers(&self, wb: &mut WriteBatch) {
        let data = SnapshotData { peers: self.peers.clone(), pairs: Vec::new() };
        wb.put(keys::state_key(self.group, keys::PEERS), data.encode());
    }

    /// Stages replacing the whole group (log and data) with a received
    /// snapshot. A snapshot file (see `snapfile`) is written in bounded
    /// batches first, under an "installing" marker that the final batch
    /// (staged in `wb`, with the new Raft state) removes: a crash in between
    /// leaves the marker, and the next start drops the partial data.
    pub fn install_snapshot(&mut self, wb: &mut WriteBatch, snap: &Snapshot) -> raft::Result<()> {
        let meta = snap.metadata.clone().unwrap_or_default();
        let (start, end) = keys::data_range(self.group);
        let peers = match Descriptor::decode(&snap.data) {
            Some(descriptor) => {
                let mut reader = SnapshotReader::open(&descriptor.path).map_err(other)?;
                let mut batch = WriteBatch::default();
                batch.put(keys::state_key(self.group, keys::INSTALLING), meta.index.to_be_bytes());
                batch.delete_range(start.clone(), end.clone());
                let mut bytes = 0;
                while let Some((k, v)) = reader.next_pair().map_err(other)? {
                    bytes += k.len() + v.len();
                    batch.put(keys::data_key(self.group, &k), v);
                    if bytes >= INSTALL_BATCH_BYTES {
                        self.db.write(std::mem::take(&mut batch)).map_err(other)?;
                        bytes = 0;
                        // A crash here leaves part of the data under the marker (see `discard_partial_install`).
                        install_partway(self.group)?;
                    }
                }
                self.db.write(batch).map_err(other)?;
                wb.delete(keys::state_key(self.group, keys::INSTALLING));
                if crate::snapfile::is_received(&descriptor.path) {
                    let _ = std::fs::remove_file(&descriptor.path);
                }
                reader.peers
            }
            None => {
                let data = SnapshotData::decode(&snap.data).map_err(other)?;
                wb.delete_range(start, end);
                for (k, v) in &data.pairs {
                    wb.put(keys::data_key(self.group, k), v);
                }
                data.peers
            }
        };
        wb.delete_range(keys::log_key(self.group, 0), keys::log_key(self.group, u64::MAX));
        self.cache.clear();
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.last_index = meta.index;
        wb.put(keys::state_key(self.group, keys::TRUNCATED), encode_pair(meta.index, meta.term));
        self.stage_applied(wb, meta.index);
        self.set_conf_state(wb, meta.conf_state.unwrap_or_default());
        let mut hs = self.hard.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        self.set_hard_state(wb, hs);
        self.peers = peers;
        self.stage_peers(wb);
        Ok(())
    }

    /// Stages deleting everything of `group`: its Raft state, log and data.
    pub fn stage_destroy(wb: &mut WriteBatch, group: u64) {
        let raft_start = keys::state_key(group, 0);
        let raft_end = keys::next_prefix(&keys::state_key(group, 0)[..9]).expect("raft keys have a successor");
        wb.delete_range(raft_start, raft_end);
        let (start, end) = keys::data_range(group);
        wb.delete_range(start, end);
    }

    /// Stages dropping log entries up to and including `index` (<= applied).
    pub fn compact(&mut self, wb: &mut WriteBatch, index: u64) -> raft::Result<()> {
        if index <= self.truncated_index {
            return Ok(());
        }
        assert!(index <= self.applied, "compacting past the applied index");
        let term = self.term(index)?;
        wb.delete_range(keys::log_key(self.group, 0), keys::log_key(self.group, index + 1));
        wb.put(keys::state_key(self.group, keys::TRUNCATED), encode_pair(index, term));
        self.truncated_index = index;
        self.truncated_term = term;
        while self.cache.front().is_some_and(|c| c.index <= index) {
            self.cache.pop_front();
        }
        Ok(())
    }

    /// The cached entries [low, high) if the cache holds all of them.
    fn cached(&self, low: u64, high: u64) -> Option<impl Iterator<Item = &Entry>> {
        let first = self.cache.front()?.index;
        if low < first || high > self.last_index + 1 {
            return None;
        }
        Some(self.cache.range((low - first) as usize..(high - first) as usize))
    }

    fn read_entry(&self, index: u64) -> raft::Result<Entry> {
        match self.db.get(keys::log_key(self.group, index)).map_err(other)? {
            Some(bytes) => Entry::decode(bytes.as_slice()).map_err(other),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }
}

/// Drops what a snapshot install interrupted by a crash left: the partial
/// data and the log. The group restarts empty (membership and term kept) and
/// its leader sends it a snapshot again.
fn discard_partial_install(db: &DB, group: u64) -> raft::Result<()> {
    tracing::warn!(group_id = group, "a snapshot install was interrupted; dropping its partial data");
    let mut wb = WriteBatch::default();
    let (start, end) = keys::data_range(group);
    wb.delete_range(start, end);
    wb.delete_range(keys::log_key(group, 0), keys::log_key(group, u64::MAX));
    wb.put(keys::state_key(group, keys::TRUNCATED), encode_pair(0, 0));
    wb.put(keys::state_key(group, keys::APPLIED), 0u64.to_be_bytes());
    if let Some(bytes) = db.get(keys::state_key(group, keys::HARD_STATE)).map_err(other)? {
        let mut hard = HardState::decode(bytes.as_slice()).map_err(other)?;
        hard.commit = 0;
        wb.put(keys::state_key(group, keys::HARD_STATE), hard.encode_to_vec());
    }
    wb.delete(keys::state_key(group, keys::INSTALLING));
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(wb, &opts).map_err(other)
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard.clone(), conf_state: self.conf.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        if let Some(cached) = self.cached(low, high) {
            let mut out = Vec::with_capacity((high - low) as usize);
            let mut size = 0u64;
            for e in cached {
                size += e.encoded_len() as u64;
                if !out.is_empty() && size > max_size {
                    break;
                }
                out.push(e.clone());
            }
            return Ok(out);
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::log_key(self.group, high));
        let start = keys::log_key(self.group, low);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let iter = self.db.iterator_opt(IteratorMode::From(&start, Direction::Forward), opts);
        let mut size_limited = false;
        for (expected, item) in (low..high).zip(iter) {
            let (key, value) = item.map_err(other)?;
            if keys::log_index(&key) != Some(expected) {
                return Err(raft::Error::Store(StorageError::Unavailable));
            }
            size += value.len() as u64;
            if !out.is_empty() && size > max_size {
                size_limited = true;
                break;
            }
            out.push(Entry::decode(value.as_ref()).map_err(other)?);
        }
        if !size_limited && (out.len() as u64) < high - low {
            // A hole in the log: entries raft-rs believes stored are missing.
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(mut cached) = self.cached(idx, idx + 1)
            && let Some(e) = cached.next()
        {
            return Ok(e.term);
        }
        Ok(self.read_entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    /// A snapshot file written in the background (see `snapfile`): until it
    /// is ready raft-rs is told to try again later. It must reach at least
    /// the start of this log, so the follower can go on from it.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        if self.applied < request_index {
            return Err(unavailable());
        }
        let min_index = request_index.max(self.truncated_index);
        let ready = self.files.request(&self.db, self.group, min_index).ok_or_else(unavailable)?;
        let metadata = SnapshotMetadata { conf_state: Some(ready.conf), index: ready.index, term: ready.term };
        Ok(Snapshot { data: ready.descriptor.encode(), metadata: Some(metadata) })
    }
}

/// Failpoint `raftstore::snapshot_install_partway`, configured as
/// `return(GROUP)`: stops installs into that group only (tests in one
/// process install snapshots side by side).
fn install_partway(_group: u64) -> raft::Result<()> {
    fail::fail_point!("raftstore::snapshot_install_partway", |only: Option<String>| {
        match only {
            Some(group) if group != _group.to_string() => Ok(()),
            _ => Err(other("failpoint: stopped partway through a snapshot install")),
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvRead;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 10], ..Default::default() }
    }

    fn write(db: &DB, wb: WriteBatch) {
        db.write(wb).unwrap();
    }

    #[test]
    fn a_short_stored_state_is_refused_as_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_db(dir.path(), &crate::testing::fast_config(1000)).unwrap();
        db.put(keys::state_key(4, keys::APPLIED), [1u8, 2, 3]).unwrap();
        let err = GroupStorage::load(db.clone(), 4, test_files()).err().expect("a 3-byte applied index is refused");
        assert!(err.to_string().contains("applied"), "{err}");
        db.put(keys::state_key(5, keys::TRUNCATED), [0u8; 12]).unwrap();
        assert!(GroupStorage::load(db, 5, test_files()).is_err(), "a 12-byte truncated pair is refused");
    }

    #[test]
    fn only_a_new_term_or_vote_needs_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_db(dir.path(), &crate::testing::fast_config(1000)).unwrap();
        let mut s = GroupStorage::load(db, 6, test_files()).unwrap();
        let hs = HardState { term: 3, vote: 2, commit: 10 };
        assert!(s.changes_term_or_vote(&hs));
        s.set_hard_state(&mut WriteBatch::default(), hs.clone());
        assert!(!s.changes_term_or_vote(&HardState { commit: 11, ..hs.clone() }), "a commit index alone");
        assert!(s.changes_term_or_vote(&HardState { term: 4, ..hs.clone() }));
        assert!(s.changes_term_or_vote(&HardState { vote: 1, ..hs }));
    }

    #[test]
    fn append_overwrite_compact_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_db(dir.path(), &crate::testing::fast_config(1000)).unwrap();
        let mut s = GroupStorage::load(db.clone(), 3, test_files()).unwrap();
        assert!(!s.is_initialized());
        let mut wb = WriteBatch::default();
        s.bootstrap(&mut wb, &[(1, "a:1".into())]);
        s.append(&mut wb, &(6..=20).map(|i| entry(i, 6)).collect::<Vec<_>>());
        write(&db, wb);
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 20));
        assert_eq!(s.entries(6, 21, None, GetEntriesContext::empty(false)).unwrap().len(), 15);
        // a size limit still returns at least one entry
        assert_eq!(s.entries(6, 21, 1, GetEntriesContext::empty(false)).unwrap().len(), 1);

        // a new leader overwrites the tail from 15 on
        let mut wb = WriteBatch::default();
        s.append(&mut wb, &(15..=16).map(|i| entry(i, 7)).collect::<Vec<_>>());
        write(&db, wb);
        assert_eq!(s.last_index().unwrap(), 16);
        assert_eq!(s.term(16).unwrap(), 7);
        assert_eq!(s.term(14).unwrap(), 6);

        let mut wb = WriteBatch::default();
        s.stage_applied(&mut wb, 12);
        s.compact(&mut wb, 10).unwrap();
        write(&db, wb);
        assert_eq!(s.first_index().unwrap(), 11);
        assert_eq!(s.term(10).unwrap(), 6);
        assert!(matches!(s.term(9), Err(raft::Error::Store(StorageError::Compacted))));
        assert!(matches!(
            s.entries(9, 12, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));

        let reloaded = GroupStorage::load(db, 3, test_files()).unwrap();
        assert_eq!(reloaded.first_index().unwrap(), 11);
        assert_eq!(reloaded.last_index().unwrap(), 16);
        assert_eq!(reloaded.applied(), 12);
        assert_eq!(reloaded.conf_state().voters, vec![1]);
        assert_eq!(reloaded.peers(), &[(1, "a:1".to_string())]);
    }

    #[test]
    fn the_entry_cache_agrees_with_disk() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_db(dir.path(), &crate::testing::fast_config(1000)).unwrap();
        let mut s = GroupStorage::load(db.clone(), 4, test_files()).unwrap();
        let mut wb = WriteBatch::default();
        s.bootstrap(&mut wb, &[(1, "a:1".into())]);
        s.append(&mut wb, &(6..=3000).map(|i| entry(i, 6)).collect::<Vec<_>>());
        // a new leader overwrites the tail; then appends continue
        s.append(&mut wb, &(2990..=2995).map(|i| entry(i, 7)).collect::<Vec<_>>());
        s.append(&mut wb, &[entry(2996, 7)]);
        write(&db, wb);
        let ctx = || GetEntriesContext::empty(false);
        let from_cache = s.entries(2000, 2997, None, ctx()).unwrap();
        assert_eq!(s.cache.front().unwrap().index, 3001 - ENTRY_CACHE as u64, "the overwrite shortened the cache");
        assert_eq!(s.term(2995).unwrap(), 7);
        assert_eq!(s.term(2989).unwrap(), 6);
        assert!(s.entries(2997, 2998, None, ctx()).is_err(), "nothing past the overwritten tail");
        // the same range straight from RocksDB
        let reloaded = GroupStorage::load(db.clone(), 4, test_files()).unwrap();
        assert!(reloaded.cache.is_empty());
        assert_eq!(reloaded.entries(2000, 2997, None, ctx()).unwrap(), from_cache);
        // compaction drops cached entries too
        let mut wb = WriteBatch::default();
        s.stage_applied(&mut wb, 2996);
        s.compact(&mut wb, 2500).unwrap();
        write(&db, wb);
        assert!(s.cache.front().unwrap().index > 2500);
        assert!(matches!(s.entries(2400, 2600, None, ctx()), Err(raft::Error::Store(StorageError::Compacted))));
    }

    #[test]
    fn groups_do_not_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_db(dir.path(), &crate::testing::fast_config(1000)).unwrap();
        let mut a = GroupStorage::load(db.clone(), 1, test_files()).unwrap();
        let mut wb = WriteBatch::default();
        a.bootstrap(&mut wb, &[(1, "a:1".into())]);
        a.append(&mut wb, &[entry(6, 6), entry(7, 6)]);
        write(&db, wb);
        let b = GroupStorage::load(db, 2, test_files()).unwrap();
        assert_eq!(b.last_index().unwrap(), 0);
        assert!(!b.is_initialized());
    }

    #[test]
    fn snapshot_install_replaces_log_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_db(dir.path(), &crate::testing::fast_config(1000)).unwrap();
        let mut s = GroupStorage::load(db.clone(), 9, test_files()).unwrap();
        let mut wb = WriteBatch::default();
        s.bootstrap(&mut wb, &[(1, "a:1".into())]);
        s.append(&mut wb, &[entry(6, 6)]);
        wb.put(keys::data_key(9, b"stale"), b"x");
        write(&db, wb);

        let data = SnapshotData {
            peers: vec![(1, "a:1".into()), (2, "b:2".into())],
            pairs: vec![(b"k".to_vec(), b"v".to_vec())],
        };
        let snap = Snapshot {
            data: data.encode(),
            metadata: Some(SnapshotMetadata {
                index: 50,
                term: 8,
                conf_state: Some(ConfState { voters: vec![1, 2], ..Default::default() }),
            }),
        };
        let mut wb = WriteBatch::default();
        s.install_snapshot(&mut wb, &snap).unwrap();
        write(&db, wb);
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap(), s.applied()), (51, 50, 50));
        assert_eq!(s.term(50).unwrap(), 8);
        let kv = crate::GroupKv::new(db.clone(), 9);
        assert_eq!(kv.get(b"stale").unwrap(), None);
        assert_eq!(kv.get(b"k").unwrap(), Some(b"v".to_vec()));
        // the snapshot it would send on reproduces what it installed
        let again = ready_snapshot(&s);
        assert_eq!(again.metadata.unwrap().index, 50);
        let descriptor = Descriptor::decode(&again.data).unwrap();
        crate::snapfile::verify(&descriptor).unwrap();
        let mut reader = SnapshotReader::open(&descriptor.path).unwrap();
        assert_eq!(reader.peers, data.peers);
        assert_eq!(reader.next_pair().unwrap(), Some((b"k".to_vec(), b"v".to_vec())));
        assert_eq!(reader.next_pair().unwrap(), None);
    }

    fn test_files() -> Arc<SnapshotFiles> {
        SnapshotFiles::new(tempfile::tempdir().unwrap().keep().join("snapshots"))
    }

    /// Asks for a snapshot until its file is written (in the background).
    fn ready_snapshot(s: &GroupStorage) -> Snapshot {
        for _ in 0..500 {
            match s.snapshot(0, 2) {
                Ok(snap) => return snap,
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no snapshot after 5 s");
    }

    #[test]
    fn file_snapshots_install_in_batches_and_a_torn_install_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_db(dir.path(), &crate::testing::fast_config(1000)).unwrap();
        let mut source = GroupStorage::load(db.clone(), 1, test_files()).unwrap();
        let mut wb = WriteBatch::default();
        source.bootstrap(&mut wb, &[(1, "a:1".into()), (2, "b:2".into())]);
        // Enough pairs for several install batches.
        let value = vec![7u8; 1000];
        for i in 0..10_000u32 {
            wb.put(keys::data_key(1, &i.to_be_bytes()), &value);
        }
        write(&db, wb);
        let snap = ready_snapshot(&source);
        assert_eq!(snap.metadata.as_ref().unwrap().index, BOOTSTRAP_INDEX);

        let mut target = GroupStorage::load(db.clone(), 2, test_files()).unwrap();
        let mut wb = WriteBatch::default();
        target.install_snapshot(&mut wb, &snap).unwrap();
        write(&db, wb);
        let kv = crate::GroupKv::new(db.clone(), 2);
        assert_eq!(kv.scan_prefix(b"").unwrap().len(), 10_000);
        assert_eq!(kv.get(&77u32.to_be_bytes()).unwrap(), Some(value.clone()));
        assert_eq!(target.peers(), &[(1, "a:1".to_string()), (2, "b:2".to_string())]);
        assert_eq!(db.get(keys::state_key(2, keys::INSTALLING)).unwrap(), None);

        // A crash between the data batches and the final one leaves the marker.
        db.put(keys::state_key(2, keys::INSTALLING), 9u64.to_be_bytes()).unwrap();
        let reloaded = GroupStorage::load(db.clone(), 2, test_files()).unwrap();
        assert_eq!(kv.scan_prefix(b"").unwrap().len(), 0, "partial data dropped");
        assert_eq!((reloaded.applied(), reloaded.last_index().unwrap()), (0, 0));
        assert_eq!(reloaded.initial_state().unwrap().hard_state.commit, 0);
        assert_eq!(db.get(keys::state_key(2, keys::INSTALLING)).unwrap(), None);
    }

    /// A real interruption (failpoint after the first data batch): the partial
    /// data is dropped at the next load, and installing again completes.
    #[cfg(feature = "failpoints")]
    #[test]
    fn failpoint_snapshot_install_partway() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_db(dir.path(), &crate::testing::fast_config(1000)).unwrap();
        let mut source = GroupStorage::load(db.clone(), 1, test_files()).unwrap();
        let mut wb = WriteBatch::default();
        source.bootstrap(&mut wb, &[(1, "a:1".into()), (2, "b:2".into())]);
        let value = vec![3u8; 1000];
        for i in 0..10_000u32 {
            wb.put(keys::data_key(1, &i.to_be_bytes()), &value);
        }
        write(&db, wb);
        let snap = ready_snapshot(&source);

        let kv = crate::GroupKv::new(db.clone(), 41);
        let mut target = GroupStorage::load(db.clone(), 41, test_files()).unwrap();
        fail::cfg("raftstore::snapshot_install_partway", "return(41)").unwrap();
        let interrupted = target.install_snapshot(&mut WriteBatch::default(), &snap);
        fail::remove("raftstore::snapshot_install_partway");
        assert!(interrupted.is_err());
        let partial = kv.scan_prefix(b"").unwrap().len();
        assert!(partial > 0 && partial < 10_000, "part of the data was written: {partial}");
        assert!(db.get(keys::state_key(41, keys::INSTALLING)).unwrap().is_some(), "under the marker");

        // The restart drops it; the leader's next snapshot installs whole.
        let mut target = GroupStorage::load(db.clone(), 41, test_files()).unwrap();
        assert_eq!(kv.scan_prefix(b"").unwrap().len(), 0, "partial data dropped");
        let mut wb = WriteBatch::default();
        target.install_snapshot(&mut wb, &snap).unwrap();
        write(&db, wb);
        assert_eq!(kv.scan_prefix(b"").unwrap().len(), 10_000);
        assert_eq!(kv.get(&9_999u32.to_be_bytes()).unwrap(), Some(value));
        assert_eq!(db.get(keys::state_key(41, keys::INSTALLING)).unwrap(), None);
    }
}
