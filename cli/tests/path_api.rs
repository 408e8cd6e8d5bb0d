//! The sdk's path API (`strata_sdk::fs::Volume`) against a live `strata dev`
//! cluster: what the S3 gateway and the CSI driver will build on. Concurrent
//! `mkdir -p`, atomic replaces under readers, a writer killed mid-write, and
//! paged listings of a directory that changes while it is listed.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use strata_common::ErrorCode;
use strata_sdk::cache::{BlockCache, CacheConfig, DEFAULT_BLOCK_SIZE};
use strata_sdk::data::DataClient;
use strata_sdk::fs::{CreateOptions, TEMP_DIR, Volume};
use strata_sdk::{MasterClient, MetaClient};

/// A client of the default volume, as a front end would open it.
async fn client(masters: Vec<String>) -> Volume {
    let meta = open_volume(masters.clone()).await;
    let master = MasterClient::new(masters).unwrap();
    let data = Arc::new(DataClient::open(&master, "default").await.unwrap());
    let config = CacheConfig {
        mem_bytes: 32 << 20,
        disk_dir: None,
        disk_bytes: 0,
        block_size: DEFAULT_BLOCK_SIZE,
        disk_direct_io: false,
        shared_tier: false,
    };
    let cache = BlockCache::new(data.clone(), &config).unwrap();
    Volume::from_parts(Arc::new(meta), data, cache)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Content of `version`: its number, pseudo-random bytes, and a CRC32 of all before it.
fn versioned(version: u64) -> Vec<u8> {
    // Sizes cross the 4 MiB blob size now and then: a mix of two versions would span blobs.
    let len = [100 << 10, 5 << 20, 300 << 10, 4 << 20][(version % 4) as usize];
    let mut out = Vec::with_capacity(len + 12);
    out.extend_from_slice(&version.to_be_bytes());
    let mut x = version.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len + 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes()[..4]);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The version `bytes` hold if they are one version whole.
fn version_of(bytes: &[u8]) -> Option<u64> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_be_bytes() != crc {
        return None;
    }
    Some(u64::from_be_bytes(body.get(..8)?.try_into().ok()?))
}

/// Names in `path`, read page by page.
async fn names_in(volume: &Volume, path: &[u8], page: u32) -> Vec<Vec<u8>> {
    let mut after = Vec::new();
    let mut names = Vec::new();
    loop {
        let listed = volume.list(path, &after, page).await.unwrap();
        names.extend(listed.entries.into_iter().map(|e| e.name));
        match listed.next {
            Some(next) => after = next,
            None => return names,
        }
    }
}

#[test]
fn the_path_api_holds_under_races_replaces_crashes_and_changing_listings() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let rt = runtime();
    let (one, two) = rt.block_on(async { (client(cluster.masters()).await, client(cluster.masters()).await) });

    // 1. mkdir -p of the same deep paths by two clients at once: no error, one directory each.
    rt.block_on(async {
        for round in 0..10 {
            let path = format!("races/r{round}/a/b/c");
            let (a, b) = tokio::join!(one.mkdir_p(path.as_bytes()), two.mkdir_p(path.as_bytes()));
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.ino, b.ino, "both clients see one directory at {path}");
            assert!(a.is_dir());
        }
        let listed = names_in(&one, b"races", 3).await;
        assert_eq!(listed.len(), 10, "{listed:?}");
        // Bad paths get their codes, and nothing is made.
        assert_eq!(one.mkdir_p(b"races//x").await.unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(one.mkdir_p(b"races/../x").await.unwrap_err().code, ErrorCode::InvalidArgument);
        let long = format!("races/{}", "n".repeat(256));
        assert_eq!(one.mkdir_p(long.as_bytes()).await.unwrap_err().code, ErrorCode::NameTooLong);
        one.write_all(b"races/file", b"x", CreateOptions::default()).await.unwrap();
        assert_eq!(one.mkdir_p(b"races/file/sub").await.unwrap_err().code, ErrorCode::NotDir);
        assert_eq!(one.stat(b"races/missing").await.unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(one.open(b"races").await.unwrap_err().code, ErrorCode::IsDir);
        assert_eq!(names_in(&one, b"races", 100).await.len(), 11);
    });

    // 2. An atomic replace under 8 readers: every read is one version whole.
    rt.block_on(async {
        one.write_all(b"replace/f", &versioned(0), CreateOptions { make_parents: true, no_replace: false })
            .await
            .unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for r in 0..8 {
            let volume = if r % 2 == 0 { one.clone() } else { two.clone() };
            let (done, reads) = (done.clone(), reads.clone());
            readers.push(tokio::spawn(async move {
                let mut last = 0;
                let mut seen = BTreeSet::new();
                while !done.load(Ordering::SeqCst) {
                    let bytes = volume.read_all(b"replace/f").await.unwrap();
                    let version =
                        version_of(&bytes).unwrap_or_else(|| panic!("reader {r} saw a mix ({} bytes)", bytes.len()));
                    assert!(version >= last, "reader {r} went back from version {last} to {version}");
                    last = version;
                    seen.insert(version);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                seen
            }));
        }
        for version in 1..=20 {
            one.write_all(b"replace/f", &versioned(version), CreateOptions::default()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        done.store(true, Ordering::SeqCst);
        let mut versions_seen = BTreeSet::new();
        for reader in readers {
            versions_seen.extend(reader.await.unwrap());
        }
        assert_eq!(version_of(&two.read_all(b"replace/f").await.unwrap()), Some(20));
        assert!(versions_seen.len() > 2, "readers overlapped the replaces: {versions_seen:?}");
        println!("replace: {} whole reads over {} versions", reads.load(Ordering::Relaxed), versions_seen.len());
        // A put that may not replace leaves the file as it was.
        let refused =
            one.write_all(b"replace/f", b"new", CreateOptions { make_parents: false, no_replace: true }).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::AlreadyExists);
        assert_eq!(version_of(&one.read_all(b"replace/f").await.unwrap()), Some(20));
    });

    // 3. A writer killed mid-write: the old content stays, no temporary is visible, and it is reclaimed.
    let masters = cluster.masters().join(",");
    let mut writer = Command::new(STRATA)
        .args(["--master", &masters, "fs", "put", "default", "replace/f"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    // More blobs than a writer keeps in flight: some are committed to the temporary's inode.
    stdin.write_all(&vec![7u8; 26 << 20]).unwrap();
    stdin.flush().unwrap();
    let temp_dir = rt.block_on(one.meta().lookup(1, TEMP_DIR)).unwrap().ino;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (temps, _) = rt.block_on(one.meta().readdir(temp_dir, b"", 100, false)).unwrap();
        let size = temps.first().map(|t| rt.block_on(one.meta().getattr(t.ino)).unwrap().size).unwrap_or(0);
        if size > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the writer never committed part of its file");
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(writer.id() as u64, libc::SIGKILL);
    writer.wait().unwrap();
    drop(stdin);
    rt.block_on(async {
        assert_eq!(version_of(&two.read_all(b"replace/f").await.unwrap()), Some(20), "the old content stays");
        let root = names_in(&two, b"/", 100).await;
        assert!(!root.iter().any(|n| n == TEMP_DIR), "the temporaries' directory is not listed: {root:?}");
        let (temps, _) = one.meta().readdir(temp_dir, b"", 100, false).await.unwrap();
        assert_eq!(temps.len(), 1, "the dead writer's temporary is left");
        assert_eq!(one.reclaim_temporaries(Duration::from_secs(3600)).await.unwrap(), 0, "too young to reclaim");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(one.reclaim_temporaries(Duration::from_secs(1)).await.unwrap(), 1);
        let (temps, _) = one.meta().readdir(temp_dir, b"", 100, false).await.unwrap();
        assert!(temps.is_empty(), "{temps:?}");
    });

    // 4. 10,000 names listed by pages of 1,000 while another client adds and removes others.
    rt.block_on(async {
        one.mkdir_p(b"many").await.unwrap();
        let dir = one.stat(b"many").await.unwrap().ino;
        let meta: &MetaClient = one.meta();
        let create = |i: usize| async move {
            meta.create(dir, format!("keep-{i:05}").as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0).await.map(drop)
        };
        let mut pending = futures::stream::iter((0..10_000).map(create)).buffer_unordered(16);
        while let Some(created) = pending.next().await {
            created.unwrap();
        }
        drop(pending);
        let churn_done = Arc::new(AtomicBool::new(false));
        let churner = {
            let (volume, done) = (two.clone(), churn_done.clone());
            tokio::spawn(async move {
                let meta = volume.meta().clone();
                let mut i = 0u64;
                while !done.load(Ordering::SeqCst) {
                    // Names that sort among the kept ones, before and after the cursor.
                    let name = format!("keep-{:05}-churn-{i}", (i * 7919) % 10_000);
                    meta.create(dir, name.as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0).await.unwrap();
                    if i.is_multiple_of(2) {
                        meta.unlink(dir, name.as_bytes()).await.unwrap();
                    }
                    i += 1;
                }
                i
            })
        };
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut after = Vec::new();
        let mut pages = 0;
        loop {
            let page = one.list(b"many", &after, 1000).await.unwrap();
            pages += 1;
            assert!(page.entries.windows(2).all(|w| w[0].name < w[1].name), "a page is in name order");
            assert!(page.entries.first().is_none_or(|e| e.name > after), "a page starts after its cursor");
            for entry in page.entries {
                *counts.entry(entry.name).or_default() += 1;
            }
            match page.next {
                Some(next) => after = next,
                None => break,
            }
            // Give the other client time to change the directory between pages.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        churn_done.store(true, Ordering::SeqCst);
        let churned = churner.await.unwrap();
        for i in 0..10_000 {
            let name = format!("keep-{i:05}").into_bytes();
            assert_eq!(counts.get(&name), Some(&1), "{} listed once", String::from_utf8_lossy(&name));
        }
        assert!(counts.values().all(|c| *c == 1), "no name listed twice");
        assert!(churned > 0, "the other client changed the directory meanwhile");
        println!("listing: {pages} pages, {} names, {churned} concurrent changes", counts.len());
    });

    // The namespace stayed consistent through all of it.
    let fsck = cluster.strata(&["fsck", "default"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
}
