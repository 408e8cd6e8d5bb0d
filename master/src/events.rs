//! The cluster's recent events (`strata events`, the console): nodes lost
//! and back, registered and decommissioned, failed disks, repairs started
//! and finished, leader changes, volumes made and removed. A watcher on
//! every master compares what it sees once a second with what it saw
//! before; the leader's log is the one served (`ListEvents`).
//!
//! The log is soft state: it lives in the leader's memory, bounded to the
//! newest [`KEPT`], and a new leader starts its own (with its election as
//! the first event). Nodes lost and back are only reported once the leader
//! has led for a node timeout, so its empty view of heartbeats at takeover
//! does not read as every node lost.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_proto::master as pb;
use strata_raftstore::Role;

use crate::service::MasterService;
use crate::state::{MASTER_GROUP, StateReader};

/// Events kept; older ones are dropped.
const KEPT: usize = 1000;
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The newest events, in order.
#[derive(Default)]
pub struct EventLog {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    events: VecDeque<pb::Event>,
    next_seq: u64,
}

/// What an event is about, besides its kind and message.
#[derive(Debug, Default, Clone)]
pub struct Subject {
    pub node_id: u64,
    pub partition_id: u64,
    pub volume: String,
}

impl EventLog {
    pub fn record(&self, kind: &'static str, message: String, subject: Subject) {
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        tracing::info!(
            kind,
            node_id = subject.node_id,
            partition_id = subject.partition_id,
            volume = %subject.volume,
            "cluster event: {message}"
        );
        metrics::counter!("strata_master_events_total", "kind" => kind).increment(1);
        let mut kept = self.inner.lock().unwrap();
        kept.next_seq += 1;
        let event = pb::Event {
            seq: kept.next_seq,
            at_ms,
            kind: kind.into(),
            message,
            node_id: subject.node_id,
            partition_id: subject.partition_id,
            volume: subject.volume,
        };
        kept.events.push_back(event);
        while kept.events.len() > KEPT {
            kept.events.pop_front();
        }
    }

    /// Events after `after_seq`, at most the newest `limit` (0: all kept).
    pub fn list(&self, after_seq: u64, limit: usize) -> Vec<pb::Event> {
        let kept = self.inner.lock().unwrap();
        let newer: Vec<&pb::Event> = kept.events.iter().filter(|e| e.seq > after_seq).collect();
        let skip = if limit == 0 { 0 } else { newer.len().saturating_sub(limit) };
        newer.into_iter().skip(skip).cloned().collect()
    }
}

/// What the leader sees of the cluster at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    /// Node id to (role, state).
    nodes: BTreeMap<u64, (String, &'static str)>,
    /// Nodes that reported partitions lost with a failed disk.
    failed_disks: BTreeSet<u64>,
    /// (data partition, member being rebuilt), with the partition's volume.
    rebuilding: BTreeMap<(u64, u64), String>,
    volumes: BTreeSet<String>,
}

fn look(service: &MasterService) -> strata_common::Result<Seen> {
    let state = StateReader(service.engine.kv(MASTER_GROUP));
    let mut seen = Seen::default();
    for node in state.nodes()? {
        let condition = service.node_state(&node);
        if service.liveness.get(node.id).is_some_and(|h| !h.lost_partitions.is_empty()) {
            seen.failed_disks.insert(node.id);
        }
        seen.nodes.insert(node.id, (node.role, condition));
    }
    // The cached view: rebuilt only when the state changed, not every second.
    let view = service.volume_view()?;
    for volume in view.volumes() {
        for partition in &volume.data_partitions {
            for member in &partition.rebuilding {
                seen.rebuilding.insert((partition.id, *member), volume.name.clone());
            }
        }
        seen.volumes.insert(volume.name.clone());
    }
    Ok(seen)
}

/// The events that lead from `before` to `now`.
fn changes(before: &Seen, now: &Seen) -> Vec<(&'static str, String, Subject)> {
    let node = |id: u64| Subject { node_id: id, ..Default::default() };
    let mut out = Vec::new();
    for (id, (role, state)) in &now.nodes {
        let (kind, message) = match (before.nodes.get(id).map(|(_, s)| *s), *state) {
            (None, _) => ("node_registered", format!("{role} {id} registered")),
            (Some(was), now) if was == now => continue,
            (_, "decommissioned") => ("node_decommissioned", format!("{role} {id} is being decommissioned")),
            (_, "dead") => ("node_lost", format!("{role} {id} stopped heartbeating")),
            (_, _) => ("node_back", format!("{role} {id} is alive again")),
        };
        out.push((kind, message, node(*id)));
    }
    for id in now.failed_disks.difference(&before.failed_disks) {
        out.push(("disk_failed", format!("node {id} reported a failed disk"), node(*id)));
    }
    for ((partition, member), volume) in &now.rebuilding {
        if !before.rebuilding.contains_key(&(*partition, *member)) {
            let subject = Subject { node_id: *member, partition_id: *partition, volume: volume.clone() };
            out.push(("repair_started", format!("rebuilding data partition {partition} on node {member}"), subject));
        }
    }
    for ((partition, member), volume) in &before.rebuilding {
        if !now.rebuilding.contains_key(&(*partition, *member)) {
            let subject = Subject { node_id: *member, partition_id: *partition, volume: volume.clone() };
            out.push(("repair_finished", format!("data partition {partition} rebuilt on node {member}"), subject));
        }
    }
    for name in now.volumes.difference(&before.volumes) {
        let subject = Subject { volume: name.clone(), ..Default::default() };
        out.push(("volume_created", format!("volume {name} created"), subject));
    }
    for name in before.volumes.difference(&now.volumes) {
        let subject = Subject { volume: name.clone(), ..Default::default() };
        out.push(("volume_deleted", format!("volume {name} deleted"), subject));
    }
    out
}

/// Watches the cluster and records its events until the task is aborted.
pub async fn watch(service: Arc<MasterService>) {
    let mut leader = (0, 0);
    let mut before: Option<Seen> = None;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        let Some(status) = service.engine.status(MASTER_GROUP) else { continue };
        if status.leader_id != 0 && (status.leader_id, status.term) != leader {
            leader = (status.leader_id, status.term);
            let message = format!("master {} leads (term {})", status.leader_id, status.term);
            service.events.record(
                "leader_changed",
                message,
                Subject { node_id: status.leader_id, ..Default::default() },
            );
        }
        if status.role != Role::Leader {
            before = None;
            continue;
        }
        let now = match look(&service) {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "reading the cluster state for events failed");
                continue;
            }
        };
        // Until nodes have found a new leader, its liveness view is empty:
        // nodes coming and going then is heartbeats arriving, not news.
        let settling = service.newly_elected();
        if let Some(before) = &before {
            for (kind, message, subject) in changes(before, &now) {
                if settling && matches!(kind, "node_lost" | "node_back") {
                    continue;
                }
                service.events.record(kind, message, subject);
            }
        }
        before = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(nodes: &[(u64, &'static str)], rebuilding: &[(u64, u64)], volumes: &[&str]) -> Seen {
        Seen {
            nodes: nodes.iter().map(|(id, state)| (*id, ("datanode".to_string(), *state))).collect(),
            failed_disks: BTreeSet::new(),
            rebuilding: rebuilding.iter().map(|pair| (*pair, "v".to_string())).collect(),
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn changes_name_what_happened() {
        let before = seen(&[(1, "alive"), (2, "alive"), (3, "dead")], &[(7, 2)], &["a"]);
        let mut now = seen(&[(1, "alive"), (2, "dead"), (3, "alive"), (4, "alive")], &[(8, 4)], &["b"]);
        now.failed_disks.insert(1);
        let kinds: Vec<&str> = changes(&before, &now).iter().map(|(kind, _, _)| *kind).collect();
        assert_eq!(
            kinds,
            [
                "node_lost",
                "node_back",
                "node_registered",
                "disk_failed",
                "repair_started",
                "repair_finished",
                "volume_created",
                "volume_deleted"
            ]
        );
        assert!(changes(&now, &now).is_empty());
    }

    #[test]
    fn the_log_keeps_the_newest_and_pages_by_sequence() {
        let log = EventLog::default();
        for i in 0..(KEPT + 5) {
            log.record("node_lost", format!("event {i}"), Subject::default());
        }
        let all = log.list(0, 0);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].seq, 6);
        let newest = log.list(0, 2);
        assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), [KEPT as u64 + 4, KEPT as u64 + 5]);
        assert!(log.list(KEPT as u64 + 5, 0).is_empty());
    }
}
