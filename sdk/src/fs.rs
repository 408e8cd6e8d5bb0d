//! A volume by paths: the door every front end that does not speak inodes
//! (the S3 gateway, the CSI driver, tools) goes through. Paths are bytes,
//! `/`-separated, resolved from the volume's root or from a subtree root.
//!
//! Whole files are written through a temporary name and renamed into place
//! ([`Volume::create`] → [`AtomicWrite::commit`]): a reader sees the old file
//! or the new one, never a mix, and a writer that dies leaves only a
//! temporary in the volume's hidden [`TEMP_DIR`], which
//! [`Volume::reclaim_temporaries`] removes once it is old enough.
//!
//! Errors are [`ErrorCode`]s: `NotFound`, `NotDir`, `IsDir`, `AlreadyExists`,
//! `NameTooLong`, and `InvalidArgument` for a path no name can hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_common::hash::Fnv64;
use strata_common::{ErrorCode, Result, StrataError};

use crate::cache::{BlockCache, CacheConfig, SharedTier};
use crate::data::DataClient;
use crate::data::file::{DEFAULT_BLOB_SIZE, EXTENTS_PER_COMMIT, FileWriter, read_file};
use crate::data::reader::{self, FileReader};
use crate::meta_client::XattrPairs;
use crate::types::{Attr, DirEntry, Extent, SetAttr};
use crate::{MasterClient, MetaClient};

/// The inode of every volume's root directory.
pub const ROOT_INO: u64 = 1;
/// The directory at the volume's root holding files being written. Listings
/// of the root through the sdk and the mount leave it out.
pub const TEMP_DIR: &[u8] = b".strata-tmp";
/// Longest name of one path component.
pub const NAME_MAX: usize = 255;
/// Longest path accepted.
pub const PATH_MAX: usize = 4096;
/// Temporaries younger than this are never reclaimed: their writer may be alive.
pub const TEMP_GRACE: Duration = Duration::from_secs(3600);
/// Times a read open starts over when the file it found was replaced meanwhile.
const OPEN_ATTEMPTS: usize = 5;

/// The components of `path`: `/`-separated names; a leading and a trailing
/// `/` are allowed (the root is the empty list). Empty components, `.`,
/// `..` and NUL bytes are refused as `InvalidArgument`; a component over
/// [`NAME_MAX`] bytes or a path over [`PATH_MAX`] as `NameTooLong`.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    if path.len() > PATH_MAX {
        return Err(StrataError::new(ErrorCode::NameTooLong, format!("a path of {} bytes", path.len())));
    }
    let rest = path.strip_prefix(b"/").unwrap_or(path);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    rest.split(|b| *b == b'/').map(check_name).collect()
}

/// `name` if it can name a directory entry.
pub fn check_name(name: &[u8]) -> Result<&[u8]> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&0) || name.contains(&b'/') {
        return Err(StrataError::invalid(format!("{:?} cannot be a name in a path", String::from_utf8_lossy(name))));
    }
    if name.len() > NAME_MAX {
        return Err(StrataError::new(ErrorCode::NameTooLong, format!("a name of {} bytes", name.len())));
    }
    Ok(name)
}

/// One page of a directory listing.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Entries in name order (bytewise), with attributes.
    pub entries: Vec<DirEntry>,
    /// Where the next page starts (pass it as `after`); `None` at the end.
    pub next: Option<Vec<u8>>,
}

/// Who new files and directories belong to, and their permission bits.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u32,
    pub dir_mode: u32,
}

impl Default for Owner {
    fn default() -> Self {
        Owner { uid: 0, gid: 0, file_mode: 0o644, dir_mode: 0o755 }
    }
}

/// How [`Volume::create`] places the new file.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// Make missing parent directories (as `mkdir -p`).
    pub make_parents: bool,
    /// Fail with `AlreadyExists` instead of replacing an existing file.
    pub no_replace: bool,
}

/// One volume (or one subtree of it) by paths. Cheap to clone.
#[derive(Clone)]
pub struct Volume {
    meta: Arc<MetaClient>,
    data: Arc<DataClient>,
    cache: Arc<BlockCache>,
    root: u64,
    owner: Owner,
    blob_size: usize,
    /// An xattr (name, value) set on every directory made implicitly
    /// (`mkdir -p`, `make_parents`), so its maker can tell them apart.
    dir_mark: Option<Arc<(Vec<u8>, Vec<u8>)>>,
    /// The inode of [`TEMP_DIR`] once known (0: not yet), shared by the views.
    temp_dir: Arc<AtomicU64>,
}

impl Volume {
    /// Opens `name` with the block caches `cache` asks for.
    pub async fn connect(master: &MasterClient, name: &str, cache: &CacheConfig) -> Result<Volume> {
        let meta = Arc::new(MetaClient::open(master, name).await?);
        let data = Arc::new(DataClient::open(master, name).await?);
        let shared = cache.shared_tier;
        let cache = BlockCache::new(data.clone(), cache)?;
        if shared {
            cache.set_shared_tier(SharedTier::open(data.master()?).await);
        }
        Ok(Volume::from_parts(meta, data, cache))
    }

    /// A volume over clients the caller already holds.
    pub fn from_parts(meta: Arc<MetaClient>, data: Arc<DataClient>, cache: Arc<BlockCache>) -> Volume {
        Volume {
            meta,
            data,
            cache,
            root: ROOT_INO,
            owner: Owner::default(),
            blob_size: DEFAULT_BLOB_SIZE,
            dir_mark: None,
            temp_dir: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same volume, creating files and directories as `owner`.
    pub fn with_owner(mut self, owner: Owner) -> Volume {
        self.owner = owner;
        self
    }

    /// The same volume, setting the xattr `name` = `value` on every
    /// directory it makes on the way to a path (the S3 gateway marks the
    /// parents it made, to remove them again once they are empty).
    pub fn with_dir_mark(mut self, name: &[u8], value: &[u8]) -> Volume {
        self.dir_mark = Some(Arc::new((name.to_vec(), value.to_vec())));
        self
    }

    /// A number that changes whenever the content of the file `ino` changes
    /// (a hash of its size and extents: blob ids are never reused), with its
    /// attributes read at the same time.
    pub async fn content_version(&self, ino: u64) -> Result<(Attr, u64)> {
        let (extents, inode) = self.meta.get_extents_and_inode(ino, 0, u64::MAX).await?;
        let version = version_of(inode.size, &extents);
        Ok((inode, version))
    }

    /// The directory `path` as the root of a new view (e.g. a PVC's subdirectory).
    pub async fn subtree(&self, path: &[u8]) -> Result<Volume> {
        let dir = self.stat(path).await?;
        if !dir.is_dir() {
            return Err(StrataError::new(ErrorCode::NotDir, format!("{} is not a directory", show(path))));
        }
        Ok(Volume { root: dir.ino, ..self.clone() })
    }

    pub fn meta(&self) -> &Arc<MetaClient> {
        &self.meta
    }

    pub fn data(&self) -> &Arc<DataClient> {
        &self.data
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    pub fn name(&self) -> &str {
        self.meta.volume()
    }

    /// The inode `path` names.
    pub async fn stat(&self, path: &[u8]) -> Result<Attr> {
        let names = components(path)?;
        self.walk(&names, false).await.map_err(|e| e.context(&format!("resolving {}", show(path))))
    }

    /// What `names` lead to from the root, one lookup each; with `make`,
    /// missing directories are made on the way.
    async fn walk(&self, names: &[&[u8]], make: bool) -> Result<Attr> {
        let Some((first, rest)) = names.split_first() else {
            return self.meta.getattr(self.root).await;
        };
        // The view's root is a directory (checked when the view was made);
        // if it has gone since, the first lookup says so.
        let mut at = self.step(self.root, first, make).await?;
        for name in rest {
            if !at.is_dir() {
                return Err(not_a_dir(at.ino));
            }
            at = self.step(at.ino, name, make).await?;
        }
        Ok(at)
    }

    async fn step(&self, dir: u64, name: &[u8], make: bool) -> Result<Attr> {
        match make {
            true => self.dir_entry_or_make(dir, name).await,
            false => self.meta.lookup(dir, name).await,
        }
    }

    /// The directory holding the last component of `path`, and that name.
    async fn parent_of<'p>(&self, path: &'p [u8], make: bool) -> Result<(Attr, &'p [u8])> {
        let names = components(path)?;
        let Some((last, parents)) = names.split_last() else {
            return Err(StrataError::invalid("the root has no parent"));
        };
        let parent = self.walk(parents, make).await?;
        if !parent.is_dir() {
            return Err(not_a_dir(parent.ino));
        }
        Ok((parent, last))
    }

    /// `mkdir -p`: makes every missing directory of `path`; one that exists is
    /// fine (also when another client made it at the same time), anything
    /// else in the way is `NotDir`.
    pub async fn mkdir_p(&self, path: &[u8]) -> Result<Attr> {
        let names = components(path)?;
        let made = self.walk(&names, true).await;
        match made {
            Ok(dir) if dir.is_dir() => Ok(dir),
            Ok(other) => Err(not_a_dir(other.ino)),
            Err(e) => Err(e),
        }
        .map_err(|e| e.context(&format!("making directory {}", show(path))))
    }

    async fn dir_entry_or_make(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        match self.meta.lookup(parent, name).await {
            Ok(found) => return Ok(found),
            Err(e) if e.code != ErrorCode::NotFound => return Err(e),
            Err(_) => {}
        }
        let Owner { uid, gid, dir_mode, .. } = self.owner;
        match self.meta.mkdir(parent, name, dir_mode, uid, gid).await {
            Ok(made) => {
                if let Some(mark) = &self.dir_mark {
                    self.meta.set_xattr(made.ino, &mark.0, &mark.1, 0).await?;
                }
                Ok(made)
            }
            // Another client made it first.
            Err(e) if e.code == ErrorCode::AlreadyExists => self.meta.lookup(parent, name).await,
            Err(e) => Err(e),
        }
    }

    /// One page of the directory `path`: up to `limit` entries whose names
    /// sort after `after` (empty: from the start), with their attributes.
    /// Names present for the whole listing are returned exactly once.
    pub async fn list(&self, path: &[u8], after: &[u8], limit: u32) -> Result<ListPage> {
        let dir = self.stat(path).await?;
        if !dir.is_dir() {
            return Err(StrataError::new(ErrorCode::NotDir, format!("{} is not a directory", show(path))));
        }
        self.list_dir(dir.ino, after, limit).await
    }

    /// [`Volume::list`] of the directory `dir` by its inode (a walk that
    /// already holds it).
    pub async fn list_dir(&self, dir: u64, after: &[u8], limit: u32) -> Result<ListPage> {
        self.list_dir_with(dir, after, limit, b"").await
    }

    /// [`Volume::list_dir`] with the extended attribute `xattr` of each entry
    /// ([`DirEntry::xattr`], `None` where the inode has none), read with the
    /// page itself for inodes that live with their entries.
    pub async fn list_dir_with(&self, dir: u64, after: &[u8], limit: u32, xattr: &[u8]) -> Result<ListPage> {
        let limit = limit.clamp(1, 10_000);
        let (page, more) = self.meta.readdir_with(dir, after, limit, true, xattr).await?;
        let next = if more { page.last().map(|e| e.name.clone()) } else { None };
        let mut entries = Vec::with_capacity(page.len());
        for mut entry in page {
            if dir == ROOT_INO && entry.name == TEMP_DIR {
                continue;
            }
            if entry.attr.is_none() {
                // The inode lives in another partition; one removed meanwhile is left out.
                match self.meta.getattr(entry.ino).await {
                    Ok(inode) => entry.attr = Some(inode),
                    Err(e) if e.code == ErrorCode::NotFound => continue,
                    Err(e) => return Err(e),
                }
                if !xattr.is_empty() {
                    entry.xattr = match self.meta.get_xattr(entry.ino, xattr).await {
                        Ok(value) => Some(value),
                        Err(e) if matches!(e.code, ErrorCode::NoData | ErrorCode::NotFound) => None,
                        Err(e) => return Err(e),
                    };
                }
            }
            entries.push(entry);
        }
        Ok(ListPage { entries, next })
    }

    /// Opens the file `path` for reading. A file replaced while it is being
    /// opened is opened again under its new content.
    pub async fn open(&self, path: &[u8]) -> Result<FileHandle> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let found = self.stat(path).await?;
            if found.is_dir() {
                return Err(StrataError::new(ErrorCode::IsDir, format!("{} is a directory", show(path))));
            }
            match reader::first_window(&self.meta, found.ino).await {
                Ok((inode, first)) => {
                    let version = first.whole_file().map(|extents| version_of(inode.size, extents));
                    let reader = FileReader::new(inode.ino);
                    reader.seed(first);
                    return Ok(FileHandle { volume: self.clone(), attr: inode, reader, version });
                }
                Err(e) if e.code == ErrorCode::NotFound && attempt < OPEN_ATTEMPTS => continue,
                Err(e) => return Err(e.context(&format!("opening {}", show(path)))),
            }
        }
    }

    /// Starts writing a new file at `path`; nothing is visible there until
    /// [`AtomicWrite::commit`].
    pub async fn create(&self, path: &[u8], options: CreateOptions) -> Result<AtomicWrite> {
        // Check the path before writing anything.
        let names = components(path)?;
        if names.is_empty() {
            return Err(StrataError::new(ErrorCode::IsDir, "the root is a directory"));
        }
        let temp_name = temp_name();
        let Owner { uid, gid, file_mode, .. } = self.owner;
        let mode = libc::S_IFREG | file_mode;
        let temp_dir = self.temp_dir().await?;
        let (temp_dir, inode) = match self.meta.create(temp_dir, &temp_name, mode, uid, gid, 0).await {
            // Someone removed the temporaries' directory: make it again once.
            Err(e) if e.code == ErrorCode::NotFound => {
                self.temp_dir.store(0, Ordering::Relaxed);
                let temp_dir = self.temp_dir().await?;
                (temp_dir, self.meta.create(temp_dir, &temp_name, mode, uid, gid, 0).await?)
            }
            other => (temp_dir, other?),
        };
        let writer = FileWriter::new(self.data.clone(), self.meta.clone(), inode.ino, self.blob_size);
        Ok(AtomicWrite {
            volume: self.clone(),
            path: path.to_vec(),
            options,
            temp_dir,
            temp_name,
            ino: inode.ino,
            writer,
            written: 0,
        })
    }

    /// Writes `bytes` as the whole content of `path` (see [`Volume::create`]).
    pub async fn write_all(&self, path: &[u8], bytes: &[u8], options: CreateOptions) -> Result<Attr> {
        let mut write = self.create(path, options).await?;
        if let Err(e) = write.write(bytes).await {
            write.abort().await;
            return Err(e);
        }
        write.commit().await
    }

    /// The whole content of the file `path`.
    pub async fn read_all(&self, path: &[u8]) -> Result<Bytes> {
        let file = self.open(path).await?;
        file.read(0, file.attr.size).await
    }

    /// The inode of [`TEMP_DIR`], made if missing; looked up once.
    async fn temp_dir(&self) -> Result<u64> {
        let known = self.temp_dir.load(Ordering::Relaxed);
        if known != 0 {
            return Ok(known);
        }
        let owner = Owner { uid: 0, gid: 0, dir_mode: 0o700, ..self.owner };
        let root = Volume { root: ROOT_INO, owner, dir_mark: None, ..self.clone() };
        let ino = root.dir_entry_or_make(ROOT_INO, TEMP_DIR).await?.ino;
        self.temp_dir.store(ino, Ordering::Relaxed);
        Ok(ino)
    }

    /// Removes the file, symlink or empty directory `path` (a file goes to
    /// the volume's trash if it keeps deleted files: [`crate::trash`]).
    pub async fn remove(&self, path: &[u8]) -> Result<()> {
        let (parent, name) = self.parent_of(path, false).await?;
        match self.meta.delete_file(parent.ino, name, true).await {
            Err(e) if e.code == ErrorCode::IsDir => self.meta.rmdir(parent.ino, name).await.map(drop),
            other => other.map(drop),
        }
    }

    /// Removes the file or symlink `path` (into the trash, as [`Volume::remove`]);
    /// a directory there is `IsDir` and stays.
    pub async fn remove_file(&self, path: &[u8]) -> Result<()> {
        let (parent, name) = self.parent_of(path, false).await?;
        self.meta.delete_file(parent.ino, name, true).await.map(drop)
    }

    /// Removes `path` and everything below it (`rm -r`); nothing to do if
    /// it does not exist. Not atomic: a failure leaves part of the tree.
    pub async fn remove_tree(&self, path: &[u8]) -> Result<()> {
        let top = match self.stat(path).await {
            Ok(attr) => attr,
            Err(e) if e.code == ErrorCode::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // Directories still to empty, deepest last; each is emptied page by
        // page from its start, since what was listed is removed.
        let mut stack = vec![(path.to_vec(), top)];
        while let Some((dir_path, dir)) = stack.last().cloned() {
            if !dir.is_dir() {
                stack.pop();
                self.remove(&dir_path).await?;
                continue;
            }
            let page = self.list_dir(dir.ino, b"", 1000).await?;
            if page.entries.is_empty() {
                stack.pop();
                self.remove(&dir_path).await?;
                continue;
            }
            for entry in page.entries {
                let child = [dir_path.as_slice(), b"/", &entry.name].concat();
                match entry.attr {
                    Some(attr) if attr.is_dir() => stack.push((child, attr)),
                    _ => match self.remove(&child).await {
                        Err(e) if e.code != ErrorCode::NotFound => return Err(e),
                        _ => {}
                    },
                }
            }
        }
        Ok(())
    }

    /// Renames `from` to `to`, replacing a file there (rename(2)).
    pub async fn rename(&self, from: &[u8], to: &[u8]) -> Result<()> {
        let (src, src_name) = self.parent_of(from, false).await?;
        let (dst, dst_name) = self.parent_of(to, false).await?;
        self.meta.rename_and_reclaim((src.ino, src_name), (dst.ino, dst_name), 0, (0, &[])).await.map(drop)
    }

    pub async fn get_xattr(&self, path: &[u8], name: &[u8]) -> Result<Vec<u8>> {
        let ino = self.stat(path).await?.ino;
        self.meta.get_xattr(ino, name).await
    }

    /// Sets an extended attribute (`flags`: 0, XATTR_CREATE or XATTR_REPLACE).
    pub async fn set_xattr(&self, path: &[u8], name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        let ino = self.stat(path).await?.ino;
        self.meta.set_xattr(ino, name, value, flags).await
    }

    pub async fn list_xattr(&self, path: &[u8]) -> Result<Vec<Vec<u8>>> {
        let ino = self.stat(path).await?.ino;
        self.meta.list_xattr(ino).await
    }

    pub async fn remove_xattr(&self, path: &[u8], name: &[u8]) -> Result<()> {
        let ino = self.stat(path).await?.ino;
        self.meta.remove_xattr(ino, name).await
    }

    /// Removes temporaries left by writers that died, once both their name's
    /// time and their last change are older than `grace` ([`TEMP_GRACE`] in
    /// production). Returns how many were removed.
    pub async fn reclaim_temporaries(&self, grace: Duration) -> Result<u64> {
        let temp_dir = match self.meta.lookup(ROOT_INO, TEMP_DIR).await {
            Ok(dir) => dir.ino,
            Err(e) if e.code == ErrorCode::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let cutoff = now_ns().saturating_sub(i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX));
        let mut removed = 0;
        let mut after = Vec::new();
        loop {
            let (page, more) = self.meta.readdir(temp_dir, &after, 1024, false).await?;
            after = page.last().map(|e| e.name.clone()).unwrap_or_default();
            for entry in page {
                // Names start with their creation time: the rest are younger.
                if temp_time(&entry.name).is_none_or(|t| t >= cutoff) {
                    return Ok(removed);
                }
                let Ok(inode) = self.meta.getattr(entry.ino).await else { continue };
                if inode.mtime_ns.max(inode.ctime_ns) >= cutoff {
                    continue;
                }
                match self.meta.unlink_and_reclaim(temp_dir, &entry.name).await {
                    Ok(_) => removed += 1,
                    // Its writer committed or aborted it meanwhile.
                    Err(e) if e.code == ErrorCode::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if !more {
                return Ok(removed);
            }
        }
    }
}

/// A file open for reading through a [`Volume`].
pub struct FileHandle {
    volume: Volume,
    attr: Attr,
    reader: FileReader,
    /// [`Volume::content_version`] as of the open, when the open saw every extent.
    version: Option<u64>,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHandle").field("volume", &self.volume.name()).field("attr", &self.attr).finish()
    }
}

impl FileHandle {
    /// The attributes as of the open.
    pub fn attr(&self) -> &Attr {
        &self.attr
    }

    /// [`Volume::content_version`] of the file as it was opened (no request
    /// when the open fetched all of its extents).
    pub async fn content_version(&self) -> Result<(Attr, u64)> {
        match self.version {
            Some(version) => Ok((self.attr.clone(), version)),
            None => self.volume.content_version(self.attr.ino).await,
        }
    }

    /// Bytes [offset, offset + length) of the file, fewer at its end.
    pub async fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        let length = length.min(self.attr.size.saturating_sub(offset));
        if length <= u64::from(u32::MAX) {
            return self.reader.read(&self.volume.meta, &self.volume.cache, offset, length as u32).await;
        }
        let mut out = bytes::BytesMut::with_capacity(length as usize);
        let mut at = offset;
        while at < offset + length {
            let step = (offset + length - at).min(64 << 20) as u32;
            let piece = self.reader.read(&self.volume.meta, &self.volume.cache, at, step).await?;
            if piece.is_empty() {
                break;
            }
            at += piece.len() as u64;
            out.extend_from_slice(&piece);
        }
        Ok(out.freeze())
    }
}

/// A file being written under a temporary name; [`commit`](Self::commit)
/// makes it appear whole at its path, [`abort`](Self::abort) drops it.
pub struct AtomicWrite {
    volume: Volume,
    path: Vec<u8>,
    options: CreateOptions,
    temp_dir: u64,
    temp_name: Vec<u8>,
    ino: u64,
    writer: FileWriter,
    written: u64,
}

impl AtomicWrite {
    /// Appends `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write(self.written, bytes).await?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Appends bytes [offset, offset + length) of the file `source`, which
    /// must lie within it. When both files' inodes are in one meta partition
    /// (blob references are counted per partition) the source's extents are
    /// referenced where they are and no byte is copied: the S3 gateway
    /// assembles multipart objects this way. Otherwise the bytes are read and
    /// written. Later changes to the source do not show through.
    pub async fn append_file(&mut self, source: u64, offset: u64, length: u64) -> Result<()> {
        if length == 0 {
            return Ok(());
        }
        self.writer.flush().await?;
        let meta = self.volume.meta.clone();
        if meta.partition_id_of(source)? != meta.partition_id_of(self.ino)? {
            return self.copy_file(source, offset, length).await;
        }
        let (extents, size) = meta.get_extents(source, offset, length).await?;
        check_range(source, offset, length, size)?;
        let base = self.written;
        let shifted: Vec<Extent> =
            extents.iter().map(|e| Extent { file_offset: base + (e.file_offset - offset), ..*e }).collect();
        let mut size_now = 0;
        for batch in shifted.chunks(EXTENTS_PER_COMMIT) {
            size_now = meta.write_extents(self.ino, batch.to_vec()).await?.size;
        }
        self.written = base + length;
        // A hole at the end of the range: the size still covers it.
        if size_now < self.written {
            meta.setattr(SetAttr { ino: self.ino, size: Some(self.written), ..Default::default() }).await?;
        }
        Ok(())
    }

    /// [`append_file`](Self::append_file) by reading and writing the bytes.
    async fn copy_file(&mut self, source: u64, offset: u64, length: u64) -> Result<()> {
        let (meta, data) = (self.volume.meta.clone(), self.volume.data.clone());
        let size = meta.getattr(source).await?.size;
        check_range(source, offset, length, size)?;
        let end = offset + length;
        let mut at = offset;
        while at < end {
            let step = (end - at).min(COPY_STEP);
            let piece = read_file(&meta, &data, source, at, step).await?;
            if piece.len() as u64 != step {
                return Err(StrataError::invalid(format!("file {source} shrank while it was being copied")));
            }
            self.write(&piece).await?;
            at += step;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The inode being written (for xattrs to set before the commit).
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Makes what was written durable (it is still invisible at the path);
    /// a commit after it only renames.
    pub async fn flush(&mut self) -> Result<()> {
        self.writer.flush().await
    }

    /// The volume being written to.
    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    /// Makes the data durable, then puts the file at its path in one rename:
    /// the file there before (if any) is replaced whole. On failure the
    /// temporary is removed and nothing changed at the path.
    pub async fn commit(self) -> Result<Attr> {
        self.commit_with(&[]).await
    }

    /// [`commit`](Self::commit), setting the extended attributes `xattrs`
    /// (name, value) of the file in the same step: the file appears at its
    /// path with them (e.g. an object's record), or not at all.
    pub async fn commit_with(mut self, xattrs: &XattrPairs<'_>) -> Result<Attr> {
        let placed = self.place(xattrs).await;
        if placed.is_err() {
            self.remove_temporary().await;
        }
        placed
    }

    async fn place(&mut self, xattrs: &XattrPairs<'_>) -> Result<Attr> {
        self.writer.flush().await?;
        let volume = self.volume.clone();
        let (parent, name) = volume.parent_of(&self.path, self.options.make_parents).await?;
        let flags = if self.options.no_replace { 1 } else { 0 };
        let (temp, target) = ((self.temp_dir, self.temp_name.as_slice()), (parent.ino, name));
        volume.meta.rename_and_reclaim(temp, target, flags, (self.ino, xattrs)).await
    }

    /// Drops what was written; nothing changes at the path.
    pub async fn abort(self) {
        self.remove_temporary().await;
    }

    async fn remove_temporary(&self) {
        let reclaimed = match self.volume.meta.unlink_and_reclaim(self.temp_dir, &self.temp_name).await {
            Ok(_) | Err(StrataError { code: ErrorCode::NotFound, .. }) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = reclaimed {
            // Left for reclaim_temporaries.
            tracing::warn!(volume = self.volume.name(), ino = self.ino, error = %e, "removing a temporary failed");
        }
    }
}

/// A hash of a file's size and extents: blob ids are never reused, so it
/// changes whenever the content does.
fn version_of(size: u64, extents: &[Extent]) -> u64 {
    let mut hash = Fnv64::default();
    hash.add(size);
    for extent in extents {
        hash.add(extent.file_offset);
        hash.add(extent.length);
        hash.add(extent.blob.data_partition);
        hash.add(extent.blob.blob_id);
        hash.add(extent.blob.offset);
    }
    hash.0
}

/// Bytes read per step when a file is copied.
const COPY_STEP: u64 = 4 << 20;

fn check_range(ino: u64, offset: u64, length: u64, size: u64) -> Result<()> {
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(StrataError::invalid(format!("bytes {offset}+{length} are not within file {ino} of {size} bytes"))),
    }
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// A fresh temporary's name: its creation time (fixed width, so names sort
/// by age) and a random part.
fn temp_name() -> Vec<u8> {
    format!("{:020}-{:016x}", now_ns(), rand::random::<u64>()).into_bytes()
}

/// The creation time a temporary's name carries.
fn temp_time(name: &[u8]) -> Option<i64> {
    std::str::from_utf8(name.get(..20)?).ok()?.parse().ok()
}

fn not_a_dir(ino: u64) -> StrataError {
    StrataError::new(ErrorCode::NotDir, format!("inode {ino} is not a directory"))
}

fn show(path: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_checked_names() {
        assert_eq!(components(b"").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(components(b"/").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(components(b"a/b/c").unwrap(), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(components(b"/a/b/").unwrap(), vec![&b"a"[..], b"b"]);
        for bad in [&b"a//b"[..], b"a/./b", b"a/../b", b"..", b"a\0b", b"//"] {
            assert_eq!(components(bad).unwrap_err().code, ErrorCode::InvalidArgument, "{bad:?}");
        }
        let long = vec![b'x'; NAME_MAX + 1];
        assert_eq!(components(&long).unwrap_err().code, ErrorCode::NameTooLong);
        let deep = b"a/".repeat(PATH_MAX);
        assert_eq!(components(&deep).unwrap_err().code, ErrorCode::NameTooLong);
    }

    #[test]
    fn temporaries_sort_by_age_and_carry_their_time() {
        let first = temp_name();
        std::thread::sleep(Duration::from_millis(2));
        let second = temp_name();
        assert!(first < second);
        let t = temp_time(&first).unwrap();
        assert!(t > 0 && t <= now_ns());
        assert_eq!(temp_time(b"not-a-time"), None);
    }
}
