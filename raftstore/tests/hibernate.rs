//! Idle groups hibernate (`RaftConfig::hibernate`): once quiet they exchange
//! no Raft messages at all, only one node-level "alive" per node pair, and
//! they wake for writes, for reads, and when their leader's node goes away.

use std::time::{Duration, Instant};

use strata_raftstore::testing::{TestCluster, fast_config};
use strata_raftstore::{KvRead, Role};

const NODES: [u64; 3] = [1, 2, 3];
const WAIT: Duration = Duration::from_secs(10);

/// Waits until every given node reports every group quiet.
async fn all_quiet(cluster: &TestCluster, nodes: &[u64], groups: &[u64]) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let quiet = nodes.iter().all(|n| groups.iter().all(|g| cluster.engines[n].status(*g).is_some_and(|s| s.quiet)));
        if quiet {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn put(cluster: &TestCluster, group: u64, nodes: &[u64], value: &str) {
    let leader = cluster.leader_among(group, nodes, WAIT).await.expect("a leader");
    cluster.engines[&leader].propose(group, format!("k={value}").into_bytes()).await.unwrap();
    for n in nodes {
        assert!(cluster.wait_value(*n, group, "k", value, WAIT).await, "group {group} on node {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_go_quiet_and_wake_for_a_write() {
    let groups: Vec<u64> = (10..40).collect();
    let cluster = TestCluster::start(&NODES, &groups, fast_config(1000)).await;
    for g in &groups {
        put(&cluster, *g, &NODES, "1").await;
    }
    assert!(all_quiet(&cluster, &NODES, &groups).await, "30 idle groups hibernate on every node");

    // Quiet, they send no Raft message at all; the nodes still say they are alive.
    let (group_before, node_before) = cluster.net.messages();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (group_after, node_after) = cluster.net.messages();
    assert_eq!(group_after, group_before, "no Raft traffic from quiet groups");
    assert!(node_after > node_before, "nodes leading quiet groups keep saying they are alive");

    // A write wakes its group (only that one) and is replicated everywhere.
    put(&cluster, groups[0], &NODES, "2").await;
    let woken = NODES.iter().filter(|n| !cluster.engines[n].status(groups[1]).unwrap().quiet).count();
    assert_eq!(woken, 0, "another group stays quiet");
    assert!(all_quiet(&cluster, &NODES, &groups[..1]).await, "the written group hibernates again");

    // A linearizable read of a quiet group confirms leadership (waking it) and answers.
    let g = groups[2];
    let leader = cluster.leader_among(g, &NODES, WAIT).await.unwrap();
    cluster.engines[&leader].read_index(g).await.unwrap();
    assert_eq!(cluster.engines[&leader].kv(g).get(b"k").unwrap().as_deref(), Some(&b"1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_group_elects_a_new_leader_when_its_leader_dies() {
    let groups: Vec<u64> = (50..56).collect();
    let mut cluster = TestCluster::start(&NODES, &groups, fast_config(1000)).await;
    for g in &groups {
        put(&cluster, *g, &NODES, "before").await;
    }
    assert!(all_quiet(&cluster, &NODES, &groups).await);
    let g = groups[0];
    let dead = cluster.leader_among(g, &NODES, WAIT).await.unwrap();
    cluster.stop_node(dead);

    // The followers notice the silence of the leader's node, wake, elect and commit.
    let alive: Vec<u64> = NODES.into_iter().filter(|n| *n != dead).collect();
    for g in &groups {
        put(&cluster, *g, &alive, "after").await;
    }
    let new = cluster.leader_among(g, &alive, WAIT).await.unwrap();
    assert_ne!(new, dead);
    assert_eq!(cluster.engines[&new].status(g).unwrap().role, Role::Leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_leader_cut_off_loses_its_group_and_rejoins_as_follower() {
    let g = 70;
    let cluster = TestCluster::start(&NODES, &[g], fast_config(1000)).await;
    put(&cluster, g, &NODES, "1").await;
    assert!(all_quiet(&cluster, &NODES, &[g]).await);
    let old = cluster.leader_among(g, &NODES, WAIT).await.unwrap();
    cluster.net.isolate(old);

    let majority: Vec<u64> = NODES.into_iter().filter(|n| *n != old).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        // Until the followers notice the silence they still name the old leader.
        let Some(new) =
            majority.iter().copied().find(|n| cluster.engines[n].status(g).is_some_and(|s| s.role == Role::Leader))
        else {
            assert!(Instant::now() < deadline, "the majority never elected a leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match cluster.engines[&new].propose(g, b"k=2".to_vec()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => eprintln!("retrying: {e}"),
            Err(e) => panic!("the majority never committed: {e}"),
        }
    }
    // The old leader, still quiet and believing it leads, confirms nothing:
    // its read asks a quorum it cannot reach.
    assert!(cluster.engines[&old].read_index(g).await.is_err(), "no read from a cut-off leader");

    cluster.net.heal();
    assert!(cluster.wait_value(old, g, "k", "2", WAIT).await, "the old leader catches up");
    let leader = cluster.leader_among(g, &NODES, WAIT).await.unwrap();
    assert_ne!(leader, old);
    assert_eq!(cluster.engines[&old].status(g).unwrap().role, Role::Follower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hibernation_off_groups_keep_ticking() {
    let config = strata_common::config::RaftConfig { hibernate: false, ..fast_config(1000) };
    let cluster = TestCluster::start(&NODES, &[80], config).await;
    put(&cluster, 80, &NODES, "1").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(NODES.iter().all(|n| !cluster.engines[n].status(80).unwrap().quiet));
    let (before, _) = cluster.net.messages();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cluster.net.messages().0 > before, "heartbeats go on");
}
