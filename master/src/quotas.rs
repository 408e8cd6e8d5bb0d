//! Directory quotas on the master: their limits live in the volume records
//! (Raft state); their usage is soft state, the counters each meta
//! partition's leader reports with its heartbeat, summed here. Each metanode
//! learns, per partition it hosts, what the volume's *other* partitions use,
//! and adds its own exact count before it accepts a command that grows a
//! quota (see the metanode's `quota` module).

use std::collections::HashMap;
use std::sync::Mutex;

use strata_common::{Result, StrataError};
use strata_proto::master as pb;

use crate::service::{MasterService, VolumeViewData};
use crate::state::{Command, QuotaRecord};

/// What one meta partition's leader last reported it holds.
#[derive(Debug, Default)]
struct PartitionUsage {
    quotas: Vec<pb::QuotaUsage>,
    inodes: u64,
    data_bytes: u64,
}

/// The quota counters and totals of every meta partition, as its leader
/// last reported them.
#[derive(Default)]
pub struct QuotaUsageTable {
    by_partition: Mutex<HashMap<u64, PartitionUsage>>,
}

impl QuotaUsageTable {
    pub fn record(&self, reports: &[pb::MetaPartitionReport]) {
        let mut table = self.by_partition.lock().unwrap();
        for report in reports {
            let usage = PartitionUsage {
                quotas: report.quotas.clone(),
                inodes: report.inode_count,
                data_bytes: report.data_bytes,
            };
            table.insert(report.partition_id, usage);
        }
    }

    /// Bytes of regular files and inodes over `partitions` (a volume's).
    pub fn volume_usage(&self, partitions: impl Iterator<Item = u64>) -> (u64, u64) {
        let table = self.by_partition.lock().unwrap();
        partitions
            .filter_map(|p| table.get(&p))
            .fold((0, 0), |(bytes, inodes), u| (bytes + u.data_bytes, inodes + u.inodes))
    }

    /// The usage of quota `root` summed over `partitions`.
    fn sum(&self, partitions: impl Iterator<Item = u64>, root: u64) -> pb::QuotaUsage {
        let table = self.by_partition.lock().unwrap();
        let mut total = pb::QuotaUsage { root, bytes: 0, inodes: 0 };
        for usage in partitions.filter_map(|p| table.get(&p)).flat_map(|u| &u.quotas).filter(|u| u.root == root) {
            total.bytes = total.bytes.saturating_add(usage.bytes);
            total.inodes = total.inodes.saturating_add(usage.inodes);
        }
        total
    }
}

impl MasterService {
    /// For each meta partition `node_id` hosts, each quota of its volume
    /// with what the volume's other partitions use of it.
    pub(crate) fn quota_limits(&self, view: &VolumeViewData, node_id: u64) -> Vec<pb::QuotaLimit> {
        let mut limits = Vec::new();
        for volume in view.volumes_on(node_id).filter(|v| !v.quotas.is_empty()) {
            let partitions: Vec<u64> = volume.meta_partitions.iter().map(|p| p.id).collect();
            let hosted = volume.meta_partitions.iter().filter(|p| p.members.iter().any(|m| m.node_id == node_id));
            for partition in hosted {
                for quota in &volume.quotas {
                    let others = partitions.iter().copied().filter(|p| *p != partition.id);
                    limits.push(pb::QuotaLimit {
                        partition_id: partition.id,
                        quota: Some(*quota),
                        elsewhere: Some(self.quota_usage.sum(others, quota.root)),
                    });
                }
            }
        }
        limits
    }

    pub(crate) async fn set_quota_of(&self, volume: &str, quota: Option<pb::Quota>) -> Result<pb::QuotaStatus> {
        let quota = quota.ok_or_else(|| StrataError::invalid("a quota is needed"))?;
        if quota.root == 0 {
            return Err(StrataError::invalid("a quota needs the inode number of its root directory"));
        }
        let limits = QuotaRecord { max_bytes: quota.max_bytes, max_inodes: quota.max_inodes };
        self.propose(Command::SetQuota { volume: volume.to_string(), root: quota.root, limits: Some(limits) }).await?;
        tracing::info!(
            volume,
            root = quota.root,
            max_bytes = quota.max_bytes,
            max_inodes = quota.max_inodes,
            "quota set"
        );
        self.quota_statuses(volume)
            .await?
            .into_iter()
            .find(|s| s.quota.is_some_and(|q| q.root == quota.root))
            .ok_or_else(|| StrataError::internal("a quota just set is not in the volume"))
    }

    pub(crate) async fn delete_quota_of(&self, volume: &str, root: u64) -> Result<()> {
        self.propose(Command::SetQuota { volume: volume.to_string(), root, limits: None }).await?;
        tracing::info!(volume, root, "quota removed");
        Ok(())
    }

    /// A volume's quotas with their usage summed over its partitions.
    pub(crate) async fn quota_statuses(&self, volume: &str) -> Result<Vec<pb::QuotaStatus>> {
        let state = self.read_state().await?;
        let record =
            state.volume(volume)?.ok_or_else(|| StrataError::not_found(format!("volume {volume} does not exist")))?;
        let partitions: Vec<u64> = record.meta_partitions.iter().map(|p| p.id).collect();
        Ok(record
            .quotas
            .iter()
            .map(|(root, q)| pb::QuotaStatus {
                quota: Some(pb::Quota { root: *root, max_bytes: q.max_bytes, max_inodes: q.max_inodes }),
                used: Some(self.quota_usage.sum(partitions.iter().copied(), *root)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_sums_the_latest_report_of_each_partition() {
        let table = QuotaUsageTable::default();
        let report = |partition_id, bytes, inodes| pb::MetaPartitionReport {
            partition_id,
            quotas: vec![pb::QuotaUsage { root: 7, bytes, inodes }],
            ..Default::default()
        };
        table.record(&[report(1, 100, 1), report(2, 50, 2)]);
        table.record(&[report(1, 300, 3)]);
        let all = table.sum([1, 2].into_iter(), 7);
        assert_eq!((all.bytes, all.inodes), (350, 5), "partition 1's newer report replaced its older one");
        let others = table.sum([2, 3].into_iter(), 7);
        assert_eq!((others.bytes, others.inodes), (50, 2), "a partition that never reported adds nothing");
        assert_eq!(table.sum([1, 2].into_iter(), 8).bytes, 0, "another quota");
    }

    #[test]
    fn volume_usage_sums_the_partitions_totals() {
        let table = QuotaUsageTable::default();
        let report = |partition_id, data_bytes, inode_count| pb::MetaPartitionReport {
            partition_id,
            data_bytes,
            inode_count,
            ..Default::default()
        };
        table.record(&[report(1, 1000, 10), report(2, 24, 2), report(9, 5, 5)]);
        table.record(&[report(2, 48, 3)]);
        assert_eq!(table.volume_usage([1, 2, 3].into_iter()), (1048, 13));
    }
}
