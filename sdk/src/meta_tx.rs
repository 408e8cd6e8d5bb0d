//! The coordinator of transactions across meta partitions, and the
//! operations that need one: a directory placed away from its parent, and
//! unlink, rmdir, link and rename whose names and inodes live in different
//! partitions.
//!
//! Prepare runs on every participant in order, then commit in the same
//! order; the first participant is the primary, whose commit decides. Steps
//! are ordered so readers never meet an entry pointing to an inode that does
//! not exist yet: the inode side commits before a new entry, an entry is
//! removed before the inode loses its link.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{self as pb, meta_command::Op, tx_step::Step};

use crate::MetaClient;
use crate::meta_client::request_id;
use crate::types::Attr;

/// How long a prepared transaction may wait for its coordinator before the
/// participants resolve it with the primary.
const TX_DEADLINE: Duration = Duration::from_secs(20);
/// How long one prepare may wait (e.g. on another transaction's locks)
/// before the coordinator aborts and starts over.
const PREPARE_WAIT: Duration = Duration::from_secs(3);
/// How long an operation keeps starting over after conflicts.
const OPERATION_DEADLINE: Duration = Duration::from_secs(30);
const ROOT: u64 = 1;

pub fn is_cross_partition(e: &StrataError) -> bool {
    e.code == ErrorCode::CrossPartition
}

/// Worth starting the whole operation over: its view was stale, or it waited too long.
fn is_conflict(e: &StrataError) -> bool {
    e.code == ErrorCode::Conflict || e.is_retryable()
}

/// What a failpoint that stops the coordinator answers (not retried).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn coordinator_stopped() -> StrataError {
    StrataError::internal("failpoint: the transaction's coordinator stopped")
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn is_dir(inode: &Attr) -> bool {
    inode.is_dir()
}

/// Steps grouped by partition, in the order participants first appear.
#[derive(Default)]
struct Plan {
    order: Vec<u64>,
    parts: BTreeMap<u64, (u64, Vec<Step>)>,
}

impl Plan {
    /// Adds `step` for the partition holding `ino`.
    fn add(&mut self, client: &MetaClient, ino: u64, step: Step) -> Result<()> {
        let id = client.partition_of(ino)?.id;
        if !self.parts.contains_key(&id) {
            self.order.push(id);
        }
        self.parts.entry(id).or_insert_with(|| (ino, Vec::new())).1.push(step);
        Ok(())
    }

    fn into_parts(mut self) -> Vec<(u64, Vec<Step>)> {
        self.order.iter().map(|id| self.parts.remove(id).expect("listed")).collect()
    }
}

impl MetaClient {
    /// The partition a new directory goes to (round robin).
    pub(crate) fn place_directory(&self) -> u64 {
        let i = self.next_dir_partition.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let partitions = self.partitions();
        partitions[i % partitions.len()].id
    }

    /// Runs one transaction over `parts` (a routing inode and the steps for
    /// its partition each; the first is the primary). Returns the inode a
    /// `NewInode` step allocated, or 0.
    async fn transact(&self, parts: Vec<(u64, Vec<Step>)>) -> Result<u64> {
        let txid = request_id();
        let primary = self.partition_of(parts[0].0)?;
        let (primary_id, primary_members) = (primary.id, primary.router.members().to_vec());
        let deadline_ns = now_ns() + TX_DEADLINE.as_nanos() as i64;
        let mut allocated = 0;
        let mut prepared = Vec::new();
        for (route, steps) in parts {
            let steps = steps
                .into_iter()
                .map(|mut step| {
                    if let Step::AddEntry(e) = &mut step
                        && e.ino == 0
                    {
                        e.ino = allocated;
                    }
                    pb::TxStep { step: Some(step) }
                })
                .collect();
            let op = Op::TxPrepare(pb::TxPrepareOp {
                txid,
                primary: primary_id,
                primary_members: primary_members.clone(),
                deadline_ns,
                steps,
            });
            match self.mutate_reply(route, PREPARE_WAIT, "preparing a transaction", op).await {
                Ok(reply) => {
                    if reply.allocated_ino != 0 {
                        allocated = reply.allocated_ino;
                    }
                    prepared.push(route);
                }
                Err(e) => {
                    for route in prepared {
                        let abort = Op::TxFinish(pb::TxFinishOp { txid, commit: false });
                        // Best effort: a participant left prepared resolves with the primary.
                        let _ = self.mutate_reply(route, PREPARE_WAIT, "aborting a transaction", abort).await;
                    }
                    return Err(e);
                }
            }
        }
        // The coordinator stopping here leaves every participant prepared:
        // they resolve with the primary, which aborts.
        fail::fail_point!("sdk::tx_after_prepare", |_| Err(coordinator_stopped()));
        for (i, route) in prepared.iter().enumerate() {
            if i == 1 {
                // Committed at the primary only: the others resolve with it and commit.
                fail::fail_point!("sdk::tx_after_primary_commit", |_| Err(coordinator_stopped()));
            }
            let commit = Op::TxFinish(pb::TxFinishOp { txid, commit: true });
            match self.mutate_reply(*route, TX_DEADLINE, "committing a transaction", commit).await {
                Ok(_) => {}
                // The primary refused (too late): nothing was committed; release the others.
                Err(e) if i == 0 => {
                    for route in &prepared[1..] {
                        let abort = Op::TxFinish(pb::TxFinishOp { txid, commit: false });
                        let _ = self.mutate_reply(*route, PREPARE_WAIT, "aborting a transaction", abort).await;
                    }
                    return Err(StrataError::unavailable(format!("transaction aborted: {}", e.message)));
                }
                // Committed at the primary: the others finish on their own if we cannot reach them.
                Err(e) => {
                    tracing::warn!(txid = format!("{txid:x}"), error = %e, "committing a participant failed; it will resolve")
                }
            }
        }
        Ok(allocated)
    }

    /// Repeats `attempt` while it fails with a conflict or a retryable error, up to a deadline.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            match attempt().await {
                Err(e) if is_conflict(&e) && started.elapsed() < OPERATION_DEADLINE => {
                    let jitter = Duration::from_millis(rand::random::<u64>() % 20);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn mkdir_across(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        target: u64,
    ) -> Result<Attr> {
        let target_ino = self.partitions().iter().find(|p| p.id == target).map(|p| p.inode_start).unwrap_or(ROOT);
        self.create_elsewhere(parent, name, libc::S_IFDIR | (mode & 0o7777), uid, gid, 0, target_ino).await
    }

    /// A file (or node) whose parent's partition is full: refresh the view
    /// and put the inode in the open-ended partition.
    pub(crate) async fn create_in_open_partition(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
    ) -> Result<Attr> {
        self.refresh().await?;
        let open = self.partitions().last().map(|p| p.inode_start).unwrap_or(ROOT);
        let file_type = if mode & libc::S_IFMT == 0 { libc::S_IFREG } else { mode & libc::S_IFMT };
        self.create_elsewhere(parent, name, file_type | (mode & 0o7777), uid, gid, rdev, open).await
    }

    /// Creates `name` in `parent` with its inode in the partition holding
    /// `target_ino`, by a transaction: the inode is committed before the entry.
    #[allow(clippy::too_many_arguments)]
    async fn create_elsewhere(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
        target_ino: u64,
    ) -> Result<Attr> {
        let file_type = mode & libc::S_IFMT;
        let ino = self
            .with_retries(|| async {
                // Set-group-ID directories hand their group (and, to directories, the bit) down.
                let parent_inode = self.getattr(parent).await?;
                let (mut mode, mut gid) = (mode, gid);
                if parent_inode.perm & libc::S_ISGID != 0 {
                    gid = parent_inode.gid;
                    if file_type == libc::S_IFDIR {
                        mode |= libc::S_ISGID;
                    }
                }
                let dir_parent = if file_type == libc::S_IFDIR { parent } else { 0 };
                let quota = parent_inode.quota;
                let new = pb::NewInode { mode, uid, gid, rdev, parent: dir_parent, quota, ..Default::default() };
                let mut plan = Plan::default();
                plan.add(self, target_ino, Step::NewInode(new))?;
                let entry = pb::AddEntry { parent, name: name.to_vec(), ino: 0, file_type, ..Default::default() };
                plan.add(self, parent, Step::AddEntry(entry))?;
                self.transact(plan.into_parts()).await
            })
            .await?;
        self.getattr(ino).await
    }

    /// unlink or rmdir of an entry whose inode lives in another partition.
    pub(crate) async fn remove_across(&self, parent: u64, name: &[u8], directory: bool) -> Result<Attr> {
        self.with_retries(|| async {
            let target = self.lookup(parent, name).await?;
            match (directory, is_dir(&target)) {
                (true, false) => return Err(StrataError::new(ErrorCode::NotDir, "rmdir of a non-directory")),
                (false, true) => return Err(StrataError::new(ErrorCode::IsDir, "unlink of a directory")),
                _ => {}
            }
            let mut plan = Plan::default();
            let remove = pb::RemoveEntry { parent, name: name.to_vec(), expect_ino: target.ino, is_dir: directory };
            plan.add(self, parent, Step::RemoveEntry(remove))?;
            let adjust = if directory {
                pb::AdjustInode { ino: target.ino, remove_empty_dir: true, ..Default::default() }
            } else {
                pb::AdjustInode { ino: target.ino, nlink_delta: -1, ..Default::default() }
            };
            plan.add(self, target.ino, Step::AdjustInode(adjust))?;
            self.transact(plan.into_parts()).await?;
            Ok(Attr { nlink: target.nlink.saturating_sub(if directory { target.nlink } else { 1 }), ..target })
        })
        .await
    }

    pub(crate) async fn link_across(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> Result<Attr> {
        self.with_retries(|| async {
            let inode = self.getattr(ino).await?;
            if is_dir(&inode) {
                return Err(StrataError::new(ErrorCode::NotPermitted, "hard links to directories are not allowed"));
            }
            StrataError::same_quota(inode.quota, self.getattr(new_parent).await?.quota)?;
            let mut plan = Plan::default();
            plan.add(self, ino, Step::AdjustInode(pb::AdjustInode { ino, nlink_delta: 1, ..Default::default() }))?;
            let file_type = inode.kind.type_bits();
            let entry =
                pb::AddEntry { parent: new_parent, name: new_name.to_vec(), ino, file_type, ..Default::default() };
            plan.add(self, new_parent, Step::AddEntry(entry))?;
            self.transact(plan.into_parts()).await
        })
        .await?;
        self.getattr(ino).await
    }

    /// Whether directory `dir` is `ancestor` or below it (walking parents to the root).
    async fn is_within(&self, mut dir: u64, ancestor: u64) -> Result<bool> {
        for _ in 0..4096 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT {
                return Ok(false);
            }
            dir = self.getattr(dir).await?.parent;
        }
        Err(StrataError::internal("directory parents do not lead to the root"))
    }

    async fn lookup_optional(&self, parent: u64, name: &[u8]) -> Result<Option<Attr>> {
        match self.lookup(parent, name).await {
            Ok(inode) => Ok(Some(inode)),
            Err(e) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn rename_across(&self, sp: u64, sn: &[u8], dp: u64, dn: &[u8], flags: u32) -> Result<Attr> {
        const NOREPLACE: u32 = 1;
        const EXCHANGE: u32 = 2;
        if flags & !(NOREPLACE | EXCHANGE) != 0 || flags == NOREPLACE | EXCHANGE {
            return Err(StrataError::invalid(format!("rename flags {flags:#x} are not valid")));
        }
        let moved = self
            .with_retries(|| async {
                let src = self.lookup(sp, sn).await?;
                let dst = self.lookup_optional(dp, dn).await?;
                if flags == NOREPLACE && dst.is_some() {
                    return Err(StrataError::new(ErrorCode::AlreadyExists, "rename target exists (RENAME_NOREPLACE)"));
                }
                if (sp == dp && sn == dn) || dst.as_ref().is_some_and(|d| d.ino == src.ino) {
                    return Ok(src.ino);
                }
                if is_dir(&src) && sp != dp && self.is_within(dp, src.ino).await? {
                    return Err(StrataError::invalid("cannot move a directory into its own subtree"));
                }
                let to_quota = self.getattr(dp).await?.quota;
                if sp != dp {
                    let from_quota = self.getattr(sp).await?.quota;
                    if is_dir(&src) || flags == EXCHANGE {
                        StrataError::same_quota(from_quota, to_quota)?;
                    } else if src.nlink > 1 {
                        // Its other names stay in the old quota: it cannot count in both.
                        StrataError::same_quota(src.quota, to_quota)?;
                    }
                }
                // A file (one name) moves into its new directory's quota, its bytes with
                // it. Always named (the cached tag may be old); the inode's partition
                // compares it with the stored one.
                let retag = (!is_dir(&src) && sp != dp).then_some(to_quota);
                let exchange = flags == EXCHANGE;
                let mut plan = Plan::default();
                let src_type = src.kind.type_bits();
                // The new name first (primary), then the inodes, then the old name.
                let (replace_ino, replace_is_dir) = dst.as_ref().map(|d| (d.ino, is_dir(d))).unwrap_or((0, false));
                if exchange && dst.is_none() {
                    return Err(StrataError::not_found("RENAME_EXCHANGE target does not exist"));
                }
                if let Some(d) = &dst
                    && !exchange
                {
                    match (is_dir(&src), is_dir(d)) {
                        (true, false) => {
                            return Err(StrataError::new(ErrorCode::NotDir, "cannot replace a file with a directory"));
                        }
                        (false, true) => {
                            return Err(StrataError::new(ErrorCode::IsDir, "cannot replace a directory with a file"));
                        }
                        _ => {}
                    }
                }
                let add = pb::AddEntry {
                    parent: dp,
                    name: dn.to_vec(),
                    ino: src.ino,
                    file_type: src_type,
                    replace_ino,
                    replace_is_dir,
                };
                plan.add(self, dp, Step::AddEntry(add))?;
                let src_new_parent = if is_dir(&src) && sp != dp { dp } else { 0 };
                plan.add(
                    self,
                    src.ino,
                    Step::AdjustInode(pb::AdjustInode {
                        ino: src.ino,
                        new_parent: src_new_parent,
                        quota: retag,
                        ..Default::default()
                    }),
                )?;
                match &dst {
                    Some(d) if exchange => {
                        if is_dir(d) && sp != dp && self.is_within(sp, d.ino).await? {
                            return Err(StrataError::invalid("cannot move a directory into its own subtree"));
                        }
                        let new_parent = if is_dir(d) && sp != dp { sp } else { 0 };
                        plan.add(
                            self,
                            d.ino,
                            Step::AdjustInode(pb::AdjustInode { ino: d.ino, new_parent, ..Default::default() }),
                        )?;
                        let back = pb::AddEntry {
                            parent: sp,
                            name: sn.to_vec(),
                            ino: d.ino,
                            file_type: d.kind.type_bits(),
                            replace_ino: src.ino,
                            replace_is_dir: is_dir(&src),
                        };
                        plan.add(self, sp, Step::AddEntry(back))?;
                    }
                    Some(d) => {
                        let adjust = if is_dir(d) {
                            pb::AdjustInode { ino: d.ino, remove_empty_dir: true, ..Default::default() }
                        } else {
                            pb::AdjustInode { ino: d.ino, nlink_delta: -1, ..Default::default() }
                        };
                        plan.add(self, d.ino, Step::AdjustInode(adjust))?;
                    }
                    None => {}
                }
                if !exchange {
                    let remove =
                        pb::RemoveEntry { parent: sp, name: sn.to_vec(), expect_ino: src.ino, is_dir: is_dir(&src) };
                    plan.add(self, sp, Step::RemoveEntry(remove))?;
                }
                self.transact(plan.into_parts()).await?;
                Ok(src.ino)
            })
            .await?;
        self.getattr(moved).await
    }
}
