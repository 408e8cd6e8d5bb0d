//! Delegations through real processes: a client answering lookups,
//! attributes and extents from its grants must never answer from a grant a
//! change by another client has voided, once that change was acknowledged;
//! neither when the leader that granted it stops answering.

mod common;

use std::time::{Duration, Instant};

use common::*;
use strata_common::ErrorCode;
use strata_sdk::MetaClient;
use strata_sdk::types::{Attr, SetAttr};

const ROOT: u64 = 1;
const WINDOW: u64 = 1 << 20;

async fn client(masters: Vec<String>, delegations: bool) -> MetaClient {
    let meta = open_volume(masters).await;
    if delegations {
        meta.enable_delegations();
        // Recall streams open before grants are given.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    meta
}

/// What a reader sees of a name: the inode's number, mode and size, or the error code.
async fn view(meta: &MetaClient, dir: u64, name: &str) -> Result<(u64, u32, u64, u64), ErrorCode> {
    let found = meta.lookup(dir, name.as_bytes()).await.map_err(|e| e.code)?;
    let attrs = meta.getattr(found.ino).await.map_err(|e| e.code)?;
    let (_, opened) = meta.get_extents_and_inode(found.ino, 0, WINDOW).await.map_err(|e| e.code)?;
    assert_eq!(attrs.size, opened.size, "attributes and extents of {name} disagree");
    Ok((found.ino, found.mode(), found.size, attrs.mode() as u64))
}

fn chmod(ino: u64, mode: u32) -> SetAttr {
    SetAttr { ino, mode: Some(mode), ..Default::default() }
}

fn truncate(ino: u64, size: u64) -> SetAttr {
    SetAttr { ino, size: Some(size), ..Default::default() }
}

#[test]
fn changes_by_one_client_are_seen_at_once_by_another_holding_grants() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let reader = runtime.block_on(client(cluster.masters(), true));
    let writer = runtime.block_on(client(cluster.masters(), true));
    let oracle = runtime.block_on(client(cluster.masters(), false));
    runtime.block_on(async {
        // Directories land on different partitions: renames between them are transactions.
        let dirs = [
            writer.mkdir(ROOT, b"a", 0o755, 0, 0).await.unwrap().ino,
            writer.mkdir(ROOT, b"b", 0o755, 0, 0).await.unwrap().ino,
        ];
        let names = ["f0", "f1", "f2", "f3"];
        for name in names {
            writer.create(dirs[0], name.as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0).await.unwrap();
        }
        let mut rng = 0x2026_1130_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for step in 0..300 {
            // Read everything first, so the reader holds grants on all of it.
            for dir in dirs {
                for name in names {
                    let _ = view(&reader, dir, name).await;
                }
            }
            let dir = dirs[next(2) as usize];
            let name = names[next(names.len() as u64) as usize];
            // Most changes come from the writer; some from the reader itself.
            let changer = if next(4) == 0 { &reader } else { &writer };
            let found: Option<Attr> = changer.lookup(dir, name.as_bytes()).await.ok();
            let what = match (next(5), found) {
                (0, Some(f)) => {
                    changer.setattr(chmod(f.ino, libc::S_IFREG | (0o600 + next(0o100) as u32))).await.map(drop)
                }
                (1, Some(f)) => changer.setattr(truncate(f.ino, next(10_000))).await.map(drop),
                (2, Some(_)) => {
                    let to = dirs[next(2) as usize];
                    let to_name = names[next(names.len() as u64) as usize];
                    changer.rename(dir, name.as_bytes(), to, to_name.as_bytes(), 0).await.map(drop)
                }
                (3, Some(_)) => changer.unlink(dir, name.as_bytes()).await.map(drop),
                (_, None) => changer.create(dir, name.as_bytes(), libc::S_IFREG | 0o644, 0, 0, 0).await.map(drop),
                (_, Some(f)) => changer.setattr(chmod(f.ino, libc::S_IFREG | 0o640)).await.map(drop),
            };
            if let Err(e) = what {
                // Renaming over a name in use by the same inode and the like: nothing changed.
                assert!(!e.is_retryable(), "step {step}: {e}");
            }
            // Acknowledged: every reader sees it now, exactly as a client without grants does.
            for dir in dirs {
                for name in names {
                    let seen = view(&reader, dir, name).await;
                    let truth = view(&oracle, dir, name).await;
                    assert_eq!(seen, truth, "step {step}: {name} in directory {dir}");
                }
            }
        }
        let before = reader.delegation_hits();
        for name in names {
            let _ = view(&reader, dirs[0], name).await;
        }
        assert!(reader.delegation_hits() > before, "an unchanged namespace is read from grants");
        assert_eq!(oracle.delegation_hits(), 0);
    });
}

#[test]
fn a_stopped_leader_s_grants_do_not_outlive_a_change_through_its_successor() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let reader = runtime.block_on(client(cluster.masters(), true));
    let writer = runtime.block_on(client(cluster.masters(), false));
    runtime.block_on(async {
        let file = writer.create(ROOT, b"f", libc::S_IFREG | 0o644, 0, 0, 0).await.unwrap();
        reader.getattr(file.ino).await.unwrap();
        let hits = reader.delegation_hits();
        assert_eq!(reader.getattr(file.ino).await.unwrap().mode() & 0o777, 0o644);
        assert_eq!(reader.delegation_hits(), hits + 1, "the second read came from the grant");

        let partition = writer.partition_id_of(file.ino).unwrap();
        writer.getattr(file.ino).await.unwrap();
        let leader = writer.partition_leader(partition).expect("a known leader");
        let pid = cluster.pid_of(cluster.node_at(&leader));
        kill(pid, libc::SIGSTOP);
        let started = Instant::now();
        let changed = writer.setattr(chmod(file.ino, libc::S_IFREG | 0o600)).await;
        let took = started.elapsed();
        let seen = reader.getattr(file.ino).await;
        kill(pid, libc::SIGCONT);
        changed.expect("the change went through a new leader");
        eprintln!("the change through the new leader took {took:?}");
        assert_eq!(seen.expect("the reader reads on").mode() & 0o777, 0o600);
    });
}
