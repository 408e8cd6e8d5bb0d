//! The whole system as users run it: `strata dev` starts real processes on
//! loopback; the test kills them with SIGKILL and checks what survives.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn master_failover_and_full_restart_keep_every_volume() {
    let mut cluster = DevCluster::new();
    cluster.start();

    // The cluster as started: 3 masters with one leader, 3 metanodes, 6 datanodes, all alive.
    let status = cluster.status().unwrap();
    assert_eq!((count(&status, "master"), count(&status, "metanode"), count(&status, "datanode")), (3, 3, 6));
    let leaders: Vec<_> = nodes(&status).into_iter().filter(|n| n["leader"] == true).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {status:#}");
    let old_leader = leader_id(&status);

    // Bad input gets a clear error and changes nothing.
    let out = cluster.strata(&["volume", "create", "Bad_Name"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_argument"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.strata(&["volume", "info", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
    let out = cluster.strata(&["volume", "create", "too-wide", "--redundancy", "ec:6+3"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs 9 distinct live nodes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    cluster.strata_ok(&["volume", "create", "before-kill", "--redundancy", "ec:4+2", "--capacity", "1TiB"]);
    let before: Value = serde_json::from_str(&cluster.strata_ok(&["volume", "info", "before-kill", "--json"])).unwrap();
    for p in before["data_partitions"].as_array().unwrap() {
        let mut members: Vec<u64> = p["members"].as_array().unwrap().iter().map(|m| m.as_u64().unwrap()).collect();
        members.sort();
        members.dedup();
        assert_eq!(members.len(), 6, "ec:4+2 shards on 6 distinct datanodes: {p}");
    }

    // kill -9 the leader: another master takes over and accepts writes.
    kill(cluster.pid_of(old_leader), libc::SIGKILL);
    let status = cluster
        .wait_for("a new leader", Duration::from_secs(30), |s| s["leader"].is_object() && leader_id(s) != old_leader);
    let new_leader = leader_id(&status);
    cluster.strata_ok(&["volume", "create", "after-kill", "--redundancy", "replica:3"]);
    let names: Vec<String> = cluster.volumes().into_iter().map(|v| v.0).collect();
    assert_eq!(names, ["after-kill", "before-kill", "default"]);

    // The old leader comes back as a follower and catches up.
    let leader_applied = applied_of(&cluster.status().unwrap(), new_leader);
    cluster.strata_ok(&["dev", "restart", &old_leader.to_string()]);
    let status = cluster.wait_for("the old leader caught up", Duration::from_secs(30), |s| {
        nodes(s).iter().any(|n| n["id"] == old_leader && n["alive"] == true && n["leader"] == false)
            && applied_of(s, old_leader) >= leader_applied
    });
    assert_eq!(leader_id(&status), new_leader, "the restarted master did not disturb the leader");

    // Kill every process, start again: every volume is still there, unchanged.
    let volumes_before = cluster.volumes();
    cluster.kill_everything();
    cluster.start();
    assert_eq!(cluster.volumes(), volumes_before);
    // Metanodes host every meta partition replica: 3 volumes x 3 partitions x 3 replicas.
    let held = |s: &Value| -> u64 {
        nodes(s).iter().filter(|n| n["role"] == "metanode").map(|n| n["partitions_held"].as_u64().unwrap()).sum()
    };
    cluster.wait_for("27 meta partition replicas hosted", Duration::from_secs(30), |s| held(s) == 27);
    cluster.strata_ok(&["volume", "delete", "after-kill"]);
    let names: Vec<String> = cluster.volumes().into_iter().map(|v| v.0).collect();
    assert_eq!(names, ["before-kill", "default"]);
    // ...and drop the deleted volume's partitions.
    cluster.wait_for("the deleted volume's partitions dropped", Duration::from_secs(30), |s| held(s) == 18);
}

#[test]
fn admin_commands_without_masters_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(STRATA)
        .args(["status"])
        .current_dir(dir.path())
        .env_remove("STRATA_MASTER")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no masters given"));
}
