//! The master's figures for Prometheus, sampled every few seconds on the
//! leader from its applied state: nodes by role and state, volumes and their
//! partitions, capacity promised, and data partitions being rebuilt. Every
//! replica reports whether it leads, so a dashboard finds the leader (and a
//! split brain shows as two). Requests are counted by the gRPC layer, the
//! Raft group by `strata_raftstore::telemetry`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_raftstore::Role;

use crate::service::MasterService;
use crate::state::{MASTER_GROUP, StateReader};

const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples the cluster's state until the task is aborted.
pub async fn run(service: Arc<MasterService>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let leading = service.engine.status(MASTER_GROUP).is_some_and(|s| s.role == Role::Leader);
        metrics::gauge!("strata_master_is_leader").set(f64::from(u8::from(leading)));
        if leading && let Err(e) = record_cluster(&service) {
            tracing::warn!(error = %e, "sampling the cluster state failed");
        }
    }
}

fn record_cluster(service: &MasterService) -> strata_common::Result<()> {
    let state = StateReader(service.engine.kv(MASTER_GROUP));
    let mut nodes: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for node in state.nodes()? {
        *nodes.entry((node.role.clone(), service.node_state(&node))).or_default() += 1;
    }
    // Every combination is set each round, so a count that drops to zero says 0.
    for role in ["metanode", "datanode"] {
        for condition in ["alive", "dead", "decommissioned"] {
            let count = nodes.get(&(role.to_string(), condition)).copied().unwrap_or(0);
            metrics::gauge!("strata_master_nodes", "node_role" => role, "state" => condition).set(count as f64);
        }
    }
    let view = service.volume_view()?;
    let volumes: Vec<_> = view.volumes().collect();
    let meta_partitions: usize = volumes.iter().map(|v| v.meta_partitions.len()).sum();
    let data_partitions: usize = volumes.iter().map(|v| v.data_partitions.len()).sum();
    let rebuilding = volumes.iter().flat_map(|v| &v.data_partitions).filter(|p| !p.rebuilding.is_empty()).count();
    let capacity: u64 = volumes.iter().map(|v| v.capacity_bytes).sum();
    metrics::gauge!("strata_master_volumes").set(volumes.len() as f64);
    metrics::gauge!("strata_master_meta_partitions").set(meta_partitions as f64);
    metrics::gauge!("strata_master_data_partitions").set(data_partitions as f64);
    metrics::gauge!("strata_master_rebuilding_data_partitions").set(rebuilding as f64);
    metrics::gauge!("strata_master_volume_capacity_bytes").set(capacity as f64);
    Ok(())
}
