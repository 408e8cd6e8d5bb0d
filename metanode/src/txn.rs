//! Typed access to a partition's records, for reads (any [`KvRead`]) and for
//! the writes of one command ([`Txn`]). Writes are staged in the command's
//! batch; reads inside a command see the state before it, so a command that
//! reads what it wrote keeps its own view (`Txn` caches written inodes).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use prost::Message;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{Dentry, InitPartition, Inode};
use strata_raftstore::{ApplyBatch, KvRead};

use crate::{keys, quota};

pub const S_IFMT: u32 = libc::S_IFMT;
pub const S_IFDIR: u32 = libc::S_IFDIR;
pub const S_IFREG: u32 = libc::S_IFREG;
pub const S_IFLNK: u32 = libc::S_IFLNK;

pub fn is_dir(inode: &Inode) -> bool {
    inode.mode & S_IFMT == S_IFDIR
}

fn decode<T: Message + Default>(bytes: &[u8], what: &str) -> Result<T> {
    T::decode(bytes).map_err(|e| StrataError::new(ErrorCode::Corrupted, format!("decoding stored {what}: {e}")))
}

pub fn read_u64(kv: &impl KvRead, key: &[u8]) -> Result<Option<u64>> {
    kv.get(key)?.map(|v| keys::u64_at(&v, 0)).transpose()
}

pub fn partition_info(kv: &impl KvRead) -> Result<Option<InitPartition>> {
    kv.get(keys::PARTITION)?.map(|b| decode(&b, "partition info")).transpose()
}

pub fn get_inode(kv: &impl KvRead, ino: u64) -> Result<Option<Inode>> {
    kv.get(&keys::inode(ino))?.map(|b| decode(&b, "inode")).transpose()
}

pub fn must_inode(kv: &impl KvRead, ino: u64) -> Result<Inode> {
    get_inode(kv, ino)?.ok_or_else(|| StrataError::not_found(format!("inode {ino} does not exist")))
}

/// The inode of a directory that may still hold entries.
pub fn must_dir(kv: &impl KvRead, ino: u64) -> Result<Inode> {
    let dir = must_inode(kv, ino)?;
    if !is_dir(&dir) {
        return Err(StrataError::new(ErrorCode::NotDir, format!("inode {ino} is not a directory")));
    }
    if dir.nlink == 0 {
        return Err(StrataError::not_found(format!("directory {ino} has been removed")));
    }
    Ok(dir)
}

pub fn get_dentry(kv: &impl KvRead, parent: u64, name: &[u8]) -> Result<Option<Dentry>> {
    kv.get(&keys::dentry(parent, name))?.map(|b| decode(&b, "dentry")).transpose()
}

pub fn dir_is_empty(kv: &impl KvRead, dir: u64) -> Result<bool> {
    Ok(kv.scan(&keys::dentries(dir), &[], 1)?.is_empty())
}

/// One page of a directory: (name, dentry) after `after`.
pub fn list_dentries(kv: &impl KvRead, dir: u64, after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Dentry)>> {
    let prefix = keys::dentries(dir);
    kv.scan(&prefix, after, limit)?
        .into_iter()
        .map(|(k, v)| Ok((k[prefix.len()..].to_vec(), decode(&v, "dentry")?)))
        .collect()
}

/// The writes of one command, over the command's apply batch.
pub struct Txn<'a, 'b> {
    batch: &'a mut ApplyBatch<'b>,
    inodes: HashMap<u64, Option<Inode>>,
    /// Inodes read from the state before this command, so a command that
    /// reads an inode and then rewrites it reads RocksDB once.
    read: RefCell<HashMap<u64, Option<Inode>>>,
    /// Blob reference counts as this command left them (see `gc`).
    pub blob_refs: HashMap<(u64, u64), u64>,
    inode_count: Option<u64>,
    data_bytes: Option<u64>,
    /// Quota usage (bytes, inodes) as this command left it, by quota root.
    quota_usage: HashMap<u64, (u64, u64)>,
    pub now_ns: i64,
    /// The transaction whose locks this command may write through (its commit).
    pub tx: Option<u64>,
    /// Set when a write hit a record locked by another transaction.
    pub locked: Option<u64>,
    /// Inodes whose attributes, entries, extents or xattrs this command
    /// changed: their delegations are recalled (see `delegation`).
    pub touched: BTreeSet<u64>,
}

impl<'a, 'b> Txn<'a, 'b> {
    pub fn new(batch: &'a mut ApplyBatch<'b>, now_ns: i64) -> Self {
        Txn {
            batch,
            inodes: HashMap::new(),
            read: RefCell::new(HashMap::new()),
            blob_refs: HashMap::new(),
            inode_count: None,
            data_bytes: None,
            quota_usage: HashMap::new(),
            now_ns,
            tx: None,
            locked: None,
            touched: BTreeSet::new(),
        }
    }

    pub fn kv(&self) -> &ApplyBatch<'b> {
        self.batch
    }

    /// The inode as this command last left it.
    pub fn inode(&self, ino: u64) -> Result<Option<Inode>> {
        if let Some(written) = self.inodes.get(&ino) {
            return Ok(written.clone());
        }
        if let Some(read) = self.read.borrow().get(&ino) {
            return Ok(read.clone());
        }
        let inode = get_inode(self.batch, ino)?;
        self.read.borrow_mut().insert(ino, inode.clone());
        Ok(inode)
    }

    pub fn must_inode(&self, ino: u64) -> Result<Inode> {
        self.inode(ino)?.ok_or_else(|| StrataError::not_found(format!("inode {ino} does not exist")))
    }

    pub fn must_dir(&self, ino: u64) -> Result<Inode> {
        match self.inodes.get(&ino) {
            Some(_) => {
                let dir = self.must_inode(ino)?;
                if !is_dir(&dir) {
                    return Err(StrataError::new(ErrorCode::NotDir, format!("inode {ino} is not a directory")));
                }
                Ok(dir)
            }
            None => must_dir(self.batch, ino),
        }
    }

    /// Notes a write to a record another transaction holds locked; the
    /// command then fails as a whole (retryably) instead of applying.
    fn check_lock(&mut self, key: &[u8]) {
        if let Ok(Some(holder)) = read_u64(self.batch, &keys::tx_lock(key))
            && Some(holder) != self.tx
        {
            self.locked = Some(holder);
        }
    }

    /// Keeps the partition's byte count (for statfs) in step with file
    /// sizes, and the quotas' counters with their inodes.
    fn account(&mut self, old: Option<&Inode>, new: Option<&Inode>) {
        let (before, after) = (quota::contribution(old), quota::contribution(new));
        if before != after {
            if let Some((root, bytes, inodes)) = before {
                self.add_quota_usage(root, -(bytes as i128), -(inodes as i128));
            }
            if let Some((root, bytes, inodes)) = after {
                self.add_quota_usage(root, bytes as i128, inodes as i128);
            }
        }
        let size = |i: Option<&Inode>| i.filter(|i| i.mode & S_IFMT == S_IFREG).map(|i| i.size).unwrap_or(0);
        let (before, after) = (size(old), size(new));
        if before == after {
            return;
        }
        let total = match self.data_bytes {
            Some(total) => total,
            None => read_u64(self.batch, keys::DATA_BYTES).ok().flatten().unwrap_or(0),
        };
        let updated = total.saturating_sub(before).saturating_add(after);
        self.data_bytes = Some(updated);
        self.batch.put(keys::DATA_BYTES, &updated.to_be_bytes());
    }

    fn add_quota_usage(&mut self, root: u64, bytes: i128, inodes: i128) {
        let (now_bytes, now_inodes) = match self.quota_usage.get(&root) {
            Some(usage) => *usage,
            None => quota::usage(self.batch, root).unwrap_or((0, 0)),
        };
        let clamp = |v: i128| v.clamp(0, u64::MAX as i128) as u64;
        let updated = (clamp(now_bytes as i128 + bytes), clamp(now_inodes as i128 + inodes));
        self.quota_usage.insert(root, updated);
        if updated == (0, 0) {
            self.batch.delete(&keys::quota_usage(root));
        } else {
            self.batch.put(&keys::quota_usage(root), &quota::encode_usage(updated.0, updated.1));
        }
    }

    pub fn put_inode(&mut self, inode: Inode) {
        let old = self.inode(inode.ino).ok().flatten();
        self.account(old.as_ref(), Some(&inode));
        self.check_lock(&keys::inode(inode.ino));
        self.touched.insert(inode.ino);
        self.batch.put(&keys::inode(inode.ino), &inode.encode_to_vec());
        self.inodes.insert(inode.ino, Some(inode));
    }

    pub fn delete_inode(&mut self, ino: u64) -> Result<()> {
        let old = self.inode(ino)?;
        self.account(old.as_ref(), None);
        self.check_lock(&keys::inode(ino));
        self.touched.insert(ino);
        self.batch.delete(&keys::inode(ino));
        for (key, _) in self.batch.scan_prefix(&keys::xattrs(ino))? {
            self.batch.delete(&key);
        }
        self.batch.delete(&keys::orphan(ino));
        crate::extents::delete_all(self, ino)?;
        for (key, _) in self.batch.scan_prefix(&keys::locks(ino))? {
            let (session, owner, start) = (keys::u64_at(&key, 9)?, keys::u64_at(&key, 17)?, keys::u64_at(&key, 25)?);
            self.batch.delete(&keys::session_lock(session, ino, owner, start));
            self.batch.delete(&key);
        }
        self.inodes.insert(ino, None);
        self.add_inode_count(-1)
    }

    pub fn put_dentry(&mut self, parent: u64, name: &[u8], dentry: Dentry) {
        self.check_lock(&keys::dentry(parent, name));
        self.touched.insert(parent);
        self.batch.put(&keys::dentry(parent, name), &dentry.encode_to_vec());
    }

    pub fn delete_dentry(&mut self, parent: u64, name: &[u8]) {
        self.check_lock(&keys::dentry(parent, name));
        self.touched.insert(parent);
        self.batch.delete(&keys::dentry(parent, name));
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.note_touched(key);
        self.batch.put(key, value);
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.note_touched(key);
        self.batch.delete(key);
    }

    /// Extents and xattrs are written by key: their inode changed.
    fn note_touched(&mut self, key: &[u8]) {
        if let (Some(keys::EXTENT_TAG | keys::XATTR_TAG), Ok(ino)) = (key.first().copied(), keys::u64_at(key, 1)) {
            self.touched.insert(ino);
        }
    }

    pub fn add_inode_count(&mut self, delta: i64) -> Result<()> {
        let count = match self.inode_count {
            Some(count) => count,
            None => read_u64(self.batch, keys::INODE_COUNT)?.unwrap_or(0),
        };
        let updated = count.saturating_add_signed(delta);
        self.inode_count = Some(updated);
        self.batch.put(keys::INODE_COUNT, &updated.to_be_bytes());
        Ok(())
    }

    /// Marks the times of a directory whose entries changed.
    pub fn touch_dir(&mut self, mut dir: Inode, nlink_delta: i32) {
        dir.mtime_ns = self.now_ns;
        dir.ctime_ns = self.now_ns;
        dir.nlink = dir.nlink.saturating_add_signed(nlink_delta);
        self.put_inode(dir);
    }
}
