//! A volume's trash: on a volume whose policy keeps deleted files
//! (`strata volume set NAME --trash-hours N`), a file a user deletes through
//! any front end (the mount, S3, the path API) is moved into the hidden
//! root directory [`TRASH_DIR`] instead of unlinked, named by when it was
//! deleted and its inode (so names sort oldest first and never collide),
//! with where it came from in the [`ORIGIN_XATTR`] set in the move's own
//! commit. `strata trash list|restore|purge` read and undo it.
//!
//! Expired entries are purged by the next delete on any client of the
//! volume (at most once a minute per client, oldest first: a page of the
//! trash's first names) and by `strata trash purge`. Directories are
//! removed, not kept (their files are kept one by one); a file with other
//! hard links loses just the one name; overwrites (a rename or PUT over a
//! file) are not kept.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_common::{ErrorCode, Result, StrataError};

use crate::MetaClient;
use crate::types::Attr;

/// The trash directory under the root of a volume (hidden from S3 listings
/// like every `.strata-` name).
pub const TRASH_DIR: &[u8] = b".strata-trash";
/// Where a kept file came from: its parent directory's inode, when it was
/// deleted (ms since the epoch), both big-endian u64, then its name.
pub const ORIGIN_XATTR: &[u8] = b"user.strata.trash.origin";
/// How often one client looks for expired entries.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Entries one purge pass looks at.
const PURGE_PAGE: u32 = 1000;
const ROOT: u64 = 1;
const RENAME_NOREPLACE: u32 = 1;

/// A client's view of its volume's trash policy and directory.
#[derive(Debug, Default)]
pub struct TrashState {
    retention_secs: AtomicU64,
    /// The trash directory's inode, once known (0: not yet).
    dir: AtomicU64,
    last_purge: Mutex<Option<Instant>>,
}

impl TrashState {
    /// Follows the volume's policy as the master last described it.
    pub(crate) fn set_retention(&self, secs: u64) {
        self.retention_secs.store(secs, Ordering::Relaxed);
    }

    fn retention(&self) -> Option<Duration> {
        match self.retention_secs.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        }
    }
}

/// What a user's delete did.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// The name was removed; the inode as it is now (nlink 0: reclaim it
    /// unless it is open).
    Unlinked(Attr),
    /// The file was moved into the trash.
    Kept(Attr),
}

/// A file in the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// Its name in the trash directory (what restore and purge take).
    pub entry: Vec<u8>,
    pub ino: u64,
    pub size: u64,
    /// Where it was: parent directory inode and name.
    pub parent: u64,
    pub name: Vec<u8>,
    pub deleted_at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn entry_name(deleted_at_ms: u64, ino: u64) -> Vec<u8> {
    format!("{deleted_at_ms:013}-{ino:016x}").into_bytes()
}

fn encode_origin(parent: u64, deleted_at_ms: u64, name: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(16 + name.len());
    value.extend_from_slice(&parent.to_be_bytes());
    value.extend_from_slice(&deleted_at_ms.to_be_bytes());
    value.extend_from_slice(name);
    value
}

fn decode_origin(value: &[u8]) -> Result<(u64, u64, Vec<u8>)> {
    if value.len() < 17 {
        return Err(StrataError::new(ErrorCode::Corrupted, format!("a trash origin of {} bytes", value.len())));
    }
    let parent = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
    let deleted_at_ms = u64::from_be_bytes(value[8..16].try_into().expect("8 bytes"));
    Ok((parent, deleted_at_ms, value[16..].to_vec()))
}

/// When the entry named `entry` was deleted (its name's prefix).
fn deleted_at(entry: &[u8]) -> Option<u64> {
    std::str::from_utf8(entry.get(..13)?).ok()?.parse().ok()
}

impl MetaClient {
    /// How long the volume keeps deleted files (`None`: it does not).
    pub fn trash_retention(&self) -> Option<Duration> {
        self.trash.retention()
    }

    /// The trash directory's inode; with `create`, made if missing.
    async fn trash_dir(&self, create: bool) -> Result<Option<u64>> {
        let known = self.trash.dir.load(Ordering::Relaxed);
        if known != 0 {
            return Ok(Some(known));
        }
        let dir = match self.lookup(ROOT, TRASH_DIR).await {
            Ok(dir) => dir,
            Err(e) if e.code == ErrorCode::NotFound && !create => return Ok(None),
            Err(e) if e.code == ErrorCode::NotFound => match self.mkdir(ROOT, TRASH_DIR, 0o700, 0, 0).await {
                Ok(dir) => dir,
                Err(e) if e.code == ErrorCode::AlreadyExists => self.lookup(ROOT, TRASH_DIR).await?,
                Err(e) => return Err(e.context("making the trash directory")),
            },
            Err(e) => return Err(e),
        };
        if !dir.is_dir() {
            return Err(StrataError::new(ErrorCode::NotDir, "the volume's /.strata-trash is not a directory"));
        }
        self.trash.dir.store(dir.ino, Ordering::Relaxed);
        Ok(Some(dir.ino))
    }

    /// Deletes the file `name` of `parent` as a user asked: into the trash
    /// when the volume keeps deleted files, else unlinked (with `reclaim`,
    /// reclaimed too when it lost its last link, for callers holding no
    /// handle; see [`MetaClient::unlink_and_reclaim`]).
    pub async fn delete_file(&self, parent: u64, name: &[u8], reclaim: bool) -> Result<Deleted> {
        let unlink = || async {
            let inode =
                if reclaim { self.unlink_and_reclaim(parent, name).await? } else { self.unlink(parent, name).await? };
            Ok(Deleted::Unlinked(inode))
        };
        let Some(retention) = self.trash.retention() else { return unlink().await };
        let trash = self.trash_dir(true).await?.expect("made if missing");
        if parent == trash {
            return unlink().await;
        }
        let inode = self.lookup(parent, name).await?;
        if inode.is_dir() || inode.nlink > 1 {
            return unlink().await;
        }
        let deleted_at_ms = now_ms();
        let origin = encode_origin(parent, deleted_at_ms, name);
        let xattrs: &crate::meta_client::XattrPairs = &[(ORIGIN_XATTR, origin.as_slice())];
        let entry = entry_name(deleted_at_ms, inode.ino);
        let kept = self
            .rename_and_reclaim((parent, name), (trash, &entry), RENAME_NOREPLACE, (inode.ino, xattrs))
            .await
            .map_err(|e| e.context("moving a deleted file into the trash"))?;
        self.purge_when_due(retention).await;
        Ok(Deleted::Kept(kept))
    }

    /// Purges expired entries if this client has not looked for a while;
    /// a failure only delays the purge.
    async fn purge_when_due(&self, retention: Duration) {
        {
            let mut last = self.trash.last_purge.lock().unwrap();
            if last.is_some_and(|at| at.elapsed() < PURGE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Err(e) = self.trash_purge(retention).await {
            tracing::warn!(volume = %self.volume(), error = %e, "purging the trash failed");
        }
    }

    /// Every file in the trash, oldest first.
    pub async fn trash_list(&self) -> Result<Vec<TrashEntry>> {
        let Some(trash) = self.trash_dir(false).await? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut after = Vec::new();
        loop {
            let (page, more) = self.readdir_with(trash, &after, PURGE_PAGE, true, ORIGIN_XATTR).await?;
            for entry in &page {
                // An inode in another partition than the trash's entries
                // comes without its attributes and xattr: ask its own.
                let (attr, origin) = match (&entry.attr, &entry.xattr) {
                    (Some(attr), Some(origin)) => (attr.clone(), origin.clone()),
                    _ => match self.getattr(entry.ino).await {
                        Ok(attr) => (attr, self.get_xattr(entry.ino, ORIGIN_XATTR).await?),
                        Err(e) if e.code == ErrorCode::NotFound => continue,
                        Err(e) => return Err(e),
                    },
                };
                let (parent, deleted_at_ms, name) = decode_origin(&origin)?;
                let entry = entry.name.clone();
                out.push(TrashEntry { entry, ino: attr.ino, size: attr.size, parent, name, deleted_at_ms });
            }
            match page.last() {
                Some(last) if more => after = last.name.clone(),
                _ => return Ok(out),
            }
        }
    }

    /// Puts the trash entry `entry` back where it was deleted, or at `to`
    /// (parent inode, name). Never replaces a file: an existing name there
    /// is `AlreadyExists`, a parent since removed `NotFound`.
    pub async fn trash_restore(&self, entry: &[u8], to: Option<(u64, &[u8])>) -> Result<Attr> {
        let trash = self
            .trash_dir(false)
            .await?
            .ok_or_else(|| StrataError::not_found("the volume's trash is empty (it has none)"))?;
        let kept = self.lookup(trash, entry).await?;
        let (parent, _, name) = decode_origin(&self.get_xattr(kept.ino, ORIGIN_XATTR).await?)?;
        let (parent, name) = match to {
            Some((parent, name)) => (parent, name.to_vec()),
            None => (parent, name),
        };
        let restored = self.rename(trash, entry, parent, &name, RENAME_NOREPLACE).await.map_err(|e| {
            let e = e.context("restoring a file from the trash");
            if e.code == ErrorCode::NotFound { e.context("its directory may be gone: restore it elsewhere") } else { e }
        })?;
        self.remove_xattr(kept.ino, ORIGIN_XATTR).await?;
        Ok(restored)
    }

    /// Removes for good the entries deleted longer than `older_than` ago
    /// (`Duration::ZERO`: all); returns how many.
    pub async fn trash_purge(&self, older_than: Duration) -> Result<u64> {
        let Some(trash) = self.trash_dir(false).await? else { return Ok(0) };
        let cutoff = now_ms().saturating_sub(older_than.as_millis() as u64);
        let mut purged = 0;
        loop {
            let (page, more) = self.readdir(trash, b"", PURGE_PAGE, false).await?;
            let mut expired = 0;
            for entry in &page {
                // Names sort by deletion time: the first young one ends the pass.
                if deleted_at(&entry.name).is_some_and(|at| at > cutoff) && !older_than.is_zero() {
                    return Ok(purged);
                }
                match self.unlink_and_reclaim(trash, &entry.name).await {
                    Ok(_) => expired += 1,
                    Err(e) if e.code == ErrorCode::NotFound => {}
                    Err(e) => return Err(e.context("purging the trash")),
                }
            }
            purged += expired;
            if !more || expired == 0 {
                return Ok(purged);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip_and_short_values_are_corrupt() {
        let value = encode_origin(7, 1_700_000_000_123, b"a file");
        assert_eq!(decode_origin(&value).unwrap(), (7, 1_700_000_000_123, b"a file".to_vec()));
        assert_eq!(decode_origin(&value[..16]).unwrap_err().code, ErrorCode::Corrupted);
    }

    #[test]
    fn entry_names_sort_by_deletion_time() {
        let older = entry_name(999, u64::MAX);
        let newer = entry_name(1_000, 1);
        assert!(older < newer);
        assert_eq!(deleted_at(&newer), Some(1_000));
        assert_eq!(deleted_at(b"junk"), None);
    }
}
