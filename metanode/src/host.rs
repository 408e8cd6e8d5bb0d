//! The meta partitions this metanode hosts. The master assigns them (in
//! heartbeat answers); the host starts a Raft group for each new one, keeps
//! the list in its data directory to host them again after a restart, and,
//! where it leads a partition not yet initialised, proposes its inode range.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use prost::Message;
use serde::{Deserialize, Serialize};
use strata_common::config::NodeConfig;
use strata_common::files::{read_json, write_json};
use strata_common::{Result, StrataError};
use strata_node::agent::NodeStats;
use strata_proto::master as master_pb;
use strata_proto::master::MetaPartitionReport;
use strata_proto::meta::meta_client::MetaClient as MetaGrpcClient;
use strata_proto::meta::{
    CloseRangeOp, DropFreedOp, ExpireSessionsOp, GrantTermOp, InitPartition, MetaCommand, MutateReply, MutateRequest,
    TxFinishOp, TxPrepareOp, TxResolveOp, TxState, meta_command::Op,
};
use strata_raftstore::{Engine, GroupSpec, Role};
use strata_rpc::channels::{Channels, LeaderRouter};

use crate::blob_deleter::BlobDeleter;
use crate::delegation::Delegations;
use crate::machine::decode_outcome;
use crate::txn::{partition_info, read_u64};
use crate::{MetaMachine, gc, keys, locks, tx};

const ASSIGNMENTS_FILE: &str = "meta-partitions.json";

/// A partition as assigned by the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub partition_id: u64,
    pub volume_id: u64,
    pub inode_start: u64,
    pub inode_end: Option<u64>,
    /// The master asked this open-ended partition to close (a split).
    #[serde(default)]
    pub closing: bool,
    /// (node id, address) of every member.
    pub members: Vec<(u64, String)>,
    /// Name of the volume (empty in files written before names were recorded).
    #[serde(default)]
    pub volume_name: String,
}

impl From<&master_pb::MetaPartitionAssignment> for Assignment {
    fn from(a: &master_pb::MetaPartitionAssignment) -> Self {
        let p = a.partition.clone().unwrap_or_default();
        Assignment {
            partition_id: p.id,
            volume_id: a.volume_id,
            inode_start: p.inode_start,
            inode_end: p.inode_end,
            closing: p.closing,
            members: p.members.iter().map(|m| (m.node_id, m.address.clone())).collect(),
            volume_name: a.volume_name.clone(),
        }
    }
}

pub struct PartitionHost {
    pub engine: Engine,
    node_id: u64,
    file: PathBuf,
    hosted: RwLock<HashMap<u64, Assignment>>,
    /// Connections to other metanodes, to resolve transactions with their primary.
    channels: Channels,
    /// Consecutive heartbeats in which a hosted partition was not assigned.
    missing: RwLock<HashMap<u64, u32>>,
    stats: Arc<NodeStats>,
    /// The directory quotas of the hosted partitions, as the master last told.
    pub quotas: crate::quota::QuotaLimits,
    masters: Vec<String>,
    gc_grace: Duration,
    /// Deletes freed blobs from the datanodes.
    blobs: BlobDeleter,
    /// Per partition: the last freed-queue key dropped, and the rounds since
    /// the cursor was last reset (see [`PartitionHost::collect_garbage`]).
    gc_cursors: Mutex<HashMap<u64, (Vec<u8>, u32)>>,
    /// The grants of the partitions led here.
    pub delegations: Delegations,
}

/// Inode numbers a partition keeps when it closes for a split: what it may
/// still allocate (for files in its directories) before it is full.
const SPLIT_MARGIN: u64 = 1 << 20;

/// Heartbeats a hosted partition must be missing from before it is dropped.
const MISSING_BEFORE_REMOVAL: u32 = 3;

/// Freed blobs deleted per partition and round at most.
const GC_BATCH: usize = 1000;
/// Freed blobs counted per partition for the GC queue's gauge (a scan each round).
const GC_QUEUE_COUNTED: usize = 10_000;
/// Rounds of garbage collection between two full scans of a freed queue.
const GC_CURSOR_RESET_ROUNDS: u32 = 30;

pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl PartitionHost {
    pub fn new(engine: Engine, node_id: u64, config: &NodeConfig, stats: Arc<NodeStats>) -> Self {
        PartitionHost {
            engine,
            node_id,
            file: config.data_dir.join(ASSIGNMENTS_FILE),
            hosted: RwLock::new(HashMap::new()),
            channels: Channels::default(),
            missing: RwLock::new(HashMap::new()),
            stats,
            quotas: Default::default(),
            masters: config.masters.clone(),
            gc_grace: Duration::from_secs(config.gc_grace_secs),
            blobs: BlobDeleter::new(config.masters.clone()),
            gc_cursors: Mutex::new(HashMap::new()),
            delegations: Delegations::default(),
        }
    }

    /// Deletes the freed blobs of the partitions led here whose grace period
    /// has passed, then forgets them. Runs in its own loop (see `server`).
    pub async fn collect_garbage(&self) {
        let hosted: Vec<Assignment> = self.hosted.read().unwrap().values().cloned().collect();
        let before = now_ns().saturating_sub(self.gc_grace.as_nanos() as i64);
        let mut queued = 0;
        for a in hosted {
            if a.volume_name.is_empty() || self.engine.status(a.partition_id).is_none_or(|s| s.role != Role::Leader) {
                continue;
            }
            let kv = self.engine.kv(a.partition_id);
            queued += gc::queued(&kv, GC_QUEUE_COUNTED).unwrap_or(0);
            let cursor = self.gc_cursor(a.partition_id);
            let due = match gc::due(&kv, &cursor, before, GC_BATCH) {
                Ok(due) if !due.is_empty() => due,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(partition_id = a.partition_id, error = %e, "reading freed blobs failed");
                    continue;
                }
            };
            let blobs: Vec<(u64, u64)> =
                due.iter().filter(|f| !f.referenced).map(|f| (f.data_partition, f.blob_id)).collect();
            if let Err(e) = self.blobs.delete(&a.volume_name, &blobs).await {
                tracing::warn!(partition_id = a.partition_id, volume = %a.volume_name, error = %e, "deleting freed blobs failed; will retry");
                metrics::counter!("strata_metanode_gc_failures_total").increment(1);
                continue;
            }
            metrics::counter!("strata_metanode_gc_deleted_blobs_total").increment(blobs.len() as u64);
            let count = due.len();
            let keys: Vec<Vec<u8>> = due.into_iter().map(|f| f.key).collect();
            if let Some(last) = keys.last() {
                self.gc_cursors.lock().unwrap().entry(a.partition_id).or_default().0 = last.clone();
            }
            self.propose(a.partition_id, Op::DropFreed(DropFreedOp { keys }), "forgetting deleted blobs").await;
            tracing::info!(partition_id = a.partition_id, blobs = count, "freed blobs deleted");
        }
        // Exported from the first round on, deletes or not.
        metrics::counter!("strata_metanode_gc_deleted_blobs_total").increment(0);
        metrics::counter!("strata_metanode_gc_failures_total").increment(0);
        // The GC queue of the partitions led here (each counted up to GC_QUEUE_COUNTED).
        metrics::gauge!("strata_metanode_gc_queued_blobs").set(queued as f64);
    }

    /// Where this round's scan of the freed queue starts. Entries are keyed
    /// by the time they were freed, which a new leader's clock may put
    /// before the cursor: every [`GC_CURSOR_RESET_ROUNDS`] rounds the scan
    /// starts from the beginning again.
    fn gc_cursor(&self, partition_id: u64) -> Vec<u8> {
        let mut cursors = self.gc_cursors.lock().unwrap();
        let (cursor, rounds) = cursors.entry(partition_id).or_default();
        *rounds += 1;
        if *rounds >= GC_CURSOR_RESET_ROUNDS {
            *rounds = 0;
            cursor.clear();
        }
        cursor.clone()
    }

    pub fn assignment(&self, partition_id: u64) -> Result<Assignment> {
        self.hosted
            .read()
            .unwrap()
            .get(&partition_id)
            .cloned()
            // Retryable: the master may have assigned it and no heartbeat brought it yet.
            .ok_or_else(|| {
                StrataError::unavailable(format!("meta partition {partition_id} is not hosted on this metanode (yet)"))
            })
    }

    /// Hosts again every partition this node hosted before a restart.
    pub async fn restore(&self) -> Result<()> {
        let stored: Vec<Assignment> = read_json(&self.file)?.unwrap_or_default();
        for assignment in stored {
            self.host(assignment).await?;
        }
        Ok(())
    }

    async fn host(&self, assignment: Assignment) -> Result<()> {
        let spec = GroupSpec { initial_voters: assignment.members.clone() };
        self.engine
            .create_group(assignment.partition_id, spec, Box::new(MetaMachine::new(assignment.partition_id)))
            .await?;
        tracing::info!(
            partition_id = assignment.partition_id,
            volume_id = assignment.volume_id,
            "hosting meta partition"
        );
        let mut hosted = self.hosted.write().unwrap();
        hosted.insert(assignment.partition_id, assignment);
        self.stats.partitions_held.store(hosted.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Hosts newly assigned partitions, drops the ones no longer assigned
    /// (their volume was deleted), and does what leaders do.
    pub async fn reconcile(&self, assigned: &[master_pb::MetaPartitionAssignment]) {
        let mut changed = self.drop_unassigned(assigned).await;
        for a in assigned {
            let assignment = Assignment::from(a);
            let known = self.hosted.read().unwrap().get(&assignment.partition_id).cloned();
            if let Some(known) = known {
                // A split closed the range of a partition hosted here.
                if (known.inode_end, known.closing) != (assignment.inode_end, assignment.closing) {
                    self.hosted.write().unwrap().insert(assignment.partition_id, assignment);
                    changed = true;
                }
                continue;
            }
            if !assignment.members.iter().any(|(id, _)| *id == self.node_id) {
                continue;
            }
            match self.host(assignment).await {
                Ok(()) => changed = true,
                Err(e) => tracing::warn!(error = %e, "hosting a meta partition failed"),
            }
        }
        if changed {
            let all: Vec<Assignment> = self.hosted.read().unwrap().values().cloned().collect();
            if let Err(e) = write_json(&self.file, &all, true) {
                tracing::error!(error = %e, "recording hosted meta partitions failed");
            }
        }
        self.leader_duties().await;
    }

    /// Removes partitions absent from several assignments in a row; returns
    /// whether any was removed.
    async fn drop_unassigned(&self, assigned: &[master_pb::MetaPartitionAssignment]) -> bool {
        let assigned_ids: Vec<u64> = assigned.iter().filter_map(|a| a.partition.as_ref().map(|p| p.id)).collect();
        let hosted: Vec<u64> = self.hosted.read().unwrap().keys().copied().collect();
        let mut removed = false;
        for id in hosted {
            if assigned_ids.contains(&id) {
                self.missing.write().unwrap().remove(&id);
                continue;
            }
            let strikes = {
                let mut missing = self.missing.write().unwrap();
                let count = missing.entry(id).or_default();
                *count += 1;
                *count
            };
            if strikes < MISSING_BEFORE_REMOVAL {
                continue;
            }
            match self.engine.remove_group(id).await {
                Ok(()) => {
                    let mut hosted = self.hosted.write().unwrap();
                    hosted.remove(&id);
                    self.stats.partitions_held.store(hosted.len() as u64, Ordering::Relaxed);
                    self.missing.write().unwrap().remove(&id);
                    tracing::info!(partition_id = id, "meta partition no longer assigned; removed");
                    removed = true;
                }
                Err(e) => tracing::warn!(partition_id = id, error = %e, "removing a meta partition failed"),
            }
        }
        removed
    }

    /// Finishes transactions left prepared here past their deadline, as
    /// their primary decides (a primary decides its own).
    async fn recover_transactions(&self, partition_id: u64) {
        let Ok(pending) = tx::pending(&self.engine.kv(partition_id)) else { return };
        for prepared in pending.into_iter().filter(|p| p.op.deadline_ns < now_ns()) {
            let txid = prepared.op.txid;
            if prepared.op.primary == partition_id {
                self.propose(partition_id, Op::TxResolve(TxResolveOp { txid }), "resolving a transaction").await;
                continue;
            }
            let state = match self.ask_primary(&prepared.op).await {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(partition_id, txid = format!("{txid:x}"), error = %e, "cannot reach a transaction's primary");
                    continue;
                }
            };
            let commit = match state {
                TxState::Committed => true,
                TxState::Aborted => false,
                TxState::Prepared | TxState::Unknown => continue,
            };
            tracing::info!(
                partition_id,
                txid = format!("{txid:x}"),
                commit,
                "finishing a transaction its coordinator left"
            );
            self.propose(partition_id, Op::TxFinish(TxFinishOp { txid, commit }), "finishing a transaction").await;
        }
    }

    async fn ask_primary(&self, op: &TxPrepareOp) -> Result<TxState> {
        let router = LeaderRouter::new(op.primary_members.clone());
        let request = MutateRequest {
            partition_id: op.primary,
            request_id: 0,
            command: Some(MetaCommand { now_ns: 0, op: Some(Op::TxResolve(TxResolveOp { txid: op.txid })) }),
            client: 0,
        };
        let reply = router
            .call(&self.channels, Duration::from_secs(5), "resolving a transaction", |channel| {
                let request = request.clone();
                async move { MetaGrpcClient::new(channel).mutate(request).await }
            })
            .await?;
        Ok(TxState::try_from(reply.tx_state).unwrap_or(TxState::Unknown))
    }

    async fn propose(&self, partition_id: u64, op: Op, what: &str) {
        let request = MutateRequest {
            partition_id,
            request_id: 0,
            command: Some(MetaCommand { now_ns: now_ns(), op: Some(op) }),
            client: 0,
        };
        match self.engine.propose(partition_id, request.encode_to_vec()).await {
            Ok(outcome) => {
                tracing::debug!(partition_id, "{what}");
                if let Ok(mut reply) = decode_outcome(&outcome) {
                    self.recall(partition_id, &mut reply, 0).await;
                }
            }
            Err(e) => tracing::warn!(partition_id, error = %e, "{what} failed"),
        }
    }

    /// Before a change is acknowledged: every grant on what it touched is
    /// void (the writer's by `reply.recalled`, the others' recalled and
    /// waited for), and a new leader has waited out grants it cannot know.
    pub async fn recall(&self, partition_id: u64, reply: &mut MutateReply, writer: u64) {
        if reply.touched.is_empty() {
            return;
        }
        if let Some(status) = self.engine.status(partition_id).filter(|s| s.role == Role::Leader) {
            // Once this term is recorded, the record need not be read again.
            let grant_term = if self.delegations.needs_term_record(partition_id, status.term) {
                read_u64(&self.engine.kv(partition_id), keys::GRANT_TERM).ok().flatten()
            } else {
                Some(status.term)
            };
            if let Some(at) = self.delegations.settled_at(partition_id, status.term, grant_term) {
                tracing::info!(partition_id, term = status.term, "waiting out an earlier leader's delegations");
                tokio::time::sleep_until(at.into()).await;
            }
        }
        let (bound, waits) = self.delegations.recall(partition_id, &reply.touched, writer);
        reply.recalled = bound;
        futures::future::join_all(waits.into_iter().map(|w| self.delegations.wait(w))).await;
    }

    /// Records that this leader grants delegations in `term` (once per term),
    /// so a later leader knows to wait them out.
    pub async fn record_grant_term(&self, partition_id: u64, term: u64) -> Result<()> {
        if !self.delegations.needs_term_record(partition_id, term) {
            return Ok(());
        }
        let request = MutateRequest {
            partition_id,
            request_id: 0,
            command: Some(MetaCommand { now_ns: now_ns(), op: Some(Op::GrantTerm(GrantTermOp { term })) }),
            client: 0,
        };
        decode_outcome(&self.engine.propose(partition_id, request.encode_to_vec()).await?)?;
        self.delegations.term_recorded(partition_id, term);
        Ok(())
    }

    /// Asks the master for the current quota limits of `partition_id`'s
    /// volume (before refusing a command on limits a heartbeat old).
    pub async fn refresh_quotas(&self, partition_id: u64) -> Result<()> {
        let volume = self.hosted.read().unwrap().get(&partition_id).map(|a| a.volume_name.clone());
        let volume = volume.filter(|v| !v.is_empty()).ok_or_else(|| {
            StrataError::unavailable(format!("the volume of meta partition {partition_id} is not known yet"))
        })?;
        let master = strata_rpc::MasterClient::new(self.masters.clone())?;
        let asked_at = Instant::now();
        let quotas: Vec<_> = master.list_quotas(&volume).await?.into_iter().filter_map(|s| s.quota).collect();
        self.quotas.set_limits(partition_id, &quotas, asked_at);
        Ok(())
    }

    /// What the leader of a partition does on its own: initialise it once,
    /// apply the range a split gave it, finish transactions their
    /// coordinators left, end sessions whose lease ran out, and report its
    /// inode counters to the master (which splits the open-ended partition).
    async fn leader_duties(&self) {
        let hosted: Vec<Assignment> = self.hosted.read().unwrap().values().cloned().collect();
        let mut reports = Vec::new();
        for a in hosted {
            let leading = self.engine.status(a.partition_id).is_some_and(|s| s.role == Role::Leader);
            if !leading {
                continue;
            }
            let kv = self.engine.kv(a.partition_id);
            let Ok(Some(info)) = partition_info(&kv) else {
                let init = InitPartition { volume_id: a.volume_id, inode_start: a.inode_start, inode_end: a.inode_end };
                self.propose(a.partition_id, Op::Init(init), "initialising meta partition").await;
                continue;
            };
            if a.closing && info.inode_end.is_none() {
                let op = Op::CloseRange(CloseRangeOp { margin: SPLIT_MARGIN });
                self.propose(a.partition_id, op, "closing the partition's range for a split").await;
            }
            self.recover_transactions(a.partition_id).await;
            if locks::has_expired_sessions(&kv, now_ns()).unwrap_or(false) {
                self.propose(a.partition_id, Op::ExpireSessions(ExpireSessionsOp {}), "expiring sessions").await;
            }
            if let Ok(stats) = crate::read::stats(&kv, 0) {
                reports.push(MetaPartitionReport {
                    partition_id: a.partition_id,
                    inode_count: stats.inode_count,
                    next_inode: stats.next_inode,
                    inode_end: stats.inode_end,
                    data_bytes: stats.data_bytes,
                    quotas: crate::quota::report(&kv).unwrap_or_default(),
                });
            }
        }
        *self.stats.meta_reports.lock().unwrap() = reports;
    }
}
