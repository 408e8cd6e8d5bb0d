//! Key layout of a meta partition's key space (inside its Raft group's range):
//!
//! | key | value |
//! |---|---|
//! | `P` | partition info (`InitPartition`) |
//! | `G` | last term in which a leader granted delegations (u64 BE) |
//! | `N` | next inode number to allocate (u64 BE) |
//! | `C` | live inode count (u64 BE) |
//! | `B` | sum of the sizes of regular files (u64 BE), for statfs |
//! | `i` ino | `Inode` |
//! | `d` parent name | `Dentry` (name bytes sort the directory) |
//! | `x` ino name | xattr value |
//! | `o` ino | orphan: unlinked, still open; value = unlink time (i64 BE ns) |
//! | `e` ino file-offset | `Extent` (a piece of the file's data) |
//! | `l` ino session owner start | `LockInfo` (a held lock) |
//! | `L` session ino owner start | empty; a session's locks, for expiry |
//! | `s` session | lease expiry (i64 BE ns) |
//! | `t` txid | a prepared transaction: allocated ino (u64 BE) + `TxPrepareOp` |
//! | `k` key | txid (u64 BE) holding `key` locked until it commits or aborts |
//! | `T` txid | outcome decided at the primary (`TxState` as u8) |
//! | `q` request-id | applied index (u64 BE) then the stored reply |
//! | `Q` index request-id | empty; orders request ids for pruning |
//! | `R` | where pruning resumes (suffix of the last `Q` key deleted) |
//! | `r` data-partition blob | references (u64 BE) extents hold on the blob |
//! | `g` time-ns data-partition blob | empty; a freed blob waiting for deletion |
//! | `u` quota-root | bytes then inodes (u64 BE each) of a directory quota held here |

use strata_common::{ErrorCode, Result, StrataError};

pub const PARTITION: &[u8] = b"P";
/// The last term whose leader granted delegations (u64 BE).
pub const GRANT_TERM: &[u8] = b"G";
/// First byte of an extent key (`e` ino offset).
pub const EXTENT_TAG: u8 = b'e';
/// First byte of an xattr key (`x` ino name).
pub const XATTR_TAG: u8 = b'x';
pub const NEXT_INODE: &[u8] = b"N";
pub const INODE_COUNT: &[u8] = b"C";
/// Sum of the sizes of the partition's regular files (u64 BE).
pub const DATA_BYTES: &[u8] = b"B";
pub const ORPHAN_PREFIX: &[u8] = b"o";
pub const REQUEST_INDEX_PREFIX: &[u8] = b"Q";
/// Where request-id pruning resumes (the suffix of the last `Q` key it deleted).
pub const REQUEST_PRUNE_CURSOR: &[u8] = b"R";
pub const SESSION_PREFIX: &[u8] = b"s";
pub const TX_PREFIX: &[u8] = b"t";
/// Freed blobs waiting for the grace period, oldest first.
pub const FREED_PREFIX: &[u8] = b"g";
/// Usage counters of directory quotas.
pub const QUOTA_USAGE_PREFIX: &[u8] = b"u";

fn with_u64(tag: u8, n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(tag);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

pub fn quota_usage(root: u64) -> Vec<u8> {
    with_u64(b'u', root)
}

pub fn inode(ino: u64) -> Vec<u8> {
    with_u64(b'i', ino)
}

/// Prefix of every dentry of `parent`.
pub fn dentries(parent: u64) -> Vec<u8> {
    with_u64(b'd', parent)
}

pub fn dentry(parent: u64, name: &[u8]) -> Vec<u8> {
    let mut key = dentries(parent);
    key.extend_from_slice(name);
    key
}

/// Prefix of every xattr of `ino`.
pub fn xattrs(ino: u64) -> Vec<u8> {
    with_u64(XATTR_TAG, ino)
}

pub fn xattr(ino: u64, name: &[u8]) -> Vec<u8> {
    let mut key = xattrs(ino);
    key.extend_from_slice(name);
    key
}

/// Prefix of every extent of `ino`.
pub fn extents(ino: u64) -> Vec<u8> {
    with_u64(EXTENT_TAG, ino)
}

pub fn extent(ino: u64, file_offset: u64) -> Vec<u8> {
    let mut key = extents(ino);
    key.extend_from_slice(&file_offset.to_be_bytes());
    key
}

/// Prefix of every lock on `ino`.
pub fn locks(ino: u64) -> Vec<u8> {
    with_u64(b'l', ino)
}

pub fn lock(ino: u64, session: u64, owner: u64, start: u64) -> Vec<u8> {
    let mut key = locks(ino);
    for n in [session, owner, start] {
        key.extend_from_slice(&n.to_be_bytes());
    }
    key
}

/// Prefix of every lock held under `session`.
pub fn session_locks(session: u64) -> Vec<u8> {
    with_u64(b'L', session)
}

pub fn session_lock(session: u64, ino: u64, owner: u64, start: u64) -> Vec<u8> {
    let mut key = session_locks(session);
    for n in [ino, owner, start] {
        key.extend_from_slice(&n.to_be_bytes());
    }
    key
}

pub fn session(id: u64) -> Vec<u8> {
    with_u64(b's', id)
}

pub fn tx(txid: u64) -> Vec<u8> {
    with_u64(b't', txid)
}

pub fn tx_outcome(txid: u64) -> Vec<u8> {
    with_u64(b'T', txid)
}

/// The lock a transaction holds on another record's key.
pub fn tx_lock(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(b'k');
    out.extend_from_slice(key);
    out
}

pub fn orphan(ino: u64) -> Vec<u8> {
    with_u64(b'o', ino)
}

pub fn request(id: u64) -> Vec<u8> {
    with_u64(b'q', id)
}

pub fn request_index(index: u64, id: u64) -> Vec<u8> {
    let mut key = with_u64(b'Q', index);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn blob_refs(data_partition: u64, blob: u64) -> Vec<u8> {
    let mut key = with_u64(b'r', data_partition);
    key.extend_from_slice(&blob.to_be_bytes());
    key
}

pub fn freed_blob(now_ns: i64, data_partition: u64, blob: u64) -> Vec<u8> {
    let mut key = with_u64(b'g', now_ns.max(0) as u64);
    key.extend_from_slice(&data_partition.to_be_bytes());
    key.extend_from_slice(&blob.to_be_bytes());
    key
}

/// The u64 at `offset` of a key built above (or of a stored value): a record
/// too short to hold it is `Corrupted`, naming the record.
pub fn u64_at(record: &[u8], offset: usize) -> Result<u64> {
    offset
        .checked_add(8)
        .and_then(|end| record.get(offset..end))
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| {
            StrataError::new(
                ErrorCode::Corrupted,
                format!("stored record {} is too short for a number at byte {offset}", hex(record)),
            )
        })
}

/// A record's bytes for an error message (the first 64).
pub fn hex(record: &[u8]) -> String {
    let shown: String = record.iter().take(64).map(|b| format!("{b:02x}")).collect();
    if record.len() > 64 { format!("{shown}… ({} bytes)", record.len()) } else { shown }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dentries_of_one_directory_share_a_prefix_and_sort_by_name() {
        assert!(dentry(7, b"a").starts_with(&dentries(7)));
        assert!(dentry(7, b"a") < dentry(7, b"b"));
        assert!(!dentry(8, b"").starts_with(&dentries(7)));
        assert!(dentry(7, &[0xff; 8]) < dentries(8));
    }

    #[test]
    fn numbers_round_trip() {
        assert_eq!(u64_at(&inode(42), 1).unwrap(), 42);
        assert_eq!(u64_at(&request_index(5, 9), 9).unwrap(), 9);
        let short = u64_at(&inode(42)[..5], 1).unwrap_err();
        assert_eq!(short.code, ErrorCode::Corrupted);
        assert!(u64_at(b"", usize::MAX).is_err());
    }
}
