//! The console's one data call, `GET /api/cluster`: the cluster as the
//! leader sees it (masters and which leads, nodes with their state and disk,
//! volumes with usage and redundancy, their meta and data partitions and
//! replicas, repairs in progress, cachenodes, recent events), asked through
//! the masters' own gRPC API so any master's console shows the leader's view.

use serde_json::{Value, json};
use strata_common::StrataError;
use strata_common::types::Redundancy;
use strata_proto::master as pb;
use strata_rpc::MasterClient;

/// Events shown on the page.
const EVENTS_SHOWN: u32 = 50;

fn role_name(role: i32) -> &'static str {
    match pb::NodeRole::try_from(role) {
        Ok(pb::NodeRole::Master) => "master",
        Ok(pb::NodeRole::Metanode) => "metanode",
        Ok(pb::NodeRole::Datanode) => "datanode",
        Ok(pb::NodeRole::Cachenode) => "cachenode",
        _ => "unknown",
    }
}

fn node_json(node: &pb::NodeInfo) -> Value {
    let capacity = node.capacity.as_ref();
    json!({
        "id": node.id,
        "role": role_name(node.role),
        "address": node.address,
        "state": if node.decommissioned { "decommissioned" } else if node.alive { "alive" } else { "dead" },
        "is_leader": node.is_leader,
        "last_heartbeat_ms_ago": node.last_heartbeat_ms_ago,
        "disk_total_bytes": capacity.map(|c| c.total_bytes),
        "disk_available_bytes": capacity.map(|c| c.available_bytes),
        "partitions_held": node.partitions_held,
        "partitions_assigned": node.partitions_assigned,
    })
}

fn volume_json(volume: &pb::Volume) -> Value {
    let members = |members: &[pb::PartitionMember]| members.iter().map(|m| m.node_id).collect::<Vec<_>>();
    let meta: Vec<Value> = volume
        .meta_partitions
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "inode_start": p.inode_start,
                "inode_end": p.inode_end,
                "members": members(&p.members),
            })
        })
        .collect();
    let data: Vec<Value> = volume
        .data_partitions
        .iter()
        .map(|p| json!({ "id": p.id, "members": members(&p.members), "rebuilding": p.rebuilding }))
        .collect();
    json!({
        "name": volume.name,
        "redundancy": Redundancy::name_of(volume.redundancy.as_ref()).unwrap_or_else(|| "unknown".into()),
        "capacity_bytes": volume.capacity_bytes,
        "used_bytes": volume.used_bytes,
        "inodes": volume.inodes,
        "owner": volume.owner,
        "meta_partitions": meta,
        "data_partitions": data,
    })
}

/// The whole page's data.
pub async fn cluster(masters: &MasterClient) -> Result<Value, StrataError> {
    let nodes = masters.cluster_nodes().await?;
    let volumes = masters.list_volumes().await?;
    let events = masters.list_events(0, EVENTS_SHOWN).await?;
    let leader = nodes.nodes.iter().find(|n| n.is_leader);
    let (masters_list, others): (Vec<&pb::NodeInfo>, Vec<&pb::NodeInfo>) =
        nodes.nodes.iter().partition(|n| n.role == pb::NodeRole::Master as i32);
    let repairs: Vec<Value> = nodes
        .repairs
        .iter()
        .map(|r| {
            json!({
                "partition_id": r.partition_id,
                "node_id": r.node_id,
                "blobs_done": r.blobs_done,
                "blobs_total": r.blobs_total,
            })
        })
        .collect();
    let events: Vec<Value> = events
        .events
        .iter()
        .rev()
        .map(|e| {
            json!({
                "seq": e.seq,
                "at_ms": e.at_ms,
                "kind": e.kind,
                "message": e.message,
                "node_id": e.node_id,
                "partition_id": e.partition_id,
                "volume": e.volume,
            })
        })
        .collect();
    Ok(json!({
        "leader": leader.map(|l| json!({ "id": l.id, "address": l.address })),
        "masters": masters_list.into_iter().map(node_json).collect::<Vec<_>>(),
        "nodes": others.iter().filter(|n| n.role != pb::NodeRole::Cachenode as i32).map(|n| node_json(n)).collect::<Vec<_>>(),
        "cachenodes": others.iter().filter(|n| n.role == pb::NodeRole::Cachenode as i32).map(|n| node_json(n)).collect::<Vec<_>>(),
        "volumes": volumes.iter().map(volume_json).collect::<Vec<_>>(),
        "repairs": repairs,
        "events": events,
    }))
}
