//! Hibernation of idle groups (TiKV's hibernate regions, CockroachDB's
//! quiescence). A node may host thousands of groups that see no requests for
//! hours (empty buckets, idle PVCs); ticking and heartbeating each of them
//! would cost a core. So a leader whose followers hold its whole log, and
//! which nothing has been asked of for an election timeout, sends them one
//! last heartbeat marked [`QUIESCE`] and stops ticking; a follower that
//! steps it and is then up to date stops ticking too.
//!
//! What wakes a quiet group: any request to it on this node (proposal,
//! read, membership change, campaign), any Raft message for it other than a
//! heartbeat response, a [`WAKE`] from one of its members, and, for a
//! follower, its leader's node falling silent for an election timeout. To
//! make that last one observable, every node sends an [`ALIVE`] message per
//! heartbeat interval, on the node-level group [`NODE_GROUP`], to each node
//! following a group it leads while quiet: one message per node pair, not
//! one per group. A follower woken for any reason but its leader's word
//! sends that leader a [`WAKE`], so the whole group resumes together.
//!
//! Raft's safety does not depend on ticks; only its liveness does, and that
//! is what the wake-ups restore. Leader leases stay sound: a quiet follower
//! does not tick, so it refuses votes longer than an awake one would, and a
//! quiet leader's lease simply runs out (the next read confirms leadership
//! with a round of heartbeats, which wakes the group).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use raft::StateRole;
use raft::eraftpb::{Message, MessageType};

use crate::peer::Peer;

/// The group id of node-level messages; no Raft group has it.
pub(crate) const NODE_GROUP: u64 = 0;

/// Context of a leader's last heartbeat before it stops ticking.
const QUIESCE: &[u8] = b"strata:quiesce";
/// Context of a member's request that the group resume ticking.
const WAKE: &[u8] = b"strata:wake";
/// Context of a node's "still here" to the followers of its quiet groups.
const ALIVE: &[u8] = b"strata:alive";

/// What an incoming message means to hibernation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// A leader's last heartbeat: step it, then go quiet if up to date.
    Quiesce,
    /// Resume ticking; not a Raft message.
    Wake,
    /// The sending node is alive; not a Raft message.
    Alive,
    /// An answer to a heartbeat: stepped, but wakes nobody (answers to a
    /// quiesce heartbeat arrive after the leader went quiet).
    HeartbeatResponse,
    /// Any other Raft message: the group is busy again.
    Other,
}

pub(crate) fn signal(msg: &Message) -> Signal {
    match (msg.get_msg_type(), msg.context.as_slice()) {
        (MessageType::MsgHeartbeat, QUIESCE) => Signal::Quiesce,
        (MessageType::MsgHeartbeat, WAKE) => Signal::Wake,
        (MessageType::MsgHeartbeat, ALIVE) => Signal::Alive,
        (MessageType::MsgHeartbeatResponse, _) => Signal::HeartbeatResponse,
        _ => Signal::Other,
    }
}

fn control(kind: &[u8], from: u64, to: u64, term: u64, commit: u64) -> Message {
    Message {
        msg_type: MessageType::MsgHeartbeat as i32,
        from,
        to,
        term,
        commit,
        context: kind.to_vec(),
        ..Default::default()
    }
}

/// A node-level "still here" from `from` to `to`.
pub(crate) fn alive(from: u64, to: u64) -> Message {
    control(ALIVE, from, to, 0, 0)
}

/// When each other node was last heard from, by any message.
#[derive(Default)]
pub(crate) struct Liveness {
    heard: HashMap<u64, Instant>,
}

impl Liveness {
    pub(crate) fn heard(&mut self, node: u64, now: Instant) {
        self.heard.insert(node, now);
    }

    /// Whether `node` has said nothing for longer than `timeout` (or ever).
    pub(crate) fn silent(&self, node: u64, now: Instant, timeout: Duration) -> bool {
        self.heard.get(&node).is_none_or(|at| now.saturating_duration_since(*at) > timeout)
    }
}

impl Peer {
    /// Whether this peer leads a group with nothing in flight: everything
    /// in its log committed (in its own term) and applied, every member
    /// holding all of it, and no proposal, read or leader transfer waiting.
    pub(crate) fn is_idle_leader(&self) -> bool {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || raft.lead_transferee.is_some() || !raft.commit_to_current_term() {
            return false;
        }
        if !self.proposals.is_empty() || !self.reads_waiting_index.is_empty() || !self.reads_waiting_apply.is_empty() {
            return false;
        }
        let last = raft.raft_log.last_index();
        if raft.raft_log.committed != last || self.node.store().applied() != last || raft.pending_conf_index > last {
            return false;
        }
        raft.prs().iter().all(|(id, progress)| *id == raft.id || progress.matched == last)
    }

    /// Counts a tick of an awake leader; after `after` idle ticks in a row it
    /// goes quiet and returns the last heartbeats its followers must get.
    pub(crate) fn tick_idle(&mut self, after: usize) -> Option<Vec<Message>> {
        if !self.is_idle_leader() {
            self.idle_ticks = 0;
            return None;
        }
        self.idle_ticks += 1;
        if self.idle_ticks < after {
            return None;
        }
        self.quiet = true;
        let raft = &self.node.raft;
        let committed = raft.raft_log.committed;
        let heartbeats = raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != raft.id)
            .map(|(id, progress)| control(QUIESCE, raft.id, *id, raft.term, progress.matched.min(committed)))
            .collect();
        Some(heartbeats)
    }

    /// After stepping its leader's quiesce heartbeat: a follower holding
    /// the whole log, committed, goes quiet too.
    pub(crate) fn follow_into_quiet(&mut self, heartbeat: &Message) {
        let raft = &self.node.raft;
        let up_to_date = raft.raft_log.committed == raft.raft_log.last_index();
        if raft.state == StateRole::Follower
            && raft.leader_id == heartbeat.from
            && raft.term == heartbeat.term
            && up_to_date
        {
            self.quiet = true;
            self.idle_ticks = 0;
        }
    }

    /// Resumes ticking. Returns the message that wakes the leader too, when
    /// this is a follower of a known leader and `tell_leader` says the
    /// leader does not know yet.
    pub(crate) fn wake(&mut self, tell_leader: bool) -> Option<(u64, Message)> {
        self.idle_ticks = 0;
        if !std::mem::take(&mut self.quiet) {
            return None;
        }
        let raft = &self.node.raft;
        let leader = raft.leader_id;
        (tell_leader && leader != 0 && leader != raft.id)
            .then(|| (leader, control(WAKE, raft.id, leader, raft.term, 0)))
    }

    /// The other members of this group (voters and learners).
    pub(crate) fn other_members(&self, into: &mut BTreeSet<u64>) {
        let raft = &self.node.raft;
        into.extend(raft.prs().iter().map(|(id, _)| *id).filter(|id| *id != raft.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_told_apart_by_type_and_context() {
        assert_eq!(signal(&control(QUIESCE, 1, 2, 3, 4)), Signal::Quiesce);
        assert_eq!(signal(&control(WAKE, 1, 2, 3, 0)), Signal::Wake);
        assert_eq!(signal(&alive(1, 2)), Signal::Alive);
        let read_index_heartbeat = Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            context: 7u64.to_be_bytes().to_vec(),
            ..Default::default()
        };
        assert_eq!(signal(&read_index_heartbeat), Signal::Other);
        let plain = Message { msg_type: MessageType::MsgHeartbeat as i32, ..Default::default() };
        assert_eq!(signal(&plain), Signal::Other);
        let answer = Message { msg_type: MessageType::MsgHeartbeatResponse as i32, ..Default::default() };
        assert_eq!(signal(&answer), Signal::HeartbeatResponse);
        let append =
            Message { msg_type: MessageType::MsgAppend as i32, context: QUIESCE.to_vec(), ..Default::default() };
        assert_eq!(signal(&append), Signal::Other);
    }

    #[test]
    fn a_node_never_heard_from_or_quiet_too_long_is_silent() {
        let mut liveness = Liveness::default();
        let now = Instant::now();
        let timeout = Duration::from_secs(1);
        assert!(liveness.silent(5, now, timeout));
        liveness.heard(5, now);
        assert!(!liveness.silent(5, now + Duration::from_millis(999), timeout));
        assert!(liveness.silent(5, now + Duration::from_millis(1001), timeout));
    }
}
