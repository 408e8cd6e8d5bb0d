//! Directory quotas from the client's side: making an empty directory the
//! root of a quota (a `subdir` PVC), raising or lowering its limits, and
//! what statfs(2) reports inside one (the quota's size and usage, not the
//! volume's, so `df` in a pod shows its PVC).
//!
//! The limits are kept by the master; the metanodes count usage and refuse
//! what would pass a limit with `QuotaExceeded` (EDQUOT). See the metanode's
//! `quota` module for how the count stays exact across partitions.

use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::master as master_pb;
use strata_proto::meta as pb;

use crate::MetaClient;
use crate::fs::Volume;
use crate::meta_client::StatFs;
use crate::types::Attr;

/// A directory quota with its usage (as the metanodes last reported it, a
/// second or two ago).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    /// The quota's root directory.
    pub root: u64,
    /// Bytes of file contents allowed (0: no limit).
    pub max_bytes: u64,
    /// Inodes allowed, the root included (0: no limit).
    pub max_inodes: u64,
    pub used_bytes: u64,
    pub used_inodes: u64,
}

impl TryFrom<master_pb::QuotaStatus> for QuotaStatus {
    type Error = StrataError;

    fn try_from(status: master_pb::QuotaStatus) -> Result<QuotaStatus> {
        let quota =
            status.quota.ok_or_else(|| StrataError::internal("the master sent a quota status without limits"))?;
        let used = status.used.unwrap_or_default();
        Ok(QuotaStatus {
            root: quota.root,
            max_bytes: quota.max_bytes,
            max_inodes: quota.max_inodes,
            used_bytes: used.bytes,
            used_inodes: used.inodes,
        })
    }
}

impl Volume {
    /// [`MetaClient::set_quota`] on the directory at `path`.
    pub async fn set_quota(&self, path: &[u8], max_bytes: u64, max_inodes: u64) -> Result<QuotaStatus> {
        let dir = self.stat(path).await?.ino;
        self.meta().set_quota(dir, max_bytes, max_inodes).await
    }

    /// [`MetaClient::quota_of`] the file or directory at `path`.
    pub async fn quota_of(&self, path: &[u8]) -> Result<Option<QuotaStatus>> {
        let ino = self.stat(path).await?.ino;
        self.meta().quota_of(ino).await
    }
}

impl MetaClient {
    /// Makes directory `dir` the root of a quota with these limits (0: no
    /// limit), or changes the limits of the quota it already roots (an
    /// expansion takes effect at once). A new quota needs an empty directory.
    pub async fn set_quota(&self, dir: u64, max_bytes: u64, max_inodes: u64) -> Result<QuotaStatus> {
        let attr = self.getattr(dir).await?;
        if !attr.is_dir() {
            return Err(StrataError::new(ErrorCode::NotDir, format!("inode {dir} is not a directory")));
        }
        // Limits first: the metanodes enforce them from the moment the root is tagged.
        let status = self.master()?.set_quota(self.volume(), dir, max_bytes, max_inodes).await?;
        if attr.quota == dir {
            return QuotaStatus::try_from(status);
        }
        // The partition leading `dir` reads the limits from the master before
        // tagging it, and any other asks before its first inode under it: the
        // quota holds from the first file on, without waiting for a heartbeat.
        let op = pb::SetAttrOp { ino: dir, quota: Some(dir), ..Default::default() };
        if let Err(e) = self.setattr_op(op, "making a directory a quota's root").await {
            let _ = self.master()?.delete_quota(self.volume(), dir).await;
            return Err(e);
        }
        QuotaStatus::try_from(status)
    }

    /// Takes the quota off directory `dir`, which must be empty again (or
    /// its contents would keep counting against a quota nobody enforces), or
    /// removed already (a deleted PVC).
    pub async fn remove_quota(&self, dir: u64) -> Result<()> {
        match self.getattr(dir).await {
            Ok(attr) if attr.quota == dir => {
                let op = pb::SetAttrOp { ino: dir, quota: Some(0), ..Default::default() };
                self.setattr_op(op, "removing a directory's quota").await?;
            }
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
        }
        match self.master()?.delete_quota(self.volume(), dir).await {
            Err(e) if e.code == ErrorCode::NotFound => Ok(()),
            other => other,
        }
    }

    /// Every quota of the volume with its usage.
    pub async fn list_quotas(&self) -> Result<Vec<QuotaStatus>> {
        let quotas = self.master()?.list_quotas(self.volume()).await?;
        quotas.into_iter().map(QuotaStatus::try_from).collect()
    }

    /// The quota `ino` counts against, if any (and if it still has limits).
    pub async fn quota_of(&self, ino: u64) -> Result<Option<QuotaStatus>> {
        let root = self.getattr(ino).await?.quota;
        if root == 0 {
            return Ok(None);
        }
        Ok(self.list_quotas().await?.into_iter().find(|q| q.root == root))
    }

    /// statfs(2) at `ino`: inside a directory quota, its limits and usage
    /// (a limit of 0 falls back to the volume's); elsewhere the volume's.
    pub async fn statfs_at(&self, ino: u64) -> Result<StatFs> {
        let Some(quota) = self.quota_of(ino).await? else {
            return self.statfs().await;
        };
        let capacity_bytes = match quota.max_bytes {
            0 => self.statfs().await?.capacity_bytes,
            max => max,
        };
        Ok(StatFs {
            capacity_bytes,
            used_bytes: quota.used_bytes,
            files: quota.used_inodes,
            max_files: (quota.max_inodes > 0).then_some(quota.max_inodes),
        })
    }

    async fn setattr_op(&self, op: pb::SetAttrOp, what: &str) -> Result<Attr> {
        let ino = op.ino;
        self.mutate_inode(ino, what, pb::meta_command::Op::SetAttr(op)).await
    }
}
