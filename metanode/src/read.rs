//! Reads of a partition's namespace, served by the leader after ReadIndex.

use prost::Message;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{
    DentryRecord, DirEntry, InitPartition, Inode, OrphanRecord, PartitionStatsReply, ScanKind, ScanReply,
};
use strata_raftstore::KvRead;

use crate::keys;
use crate::ops::validate_name;
use crate::txn::{
    S_IFLNK, S_IFMT, get_dentry, get_inode, list_dentries, must_dir, must_inode, partition_info, read_u64,
};

/// Most entries one readdir page returns.
pub const MAX_PAGE: usize = 4096;

pub fn info(kv: &impl KvRead) -> Result<InitPartition> {
    partition_info(kv)?.ok_or_else(|| StrataError::unavailable("the meta partition is not initialised yet"))
}

/// Refuses inodes outside the partition's range: the client routed wrongly.
pub fn check_owned(info: &InitPartition, ino: u64) -> Result<()> {
    if ino >= info.inode_start && info.inode_end.is_none_or(|end| ino < end) {
        return Ok(());
    }
    // Clients with a view from before a split send such inodes here: they refresh on this answer.
    Err(StrataError::new(ErrorCode::WrongPartition, format!("inode {ino} does not belong to this meta partition")))
}

pub fn lookup(kv: &impl KvRead, parent: u64, name: &[u8]) -> Result<Inode> {
    lookup_with(kv, parent, name, |_| {})
}

/// [`lookup`], calling `found` with the inode number before its inode is read
/// (a delegation is registered before what it covers is read).
pub fn lookup_with(kv: &impl KvRead, parent: u64, name: &[u8], found: impl FnOnce(u64)) -> Result<Inode> {
    validate_name(name)?;
    must_dir(kv, parent)?;
    let dentry = get_dentry(kv, parent, name)?.ok_or_else(|| {
        StrataError::not_found(format!("no {:?} in directory {parent}", String::from_utf8_lossy(name)))
    })?;
    found(dentry.ino);
    // An inode of another partition comes back bare (nlink 0): the client asks its partition.
    Ok(get_inode(kv, dentry.ino)?.unwrap_or(Inode { ino: dentry.ino, mode: dentry.file_type, ..Default::default() }))
}

/// One page of `parent`; with `plus` each entry's inode (when it lives here)
/// and, if `xattr` is not empty, that extended attribute of it.
pub fn readdir(
    kv: &impl KvRead,
    parent: u64,
    after: &[u8],
    limit: usize,
    plus: bool,
    xattr: &[u8],
) -> Result<(Vec<DirEntry>, bool)> {
    must_dir(kv, parent)?;
    let limit = limit.clamp(1, MAX_PAGE);
    let mut page = list_dentries(kv, parent, after, limit + 1)?;
    let more = page.len() > limit;
    page.truncate(limit);
    let entries = page
        .into_iter()
        .map(|(name, d)| {
            let attr = if plus { get_inode(kv, d.ino)? } else { None };
            let xattr = match (&attr, xattr.is_empty()) {
                (Some(_), false) => kv.get(&keys::xattr(d.ino, xattr))?,
                _ => None,
            };
            Ok(DirEntry { name, ino: d.ino, file_type: d.file_type, attr, xattr })
        })
        .collect::<Result<_>>()?;
    Ok((entries, more))
}

pub fn readlink(kv: &impl KvRead, ino: u64) -> Result<Vec<u8>> {
    let inode = must_inode(kv, ino)?;
    if inode.mode & S_IFMT != S_IFLNK {
        return Err(StrataError::invalid(format!("inode {ino} is not a symlink")));
    }
    Ok(inode.symlink_target)
}

pub fn get_xattr(kv: &impl KvRead, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
    must_inode(kv, ino)?;
    kv.get(&keys::xattr(ino, name))?.ok_or_else(|| StrataError::new(ErrorCode::NoData, "no such xattr"))
}

pub fn list_xattr(kv: &impl KvRead, ino: u64) -> Result<Vec<Vec<u8>>> {
    must_inode(kv, ino)?;
    let prefix = keys::xattrs(ino);
    Ok(kv.scan_prefix(&prefix)?.into_iter().map(|(k, _)| k[prefix.len()..].to_vec()).collect())
}

pub fn stats(kv: &impl KvRead, applied_index: u64) -> Result<PartitionStatsReply> {
    let info = info(kv)?;
    Ok(PartitionStatsReply {
        inode_count: read_u64(kv, keys::INODE_COUNT)?.unwrap_or(0),
        next_inode: read_u64(kv, keys::NEXT_INODE)?.unwrap_or(info.inode_start),
        inode_start: info.inode_start,
        inode_end: info.inode_end,
        applied_index,
        data_bytes: read_u64(kv, keys::DATA_BYTES)?.unwrap_or(0),
    })
}

/// Unlinked inodes still waiting for their last close: (ino, unlinked at ns).
pub fn orphans(kv: &impl KvRead, limit: usize) -> Result<Vec<(u64, i64)>> {
    kv.scan(keys::ORPHAN_PREFIX, &[], limit)?
        .into_iter()
        .map(|(k, v)| Ok((keys::u64_at(&k, 1)?, keys::u64_at(&v, 0)? as i64)))
        .collect()
}

/// One page of a partition's raw records of `kind`, after the cursor `after`
/// (a key suffix returned as `next` by the previous page).
pub fn scan(kv: &impl KvRead, kind: ScanKind, after: &[u8], limit: usize) -> Result<ScanReply> {
    let limit = limit.clamp(1, MAX_PAGE);
    let prefix: &[u8] = match kind {
        ScanKind::Inodes => b"i",
        ScanKind::Dentries => b"d",
        ScanKind::Orphans => keys::ORPHAN_PREFIX,
        ScanKind::Unspecified => return Err(StrataError::invalid("scan kind is missing")),
    };
    let page = kv.scan(prefix, after, limit)?;
    let next = if page.len() == limit {
        page.last().map(|(k, _)| k[prefix.len()..].to_vec()).unwrap_or_default()
    } else {
        Vec::new()
    };
    let corrupt =
        |e: prost::DecodeError| StrataError::new(ErrorCode::Corrupted, format!("decoding a stored record: {e}"));
    let mut reply = ScanReply { next, ..Default::default() };
    for (key, value) in page {
        match kind {
            ScanKind::Inodes => reply.inodes.push(Inode::decode(value.as_slice()).map_err(corrupt)?),
            ScanKind::Dentries => {
                let d = strata_proto::meta::Dentry::decode(value.as_slice()).map_err(corrupt)?;
                reply.dentries.push(DentryRecord {
                    parent: keys::u64_at(&key, 1)?,
                    name: key.get(9..).unwrap_or_default().to_vec(),
                    ino: d.ino,
                    file_type: d.file_type,
                });
            }
            ScanKind::Orphans => reply
                .orphans
                .push(OrphanRecord { ino: keys::u64_at(&key, 1)?, unlinked_at_ns: keys::u64_at(&value, 0)? as i64 }),
            ScanKind::Unspecified => unreachable!("rejected above"),
        }
    }
    Ok(reply)
}
