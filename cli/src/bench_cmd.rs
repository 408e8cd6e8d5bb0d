//! `strata bench …`: runs the `strata-bench` workloads and prints their
//! figures next to the baseline measured in the same run.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use strata_bench::{data, meta, nodes, report};
use strata_common::size::{format_size, parse_size};
use strata_sdk::{MasterClient, MetaClient};

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Metadata operations per second through the sdk, next to a local directory.
    MetaSdk {
        #[arg(long, default_value = "default")]
        volume: String,
        /// Files per client.
        #[arg(long, default_value_t = 2000)]
        files: usize,
        /// Concurrent clients, e.g. 1,8.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        clients: Vec<usize>,
        /// Local directory for the baseline (default: a temporary directory).
        #[arg(long)]
        local_dir: Option<PathBuf>,
        /// Also write the rows as JSON here.
        #[arg(long)]
        json_file: Option<PathBuf>,
    },
    /// Sequential write and read through the sdk on replicated and
    /// erasure-coded volumes (created if missing), next to a local directory;
    /// and the erasure codec next to a memory copy.
    DataSdk {
        /// Bytes each stream writes then reads.
        #[arg(long, default_value = "256MiB")]
        size: String,
        /// Concurrent streams, e.g. 1,4.
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        streams: Vec<usize>,
        /// Volumes to use, as NAME=REDUNDANCY.
        #[arg(long, value_delimiter = ',', default_value = "bench-rep3=replica:3,bench-ec42=ec:4+2")]
        volumes: Vec<String>,
        /// Local directory for the baseline (default: a temporary directory).
        #[arg(long)]
        local_dir: Option<PathBuf>,
        /// Also write the rows as JSON here.
        #[arg(long)]
        json_file: Option<PathBuf>,
    },
    /// The data path's transport: gRPC against a length-framed TCP protocol,
    /// in front of the same blob store, next to calling the store directly.
    Transport {
        /// 4 MiB blobs written then read per pass.
        #[arg(long, default_value_t = 128)]
        blobs: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        streams: Vec<usize>,
        /// Rounds (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// What a PVC costs through a running CSI plugin (`strata csi`): time to
    /// create and stage, FUSE processes, memory and Raft groups per mode.
    Csi {
        /// The plugin's socket.
        #[arg(long, default_value = "unix:///csi/csi.sock")]
        endpoint: String,
        /// subdir or volume.
        #[arg(long, default_value = "subdir")]
        mode: String,
        #[arg(long, default_value_t = 20)]
        pvcs: usize,
        /// Staging paths and the local baseline go below it.
        #[arg(long, default_value = "/tmp/strata-bench-csi")]
        work_dir: PathBuf,
        /// The plugin's --state-dir.
        #[arg(long, default_value = "/var/lib/strata-csi")]
        state_dir: PathBuf,
    },
    /// PUT, HEAD, GET, LIST and DELETE per object size and client count
    /// against S3 endpoints side by side (e.g. Strata's gateway and
    /// SeaweedFS's), medians of rounds and ratios to the first endpoint.
    S3 {
        /// LABEL=URL,ACCESS_KEY,SECRET_KEY (http only); repeat for each
        /// endpoint, the first being the one the others are compared with.
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<strata_bench::s3::Endpoint>,
        #[arg(long, value_delimiter = ',', default_value = "4KiB,1MiB,64MiB")]
        sizes: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        clients: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Bytes each cell writes (objects = this / size, at least one per client).
        #[arg(long, default_value = "256MiB")]
        bytes_per_cell: String,
        #[arg(long, default_value_t = 1000)]
        max_objects: usize,
        /// Bucket to use on every endpoint (made if missing; what the run writes is deleted).
        #[arg(long, default_value = "strata-bench")]
        bucket: String,
        #[arg(long, default_value = "us-east-1")]
        region: String,
        #[arg(long)]
        json_file: Option<PathBuf>,
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Creates many files, then reports metanode memory and disk per file.
    MetaFill {
        #[arg(long, default_value = "default")]
        volume: String,
        #[arg(long, default_value_t = 1_000_000)]
        files: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// The `strata dev` directory whose metanodes to measure.
        #[arg(long, default_value = "strata-dev")]
        dev_dir: PathBuf,
    },
}

pub async fn run(master: &MasterClient, cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::MetaSdk { volume, files, clients, local_dir, json_file } => {
            let meta = Arc::new(MetaClient::open(master, &volume).await?);
            let scratch = tempfile_dir(local_dir)?;
            let mut rows = Vec::new();
            for c in clients {
                rows.extend(meta::compare(meta.clone(), &scratch, c, files).await?);
            }
            report::print_table(&rows, "local");
            if let Some(path) = json_file {
                std::fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
            }
            Ok(())
        }
        BenchCmd::DataSdk { size, streams, volumes, local_dir, json_file } => {
            let size = usize::try_from(parse_size(&size)?)?.max(1 << 20) & !((1 << 20) - 1);
            let scratch = tempfile_dir(local_dir)?;
            if !data::drop_caches() {
                eprintln!("note: the page cache cannot be emptied (not root): reads may come from memory");
            }
            let mut rows = Vec::new();
            for spec in &volumes {
                let (name, redundancy) =
                    spec.split_once('=').ok_or_else(|| anyhow::anyhow!("volume {spec:?} is not NAME=REDUNDANCY"))?;
                let (meta, data) = data::bench_volume(master, name, redundancy).await?;
                let (meta, data) = (Arc::new(meta), Arc::new(data));
                for n in &streams {
                    rows.extend(data::compare(redundancy, meta.clone(), data.clone(), &scratch, *n, size).await?);
                }
            }
            rows.extend(data::codec(4, 2, 64)?);
            data::print_table(&rows, "local");
            if let Some(path) = json_file {
                std::fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
            }
            Ok(())
        }
        BenchCmd::Transport { blobs, streams, rounds } => transport(blobs, &streams, rounds).await,
        cmd @ BenchCmd::S3 { .. } => s3(cmd).await,
        BenchCmd::Csi { endpoint, mode, pvcs, work_dir, state_dir } => {
            let socket = strata_csi_driver::socket_path(&endpoint)?;
            let bench = crate::bench_csi::CsiBench { socket, mode, pvcs, work_dir, state_dir };
            crate::bench_csi::run(master, bench).await
        }
        BenchCmd::MetaFill { volume, files, clients, dev_dir } => {
            let meta = Arc::new(MetaClient::open(master, &volume).await?);
            let before = nodes::dev_cluster_costs(&dev_dir, "metanode")?;
            let rate = meta::fill(meta, files, clients).await?;
            println!("created {files} files with {clients} clients: {rate:.0} files/s");
            let after = nodes::dev_cluster_costs(&dev_dir, "metanode")?;
            println!("{:<6} {:>12} {:>14} {:>14} {:>12}", "node", "rss", "disk before", "disk after", "disk/file");
            for (b, a) in before.iter().zip(&after) {
                let per_file = a.disk_bytes.saturating_sub(b.disk_bytes) as f64 / files as f64;
                println!(
                    "{:<6} {:>12} {:>14} {:>14} {:>10.0} B",
                    a.id,
                    a.rss_bytes.map(format_size).unwrap_or_else(|| "-".into()),
                    format_size(b.disk_bytes),
                    format_size(a.disk_bytes),
                    per_file
                );
            }
            Ok(())
        }
    }
}

/// `strata bench s3`: needs no master, only the endpoints.
pub async fn s3(cmd: BenchCmd) -> anyhow::Result<()> {
    let BenchCmd::S3 {
        endpoints,
        sizes,
        clients,
        rounds,
        bytes_per_cell,
        max_objects,
        bucket,
        region,
        json_file,
        plot,
    } = cmd
    else {
        anyhow::bail!("not an S3 benchmark");
    };
    let sizes = sizes.iter().map(|s| parse_size(s)).collect::<Result<Vec<_>, _>>()?;
    let bytes_per_cell = parse_size(&bytes_per_cell)?;
    let config = strata_bench::s3::S3Config { sizes, clients, rounds, bytes_per_cell, max_objects, bucket, region };
    let report = strata_bench::s3::run(endpoints, config).await?;
    strata_bench::s3::print_table(&report);
    if let Some(path) = json_file {
        strata_bench::s3::write_json(&report, &path)?;
    }
    if let Some(path) = plot {
        strata_bench::s3::plot(&report, &path)?;
    }
    Ok(())
}

pub async fn transport(blobs: usize, streams: &[usize], rounds: usize) -> anyhow::Result<()> {
    let rows = crate::bench_transport::run(blobs, streams, rounds).await?;
    data::print_table(&rows, "direct");
    Ok(())
}

fn tempfile_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = given.unwrap_or_else(|| std::env::temp_dir().join(format!("strata-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
