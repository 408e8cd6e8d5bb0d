//! The master's web console and the admin verbs around it, on a live
//! `strata dev` cluster: only keys of the `admin` user get in (a wrong
//! secret, another user's key, a tampered or expired link are refused); the
//! page, rendered by headless Chromium, shows the live cluster's nodes and a
//! volume created during the test; `strata events` and the console report a
//! datanode lost and back; `strata partition list|info` and `strata volume
//! expand` work with `--json`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::DevCluster;
use common::http::{Answer, request};
use serde_json::Value;

fn json(cluster: &DevCluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cluster.strata_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("strata {args:?} --json printed {out:?}: {e}"))
}

/// The query of a login link, with its signature replaced by `signature` if given.
fn link_path(url: &str, signature: Option<&str>) -> String {
    let path = &url[url.find("/login").expect("a login link")..];
    match signature {
        Some(other) => format!("{}signature={other}", &path[..path.find("signature=").unwrap()]),
        None => path.to_string(),
    }
}

fn session_cookie(answer: &Answer) -> String {
    assert_eq!(answer.status, 303, "a good login redirects: {answer:?}");
    let cookie = answer.header("set-cookie").expect("a session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    cookie.split(';').next().unwrap().to_string()
}

fn cluster_view(console: &str, cookie: &str) -> Value {
    let answer = request(console, "GET", "/api/cluster", &[("Cookie", cookie)], "").unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    serde_json::from_str(&answer.body).unwrap()
}

fn event_kinds(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
}

/// Headless Chromium's rendering of `url` after its scripts ran; with
/// `screenshot`, also a PNG of the page there.
fn chromium(url: &str, profile: &Path, screenshot: Option<&Path>) -> String {
    let mut command = Command::new("chromium");
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=8000", "--window-size=1400,2400"]);
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let out = command.arg(url).output().expect("running chromium (Debian package chromium, from scripts/setup.sh)");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_console_admits_only_admin_keys_and_shows_the_live_cluster() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let file = cluster.cluster_file();
    let console = file["nodes"][0]["console"].as_str().expect("masters get a console port").to_string();
    let volume = "console-test";
    cluster.strata_ok(&["volume", "create", volume, "--redundancy", "replica:2", "--capacity", "10GiB"]);

    // Refusals: no session, a wrong secret, a key of another user, a tampered link.
    let root = request(&console, "GET", "/", &[], "").unwrap();
    assert_eq!((root.status, root.header("location")), (303, Some("/login")));
    assert_eq!(request(&console, "GET", "/api/cluster", &[], "").unwrap().status, 401);
    let admin_id = file["admin"]["access_key_id"].as_str().unwrap();
    let admin_secret = file["admin"]["secret_access_key"].as_str().unwrap();
    let form = |id: &str, secret: &str| format!("access_key_id={id}&secret_access_key={secret}");
    let post = |body: String| {
        request(&console, "POST", "/login", &[("Content-Type", "application/x-www-form-urlencoded")], &body).unwrap()
    };
    assert_eq!(post(form(admin_id, "wrong")).status, 401);
    let dev_id = file["s3"]["access_key_id"].as_str().unwrap();
    let dev_secret = file["s3"]["secret_access_key"].as_str().unwrap();
    assert_eq!(post(form(dev_id, dev_secret)).status, 401, "the dev user is no admin");
    let url: Value = json(&cluster, &["console", "url", "--minutes", "5"]);
    let url = url["url"].as_str().unwrap().to_string();
    assert!(!url.contains(admin_secret), "a login link carries no secret");
    let tampered = request(&console, "GET", &link_path(&url, Some(&"0".repeat(64))), &[], "").unwrap();
    assert_eq!(tampered.status, 401);
    let expired = format!("/login?key={admin_id}&expires=1&signature={}", "0".repeat(64));
    assert_eq!(request(&console, "GET", &expired, &[], "").unwrap().status, 401);

    // The form and the link both open a session.
    session_cookie(&post(form(admin_id, admin_secret)));
    let cookie = session_cookie(&request(&console, "GET", &link_path(&url, None), &[], "").unwrap());
    let view = cluster_view(&console, &cookie);
    assert_eq!(view["nodes"].as_array().unwrap().len(), 9, "3 metanodes and 6 datanodes: {view:#}");
    assert_eq!(view["masters"].as_array().unwrap().len(), 3);
    assert!(view["leader"]["id"].as_u64().is_some());
    let ours = view["volumes"].as_array().unwrap().iter().find(|v| v["name"] == volume).expect("the new volume");
    assert_eq!((ours["redundancy"].as_str(), ours["capacity_bytes"].as_u64()), (Some("replica:2"), Some(10 << 30)));
    assert!(!ours["data_partitions"].as_array().unwrap().is_empty());

    // The page as a browser renders it: the nodes and the new volume.
    let base = cluster.cluster_dir().parent().unwrap().to_path_buf();
    let dom = chromium(&url, &base.join("chromium"), None);
    assert!(dom.contains(volume), "the rendered page does not show {volume}:\n{dom}");
    for node in file["nodes"].as_array().unwrap().iter().filter(|n| n["role"] != "master") {
        let address = node["address"].as_str().unwrap();
        assert!(dom.contains(address), "the rendered page does not show node {address}");
    }
    assert!(dom.contains("live · updated"), "the page did not refresh from the API:\n{dom}");

    // Events: the new volume, then a datanode lost and back.
    let events = json(&cluster, &["events"]);
    let kinds = event_kinds(&events);
    assert!(kinds.contains(&"leader_changed".to_string()), "{kinds:?}");
    assert!(
        events.as_array().unwrap().iter().any(|e| e["kind"] == "volume_created" && e["volume"] == volume),
        "{events:#}"
    );
    let victim = cluster.nodes_of("datanode")[0]["id"].as_u64().unwrap();
    common::kill(cluster.pid_of(victim), libc::SIGKILL);
    let lost = |events: &Value, kind: &str| {
        events.as_array().unwrap().iter().any(|e| e["kind"] == kind && e["node_id"].as_u64() == Some(victim))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lost(&json(&cluster, &["events"]), "node_lost") {
        assert!(Instant::now() < deadline, "no node_lost event for datanode {victim}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let view = cluster_view(&console, &cookie);
    let shown = view["nodes"].as_array().unwrap().iter().find(|n| n["id"].as_u64() == Some(victim)).unwrap().clone();
    assert_eq!(shown["state"], "dead");
    assert!(lost(&view["events"], "node_lost"), "the console shows the event");
    cluster.restart(victim);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lost(&json(&cluster, &["events"]), "node_back") {
        assert!(Instant::now() < deadline, "no node_back event for datanode {victim}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Partitions and expansion, as scripts read them.
    let partitions = json(&cluster, &["partition", "list", volume]);
    let partitions = partitions.as_array().unwrap();
    assert!(partitions.iter().any(|p| p["kind"] == "meta") && partitions.iter().any(|p| p["kind"] == "data"));
    let data = partitions.iter().find(|p| p["kind"] == "data").unwrap();
    assert_eq!(data["replicas"].as_array().unwrap().len(), 2, "replica:2: {data:#}");
    let id = data["id"].as_u64().unwrap().to_string();
    let info = json(&cluster, &["partition", "info", &id]);
    assert!(info.as_array().unwrap().iter().any(|p| p["volume"] == volume && p["kind"] == "data"), "{info:#}");
    assert!(!cluster.strata(&["partition", "info", "999999"]).status.success(), "an unknown partition is an error");
    let expanded = json(&cluster, &["volume", "expand", volume, "20GiB"]);
    assert_eq!(expanded["capacity_bytes"].as_u64(), Some(20 << 30));
    assert_eq!(json(&cluster, &["volume", "info", volume])["capacity_bytes"].as_u64(), Some(20 << 30));
    assert!(!cluster.strata(&["volume", "expand", volume, "lots"]).status.success(), "a bad size is an error");

    // The other admin verbs answer --json too.
    let user = json(&cluster, &["user", "create", "ops"]);
    let key = user["access_keys"][0][0].as_str().expect("a new user's key").to_string();
    assert_eq!(json(&cluster, &["key", "delete", &key])["deleted_access_key_id"], key.as_str());
    assert_eq!(json(&cluster, &["user", "delete", "ops"])["deleted_user"], "ops");
    cluster.strata_ok(&["fs", "mkdir", volume, "q"]);
    let set = json(&cluster, &["quota", "set", volume, "q", "--bytes", "1MiB", "--files", "10"]);
    let root = set[0]["root"].as_u64().unwrap();
    let got = json(&cluster, &["quota", "get", volume, "q"]);
    assert_eq!((got[0]["root"].as_u64(), got[0]["max_bytes"].as_u64()), (Some(root), Some(1 << 20)));
    assert!(!cluster.strata(&["quota", "get", volume, "/"]).status.success(), "the root has no quota");
    assert_eq!(json(&cluster, &["quota", "remove", volume, "q"])["removed_quota_root"].as_u64(), Some(root));
    let grant = json(&cluster, &["bucket", "allow", dev_id, volume, "--read"]);
    assert_eq!(grant["level"], "read");

    // docs/figures/console.png is made this way.
    if let Ok(path) = std::env::var("STRATA_CONSOLE_SCREENSHOT") {
        chromium(&link_path_url(&console, &cluster), &base.join("chromium-shot"), Some(Path::new(&path)));
    }
}

/// A fresh login link for a screenshot (the first one may have expired).
fn link_path_url(console: &str, cluster: &DevCluster) -> String {
    let url = json(cluster, &["console", "url", "--console", console]);
    url["url"].as_str().unwrap().to_string()
}
