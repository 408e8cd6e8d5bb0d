//! Metadata operations per second through the sdk (create, stat, readdir,
//! rename, unlink) by N concurrent clients, each in its own directory, and
//! the same workload on a local directory in the same run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use strata_sdk::MetaClient;

use crate::report::Row;

const ROOT: u64 = 1;
pub const PHASES: [&str; 5] = ["create", "stat", "readdir", "rename", "unlink"];

fn name(i: usize) -> Vec<u8> {
    format!("file-{i:08}").into_bytes()
}

/// Runs `work(client)` for every client at once; returns the elapsed seconds.
async fn timed<F, Fut>(clients: usize, work: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients).map(|c| tokio::spawn(work(c))).collect();
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn renamed(i: usize) -> Vec<u8> {
    let mut to = name(i);
    to.extend_from_slice(b".renamed");
    to
}

/// One client's share of phase `op` (an index into [`PHASES`]) in directory `dir`.
async fn strata_phase(meta: Arc<MetaClient>, op: usize, dir: u64, files: usize) -> anyhow::Result<()> {
    match op {
        0 => {
            for i in 0..files {
                meta.create(dir, &name(i), libc::S_IFREG | 0o644, 0, 0, 0).await?;
            }
        }
        1 => {
            for i in 0..files {
                meta.lookup(dir, &name(i)).await?;
            }
        }
        2 => {
            let (mut after, mut seen) = (Vec::new(), 0);
            loop {
                let (page, more) = meta.readdir(dir, &after, 1024, true).await?;
                seen += page.len();
                after = page.last().map(|e| e.name.clone()).unwrap_or_default();
                if !more {
                    break;
                }
            }
            anyhow::ensure!(seen == files, "readdir saw {seen} of {files}");
        }
        3 => {
            for i in 0..files {
                meta.rename(dir, &name(i), dir, &renamed(i), 0).await?;
            }
        }
        _ => {
            for i in 0..files {
                let inode = meta.unlink(dir, &renamed(i)).await?;
                // Nobody holds it open: let the partition reclaim it.
                meta.evict(inode.ino).await?;
            }
        }
    }
    Ok(())
}

/// The five phases on Strata: seconds per phase.
pub async fn strata_phases(
    meta: Arc<MetaClient>,
    run: &str,
    clients: usize,
    files_per_client: usize,
) -> anyhow::Result<Vec<f64>> {
    let top = meta.mkdir(ROOT, format!("bench-{run}-{clients}").as_bytes(), 0o755, 0, 0).await?.ino;
    let mut dirs = Vec::new();
    for c in 0..clients {
        dirs.push(meta.mkdir(top, format!("c{c}").as_bytes(), 0o755, 0, 0).await?.ino);
    }
    let mut secs = Vec::new();
    for op in 0..PHASES.len() {
        let (meta, dirs) = (meta.clone(), dirs.clone());
        secs.push(timed(clients, move |c| strata_phase(meta.clone(), op, dirs[c], files_per_client)).await?);
    }
    Ok(secs)
}

/// The same five phases with std::fs on a local directory.
pub async fn local_phases(base: &Path, run: &str, clients: usize, files_per_client: usize) -> anyhow::Result<Vec<f64>> {
    let top = base.join(format!("bench-{run}-{clients}"));
    let dirs: Arc<Vec<PathBuf>> = Arc::new((0..clients).map(|c| top.join(format!("c{c}"))).collect());
    for d in dirs.iter() {
        std::fs::create_dir_all(d)?;
    }
    let file = |dir: &Path, i: usize| dir.join(String::from_utf8(name(i)).unwrap());
    let phase = |op: usize| {
        let dirs = dirs.clone();
        move |c: usize| {
            let dir = dirs[c].clone();
            async move {
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    match op {
                        0 => (0..files_per_client).try_for_each(|i| std::fs::File::create(file(&dir, i)).map(drop))?,
                        1 => (0..files_per_client).try_for_each(|i| std::fs::metadata(file(&dir, i)).map(drop))?,
                        2 => {
                            let seen = std::fs::read_dir(&dir)?
                                .map(|e| e.and_then(|e| e.metadata()))
                                .collect::<Result<Vec<_>, _>>()?
                                .len();
                            anyhow::ensure!(seen == files_per_client, "readdir saw {seen}");
                        }
                        3 => (0..files_per_client).try_for_each(|i| {
                            std::fs::rename(file(&dir, i), file(&dir, i).with_extension("renamed"))
                        })?,
                        _ => (0..files_per_client)
                            .try_for_each(|i| std::fs::remove_file(file(&dir, i).with_extension("renamed")))?,
                    }
                    Ok(())
                })
                .await?
            }
        }
    };
    let mut secs = Vec::new();
    for op in 0..PHASES.len() {
        secs.push(timed(clients, phase(op)).await?);
    }
    std::fs::remove_dir_all(&top)?;
    Ok(secs)
}

/// Runs both, alternating, and returns one row per phase.
pub async fn compare(
    meta: Arc<MetaClient>,
    local: &Path,
    clients: usize,
    files_per_client: usize,
) -> anyhow::Result<Vec<Row>> {
    let run = format!("{}", std::process::id());
    let baseline = local_phases(local, &run, clients, files_per_client).await?;
    let strata = strata_phases(meta, &run, clients, files_per_client).await?;
    let ops = (clients * files_per_client) as u64;
    Ok(PHASES
        .iter()
        .enumerate()
        .map(|(i, phase)| Row {
            workload: phase.to_string(),
            clients,
            ops,
            strata_ops_per_sec: ops as f64 / strata[i],
            baseline_ops_per_sec: ops as f64 / baseline[i],
        })
        .collect())
}

/// Creates `files` files (1000 per directory) with `clients` clients; returns files per second.
pub async fn fill(meta: Arc<MetaClient>, files: usize, clients: usize) -> anyhow::Result<f64> {
    const PER_DIR: usize = 1000;
    let top = meta.mkdir(ROOT, format!("fill-{}", std::process::id()).as_bytes(), 0o755, 0, 0).await?.ino;
    let dirs = files.div_ceil(PER_DIR);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let secs = timed(clients, move |_| {
        let (m, next) = (meta.clone(), next.clone());
        async move {
            loop {
                let d = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if d >= dirs {
                    return Ok(());
                }
                let dir = m.mkdir(top, format!("d{d:06}").as_bytes(), 0o755, 0, 0).await?.ino;
                for i in 0..PER_DIR.min(files - d * PER_DIR) {
                    m.create(dir, &name(i), libc::S_IFREG | 0o644, 0, 0, 0).await?;
                }
            }
        }
    })
    .await?;
    Ok(files as f64 / secs)
}
