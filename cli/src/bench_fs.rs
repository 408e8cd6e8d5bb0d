//! `strata bench --target A --target B …`: the file system workloads of
//! `strata_bench::fs` against any directories (a Strata mount, a local
//! directory, a FUSE passthrough), with a table, JSON and a PNG chart.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use strata_bench::fs::{self, FsConfig, Target, Workload};
use strata_common::size::parse_size;

#[derive(Debug, Clone, Args)]
pub struct FsBenchArgs {
    /// A directory to measure, as LABEL=DIR or DIR; repeat for each (the
    /// first is the one the others are compared with).
    #[arg(long = "target")]
    pub targets: Vec<Target>,
    /// Workloads to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "seq,rand,small,meta,epoch")]
    pub workloads: Vec<Workload>,
    /// Rounds (each runs every workload on every target in turn); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json_file: Option<PathBuf>,
    /// Also draw the report as a PNG bar chart here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Run nothing: print (and --plot) the report saved in this JSON file.
    #[arg(long)]
    pub from_json: Option<PathBuf>,
    /// Concurrent jobs of seq, rand and small.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// seq: bytes each job writes then reads.
    #[arg(long, default_value = "4GiB")]
    pub size: String,
    /// seq: I/O sizes.
    #[arg(long, value_delimiter = ',', default_value = "1MiB,4MiB")]
    pub io_size: Vec<String>,
    /// seq: O_DIRECT reads and writes.
    #[arg(long)]
    pub direct: bool,
    /// Before each cold read pass, also empty the whole machine's page cache
    /// (root only), so that cold reads come from disk on every target.
    #[arg(long)]
    pub drop_caches: bool,
    /// rand: size of the file read from, and reads per job per block size.
    #[arg(long, default_value = "1GiB")]
    pub rand_size: String,
    #[arg(long, default_value_t = 5000)]
    pub rand_ops: usize,
    /// small: files, and bytes per file.
    #[arg(long, default_value_t = 10_000)]
    pub files: usize,
    #[arg(long, default_value = "128KiB")]
    pub file_size: String,
    /// meta: files and threads.
    #[arg(long, default_value_t = 10_000)]
    pub meta_files: usize,
    #[arg(long, default_value_t = 8)]
    pub meta_threads: usize,
    /// epoch: dataset files and their size, loader workers, epochs.
    #[arg(long, default_value_t = 5_000)]
    pub samples: usize,
    #[arg(long, default_value = "128KiB")]
    pub sample_size: String,
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
}

impl FsBenchArgs {
    fn config(&self) -> anyhow::Result<FsConfig> {
        let size = |text: &str, flag: &str| parse_size(text).with_context(|| flag.to_string());
        Ok(FsConfig {
            jobs: self.jobs.max(1),
            seq_size: size(&self.size, "--size")?,
            io_sizes: self
                .io_size
                .iter()
                .map(|s| Ok(size(s, "--io-size")?.max(4096) as usize))
                .collect::<anyhow::Result<_>>()?,
            direct: self.direct,
            drop_caches: self.drop_caches,
            rand_file_size: size(&self.rand_size, "--rand-size")?.max(128 << 10),
            rand_ops: self.rand_ops,
            small_files: self.files,
            small_size: size(&self.file_size, "--file-size")? as usize,
            meta_files: self.meta_files,
            meta_threads: self.meta_threads,
            epoch_files: self.samples,
            epoch_size: size(&self.sample_size, "--sample-size")? as usize,
            epoch_workers: self.workers,
            epochs: self.epochs,
        })
    }
}

pub async fn run(args: FsBenchArgs) -> anyhow::Result<()> {
    let (report, args) = match &args.from_json {
        Some(path) => (fs::output::read_json(path)?, args),
        None => {
            if args.targets.is_empty() {
                anyhow::bail!("give a subcommand or at least one --target DIR (see strata bench --help)");
            }
            let config = args.config()?;
            tokio::task::spawn_blocking(move || {
                fs::run(&args.targets, &args.workloads, args.rounds, &config, |line| eprintln!("{line}"))
                    .map(|r| (r, args))
            })
            .await
            .context("the benchmark thread")??
        }
    };
    fs::output::print_table(&report);
    if let Some(path) = &args.json_file {
        fs::output::write_json(&report, path)?;
    }
    if let Some(path) = &args.plot {
        fs::output::plot(&report, path)?;
        println!("chart written to {}", path.display());
    }
    Ok(())
}
