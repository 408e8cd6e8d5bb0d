//! A busy mount while nodes die: the leader metanode of the root's partition
//! and a datanode are killed with SIGKILL under a stream of writes and reads.
//! Applications must see operations pause, never fail.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use strata_bench::data::contents;
use strata_sdk::{MasterClient, MetaClient};

const ROOT: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_mount_rides_out_a_metanode_leader_and_a_datanode_dying() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let mount = Mount::new(&cluster, "mnt");
    let dir = mount.path.join("busy");
    std::fs::create_dir_all(&dir).unwrap();

    // Writers and readers on the mount, in plain threads, as applications are.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) || done < 5 {
                    let seed = w * 1_000_000 + done;
                    let path = dir.join(format!("w{w}-{done}"));
                    let data = contents(seed, 1_500_000);
                    std::fs::write(&path, &data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
                    let back = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                    assert!(back == data, "{} reads back different bytes", path.display());
                    let names = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing: {e}")).count();
                    assert!(names as u64 > done, "listing lost files");
                    done += 1;
                }
                done
            })
        })
        .collect();

    // Kill the leader of the root's partition, then a datanode; restart the metanode.
    let master = MasterClient::new(cluster.masters()).unwrap();
    let meta = MetaClient::open(&master, "default").await.unwrap();
    meta.getattr(ROOT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let partition = meta.partition_id_of(ROOT).unwrap();
    let leader = meta.partition_leader(partition).expect("a known leader");
    let metanode = cluster.node_at(&leader);
    kill(cluster.pid_of(metanode), libc::SIGKILL);
    let datanode = cluster.nodes_of("datanode")[0]["id"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    kill(cluster.pid_of(datanode), libc::SIGKILL);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.restart(metanode);
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.join().expect("a worker saw an error");
    }
    eprintln!("{total} files written and read back while metanode {metanode} and datanode {datanode} died");
    assert!(total >= 10);
}
