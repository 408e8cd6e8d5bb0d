//! Keeping data partitions whole. A datanode dead for longer than the repair
//! delay, decommissioned, or reporting the partition's disk failed, is replaced in each data partition it belongs to
//! by a live datanode chosen like any placement; the new member rebuilds its
//! copy from the others (datanodes learn this from their heartbeat answers)
//! and reports when it is done. At most `max_concurrent_repairs` members are
//! being rebuilt at once, cluster-wide.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use strata_common::Result;
use strata_common::types::NodeRole;
use strata_proto::master as pb;

use crate::placement::{self, Candidate};
use crate::service::{MasterService, VolumeViewData};
use crate::state::{Command, MASTER_GROUP, StateReader};

/// How often the leader looks for members to replace.
const REPAIR_PASS_EVERY: Duration = Duration::from_secs(1);

/// Runs repair passes while this master leads, until the task is aborted.
pub async fn run(service: Arc<MasterService>) {
    loop {
        tokio::time::sleep(REPAIR_PASS_EVERY).await;
        if service.ensure_leader().is_err() || service.newly_elected() {
            continue;
        }
        if let Err(e) = service.repair_pass().await {
            tracing::warn!(error = %e, "data repair pass failed");
        }
    }
}

impl MasterService {
    /// How long a node has not been heard from (zero while it is alive).
    fn dead_for(&self, node_id: u64) -> Duration {
        match self.liveness.get(node_id) {
            Some(h) if h.last_seen.elapsed() < self.node_timeout() => Duration::ZERO,
            Some(h) => h.last_seen.elapsed(),
            // Never heard of since this master leads: dead at least that long.
            None => self.leading_for(),
        }
    }

    /// Replaces lost members of data partitions, within the concurrency bound.
    pub(crate) async fn repair_pass(&self) -> Result<()> {
        let state = self.read_state().await?;
        let nodes = state.nodes()?;
        let decommissioned: HashSet<u64> = nodes.iter().filter(|n| n.decommissioned).map(|n| n.id).collect();
        let datanodes = self.candidates(&nodes, NodeRole::Datanode);
        let delay = Duration::from_millis(self.config.data_repair_delay_ms);
        let volumes = state.volumes()?;
        let mut rebuilding: usize = volumes.iter().flat_map(|v| &v.data_partitions).map(|p| p.rebuilding.len()).sum();
        for volume in &volumes {
            for partition in &volume.data_partitions {
                for &member in &partition.members {
                    let disk_failed =
                        self.liveness.get(member).is_some_and(|h| h.lost_partitions.contains(&partition.id));
                    let lost = decommissioned.contains(&member) || disk_failed || self.dead_for(member) > delay;
                    if !lost {
                        continue;
                    }
                    let already = partition.rebuilding.contains(&member);
                    if !already && rebuilding >= self.config.max_concurrent_repairs as usize {
                        return Ok(());
                    }
                    let free: Vec<Candidate> =
                        datanodes.iter().filter(|c| !partition.members.contains(&c.node_id)).copied().collect();
                    let what = format!("a replacement in data partition {}", partition.id);
                    let Ok(picked) = placement::pick(&free, 1, &what, &mut rand::rng()) else {
                        tracing::debug!(
                            partition_id = partition.id,
                            member,
                            "no datanode free to replace a lost member"
                        );
                        continue;
                    };
                    let command = Command::ReplaceDataMember {
                        volume: volume.name.clone(),
                        partition_id: partition.id,
                        old: member,
                        new: picked[0],
                    };
                    self.propose(command).await?;
                    tracing::info!(volume = %volume.name, partition_id = partition.id, old = member, new = picked[0], "data partition member replaced; rebuilding");
                    if !already {
                        rebuilding += 1;
                    }
                    // One change per partition per pass: the next pass sees the new membership.
                    break;
                }
            }
        }
        Ok(())
    }

    /// The data partitions `node_id` belongs to.
    pub(crate) fn data_assignments(view: &VolumeViewData, node_id: u64) -> Vec<pb::DataPartitionAssignment> {
        let mut out = Vec::new();
        for volume in view.volumes_on(node_id) {
            for partition in &volume.data_partitions {
                if partition.members.iter().any(|m| m.node_id == node_id) {
                    out.push(pb::DataPartitionAssignment { volume_id: volume.id, partition: Some(partition.clone()) });
                }
            }
        }
        out
    }

    /// Takes a datanode's rebuild reports: progress kept in memory, finished rebuilds committed.
    pub(crate) async fn record_rebuilds(&self, node_id: u64, rebuilt: &[u64], progress: &[pb::RepairProgress]) {
        {
            let mut known = self.repair_progress.lock().unwrap();
            known.retain(|(_, node), _| *node != node_id);
            for p in progress {
                known.insert((p.partition_id, node_id), *p);
            }
        }
        if rebuilt.is_empty() {
            return;
        }
        let state = StateReader(self.engine.kv(MASTER_GROUP));
        let Ok(volumes) = state.volumes() else { return };
        for volume in volumes {
            for partition in &volume.data_partitions {
                if !rebuilt.contains(&partition.id) || !partition.rebuilding.contains(&node_id) {
                    continue;
                }
                let command =
                    Command::DataRebuilt { volume: volume.name.clone(), partition_id: partition.id, node: node_id };
                match self.propose(command).await {
                    Ok(_) => {
                        tracing::info!(volume = %volume.name, partition_id = partition.id, node_id, "data partition member rebuilt")
                    }
                    Err(e) => {
                        tracing::warn!(partition_id = partition.id, node_id, error = %e, "recording a rebuild failed")
                    }
                }
            }
        }
    }

    /// Members being rebuilt, with the progress their datanodes last reported.
    pub(crate) fn repairs(&self, state: &StateReader) -> Result<Vec<pb::RepairProgress>> {
        let known = self.repair_progress.lock().unwrap();
        let mut out = Vec::new();
        for volume in state.volumes()? {
            for partition in &volume.data_partitions {
                for node in &partition.rebuilding {
                    let reported = known.get(&(partition.id, *node)).copied();
                    out.push(reported.unwrap_or(pb::RepairProgress {
                        partition_id: partition.id,
                        node_id: *node,
                        blobs_done: 0,
                        blobs_total: 0,
                    }));
                }
            }
        }
        Ok(out)
    }
}
