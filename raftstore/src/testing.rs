//! An in-process multi-node harness for tests of anything built on the
//! engine: every node has its own real RocksDB in a temporary directory and
//! its own engine thread; messages travel through [`LocalNetwork`], whose
//! filter can cut links between nodes (partitions) and heal them.
//!
//! Also [`KvMachine`], a tiny state machine (`put key value` commands) used to
//! test the engine itself.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use strata_common::config::RaftConfig;

use crate::{AddressBook, ApplyBatch, Engine, GroupSpec, KvRead, StateMachine, Transport, open_db};

/// Delivers messages between engines in this process, subject to a filter.
#[derive(Default)]
pub struct LocalNetwork {
    engines: RwLock<HashMap<u64, Engine>>,
    /// Directed links (from, to) that drop everything.
    cut: RwLock<HashSet<(u64, u64)>>,
    /// Messages handed over so far: of Raft groups, and node-level ones.
    group_messages: AtomicU64,
    node_messages: AtomicU64,
}

impl LocalNetwork {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn register(&self, node: u64, engine: Engine) {
        self.engines.write().unwrap().insert(node, engine);
    }

    pub fn unregister(&self, node: u64) {
        self.engines.write().unwrap().remove(&node);
    }

    /// Cuts every link between `a` and `b`, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        let mut cut = self.cut.write().unwrap();
        for x in a {
            for y in b {
                cut.insert((*x, *y));
                cut.insert((*y, *x));
            }
        }
    }

    /// Cuts `node` off from every other registered node.
    pub fn isolate(&self, node: u64) {
        let others: Vec<u64> = self.engines.read().unwrap().keys().copied().filter(|n| *n != node).collect();
        self.partition(&[node], &others);
    }

    /// Messages delivered so far: (of Raft groups, node-level).
    pub fn messages(&self) -> (u64, u64) {
        (self.group_messages.load(Ordering::Relaxed), self.node_messages.load(Ordering::Relaxed))
    }

    pub fn heal(&self) {
        self.cut.write().unwrap().clear();
    }

    pub fn transport(self: &Arc<Self>, from: u64) -> Arc<dyn Transport> {
        Arc::new(LocalTransport { from, net: self.clone() })
    }
}

struct LocalTransport {
    from: u64,
    net: Arc<LocalNetwork>,
}

impl Transport for LocalTransport {
    fn send(&self, to_node: u64, group: u64, message: Message) {
        if self.net.cut.read().unwrap().contains(&(self.from, to_node)) {
            return;
        }
        if let Some(engine) = self.net.engines.read().unwrap().get(&to_node) {
            let counter =
                if group == crate::quiesce::NODE_GROUP { &self.net.node_messages } else { &self.net.group_messages };
            counter.fetch_add(1, Ordering::Relaxed);
            engine.deliver(vec![(group, message)]);
        }
    }
}

/// A state machine storing `key=value` commands; answers with the previous value.
#[derive(Default)]
pub struct KvMachine;

impl StateMachine for KvMachine {
    fn apply(&mut self, batch: &mut ApplyBatch<'_>, _index: u64, command: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(command);
        let (key, value) = text.split_once('=').unwrap_or((&text, ""));
        let previous = batch.get(key.as_bytes()).ok().flatten().unwrap_or_default();
        batch.put(key.as_bytes(), value.as_bytes());
        previous
    }
}

/// A cluster of engines in this process, each over its own RocksDB.
pub struct TestCluster {
    pub net: Arc<LocalNetwork>,
    pub engines: HashMap<u64, Engine>,
    pub config: RaftConfig,
    dirs: HashMap<u64, tempfile::TempDir>,
}

/// Raft timing fast enough for tests: 20 ms ticks.
pub fn fast_config(log_retain_entries: u64) -> RaftConfig {
    RaftConfig {
        tick_ms: 20,
        election_ticks: 10,
        heartbeat_ticks: 2,
        hibernate: true,
        log_retain_entries,
        rocksdb_max_open_files: 64,
        rocksdb_block_cache_mb: 8,
        rocksdb_write_buffer_mb: 4,
    }
}

pub fn address_of(node: u64) -> String {
    format!("local-{node}")
}

impl TestCluster {
    /// Starts `nodes` engines and bootstraps `groups` on all of them with KvMachine.
    pub async fn start(nodes: &[u64], groups: &[u64], config: RaftConfig) -> TestCluster {
        let mut cluster =
            TestCluster { net: LocalNetwork::new(), engines: HashMap::new(), config, dirs: HashMap::new() };
        let voters: Vec<(u64, String)> = nodes.iter().map(|n| (*n, address_of(*n))).collect();
        for node in nodes {
            cluster.start_node(*node);
            for group in groups {
                let spec = GroupSpec { initial_voters: voters.clone() };
                cluster.engines[node].create_group(*group, spec, Box::new(KvMachine)).await.unwrap();
            }
        }
        cluster
    }

    /// Starts (or restarts, over the same directory) the engine of `node`.
    pub fn start_node(&mut self, node: u64) -> Engine {
        let dir = self.dirs.entry(node).or_insert_with(|| tempfile::tempdir().expect("tempdir"));
        let db = open_db(dir.path(), &self.config).expect("open rocksdb");
        let engine = Engine::start(node, db, self.config.clone(), self.net.transport(node), AddressBook::new());
        self.net.register(node, engine.clone());
        self.engines.insert(node, engine.clone());
        engine
    }

    /// Stops the engine of `node`; its data stays for a restart.
    pub fn stop_node(&mut self, node: u64) {
        self.net.unregister(node);
        if let Some(engine) = self.engines.remove(&node) {
            engine.shutdown();
        }
    }

    /// Waits for a leader of `group` that every given node agrees on.
    pub async fn leader_among(&self, group: u64, nodes: &[u64], within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let leaders: HashSet<u64> =
                nodes.iter().filter_map(|n| self.engines.get(n)?.status(group)).map(|s| s.leader_id).collect();
            if leaders.len() == 1 {
                let leader = *leaders.iter().next().unwrap();
                let status = self.engines.get(&leader).and_then(|e| e.status(group));
                if leader != 0 && status.is_some_and(|s| s.role == crate::Role::Leader) {
                    return Some(leader);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Waits until `node` has applied `key` with `value` in `group`.
    pub async fn wait_value(&self, node: u64, group: u64, key: &str, value: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let engine = self.engines.get(&node);
            if engine.is_some_and(|e| e.kv(group).get(key.as_bytes()).unwrap().as_deref() == Some(value.as_bytes())) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for TestCluster {
    /// Stops every engine thread so RocksDB is closed before the process exits.
    fn drop(&mut self) {
        let nodes: Vec<u64> = self.engines.keys().copied().collect();
        for node in nodes {
            self.stop_node(node);
        }
    }
}
