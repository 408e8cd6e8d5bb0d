//! A volume's trash on a live `strata dev` cluster: with `strata volume set
//! --trash-hours`, a file deleted on the mount or through the path API is
//! kept in the trash, listed, restored where it was (never over a file) or
//! elsewhere, and purged (young entries survive a purge by retention, all
//! go with `--all`); a hard link's other name and directories are not kept.

mod common;

use std::time::{Duration, Instant};

use common::{DevCluster, Mount};
use serde_json::Value;

fn json(cluster: &DevCluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cluster.strata_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("strata {args:?} --json printed {out:?}: {e}"))
}

fn trash(cluster: &DevCluster) -> Vec<Value> {
    json(cluster, &["trash", "list", "default"]).as_array().unwrap().clone()
}

fn fetch(cluster: &DevCluster, path: &str) -> Option<Vec<u8>> {
    let out = cluster.strata(&["fs", "get", "default", path]);
    out.status.success().then_some(out.stdout)
}

#[test]
fn deleted_files_are_kept_restored_and_purged() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let set = json(&cluster, &["volume", "set", "default", "--trash-hours", "2"]);
    assert_eq!(set["trash_secs"].as_u64(), Some(7200));
    assert!(!cluster.strata(&["volume", "set", "default"]).status.success(), "nothing to set is an error");
    let mount = Mount::new(&cluster, "mnt");
    let dir = mount.path.join("a");
    std::fs::create_dir(&dir).unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("b.txt"), &content).unwrap();

    // rm on the mount keeps the file.
    std::fs::remove_file(dir.join("b.txt")).unwrap();
    assert!(!dir.join("b.txt").exists());
    let kept = trash(&cluster);
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!((kept[0]["name"].as_str(), kept[0]["size"].as_u64()), (Some("b.txt"), Some(content.len() as u64)));
    let expires = kept[0]["expires_at_ms"].as_u64().unwrap() - kept[0]["deleted_at_ms"].as_u64().unwrap();
    assert_eq!(expires, 7_200_000);
    let entry = kept[0]["entry"].as_str().unwrap().to_string();

    // Restored where it was, whole.
    cluster.strata_ok(&["trash", "restore", "default", &entry]);
    assert_eq!(fetch(&cluster, "a/b.txt").as_deref(), Some(content.as_slice()));
    assert!(trash(&cluster).is_empty());

    // Never over a file that took its name; elsewhere with --to.
    std::fs::remove_file(dir.join("b.txt")).unwrap();
    std::fs::write(dir.join("b.txt"), b"newer").unwrap();
    let entry = trash(&cluster)[0]["entry"].as_str().unwrap().to_string();
    let refused = cluster.strata(&["trash", "restore", "default", &entry]);
    assert!(!refused.status.success(), "a restore replaced a file");
    assert_eq!(fetch(&cluster, "a/b.txt").as_deref(), Some(&b"newer"[..]));
    cluster.strata_ok(&["trash", "restore", "default", &entry, "--to", "a/b.old"]);
    assert_eq!(fetch(&cluster, "a/b.old").as_deref(), Some(content.as_slice()));

    // The path API keeps what it removes; a hard link's other name is not
    // kept (the file lives on), nor is a directory.
    cluster.strata_ok(&["fs", "rm", "default", "a/b.old"]);
    std::fs::hard_link(dir.join("b.txt"), dir.join("b.link")).unwrap();
    std::fs::remove_file(dir.join("b.link")).unwrap();
    std::fs::create_dir(dir.join("empty")).unwrap();
    std::fs::remove_dir(dir.join("empty")).unwrap();
    let names: Vec<String> = trash(&cluster).iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["b.old"]);

    // Purging by retention keeps young entries; --all empties the trash.
    assert_eq!(json(&cluster, &["trash", "purge", "default"])["purged"].as_u64(), Some(0));
    assert_eq!(trash(&cluster).len(), 1);
    assert_eq!(json(&cluster, &["trash", "purge", "default", "--all"])["purged"].as_u64(), Some(1));
    assert!(trash(&cluster).is_empty());
    // What was purged is reclaimed: the namespace checks clean.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fsck = cluster.strata(&["fsck", "default"]);
        if fsck.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "fsck: {}", String::from_utf8_lossy(&fsck.stdout));
        std::thread::sleep(Duration::from_millis(500));
    }

    // Off again: a delete removes the file.
    json(&cluster, &["volume", "set", "default", "--trash-hours", "0"]);
    cluster.strata_ok(&["fs", "rm", "default", "a/b.txt"]);
    assert!(trash(&cluster).is_empty());
    assert_eq!(fetch(&cluster, "a/b.txt"), None);
}
