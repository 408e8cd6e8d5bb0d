//! Delegations, the client's side: what the metanodes granted this client
//! (attributes, directory entries, a file's first extents), answered from
//! memory until recalled, so a warm open or stat costs no round trip.
//!
//! The rules the metanode's `delegation` module relies on: a grant counts
//! only if every recall stream was up, unbroken, from before the request was
//! sent until the answer came; a recall is acknowledged after what it voids
//! is gone; a partition's grants are trusted for [`DELEGATION_LEASE`] from
//! the send of the last renewal its leader confirmed, and dropped whole when
//! one is refused. A recall that arrives before the grant it voids (they
//! travel on different streams) is remembered, so the grant is refused.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_common::types::DELEGATION_LEASE;
use strata_proto::meta::meta_client::MetaClient as GrpcClient;
use strata_proto::meta::{self as pb, delegation_up::Msg};
use tonic::transport::Channel;

use crate::types::{Attr, Extent};

/// Inodes cached at most; past it the cache starts again empty.
const MAX_CACHED: usize = 1 << 18;
/// Time before a broken recall stream is opened again.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// What one grant (or several of the same partition and term) covers.
struct Cached {
    partition: u64,
    term: u64,
    /// The oldest grant id among what is kept: a recall up to it voids all.
    grant: u64,
    attrs: Option<Attr>,
    /// A directory's names, to the inode each names.
    entries: HashMap<Vec<u8>, u64>,
    /// A file's extents: (offset, length, extents) as one GetExtents answered.
    window: Option<(u64, u64, Vec<Extent>)>,
}

impl Cached {
    fn new(partition: u64, grant: &pb::Grant) -> Self {
        Cached { partition, term: grant.term, grant: grant.id, attrs: None, entries: HashMap::new(), window: None }
    }
}

struct Lease {
    term: u64,
    until: Instant,
}

#[derive(Default)]
struct State {
    /// Bumped whenever a recall stream breaks: grants asked for before do not count.
    epoch: u64,
    /// Addresses whose recall stream is not up.
    down: HashSet<String>,
    leases: HashMap<u64, Lease>,
    inodes: HashMap<u64, Cached>,
    /// (partition, ino) → (term, recalled up to, when): recalls seen before their grant.
    voided: HashMap<(u64, u64), (u64, u64, Instant)>,
}

impl State {
    fn drop_partition(&mut self, partition: u64) {
        self.leases.remove(&partition);
        self.inodes.retain(|_, c| c.partition != partition);
    }

    fn valid(&self, cached: &Cached) -> bool {
        self.leases.get(&cached.partition).is_some_and(|l| l.term == cached.term && Instant::now() < l.until)
    }

    /// The entry a grant may add to, or None if the grant does not count.
    fn admit(&mut self, ticket: &Ticket, partition: u64, grant: &pb::Grant, ino: u64) -> Option<&mut Cached> {
        let listening = ticket.granter.as_deref().is_some_and(|a| !self.down.contains(a));
        if ticket.epoch != self.epoch || !listening {
            return None;
        }
        let until = ticket.sent + DELEGATION_LEASE;
        match self.leases.get_mut(&partition) {
            Some(lease) if lease.term > grant.term => return None,
            Some(lease) if lease.term == grant.term => lease.until = lease.until.max(until),
            _ => {
                self.drop_partition(partition);
                self.leases.insert(partition, Lease { term: grant.term, until });
            }
        }
        if let Some((term, upto, _)) = self.voided.get(&(partition, ino))
            && *term == grant.term
            && *upto >= grant.id
        {
            return None;
        }
        if self.inodes.len() >= MAX_CACHED && !self.inodes.contains_key(&ino) {
            self.inodes.clear();
        }
        let cached = self.inodes.entry(ino).or_insert_with(|| Cached::new(partition, grant));
        if cached.partition != partition || cached.term != grant.term {
            *cached = Cached::new(partition, grant);
        }
        cached.grant = cached.grant.min(grant.id);
        Some(cached)
    }
}

/// Taken before a request asking for a grant is sent; a grant counts only
/// if the stream from the node that answered (`granter`) is up and no
/// stream broke since.
pub struct Ticket {
    epoch: u64,
    sent: Instant,
    granter: Option<String>,
}

impl Ticket {
    pub fn answered_by(self, address: Option<String>) -> Ticket {
        Ticket { granter: address, ..self }
    }
}

pub struct Delegations {
    /// This client's id on the recall streams (random, never 0).
    pub client: u64,
    state: Mutex<State>,
    /// Reads answered from grants.
    hits: AtomicU64,
    /// The recall listeners and the renewer, stopped when this is dropped.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Every metanode, with one connection for its stream and renewals.
    nodes: Vec<(String, Channel)>,
}

impl Drop for Delegations {
    fn drop(&mut self) {
        self.tasks.lock().unwrap().iter().for_each(|t| t.abort());
    }
}

impl Delegations {
    /// Starts listening for recalls from every address in `metanodes` and
    /// renewing the grants held, until the returned value is dropped.
    pub fn start(metanodes: Vec<String>) -> Arc<Delegations> {
        let nodes: Vec<(String, Channel)> = metanodes
            .into_iter()
            .filter_map(|address| match Self::channel(&address) {
                Ok(channel) => Some((address, channel)),
                Err(e) => {
                    tracing::warn!(address, error = %e, "not listening for delegation recalls from this address");
                    None
                }
            })
            .collect();
        let delegations = Arc::new(Delegations {
            client: rand::random::<u64>() | 1,
            state: Mutex::new(State { down: nodes.iter().map(|(a, _)| a.clone()).collect(), ..Default::default() }),
            hits: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            nodes: nodes.clone(),
        });
        let mut tasks = Vec::new();
        for (address, channel) in nodes {
            let weak = Arc::downgrade(&delegations);
            let task = tokio::spawn(async move {
                loop {
                    if let Err(e) = Self::listen(&weak, &address, channel.clone()).await {
                        tracing::debug!(address, error = %e, "delegation stream ended");
                    }
                    let Some(delegations) = weak.upgrade() else { return };
                    delegations.stream_broke(&address);
                    drop(delegations);
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
            });
            tasks.push(task.abort_handle());
        }
        let weak = Arc::downgrade(&delegations);
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(DELEGATION_LEASE / 4).await;
                let Some(delegations) = weak.upgrade() else { return };
                delegations.renew().await;
            }
        });
        tasks.push(renewer.abort_handle());
        *delegations.tasks.lock().unwrap() = tasks;
        delegations
    }

    /// A dead or hung metanode ends its stream (and the grants) within seconds.
    fn channel(address: &str) -> strata_common::Result<Channel> {
        Ok(crate::rpc::endpoint(address)?.keep_alive_while_idle(true).connect_lazy())
    }

    /// One recall stream, until it breaks (holding the table only while
    /// acting on a recall, so dropping it ends the stream).
    async fn listen(this: &Weak<Self>, address: &str, channel: Channel) -> anyhow::Result<()> {
        let client = this.upgrade().context("delegations dropped")?.client;
        let mut grpc = GrpcClient::new(channel);
        let (up, up_rx) = tokio::sync::mpsc::unbounded_channel();
        up.send(pb::DelegationUp { msg: Some(Msg::Client(client)) })?;
        let mut downs =
            grpc.delegations(tokio_stream::wrappers::UnboundedReceiverStream::new(up_rx)).await?.into_inner();
        this.upgrade().context("delegations dropped")?.state.lock().unwrap().down.remove(address);
        tracing::debug!(address, client, "delegation stream open");
        while let Some(down) = downs.message().await? {
            this.upgrade().context("delegations dropped")?.void(down.partition_id, down.term, down.upto, &down.inos);
            up.send(pb::DelegationUp { msg: Some(Msg::Ack(down.seq)) })?;
        }
        Ok(())
    }

    /// A stream ended or could not open; one that was up voids every grant
    /// (which node gave which is not kept) and any asked for before.
    fn stream_broke(&self, address: &str) {
        let mut state = self.state.lock().unwrap();
        if state.down.insert(address.to_string()) {
            state.epoch += 1;
            state.leases.clear();
            state.inodes.clear();
        }
    }

    /// Asks every metanode to confirm the partitions held; keeps those one
    /// confirmed for a lease from the send, drops the others.
    async fn renew(&self) {
        let held: Vec<pb::PartitionTerm> = {
            let state = self.state.lock().unwrap();
            state.leases.iter().map(|(p, l)| pb::PartitionTerm { partition_id: *p, term: l.term }).collect()
        };
        if held.is_empty() {
            return;
        }
        let sent = Instant::now();
        let request = pb::RenewGrantsRequest { client: self.client, held: held.clone() };
        let asks = self.nodes.iter().map(|(_, channel)| {
            let request = request.clone();
            async move {
                let mut grpc = GrpcClient::new(channel.clone());
                let call = tokio::time::timeout(DELEGATION_LEASE / 4, grpc.renew_grants(request));
                Some(call.await.ok()?.ok()?.into_inner().confirmed)
            }
        });
        let confirmed: HashSet<u64> = futures::future::join_all(asks).await.into_iter().flatten().flatten().collect();
        let mut state = self.state.lock().unwrap();
        for pt in held {
            if confirmed.contains(&pt.partition_id) {
                if let Some(lease) = state.leases.get_mut(&pt.partition_id).filter(|l| l.term == pt.term) {
                    lease.until = lease.until.max(sent + DELEGATION_LEASE);
                }
            } else if state.leases.get(&pt.partition_id).is_some_and(|l| l.term == pt.term) {
                state.drop_partition(pt.partition_id);
            }
        }
    }

    /// Taken before sending a request that asks for a grant.
    pub fn ticket(&self) -> Ticket {
        Ticket { epoch: self.state.lock().unwrap().epoch, sent: Instant::now(), granter: None }
    }

    /// Grants of `partition` in `term` up to `upto` no longer cover `inos`.
    pub fn void(&self, partition: u64, term: u64, upto: u64, inos: &[u64]) {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        for ino in inos {
            if state.inodes.get(ino).is_some_and(|c| c.partition == partition && (c.term != term || c.grant <= upto)) {
                state.inodes.remove(ino);
            }
            let seen = state.voided.entry((partition, *ino)).or_insert((term, upto, now));
            if seen.0 < term || (seen.0 == term && seen.1 < upto) {
                *seen = (term, upto, now);
            }
        }
        if state.voided.len() > 4096 {
            // A grant answered more than a lease after its send is not trusted anyway.
            state.voided.retain(|_, (_, _, at)| now.duration_since(*at) < 2 * DELEGATION_LEASE);
        }
    }

    /// This client's own change to `partition` answered: what it touched is
    /// no longer covered by grants up to `recalled` (or by any, without one).
    pub fn changed(&self, partition: u64, recalled: Option<&pb::Grant>, touched: &[u64]) {
        match recalled {
            Some(bound) => self.void(partition, bound.term, bound.id, touched),
            None => {
                let mut state = self.state.lock().unwrap();
                touched.iter().for_each(|ino| drop(state.inodes.remove(ino)));
            }
        }
    }

    /// A change whose outcome is unknown (the request failed in flight).
    pub fn forget_all(&self) {
        let mut state = self.state.lock().unwrap();
        state.leases.clear();
        state.inodes.clear();
    }

    /// Attributes a grant came with, and the extents of a window when it did.
    pub fn keep_attrs(
        &self,
        ticket: &Ticket,
        partition: u64,
        grant: &pb::Grant,
        attr: &Attr,
        window: Option<(u64, u64, &[Extent])>,
    ) {
        let mut state = self.state.lock().unwrap();
        if let Some(cached) = state.admit(ticket, partition, grant, attr.ino) {
            cached.attrs = Some(attr.clone());
            if let Some((offset, length, extents)) = window {
                cached.window = Some((offset, length, extents.to_vec()));
            }
        }
    }

    /// A lookup's answer: the name, and the inode's attributes when the
    /// grant covers them (`None`: the inode lives in another partition).
    #[allow(clippy::too_many_arguments)]
    pub fn keep_entry(
        &self,
        ticket: &Ticket,
        partition: u64,
        grant: &pb::Grant,
        parent: u64,
        name: &[u8],
        ino: u64,
        attr: Option<&Attr>,
    ) {
        let mut state = self.state.lock().unwrap();
        if let Some(dir) = state.admit(ticket, partition, grant, parent) {
            dir.entries.insert(name.to_vec(), ino);
        }
        if let Some(attr) = attr.filter(|a| a.nlink > 0)
            && let Some(cached) = state.admit(ticket, partition, grant, ino)
        {
            cached.attrs = Some(attr.clone());
        }
    }

    /// Reads answered from grants so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn hit<T>(&self, answer: Option<T>) -> Option<T> {
        if answer.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    pub fn attrs(&self, ino: u64) -> Option<Attr> {
        let state = self.state.lock().unwrap();
        self.hit(state.inodes.get(&ino).filter(|c| state.valid(c)).and_then(|c| c.attrs.clone()))
    }

    /// The inode `name` in `parent` names, with its attributes.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<Attr> {
        let state = self.state.lock().unwrap();
        let dir = state.inodes.get(&parent).filter(|c| state.valid(c));
        let found = dir.and_then(|d| d.entries.get(name)).and_then(|ino| state.inodes.get(ino));
        self.hit(found.filter(|c| state.valid(c)).and_then(|c| c.attrs.clone()))
    }

    pub fn window(&self, ino: u64, offset: u64, length: u64) -> Option<(Vec<Extent>, Attr)> {
        let state = self.state.lock().unwrap();
        let cached = state.inodes.get(&ino).filter(|c| state.valid(c));
        let answer = cached.and_then(|c| {
            let (_, _, extents) = c.window.as_ref().filter(|(o, l, _)| (*o, *l) == (offset, length))?;
            Some((extents.clone(), c.attrs.clone()?))
        });
        self.hit(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table listening to node "a" only.
    fn table() -> Delegations {
        Delegations {
            client: 1,
            state: Mutex::new(State::default()),
            hits: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            nodes: Vec::new(),
        }
    }

    fn inode(ino: u64, size: u64) -> Attr {
        let inode = pb::Inode { ino, size, nlink: 1, mode: libc::S_IFREG | 0o644, ..Default::default() };
        Attr::try_from(inode).unwrap()
    }

    #[test]
    fn grants_answer_until_recalled_and_late_grants_are_refused() {
        let d = table();
        let t = d.ticket().answered_by(Some("a".into()));
        let g = pb::Grant { term: 2, id: 5 };
        d.keep_entry(&t, 7, &g, 1, b"f", 10, Some(&inode(10, 3)));
        assert_eq!(d.lookup(1, b"f").map(|i| i.size), Some(3));
        assert_eq!(d.attrs(10).map(|i| i.ino), Some(10));

        d.void(7, 2, 5, &[10]);
        assert_eq!(d.attrs(10), None);
        assert_eq!(d.lookup(1, b"f"), None, "the name's inode is gone");

        // A grant the recall already covers, arriving after it, does not count.
        d.keep_attrs(&t, 7, &pb::Grant { term: 2, id: 4 }, &inode(10, 3), None);
        assert_eq!(d.attrs(10), None);
        d.keep_attrs(&t, 7, &pb::Grant { term: 2, id: 6 }, &inode(10, 9), None);
        assert_eq!(d.attrs(10).map(|i| i.size), Some(9), "a grant after the recall counts");
    }

    #[test]
    fn a_broken_stream_voids_everything_and_grants_asked_before() {
        let d = table();
        let before = d.ticket().answered_by(Some("a".into()));
        d.stream_broke("a");
        let while_down = d.ticket().answered_by(Some("a".into()));
        d.keep_attrs(&while_down, 7, &pb::Grant { term: 2, id: 1 }, &inode(10, 3), None);
        assert_eq!(d.attrs(10), None, "no grants from a node whose stream is down");
        d.keep_attrs(&before, 7, &pb::Grant { term: 2, id: 1 }, &inode(10, 3), None);
        assert_eq!(d.attrs(10), None, "nor asked for before the stream broke");
        d.state.lock().unwrap().down.clear();
        d.stream_broke("b");
        d.stream_broke("b");
        let other = d.ticket().answered_by(Some("a".into()));
        d.keep_attrs(&other, 7, &pb::Grant { term: 2, id: 1 }, &inode(10, 3), None);
        assert!(d.attrs(10).is_some(), "a node that never answered does not stop grants from others");
        d.state.lock().unwrap().down.clear();
        let after = d.ticket().answered_by(Some("a".into()));
        d.keep_attrs(&after, 7, &pb::Grant { term: 2, id: 2 }, &inode(10, 3), None);
        assert!(d.attrs(10).is_some());
        d.keep_attrs(&after, 7, &pb::Grant { term: 3, id: 1 }, &inode(11, 3), None);
        assert!(d.attrs(10).is_none(), "a new term drops the partition's older grants");
        assert!(d.attrs(11).is_some());
    }

    #[test]
    fn windows_answer_only_the_range_fetched() {
        let d = table();
        let t = d.ticket().answered_by(Some("a".into()));
        let blob = pb::BlobRef { data_partition: 1, blob_id: 2, ..Default::default() };
        let extents = vec![Extent { file_offset: 0, length: 3, blob }];
        d.keep_attrs(&t, 7, &pb::Grant { term: 2, id: 1 }, &inode(10, 3), Some((0, 100, &extents)));
        assert_eq!(d.window(10, 0, 100).map(|(e, i)| (e.len(), i.size)), Some((1, 3)));
        assert_eq!(d.window(10, 100, 100), None);
    }
}
