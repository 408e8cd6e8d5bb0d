//! `strata dev`: a whole local cluster on loopback, every node its own OS
//! process, state under one directory, described by `cluster.json`.
//! Run again on the same directory, it brings the same cluster back;
//! `strata dev restart ID` starts one node again; Ctrl-C (or `strata dev
//! stop`) stops every process it started.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mount_cmd::{MountArgs, start_mount_process};
use anyhow::Context;
use clap::{Args, Subcommand};
use strata_common::config::{CacheTierConfig, ConfigFile, MasterConfig, NodeConfig, RaftConfig, StoreConfig};
use strata_common::size::parse_size;
use strata_proto::master as pb;
use strata_sdk::MasterClient;

use crate::admin::collect_status;
use crate::cluster_file::{ClusterFile, DevNode};
use crate::net_proxy;
use crate::serve::shutdown_signal;

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(subcommand)]
    pub action: Option<DevAction>,
    /// Directory holding the cluster's data, configs, logs and cluster.json.
    #[arg(long, global = true, default_value = "strata-dev")]
    pub dir: PathBuf,
    /// Master replicas (1 is allowed for development).
    #[arg(long = "masters", id = "master_count", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=99))]
    pub masters: u64,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=99))]
    pub metanodes: u64,
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=99))]
    pub datanodes: u64,
    /// Cachenodes of the shared cache tier (L3); 0 for none.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=99))]
    pub cachenodes: u64,
    /// MiB of blocks each cachenode keeps in memory...
    #[arg(long, default_value_t = 512)]
    pub cachenode_memory_mb: u64,
    /// ...and on its disk.
    #[arg(long, default_value_t = 4096)]
    pub cachenode_disk_mb: u64,
    /// First port: masters use BASE.., metanodes BASE+100.., datanodes
    /// BASE+200.., cachenodes BASE+300..;
    /// 0 picks free ports (kept for later runs in cluster.json).
    #[arg(long, default_value_t = 17100)]
    pub base_port: u16,
    /// Split the open-ended meta partition after this many inodes (small values exercise splits).
    #[arg(long, default_value_t = 1 << 24)]
    pub meta_split_inodes: u64,
    /// Seconds an unreferenced blob waits before it is deleted from the datanodes.
    #[arg(long, default_value_t = 60)]
    pub gc_grace: u64,
    /// Mount the cluster's volume here once it is up (unmounted when the cluster stops).
    #[arg(long)]
    pub mount: Option<PathBuf>,
    /// Seconds a datanode may be dead before its data is rebuilt elsewhere.
    #[arg(long, default_value_t = 60)]
    pub repair_delay: u64,
    /// Seconds between datanode looks for segments worth compacting.
    #[arg(long, default_value_t = 30)]
    pub compact_interval: u64,
    /// MiB/s of background scrub reads for the whole cluster (0: none),
    /// shared among its datanodes: they all sit on one disk here, where a
    /// production node's rate (16 MiB/s per datanode) would take a sixth of
    /// this machine's disk from readers.
    #[arg(long, default_value_t = 16)]
    pub scrub_mb_per_sec: u64,
    /// Name of the volume created when the cluster first comes up; "" for none.
    #[arg(long, default_value = "default")]
    pub volume: String,
    /// Capacity of that volume.
    #[arg(long, default_value = "100GiB")]
    pub volume_capacity: String,
    /// Emulated network in front of every datanode: milliseconds of round
    /// trip added (0: none)...
    #[arg(long, default_value_t = 0.0)]
    pub net_delay_ms: f64,
    /// ...and the link's rate in megabits per second each way (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub net_mbit: u64,
    /// Applied Raft entries kept before the log is truncated (small values
    /// make lagging members catch up from snapshots); 0 keeps the default.
    #[arg(long, default_value_t = 0)]
    pub raft_log_retain: u64,
    /// Port of the S3 gateway (default: a free one, kept in cluster.json).
    #[arg(long)]
    pub s3_port: Option<u16>,
    /// Start no S3 gateway.
    #[arg(long)]
    pub no_s3: bool,
}

fn raft_config(args: &DevArgs) -> RaftConfig {
    let mut raft = RaftConfig::default();
    if args.raft_log_retain > 0 {
        raft.log_retain_entries = args.raft_log_retain;
    }
    raft
}

#[derive(Debug, Subcommand)]
pub enum DevAction {
    /// Start one node of the cluster again (after it was killed).
    Restart {
        /// The node's id as listed in cluster.json.
        node_id: u64,
    },
    /// Stop every process of the cluster.
    Stop,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    match args.action {
        Some(DevAction::Restart { node_id }) => restart(&dir, node_id),
        Some(DevAction::Stop) => stop(&dir).await,
        None => supervise(&dir, &args).await,
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (killed but not yet reaped) counts as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether `pid` is still one of our node processes (pids get reused).
fn is_node_process(pid: u32, node: &DevNode) -> bool {
    pid_alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&*node.config.to_string_lossy()))
            .unwrap_or(false)
}

/// Whether `pid` is still a `strata s3` process.
fn is_gateway_process(pid: u32) -> bool {
    pid_alive(pid) && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(4).any(|w| w == b"\0s3\0"))
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory effects; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A port free right now, drawn below Linux's ephemeral range (32768 up) so
/// that no outgoing connection of another process takes it before the node
/// binds it.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    for _ in 0..1000 {
        let port = rand::random_range(10_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port found between 10000 and 32000")
}

fn port(args: &DevArgs, offset: u64) -> anyhow::Result<u16> {
    if args.base_port == 0 {
        return free_port();
    }
    u16::try_from(args.base_port as u64 + offset).context("ports past 65535: choose a lower --base-port")
}

/// Lays out a new cluster: ids, ports, directories and config files.
fn create_layout(dir: &Path, args: &DevArgs) -> anyhow::Result<ClusterFile> {
    let mut nodes = Vec::new();
    let mut add = |id: u64, role: &str, address: String| {
        let home = dir.join(format!("{role}-{id}"));
        nodes.push(DevNode {
            id,
            role: role.into(),
            address,
            pid: None,
            data_dir: home.join("data"),
            config: home.join("strata.toml"),
            log: home.join("node.log"),
            advertise: None,
            metrics: None,
            console: None,
        });
    };
    for i in 0..args.masters {
        add(1 + i, "master", format!("127.0.0.1:{}", port(args, i)?));
    }
    for i in 0..args.metanodes {
        add(101 + i, "metanode", format!("127.0.0.1:{}", port(args, 100 + i)?));
    }
    for i in 0..args.datanodes {
        add(201 + i, "datanode", format!("127.0.0.1:{}", port(args, 200 + i)?));
    }
    for i in 0..args.cachenodes {
        add(301 + i, "cachenode", format!("127.0.0.1:{}", port(args, 300 + i)?));
    }
    let file = ClusterFile { nodes, supervisor_pid: None, ..Default::default() };
    let peers: Vec<String> =
        file.nodes.iter().filter(|n| n.role == "master").map(|n| format!("{}={}", n.id, n.address)).collect();
    let masters = file.master_addresses();
    for node in &file.nodes {
        std::fs::create_dir_all(node.config.parent().expect("config has a parent"))?;
        let config = if node.role == "master" {
            ConfigFile {
                master: Some(MasterConfig {
                    id: node.id,
                    listen: node.address.clone(),
                    peers: peers.clone(),
                    data_dir: node.data_dir.clone(),
                    raft: raft_config(args),
                    node_heartbeat_interval_ms: 1000,
                    node_timeout_ms: 5000,
                    meta_replicas: args.metanodes.min(3) as u32,
                    initial_meta_partitions: 3,
                    meta_partition_inode_span: 1 << 24,
                    meta_partition_split_inodes: args.meta_split_inodes,
                    initial_data_partitions: 4,
                    data_repair_delay_ms: args.repair_delay * 1000,
                    max_concurrent_repairs: 8,
                    console: None,
                }),
                ..Default::default()
            }
        } else {
            let section = NodeConfig {
                node_id: node.id,
                listen: node.address.clone(),
                advertise: None,
                data_dir: node.data_dir.clone(),
                masters: masters.clone(),
                raft: raft_config(args),
                store: StoreConfig {
                    compact_interval_secs: args.compact_interval,
                    scrub_mb_per_sec: match args.scrub_mb_per_sec {
                        0 => 0,
                        total => (total / args.datanodes.max(1)).max(1),
                    },
                    ..StoreConfig::default()
                },
                gc_grace_secs: args.gc_grace,
                cache: CacheTierConfig {
                    memory_mb: args.cachenode_memory_mb,
                    disk_mb: args.cachenode_disk_mb,
                    ..CacheTierConfig::default()
                },
            };
            match node.role.as_str() {
                "metanode" => ConfigFile { metanode: Some(section), ..Default::default() },
                "cachenode" => ConfigFile { cachenode: Some(section), ..Default::default() },
                _ => ConfigFile { datanode: Some(section), ..Default::default() },
            }
        };
        std::fs::write(&node.config, toml::to_string_pretty(&config)?)
            .with_context(|| format!("writing {}", node.config.display()))?;
    }
    Ok(file)
}

fn spawn(node: &DevNode, detach: bool) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the strata binary")?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("opening {}", node.log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg(&node.role).arg("--config").arg(&node.config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    if let Some(advertise) = &node.advertise {
        cmd.arg("--advertise").arg(advertise);
    }
    if let Some(metrics) = &node.metrics {
        cmd.arg("--metrics").arg(metrics);
    }
    if let Some(console) = &node.console {
        cmd.arg("--console").arg(console);
    }
    // Every node of the cluster shares this machine.
    cmd.arg("--io-threads").arg(crate::runtime::shared_machine_workers().to_string());
    // A node is configured by its file alone; the caller's overrides must not leak in.
    for var in [
        "STRATA_CONFIG",
        "STRATA_LISTEN",
        "STRATA_DATA_DIR",
        "STRATA_NODE_ID",
        "STRATA_MASTER",
        "STRATA_ADVERTISE",
        "STRATA_IO_THREADS",
        "STRATA_METRICS",
        "STRATA_CONSOLE",
    ] {
        cmd.env_remove(var);
    }
    if detach {
        cmd.process_group(0);
    }
    cmd.spawn().with_context(|| format!("starting {} {}", node.role, node.id))
}

async fn supervise(dir: &Path, args: &DevArgs) -> anyhow::Result<()> {
    let mut file = match ClusterFile::load(dir)? {
        Some(file) => {
            if let Some(pid) = file.supervisor_pid.filter(|p| pid_alive(*p)) {
                anyhow::bail!(
                    "a strata dev for {} is already running (pid {pid}); stop it with `strata dev stop`",
                    dir.display()
                );
            }
            if let Some(running) = file.nodes.iter().find(|n| n.pid.is_some_and(|p| is_node_process(p, n))) {
                anyhow::bail!(
                    "{} {} of this cluster is still running (pid {:?}); `strata dev stop` first",
                    running.role,
                    running.id,
                    running.pid
                );
            }
            println!("restarting the cluster in {}", dir.display());
            file
        }
        None => {
            println!("creating a cluster in {}", dir.display());
            create_layout(dir, args)?
        }
    };
    file.supervisor_pid = Some(std::process::id());
    crate::dev_metrics::assign_ports(&mut file, !args.no_s3, args.mount.is_some())?;
    let _proxies = emulate_network(&mut file, args).await?;
    let mut children = Vec::new();
    for node in file.nodes.iter_mut() {
        let child = spawn(node, false)?;
        node.pid = Some(child.id());
        children.push(child);
    }
    file.store(dir)?;

    let mut result = bring_up(&file, args).await;
    if result.is_ok() {
        result = crate::dev_admin::ensure(dir, &mut file).await;
    }
    let mut gateway = None;
    if result.is_ok() && !args.no_s3 {
        match crate::dev_s3::start(dir, &mut file, args.s3_port).await {
            Ok(child) => gateway = Some(child),
            Err(e) => eprintln!("starting the s3 gateway failed: {e:#}"),
        }
    }
    match &result {
        Ok(()) => println!("cluster is up; Ctrl-C stops it (data stays in {})", dir.display()),
        Err(e) => eprintln!("the cluster did not come up: {e:#}"),
    }
    let mut mount = None;
    if result.is_ok()
        && let Some(mountpoint) = &args.mount
    {
        match mount_volume(dir, &file, &args.volume, mountpoint) {
            Ok(child) => mount = Some((child, mountpoint.clone())),
            Err(e) => eprintln!("mounting {} failed: {e:#}", args.volume),
        }
    }
    if result.is_ok() {
        match crate::dev_metrics::write_scrape_config(dir, &file, mount.is_some()) {
            Ok(path) => println!("metrics: prometheus --config.file={}", path.display()),
            Err(e) => eprintln!("writing the prometheus scrape config failed: {e:#}"),
        }
    }
    if result.is_ok() {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut reap = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = reap.tick() => children.retain_mut(|c| matches!(c.try_wait(), Ok(None))),
            }
        }
    }
    if let Some((mut child, mountpoint)) = mount {
        if let Err(e) = crate::mount_cmd::unmount(&mountpoint) {
            eprintln!("{e:#}");
        }
        let _ = child.wait();
    }
    if let Some(child) = gateway {
        crate::dev_s3::stop(child);
    }
    println!("stopping the cluster");
    stop_nodes(dir).await?;
    for mut child in children {
        let _ = child.wait();
    }
    result
}

/// With `--net-delay-ms`/`--net-mbit`, starts a delaying proxy in front of
/// each datanode and has the datanode advertise it, so that every client and
/// peer reaches it through the emulated link. The proxies live as long as the
/// returned tasks (aborted when dropped).
async fn emulate_network(file: &mut ClusterFile, args: &DevArgs) -> anyhow::Result<Vec<AbortOnDrop>> {
    let mut proxies = Vec::new();
    let enabled = args.net_delay_ms > 0.0 || args.net_mbit > 0;
    let shape = net_proxy::Shape {
        one_way: Duration::from_secs_f64(args.net_delay_ms.max(0.0) / 2000.0),
        rate: (args.net_mbit > 0).then(|| args.net_mbit * 1_000_000 / 8),
    };
    for node in file.nodes.iter_mut().filter(|n| n.role == "datanode") {
        node.advertise = None;
        if !enabled {
            continue;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a network proxy")?;
        node.advertise = Some(listener.local_addr()?.to_string());
        proxies.push(AbortOnDrop(tokio::spawn(net_proxy::serve(listener, node.address.clone(), shape))));
    }
    if enabled {
        println!(
            "emulated network in front of the datanodes: {} ms round trip, {}",
            args.net_delay_ms,
            if args.net_mbit > 0 { format!("{} Mbit/s", args.net_mbit) } else { "no rate limit".into() }
        );
    }
    Ok(proxies)
}

/// A task stopped when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Mounts `volume` at `mountpoint` with a `strata mount --foreground` child
/// logging to the cluster directory; returns once the mount is live.
fn mount_volume(dir: &Path, file: &ClusterFile, volume: &str, mountpoint: &Path) -> anyhow::Result<Child> {
    anyhow::ensure!(!volume.is_empty(), "--mount needs a volume (--volume)");
    std::fs::create_dir_all(mountpoint).with_context(|| format!("creating {}", mountpoint.display()))?;
    anyhow::ensure!(!crate::mount_cmd::is_mounted(mountpoint), "{} is already a mount point", mountpoint.display());
    let args = MountArgs {
        cache_dir: Some(dir.join("mount-cache")),
        global_args: file.mount_metrics.iter().flat_map(|m| ["--metrics".to_string(), m.clone()]).collect(),
        ..MountArgs::new(volume, mountpoint)
    };
    let child = start_mount_process(&file.master_addresses(), &args, &dir.join("mount.log"))?;
    println!("volume {volume} mounted at {}", mountpoint.display());
    Ok(child)
}

/// Waits for a leader and every node alive, then creates the default volume.
async fn bring_up(file: &ClusterFile, args: &DevArgs) -> anyhow::Result<()> {
    let client = MasterClient::new(file.master_addresses())?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // A node that died while starting (say, its port was taken) will not come back by waiting.
        if let Some(dead) = file.nodes.iter().find(|n| n.pid.is_some_and(|pid| !pid_alive(pid))) {
            let log = std::fs::read_to_string(&dead.log).unwrap_or_default();
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(empty log)");
            anyhow::bail!("{} {} exited while starting: {last}", dead.role, dead.id);
        }
        let status = collect_status(&client).await;
        let alive = |n: &DevNode| status.nodes.iter().any(|v| v.id == n.id && v.alive);
        let missing: Vec<u64> = file.nodes.iter().filter(|n| !alive(n)).map(|n| n.id).collect();
        if let (Some(leader), true) = (&status.leader, missing.is_empty()) {
            println!("leader: master {} at {}", leader.id, leader.address);
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "after 90 s: leader {:?}, nodes not alive {missing:?} (see the node.log files)",
                status.leader.map(|l| l.id)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let count = |role: &str| file.nodes.iter().filter(|n| n.role == role).count();
    println!(
        "masters: {}  metanodes: {}  datanodes: {}  cachenodes: {}",
        count("master"),
        count("metanode"),
        count("datanode"),
        count("cachenode")
    );
    println!("export STRATA_MASTER={}", file.master_addresses().join(","));
    if !args.volume.is_empty() {
        ensure_volume(&client, &args.volume, count("datanode"), &args.volume_capacity).await?;
        wait_namespace(&client, &args.volume).await?;
    }
    Ok(())
}

/// Waits until every meta partition of `name` answers (hosted and initialised).
async fn wait_namespace(client: &MasterClient, name: &str) -> anyhow::Result<()> {
    let meta = strata_sdk::MetaClient::open(client, name).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match meta.partition_stats().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context(format!("the namespace of volume {name} is not ready"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn ensure_volume(client: &MasterClient, name: &str, datanodes: usize, capacity: &str) -> anyhow::Result<()> {
    if client.get_volume(name).await.is_ok() {
        println!("volume {name} is there");
        return Ok(());
    }
    let replicas = datanodes.clamp(1, 3) as u32;
    let redundancy = strata_common::types::Redundancy::Replicated { replicas };
    let request = pb::CreateVolumeRequest {
        name: name.into(),
        redundancy: Some(redundancy.into()),
        capacity_bytes: parse_size(capacity)?,
        owner: String::new(),
        request_id: format!("strata-dev-{name}"),
        meta_partitions: 0,
    };
    client.create_volume(request).await.with_context(|| format!("creating volume {name}"))?;
    println!("volume {name} created ({redundancy})");
    Ok(())
}

/// SIGTERM to every node still running, SIGKILL after 10 s; records them stopped.
async fn stop_nodes(dir: &Path) -> anyhow::Result<()> {
    let Some(mut file) = ClusterFile::load(dir)? else {
        return Ok(());
    };
    let mut running: Vec<u32> = file.nodes.iter().filter_map(|n| n.pid.filter(|p| is_node_process(*p, n))).collect();
    // The gateway, if its supervisor died without stopping it.
    if let Some(pid) = file.s3.as_ref().and_then(|s3| s3.pid).filter(|p| is_gateway_process(*p)) {
        running.push(pid);
    }
    for pid in &running {
        signal(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in running.iter().filter(|p| pid_alive(**p)) {
        signal(*pid, libc::SIGKILL);
    }
    for node in file.nodes.iter_mut() {
        node.pid = None;
    }
    if let Some(s3) = file.s3.as_mut() {
        s3.pid = None;
    }
    if file.supervisor_pid == Some(std::process::id()) {
        file.supervisor_pid = None;
    }
    file.store(dir)
}

fn restart(dir: &Path, node_id: u64) -> anyhow::Result<()> {
    let mut file = ClusterFile::load(dir)?.with_context(|| format!("no cluster.json in {}", dir.display()))?;
    let node = file
        .node(node_id)
        .with_context(|| format!("node {node_id} is not in {}", ClusterFile::path(dir).display()))?
        .clone();
    if let Some(pid) = node.pid.filter(|p| is_node_process(*p, &node)) {
        anyhow::bail!("{} {node_id} is already running (pid {pid})", node.role);
    }
    let child = spawn(&node, true)?;
    let pid = child.id();
    for n in file.nodes.iter_mut().filter(|n| n.id == node_id) {
        n.pid = Some(pid);
    }
    file.store(dir)?;
    println!("{} {node_id} started (pid {pid})", node.role);
    Ok(())
}

async fn stop(dir: &Path) -> anyhow::Result<()> {
    let file = ClusterFile::load(dir)?.with_context(|| format!("no cluster.json in {}", dir.display()))?;
    if let Some(pid) = file.supervisor_pid.filter(|p| pid_alive(*p)) {
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while pid_alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop_nodes(dir).await?;
    println!("cluster in {} stopped", dir.display());
    Ok(())
}
