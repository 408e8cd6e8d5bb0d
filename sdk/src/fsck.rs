//! Namespace invariants of a volume, checked over the raw records of all its
//! meta partitions: every dentry points to a live inode of the right type,
//! link counts equal the entries that link, every directory hangs off the
//! root exactly once, and unlinked inodes are orphans not older than the
//! grace period. Holds the records in memory (a streaming check is future work).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;

use serde::Serialize;
use strata_common::Result;
use strata_proto::meta::{DentryRecord, Inode, OrphanRecord, ScanKind};

use crate::MetaClient;

const ROOT: u64 = 1;
const S_IFMT: u32 = libc::S_IFMT;
const S_IFDIR: u32 = libc::S_IFDIR;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    MissingRoot,
    /// A dentry whose parent inode does not exist or is not a directory.
    OrphanDentry {
        parent: u64,
        name: String,
    },
    /// A dentry pointing to an inode that does not exist.
    DanglingDentry {
        parent: u64,
        name: String,
        ino: u64,
    },
    /// A dentry whose recorded type differs from its inode's.
    TypeMismatch {
        parent: u64,
        name: String,
        ino: u64,
    },
    /// An inode's link count differs from the entries linking it.
    WrongLinkCount {
        ino: u64,
        nlink: u32,
        expected: u32,
    },
    /// A directory with more than one entry, or whose parent pointer is wrong.
    BadDirectoryParent {
        ino: u64,
    },
    /// A linked inode no directory reaches from the root.
    Unreachable {
        ino: u64,
    },
    /// An inode without links that is not recorded as an orphan.
    LostInode {
        ino: u64,
    },
    /// An orphan unlinked longer ago than the grace period.
    StaleOrphan {
        ino: u64,
        age_secs: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingRoot => write!(f, "the root directory (inode 1) is missing"),
            Problem::OrphanDentry { parent, name } => {
                write!(f, "entry {name:?} in {parent}: parent is not a live directory")
            }
            Problem::DanglingDentry { parent, name, ino } => {
                write!(f, "entry {name:?} in {parent} points to missing inode {ino}")
            }
            Problem::TypeMismatch { parent, name, ino } => {
                write!(f, "entry {name:?} in {parent}: type differs from inode {ino}")
            }
            Problem::WrongLinkCount { ino, nlink, expected } => {
                write!(f, "inode {ino} has nlink {nlink}, {expected} entries link it")
            }
            Problem::BadDirectoryParent { ino } => {
                write!(f, "directory {ino} has more than one entry or a wrong parent")
            }
            Problem::Unreachable { ino } => {
                write!(f, "inode {ino} is linked but not reachable from the root")
            }
            Problem::LostInode { ino } => {
                write!(f, "inode {ino} has no links and is not an orphan")
            }
            Problem::StaleOrphan { ino, age_secs } => {
                write!(f, "orphan {ino} was unlinked {age_secs} s ago")
            }
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub inodes: usize,
    pub dentries: usize,
    pub orphans: usize,
    pub problems: Vec<Problem>,
}

fn is_dir(inode: &Inode) -> bool {
    inode.mode & S_IFMT == S_IFDIR
}

/// Checks the invariants over a volume's records.
pub fn check(
    inodes: &[Inode],
    dentries: &[DentryRecord],
    orphans: &[OrphanRecord],
    now_ns: i64,
    grace_ns: i64,
) -> Report {
    let by_ino: HashMap<u64, &Inode> = inodes.iter().map(|i| (i.ino, i)).collect();
    let mut problems = Vec::new();
    if !by_ino.contains_key(&ROOT) {
        problems.push(Problem::MissingRoot);
    }
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    let mut dir_entries: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut children: HashMap<u64, Vec<u64>> = HashMap::new();
    for d in dentries {
        let name = String::from_utf8_lossy(&d.name).into_owned();
        if !by_ino.get(&d.parent).is_some_and(|p| is_dir(p) && p.nlink > 0) {
            problems.push(Problem::OrphanDentry { parent: d.parent, name });
            continue;
        }
        let Some(inode) = by_ino.get(&d.ino) else {
            problems.push(Problem::DanglingDentry { parent: d.parent, name, ino: d.ino });
            continue;
        };
        if inode.mode & S_IFMT != d.file_type {
            problems.push(Problem::TypeMismatch { parent: d.parent, name, ino: d.ino });
        }
        children.entry(d.parent).or_default().push(d.ino);
        if is_dir(inode) {
            *subdirs.entry(d.parent).or_default() += 1;
            dir_entries.entry(d.ino).or_default().push(d.parent);
        } else {
            *links.entry(d.ino).or_default() += 1;
        }
    }
    let orphan_since: HashMap<u64, i64> = orphans.iter().map(|o| (o.ino, o.unlinked_at_ns)).collect();
    let sorted: BTreeMap<u64, &Inode> = by_ino.iter().map(|(k, v)| (*k, *v)).collect();
    for (ino, inode) in &sorted {
        let expected = if is_dir(inode) {
            2 + subdirs.get(ino).copied().unwrap_or(0)
        } else {
            links.get(ino).copied().unwrap_or(0)
        };
        if inode.nlink != expected {
            problems.push(Problem::WrongLinkCount { ino: *ino, nlink: inode.nlink, expected });
        }
        if is_dir(inode) && *ino != ROOT {
            let parents = dir_entries.get(ino).map(Vec::as_slice).unwrap_or_default();
            if parents.len() > 1 || parents.first().is_some_and(|p| *p != inode.parent) {
                problems.push(Problem::BadDirectoryParent { ino: *ino });
            }
        }
        if !is_dir(inode) && inode.nlink == 0 {
            match orphan_since.get(ino) {
                None => problems.push(Problem::LostInode { ino: *ino }),
                Some(since) if now_ns - since > grace_ns => problems
                    .push(Problem::StaleOrphan { ino: *ino, age_secs: ((now_ns - since) / 1_000_000_000) as u64 }),
                Some(_) => {}
            }
        }
    }
    // Reachability from the root.
    let mut seen: HashSet<u64> = HashSet::from([ROOT]);
    let mut queue = VecDeque::from([ROOT]);
    while let Some(dir) = queue.pop_front() {
        for child in children.get(&dir).into_iter().flatten() {
            if seen.insert(*child) && by_ino.get(child).is_some_and(|i| is_dir(i)) {
                queue.push_back(*child);
            }
        }
    }
    for (ino, inode) in &sorted {
        if inode.nlink > 0 && !seen.contains(ino) {
            problems.push(Problem::Unreachable { ino: *ino });
        }
    }
    Report { inodes: inodes.len(), dentries: dentries.len(), orphans: orphans.len(), problems }
}

/// Reads every partition of the volume and checks it.
pub async fn fsck(meta: &MetaClient, grace_ns: i64) -> Result<Report> {
    let inodes = meta.scan_all(ScanKind::Inodes).await?.inodes;
    let dentries = meta.scan_all(ScanKind::Dentries).await?.dentries;
    let orphans = meta.scan_all(ScanKind::Orphans).await?.orphans;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
    Ok(check(&inodes, &dentries, &orphans, now, grace_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(ino: u64, parent: u64, nlink: u32) -> Inode {
        Inode { ino, mode: S_IFDIR | 0o755, nlink, parent, ..Default::default() }
    }
    fn file(ino: u64, nlink: u32) -> Inode {
        Inode { ino, mode: libc::S_IFREG | 0o644, nlink, ..Default::default() }
    }
    fn entry(parent: u64, name: &str, ino: u64, file_type: u32) -> DentryRecord {
        DentryRecord { parent, name: name.into(), ino, file_type }
    }

    /// / with d/ holding f and a second link g to f.
    fn healthy() -> (Vec<Inode>, Vec<DentryRecord>) {
        let inodes = vec![dir(1, 1, 3), dir(2, 1, 2), file(3, 2)];
        let dentries =
            vec![entry(1, "d", 2, S_IFDIR), entry(2, "f", 3, libc::S_IFREG), entry(1, "g", 3, libc::S_IFREG)];
        (inodes, dentries)
    }

    #[test]
    fn a_healthy_namespace_has_no_problems() {
        let (inodes, dentries) = healthy();
        let report = check(&inodes, &dentries, &[], 0, 0);
        assert_eq!(report.problems, vec![]);
        assert_eq!((report.inodes, report.dentries), (3, 3));
    }

    #[test]
    fn each_kind_of_damage_is_found() {
        let (mut inodes, mut dentries) = healthy();
        inodes[2].nlink = 5; // wrong count
        dentries.push(entry(1, "ghost", 99, libc::S_IFREG)); // dangling
        dentries.push(entry(42, "lost", 3, libc::S_IFREG)); // parent missing
        inodes.push(file(7, 1)); // linked but no entry: unreachable (and wrong count)
        inodes.push(file(8, 0)); // unlinked, not an orphan
        inodes.push(file(9, 0)); // stale orphan
        let orphans = vec![OrphanRecord { ino: 9, unlinked_at_ns: 0 }];
        let problems = check(&inodes, &dentries, &orphans, 10_000_000_000, 1_000_000_000).problems;
        for expected in [
            Problem::WrongLinkCount { ino: 3, nlink: 5, expected: 2 },
            Problem::DanglingDentry { parent: 1, name: "ghost".into(), ino: 99 },
            Problem::OrphanDentry { parent: 42, name: "lost".into() },
            Problem::Unreachable { ino: 7 },
            Problem::LostInode { ino: 8 },
            Problem::StaleOrphan { ino: 9, age_secs: 10 },
        ] {
            assert!(problems.contains(&expected), "{expected:?} not in {problems:?}");
        }
    }

    #[test]
    fn directory_cycles_and_double_entries_are_found() {
        let inodes = vec![dir(1, 1, 3), dir(2, 1, 3), dir(3, 2, 2)];
        // 3 is linked from both 2 and 1 (a directory hard link), and 2 is fine.
        let dentries = vec![entry(1, "a", 2, S_IFDIR), entry(2, "b", 3, S_IFDIR), entry(1, "c", 3, S_IFDIR)];
        let problems = check(&inodes, &dentries, &[], 0, 0).problems;
        assert!(problems.contains(&Problem::BadDirectoryParent { ino: 3 }), "{problems:?}");
        let missing_root = check(&[dir(2, 1, 2)], &[], &[], 0, 0).problems;
        assert!(missing_root.contains(&Problem::MissingRoot));
    }
}
