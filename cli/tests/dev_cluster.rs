//! The whole system as users run it: `strata dev` starts real processes on
//! loopback; the test kills them with SIGKILL and checks what survives.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

struct DevCluster {
    dir: tempfile::TempDir,
    supervisor: Option<Child>,
}

fn kill(pid: u64, signal: i32) {
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

impl DevCluster {
    fn new() -> DevCluster {
        DevCluster {
            dir: tempfile::tempdir().unwrap(),
            supervisor: None,
        }
    }

    fn cluster_dir(&self) -> PathBuf {
        self.dir.path().join("strata-dev")
    }

    /// Runs `strata dev` in the background and waits until it says the cluster is up.
    fn start(&mut self) {
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("dev-{}.log", Instant::now().elapsed().as_nanos())),
        )
        .unwrap();
        let child = Command::new(STRATA)
            .args(["dev", "--base-port", "0"])
            .current_dir(self.dir.path())
            .env_remove("STRATA_MASTER")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.supervisor = Some(child);
        self.wait_for(
            "a leader and every node alive",
            Duration::from_secs(120),
            |status| {
                status["leader"].is_object()
                    && nodes(status).iter().all(|n| n["alive"] == true)
                    && nodes(status).len() == 12
            },
        );
    }

    fn cluster_file(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.cluster_dir().join("cluster.json")).unwrap())
            .unwrap()
    }

    fn pid_of(&self, id: u64) -> u64 {
        let file = self.cluster_file();
        let node = file["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap()
            .clone();
        node["pid"].as_u64().expect("node has a pid")
    }

    fn strata(&self, args: &[&str]) -> Output {
        Command::new(STRATA)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("STRATA_MASTER")
            .output()
            .unwrap()
    }

    fn strata_ok(&self, args: &[&str]) -> String {
        let out = self.strata(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn status(&self) -> Option<Value> {
        serde_json::from_slice(&self.strata(&["status", "--json"]).stdout).ok()
    }

    fn wait_for(&self, what: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(status) = self.status() {
                if ok(&status) {
                    return status;
                }
                last = Some(status);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("timed out waiting for {what}; last status: {last:#?}");
    }

    fn volumes(&self) -> Vec<(String, u64, Value)> {
        let list: Value =
            serde_json::from_str(&self.strata_ok(&["volume", "list", "--json"])).unwrap();
        let mut out: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["id"].as_u64().unwrap(),
                    v["data_partitions"].clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// SIGKILL to the supervisor and to every node in cluster.json.
    fn kill_everything(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for node in self.cluster_file()["nodes"].as_array().unwrap() {
            if let Some(pid) = node["pid"].as_u64() {
                kill(pid, libc::SIGKILL);
            }
        }
        let file = self.cluster_file();
        let pids: Vec<u64> = file["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["pid"].as_u64())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            kill(child.id() as u64, libc::SIGTERM);
            let _ = child.wait();
        }
        let file = std::fs::read(self.cluster_dir().join("cluster.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
        for pid in file
            .iter()
            .flat_map(|f| f["nodes"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n["pid"].as_u64())
        {
            kill(pid, libc::SIGKILL);
        }
    }
}

fn nodes(status: &Value) -> Vec<Value> {
    status["nodes"].as_array().cloned().unwrap_or_default()
}

fn count(status: &Value, role: &str) -> usize {
    nodes(status)
        .iter()
        .filter(|n| n["role"] == role && n["alive"] == true)
        .count()
}

fn leader_id(status: &Value) -> u64 {
    status["leader"]["id"].as_u64().expect("a leader")
}

fn applied_of(status: &Value, id: u64) -> u64 {
    nodes(status)
        .iter()
        .find(|n| n["id"] == id)
        .and_then(|n| n["applied_index"].as_u64())
        .unwrap_or(0)
}

#[test]
fn master_failover_and_full_restart_keep_every_volume() {
    let mut cluster = DevCluster::new();
    cluster.start();

    // The cluster as started: 3 masters with one leader, 3 metanodes, 6 datanodes, all alive.
    let status = cluster.status().unwrap();
    assert_eq!(
        (
            count(&status, "master"),
            count(&status, "metanode"),
            count(&status, "datanode")
        ),
        (3, 3, 6)
    );
    let leaders: Vec<_> = nodes(&status)
        .into_iter()
        .filter(|n| n["leader"] == true)
        .collect();
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

    cluster.strata_ok(&[
        "volume",
        "create",
        "before-kill",
        "--redundancy",
        "ec:4+2",
        "--capacity",
        "1TiB",
    ]);
    let before: Value =
        serde_json::from_str(&cluster.strata_ok(&["volume", "info", "before-kill", "--json"]))
            .unwrap();
    for p in before["data_partitions"].as_array().unwrap() {
        let mut members: Vec<u64> = p["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_u64().unwrap())
            .collect();
        members.sort();
        members.dedup();
        assert_eq!(
            members.len(),
            6,
            "ec:4+2 shards on 6 distinct datanodes: {p}"
        );
    }

    // kill -9 the leader: another master takes over and accepts writes.
    kill(cluster.pid_of(old_leader), libc::SIGKILL);
    let status = cluster.wait_for("a new leader", Duration::from_secs(30), |s| {
        s["leader"].is_object() && leader_id(s) != old_leader
    });
    let new_leader = leader_id(&status);
    cluster.strata_ok(&[
        "volume",
        "create",
        "after-kill",
        "--redundancy",
        "replica:3",
    ]);
    let names: Vec<String> = cluster.volumes().into_iter().map(|v| v.0).collect();
    assert_eq!(names, ["after-kill", "before-kill", "default"]);

    // The old leader comes back as a follower and catches up.
    let leader_applied = applied_of(&cluster.status().unwrap(), new_leader);
    cluster.strata_ok(&["dev", "restart", &old_leader.to_string()]);
    let status = cluster.wait_for("the old leader caught up", Duration::from_secs(30), |s| {
        nodes(s)
            .iter()
            .any(|n| n["id"] == old_leader && n["alive"] == true && n["leader"] == false)
            && applied_of(s, old_leader) >= leader_applied
    });
    assert_eq!(
        leader_id(&status),
        new_leader,
        "the restarted master did not disturb the leader"
    );

    // Kill every process, start again: every volume is still there, unchanged.
    let volumes_before = cluster.volumes();
    cluster.kill_everything();
    cluster.start();
    assert_eq!(cluster.volumes(), volumes_before);
    cluster.strata_ok(&["volume", "delete", "after-kill"]);
    let names: Vec<String> = cluster.volumes().into_iter().map(|v| v.0).collect();
    assert_eq!(names, ["before-kill", "default"]);
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
    let _ = Path::new(STRATA);
}
