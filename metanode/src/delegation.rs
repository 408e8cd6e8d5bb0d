//! Delegations, the leader's side: which clients hold grants on which inodes
//! of the partitions led here, and the recalls that void them.
//!
//! A client listening on a recall stream (see `DelegationUp`) may answer
//! reads of a granted inode from what it was given, so a warm open costs no
//! round trip. In exchange, a change to a granted inode is acknowledged only
//! once every other holder has dropped it (acknowledged the recall) or its
//! lease has lapsed, which keeps close-to-open exact: a close that returned
//! on one mount is seen by any open after it on another.
//!
//! Rules that keep it safe, each against one way a client could keep a stale
//! grant:
//! - a grant is registered before the state it covers is read, and a recall
//!   runs after the change applied: a grant either is recalled or read the
//!   change;
//! - a client trusts a partition's grants for [`DELEGATION_LEASE`] from the
//!   send of its last confirmed renewal, and renewals are refused while a
//!   recall to it is unanswered: a client that stopped hearing recalls stops
//!   trusting by the time the recall gives up waiting;
//! - the table lives in the leader's memory only, so a later leader that
//!   finds a grant term recorded before its own (`GrantTermOp`) waits a lease
//!   before acknowledging changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_common::types::DELEGATION_LEASE;
use strata_proto::meta as pb;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// Clock-rate slack added to every lease the leader waits out.
const LEASE_MARGIN: Duration = Duration::from_millis(200);

/// Holder entries one partition keeps at most; past it, reads are answered
/// without a grant (clients then ask every time).
const MAX_HOLDINGS: usize = 1 << 20;

pub type DownSender = mpsc::UnboundedSender<Result<pb::DelegationDown, Status>>;

/// A client's recall stream to this node.
struct Link {
    stream: u64,
    sender: DownSender,
    next_seq: u64,
    waiting: HashMap<u64, oneshot::Sender<()>>,
}

/// The grants of one partition in its current term.
struct PartitionGrants {
    term: u64,
    /// When this node first saw itself leading in `term`.
    since: Instant,
    /// The term is recorded in the partition (`GrantTermOp`).
    term_recorded: bool,
    next_id: u64,
    /// Per inode: (client, grant id), a few clients each.
    holders: HashMap<u64, Vec<(u64, u64)>>,
    holdings: usize,
    /// Per client: receipt of its last grant or confirmed renewal.
    renewed: HashMap<u64, Instant>,
    /// Per client: recalls it has not answered yet.
    pending: HashMap<u64, usize>,
}

impl PartitionGrants {
    fn new(term: u64) -> Self {
        PartitionGrants {
            term,
            since: Instant::now(),
            term_recorded: false,
            next_id: 0,
            holders: HashMap::new(),
            holdings: 0,
            renewed: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    fn hold(&mut self, ino: u64, client: u64, id: u64) {
        let clients = self.holders.entry(ino).or_default();
        match clients.iter_mut().find(|(c, _)| *c == client) {
            Some(held) => held.1 = id,
            None => {
                clients.push((client, id));
                self.holdings += 1;
            }
        }
    }

    /// Forgets the holdings of clients whose lease has lapsed.
    fn forget_lapsed(&mut self) {
        let now = Instant::now();
        let lapsed: Vec<u64> = self
            .renewed
            .iter()
            .filter(|(client, at)| now > **at + DELEGATION_LEASE + LEASE_MARGIN && !self.pending.contains_key(client))
            .map(|(client, _)| *client)
            .collect();
        if lapsed.is_empty() {
            return;
        }
        for client in &lapsed {
            self.renewed.remove(client);
        }
        let mut holdings = 0;
        self.holders.retain(|_, clients| {
            clients.retain(|(client, _)| !lapsed.contains(client));
            holdings += clients.len();
            !clients.is_empty()
        });
        self.holdings = holdings;
    }
}

#[derive(Default)]
struct State {
    links: HashMap<u64, Link>,
    partitions: HashMap<u64, PartitionGrants>,
}

impl State {
    /// The partition's grants in `term`, started afresh when the term moved on.
    fn partition(&mut self, partition_id: u64, term: u64) -> &mut PartitionGrants {
        let grants = self.partitions.entry(partition_id).or_insert_with(|| PartitionGrants::new(term));
        if grants.term != term {
            *grants = PartitionGrants::new(term);
        }
        grants
    }
}

/// One client's part of a recall: acknowledged, or waited out.
pub struct RecallWait {
    acked: Option<oneshot::Receiver<()>>,
    deadline: Instant,
    partition_id: u64,
    client: u64,
}

#[derive(Default)]
pub struct Delegations {
    state: Mutex<State>,
    next_stream: AtomicU64,
}

impl Delegations {
    /// A client's recall stream opened; one replacing an earlier stream of the
    /// same client means the client saw that one break (and dropped every
    /// grant it had from here), so recalls still waiting on it are answered.
    pub fn attach(&self, client: u64) -> (u64, mpsc::UnboundedReceiver<Result<pb::DelegationDown, Status>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed) + 1;
        let link = Link { stream, sender, next_seq: 0, waiting: HashMap::new() };
        let replaced = self.state.lock().unwrap().links.insert(client, link);
        if let Some(old) = replaced {
            old.waiting.into_values().for_each(|done| {
                let _ = done.send(());
            });
        }
        (stream, receiver)
    }

    /// The stream ended. Recalls waiting on it wait out the client's lease.
    pub fn detach(&self, client: u64, stream: u64) {
        let mut state = self.state.lock().unwrap();
        if state.links.get(&client).is_some_and(|l| l.stream == stream) {
            state.links.remove(&client);
        }
    }

    pub fn ack(&self, client: u64, seq: u64) {
        let mut state = self.state.lock().unwrap();
        if let Some(done) = state.links.get_mut(&client).and_then(|l| l.waiting.remove(&seq)) {
            let _ = done.send(());
        }
    }

    /// Whether the first grant of `term` must first record the term in the partition.
    pub fn needs_term_record(&self, partition_id: u64, term: u64) -> bool {
        !self.state.lock().unwrap().partition(partition_id, term).term_recorded
    }

    pub fn term_recorded(&self, partition_id: u64, term: u64) {
        self.state.lock().unwrap().partition(partition_id, term).term_recorded = true;
    }

    /// Registers a grant on `inos` for `client`, before the caller reads what
    /// it covers. None when the client has no recall stream here.
    pub fn grant(&self, partition_id: u64, term: u64, client: u64, inos: &[u64]) -> Option<pb::Grant> {
        let mut state = self.state.lock().unwrap();
        if client == 0 || !state.links.contains_key(&client) {
            return None;
        }
        let grants = state.partition(partition_id, term);
        if grants.holdings >= MAX_HOLDINGS {
            grants.forget_lapsed();
            if grants.holdings >= MAX_HOLDINGS {
                return None;
            }
        }
        grants.next_id += 1;
        let id = grants.next_id;
        for ino in inos {
            grants.hold(*ino, client, id);
        }
        grants.renewed.insert(client, Instant::now());
        Some(pb::Grant { term, id })
    }

    /// Adds `ino` to a grant just given (the inode a lookup found).
    pub fn grant_more(&self, partition_id: u64, client: u64, grant: &pb::Grant, ino: u64) {
        let mut state = self.state.lock().unwrap();
        state.partition(partition_id, grant.term).hold(ino, client, grant.id);
    }

    /// Which of `held` this node still leads in the same term (`leading`
    /// says so) without a recall to `client` unanswered.
    pub fn renew(&self, client: u64, held: &[pb::PartitionTerm], leading: impl Fn(u64, u64) -> bool) -> Vec<u64> {
        let mut state = self.state.lock().unwrap();
        let mut confirmed = Vec::new();
        for pt in held {
            let Some(grants) = state.partitions.get_mut(&pt.partition_id) else { continue };
            if grants.term != pt.term || grants.pending.contains_key(&client) || !leading(pt.partition_id, pt.term) {
                continue;
            }
            grants.renewed.insert(client, Instant::now());
            confirmed.push(pt.partition_id);
        }
        confirmed
    }

    /// When a leader of `term` may acknowledge a change: at once, unless an
    /// earlier term granted delegations this node cannot know of.
    pub fn settled_at(&self, partition_id: u64, term: u64, grant_term: Option<u64>) -> Option<Instant> {
        let earlier = grant_term.is_some_and(|g| g < term);
        if !earlier {
            return None;
        }
        let since = self.state.lock().unwrap().partition(partition_id, term).since;
        Some(since + DELEGATION_LEASE + LEASE_MARGIN).filter(|at| *at > Instant::now())
    }

    /// Voids every grant on `inos`: the writer's by the returned bound (its
    /// reply carries it), every other holder's by a recall to wait for.
    pub fn recall(&self, partition_id: u64, inos: &[u64], writer: u64) -> (Option<pb::Grant>, Vec<RecallWait>) {
        let mut state = self.state.lock().unwrap();
        let State { links, partitions } = &mut *state;
        let Some(grants) = partitions.get_mut(&partition_id) else { return (None, Vec::new()) };
        let bound = pb::Grant { term: grants.term, id: grants.next_id };
        let mut by_client: HashMap<u64, Vec<u64>> = HashMap::new();
        for ino in inos {
            let Some(clients) = grants.holders.remove(ino) else { continue };
            grants.holdings -= clients.len();
            for (client, _) in clients.into_iter().filter(|(c, _)| *c != writer) {
                by_client.entry(client).or_default().push(*ino);
            }
        }
        let mut waits = Vec::new();
        for (client, inos) in by_client {
            let renewed = grants.renewed.get(&client).copied().unwrap_or_else(Instant::now);
            let deadline = renewed + DELEGATION_LEASE + LEASE_MARGIN;
            let acked = links.get_mut(&client).and_then(|link| {
                link.next_seq += 1;
                let seq = link.next_seq;
                let down =
                    pb::DelegationDown { seq, partition_id, term: grants.term, upto: bound.id, inos: inos.clone() };
                link.sender.send(Ok(down)).ok()?;
                let (done, acked) = oneshot::channel();
                link.waiting.insert(seq, done);
                Some(acked)
            });
            *grants.pending.entry(client).or_default() += 1;
            waits.push(RecallWait { acked, deadline, partition_id, client });
        }
        (Some(bound), waits)
    }

    /// Waits for one client's recall: its acknowledgement, or its lease.
    pub async fn wait(&self, wait: RecallWait) {
        let lapsed = tokio::time::sleep_until(wait.deadline.into());
        tokio::pin!(lapsed);
        match wait.acked {
            Some(acked) => {
                tokio::select! {
                    answered = acked => {
                        if answered.is_err() {
                            // The stream went away unanswered: only the lease ends the grant.
                            (&mut lapsed).await;
                        }
                    }
                    _ = &mut lapsed => {
                        tracing::warn!(partition_id = wait.partition_id, client = wait.client, "a delegation recall went unanswered; waited out the lease");
                    }
                }
            }
            None => lapsed.await,
        }
        let mut state = self.state.lock().unwrap();
        if let Some(grants) = state.partitions.get_mut(&wait.partition_id)
            && let Some(count) = grants.pending.get_mut(&wait.client)
        {
            *count -= 1;
            if *count == 0 {
                grants.pending.remove(&wait.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(rx: &mut mpsc::UnboundedReceiver<Result<pb::DelegationDown, Status>>) -> pb::DelegationDown {
        rx.try_recv().expect("a recall was sent").expect("not an error")
    }

    #[tokio::test]
    async fn a_change_recalls_other_holders_and_bounds_the_writers_grants() {
        let table = Delegations::default();
        let (_, mut rx_a) = table.attach(1);
        let (_, _rx_b) = table.attach(2);
        let a = table.grant(7, 3, 1, &[10, 11]).unwrap();
        let b = table.grant(7, 3, 2, &[10]).unwrap();
        assert_eq!((a.term, a.id, b.id), (3, 1, 2));
        assert_eq!(table.grant(7, 3, 9, &[10]), None, "no stream, no grant");

        let (bound, waits) = table.recall(7, &[10], 2);
        assert_eq!(bound, Some(pb::Grant { term: 3, id: 2 }));
        assert_eq!(waits.len(), 1, "the writer itself is not waited for");
        let recall = down(&mut rx_a);
        assert_eq!((recall.partition_id, recall.term, recall.upto, recall.inos.clone()), (7, 3, 2, vec![10]));
        let held = [pb::PartitionTerm { partition_id: 7, term: 3 }];
        assert!(table.renew(1, &held, |_, _| true).is_empty(), "no renewal while a recall is unanswered");
        table.ack(1, recall.seq);
        for wait in waits {
            table.wait(wait).await;
        }
        assert_eq!(table.renew(1, &held, |_, _| true), vec![7]);
        assert!(table.renew(1, &held, |_, _| false).is_empty(), "not leading: not confirmed");

        let (_, waits) = table.recall(7, &[10], 0);
        assert!(waits.is_empty(), "recalled grants are gone");
        let (_, waits) = table.recall(7, &[11], 0);
        assert_eq!(waits.len(), 1, "the other inode of the first grant is still held");
    }

    #[tokio::test]
    async fn an_unanswered_recall_waits_out_the_lease() {
        let table = Delegations::default();
        let (stream, _rx) = table.attach(1);
        table.grant(7, 3, 1, &[10]).unwrap();
        table.detach(1, stream);
        let (_, waits) = table.recall(7, &[10], 0);
        let started = tokio::time::Instant::now();
        for wait in waits {
            table.wait(wait).await;
        }
        assert!(started.elapsed() >= DELEGATION_LEASE, "waited {:?}", started.elapsed());
    }

    #[test]
    fn a_later_leader_waits_only_for_grants_of_an_earlier_term() {
        let table = Delegations::default();
        assert_eq!(table.settled_at(7, 5, None), None, "no grants ever: no wait");
        assert_eq!(table.settled_at(7, 5, Some(5)), None, "its own term's grants are known");
        let at = table.settled_at(7, 5, Some(4)).expect("an earlier term granted");
        assert!(at >= Instant::now() + DELEGATION_LEASE - Duration::from_millis(100));
    }
}
