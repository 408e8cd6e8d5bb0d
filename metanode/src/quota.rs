//! Directory quotas on the metanode side: usage counters kept in step with
//! the partition's inodes, and the check a leader makes before proposing a
//! command that would grow a quota's subtree.
//!
//! Every inode names the quota it counts against (`Inode::quota`, the quota
//! root's inode number; inherited from the parent at creation). Each
//! partition counts, per quota, the bytes of its regular files and its
//! inodes, in the same command that changes them (so the counters are exact
//! and survive restarts and snapshots). A quota's subtree spans partitions
//! (directories are spread over them), so the master sums the counters the
//! leaders report and answers each metanode, per partition, what the
//! *other* partitions use. A leader refuses with `QuotaExceeded` (EDQUOT) a
//! command for which that, plus its own exact count, plus the growth, goes
//! past the limit. Growth in other partitions shows up a heartbeat later:
//! concurrent writers spread over partitions can overshoot by what they
//! write in that time, never a single writer. A command about to be refused
//! is checked again against the master's current limits first, so a quota
//! raised a moment ago (an expanded PVC) holds at once; a command naming a
//! quota root the leader has not heard of reads them before it is proposed,
//! so a new quota holds from its first file on.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::master::{Quota, QuotaLimit, QuotaUsage};
use strata_proto::meta::{Inode, meta_command::Op, tx_step::Step};
use strata_raftstore::KvRead;

use crate::keys;
use crate::txn::{S_IFDIR, S_IFMT, S_IFREG, get_inode};

/// What one inode adds to its quota: (quota root, bytes, inodes).
pub fn contribution(inode: Option<&Inode>) -> Option<(u64, u64, u64)> {
    let inode = inode.filter(|i| i.quota != 0)?;
    let bytes = if inode.mode & S_IFMT == S_IFREG { inode.size } else { 0 };
    Some((inode.quota, bytes, 1))
}

/// (bytes, inodes) of `root` in this partition.
pub fn usage(kv: &impl KvRead, root: u64) -> Result<(u64, u64)> {
    match kv.get(&keys::quota_usage(root))? {
        Some(record) => Ok((keys::u64_at(&record, 0)?, keys::u64_at(&record, 8)?)),
        None => Ok((0, 0)),
    }
}

pub fn encode_usage(bytes: u64, inodes: u64) -> Vec<u8> {
    let mut record = bytes.to_be_bytes().to_vec();
    record.extend_from_slice(&inodes.to_be_bytes());
    record
}

/// Every quota this partition holds inodes of, for the master.
pub fn report(kv: &impl KvRead) -> Result<Vec<QuotaUsage>> {
    kv.scan(keys::QUOTA_USAGE_PREFIX, &[], usize::MAX)?
        .into_iter()
        .map(|(key, value)| {
            Ok(QuotaUsage {
                root: keys::u64_at(&key, 1)?,
                bytes: keys::u64_at(&value, 0)?,
                inodes: keys::u64_at(&value, 8)?,
            })
        })
        .filter(|usage| !matches!(usage, Ok(QuotaUsage { bytes: 0, inodes: 0, .. })))
        .collect()
}

/// The inode `name` in `parent` names, if both are here.
fn dentry_inode(kv: &impl KvRead, parent: u64, name: &[u8]) -> Result<Option<Inode>> {
    match crate::txn::get_dentry(kv, parent, name)? {
        Some(dentry) => get_inode(kv, dentry.ino),
        None => Ok(None),
    }
}

/// How much a command would grow a quota: (quota root, bytes, inodes).
fn growth(kv: &impl KvRead, op: &Op) -> Result<Option<(u64, u64, u64)>> {
    let quota_of = |ino: u64| -> Result<Option<Inode>> { get_inode(kv, ino) };
    Ok(match op {
        Op::Create(c) => quota_of(c.parent)?.filter(|p| p.quota != 0).map(|p| (p.quota, 0, 1)),
        Op::TxPrepare(t) => {
            let mut growth = None;
            for step in t.steps.iter().filter_map(|s| s.step.as_ref()) {
                growth = match step {
                    Step::NewInode(n) if n.quota != 0 => Some((n.quota, 0, 1)),
                    // A file moving in from another quota brings its bytes.
                    Step::AdjustInode(a) => match (a.quota, get_inode(kv, a.ino)?) {
                        (Some(q), Some(inode)) if q != 0 && q != inode.quota => {
                            let bytes = if inode.mode & S_IFMT == S_IFREG { inode.size } else { 0 };
                            Some((q, bytes, 1))
                        }
                        _ => continue,
                    },
                    _ => continue,
                };
                break;
            }
            growth
        }
        Op::WriteExtents(w) => {
            let end = w.extents.iter().map(|e| e.file_offset.saturating_add(e.length)).max().unwrap_or(0);
            quota_of(w.ino)?.filter(|i| i.quota != 0 && end > i.size).map(|i| (i.quota, end - i.size, 0))
        }
        Op::Rename(r) => {
            let (Some(src), Some(to)) = (dentry_inode(kv, r.src_parent, &r.src_name)?, quota_of(r.dst_parent)?) else {
                return Ok(None);
            };
            if src.mode & S_IFMT == S_IFDIR || src.quota == to.quota || to.quota == 0 {
                return Ok(None);
            }
            // What it replaces in that quota (one name, so it goes) makes room.
            let replaced = dentry_inode(kv, r.dst_parent, &r.dst_name)?
                .filter(|d| d.nlink == 1 && d.quota == to.quota)
                .and_then(|d| contribution(Some(&d)))
                .map_or((0, 0), |(_, bytes, inodes)| (bytes, inodes));
            let bytes = if src.mode & S_IFMT == S_IFREG { src.size } else { 0 };
            let (bytes, inodes) = (bytes.saturating_sub(replaced.0), 1u64.saturating_sub(replaced.1));
            (bytes > 0 || inodes > 0).then_some((to.quota, bytes, inodes))
        }
        Op::SetAttr(s) => match s.size {
            Some(size) => {
                quota_of(s.ino)?.filter(|i| i.quota != 0 && size > i.size).map(|i| (i.quota, size - i.size, 0))
            }
            None => None,
        },
        _ => None,
    })
}

/// The quota root a command names itself: a new inode's, a file's moving in,
/// a directory's becoming a root. It may be newer than the last heartbeat,
/// so a leader that does not know it asks the master before proposing.
pub fn named_root(op: &Op) -> Option<u64> {
    match op {
        Op::SetAttr(s) => s.quota.filter(|q| *q != 0),
        Op::TxPrepare(t) => t.steps.iter().filter_map(|s| s.step.as_ref()).find_map(|step| match step {
            Step::NewInode(n) if n.quota != 0 => Some(n.quota),
            Step::AdjustInode(a) => a.quota.filter(|q| *q != 0),
            _ => None,
        }),
        _ => None,
    }
}

/// One partition's quotas: root → (limits, what other partitions use).
type PartitionQuotas = HashMap<u64, (Quota, QuotaUsage)>;

/// How often a partition asks the master about a quota root it does not
/// know (one removed from the master while inodes still name it would
/// otherwise cost a request per command).
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// The quotas of the partitions this node hosts, as the master last told it.
#[derive(Default)]
pub struct QuotaLimits {
    /// partition → quota root → (limits, what other partitions use).
    by_partition: RwLock<HashMap<u64, PartitionQuotas>>,
    /// partition → when its limits were last read from the master directly.
    asked: RwLock<HashMap<u64, Instant>>,
}

impl QuotaLimits {
    /// Replaces what is known with a heartbeat's answer, sent at `sent_at`.
    /// A partition whose limits were read from the master since keeps them:
    /// they are newer than the answer.
    pub fn update(&self, limits: &[QuotaLimit], sent_at: Instant) {
        let mut by_partition: HashMap<u64, PartitionQuotas> = HashMap::new();
        for limit in limits {
            let (Some(quota), elsewhere) = (limit.quota, limit.elsewhere.unwrap_or_default()) else {
                continue;
            };
            by_partition.entry(limit.partition_id).or_default().insert(quota.root, (quota, elsewhere));
        }
        let asked = self.asked.read().unwrap();
        let mut known = self.by_partition.write().unwrap();
        for (partition_id, _) in asked.iter().filter(|(_, at)| **at > sent_at) {
            match known.remove(partition_id) {
                Some(newer) => by_partition.insert(*partition_id, newer),
                None => by_partition.remove(partition_id),
            };
        }
        *known = by_partition;
    }

    /// Whether `partition_id` should ask the master for its limits before
    /// proposing `op`: it names a quota root not known here, and the master
    /// was not asked a moment ago.
    pub fn should_ask(&self, partition_id: u64, op: &Op) -> bool {
        let Some(root) = named_root(op) else {
            return false;
        };
        if self.by_partition.read().unwrap().get(&partition_id).is_some_and(|q| q.contains_key(&root)) {
            return false;
        }
        self.asked.read().unwrap().get(&partition_id).is_none_or(|at| at.elapsed() >= ASK_AGAIN_AFTER)
    }

    /// Puts the master's current limits in place for `partition_id` (what
    /// other partitions use is kept from the last heartbeat).
    pub fn set_limits(&self, partition_id: u64, quotas: &[Quota], asked_at: Instant) {
        self.asked.write().unwrap().insert(partition_id, asked_at);
        let mut by_partition = self.by_partition.write().unwrap();
        let known = by_partition.entry(partition_id).or_default();
        let elsewhere: HashMap<u64, QuotaUsage> = known.iter().map(|(root, (_, used))| (*root, *used)).collect();
        *known = quotas.iter().map(|q| (q.root, (*q, elsewhere.get(&q.root).copied().unwrap_or_default()))).collect();
    }

    /// `QuotaExceeded` if `op` would take a quota past a limit.
    pub fn check(&self, partition_id: u64, kv: &impl KvRead, op: &Op) -> Result<()> {
        // Most volumes have no quotas: no reads for them.
        if self.by_partition.read().unwrap().get(&partition_id).is_none_or(HashMap::is_empty) {
            return Ok(());
        }
        let Some((root, bytes, inodes)) = growth(kv, op)? else {
            return Ok(());
        };
        let Some((quota, elsewhere)) =
            self.by_partition.read().unwrap().get(&partition_id).and_then(|q| q.get(&root)).copied()
        else {
            return Ok(());
        };
        let (here_bytes, here_inodes) = usage(kv, root)?;
        let over = |max: u64, elsewhere: u64, here: u64, more: u64| {
            max != 0 && more > 0 && elsewhere.saturating_add(here).saturating_add(more) > max
        };
        if over(quota.max_bytes, elsewhere.bytes, here_bytes, bytes) {
            return Err(StrataError::new(
                ErrorCode::QuotaExceeded,
                format!("directory quota {root} allows {} bytes", quota.max_bytes),
            ));
        }
        if over(quota.max_inodes, elsewhere.inodes, here_inodes, inodes) {
            return Err(StrataError::new(
                ErrorCode::QuotaExceeded,
                format!("directory quota {root} allows {} inodes", quota.max_inodes),
            ));
        }
        Ok(())
    }
}
