//! `strata csi`: the CSI driver (crate `strata-csi-driver`) as a process,
//! and `strata csi probe`, a health check of a running plugin's socket.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use strata_csi_driver::{CsiConfig, FuseScope, Role};
use strata_proto::csi::identity_client::IdentityClient;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CsiMode {
    Controller,
    Node,
    Both,
}

/// Where the node plugin runs the volumes' FUSE processes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeChoice {
    /// A systemd scope when the host runs systemd, else a process group.
    Auto,
    /// A transient scope of the host's systemd (`systemd-run --scope`):
    /// outlives the plugin's container.
    Systemd,
    /// A process group of its own: outlives the plugin's process.
    ProcessGroup,
}

#[derive(Debug, Args)]
pub struct CsiArgs {
    /// The Unix socket to serve CSI on: unix:///PATH or /PATH.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,
    /// This node's id (Kubernetes passes the node name).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Which services to serve.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: CsiMode,
    /// Staging records, FUSE logs and disk caches; keep it across plugin restarts.
    #[arg(long, default_value = "/var/lib/strata-csi")]
    pub state_dir: PathBuf,
    /// The shared volume of `mode: subdir` StorageClasses that name none.
    #[arg(long, default_value = "default")]
    pub default_volume: String,
    /// The redundancy of `mode: volume` StorageClasses that name none.
    #[arg(long, default_value = "replica:3")]
    pub redundancy: String,
    /// Where FUSE processes run, so that they outlive the plugin.
    #[arg(long, value_enum, env = "STRATA_FUSE_SCOPE", default_value = "auto")]
    pub fuse_scope: ScopeChoice,
    /// Only check that a plugin serves on --endpoint and is ready; exits non-zero if not.
    #[arg(long)]
    pub probe: bool,
}

pub async fn run(master_flag: &[String], args: CsiArgs) -> anyhow::Result<()> {
    let socket = strata_csi_driver::socket_path(&args.endpoint)?;
    if args.probe {
        return probe(&socket).await;
    }
    let masters = crate::admin::master_addresses(master_flag)?;
    anyhow::ensure!(!masters.is_empty(), "strata csi needs --master (or STRATA_MASTER)");
    let node_id = match args.node_id {
        Some(id) => id,
        None => hostname()?,
    };
    let config = CsiConfig {
        socket,
        node_id,
        role: match args.mode {
            CsiMode::Controller => Role::Controller,
            CsiMode::Node => Role::Node,
            CsiMode::Both => Role::Both,
        },
        masters,
        state_dir: args.state_dir,
        strata: std::env::current_exe().context("finding the strata binary")?,
        default_volume: args.default_volume,
        default_redundancy: args.redundancy.parse().context("--redundancy")?,
        fuse_scope: match args.fuse_scope {
            ScopeChoice::Auto => FuseScope::detect(),
            ScopeChoice::Systemd => FuseScope::Systemd,
            ScopeChoice::ProcessGroup => FuseScope::ProcessGroup,
        },
    };
    strata_csi_driver::serve(config, crate::serve::shutdown_signal()).await
}

async fn probe(socket: &std::path::Path) -> anyhow::Result<()> {
    let channel = strata_csi_driver::connect(socket).await?;
    let reply = IdentityClient::new(channel).probe(strata_proto::csi::ProbeRequest {}).await?.into_inner();
    anyhow::ensure!(reply.ready != Some(false), "the plugin is not ready (its master does not answer)");
    println!("ready");
    Ok(())
}

fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the host name")?;
    Ok(name.trim().to_string())
}
