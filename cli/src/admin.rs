//! Admin commands: `strata status`, `strata node list`, `strata volume …`,
//! `strata user …`. Each prints a readable table, or JSON with `--json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use strata_common::size::{format_size, parse_size};
use strata_common::types::{AccessLevel, NodeRole, Redundancy};
use strata_proto::master as pb;
use strata_sdk::MasterClient;

use crate::cluster_file::ClusterFile;

/// Finds the masters: `--master`/`STRATA_MASTER`, else the `cluster.json` of
/// a `strata dev` cluster in the current directory (or its `strata-dev/`).
pub fn master_addresses(flag: &[String]) -> anyhow::Result<Vec<String>> {
    let given: Vec<String> =
        flag.iter().flat_map(|m| m.split(',')).map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect();
    if !given.is_empty() {
        return Ok(given);
    }
    for dir in [Path::new("."), Path::new("strata-dev")] {
        if let Some(file) = ClusterFile::load(dir)? {
            let masters = file.master_addresses();
            if !masters.is_empty() {
                return Ok(masters);
            }
        }
    }
    anyhow::bail!(
        "no masters given: pass --master HOST:PORT[,…], set STRATA_MASTER, or run where `strata dev` keeps its cluster.json"
    )
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `value` as JSON, or for people with `human`.
/// The outcome of a command that changes something and has nothing else to
/// show: `record` as JSON with `--json`, else the sentence `human`.
pub(crate) fn done(json: bool, record: serde_json::Value, human: &str) -> anyhow::Result<()> {
    output(json, &record, |_| println!("{human}"))
}

pub(crate) fn output<T: Serialize + ?Sized>(json: bool, value: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
    if json {
        return print_json(value);
    }
    human(value);
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub id: u64,
    pub role: String,
    pub address: String,
    pub alive: bool,
    pub leader: bool,
    pub last_heartbeat_ms_ago: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub disk_available_bytes: Option<u64>,
    pub partitions_held: u64,
    pub partitions_assigned: u64,
    /// For masters: the Raft log index this master has applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
    /// Being drained (`strata node decommission`).
    pub decommissioned: bool,
    /// A cachenode's store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheNodeView>,
}

/// What a cachenode holds and how often it had what was asked.
#[derive(Debug, Serialize)]
pub struct CacheNodeView {
    pub memory_bytes: u64,
    pub memory_capacity: u64,
    pub disk_bytes: u64,
    pub disk_capacity: u64,
    pub blocks: u64,
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses); none before the first request.
    pub hit_ratio: Option<f64>,
    pub evictions: u64,
    pub rejected: u64,
    pub corrupt_blocks: u64,
}

impl From<pb::CacheTierReport> for CacheNodeView {
    fn from(r: pb::CacheTierReport) -> CacheNodeView {
        let asked = r.hits + r.misses;
        CacheNodeView {
            memory_bytes: r.memory_bytes,
            memory_capacity: r.memory_capacity,
            disk_bytes: r.disk_bytes,
            disk_capacity: r.disk_capacity,
            blocks: r.blocks,
            hits: r.hits,
            misses: r.misses,
            hit_ratio: (asked > 0).then(|| r.hits as f64 / asked as f64),
            evictions: r.evictions,
            rejected: r.rejected,
            corrupt_blocks: r.corrupt_blocks,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RepairView {
    pub partition_id: u64,
    pub node_id: u64,
    pub blobs_done: u64,
    pub blobs_total: u64,
}

#[derive(Debug, Serialize)]
pub struct LeaderView {
    pub id: u64,
    pub address: String,
    pub term: u64,
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub leader: Option<LeaderView>,
    pub nodes: Vec<NodeView>,
    pub volumes: Option<usize>,
    /// Data partition members being rebuilt.
    pub repairs: Vec<RepairView>,
}

fn role_name(role: i32) -> String {
    NodeRole::try_from(role).map(|r| r.as_str().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// Gathers the cluster's state: each master asked directly (alive = it
/// answered), the rest from the leader's registry.
pub async fn collect_status(client: &MasterClient) -> StatusView {
    let mut masters: BTreeMap<u64, NodeView> = BTreeMap::new();
    let mut leader: Option<LeaderView> = None;
    let mut to_ask: Vec<String> = client.masters().to_vec();
    let mut asked = Vec::new();
    while let Some(address) = to_ask.pop() {
        if asked.contains(&address) {
            continue;
        }
        asked.push(address.clone());
        let Ok(status) = client.cluster_status_of(&address).await else {
            continue;
        };
        for peer in &status.masters {
            masters.entry(peer.id).or_insert_with(|| master_view(peer.id, &peer.address));
            if !asked.contains(&peer.address) {
                to_ask.push(peer.address.clone());
            }
        }
        let me = masters.entry(status.self_id).or_insert_with(|| master_view(status.self_id, &address));
        me.alive = true;
        me.applied_index = Some(status.applied_index);
        if status.leader_id == status.self_id && leader.as_ref().is_none_or(|l| l.term < status.term) {
            leader = Some(LeaderView { id: status.self_id, address: address.clone(), term: status.term });
        }
    }
    for m in masters.values_mut() {
        m.leader = leader.as_ref().is_some_and(|l| l.id == m.id);
    }
    let mut nodes: Vec<NodeView> = masters.into_values().collect();
    let mut volumes = None;
    let mut repairs = Vec::new();
    if leader.is_some() {
        if let Ok(listed) = client.cluster_nodes().await {
            repairs = listed
                .repairs
                .iter()
                .map(|r| RepairView {
                    partition_id: r.partition_id,
                    node_id: r.node_id,
                    blobs_done: r.blobs_done,
                    blobs_total: r.blobs_total,
                })
                .collect();
            nodes.extend(listed.nodes.into_iter().filter(|n| n.role != pb::NodeRole::Master as i32).map(|n| {
                NodeView {
                    id: n.id,
                    role: role_name(n.role),
                    address: n.address,
                    alive: n.alive,
                    leader: false,
                    last_heartbeat_ms_ago: n.last_heartbeat_ms_ago,
                    disk_total_bytes: n.capacity.map(|c| c.total_bytes),
                    disk_available_bytes: n.capacity.map(|c| c.available_bytes),
                    partitions_held: n.partitions_held,
                    partitions_assigned: n.partitions_assigned,
                    applied_index: None,
                    decommissioned: n.decommissioned,
                    cache: n.cache.map(CacheNodeView::from),
                }
            }));
        }
        volumes = client.list_volumes().await.ok().map(|v| v.len());
    }
    StatusView { leader, nodes, volumes, repairs }
}

fn master_view(id: u64, address: &str) -> NodeView {
    NodeView {
        id,
        role: "master".into(),
        address: address.into(),
        alive: false,
        leader: false,
        last_heartbeat_ms_ago: None,
        disk_total_bytes: None,
        disk_available_bytes: None,
        partitions_held: 0,
        partitions_assigned: 0,
        applied_index: None,
        decommissioned: false,
        cache: None,
    }
}

fn print_nodes(nodes: &[NodeView]) {
    println!(
        "{:<6} {:<9} {:<22} {:<6} {:<7} {:>11} {:>9} {:>9}",
        "ID", "ROLE", "ADDRESS", "STATE", "LEADER", "DISK FREE", "HELD", "ASSIGNED"
    );
    for n in nodes {
        let free = n.disk_available_bytes.map(format_size).unwrap_or_else(|| "-".into());
        println!(
            "{:<6} {:<9} {:<22} {:<6} {:<7} {:>11} {:>9} {:>9}",
            n.id,
            n.role,
            n.address,
            match (n.alive, n.decommissioned) {
                (true, false) => "alive",
                (true, true) => "drain",
                (false, _) => "dead",
            },
            if n.leader { "yes" } else { "" },
            free,
            n.partitions_held,
            n.partitions_assigned
        );
        if let Some(c) = &n.cache {
            let ratio = c.hit_ratio.map_or("-".into(), |r| format!("{r:.2}"));
            println!(
                "       cache: memory {} of {}, disk {} of {}, hit ratio {ratio} ({} hits, {} misses)",
                format_size(c.memory_bytes),
                format_size(c.memory_capacity),
                format_size(c.disk_bytes),
                format_size(c.disk_capacity),
                c.hits,
                c.misses
            );
        }
    }
}

pub async fn status(client: &MasterClient, json: bool) -> anyhow::Result<()> {
    let view = collect_status(client).await;
    if json {
        print_json(&view)?;
    } else {
        match &view.leader {
            Some(l) => println!("leader: master {} at {} (term {})", l.id, l.address, l.term),
            None => println!("leader: none known"),
        }
        if let Some(v) = view.volumes {
            println!("volumes: {v}");
        }
        print_nodes(&view.nodes);
        for r in &view.repairs {
            println!(
                "repair: data partition {} rebuilding on node {}: {}/{} blobs",
                r.partition_id, r.node_id, r.blobs_done, r.blobs_total
            );
        }
    }
    if view.leader.is_none() {
        anyhow::bail!("no master leader could be reached");
    }
    Ok(())
}

pub async fn node_decommission(client: &MasterClient, node_id: u64, json: bool) -> anyhow::Result<()> {
    let moved = client.decommission_node(node_id).await?;
    let human =
        format!("node {node_id} is being drained: {moved} data partitions get a new member (see `strata status`)");
    done(json, serde_json::json!({ "node_id": node_id, "partitions_moved": moved }), &human)
}

pub async fn node_list(client: &MasterClient, json: bool) -> anyhow::Result<()> {
    let view = collect_status(client).await;
    if view.leader.is_none() {
        anyhow::bail!("no master leader could be reached");
    }
    output(json, view.nodes.as_slice(), print_nodes)
}

#[derive(Debug, Serialize)]
pub struct PartitionView {
    pub id: u64,
    pub members: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode_start: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode_end: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct VolumeView {
    pub id: u64,
    pub name: String,
    pub redundancy: String,
    pub capacity_bytes: u64,
    /// Bytes of regular files and inodes, as the meta partitions last reported.
    pub used_bytes: u64,
    pub inodes: u64,
    /// Seconds deleted files stay in the volume's trash (0: no trash).
    pub trash_secs: u64,
    pub owner: String,
    pub created_at_ms: u64,
    pub meta_partitions: Vec<PartitionView>,
    pub data_partitions: Vec<PartitionView>,
}

impl From<pb::Volume> for VolumeView {
    fn from(v: pb::Volume) -> Self {
        let ids = |m: &[pb::PartitionMember]| m.iter().map(|m| m.node_id).collect();
        VolumeView {
            id: v.id,
            redundancy: Redundancy::name_of(v.redundancy.as_ref()).unwrap_or_default(),
            name: v.name,
            capacity_bytes: v.capacity_bytes,
            used_bytes: v.used_bytes,
            inodes: v.inodes,
            trash_secs: v.trash_secs,
            owner: v.owner,
            created_at_ms: v.created_at_ms,
            meta_partitions: v
                .meta_partitions
                .iter()
                .map(|p| PartitionView {
                    id: p.id,
                    members: ids(&p.members),
                    inode_start: Some(p.inode_start),
                    inode_end: p.inode_end,
                })
                .collect(),
            data_partitions: v
                .data_partitions
                .iter()
                .map(|p| PartitionView { id: p.id, members: ids(&p.members), inode_start: None, inode_end: None })
                .collect(),
        }
    }
}

fn print_volume(v: &VolumeView) {
    println!(
        "volume {} (id {}): {}, {} used of {}, {} inodes",
        v.name,
        v.id,
        v.redundancy,
        format_size(v.used_bytes),
        format_size(v.capacity_bytes),
        v.inodes
    );
    for p in &v.meta_partitions {
        let end = p.inode_end.map(|e| e.to_string()).unwrap_or_else(|| "∞".into());
        println!("  meta partition {:<5} inodes [{}, {end})  on {:?}", p.id, p.inode_start.unwrap_or(0), p.members);
    }
    for p in &v.data_partitions {
        println!("  data partition {:<5} on {:?}", p.id, p.members);
    }
}

/// What `strata volume create` asks for, as typed.
pub struct VolumeSpec<'a> {
    pub redundancy: &'a str,
    pub capacity: &'a str,
    pub owner: &'a str,
    pub meta_partitions: u32,
}

pub async fn volume_create(client: &MasterClient, name: &str, spec: VolumeSpec<'_>, json: bool) -> anyhow::Result<()> {
    let redundancy: Redundancy = spec.redundancy.parse()?;
    let capacity_bytes = parse_size(spec.capacity)?;
    let request = pb::CreateVolumeRequest {
        name: name.to_string(),
        redundancy: Some(redundancy.into()),
        capacity_bytes,
        owner: spec.owner.to_string(),
        request_id: format!("{:032x}", rand_id()),
        meta_partitions: spec.meta_partitions,
    };
    let volume = VolumeView::from(client.create_volume(request).await?);
    output(json, &volume, print_volume)
}

fn rand_id() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    nanos ^ ((std::process::id() as u128) << 64)
}

pub async fn volume_list(client: &MasterClient, json: bool) -> anyhow::Result<()> {
    let volumes: Vec<VolumeView> = client.list_volumes().await?.into_iter().map(VolumeView::from).collect();
    if json {
        return print_json(&volumes);
    }
    println!("{:<6} {:<24} {:<12} {:>12} {:>6} {:>6}", "ID", "NAME", "REDUNDANCY", "CAPACITY", "META", "DATA");
    for v in &volumes {
        println!(
            "{:<6} {:<24} {:<12} {:>12} {:>6} {:>6}",
            v.id,
            v.name,
            v.redundancy,
            format_size(v.capacity_bytes),
            v.meta_partitions.len(),
            v.data_partitions.len()
        );
    }
    Ok(())
}

pub async fn volume_info(client: &MasterClient, name: &str, json: bool) -> anyhow::Result<()> {
    let volume = VolumeView::from(client.get_volume(name).await?);
    output(json, &volume, print_volume)
}

pub async fn volume_expand(client: &MasterClient, name: &str, capacity: &str, json: bool) -> anyhow::Result<()> {
    let capacity_bytes = parse_size(capacity)?;
    let volume = VolumeView::from(client.set_volume_capacity(name, capacity_bytes).await?);
    output(json, &volume, |v| println!("volume {} capacity set to {}", v.name, format_size(v.capacity_bytes)))
}

pub async fn volume_set(client: &MasterClient, name: &str, trash_secs: Option<u64>, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(trash_secs.is_some(), "nothing to set: pass --trash-hours N");
    let volume = VolumeView::from(client.set_volume_options(name, trash_secs).await?);
    output(json, &volume, |v| match v.trash_secs {
        0 => println!("volume {}: no trash", v.name),
        secs => println!("volume {}: deleted files are kept {} hours", v.name, secs / 3600),
    })
}

pub async fn volume_delete(client: &MasterClient, name: &str, json: bool) -> anyhow::Result<()> {
    client.delete_volume(name).await?;
    done(json, serde_json::json!({ "deleted_volume": name }), &format!("volume {name} deleted"))
}

#[derive(Debug, Serialize)]
struct UserView {
    name: String,
    access_keys: Vec<(String, String)>,
}

pub async fn user_create(client: &MasterClient, name: &str, json: bool) -> anyhow::Result<()> {
    let user = client.create_user(name).await?;
    let view = UserView {
        name: user.name,
        access_keys: user.access_keys.into_iter().map(|k| (k.access_key_id, k.secret_access_key)).collect(),
    };
    if json {
        return print_json(&view);
    }
    println!("user {} created", view.name);
    for (id, secret) in &view.access_keys {
        println!("  access key id:     {id}\n  secret access key: {secret}");
    }
    Ok(())
}

pub async fn user_list(client: &MasterClient, json: bool) -> anyhow::Result<()> {
    let users = client.list_users().await?;
    if json {
        let names: Vec<(String, Vec<String>)> =
            users.into_iter().map(|u| (u.name, u.access_keys.into_iter().map(|k| k.access_key_id).collect())).collect();
        return print_json(&names);
    }
    for u in users {
        let keys: Vec<String> = u.access_keys.into_iter().map(|k| k.access_key_id).collect();
        println!("{:<24} {}", u.name, keys.join(","));
    }
    Ok(())
}

pub async fn key_create(client: &MasterClient, user: &str, json: bool) -> anyhow::Result<()> {
    let key = client.create_access_key(user).await?;
    let view =
        KeyView { user: key.user, access_key_id: key.access_key_id, secret_access_key: Some(key.secret_access_key) };
    output(json, &view, |k| {
        println!("access key for user {}", k.user);
        println!("  access key id:     {}", k.access_key_id);
        println!("  secret access key: {}", k.secret_access_key.as_deref().unwrap_or(""));
        println!("(the secret is not shown again)");
    })
}

pub async fn key_list(client: &MasterClient, user: Option<&str>, json: bool) -> anyhow::Result<()> {
    let keys: Vec<KeyView> = client
        .list_users()
        .await?
        .into_iter()
        .filter(|u| user.is_none_or(|name| u.name == name))
        .flat_map(|u| {
            let name = u.name;
            u.access_keys.into_iter().map(move |k| KeyView {
                user: name.clone(),
                access_key_id: k.access_key_id,
                secret_access_key: None,
            })
        })
        .collect();
    output(json, &keys, |keys| {
        for k in keys {
            println!("{:<24} {}", k.access_key_id, k.user);
        }
    })
}

pub async fn key_delete(client: &MasterClient, access_key_id: &str, json: bool) -> anyhow::Result<()> {
    client.delete_access_key(access_key_id).await?;
    let human = format!("access key {access_key_id} deleted");
    done(json, serde_json::json!({ "deleted_access_key_id": access_key_id }), &human)
}

#[derive(Debug, Serialize)]
struct KeyView {
    user: String,
    access_key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_access_key: Option<String>,
}

/// Exactly one of `--read`, `--write`, `--owner`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct GrantFlags {
    /// List and read objects.
    #[arg(long)]
    read: bool,
    /// Also put and delete objects and run multipart uploads.
    #[arg(long)]
    write: bool,
    /// Everything the owner may do, deleting the bucket included.
    #[arg(long)]
    owner: bool,
}

impl GrantFlags {
    pub fn level(&self) -> AccessLevel {
        match (self.read, self.write, self.owner) {
            (_, _, true) => AccessLevel::Owner,
            (_, true, _) => AccessLevel::Write,
            _ => AccessLevel::Read,
        }
    }
}

pub async fn bucket_grant(
    client: &MasterClient,
    bucket: &str,
    access_key_id: &str,
    level: Option<AccessLevel>,
    json: bool,
) -> anyhow::Result<()> {
    client.set_bucket_grant(bucket, access_key_id, level).await?;
    let human = match level {
        Some(level) => format!("access key {access_key_id} may {level} bucket {bucket}"),
        None => format!("access key {access_key_id} has no grant on bucket {bucket} any more"),
    };
    let record = serde_json::json!({
        "bucket": bucket,
        "access_key_id": access_key_id,
        "level": level.map(AccessLevel::as_str),
    });
    done(json, record, &format!("{human}\n(gateways apply it within 30 s)"))
}

#[derive(Debug, Serialize)]
struct GrantsView {
    bucket: String,
    owner: String,
    grants: Vec<(String, String)>,
}

pub async fn bucket_grants(client: &MasterClient, bucket: &str, json: bool) -> anyhow::Result<()> {
    let volume = client.get_volume(bucket).await?;
    let grants = volume
        .grants
        .iter()
        .map(|g| {
            let level = AccessLevel::from_wire(g.level).ok().flatten().map_or("none", AccessLevel::as_str);
            (g.access_key_id.clone(), level.to_string())
        })
        .collect();
    let view = GrantsView { bucket: volume.name, owner: volume.owner, grants };
    output(json, &view, |v| {
        let owner = if v.owner.is_empty() { "(none: every key may use it)" } else { v.owner.as_str() };
        println!("bucket {} owned by {owner}", v.bucket);
        for (key, level) in &v.grants {
            println!("  {key}  {level}");
        }
    })
}

pub async fn user_delete(client: &MasterClient, name: &str, json: bool) -> anyhow::Result<()> {
    client.delete_user(name).await?;
    done(json, serde_json::json!({ "deleted_user": name }), &format!("user {name} deleted"))
}

pub async fn fsck(client: &MasterClient, volume: &str, grace_secs: u64, json: bool) -> anyhow::Result<()> {
    let meta = strata_sdk::MetaClient::open(client, volume).await?;
    let grace_ns = i64::try_from(grace_secs.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX);
    let report = strata_sdk::fsck::fsck(&meta, grace_ns).await?;
    output(json, &report, |r| {
        println!("volume {volume}: {} inodes, {} entries, {} orphans", r.inodes, r.dentries, r.orphans);
        if r.problems.is_empty() {
            println!("no problems found");
        }
        for p in &r.problems {
            println!("problem: {p}");
        }
    })?;
    if !report.problems.is_empty() {
        anyhow::bail!("{} problems in volume {volume}", report.problems.len());
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct DfView {
    volume: String,
    capacity_bytes: u64,
    used_bytes: u64,
    files: u64,
}

pub async fn volume_df(client: &MasterClient, name: &str, json: bool) -> anyhow::Result<()> {
    let meta = strata_sdk::MetaClient::open(client, name).await?;
    let fs = meta.statfs().await?;
    let view = DfView {
        volume: name.to_string(),
        capacity_bytes: fs.capacity_bytes,
        used_bytes: fs.used_bytes,
        files: fs.files,
    };
    output(json, &view, |v| {
        println!("{:<24} {:>12} {:>12} {:>12}", "VOLUME", "CAPACITY", "USED", "FILES");
        println!(
            "{:<24} {:>12} {:>12} {:>12}",
            v.volume,
            format_size(v.capacity_bytes),
            format_size(v.used_bytes),
            v.files
        );
    })
}
