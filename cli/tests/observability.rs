//! Prometheus metrics of a whole `strata dev` cluster: every process
//! (masters, metanodes, datanodes, the S3 gateway, the mount) serves
//! `/metrics` on the port cluster.json names, with the series of its role
//! once the cluster has done some work; and a real Prometheus server, started
//! with the scrape configuration `strata dev` wrote, scrapes them all and
//! answers queries over its HTTP API with series from every role.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::DevCluster;
use common::http::get as http_get;
use serde_json::Value;

/// The series of a Prometheus text exposition: metric name to the label
/// sets it was exported with.
fn series(exposition: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = match line[name_end..].strip_prefix('{') {
            Some(rest) => rest.split_once('}').map_or("", |(labels, _)| labels),
            None => "",
        };
        out.entry(line[..name_end].to_string()).or_default().push(labels.to_string());
    }
    out
}

/// The metrics processes of the cluster: (role, metrics address).
fn targets(cluster: &DevCluster) -> Vec<(String, String)> {
    let file = cluster.cluster_file();
    let mut out: Vec<(String, String)> = file["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["role"].as_str().unwrap().to_string(), n["metrics"].as_str().expect("a metrics port").to_string()))
        .collect();
    out.push(("s3".into(), file["s3_metrics"].as_str().expect("the gateway's metrics port").to_string()));
    out.push(("mount".into(), file["mount_metrics"].as_str().expect("the mount's metrics port").to_string()));
    out
}

/// A metric name and a label (`k="v"`, or a prefix of one) a series of it carries.
type Series = (&'static str, &'static str);

/// What every process of each role must export once the cluster has served
/// a write and a read through the mount and a request through the gateway:
/// (metric, a label every process of the role has on it, or "" for any),
/// per process; and the series that at least one process of the role has
/// (a leader's, or a datanode's that held the file's blob).
fn expected(role: &str) -> (Vec<Series>, Vec<Series>) {
    let mut each = vec![("strata_build_info", ""), ("process_resident_memory_bytes", ""), ("process_open_fds", "")];
    let some = match role {
        "master" => {
            each.extend([
                ("strata_master_is_leader", ""),
                ("strata_raft_term", "group="),
                ("strata_raft_groups", "raft_role=\"leader\""),
                ("strata_raft_log_write_duration_seconds_bucket", ""),
                ("strata_rocksdb_memtable_bytes", "db=\"raft\""),
            ]);
            vec![
                ("strata_master_nodes", "node_role=\"datanode\",state=\"alive\""),
                ("strata_master_volumes", ""),
                ("strata_requests_total", "op=\"Master/Heartbeat\""),
                ("strata_raft_proposal_duration_seconds_bucket", ""),
            ]
        }
        "metanode" => {
            each.extend([
                ("strata_raft_applied_index", "group="),
                ("strata_raft_apply_lag_entries", "group="),
                ("strata_rocksdb_block_cache_bytes", "db=\"raft\""),
                ("strata_metanode_gc_queued_blobs", ""),
            ]);
            vec![
                ("strata_requests_total", "service=\"grpc\""),
                ("strata_raft_proposal_duration_seconds_bucket", ""),
                ("strata_raft_proposals_in_flight", "group="),
            ]
        }
        "datanode" => {
            each.extend([
                ("strata_datanode_disk_free_bytes", "disk=\"0\""),
                ("strata_datanode_disk_failed", "disk=\"0\""),
                ("strata_datanode_blobs", ""),
                ("strata_datanode_garbage_bytes", ""),
                ("strata_datanode_scrubbed_bytes_total", ""),
                ("strata_rocksdb_keys", "db=\"index\""),
            ]);
            vec![
                ("strata_requests_total", "service=\"framed\",op=\"write\",code=\"ok\""),
                ("strata_received_bytes_total", "service=\"framed\",op=\"write\""),
                ("strata_request_duration_seconds_bucket", "service=\"framed\""),
            ]
        }
        "s3" => {
            each.extend([("strata_requests_total", "service=\"s3\""), ("strata_request_duration_seconds_bucket", "")]);
            vec![]
        }
        "mount" => {
            each.extend([
                ("strata_request_duration_seconds_bucket", "service=\"fuse\",op=\"write\""),
                ("strata_request_duration_seconds_bucket", "service=\"fuse\",op=\"lookup\""),
                ("strata_cache_misses_total", "level=\"memory\""),
                ("strata_cache_evictions_total", "level=\"disk\""),
                ("strata_cache_remote_bytes_total", ""),
            ]);
            vec![]
        }
        other => panic!("unexpected role {other}"),
    };
    (each, some)
}

fn has(found: &BTreeMap<String, Vec<String>>, metric: &str, label: &str) -> bool {
    found.get(metric).is_some_and(|sets| sets.iter().any(|labels| labels.contains(label)))
}

/// Which expectations are still unmet, scraping every target once.
fn unmet(targets: &[(String, String)]) -> Vec<String> {
    let mut missing = Vec::new();
    let mut some_seen: BTreeMap<(String, &str, &str), bool> = BTreeMap::new();
    for (role, address) in targets {
        let found = match http_get(address, "/metrics") {
            Ok((200, body)) => series(&body),
            other => {
                missing.push(format!("{role} at {address}: {other:?}"));
                continue;
            }
        };
        let (each, some) = expected(role);
        for (metric, label) in each {
            if !has(&found, metric, label) {
                missing.push(format!("{role} at {address}: {metric}{{{label}}}"));
            }
        }
        assert!(
            has(&found, "strata_build_info", &format!("role=\"{role}\"")),
            "{role} at {address} does not label its series with its role"
        );
        for (metric, label) in some {
            *some_seen.entry((role.clone(), metric, label)).or_default() |= has(&found, metric, label);
        }
        // Label values come from fixed sets: no inode, blob or path ever labels a series.
        for (metric, sets) in &found {
            for labels in sets {
                assert!(!labels.contains("ino=") && !labels.contains("blob=") && !labels.contains("path="), "{metric}");
            }
        }
    }
    for ((role, metric, label), seen) in some_seen {
        if !seen {
            missing.push(format!("no {role}: {metric}{{{label}}}"));
        }
    }
    missing
}

/// The names of every series the targets export now.
fn exported_names(targets: &[(String, String)]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, address) in targets {
        if let Ok((200, body)) = http_get(address, "/metrics") {
            names.extend(series(&body).into_keys());
        }
    }
    names
}

/// The metric names the Grafana dashboard's queries use.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/strata-dashboard.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let mut word = String::new();
            for c in expr.chars().chain([' ']) {
                if c.is_ascii_alphanumeric() || c == '_' {
                    word.push(c);
                    continue;
                }
                if word.starts_with("strata_") || word.starts_with("process_") {
                    names.insert(word.clone());
                }
                word.clear();
            }
        }
    }
    assert!(names.len() > 30, "the dashboard queries {} metrics: {names:?}", names.len());
    names
}

/// A Prometheus server scraping with `config`, stopped when dropped.
struct Prometheus {
    child: Child,
    address: String,
}

impl Prometheus {
    fn start(config: &Path, data: &Path, log: &Path) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("running prometheus (Debian package prometheus, installed by scripts/setup.sh)");
        Prometheus { child, address }
    }

    /// The result vector of an instant query, once Prometheus answers.
    fn query(&self, promql: &str) -> Vec<Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        let Ok((200, body)) = http_get(&self.address, &format!("/api/v1/query?query={encoded}")) else {
            return Vec::new();
        };
        let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_role_serves_metrics_and_a_real_prometheus_scrapes_them_all() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--mount", "mnt"]);
    let base = cluster.cluster_dir().parent().unwrap().to_path_buf();
    let mountpoint = base.join("mnt");

    // Work for every role: a write and a read through the mount, a request to the gateway.
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(mountpoint.join("sample.bin"), &data).unwrap();
    let file = std::fs::File::open(mountpoint.join("sample.bin")).unwrap();
    file.sync_all().unwrap();
    assert_eq!(std::fs::read(mountpoint.join("sample.bin")).unwrap(), data);
    let s3 = cluster.cluster_file()["s3"]["endpoint"].as_str().unwrap().trim_start_matches("http://").to_string();
    let (status, _) = http_get(&s3, "/").unwrap();
    assert_eq!(status, 403, "an anonymous ListBuckets is refused");
    // A failed lookup (counted by code), and a read from the datanodes past the mount's caches.
    assert!(std::fs::metadata(mountpoint.join("absent")).is_err());
    let fetched = cluster.strata(&["fs", "get", "default", "sample.bin"]);
    assert!(fetched.status.success() && fetched.stdout == data, "strata fs get");

    // Each process's own endpoint: the samplers run every 5 s.
    let targets = targets(&cluster);
    assert_eq!(targets.len(), 3 + 3 + 6 + 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = unmet(&targets);
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "series still missing after 60 s:\n{}", missing.join("\n"));
        std::thread::sleep(Duration::from_secs(2));
    }

    // Every metric the Grafana dashboard queries is one the cluster exports.
    let exported = exported_names(&targets);
    let unknown: Vec<String> = dashboard_metrics().difference(&exported).cloned().collect();
    assert!(unknown.is_empty(), "deploy/grafana/strata-dashboard.json queries metrics nobody exports: {unknown:?}");

    // A real Prometheus with the scrape configuration strata dev wrote.
    let config = cluster.cluster_dir().join("prometheus.yml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    for (_, address) in &targets {
        assert!(yaml.contains(address.as_str()), "{address} is not in prometheus.yml:\n{yaml}");
    }
    let prometheus = Prometheus::start(&config, &base.join("prometheus-data"), &base.join("prometheus.log"));
    let jobs: BTreeSet<String> =
        ["master", "metanode", "datanode", "s3", "mount"].iter().map(|r| format!("strata-{r}")).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let up: Vec<Value> = prometheus.query("up == 1");
        let per_role = prometheus.query("count by (role) (strata_build_info)");
        let roles: BTreeMap<String, String> = per_role
            .iter()
            .map(|s| (s["metric"]["role"].as_str().unwrap_or("").to_string(), s["value"][1].to_string()))
            .collect();
        let fuse = prometheus.query("sum(rate(strata_request_duration_seconds_count{service=\"fuse\"}[1m])) >= 0");
        let raft = prometheus.query("count by (job) (strata_raft_term)");
        let stored = prometheus.query("sum(strata_datanode_live_bytes)");
        let done = up.len() == targets.len()
            && roles.len() == jobs.len()
            && roles.get("datanode").is_some_and(|n| n == "\"6\"")
            && !fuse.is_empty()
            && raft.len() == 2
            && stored.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok()).is_some_and(|b| b >= 3e6);
        if done {
            let scraped: BTreeSet<String> =
                up.iter().map(|s| s["metric"]["job"].as_str().unwrap_or("").to_string()).collect();
            assert_eq!(scraped, jobs);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not see every role within 90 s: up {up:?}\nroles {roles:?}\nfuse {fuse:?}\nraft {raft:?}\n\
             stored {stored:?}\n{}",
            std::fs::read_to_string(base.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `--log-format json`: a role's log is one JSON object per line, with its
/// level, target and fields, and `--log-level` sets levels per module.
#[test]
fn json_logs_are_one_object_per_line_with_levels_per_module() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let log_path = dir.path().join("master.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut master = Command::new(common::STRATA)
        .args(["--log-format", "json", "--log-level", "warn,strata_master=info"])
        .args(["master", "--id", "1", "--listen", &listen, "--peer", &format!("1={listen}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log_path).unwrap().contains("master started") {
        assert!(master.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log_path).unwrap());
        assert!(Instant::now() < deadline, "no start line: {}", std::fs::read_to_string(&log_path).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    common::kill(master.id() as u64, libc::SIGTERM);
    master.wait().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object: {line:?}: {e}")))
        .collect();
    let started = events.iter().find(|e| e["fields"]["message"] == "master started").expect("the start event");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["target"], "strata_master::server");
    assert_eq!(started["fields"]["master_id"], 1);
    // strata_raftstore logs at info when a group elects a leader; its level here is warn.
    assert!(
        events.iter().all(|e| e["level"] != "INFO" || e["target"].as_str().unwrap_or("").starts_with("strata_master")),
        "an info event from outside strata_master passed `warn,strata_master=info`:\n{text}"
    );
}
