//! `strata events` and `strata partition list|info`: what happened in the
//! cluster lately, and where each partition lives, from the master's API.

use serde::Serialize;
use strata_common::types::Redundancy;
use strata_proto::master as pb;
use strata_sdk::MasterClient;

use crate::admin::output;

#[derive(Debug, Serialize)]
struct EventView {
    seq: u64,
    at_ms: u64,
    kind: String,
    message: String,
    #[serde(skip_serializing_if = "is_zero")]
    node_id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    partition_id: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    volume: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Seconds and milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` UTC.
fn utc(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

pub async fn events(client: &MasterClient, limit: u32, json: bool) -> anyhow::Result<()> {
    let answer = client.list_events(0, limit).await?;
    let events: Vec<EventView> = answer
        .events
        .into_iter()
        .map(|e| EventView {
            seq: e.seq,
            at_ms: e.at_ms,
            kind: e.kind,
            message: e.message,
            node_id: e.node_id,
            partition_id: e.partition_id,
            volume: e.volume,
        })
        .collect();
    output(json, &events, |events| {
        println!("events kept by master {} (the leader), oldest first", answer.master_id);
        for e in events {
            println!("{}  {:<20} {}", utc(e.at_ms), e.kind, e.message);
        }
    })
}

#[derive(Debug, Serialize)]
struct ReplicaView {
    node_id: u64,
    address: String,
    state: &'static str,
    rebuilding: bool,
}

#[derive(Debug, Serialize)]
struct PartitionView {
    id: u64,
    volume: String,
    kind: &'static str,
    redundancy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    inode_start: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inode_end: Option<u64>,
    replicas: Vec<ReplicaView>,
}

/// Every partition of `volumes`, with its replicas' state from `nodes`.
fn partitions(volumes: &[pb::Volume], nodes: &[pb::NodeInfo]) -> Vec<PartitionView> {
    let replica = |m: &pb::PartitionMember, rebuilding: bool| {
        let node = nodes.iter().find(|n| n.id == m.node_id);
        let state = match node {
            Some(n) if n.decommissioned => "decommissioned",
            Some(n) if n.alive => "alive",
            Some(_) => "dead",
            None => "unknown",
        };
        ReplicaView { node_id: m.node_id, address: m.address.clone(), state, rebuilding }
    };
    let mut out = Vec::new();
    for volume in volumes {
        for p in &volume.meta_partitions {
            out.push(PartitionView {
                id: p.id,
                volume: volume.name.clone(),
                kind: "meta",
                redundancy: format!("replica:{}", p.members.len()),
                inode_start: Some(p.inode_start),
                inode_end: p.inode_end,
                replicas: p.members.iter().map(|m| replica(m, false)).collect(),
            });
        }
        for p in &volume.data_partitions {
            out.push(PartitionView {
                id: p.id,
                volume: volume.name.clone(),
                kind: "data",
                redundancy: Redundancy::name_of(p.redundancy.as_ref().or(volume.redundancy.as_ref()))
                    .unwrap_or_default(),
                inode_start: None,
                inode_end: None,
                replicas: p.members.iter().map(|m| replica(m, p.rebuilding.contains(&m.node_id))).collect(),
            });
        }
    }
    out
}

fn print_partition(p: &PartitionView) {
    let range = match (p.inode_start, p.inode_end) {
        (Some(start), Some(end)) => format!(" inodes [{start}, {end})"),
        (Some(start), None) => format!(" inodes [{start}, ∞)"),
        _ => String::new(),
    };
    println!("{} partition {} of volume {} ({}){range}", p.kind, p.id, p.volume, p.redundancy);
    for r in &p.replicas {
        let rebuilding = if r.rebuilding { ", rebuilding" } else { "" };
        println!("  node {:<5} {:<22} {}{rebuilding}", r.node_id, r.address, r.state);
    }
}

pub async fn partition_list(client: &MasterClient, volume: Option<&str>, json: bool) -> anyhow::Result<()> {
    let volumes = match volume {
        Some(name) => vec![client.get_volume(name).await?],
        None => client.list_volumes().await?,
    };
    let nodes = client.list_nodes().await?;
    let all = partitions(&volumes, &nodes);
    output(json, &all, |all| all.iter().for_each(print_partition))
}

pub async fn partition_info(client: &MasterClient, id: u64, json: bool) -> anyhow::Result<()> {
    let volumes = client.list_volumes().await?;
    let nodes = client.list_nodes().await?;
    let found: Vec<PartitionView> = partitions(&volumes, &nodes).into_iter().filter(|p| p.id == id).collect();
    anyhow::ensure!(!found.is_empty(), "no partition {id} in any volume");
    output(json, &found, |found| found.iter().for_each(print_partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_656_851_984), "2026-12-07 15:20:51");
    }
}
