//! One Raft group hosted on this node: its raft-rs node, its state machine,
//! and the proposals and reads waiting on it. Only the engine thread touches it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost_raft::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use rocksdb::{DB, WriteBatch};
use strata_common::{Result, StrataError};
use tokio::sync::oneshot;

use crate::StateMachine;
use crate::engine::{GroupStatus, Role};
use crate::kv::{ApplyBatch, GroupKv};
use crate::storage::GroupStorage;
use crate::transport::{AddressBook, Transport};

pub type ProposalReply = oneshot::Sender<Result<Vec<u8>>>;
pub type ReadReply = oneshot::Sender<Result<()>>;

pub struct Peer {
    pub group: u64,
    pub node: RawNode<GroupStorage>,
    pub sm: Box<dyn StateMachine>,
    pub kv: GroupKv,
    /// Proposals made on this node, by proposal id (the entry's context),
    /// with when they were proposed.
    pub proposals: HashMap<u64, (ProposalReply, Instant)>,
    /// ReadIndex requests not yet given a read index, by request id, with
    /// when they were asked.
    pub reads_waiting_index: HashMap<u64, (ReadReply, Instant)>,
    /// ReadIndex requests waiting for the applied index to reach their index.
    pub reads_waiting_apply: Vec<(u64, ReadReply)>,
    /// Answers to proposals applied this round, sent once the round's status is published.
    answers: Vec<(ProposalReply, Result<Vec<u8>>)>,
    role: StateRole,
    leader_id: u64,
    /// While leader: until when no other leader can have been elected (see
    /// [`Peer::has_lease`]), and in which term that was established.
    lease: Option<(Instant, u64)>,
    lease_span: Duration,
    /// Hibernating: not ticked until something wakes it (see `quiesce`).
    pub quiet: bool,
    /// Ticks in a row this leader was idle (see `Peer::tick_idle`).
    pub idle_ticks: usize,
}

pub fn id_bytes(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

fn id_from_bytes(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

impl Peer {
    /// `lease_span`: how long after a message a quorum answered no other
    /// leader can be elected (zero: no leases, every read is confirmed).
    pub fn new(
        group: u64,
        node: RawNode<GroupStorage>,
        sm: Box<dyn StateMachine>,
        kv: GroupKv,
        lease_span: Duration,
    ) -> Peer {
        Peer {
            group,
            node,
            sm,
            kv,
            proposals: HashMap::new(),
            reads_waiting_index: HashMap::new(),
            reads_waiting_apply: Vec::new(),
            answers: Vec::new(),
            role: StateRole::Follower,
            leader_id: 0,
            lease: None,
            lease_span,
            quiet: false,
            idle_ticks: 0,
        }
    }

    /// The leader lease. A quorum answered (acknowledged an append or a
    /// ReadIndex heartbeat of) a message this leader sent at `sent`. Each of
    /// those members refuses votes (raft-rs with check_quorum: "in lease")
    /// until it has ticked `election_ticks` times without hearing from this
    /// leader, and any new leader needs one of their votes (or to be one of
    /// them, campaigning only past its own election timeout). Ticks are at
    /// least `tick_ms` apart (the engine skips missed ones), so no other
    /// leader exists before `sent + (election_ticks - 1) * tick_ms`; the lease
    /// ends a tick before that. Within it, reads need no ReadIndex round.
    fn extend_lease(&mut self, sent: Instant) {
        if self.lease_span.is_zero() || !self.is_leader() {
            return;
        }
        let term = self.node.raft.term;
        let until = sent + self.lease_span;
        match &mut self.lease {
            Some((current, lease_term)) if *lease_term == term => *current = (*current).max(until),
            lease => *lease = Some((until, term)),
        }
    }

    /// Whether this leader holds a lease at `now`: no other leader exists, so
    /// its committed index covers every write acknowledged anywhere.
    pub fn has_lease(&self, now: Instant) -> bool {
        self.is_leader() && self.lease.is_some_and(|(until, term)| term == self.node.raft.term && now < until)
    }

    /// Until when reads may be served from this node's applied state with no
    /// round through the engine thread, if they may at all: this leader
    /// holds a lease, has committed an entry of its own term (so every entry
    /// an earlier leader acknowledged is committed here) and has applied all
    /// it committed. After that, every write is acknowledged only once
    /// applied here, so the applied state covers every acknowledged write.
    pub fn read_lease(&self, now: Instant) -> Option<Instant> {
        if !self.has_lease(now) || !self.node.raft.commit_to_current_term() {
            return None;
        }
        if self.node.store().applied() < self.node.raft.raft_log.committed {
            return None;
        }
        self.lease.map(|(until, _)| until)
    }

    /// A read under the lease: answered once everything committed now is applied.
    pub fn read_under_lease(&mut self, reply: ReadReply) {
        let committed = self.node.raft.raft_log.committed;
        self.reads_waiting_apply.push((committed, reply));
        self.finish_reads();
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> u64 {
        self.node.raft.leader_id
    }

    /// Hands outgoing messages to the transport. A snapshot counts as
    /// delivered once handed over; if it is lost, the follower's rejection
    /// makes the leader send another.
    pub fn send(&mut self, transport: &dyn Transport, messages: Vec<Message>) {
        for msg in messages {
            let to = msg.to;
            let is_snapshot = msg.msg_type == MessageType::MsgSnapshot as i32;
            transport.send(to, self.group, msg);
            if is_snapshot {
                self.node.report_snapshot(to, SnapshotStatus::Finish);
                metrics::counter!(crate::telemetry::SNAPSHOTS_SENT).increment(1);
            }
        }
    }

    /// Notes a change of leader or role; a leader that steps down fails what
    /// was waiting on it, since it can no longer tell whether it will apply.
    pub fn on_soft_state(&mut self, role: StateRole, leader_id: u64, addresses: &AddressBook) {
        let was_leader = self.role == StateRole::Leader;
        if role != self.role || leader_id != self.leader_id {
            metrics::counter!(crate::telemetry::ROLE_CHANGES).increment(1);
            tracing::info!(
                group_id = self.group,
                node_id = self.node.raft.id,
                leader_id,
                term = self.node.raft.term,
                role = ?role,
                "raft group role changed"
            );
        }
        self.role = role;
        self.leader_id = leader_id;
        if was_leader && role != StateRole::Leader {
            self.lease = None;
            let hint = addresses.get(leader_id);
            for (_, (reply, _)) in self.proposals.drain() {
                let _ = reply.send(Err(StrataError::unavailable(
                    "leadership moved before the proposal applied; its outcome is unknown",
                )));
            }
            let reads = self.reads_waiting_index.drain().map(|(_, (r, _))| r);
            for reply in reads.chain(self.reads_waiting_apply.drain(..).map(|(_, r)| r)) {
                let _ = reply.send(Err(StrataError::not_leader(hint.clone())));
            }
        }
    }

    /// Fails every proposal and read waiting on this group with `err`.
    pub fn fail_pending(&mut self, err: StrataError) {
        for (_, (reply, _)) in self.proposals.drain() {
            let _ = reply.send(Err(err.clone()));
        }
        let reads = self.reads_waiting_index.drain().map(|(_, (r, _))| r);
        for reply in reads.chain(self.reads_waiting_apply.drain(..).map(|(_, r)| r)) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    pub fn on_read_states(&mut self, states: Vec<raft::ReadState>) {
        for state in states {
            let Some(id) = id_from_bytes(&state.request_ctx) else {
                continue;
            };
            if let Some((reply, asked)) = self.reads_waiting_index.remove(&id) {
                // Confirmed by a quorum's answers to a heartbeat sent after `asked`.
                self.extend_lease(asked);
                self.reads_waiting_apply.push((state.index, reply));
            }
        }
    }

    /// Answers the proposals applied so far, and the reads they unblock.
    pub fn answer(&mut self) {
        for (reply, result) in self.answers.drain(..) {
            let _ = reply.send(result);
        }
        self.finish_reads();
    }

    fn finish_reads(&mut self) {
        let applied = self.node.store().applied();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.reads_waiting_apply.drain(..).partition(|(index, _)| *index <= applied);
        self.reads_waiting_apply = waiting;
        for (_, reply) in ready {
            let _ = reply.send(Ok(()));
        }
    }

    /// Applies committed entries in order, each in its own write batch with
    /// the new applied index, and answers the proposals made here.
    pub fn apply(&mut self, db: &Arc<DB>, addresses: &AddressBook, entries: Vec<Entry>) {
        for entry in entries {
            if entry.index <= self.node.store().applied() {
                continue; // already covered by an installed snapshot
            }
            let mut wb = WriteBatch::default();
            let result = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => None,
                EntryType::EntryNormal => {
                    let mut batch = ApplyBatch::new(&self.kv);
                    let out = self.sm.apply(&mut batch, entry.index, &entry.data);
                    wb = batch.batch;
                    Some(Ok(out))
                }
                EntryType::EntryConfChange => Some(self.apply_conf_change(&mut wb, addresses, &entry)),
                EntryType::EntryConfChangeV2 => {
                    Some(Err(StrataError::internal("joint-consensus changes are not used by strata")))
                }
            };
            self.node.mut_store().stage_applied(&mut wb, entry.index);
            if let Err(e) = db.write(wb) {
                panic!("group {}: writing applied entry {} failed: {e}", self.group, entry.index);
            }
            let waiting = id_from_bytes(&entry.context).and_then(|id| self.proposals.remove(&id));
            if let Some((_, proposed)) = &waiting
                && entry.term == self.node.raft.term
            {
                // Committed: a quorum appended it, from a message sent after `proposed`.
                self.extend_lease(*proposed);
            }
            if let Some((_, proposed)) = &waiting {
                metrics::histogram!(crate::telemetry::PROPOSAL_SECONDS).record(proposed.elapsed().as_secs_f64());
            }
            if let (Some(result), Some((reply, _))) = (result, waiting) {
                self.answers.push((reply, result));
            }
        }
    }

    fn apply_conf_change(&mut self, wb: &mut WriteBatch, addresses: &AddressBook, entry: &Entry) -> Result<Vec<u8>> {
        let cc = ConfChange::decode(entry.data.as_slice())
            .map_err(|e| StrataError::internal(format!("decoding conf change: {e}")))?;
        let conf =
            self.node.apply_conf_change(&cc).map_err(|e| StrataError::invalid(format!("applying conf change: {e}")))?;
        let store = self.node.mut_store();
        store.set_conf_state(wb, conf);
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let address = String::from_utf8_lossy(&cc.context).into_owned();
                addresses.set(cc.node_id, address.clone());
                store.set_peer(wb, cc.node_id, Some(address));
            }
            ConfChangeType::RemoveNode => store.set_peer(wb, cc.node_id, None),
        }
        tracing::info!(group_id = self.group, node_id = cc.node_id, change = ?cc.get_change_type(), "applied membership change");
        Ok(Vec::new())
    }

    /// Truncates the log once it holds more than twice `retain` applied entries.
    pub fn maybe_compact(&mut self, db: &Arc<DB>, retain: u64) {
        let store = self.node.store();
        let applied = store.applied();
        if applied.saturating_sub(store.truncated_index()) < 2 * retain.max(1) {
            return;
        }
        let mut wb = WriteBatch::default();
        let target = applied - retain;
        if let Err(e) = self.node.mut_store().compact(&mut wb, target) {
            tracing::warn!(group_id = self.group, error = %e, "log compaction skipped");
            return;
        }
        if let Err(e) = db.write(wb) {
            panic!("group {}: writing log truncation failed: {e}", self.group);
        }
    }

    pub fn status(&self) -> GroupStatus {
        let raft = &self.node.raft;
        let store = self.node.store();
        let conf = store.conf_state();
        let sorted = |ids: &[u64]| {
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            ids
        };
        GroupStatus {
            group_id: self.group,
            node_id: raft.id,
            leader_id: raft.leader_id,
            term: raft.term,
            role: Role::from(raft.state),
            commit: raft.raft_log.committed,
            applied: store.applied(),
            first_index: store.truncated_index() + 1,
            last_index: store.last_index_value(),
            voters: sorted(&conf.voters),
            learners: sorted(&conf.learners),
            quiet: self.quiet,
            proposals_in_flight: self.proposals.len(),
        }
    }
}
