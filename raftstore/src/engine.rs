//! The engine: one thread per node drives every hosted Raft group. Each round
//! it handles queued commands and incoming messages, ticks, then collects the
//! ready state of every group, writes all their log entries and hard states
//! in ONE RocksDB write batch, synced when it holds entries, a snapshot or a
//! new term or vote (not for commit indexes alone), and only then sends the
//! messages that must follow persistence and applies committed entries.
//! Many groups thus share one fsync.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfChange, ConfChangeType, Message, MessageType};
use raft::{RawNode, StateRole};
use rocksdb::{DB, WriteBatch, WriteOptions};
use strata_common::config::RaftConfig;
use strata_common::{ErrorCode, Result, StrataError};
use tokio::sync::oneshot;

use crate::StateMachine;
use crate::kv::GroupKv;
use crate::logger::group_logger;
use crate::peer::{Peer, ProposalReply, ReadReply, id_bytes};
use crate::quiesce::{self, Liveness, NODE_GROUP, Signal};
use crate::snapfile::{Descriptor, SnapshotFiles};
use crate::storage::GroupStorage;
use crate::transport::{AddressBook, Transport};

/// How long a proposal or read may wait before the caller gets a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Ready rounds per loop iteration; more work waits for the next iteration.
const MAX_READY_ROUNDS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    PreCandidate,
}

impl From<StateRole> for Role {
    fn from(r: StateRole) -> Role {
        match r {
            StateRole::Leader => Role::Leader,
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
        }
    }
}

/// A group's Raft state as last seen by the engine thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub group_id: u64,
    pub node_id: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub term: u64,
    pub role: Role,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Hibernating (see `quiesce`): idle, not ticking.
    pub quiet: bool,
    /// Proposals made here still waiting to apply.
    pub proposals_in_flight: usize,
}

/// How to create a group on this node.
#[derive(Debug, Clone, Default)]
pub struct GroupSpec {
    /// The initial members (id, address) if the group is being bootstrapped.
    /// Ignored when the group already has state on disk. Empty for a node
    /// joining an existing group: it waits for the leader's snapshot.
    pub initial_voters: Vec<(u64, String)>,
}

enum Command {
    Deliver(Vec<(u64, Message)>),
    CreateGroup { group: u64, spec: GroupSpec, sm: Box<dyn StateMachine>, reply: oneshot::Sender<Result<()>> },
    Propose { group: u64, data: Vec<u8>, reply: ProposalReply },
    ChangeMembership { group: u64, change: ConfChange, reply: ProposalReply },
    ReadIndex { group: u64, reply: ReadReply },
    Campaign { group: u64 },
    RemoveGroup { group: u64, reply: oneshot::Sender<Result<()>> },
    Shutdown,
}

struct Shared {
    node_id: u64,
    db: Arc<DB>,
    addresses: AddressBook,
    statuses: RwLock<HashMap<u64, GroupStatus>>,
    /// Per group led here: until when a read needs no round through the
    /// engine thread (see [`Peer::read_lease`]), as of the last ready round.
    read_leases: RwLock<HashMap<u64, Instant>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Snapshot files made and received here (next to the RocksDB directory).
    snapshots: Arc<SnapshotFiles>,
}

/// Handle to a node's engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl Engine {
    /// Starts the engine thread for node `node_id` over `db`.
    pub fn start(
        node_id: u64,
        db: Arc<DB>,
        config: RaftConfig,
        transport: Arc<dyn Transport>,
        addresses: AddressBook,
    ) -> Engine {
        let (tx, rx) = mpsc::channel();
        let snapshots = SnapshotFiles::new(db.path().with_extension("snapshots"));
        let shared = Arc::new(Shared {
            node_id,
            snapshots,
            db,
            addresses,
            statuses: RwLock::new(HashMap::new()),
            read_leases: RwLock::new(HashMap::new()),
            thread: Mutex::new(None),
        });
        let worker = Worker {
            shared: shared.clone(),
            config,
            transport,
            rx,
            peers: HashMap::new(),
            next_request_id: rand::random::<u64>() >> 1,
            liveness: Liveness::default(),
            ticks: 0,
        };
        let handle = std::thread::Builder::new()
            .name(format!("raftstore-{node_id}"))
            .spawn(move || worker.run())
            .expect("spawning the raftstore thread");
        *shared.thread.lock().unwrap() = Some(handle);
        Engine { tx, shared }
    }

    pub fn node_id(&self) -> u64 {
        self.shared.node_id
    }

    pub(crate) fn snapshots(&self) -> &Arc<SnapshotFiles> {
        &self.shared.snapshots
    }

    pub fn addresses(&self) -> &AddressBook {
        &self.shared.addresses
    }

    fn command(&self, cmd: Command) -> Result<()> {
        self.tx.send(cmd).map_err(|_| StrataError::unavailable("the raft engine has stopped"))
    }

    async fn wait<T>(rx: oneshot::Receiver<Result<T>>, what: &str) -> Result<T> {
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StrataError::unavailable(format!("{what}: the raft engine dropped the request"))),
            Err(_) => {
                Err(StrataError::new(ErrorCode::Timeout, format!("{what}: no outcome within {REQUEST_TIMEOUT:?}")))
            }
        }
    }

    /// Hosts a group on this node (bootstrapping it if `spec` says so and it
    /// has no state yet).
    pub async fn create_group(&self, group: u64, spec: GroupSpec, sm: Box<dyn StateMachine>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::CreateGroup { group, spec, sm, reply })?;
        Self::wait(rx, "creating raft group").await
    }

    /// Replicates `command` and returns what the state machine answered once
    /// it applied here. Fails with NotLeader (and the leader's address) on a follower.
    pub async fn propose(&self, group: u64, command: Vec<u8>) -> Result<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Propose { group, data: command, reply })?;
        Self::wait(rx, "proposing").await
    }

    /// Adds a voter reachable at `address`. It joins empty and catches up from a snapshot.
    pub async fn add_voter(&self, group: u64, node: u64, address: &str) -> Result<()> {
        let change = ConfChange {
            change_type: ConfChangeType::AddNode as i32,
            node_id: node,
            context: address.as_bytes().to_vec(),
            ..Default::default()
        };
        let (reply, rx) = oneshot::channel();
        self.command(Command::ChangeMembership { group, change, reply })?;
        Self::wait(rx, "adding a voter").await.map(drop)
    }

    pub async fn remove_voter(&self, group: u64, node: u64) -> Result<()> {
        let change = ConfChange { change_type: ConfChangeType::RemoveNode as i32, node_id: node, ..Default::default() };
        let (reply, rx) = oneshot::channel();
        self.command(Command::ChangeMembership { group, change, reply })?;
        Self::wait(rx, "removing a voter").await.map(drop)
    }

    /// Waits until this node may serve a linearizable read of `group`: the
    /// leader confirmed its leadership with a quorum and has applied at least
    /// up to the commit index it had when the read arrived.
    pub async fn read_index(&self, group: u64) -> Result<()> {
        // Under a lease published by the engine thread, the applied state
        // already covers every acknowledged write: no round trip to that
        // thread (two thread wake-ups, most of a metadata read's latency).
        if self.reads_leased(group) {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.command(Command::ReadIndex { group, reply })?;
        Self::wait(rx, "confirming leadership for a read").await
    }

    /// Whether reads of `group` on this node are served now with no round
    /// through the engine thread: it leads the group under a lease and has
    /// applied everything acknowledged (see `Peer::read_lease`).
    pub fn reads_leased(&self, group: u64) -> bool {
        let leased = self.shared.read_leases.read().unwrap().get(&group).copied();
        leased.is_some_and(|until| Instant::now() < until)
    }

    /// Starts an election for `group` on this node (tests and leader transfer).
    pub fn campaign(&self, group: u64) -> Result<()> {
        self.command(Command::Campaign { group })
    }

    /// Stops hosting `group` on this node and deletes its log and data here.
    pub async fn remove_group(&self, group: u64) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::RemoveGroup { group, reply })?;
        Self::wait(rx, "removing a raft group").await
    }

    /// Hands messages received from the network to their groups.
    pub fn deliver(&self, messages: Vec<(u64, Message)>) {
        let _ = self.tx.send(Command::Deliver(messages));
    }

    pub fn status(&self, group: u64) -> Option<GroupStatus> {
        self.shared.statuses.read().unwrap().get(&group).cloned()
    }

    /// The status of every group hosted here, as of each one's last round.
    pub fn statuses(&self) -> Vec<GroupStatus> {
        self.shared.statuses.read().unwrap().values().cloned().collect()
    }

    /// The node's RocksDB (for its figures; writes go through the groups).
    pub(crate) fn db(&self) -> &Arc<DB> {
        &self.shared.db
    }

    /// The address of the group's leader, if one is known and reachable by address.
    pub fn leader_address(&self, group: u64) -> Option<String> {
        let status = self.status(group)?;
        self.shared.addresses.get(status.leader_id)
    }

    /// Read access to the group's state-machine data as applied on this node.
    pub fn kv(&self, group: u64) -> GroupKv {
        GroupKv::new(self.shared.db.clone(), group)
    }

    /// Stops the engine thread and waits for it, so that its groups have
    /// released their handles on the database; pending requests fail.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(handle) = self.shared.thread.lock().unwrap().take() {
            let _ = handle.join();
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    config: RaftConfig,
    transport: Arc<dyn Transport>,
    rx: mpsc::Receiver<Command>,
    peers: HashMap<u64, Peer>,
    next_request_id: u64,
    /// When each other node was last heard from (wakes quiet followers).
    liveness: Liveness,
    /// Ticks run so far.
    ticks: u64,
}

impl Worker {
    fn run(mut self) {
        let tick = Duration::from_millis(self.config.tick_ms.max(1));
        let mut next_tick = Instant::now() + tick;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(timeout) {
                Ok(cmd) => {
                    if !self.handle(cmd) {
                        return;
                    }
                    while let Ok(cmd) = self.rx.try_recv() {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                // Missed ticks are skipped, never run back to back: ticks
                // stay at least `tick` apart, which leader leases rely on.
                next_tick += tick;
                if next_tick <= now {
                    next_tick = now + tick;
                }
            }
            self.on_ready();
        }
    }

    /// One tick: awake groups tick and idle leaders may go quiet; a quiet
    /// follower whose leader's node fell silent wakes; this node tells the
    /// followers of the groups it leads while quiet that it is alive.
    fn tick(&mut self, now: Instant) {
        let node_id = self.shared.node_id;
        let silence = Duration::from_millis(self.config.tick_ms) * self.config.election_ticks as u32;
        let mut outgoing: Vec<(u64, u64, Message)> = Vec::new();
        let mut changed = Vec::new();
        let mut alive_to = BTreeSet::new();
        for (group, peer) in self.peers.iter_mut() {
            if peer.quiet {
                if peer.is_leader() {
                    peer.other_members(&mut alive_to);
                    continue;
                }
                let leader = peer.leader_id();
                if !self.liveness.silent(leader, now, silence) {
                    continue;
                }
                tracing::debug!(group_id = *group, leader_id = leader, "leader's node silent; the quiet group wakes");
                outgoing.extend(peer.wake(true).map(|(to, msg)| (to, *group, msg)));
                changed.push(*group);
            }
            // An idle leader goes quiet instead of ticking: a heartbeat from
            // this tick would reach its followers after the quiesce one and
            // wake them again.
            if self.config.hibernate
                && let Some(heartbeats) = peer.tick_idle(self.config.election_ticks)
            {
                tracing::debug!(group_id = *group, "idle; the group hibernates");
                outgoing.extend(heartbeats.into_iter().map(|m| (m.to, *group, m)));
                peer.other_members(&mut alive_to);
                changed.push(*group);
                continue;
            }
            peer.node.tick();
        }
        self.ticks += 1;
        if self.ticks.is_multiple_of(self.config.heartbeat_ticks.max(1) as u64) {
            outgoing.extend(alive_to.into_iter().map(|to| (to, NODE_GROUP, quiesce::alive(node_id, to))));
        }
        for (to, group, msg) in outgoing {
            self.transport.send(to, group, msg);
        }
        for group in changed {
            Self::publish(&self.shared, group, &self.peers[&group]);
        }
    }

    /// Wakes `group` for a request made on this node (and keeps it awake
    /// for another election timeout).
    fn wake_for_request(&mut self, group: u64) {
        let Some(peer) = self.peers.get_mut(&group) else { return };
        let was_quiet = peer.quiet;
        if let Some((to, msg)) = peer.wake(true) {
            self.transport.send(to, group, msg);
        }
        if was_quiet {
            Self::publish(&self.shared, group, peer);
        }
    }

    /// Hands one received message to its group, waking or quieting it as
    /// the message says (see `quiesce`).
    fn deliver(&mut self, group: u64, msg: Message, now: Instant) {
        self.liveness.heard(msg.from, now);
        if group == NODE_GROUP {
            return; // a node's "alive": liveness only
        }
        let Some(peer) = self.peers.get_mut(&group) else {
            tracing::debug!(group_id = group, from = msg.from, "message for a group not hosted here");
            return;
        };
        let signal = quiesce::signal(&msg);
        let was_quiet = peer.quiet;
        match signal {
            Signal::Alive => return,
            Signal::Wake => {
                peer.wake(false);
                peer.node.ping();
            }
            Signal::Other => {
                let from_leader = msg.from == peer.leader_id();
                if let Some((to, wake)) = peer.wake(!from_leader) {
                    self.transport.send(to, group, wake);
                }
            }
            Signal::Quiesce | Signal::HeartbeatResponse => {}
        }
        if signal != Signal::Wake {
            if !snapshot_file_present(&msg) {
                tracing::warn!(group_id = group, from = msg.from, "snapshot file missing or short; message dropped");
                return;
            }
            let heartbeat = (signal == Signal::Quiesce).then(|| msg.clone());
            if let Err(e) = peer.node.step(msg) {
                tracing::debug!(group_id = group, error = %e, "raft step rejected a message");
            }
            if let Some(heartbeat) = heartbeat {
                peer.follow_into_quiet(&heartbeat);
            }
        }
        if peer.quiet != was_quiet {
            Self::publish(&self.shared, group, peer);
        }
    }

    fn request_id(&mut self) -> u64 {
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.next_request_id
    }

    fn not_leader(&self, peer: &Peer) -> StrataError {
        StrataError::not_leader(self.shared.addresses.get(peer.leader_id()))
    }

    fn no_group(group: u64) -> StrataError {
        StrataError::not_found(format!("raft group {group} is not hosted on this node"))
    }

    /// Returns false when the engine must stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Deliver(messages) => {
                let now = Instant::now();
                for (group, msg) in messages {
                    self.deliver(group, msg, now);
                }
            }
            Command::CreateGroup { group, spec, sm, reply } => {
                let _ = reply.send(self.create_group(group, spec, sm));
            }
            Command::Propose { group, data, reply } => {
                self.start_proposal(group, reply, |node, ctx| {
                    node.propose(ctx, data).map_err(|e| StrataError::unavailable(format!("proposal dropped: {e}")))
                });
            }
            Command::ChangeMembership { group, change, reply } => {
                self.start_proposal(group, reply, |node, ctx| {
                    node.propose_conf_change(ctx, change).map_err(|e| {
                        StrataError::new(ErrorCode::FailedPrecondition, format!("membership change refused: {e}"))
                    })
                });
            }
            Command::ReadIndex { group, reply } => {
                self.wake_for_request(group);
                let id = self.request_id();
                let Some(peer) = self.peers.get(&group) else {
                    let _ = reply.send(Err(Self::no_group(group)));
                    return true;
                };
                if !peer.is_leader() {
                    let _ = reply.send(Err(self.not_leader(peer)));
                    return true;
                }
                let peer = self.peers.get_mut(&group).expect("checked above");
                let now = Instant::now();
                if peer.has_lease(now) {
                    peer.read_under_lease(reply);
                    return true;
                }
                peer.reads_waiting_index.insert(id, (reply, now));
                peer.node.read_index(id_bytes(id));
            }
            Command::Campaign { group } => {
                self.wake_for_request(group);
                if let Some(peer) = self.peers.get_mut(&group) {
                    let _ = peer.node.campaign();
                }
            }
            Command::RemoveGroup { group, reply } => {
                let _ = reply.send(self.remove_group(group));
            }
            Command::Shutdown => return false,
        }
        true
    }

    /// Proposes on the group's leader with a fresh proposal id in the entry
    /// context; the reply waits for that entry to apply here.
    fn start_proposal(
        &mut self,
        group: u64,
        reply: ProposalReply,
        propose: impl FnOnce(&mut RawNode<GroupStorage>, Vec<u8>) -> Result<()>,
    ) {
        self.wake_for_request(group);
        let id = self.request_id();
        let Some(peer) = self.peers.get_mut(&group) else {
            let _ = reply.send(Err(Self::no_group(group)));
            return;
        };
        if !peer.is_leader() {
            let _ = reply.send(Err(StrataError::not_leader(self.shared.addresses.get(peer.leader_id()))));
            return;
        }
        match propose(&mut peer.node, id_bytes(id)) {
            Ok(()) => {
                peer.proposals.insert(id, (reply, Instant::now()));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn create_group(&mut self, group: u64, spec: GroupSpec, sm: Box<dyn StateMachine>) -> Result<()> {
        if self.peers.contains_key(&group) {
            return Err(StrataError::new(ErrorCode::AlreadyExists, format!("raft group {group} is already hosted")));
        }
        let db = self.shared.db.clone();
        let raft_err = |e: raft::Error| StrataError::internal(format!("raft group {group}: {e}"));
        let mut storage = GroupStorage::load(db.clone(), group, self.shared.snapshots.clone()).map_err(raft_err)?;
        if !storage.is_initialized() && !spec.initial_voters.is_empty() {
            let mut wb = WriteBatch::default();
            storage.bootstrap(&mut wb, &spec.initial_voters);
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.write_opt(wb, &opts).map_err(|e| StrataError::internal(format!("bootstrapping group {group}: {e}")))?;
        }
        for (id, address) in storage.peers().iter().chain(&spec.initial_voters) {
            self.shared.addresses.set(*id, address.clone());
        }
        let single_voter = storage.conf_state().voters == [self.shared.node_id];
        let cfg = raft::Config {
            id: self.shared.node_id,
            election_tick: self.config.election_ticks,
            heartbeat_tick: self.config.heartbeat_ticks,
            applied: storage.applied(),
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        cfg.validate().map_err(raft_err)?;
        let logger = group_logger(self.shared.node_id, group);
        let mut node = RawNode::new(&cfg, storage, &logger).map_err(raft_err)?;
        if single_voter {
            let _ = node.campaign();
        }
        // See `Peer::extend_lease`: a tick short of the shortest time in
        // which another leader could be elected.
        let lease_ticks = self.config.election_ticks.saturating_sub(2) as u32;
        let lease_span = Duration::from_millis(self.config.tick_ms) * lease_ticks;
        let mut peer = Peer::new(group, node, sm, GroupKv::new(db, group), lease_span);
        peer.sm.restored(&peer.kv);
        self.shared.statuses.write().unwrap().insert(group, peer.status());
        self.peers.insert(group, peer);
        Ok(())
    }

    fn remove_group(&mut self, group: u64) -> Result<()> {
        let Some(mut peer) = self.peers.remove(&group) else {
            return Err(Self::no_group(group));
        };
        peer.fail_pending(StrataError::not_found(format!("raft group {group} was removed from this node")));
        self.shared.statuses.write().unwrap().remove(&group);
        self.shared.read_leases.write().unwrap().remove(&group);
        self.shared.snapshots.remove_group(group);
        let mut wb = WriteBatch::default();
        crate::storage::GroupStorage::stage_destroy(&mut wb, group);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.shared
            .db
            .write_opt(wb, &opts)
            .map_err(|e| StrataError::internal(format!("deleting raft group {group}: {e}")))?;
        tracing::info!(group_id = group, "raft group removed from this node");
        Ok(())
    }

    /// Publishes a group's status and read lease for other threads.
    fn publish(shared: &Shared, group: u64, peer: &Peer) {
        shared.statuses.write().unwrap().insert(group, peer.status());
        let mut leases = shared.read_leases.write().unwrap();
        match peer.read_lease(Instant::now()) {
            Some(until) => leases.insert(group, until),
            None => leases.remove(&group),
        };
    }

    fn on_ready(&mut self) {
        for _ in 0..MAX_READY_ROUNDS {
            let ready_groups: Vec<u64> =
                self.peers.iter().filter(|(_, p)| p.node.has_ready()).map(|(g, _)| *g).collect();
            if ready_groups.is_empty() {
                return;
            }
            self.ready_round(ready_groups);
        }
    }

    fn ready_round(&mut self, groups: Vec<u64>) {
        let db = self.shared.db.clone();
        let addresses = self.shared.addresses.clone();
        let transport = self.transport.clone();

        // Phase 1: stage every group's log writes into one batch.
        let mut wb = WriteBatch::default();
        // Entries, a snapshot, a new term or vote must be on disk before the
        // messages that follow them; a round that only moves commit indexes
        // (the leader's second round of every proposal) needs no fsync.
        let mut needs_sync = false;
        let mut readies = Vec::with_capacity(groups.len());
        for group in groups {
            let peer = self.peers.get_mut(&group).expect("listed from peers");
            let mut rd = peer.node.ready();
            peer.send(transport.as_ref(), rd.take_messages());
            let mut restored = false;
            if !rd.snapshot().is_empty() {
                if let Err(e) = peer.node.mut_store().install_snapshot(&mut wb, rd.snapshot()) {
                    panic!("group {group}: installing snapshot failed: {e}");
                }
                restored = true;
                needs_sync = true;
            }
            needs_sync |= !rd.entries().is_empty();
            peer.node.mut_store().append(&mut wb, rd.entries());
            if let Some(hs) = rd.hs() {
                needs_sync |= peer.node.store().changes_term_or_vote(hs);
                peer.node.mut_store().set_hard_state(&mut wb, hs.clone());
            }
            readies.push((group, rd, restored));
        }

        // One fsync for all of them.
        if !wb.is_empty() {
            let mut opts = WriteOptions::default();
            opts.set_sync(needs_sync);
            let started = Instant::now();
            if let Err(e) = db.write_opt(wb, &opts) {
                panic!("persisting raft state failed: {e}");
            }
            crate::telemetry::log_written(needs_sync, started);
        }

        // Phase 2: what may only happen after persistence.
        for (group, mut rd, restored) in readies {
            let peer = self.peers.get_mut(&group).expect("listed from peers");
            if restored {
                for (id, address) in peer.node.store().peers() {
                    addresses.set(*id, address.clone());
                }
                peer.sm.restored(&peer.kv);
                tracing::info!(group_id = group, applied = peer.node.store().applied(), "installed snapshot");
            }
            if let Some(ss) = rd.ss() {
                peer.on_soft_state(ss.raft_state, ss.leader_id, &addresses);
            }
            peer.on_read_states(rd.take_read_states());
            peer.send(transport.as_ref(), rd.take_persisted_messages());
            peer.apply(&db, &addresses, rd.take_committed_entries());
            let mut light = peer.node.advance(rd);
            if let Some(commit) = light.commit_index() {
                let mut wb = WriteBatch::default();
                peer.node.mut_store().set_commit(&mut wb, commit);
                if let Err(e) = db.write(wb) {
                    panic!("group {group}: persisting commit index failed: {e}");
                }
            }
            peer.send(transport.as_ref(), light.take_messages());
            peer.apply(&db, &addresses, light.take_committed_entries());
            peer.node.advance_apply();
            peer.maybe_compact(&db, self.config.log_retain_entries);
            Self::publish(&self.shared, group, peer);
            peer.answer();
        }
    }
}

/// A snapshot message naming a file (see `snapfile`) is only stepped into
/// Raft when that file is there whole: installing it must not fail.
fn snapshot_file_present(msg: &Message) -> bool {
    if msg.msg_type != MessageType::MsgSnapshot as i32 {
        return true;
    }
    let Some(descriptor) = msg.snapshot.as_ref().and_then(|s| Descriptor::decode(&s.data)) else { return true };
    std::fs::metadata(&descriptor.path).is_ok_and(|m| m.len() == descriptor.size)
}
