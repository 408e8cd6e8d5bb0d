//! What the leader knows of each node's health: last heartbeat time, reported
//! capacity and partitions held. Kept in memory on purpose: it changes every
//! second and is rebuilt within one heartbeat interval after a leader change.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use strata_common::sys::DiskUsage;
use strata_proto::master::CacheTierReport;

#[derive(Debug, Clone)]
pub struct Health {
    pub last_seen: Instant,
    pub capacity: DiskUsage,
    pub partitions_held: u64,
    /// Data partitions the node reported lost with a failed disk.
    pub lost_partitions: Vec<u64>,
    /// A cachenode's store as last reported.
    pub cache: Option<CacheTierReport>,
}

impl Health {
    /// A node heard from now, reporting `capacity` and nothing else.
    pub fn now(capacity: DiskUsage) -> Health {
        Health { last_seen: Instant::now(), capacity, partitions_held: 0, lost_partitions: Vec::new(), cache: None }
    }
}

#[derive(Default)]
pub struct Liveness {
    nodes: RwLock<HashMap<u64, Health>>,
}

impl Liveness {
    pub fn record(&self, node_id: u64, health: Health) {
        self.nodes.write().unwrap().insert(node_id, health);
    }

    pub fn get(&self, node_id: u64) -> Option<Health> {
        self.nodes.read().unwrap().get(&node_id).cloned()
    }

    pub fn is_alive(&self, node_id: u64, timeout: Duration) -> bool {
        self.get(node_id).is_some_and(|h| h.last_seen.elapsed() < timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_alive_only_within_the_timeout() {
        let liveness = Liveness::default();
        assert!(!liveness.is_alive(5, Duration::from_secs(5)), "never heard of");
        liveness.record(5, Health { partitions_held: 2, ..Health::now(DiskUsage::default()) });
        assert!(liveness.is_alive(5, Duration::from_secs(5)));
        assert!(!liveness.is_alive(5, Duration::ZERO));
        assert_eq!(liveness.get(5).unwrap().partitions_held, 2);
    }
}
