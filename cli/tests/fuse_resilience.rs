//! A busy mount while nodes die or hang: the leader metanode of the root's
//! partition and a datanode are killed with SIGKILL, or stopped with SIGSTOP,
//! under a stream of writes and reads. Applications must see operations
//! pause, never fail.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

    let stop = Arc::new(AtomicBool::new(false));
    let workers = busy(&dir, &stop, &Arc::new(AtomicU64::new(0)));

    // Kill the leader of the root's partition, then a datanode; restart the metanode.
    let metanode = root_partition_leader(&cluster).await;
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

/// A hung node (stopped, as a node cut off by the network is: its
/// connections stay open and silent) must not hold the mount up until it
/// comes back: files are written and read back while it is still stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_mount_goes_on_while_a_metanode_leader_and_a_datanode_hang() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let mount = Mount::new(&cluster, "mnt");
    let dir = mount.path.join("busy");
    std::fs::create_dir_all(&dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers = busy(&dir, &stop, &done);

    let metanode = root_partition_leader(&cluster).await;
    let datanode = cluster.nodes_of("datanode")[0]["id"].as_u64().unwrap();
    let mut while_hung = Vec::new();
    for node in [metanode, datanode] {
        kill(cluster.pid_of(node), libc::SIGSTOP);
        let before = done.load(Ordering::Relaxed);
        tokio::time::sleep(HUNG_FOR).await;
        while_hung.push((node, done.load(Ordering::Relaxed) - before));
        kill(cluster.pid_of(node), libc::SIGCONT);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a worker saw an error");
    }
    for (node, files) in while_hung {
        eprintln!("{files} files written and read back in {HUNG_FOR:?} while node {node} was stopped");
        assert!(files > 0, "the mount waited for stopped node {node} to come back");
    }
}

/// The metanode leading the root's partition, a few seconds into the run.
async fn root_partition_leader(cluster: &DevCluster) -> u64 {
    let master = MasterClient::new(cluster.masters()).unwrap();
    let meta = MetaClient::open(&master, "default").await.unwrap();
    meta.getattr(ROOT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let partition = meta.partition_id_of(ROOT).unwrap();
    cluster.node_at(&meta.partition_leader(partition).expect("a known leader"))
}

/// How long a node stays stopped: well beyond the time it takes to notice
/// (seconds), well below the time calls to it take to give up (tens of seconds).
const HUNG_FOR: Duration = Duration::from_secs(12);

/// Writers and readers on the mount, in plain threads, as applications are:
/// each writes a file, reads it back and lists the directory, until `stop`;
/// `done` counts the files. Each thread answers how many it did.
fn busy(dir: &Path, stop: &Arc<AtomicBool>, done: &Arc<AtomicU64>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..2u64)
        .map(|w| {
            let (dir, stop, done_all) = (dir.to_path_buf(), stop.clone(), done.clone());
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
                    done_all.fetch_add(1, Ordering::Relaxed);
                }
                done
            })
        })
        .collect()
}
