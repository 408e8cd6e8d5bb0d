//! One writer thread per disk: appends records to the disk's active segment
//! and commits their index entries, many requests per round, so concurrent
//! writes share one `fdatasync` of the segment and one synced RocksDB batch.
//! Every index mutation of the disk goes through here (writes, deletes,
//! relocations by compaction, dropping compacted segments), which keeps the
//! segment bookkeeping consistent without locks.
//!
//! The active segment is written with O_DIRECT (where the file system
//! allows it): each record is laid out, page-padded, in one reused aligned
//! buffer and written in one call, without a copy into the page cache
//! (`record` says why). Reads go through other descriptors and the page
//! cache as before.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};

use bytes::Bytes;
use rocksdb::{WriteBatch, WriteOptions};
use strata_common::aligned::AlignedBuf;
use strata_common::{ErrorCode, Result, StrataError};
use tokio::sync::oneshot;

use super::Shared;
use super::files::segment_file;
use super::health::is_full;
use super::keys::{self, SegmentInfo, segment_disk, segment_id};
use super::record::{Header, Location, head_len};

/// Largest number of requests, and bytes, committed in one round.
const GROUP_JOBS: usize = 128;
const GROUP_BYTES: usize = 128 << 20;
/// Space reserved ahead of the active segment's end at a time, so that the
/// segments of several nodes appending to one disk are not interleaved in
/// small extents (O_DIRECT appends are allocated as they come).
const RESERVE_AHEAD: u64 = 64 << 20;

pub type Reply = oneshot::Sender<Result<bool>>;

pub enum Job {
    /// Store a record. With `only_if`, only when the index still points
    /// there (compaction moving a live blob); answers whether it was stored.
    Put { header: Header, crcs: Vec<u32>, data: Bytes, only_if: Option<Location>, reply: Reply },
    /// Remove a blob from the index; answers whether it was there.
    Delete { partition: u64, blob: u64, reply: Reply },
    /// Forget a compacted segment and remove its file.
    DropSegment { segment: u64, reply: Reply },
    /// Stop appending to `segment` if it is the active one (so it can be compacted).
    Seal { segment: u64, reply: Reply },
}

impl Job {
    fn bytes(&self) -> usize {
        match self {
            Job::Put { data, .. } => data.len(),
            _ => 0,
        }
    }
}

pub struct Appender {
    disk: usize,
    dir: PathBuf,
    shared: Arc<Shared>,
    segment_size: u64,
    segments: HashMap<u64, SegmentInfo>,
    active: Option<(u64, File)>,
    next_seq: u64,
    /// Where a record is laid out before it is written (grown to the largest).
    scratch: AlignedBuf,
    /// The end of the space reserved for the active segment.
    reserved: u64,
}

/// What one round changed, committed together.
#[derive(Default)]
struct Round {
    batch: WriteBatch,
    /// Index entries as this round left them (later jobs must see earlier ones).
    overlay: HashMap<Vec<u8>, Option<Location>>,
    dirty: HashSet<u64>,
    wrote_active: bool,
    sealed_files: Vec<File>,
    dropped: Vec<u64>,
    blobs_added: i64,
    replies: Vec<(Reply, bool)>,
}

impl Appender {
    /// Loads this disk's segments; resumes its unsealed segment, if any.
    pub fn open(disk: usize, dir: PathBuf, shared: Arc<Shared>, segment_size: u64) -> Result<Appender> {
        std::fs::create_dir_all(dir.join("segments"))
            .map_err(|e| StrataError::internal(format!("creating {}: {e}", dir.display())))?;
        let mut segments = HashMap::new();
        for item in shared.db.prefix_iterator([keys::SEGMENT]) {
            let (key, value) = item.map_err(|e| StrataError::internal(format!("reading segments: {e}")))?;
            if key.first() != Some(&keys::SEGMENT) {
                break;
            }
            let (Some(id), Some(info)) = (keys::parse_one(&key), SegmentInfo::decode(&value)) else {
                return Err(StrataError::internal("malformed segment entry in the index"));
            };
            if segment_disk(id) == disk {
                segments.insert(id, info);
            }
        }
        let next_seq = segments.keys().map(|id| (id & ((1 << 48) - 1)) + 1).max().unwrap_or(1);
        let mut appender = Appender {
            disk,
            dir,
            shared,
            segment_size,
            segments,
            active: None,
            next_seq,
            scratch: AlignedBuf::new(0),
            reserved: 0,
        };
        let open =
            appender.segments.iter().filter(|(_, i)| !i.sealed).map(|(id, i)| (*id, *i)).max_by_key(|(id, _)| *id);
        if let Some((id, info)) = open {
            let file = open_for_appends(&segment_file(&appender.dir, id), false)
                .map_err(|e| StrataError::internal(format!("opening segment {id:x}: {e}")))?;
            // Bytes past the committed size belong to writes never acknowledged.
            file.set_len(info.size).map_err(|e| StrataError::internal(format!("trimming segment {id:x}: {e}")))?;
            appender.active = Some((id, file));
        }
        Ok(appender)
    }

    /// Serves jobs until every sender is gone.
    pub fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut bytes = first.bytes();
            let mut group = vec![first];
            while group.len() < GROUP_JOBS && bytes < GROUP_BYTES {
                match jobs.try_recv() {
                    Ok(job) => {
                        bytes += job.bytes();
                        group.push(job);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.run_round(group);
        }
        tracing::debug!(disk = self.disk, "appender stopped");
    }

    fn run_round(&mut self, group: Vec<Job>) {
        let mut round = Round::default();
        for job in group {
            match job {
                Job::Put { header, crcs, data, only_if, reply } => {
                    match self.put(&mut round, header, &crcs, &data, only_if) {
                        Ok(stored) => round.replies.push((reply, stored)),
                        Err(e) => {
                            if e.code != ErrorCode::NoSpace {
                                self.shared.health.mark_failed(self.disk, &e.message);
                            }
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Job::Delete { partition, blob, reply } => match self.delete(&mut round, partition, blob) {
                    Ok(found) => round.replies.push((reply, found)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Job::Seal { segment, reply } => {
                    let active = self.active.as_ref().is_some_and(|(id, _)| *id == segment);
                    if active {
                        self.seal_active(&mut round);
                    }
                    round.replies.push((reply, active));
                }
                Job::DropSegment { segment, reply } => {
                    if self.segments.remove(&segment).is_some() {
                        round.batch.delete(keys::segment(segment));
                        round.dropped.push(segment);
                    }
                    round.replies.push((reply, true));
                }
            }
        }
        // A full disk fails the round's writes, unacknowledged (their records
        // stay in the segment as garbage the bookkeeping does not count).
        let result = self.commit(&mut round);
        if let Err(e) = &result
            && e.code != ErrorCode::NoSpace
        {
            self.shared.health.mark_failed(self.disk, &e.message);
        }
        for (reply, value) in round.replies {
            let _ = reply.send(result.clone().map(|()| value));
        }
    }

    /// Makes the round durable: segment data first, then the index.
    fn commit(&mut self, round: &mut Round) -> Result<()> {
        for file in &round.sealed_files {
            file.sync_data().map_err(|e| io_error("syncing a sealed segment", e))?;
        }
        if round.wrote_active
            && let Some((_, file)) = &self.active
        {
            file.sync_data().map_err(|e| io_error("syncing the active segment", e))?;
        }
        // A crash here leaves records in the segments that no index entry
        // points to: garbage, never acknowledged (test: failpoint_between_data_sync_and_index).
        between_data_sync_and_index(&self.dir)?;
        for id in &round.dirty {
            if let Some(info) = self.segments.get(id) {
                round.batch.put(keys::segment(*id), info.encode());
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        let batch = std::mem::take(&mut round.batch);
        self.shared.db.write_opt(batch, &options).map_err(|e| {
            // RocksDB passes the OS error on only as text.
            let full = e.to_string().contains("No space left");
            let code = if full { ErrorCode::NoSpace } else { ErrorCode::Internal };
            StrataError::new(code, format!("committing the index: {e}"))
        })?;
        let stats = &self.shared.stats;
        if round.blobs_added >= 0 {
            stats.blobs.fetch_add(round.blobs_added as u64, Ordering::Relaxed);
        } else {
            stats.blobs.fetch_sub(round.blobs_added.unsigned_abs(), Ordering::Relaxed);
        }
        for segment in round.dropped.drain(..) {
            self.shared.files.forget(segment);
            if let Err(e) = std::fs::remove_file(segment_file(&self.dir, segment)) {
                tracing::warn!(segment, error = %e, "removing a compacted segment failed");
            }
        }
        Ok(())
    }

    fn current(&self, round: &Round, key: &[u8]) -> Result<Option<Location>> {
        if let Some(entry) = round.overlay.get(key) {
            return Ok(entry.clone());
        }
        let value = self.shared.db.get(key).map_err(|e| StrataError::internal(format!("reading the index: {e}")))?;
        value.map(|v| Location::decode(&v)).transpose()
    }

    fn mark_dead(&mut self, round: &mut Round, old: &Location) {
        if let Some(info) = self.segments.get_mut(&old.segment) {
            info.dead += old.record_len();
            round.dirty.insert(old.segment);
        }
    }

    fn put(
        &mut self,
        round: &mut Round,
        header: Header,
        crcs: &[u32],
        data: &[u8],
        only_if: Option<Location>,
    ) -> Result<bool> {
        let key = keys::blob(header.partition, header.blob);
        let current = self.current(round, &key)?;
        if only_if.is_some() && current != only_if {
            return Ok(false);
        }
        let record_len = header.record_len();
        let (segment, offset) = self.room_for(round, record_len)?;
        let record = lay_out(&mut self.scratch, &header, crcs, data);
        let (_, file) = self.active.as_ref().expect("room_for opened a segment");
        if offset + record_len > self.reserved {
            let ahead = RESERVE_AHEAD.min(self.segment_size.saturating_sub(offset)).max(record_len);
            reserve(file, offset, ahead);
            self.reserved = offset + ahead;
        }
        file.write_all_at(record, offset).map_err(|e| io_error(&format!("appending to segment {segment:x}"), e))?;
        round.wrote_active = true;
        let info = self.segments.get_mut(&segment).expect("active segment is known");
        info.size = offset + record_len;
        round.dirty.insert(segment);

        let location =
            Location { segment, record_offset: offset, len: header.len, meta: header.meta, crcs: crcs.to_vec() };
        match &current {
            Some(old) => self.mark_dead(round, old),
            None => round.blobs_added += 1,
        }
        round.batch.put(&key, location.encode());
        round.batch.delete(keys::bad(header.partition, header.blob));
        round.overlay.insert(key, Some(location));
        Ok(true)
    }

    /// The active segment and the offset to append `len` bytes at, sealing
    /// a full segment and starting a new one when needed.
    fn room_for(&mut self, round: &mut Round, len: u64) -> Result<(u64, u64)> {
        if let Some((id, _)) = &self.active {
            let size = self.segments.get(id).map(|i| i.size).unwrap_or(0);
            if size == 0 || size + len <= self.segment_size {
                return Ok((*id, size));
            }
            self.seal_active(round);
        }
        let id = segment_id(self.disk, self.next_seq);
        self.next_seq += 1;
        let path = segment_file(&self.dir, id);
        let file = open_for_appends(&path, true)
            .map_err(|e| StrataError::internal(format!("creating {}: {e}", path.display())))?;
        // The new file's directory entry must survive a crash too.
        File::open(self.dir.join("segments"))
            .and_then(|d| d.sync_all())
            .map_err(|e| StrataError::internal(format!("syncing {}: {e}", self.dir.display())))?;
        self.segments.insert(id, SegmentInfo::default());
        round.dirty.insert(id);
        self.active = Some((id, file));
        self.reserved = 0;
        Ok((id, 0))
    }

    /// Marks the active segment sealed; the next append starts a new one.
    fn seal_active(&mut self, round: &mut Round) {
        let Some((id, file)) = self.active.take() else { return };
        if let Some(info) = self.segments.get_mut(&id) {
            info.sealed = true;
        }
        round.dirty.insert(id);
        if round.wrote_active {
            round.sealed_files.push(file);
        }
        round.wrote_active = false;
    }

    fn delete(&mut self, round: &mut Round, partition: u64, blob: u64) -> Result<bool> {
        let key = keys::blob(partition, blob);
        let Some(old) = self.current(round, &key)? else {
            return Ok(false);
        };
        self.mark_dead(round, &old);
        round.blobs_added -= 1;
        round.batch.delete(&key);
        round.batch.delete(keys::bad(partition, blob));
        round.overlay.insert(key, None);
        Ok(true)
    }
}

/// A segment opened to append to, with O_DIRECT unless the file system
/// refuses it (tmpfs): then through the page cache, in the same layout.
fn open_for_appends(path: &Path, create: bool) -> std::io::Result<File> {
    let open = |flags: i32| OpenOptions::new().read(true).write(true).create_new(create).custom_flags(flags).open(path);
    match open(libc::O_DIRECT) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // The refused open may have created the file already.
            OpenOptions::new().read(true).write(true).create(create).open(path)
        }
        other => other,
    }
}

/// The whole record in the scratch buffer: header and CRCs, data, zeros
/// to the data's start and after its end.
fn lay_out<'a>(scratch: &'a mut AlignedBuf, header: &Header, crcs: &[u32], data: &[u8]) -> &'a [u8] {
    let record_len = header.record_len() as usize;
    if scratch.padded().len() < record_len {
        *scratch = AlignedBuf::new(record_len);
    }
    let head = header.encode(crcs);
    let data_at = head_len(data.len() as u64) as usize;
    let record = &mut scratch.padded_mut()[..record_len];
    record[..head.len()].copy_from_slice(&head);
    record[head.len()..data_at].fill(0);
    record[data_at..data_at + data.len()].copy_from_slice(data);
    record[data_at + data.len()..].fill(0);
    record
}

/// Allocates [offset, offset + len) of `file` without changing its size;
/// where the file system cannot, appends allocate as they go.
fn reserve(file: &File, offset: u64, len: u64) {
    // SAFETY: fallocate on an open descriptor; it touches no memory of ours.
    let rc = unsafe {
        libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset as libc::off_t, len as libc::off_t)
    };
    if rc != 0 {
        tracing::debug!(offset, len, error = %std::io::Error::last_os_error(), "reserving segment space failed");
    }
}

/// An I/O error of the appender: `NoSpace` when the disk is full (not a
/// failure of the disk), internal otherwise.
fn io_error(what: &str, e: std::io::Error) -> StrataError {
    let code = if is_full(&e) { ErrorCode::NoSpace } else { ErrorCode::Internal };
    StrataError::new(code, format!("{what}: {e}"))
}

/// Failpoint `datanode::between_data_sync_and_index`, configured as
/// `return(DIR)`: fails the commit of disks whose directory starts with DIR
/// (tests in one process run stores side by side; only the one under test stops).
fn between_data_sync_and_index(_dir: &std::path::Path) -> Result<()> {
    fail::fail_point!("datanode::between_data_sync_and_index", |only: Option<String>| {
        match only {
            Some(prefix) if !_dir.starts_with(&prefix) => Ok(()),
            _ => Err(StrataError::internal("failpoint: stopped between the data fsync and the index commit")),
        }
    });
    Ok(())
}
