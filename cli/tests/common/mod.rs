//! A `strata dev` cluster for tests: real processes on loopback, killed
//! with SIGKILL and restarted through `strata dev restart`.
#![allow(dead_code)]

pub mod http;

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// The default volume's namespace, once its partitions' leaders initialised them.
pub async fn open_volume(masters: Vec<String>) -> strata_sdk::MetaClient {
    let master = strata_sdk::MasterClient::new(masters).unwrap();
    let meta = strata_sdk::MetaClient::open(&master, "default").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while meta.partition_stats().await.is_err() {
        assert!(Instant::now() < deadline, "meta partitions never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    meta
}

pub struct DevCluster {
    dir: tempfile::TempDir,
    supervisor: Option<Child>,
    starts: u32,
}

pub fn kill(pid: u64, signal: i32) {
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

impl DevCluster {
    pub fn new() -> DevCluster {
        DevCluster { dir: tempfile::tempdir().unwrap(), supervisor: None, starts: 0 }
    }

    /// One `strata dev` start; its output if the cluster did not come up.
    fn try_start(&mut self, extra: &[&str]) -> Result<(), String> {
        self.starts += 1;
        let log_path = self.dir.path().join(format!("dev-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).unwrap();
        // Tests that do not ask for the shared cache tier run without it, so
        // their blocks come from the datanodes they count.
        let no_tier: &[&str] = if extra.contains(&"--cachenodes") { &[] } else { &["--cachenodes", "0"] };
        let child = Command::new(STRATA)
            .args(["dev", "--base-port", "0"])
            .args(no_tier)
            .args(extra)
            .current_dir(self.dir.path())
            .env_remove("STRATA_MASTER")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.supervisor = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            if output.contains("cluster is up") {
                break;
            }
            let exited = self.supervisor.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                return Err(output);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.dir.path().join("strata-dev")
    }

    /// Runs `strata dev` in the background and waits until it says the
    /// cluster is up (leader elected, every node alive, default volume made).
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Like [`start`], with extra `strata dev` flags. A first start whose
    /// port was taken by another test's cluster (between `strata dev`
    /// picking it and the node binding it) is tried again in a new directory.
    pub fn start_with(&mut self, extra: &[&str]) {
        let first = self.starts == 0;
        let mut attempt = 1;
        while let Err(output) = self.try_start(extra) {
            if !(first && attempt < 3 && output.contains("Address already in use")) {
                panic!("strata dev did not come up:\n{output}");
            }
            eprintln!("a port of the new cluster was taken; starting it again elsewhere");
            self.dir = tempfile::tempdir().unwrap();
            self.starts = 0;
            attempt += 1;
        }
        let status = self.status().expect("status after start");
        let count = |flag: &str, default: usize| {
            let at = extra.iter().position(|a| *a == flag);
            at.map(|i| extra[i + 1].parse::<usize>().expect("a count")).unwrap_or(default)
        };
        let expected = 6 + count("--datanodes", 6) + count("--cachenodes", 0);
        assert_eq!(nodes(&status).len(), expected, "{status:#}");
    }

    pub fn cluster_file(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.cluster_dir().join("cluster.json")).unwrap()).unwrap()
    }

    pub fn pid_of(&self, id: u64) -> u64 {
        let file = self.cluster_file();
        let node = file["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap().clone();
        node["pid"].as_u64().expect("node has a pid")
    }

    /// Master addresses from cluster.json.
    pub fn masters(&self) -> Vec<String> {
        self.nodes_of("master").into_iter().map(|n| n["address"].as_str().unwrap().to_string()).collect()
    }

    pub fn nodes_of(&self, role: &str) -> Vec<Value> {
        self.cluster_file()["nodes"].as_array().unwrap().iter().filter(|n| n["role"] == role).cloned().collect()
    }

    /// The id of the node listening on `address`.
    pub fn node_at(&self, address: &str) -> u64 {
        let file = self.cluster_file();
        let node = file["nodes"].as_array().unwrap().iter().find(|n| n["address"] == address).cloned();
        node.unwrap_or_else(|| panic!("no node at {address}"))["id"].as_u64().unwrap()
    }

    pub fn restart(&self, id: u64) {
        self.strata_ok(&["dev", "restart", &id.to_string()]);
    }

    pub fn strata(&self, args: &[&str]) -> Output {
        Command::new(STRATA).args(args).current_dir(self.dir.path()).env_remove("STRATA_MASTER").output().unwrap()
    }

    pub fn strata_ok(&self, args: &[&str]) -> String {
        let out = self.strata(args);
        assert!(out.status.success(), "strata {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn status(&self) -> Option<Value> {
        serde_json::from_slice(&self.strata(&["status", "--json"]).stdout).ok()
    }

    pub fn wait_for(&self, what: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
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

    pub fn volumes(&self) -> Vec<(String, u64, Value)> {
        let list: Value = serde_json::from_str(&self.strata_ok(&["volume", "list", "--json"])).unwrap();
        let mut out: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v["id"].as_u64().unwrap(), v["data_partitions"].clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// SIGKILL to the supervisor and to every node in cluster.json.
    pub fn kill_everything(&mut self) {
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
        let pids: Vec<u64> = file["nodes"].as_array().unwrap().iter().filter_map(|n| n["pid"].as_u64()).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the logs of a failed test.
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("cluster directory kept: {}", kept.display());
        }
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

pub fn nodes(status: &Value) -> Vec<Value> {
    status["nodes"].as_array().cloned().unwrap_or_default()
}

pub fn count(status: &Value, role: &str) -> usize {
    nodes(status).iter().filter(|n| n["role"] == role && n["alive"] == true).count()
}

pub fn leader_id(status: &Value) -> u64 {
    status["leader"]["id"].as_u64().expect("a leader")
}

pub fn applied_of(status: &Value, id: u64) -> u64 {
    nodes(status).iter().find(|n| n["id"] == id).and_then(|n| n["applied_index"].as_u64()).unwrap_or(0)
}

/// A mount point, unmounted when dropped.
pub struct Mount<'a> {
    cluster: &'a DevCluster,
    pub path: PathBuf,
    /// The serving `strata mount --foreground` process.
    pub pid: u64,
}

impl<'a> Mount<'a> {
    pub fn new(cluster: &'a DevCluster, name: &str) -> Mount<'a> {
        Mount::with_args(cluster, name, &[])
    }

    /// Mounts the default volume at `name` in the test's directory, with
    /// its disk cache in `name-cache` there, and extra `strata mount` flags.
    pub fn with_args(cluster: &'a DevCluster, name: &str, extra: &[&str]) -> Mount<'a> {
        let base = cluster.cluster_dir().parent().unwrap().to_path_buf();
        let path = base.join(name);
        let log = base.join(format!("{name}.log"));
        let cache = base.join(format!("{name}-cache"));
        let mut args = vec!["mount", "default", path.to_str().unwrap(), "--log", log.to_str().unwrap()];
        args.extend(["--cache-dir", cache.to_str().unwrap()]);
        args.extend(extra);
        let out = cluster.strata_ok(&args);
        assert!(out.contains("mounted at"), "{out}");
        let pid = out.split("(pid ").nth(1).and_then(|rest| rest.split(',').next()).and_then(|p| p.parse().ok());
        Mount { cluster, path, pid: pid.unwrap_or_else(|| panic!("no pid in {out:?}")) }
    }

    pub fn cache_dir(&self) -> PathBuf {
        let name = self.path.file_name().unwrap().to_str().unwrap();
        self.path.with_file_name(format!("{name}-cache"))
    }

    /// Unmounts now, waiting until the serving process has exited.
    pub fn unmount(self) {
        self.cluster.strata_ok(&["umount", self.path.to_str().unwrap()]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while alive(self.pid) {
            assert!(std::time::Instant::now() < deadline, "the mount process of {} did not exit", self.path.display());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.strata(&["umount", self.path.to_str().unwrap()]);
    }
}
