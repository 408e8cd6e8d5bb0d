//! The mount's state and its operations as async functions: the FUSE
//! callbacks (see `fs`) hand each request to one of these on the tokio
//! runtime and reply from there, so no session thread waits on the network.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use fuser::Notifier;
use strata_common::{ErrorCode, Result, StrataError};
use strata_sdk::MetaClient;
use strata_sdk::cache::BlockCache;
use strata_sdk::data::DataClient;
use strata_sdk::data::file::FileWriter;
use strata_sdk::trash::Deleted;
use strata_sdk::types::{Attr, DirEntry, FileKind, Lock, LockKind, SetAttr};

use crate::handles::{Handles, OpenFile};
use strata_sdk::data::reader::{self, FirstWindow};

/// Directory entries fetched per page.
const DIR_PAGE: u32 = 1024;

pub struct Inner {
    pub meta: Arc<MetaClient>,
    pub data: Arc<DataClient>,
    /// L1/L2 block caches in front of the datanodes.
    pub cache: Arc<BlockCache>,
    pub handles: Handles,
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    pub blob_size: usize,
    /// This mount's lock session: its locks live as long as it renews it.
    pub session: u64,
    /// Tells the kernel to drop cached attributes and pages (set once mounted).
    pub notifier: OnceLock<Notifier>,
    /// (size, mtime) of each inode as last given to the kernel, so an open
    /// can tell whether the kernel's cache still holds the current version.
    pub versions: Mutex<HashMap<u64, (u64, i64)>>,
    /// Inodes open here on which a lock was asked for: only their closes
    /// need to release locks at the metanode (a Raft commit each).
    pub lock_users: Mutex<std::collections::HashSet<u64>>,
}

/// Versions remembered at most (then forgotten all at once: the next open
/// of each file just revalidates).
const VERSIONS_KEPT: usize = 100_000;

/// How long the metanodes keep this mount's locks without a renewal.
pub const SESSION_LEASE: Duration = Duration::from_secs(30);
/// Renewal period of the lock session.
pub const SESSION_RENEW: Duration = Duration::from_secs(5);

impl Inner {
    /// Notes the version of `inode` the kernel is being given.
    pub fn saw(&self, inode: &Attr) {
        let mut versions = self.versions.lock().unwrap();
        if versions.len() >= VERSIONS_KEPT {
            versions.clear();
        }
        versions.insert(inode.ino, (inode.size, inode.mtime_ns));
    }

    /// open(2) with close-to-open consistency: if the file changed since the
    /// kernel last saw it (another mount wrote and closed it), the kernel's
    /// attributes and pages are dropped; if not, its page cache is kept.
    /// Answers whether the cache may be kept.
    /// An open for reading also fetches the first extent window with the
    /// attributes (one request instead of two for a small file's open and
    /// read), for [`FileReader::seed`](strata_sdk::data::reader::FileReader::seed).
    pub async fn open(&self, ino: u64, read_only: bool) -> Result<(bool, Option<FirstWindow>)> {
        let (fresh, window) = if read_only {
            let (inode, window) = reader::first_window(&self.meta, ino).await?;
            (inode, Some(window))
        } else {
            (self.meta.getattr(ino).await?, None)
        };
        let known = self.versions.lock().unwrap().get(&ino).copied();
        let unchanged = known == Some((fresh.size, fresh.mtime_ns));
        if !unchanged {
            self.extents_changed(ino);
        }
        if !unchanged && let Some(notifier) = self.notifier.get() {
            // Attributes and every cached page of the inode.
            if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino), 0, 0) {
                tracing::debug!(ino, error = %e, "invalidating the kernel's cache failed");
            }
        }
        self.saw(&fresh);
        // Data buffered in this mount makes the kernel's pages newer than the store's.
        Ok((unchanged || self.local_size(ino).is_some(), window))
    }

    /// The size this mount knows `ino` to have at least (buffered writes).
    pub fn local_size(&self, ino: u64) -> Option<u64> {
        self.handles.by_inode(ino).map(|f| f.written_end.load(Ordering::Relaxed)).filter(|s| *s > 0)
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        self.meta.getattr(ino).await
    }

    /// Makes what this mount buffered for `ino` durable and visible.
    pub async fn flush_inode(&self, ino: u64) -> Result<()> {
        match self.handles.by_inode(ino) {
            Some(file) => flush_file(&file).await,
            None => Ok(()),
        }
    }

    pub async fn setattr(&self, op: SetAttr) -> Result<Attr> {
        // Any attribute change orders after the writes before it: committing
        // them later would set mtime again (cp -p / touch after a write).
        self.flush_inode(op.ino).await?;
        if op.size.is_some()
            && let Some(file) = self.handles.by_inode(op.ino)
        {
            file.written_end.store(0, Ordering::Relaxed);
        }
        let ino = op.ino;
        let truncates = op.size.is_some();
        let _changing = truncates.then(reader::changing_extents);
        let updated = self.meta.setattr(op).await;
        if truncates {
            self.extents_changed(ino);
        }
        updated
    }

    /// fallocate(2): allocation only extends the size (space is not
    /// reserved: blobs are written when data is); PUNCH_HOLE and ZERO_RANGE
    /// cut the range out of the extent map. Other modes: EOPNOTSUPP.
    pub async fn fallocate(&self, ino: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        let supported = libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !supported != 0 || length == 0 {
            return Err(StrataError::new(ErrorCode::NotSupported, format!("fallocate mode {mode:#x}")));
        }
        self.flush_inode(ino).await?;
        let _changing = reader::changing_extents();
        let end = offset.checked_add(length).ok_or_else(|| StrataError::invalid("range past the largest offset"))?;
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            let punched = self.meta.punch_hole(ino, offset, length).await;
            self.extents_changed(ino);
            punched?;
        }
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 {
            let inode = self.meta.getattr(ino).await?;
            if end > inode.size {
                self.meta.setattr(SetAttr { ino, size: Some(end), ..Default::default() }).await?;
                self.extents_changed(ino);
            }
        }
        Ok(())
    }

    /// unlink(2): a file that lost its last name is reclaimed now, or at its
    /// last close if it is open in this mount.
    /// unlink(2): into the volume's trash if it keeps deleted files; a file
    /// that lost its last name and is not open is reclaimed.
    pub async fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        let Deleted::Unlinked(inode) = self.meta.delete_file(parent, name, false).await? else {
            return Ok(());
        };
        if inode.nlink == 0 && !inode.is_dir() && !self.handles.unlinked(inode.ino) {
            self.meta.evict(inode.ino).await?;
        }
        Ok(())
    }

    /// rename(2): a target that lost its last name is reclaimed like on unlink.
    pub async fn rename(&self, sp: u64, sn: &[u8], dp: u64, dn: &[u8], flags: u32) -> Result<()> {
        let replaced = if flags == 0 { self.meta.lookup(dp, dn).await.ok() } else { None };
        self.meta.rename(sp, sn, dp, dn, flags).await?;
        if let Some(old) = replaced
            && old.is_file()
        {
            let after = self.meta.getattr(old.ino).await;
            let gone = matches!(&after, Ok(i) if i.nlink == 0);
            if gone && !self.handles.unlinked(old.ino) {
                self.meta.evict(old.ino).await?;
            }
        }
        Ok(())
    }

    /// The whole listing of a directory, "." and ".." first; with `plus`,
    /// every entry carries its attributes (fetched from the inode's own
    /// partition when the directory's partition does not hold it).
    pub async fn list_dir(&self, ino: u64, plus: bool) -> Result<Vec<DirEntry>> {
        let dir = self.meta.getattr(ino).await?;
        let parent_ino = if dir.parent == 0 { ino } else { dir.parent };
        let parent = if plus { Some(self.meta.getattr(parent_ino).await?) } else { None };
        let mut out = vec![
            DirEntry { name: b".".to_vec(), ino, kind: FileKind::Dir, attr: plus.then_some(dir), xattr: None },
            DirEntry { name: b"..".to_vec(), ino: parent_ino, kind: FileKind::Dir, attr: parent, xattr: None },
        ];
        let mut after = Vec::new();
        loop {
            let (page, more) = self.meta.readdir(ino, &after, DIR_PAGE, plus).await?;
            after = page.last().map(|e| e.name.clone()).unwrap_or_default();
            // Files being written through the path API are not shown until they are committed.
            out.extend(
                page.into_iter().filter(|e| ino != strata_sdk::fs::ROOT_INO || e.name != strata_sdk::fs::TEMP_DIR),
            );
            if !more {
                break;
            }
        }
        if plus {
            self.fill_attrs(&mut out).await;
        }
        Ok(out)
    }

    /// Reads the attributes of the entries that lack them (in their own partitions).
    pub async fn fill_attrs(&self, entries: &mut [DirEntry]) {
        let missing = entries.iter_mut().filter(|e| e.attr.is_none()).map(|e| async move {
            // An entry removed meanwhile simply has no attributes to show.
            e.attr = self.meta.getattr(e.ino).await.ok();
        });
        futures::future::join_all(missing).await;
    }

    pub async fn read(&self, file: &OpenFile, offset: u64, size: u32) -> Result<Bytes> {
        // Reads see this mount's own writes.
        flush_file(file).await?;
        file.reads.read(&self.meta, &self.cache, offset, size).await
    }

    /// Drops what this mount cached of `ino`'s extent map (it changed).
    fn extents_changed(&self, ino: u64) {
        // Either way the change is counted once (`ReadState::invalidate` counts it).
        match self.handles.by_inode(ino) {
            Some(file) => file.reads.invalidate(),
            None => reader::note_extent_change(),
        }
    }

    pub async fn write(&self, file: &OpenFile, offset: u64, data: &[u8]) -> Result<()> {
        let mut writer = file.writer.lock().await;
        let writer = writer
            .get_or_insert_with(|| FileWriter::new(self.data.clone(), self.meta.clone(), file.ino, self.blob_size));
        writer.write(offset, data).await?;
        file.written_end.fetch_max(offset + data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Closes a handle: its writes become durable and visible (close-to-open);
    /// an unlinked file is reclaimed at its last close here.
    pub async fn release(&self, fh: u64) -> Result<()> {
        let Some((file, reclaim)) = self.handles.release(fh) else {
            return Err(StrataError::new(ErrorCode::InvalidArgument, "unknown file handle"));
        };
        let flushed = flush_file(&file).await;
        if self.handles.by_inode(file.ino).is_none() {
            // Its last close here has released whatever locks it had.
            self.lock_users.lock().unwrap().remove(&file.ino);
        }
        if reclaim {
            self.meta.evict(file.ino).await?;
        }
        flushed
    }
}

/// The lock a FUSE request describes (inclusive `end`, OFFSET_MAX to the end).
pub fn lock_op(inner: &Inner, ino: u64, owner: u64, start: u64, end: u64, typ: i32, pid: u32) -> Lock {
    let kind = match typ {
        libc::F_RDLCK => LockKind::Read,
        libc::F_WRLCK => LockKind::Write,
        _ => LockKind::Unlock,
    };
    let end = if end >= i64::MAX as u64 { u64::MAX } else { end + 1 };
    Lock { ino, session: inner.session, owner, pid, kind, start, end, flock: false }
}

impl Inner {
    /// F_SETLK / F_SETLKW: with `wait`, retries until the lock is granted.
    pub async fn set_lock(&self, op: Lock, wait: bool) -> Result<()> {
        if op.kind != LockKind::Unlock {
            self.lock_users.lock().unwrap().insert(op.ino);
        }
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.meta.lock(op).await {
                Err(e) if wait && e.code == ErrorCode::WouldBlock => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
                other => return other,
            }
        }
    }

    /// Releases every lock `owner` holds on `ino` (a close drops POSIX
    /// locks); nothing to do if no lock was ever asked for on it here.
    pub async fn unlock_owner(&self, ino: u64, owner: u64) -> Result<()> {
        if !self.lock_users.lock().unwrap().contains(&ino) {
            return Ok(());
        }
        let op = Lock {
            ino,
            session: self.session,
            owner,
            pid: 0,
            kind: LockKind::Unlock,
            start: 0,
            end: u64::MAX,
            flock: false,
        };
        self.meta.lock(op).await
    }
}

pub async fn flush_file(file: &OpenFile) -> Result<()> {
    let mut writer = file.writer.lock().await;
    let Some(w) = writer.as_mut().filter(|w| w.has_pending()) else { return Ok(()) };
    let flushed = w.flush().await;
    // Committed extents (even part of them on failure) change the map.
    file.reads.invalidate();
    flushed
}
