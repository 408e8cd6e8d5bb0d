//! `strata master|metanode|datanode|cachenode`: run one role from its TOML config file,
//! with single fields overridden by flags or environment variables.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use strata_common::config::{ConfigFile, MasterConfig, NodeConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see `strata_common::config` for every field).
    #[arg(long, short, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on and advertise (overrides `listen`).
    #[arg(long, env = "STRATA_LISTEN")]
    pub listen: Option<String>,
    /// Address others reach this node at, if not the listen address
    /// (metanode/datanode; overrides `advertise`).
    #[arg(long, env = "STRATA_ADVERTISE")]
    pub advertise: Option<String>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, env = "STRATA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node id: the master's Raft id, or a metanode/datanode's id (overrides `id` / `node_id`).
    #[arg(long, env = "STRATA_NODE_ID")]
    pub id: Option<u64>,
    /// Master peers as ID=HOST:PORT, repeatable (master only; overrides `peers`).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Async worker threads of this process; 0: one per core. Nodes that
    /// share a machine with others run faster with fewer (`strata dev` gives
    /// each a quarter of the cores, at least one).
    #[arg(long, env = "STRATA_IO_THREADS", default_value_t = 0)]
    pub io_threads: usize,
    /// Serve the web console on HOST:PORT (master only; overrides `console`).
    #[arg(long, env = "STRATA_CONSOLE")]
    pub console: Option<String>,
}

/// Reads the role's section of the config file (an empty one if there is no
/// file) and applies the overrides, then lets serde fill in the defaults.
fn section(args: &ServeArgs, role: &str, masters: &[String]) -> anyhow::Result<toml::Table> {
    let mut file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            // Validate the whole file first so typos in other sections are caught too.
            toml::from_str::<ConfigFile>(&text).with_context(|| format!("parsing {}", path.display()))?;
            toml::from_str::<toml::Table>(&text)?
        }
        None => toml::Table::new(),
    };
    let mut table = match file.remove(role) {
        Some(toml::Value::Table(t)) => t,
        Some(_) => anyhow::bail!("[{role}] in the config file is not a table"),
        None => toml::Table::new(),
    };
    if let Some(listen) = &args.listen {
        table.insert("listen".into(), listen.clone().into());
    }
    if role != "master"
        && let Some(advertise) = &args.advertise
    {
        table.insert("advertise".into(), advertise.clone().into());
    }
    if let Some(dir) = &args.data_dir {
        table.insert("data_dir".into(), dir.display().to_string().into());
    }
    let id_field = if role == "master" { "id" } else { "node_id" };
    if let Some(id) = args.id {
        table.insert(id_field.into(), toml::Value::Integer(id as i64));
    }
    if role == "master"
        && let Some(console) = &args.console
    {
        table.insert("console".into(), console.clone().into());
    }
    if !args.peers.is_empty() {
        table.insert("peers".into(), args.peers.clone().into());
    }
    if role != "master" && !masters.is_empty() {
        table.insert("masters".into(), masters.to_vec().into());
    }
    Ok(table)
}

pub fn master_config(args: &ServeArgs) -> anyhow::Result<MasterConfig> {
    let config: MasterConfig = section(args, "master", &[])?.try_into().context("master configuration")?;
    config.validate()?;
    Ok(config)
}

pub fn node_config(args: &ServeArgs, role: &str, masters: &[String]) -> anyhow::Result<NodeConfig> {
    let config: NodeConfig =
        section(args, role, masters)?.try_into().with_context(|| format!("{role} configuration"))?;
    if config.masters.is_empty() {
        anyhow::bail!("a {role} needs the masters' addresses (--master, STRATA_MASTER or `masters` in the config)");
    }
    Ok(config)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
