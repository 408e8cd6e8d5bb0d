//! The engine's figures for Prometheus (recorded through the `metrics`
//! facade; `strata … --metrics ADDR` serves them): per group its role, term,
//! commit and apply indexes and proposals waiting, sampled every few seconds
//! from the statuses the engine thread publishes; counters of snapshots sent
//! and role changes and histograms of log writes and proposals, recorded
//! where they happen; and the node's RocksDB (memtables, block cache,
//! pending compaction, write stalls), which every node that hosts groups
//! shares with its state machines.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rocksdb::DB;

use crate::engine::{Engine, Role};

/// Snapshots handed to the transport for a lagging follower.
pub const SNAPSHOTS_SENT: &str = "strata_raft_snapshots_sent_total";
/// Changes of a group's role or known leader seen on this node.
pub const ROLE_CHANGES: &str = "strata_raft_role_changes_total";
/// From a proposal to its entry applied here, by the proposer.
pub const PROPOSAL_SECONDS: &str = "strata_raft_proposal_duration_seconds";
/// One ready round's write batch of log entries and hard states, by `sync`.
pub const LOG_WRITE_SECONDS: &str = "strata_raft_log_write_duration_seconds";

/// How often the per-group gauges and RocksDB's figures are refreshed.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Records one ready round's log write.
pub(crate) fn log_written(synced: bool, started: Instant) {
    let sync = if synced { "true" } else { "false" };
    metrics::histogram!(LOG_WRITE_SECONDS, "sync" => sync).record(started.elapsed().as_secs_f64());
}

/// Samples the engine's groups and its RocksDB every few seconds, until the
/// returned task is aborted. Must run inside a tokio runtime.
pub fn spawn_sampler(engine: Engine) -> tokio::task::JoinHandle<()> {
    // Counters that may stay at zero for a long time are exported from the start.
    metrics::counter!(SNAPSHOTS_SENT).increment(0);
    metrics::counter!(ROLE_CHANGES).increment(0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            record_groups(&engine);
            record_rocksdb(engine.db(), "raft");
        }
    })
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "precandidate",
    }
}

/// Per group: term, indexes, lag and proposals in flight, labelled by the
/// group id (bounded by the cluster's partitions, never by data); and how
/// many groups this node holds in each role and hibernating.
fn record_groups(engine: &Engine) {
    let mut per_role: HashMap<&'static str, u64> =
        [Role::Leader, Role::Follower, Role::Candidate, Role::PreCandidate].map(|r| (role_label(r), 0)).into();
    let mut quiet = 0u64;
    for status in engine.statuses() {
        *per_role.entry(role_label(status.role)).or_default() += 1;
        quiet += u64::from(status.quiet);
        let group = status.group_id.to_string();
        metrics::gauge!("strata_raft_term", "group" => group.clone()).set(status.term as f64);
        metrics::gauge!("strata_raft_commit_index", "group" => group.clone()).set(status.commit as f64);
        metrics::gauge!("strata_raft_applied_index", "group" => group.clone()).set(status.applied as f64);
        metrics::gauge!("strata_raft_apply_lag_entries", "group" => group.clone())
            .set(status.commit.saturating_sub(status.applied) as f64);
        metrics::gauge!("strata_raft_log_entries", "group" => group.clone())
            .set(status.last_index.saturating_sub(status.first_index).saturating_add(1) as f64);
        metrics::gauge!("strata_raft_proposals_in_flight", "group" => group.clone())
            .set(status.proposals_in_flight as f64);
        metrics::gauge!("strata_raft_is_leader", "group" => group)
            .set(f64::from(u8::from(status.role == Role::Leader)));
    }
    for (role, count) in per_role {
        metrics::gauge!("strata_raft_groups", "raft_role" => role).set(count as f64);
    }
    metrics::gauge!("strata_raft_quiet_groups").set(quiet as f64);
}

/// RocksDB's own figures for `db`, labelled `db` (`raft` for a node's one
/// database of logs and state machines, `index` for a datanode's blob index).
pub fn record_rocksdb(db: &DB, name: &'static str) {
    const PROPERTIES: [(&str, &str); 8] = [
        ("rocksdb.cur-size-all-mem-tables", "strata_rocksdb_memtable_bytes"),
        ("rocksdb.block-cache-usage", "strata_rocksdb_block_cache_bytes"),
        ("rocksdb.estimate-pending-compaction-bytes", "strata_rocksdb_pending_compaction_bytes"),
        ("rocksdb.num-running-compactions", "strata_rocksdb_running_compactions"),
        ("rocksdb.actual-delayed-write-rate", "strata_rocksdb_delayed_write_rate_bytes"),
        ("rocksdb.is-write-stopped", "strata_rocksdb_write_stopped"),
        ("rocksdb.total-sst-files-size", "strata_rocksdb_sst_bytes"),
        ("rocksdb.estimate-num-keys", "strata_rocksdb_keys"),
    ];
    for (property, metric) in PROPERTIES {
        if let Ok(Some(value)) = db.property_int_value(property) {
            metrics::gauge!(metric, "db" => name).set(value as f64);
        }
    }
}
