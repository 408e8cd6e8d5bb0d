//! Engine behaviour across several nodes in one process (real RocksDB per
//! node, in-process network with a partition filter).

use std::time::Duration;

use strata_common::ErrorCode;
use strata_raftstore::testing::{KvMachine, TestCluster, address_of, fast_config};
use strata_raftstore::{GroupSpec, KvRead, Role};

const GROUP: u64 = 7;
const WAIT: Duration = Duration::from_secs(10);

async fn leader(cluster: &TestCluster, nodes: &[u64]) -> u64 {
    cluster.leader_among(GROUP, nodes, WAIT).await.expect("a leader is elected")
}

async fn put(cluster: &TestCluster, node: u64, key: &str, value: &str) -> strata_common::Result<Vec<u8>> {
    cluster.engines[&node].propose(GROUP, format!("{key}={value}").into_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_and_survives_restart() {
    let mut cluster = TestCluster::start(&[1, 2, 3], &[GROUP], fast_config(1000)).await;
    let l = leader(&cluster, &[1, 2, 3]).await;
    assert_eq!(put(&cluster, l, "a", "1").await.unwrap(), b"");
    assert_eq!(put(&cluster, l, "a", "2").await.unwrap(), b"1", "the state machine saw the first write");
    for n in [1, 2, 3] {
        assert!(cluster.wait_value(n, GROUP, "a", "2", WAIT).await, "node {n} applied");
    }
    // a follower refuses proposals and names the leader
    let follower = [1, 2, 3].into_iter().find(|n| *n != l).unwrap();
    let err = put(&cluster, follower, "b", "x").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotLeader);
    assert_eq!(err.leader_hint, Some(address_of(l)));

    // restart every node: state and log come back from disk, and the group works again
    for n in [1, 2, 3] {
        cluster.stop_node(n);
    }
    for n in [1, 2, 3] {
        cluster.start_node(n);
        cluster.engines[&n].create_group(GROUP, GroupSpec::default(), Box::new(KvMachine)).await.unwrap();
        assert_eq!(cluster.engines[&n].kv(GROUP).get(b"a").unwrap(), Some(b"2".to_vec()));
    }
    let l = leader(&cluster, &[1, 2, 3]).await;
    assert_eq!(put(&cluster, l, "a", "3").await.unwrap(), b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_cannot_commit_and_the_partition_heals() {
    let cluster = TestCluster::start(&[1, 2, 3], &[GROUP], fast_config(1000)).await;
    let old = leader(&cluster, &[1, 2, 3]).await;
    put(&cluster, old, "k", "before").await.unwrap();
    let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != old).collect();

    cluster.net.isolate(old);
    // the isolated leader cannot commit: its proposal fails (it steps down) or times out
    let err = put(&cluster, old, "k", "minority").await.unwrap_err();
    assert!(matches!(err.code, ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::NotLeader), "{err}");
    // the majority elects a new leader and commits
    let new = leader(&cluster, &majority).await;
    assert_ne!(new, old);
    put(&cluster, new, "k", "majority").await.unwrap();
    assert_eq!(cluster.engines[&old].kv(GROUP).get(b"k").unwrap(), Some(b"before".to_vec()));

    cluster.net.heal();
    assert!(cluster.wait_value(old, GROUP, "k", "majority", WAIT).await, "old leader catches up");
    let l = leader(&cluster, &[1, 2, 3]).await;
    assert_eq!(l, new, "the healed node follows the new leader");
    assert_eq!(cluster.engines[&old].status(GROUP).unwrap().role, Role::Follower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_is_truncated_and_a_lagging_follower_gets_a_snapshot() {
    let retain = 5;
    let cluster = TestCluster::start(&[1, 2, 3], &[GROUP], fast_config(retain)).await;
    let l = leader(&cluster, &[1, 2, 3]).await;
    let lagging = [1, 2, 3].into_iter().find(|n| *n != l).unwrap();
    put(&cluster, l, "seen-by-all", "yes").await.unwrap();
    assert!(cluster.wait_value(lagging, GROUP, "seen-by-all", "yes", WAIT).await);

    cluster.net.isolate(lagging);
    for i in 0..60 {
        put(&cluster, l, &format!("key{i}"), &i.to_string()).await.unwrap();
    }
    let status = cluster.engines[&l].status(GROUP).unwrap();
    assert!(status.first_index > status.applied - 3 * retain, "leader truncated its log: {status:?}");
    let lag_status = cluster.engines[&lagging].status(GROUP).unwrap();
    assert!(lag_status.last_index < status.first_index, "the follower now needs entries the leader dropped");

    cluster.net.heal();
    assert!(cluster.wait_value(lagging, GROUP, "key59", "59", WAIT).await, "caught up after heal");
    for i in 0..60 {
        let v = cluster.engines[&lagging].kv(GROUP).get(format!("key{i}").as_bytes()).unwrap();
        assert_eq!(v, Some(i.to_string().into_bytes()));
    }
    // The status is published after the ready round that applied the
    // snapshot, which may come just after its data became readable.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut caught_up = cluster.engines[&lagging].status(GROUP).unwrap();
    while caught_up.first_index <= lag_status.last_index + 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        caught_up = cluster.engines[&lagging].status(GROUP).unwrap();
    }
    assert!(
        caught_up.first_index > lag_status.last_index + 1,
        "installed from a snapshot: {caught_up:?} (lagging at {lag_status:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed() {
    let mut cluster = TestCluster::start(&[1, 2, 3], &[GROUP], fast_config(5)).await;
    let l = leader(&cluster, &[1, 2, 3]).await;
    for i in 0..20 {
        put(&cluster, l, &format!("key{i}"), "v").await.unwrap();
    }
    // node 4 joins empty and catches up from a snapshot
    let four = cluster.start_node(4);
    four.create_group(GROUP, GroupSpec::default(), Box::new(KvMachine)).await.unwrap();
    cluster.engines[&l].add_voter(GROUP, 4, &address_of(4)).await.unwrap();
    assert!(cluster.wait_value(4, GROUP, "key19", "v", WAIT).await, "new member caught up");
    assert_eq!(cluster.engines[&l].status(GROUP).unwrap().voters, vec![1, 2, 3, 4]);

    // remove a follower; the group keeps committing with the rest
    let removed = [1, 2, 3].into_iter().find(|n| *n != l).unwrap();
    cluster.engines[&l].remove_voter(GROUP, removed).await.unwrap();
    let voters = cluster.engines[&l].status(GROUP).unwrap().voters;
    assert!(!voters.contains(&removed) && voters.len() == 3, "{voters:?}");
    cluster.stop_node(removed);
    put(&cluster, l, "after-removal", "ok").await.unwrap();
    assert!(cluster.wait_value(4, GROUP, "after-removal", "ok", WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_share_one_engine() {
    let groups: Vec<u64> = (100..140).collect();
    let cluster = TestCluster::start(&[1, 2, 3], &groups, fast_config(1000)).await;
    for g in &groups {
        let l = cluster.leader_among(*g, &[1, 2, 3], WAIT).await.expect("leader");
        cluster.engines[&l].propose(*g, format!("group={g}").into_bytes()).await.unwrap();
    }
    for g in &groups {
        for n in [1, 2, 3] {
            assert!(cluster.wait_value(n, *g, "group", &g.to_string(), WAIT).await, "group {g} on node {n}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_reads_only_within_its_lease() {
    let cluster = TestCluster::start(&[1, 2, 3], &[GROUP], fast_config(1000)).await;
    let l = leader(&cluster, &[1, 2, 3]).await;
    put(&cluster, l, "r", "1").await.unwrap();
    let committed = std::time::Instant::now();
    cluster.engines[&l].read_index(GROUP).await.unwrap();
    let follower = [1, 2, 3].into_iter().find(|n| *n != l).unwrap();
    let err = cluster.engines[&follower].read_index(GROUP).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotLeader);
    assert!(!cluster.engines[&follower].reads_leased(GROUP), "a follower never reads under a lease");

    // Cut off right after a commit, the leader still answers reads for a
    // while (its lease: 8 ticks of 20 ms from the proposal) without a round.
    cluster.net.isolate(l);
    let within = cluster.engines[&l].read_index(GROUP).await;
    if committed.elapsed() < std::time::Duration::from_millis(100) {
        assert!(within.is_ok(), "a read within the lease: {within:?}");
    }
    // The lease ends on its own, with no message: the isolated leader's
    // reads stop being served from its applied state.
    let lease_over = std::time::Instant::now() + WAIT;
    while cluster.engines[&l].reads_leased(GROUP) {
        assert!(std::time::Instant::now() < lease_over, "the lease outlived {WAIT:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Once another leader is elected and commits, the old one answers no read
    // (the lease ended before any member would vote for someone else).
    let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != l).collect();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // The majority's first leader may lose an election race: ask again.
        let new = leader(&cluster, &majority).await;
        match put(&cluster, new, "r", "2").await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => eprintln!("retrying the write: {e}"),
            Err(e) => panic!("the majority never committed: {e}"),
        }
    }
    let err = cluster.engines[&l].read_index(GROUP).await.unwrap_err();
    assert!(matches!(err.code, ErrorCode::NotLeader | ErrorCode::Timeout), "{err}");
    assert!(!cluster.engines[&l].reads_leased(GROUP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_under_its_lease_reads_every_acknowledged_write() {
    let cluster = TestCluster::start(&[1, 2, 3], &[GROUP], fast_config(1000)).await;
    let l = leader(&cluster, &[1, 2, 3]).await;
    put(&cluster, l, "n", "0").await.unwrap();
    cluster.engines[&l].read_index(GROUP).await.unwrap();
    assert!(cluster.engines[&l].reads_leased(GROUP), "a leader that just committed holds a read lease");
    // Each write is acknowledged only once applied on the leader, so a read
    // answered from its applied state right after sees it.
    let kv = cluster.engines[&l].kv(GROUP);
    for i in 1..=50 {
        put(&cluster, l, "n", &i.to_string()).await.unwrap();
        cluster.engines[&l].read_index(GROUP).await.unwrap();
        assert_eq!(kv.get(b"n").unwrap().as_deref(), Some(i.to_string().as_bytes()), "write {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_voter_group_elects_itself() {
    let cluster = TestCluster::start(&[1], &[GROUP], fast_config(1000)).await;
    assert_eq!(leader(&cluster, &[1]).await, 1);
    assert_eq!(put(&cluster, 1, "solo", "yes").await.unwrap(), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_scans_resume_strictly_after_the_cookie() {
    let cluster = TestCluster::start(&[1], &[GROUP], fast_config(1000)).await;
    leader(&cluster, &[1]).await;
    for key in ["d/a", "d/b", "d/c", "d/d", "e/x"] {
        put(&cluster, 1, key, "v").await.unwrap();
    }
    let kv = cluster.engines[&1].kv(GROUP);
    let names = |page: Vec<(Vec<u8>, Vec<u8>)>| {
        page.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(names(kv.scan(b"d/", b"", 2).unwrap()), ["d/a", "d/b"]);
    assert_eq!(names(kv.scan(b"d/", b"b", 2).unwrap()), ["d/c", "d/d"]);
    assert_eq!(names(kv.scan(b"d/", b"d", 2).unwrap()), Vec::<String>::new(), "nothing past the prefix");
    assert_eq!(
        names(kv.scan(b"d/", b"bb", 10).unwrap()),
        ["d/c", "d/d"],
        "a cookie that no longer exists still resumes"
    );
    assert_eq!(kv.scan_prefix(b"e/").unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_group_leaves_nothing_behind() {
    let cluster = TestCluster::start(&[1], &[GROUP, GROUP + 1], fast_config(1000)).await;
    for g in [GROUP, GROUP + 1] {
        cluster.leader_among(g, &[1], WAIT).await.expect("leader");
        cluster.engines[&1].propose(g, b"k=v".to_vec()).await.unwrap();
    }
    cluster.engines[&1].remove_group(GROUP).await.unwrap();
    assert!(cluster.engines[&1].status(GROUP).is_none());
    assert_eq!(cluster.engines[&1].kv(GROUP).get(b"k").unwrap(), None, "its data is deleted");
    let err = put(&cluster, 1, "k", "again").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert_eq!(cluster.engines[&1].kv(GROUP + 1).get(b"k").unwrap(), Some(b"v".to_vec()), "its neighbour is untouched");
    // hosting it again starts from nothing
    cluster.engines[&1].create_group(GROUP, GroupSpec::default(), Box::new(KvMachine)).await.unwrap();
    assert_eq!(cluster.engines[&1].status(GROUP).unwrap().last_index, 0);
}
