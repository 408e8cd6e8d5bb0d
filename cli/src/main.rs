//! `strata`: every role and every admin command in one binary.

mod admin;
mod bench_cmd;
mod bench_csi;
mod bench_fs;
mod bench_transport;
mod cluster_file;
mod cluster_info;
mod console_cmd;
mod csi_cmd;
mod dev;
mod dev_admin;
mod dev_metrics;
mod dev_s3;
mod fs_cmd;
mod mount_cmd;
mod net_proxy;
mod quota_cmd;
mod runtime;
mod s3_cmd;
mod serve;
mod telemetry;
mod trash_cmd;
mod warmup_cmd;

use clap::{Parser, Subcommand};
use strata_sdk::MasterClient;

#[derive(Debug, Parser)]
#[command(name = "strata", version, about = "Strata: a distributed file system with a cache tier")]
struct Cli {
    /// Master addresses, HOST:PORT[,HOST:PORT…] (default: cluster.json of a `strata dev` cluster here).
    #[arg(long = "master", env = "STRATA_MASTER", global = true, value_delimiter = ',')]
    masters: Vec<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// Serve this process's Prometheus metrics on IP:PORT (`GET /metrics`;
    /// roles and the mount).
    #[arg(long, env = "STRATA_METRICS", global = true)]
    metrics: Option<String>,
    /// Log lines as `text` or `json` (one object per line), for roles and the mount.
    #[arg(long, env = "STRATA_LOG_FORMAT", global = true, default_value = "text")]
    log_format: strata_common::logging::LogFormat,
    /// Log levels per module, e.g. `info,strata_raftstore=debug` (default: RUST_LOG, else info).
    #[arg(long, env = "STRATA_LOG_LEVEL", global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a master replica.
    Master(serve::ServeArgs),
    /// Run a metanode.
    Metanode(serve::ServeArgs),
    /// Run a datanode.
    Datanode(serve::ServeArgs),
    /// Run a cachenode of the shared cache tier.
    Cachenode(serve::ServeArgs),
    /// Run an S3 gateway: volumes as buckets, paths as keys.
    S3(s3_cmd::S3Args),
    /// Run the CSI driver (Kubernetes volumes) on a Unix socket.
    Csi(csi_cmd::CsiArgs),
    /// Run a local cluster (or restart/stop one of its nodes).
    Dev(dev::DevArgs),
    /// Which master leads, and whether every node is alive.
    Status,
    /// Nodes of the cluster.
    Node {
        #[command(subcommand)]
        action: NodeCmd,
    },
    /// Volumes.
    Volume {
        #[command(subcommand)]
        action: VolumeCmd,
    },
    /// Directory quotas (the size of a `subdir` PVC).
    Quota {
        #[command(subcommand)]
        action: quota_cmd::QuotaCmd,
    },
    /// Check a volume's namespace invariants; exits non-zero if anything is wrong.
    Fsck {
        volume: String,
        /// Unlinked files still open may stay this long before they count as leaked.
        #[arg(long, default_value_t = 86_400)]
        grace_secs: u64,
    },
    /// Benchmarks, each next to a baseline measured in the same run:
    /// `strata bench --target A --target B` runs the file system workloads
    /// on directories side by side; the subcommands measure the sdk and nodes.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        action: Option<bench_cmd::BenchCmd>,
        #[command(flatten)]
        fs: Box<bench_fs::FsBenchArgs>,
    },
    /// Mount a volume (in the background unless --foreground).
    Mount(mount_cmd::MountArgs),
    /// Unmount a Strata mount point.
    Umount { mountpoint: std::path::PathBuf },
    /// Load files into a cache level before a job reads them.
    Warmup(warmup_cmd::WarmupArgs),
    /// The block caches of a mount, or the shared tier's cachenodes.
    Cache {
        #[command(subcommand)]
        action: CacheCmd,
    },
    /// A volume by paths, without a mount (ls, stat, mkdir, put, get, rm, mv, reclaim).
    Fs {
        #[command(subcommand)]
        action: fs_cmd::FsCmd,
    },
    /// Users and their S3 access keys.
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
    /// S3 access keys of users.
    Key {
        #[command(subcommand)]
        action: KeyCmd,
    },
    /// The master's web console.
    Console {
        #[command(subcommand)]
        action: ConsoleCmd,
    },
    /// Recent cluster events: nodes lost and back, repairs, failed disks,
    /// leader changes, volumes made and removed.
    Events {
        /// Show at most this many, the newest.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Deleted files a volume keeps (`strata volume set NAME --trash-hours N`).
    Trash {
        #[command(subcommand)]
        action: trash_cmd::TrashCmd,
    },
    /// Meta and data partitions: where they live.
    Partition {
        #[command(subcommand)]
        action: PartitionCmd,
    },
    /// Who besides its owner may use a volume as an S3 bucket.
    Bucket {
        #[command(subcommand)]
        action: BucketCmd,
    },
}

#[derive(Debug, Subcommand)]
enum ConsoleCmd {
    /// Print a login link (signed with the admin key, valid for minutes).
    Url(console_cmd::ConsoleUrlArgs),
}

#[derive(Debug, Subcommand)]
enum PartitionCmd {
    /// Every partition of one volume or of all, with its replicas.
    List { volume: Option<String> },
    /// One partition: its volume, kind, range, replicas and their state.
    Info { partition_id: u64 },
}

#[derive(Debug, Subcommand)]
enum BucketCmd {
    /// Lets an access key read (list, get), write (also put, delete,
    /// multipart) or own (also delete the bucket) BUCKET.
    Allow {
        access_key_id: String,
        bucket: String,
        #[command(flatten)]
        level: admin::GrantFlags,
    },
    /// Takes an access key's grant on BUCKET away.
    Revoke { access_key_id: String, bucket: String },
    /// The owner of BUCKET and the access keys granted on it.
    Grants { bucket: String },
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// A new access key for USER; the secret is printed this once.
    Create {
        user: String,
    },
    /// Access key ids (never secrets), of one user or all.
    List {
        user: Option<String>,
    },
    Delete {
        access_key_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCmd {
    /// Hits, misses and bytes per cache level of a mount, and what came
    /// from the cachenodes and the datanodes; without a mount point, every
    /// cachenode of the cluster.
    Stats { mountpoint: Option<std::path::PathBuf> },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    List,
    /// Drain a datanode: its data partitions get new members, rebuilt from the others.
    Decommission {
        node_id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum VolumeCmd {
    /// Create a volume with its first meta and data partitions.
    Create {
        name: String,
        /// replica:N or ec:K+M.
        #[arg(long, default_value = "replica:3")]
        redundancy: String,
        /// Capacity, e.g. 100GiB.
        #[arg(long, default_value = "100GiB")]
        capacity: String,
        #[arg(long, default_value = "")]
        owner: String,
        /// Meta partitions (Raft groups) to start with; 0: the master's
        /// default. The last one splits as the namespace grows.
        #[arg(long, default_value_t = 0)]
        meta_partitions: u32,
    },
    List,
    Info {
        name: String,
    },
    /// Set a volume's policies.
    Set {
        name: String,
        /// Keep deleted files this many hours in the volume's trash (0: off).
        #[arg(long)]
        trash_hours: Option<u64>,
    },
    /// Set a volume's capacity (grow or shrink; not below what it holds).
    Expand {
        name: String,
        /// The new capacity, e.g. 200GiB.
        capacity: String,
    },
    /// Capacity, bytes used and files of a volume (its statfs).
    Df {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a user with one access key.
    Create {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = runtime::build(&cli.command);
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (log_level, log_format) = (cli.log_level.clone(), cli.log_format);
    let init_logs = |default_filter: &str| {
        strata_common::logging::init_with(default_filter, log_level.as_deref(), log_format);
    };
    let global_args = passed_on(&cli);
    let admin_client =
        || -> anyhow::Result<MasterClient> { Ok(MasterClient::new(admin::master_addresses(&cli.masters)?)?) };
    match cli.command {
        Cmd::Master(args) => {
            init_logs("info");
            telemetry::serve(cli.metrics.as_deref(), "master")?;
            strata_master::run(serve::master_config(&args)?, serve::shutdown_signal()).await
        }
        Cmd::Metanode(args) => {
            init_logs("info");
            telemetry::serve(cli.metrics.as_deref(), "metanode")?;
            strata_metanode::run(serve::node_config(&args, "metanode", &cli.masters)?, serve::shutdown_signal()).await
        }
        Cmd::Datanode(args) => {
            init_logs("info");
            telemetry::serve(cli.metrics.as_deref(), "datanode")?;
            strata_datanode::run(serve::node_config(&args, "datanode", &cli.masters)?, serve::shutdown_signal()).await
        }
        Cmd::Cachenode(args) => {
            init_logs("info");
            telemetry::serve(cli.metrics.as_deref(), "cachenode")?;
            let config = serve::node_config(&args, "cachenode", &cli.masters)?;
            strata_cachenode::run(config, serve::shutdown_signal()).await
        }
        Cmd::S3(args) => {
            init_logs("info");
            telemetry::serve(cli.metrics.as_deref(), "s3")?;
            s3_cmd::run(admin::master_addresses(&cli.masters)?, args).await
        }
        Cmd::Csi(args) => {
            if !args.probe {
                init_logs("info");
                telemetry::serve(cli.metrics.as_deref(), "csi")?;
            }
            csi_cmd::run(&cli.masters, args).await
        }
        Cmd::Dev(args) => {
            init_logs("warn");
            dev::run(args).await
        }
        Cmd::Mount(mut args) => {
            if args.foreground {
                init_logs("info");
                telemetry::serve(cli.metrics.as_deref(), "mount")?;
            }
            // A background mount passes the global flags on to its foreground process.
            args.global_args = global_args;
            mount_cmd::mount(admin::master_addresses(&cli.masters)?, args).await
        }
        Cmd::Umount { mountpoint } => mount_cmd::unmount(&mountpoint),
        Cmd::Cache { action: CacheCmd::Stats { mountpoint: Some(mountpoint) } } => {
            mount_cmd::cache_stats(&mountpoint, cli.json)
        }
        Cmd::Cache { action: CacheCmd::Stats { mountpoint: None } } => {
            warmup_cmd::cluster_cache_stats(&admin_client()?, cli.json).await
        }
        Cmd::Warmup(args) => warmup_cmd::run(admin::master_addresses(&cli.masters)?, args, cli.json).await,
        Cmd::Status => admin::status(&admin_client()?, cli.json).await,
        Cmd::Node { action: NodeCmd::List } => admin::node_list(&admin_client()?, cli.json).await,
        Cmd::Node { action: NodeCmd::Decommission { node_id } } => {
            admin::node_decommission(&admin_client()?, node_id, cli.json).await
        }
        Cmd::Volume { action } => {
            let client = admin_client()?;
            match action {
                VolumeCmd::Create { name, redundancy, capacity, owner, meta_partitions } => {
                    let spec = admin::VolumeSpec {
                        redundancy: &redundancy,
                        capacity: &capacity,
                        owner: &owner,
                        meta_partitions,
                    };
                    admin::volume_create(&client, &name, spec, cli.json).await
                }
                VolumeCmd::List => admin::volume_list(&client, cli.json).await,
                VolumeCmd::Info { name } => admin::volume_info(&client, &name, cli.json).await,
                VolumeCmd::Set { name, trash_hours } => {
                    admin::volume_set(&client, &name, trash_hours.map(|h| h.saturating_mul(3600)), cli.json).await
                }
                VolumeCmd::Expand { name, capacity } => admin::volume_expand(&client, &name, &capacity, cli.json).await,
                VolumeCmd::Df { name } => admin::volume_df(&client, &name, cli.json).await,
                VolumeCmd::Delete { name } => admin::volume_delete(&client, &name, cli.json).await,
            }
        }
        Cmd::Fsck { volume, grace_secs } => admin::fsck(&admin_client()?, &volume, grace_secs, cli.json).await,
        // The transport benchmark runs its own store in-process: no cluster needed.
        Cmd::Bench { action: None, fs } => bench_fs::run(*fs).await,
        Cmd::Bench { action: Some(bench_cmd::BenchCmd::Transport { blobs, streams, rounds }), .. } => {
            bench_cmd::transport(blobs, &streams, rounds).await
        }
        Cmd::Bench { action: Some(action @ bench_cmd::BenchCmd::S3 { .. }), .. } => bench_cmd::s3(action).await,
        Cmd::Bench { action: Some(action), .. } => bench_cmd::run(&admin_client()?, action).await,
        Cmd::Fs { action } => fs_cmd::run(admin::master_addresses(&cli.masters)?, action, cli.json).await,
        Cmd::Quota { action } => quota_cmd::run(admin::master_addresses(&cli.masters)?, action, cli.json).await,
        Cmd::User { action } => {
            let client = admin_client()?;
            match action {
                UserCmd::Create { name } => admin::user_create(&client, &name, cli.json).await,
                UserCmd::List => admin::user_list(&client, cli.json).await,
                UserCmd::Delete { name } => admin::user_delete(&client, &name, cli.json).await,
            }
        }
        Cmd::Key { action } => {
            let client = admin_client()?;
            match action {
                KeyCmd::Create { user } => admin::key_create(&client, &user, cli.json).await,
                KeyCmd::List { user } => admin::key_list(&client, user.as_deref(), cli.json).await,
                KeyCmd::Delete { access_key_id } => admin::key_delete(&client, &access_key_id, cli.json).await,
            }
        }
        Cmd::Trash { action } => trash_cmd::run(admin::master_addresses(&cli.masters)?, action, cli.json).await,
        Cmd::Console { action: ConsoleCmd::Url(args) } => console_cmd::url(args, cli.json),
        Cmd::Events { limit } => cluster_info::events(&admin_client()?, limit, cli.json).await,
        Cmd::Partition { action: PartitionCmd::List { volume } } => {
            cluster_info::partition_list(&admin_client()?, volume.as_deref(), cli.json).await
        }
        Cmd::Partition { action: PartitionCmd::Info { partition_id } } => {
            cluster_info::partition_info(&admin_client()?, partition_id, cli.json).await
        }
        Cmd::Bucket { action } => {
            let client = admin_client()?;
            match action {
                BucketCmd::Allow { access_key_id, bucket, level } => {
                    admin::bucket_grant(&client, &bucket, &access_key_id, Some(level.level()), cli.json).await
                }
                BucketCmd::Revoke { access_key_id, bucket } => {
                    admin::bucket_grant(&client, &bucket, &access_key_id, None, cli.json).await
                }
                BucketCmd::Grants { bucket } => admin::bucket_grants(&client, &bucket, cli.json).await,
            }
        }
    }
}

/// The global flags a role's process hands on to a process it starts for
/// itself (the background mount's foreground child).
fn passed_on(cli: &Cli) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(metrics) = &cli.metrics {
        args.extend(["--metrics".to_string(), metrics.clone()]);
    }
    if cli.log_format == strata_common::logging::LogFormat::Json {
        args.extend(["--log-format".to_string(), "json".to_string()]);
    }
    if let Some(levels) = &cli.log_level {
        args.extend(["--log-level".to_string(), levels.clone()]);
    }
    args
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dev_counts_and_master_list_do_not_clash() {
        let cli = Cli::try_parse_from(["strata", "--master", "a:1,b:2", "dev", "--masters", "1", "--datanodes", "4"])
            .unwrap();
        assert_eq!(cli.masters, vec!["a:1".to_string(), "b:2".to_string()]);
        let Cmd::Dev(args) = cli.command else { panic!("not dev") };
        assert_eq!((args.masters, args.datanodes), (1, 4));
    }
}
