//! The configuration schema: every field of every role's TOML config file,
//! documented in one place. A process reads the section of its role; flags and
//! environment variables of the `strata` binary override single fields.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StrataError};

/// A whole config file. Only the section of the role being started is needed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub master: Option<MasterConfig>,
    pub metanode: Option<NodeConfig>,
    pub datanode: Option<NodeConfig>,
    pub cachenode: Option<NodeConfig>,
}

/// Configuration of a master replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// Raft id of this master: unique among the masters, never 0.
    pub id: u64,
    /// Address to listen on and to advertise to nodes and clients (`host:port`).
    pub listen: String,
    /// Every master of the cluster, this one included, as `"ID=HOST:PORT"`.
    /// A single entry runs a one-master cluster (development only).
    pub peers: Vec<String>,
    /// Directory holding this master's RocksDB (Raft log and cluster state).
    pub data_dir: PathBuf,
    /// Raft timing and log retention.
    #[serde(default)]
    pub raft: RaftConfig,
    /// How often metanodes and datanodes are told to heartbeat, in milliseconds.
    #[serde(default = "default_node_heartbeat_interval_ms")]
    pub node_heartbeat_interval_ms: u64,
    /// A node not heard from for this long is considered dead, in milliseconds.
    #[serde(default = "default_node_timeout_ms")]
    pub node_timeout_ms: u64,
    /// Replicas of every meta partition (each on a distinct metanode).
    #[serde(default = "default_meta_replicas")]
    pub meta_replicas: u32,
    /// Meta partitions created with a new volume; the last one is open-ended.
    #[serde(default = "default_initial_meta_partitions")]
    pub initial_meta_partitions: u32,
    /// Inodes covered by each closed meta partition of a new volume.
    #[serde(default = "default_meta_partition_inode_span")]
    pub meta_partition_inode_span: u64,
    /// The open-ended meta partition is split once it has allocated this many inodes.
    #[serde(default = "default_meta_partition_split_inodes")]
    pub meta_partition_split_inodes: u64,
    /// Data partitions created with a new volume.
    #[serde(default = "default_initial_data_partitions")]
    pub initial_data_partitions: u32,
    /// A datanode dead for this long (milliseconds) is replaced in its data
    /// partitions and their data rebuilt elsewhere.
    #[serde(default = "default_data_repair_delay_ms")]
    pub data_repair_delay_ms: u64,
    /// Data partition members being rebuilt at once, cluster-wide.
    #[serde(default = "default_max_concurrent_repairs")]
    pub max_concurrent_repairs: u32,
    /// Address (`host:port`) of the web console this master serves over
    /// HTTP, for keys of the `admin` user; none: no console.
    #[serde(default)]
    pub console: Option<String>,
}

fn default_data_repair_delay_ms() -> u64 {
    60_000
}
fn default_max_concurrent_repairs() -> u32 {
    8
}

/// Configuration of a metanode or datanode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable node id, unique in the cluster. 0 lets the master assign one on
    /// first start; the id is then kept in the data directory.
    #[serde(default)]
    pub node_id: u64,
    /// Address to listen on and to advertise (`host:port`).
    pub listen: String,
    /// Address other nodes and clients reach this node at, when it is not
    /// `listen` (a proxy or NAT in front of the node).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Directory for this node's state (and, for a datanode, its data).
    pub data_dir: PathBuf,
    /// Addresses of the masters (`host:port`); any one of them is enough to find the leader.
    pub masters: Vec<String>,
    /// Raft timing and log retention of the partitions this node hosts (metanodes).
    #[serde(default)]
    pub raft: RaftConfig,
    /// The blob store (datanodes).
    #[serde(default)]
    pub store: StoreConfig,
    /// Seconds a blob no file references any more is kept before the
    /// metanode deletes it from the datanodes (metanodes). Must exceed how
    /// long any client uses an extent map it read.
    #[serde(default = "default_gc_grace_secs")]
    pub gc_grace_secs: u64,
    /// The block store of the shared cache tier (cachenodes).
    #[serde(default)]
    pub cache: CacheTierConfig,
}

/// A cachenode's store: blocks in memory and in a bounded local directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheTierConfig {
    /// MiB of blocks kept in memory.
    #[serde(default = "default_cache_memory_mb")]
    pub memory_mb: u64,
    /// MiB of blocks kept on the local disk (0: memory only); their contents
    /// outlive restarts.
    #[serde(default = "default_cache_disk_mb")]
    pub disk_mb: u64,
    /// Directory of the disk level; default: `cache` under `data_dir`.
    #[serde(default)]
    pub disk_dir: Option<PathBuf>,
    /// Bytes per block: what clients ask for (the mounts' block size).
    #[serde(default = "default_cache_block_size")]
    pub block_size: u64,
}

impl Default for CacheTierConfig {
    fn default() -> CacheTierConfig {
        CacheTierConfig {
            memory_mb: default_cache_memory_mb(),
            disk_mb: default_cache_disk_mb(),
            disk_dir: None,
            block_size: default_cache_block_size(),
        }
    }
}

fn default_cache_memory_mb() -> u64 {
    1024
}
fn default_cache_disk_mb() -> u64 {
    10 * 1024
}
fn default_cache_block_size() -> u64 {
    1 << 20
}

impl NodeConfig {
    /// The address this node gives the master for others to reach it.
    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }
}

fn default_gc_grace_secs() -> u64 {
    60
}

/// A datanode's blob store: where segments live and how they are maintained.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// One directory per disk holding segment files; empty means a single
    /// `disk0` directory inside the node's data directory.
    pub data_dirs: Vec<PathBuf>,
    /// A segment file is sealed once it reaches this size, in MiB.
    pub segment_size_mb: u64,
    /// Sealed segments whose garbage (deleted or replaced blobs) reaches this
    /// fraction of their size are compacted: live blobs copied out, file removed.
    pub compact_garbage_ratio: f64,
    /// Seconds between looks for segments to compact.
    pub compact_interval_secs: u64,
    /// Background scrub rate in MiB/s (0 turns scrubbing off): stored blocks are
    /// reread and their CRCs checked, round and round.
    pub scrub_mb_per_sec: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dirs: Vec::new(),
            segment_size_mb: 1024,
            compact_garbage_ratio: 0.5,
            compact_interval_secs: 30,
            scrub_mb_per_sec: 16,
        }
    }
}

/// Raft timing and log retention, shared by every Raft group a process hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Length of one Raft tick in milliseconds.
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomized up to twice this).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Whether idle groups hibernate: a leader whose followers hold its
    /// whole log, with nothing asked of it for `election_ticks`, stops
    /// ticking and heartbeating, and so do its followers, until a request or
    /// a message wakes them (or the leader's node falls silent). An idle
    /// node then costs little however many groups it hosts.
    pub hibernate: bool,
    /// Applied entries kept in the log before it is truncated; lagging
    /// followers further behind than this receive a snapshot.
    pub log_retain_entries: u64,
    /// RocksDB's cap on open files (bounded: the process limit is 20,000).
    pub rocksdb_max_open_files: i32,
    /// RocksDB block cache in MiB, shared by every group on the node; index
    /// and filter blocks are charged to it too, so it bounds read memory
    /// whatever the size of the data.
    pub rocksdb_block_cache_mb: u64,
    /// Size of one RocksDB memtable in MiB (at most two per node before flushing).
    pub rocksdb_write_buffer_mb: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            hibernate: true,
            log_retain_entries: 1000,
            rocksdb_max_open_files: 256,
            rocksdb_block_cache_mb: 128,
            rocksdb_write_buffer_mb: 32,
        }
    }
}

fn default_node_heartbeat_interval_ms() -> u64 {
    1000
}
fn default_node_timeout_ms() -> u64 {
    5000
}
fn default_meta_replicas() -> u32 {
    3
}
fn default_initial_meta_partitions() -> u32 {
    3
}
fn default_meta_partition_inode_span() -> u64 {
    1 << 24
}
fn default_meta_partition_split_inodes() -> u64 {
    1 << 24
}
fn default_initial_data_partitions() -> u32 {
    4
}

/// Parses `"ID=HOST:PORT"` peer entries.
pub fn parse_peers(peers: &[String]) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::with_capacity(peers.len());
    for entry in peers {
        let (id, addr) =
            entry.split_once('=').ok_or_else(|| StrataError::invalid(format!("peer {entry:?} is not ID=HOST:PORT")))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id != 0)
            .ok_or_else(|| StrataError::invalid(format!("peer {entry:?} needs a non-zero id")))?;
        if out.iter().any(|(other, _)| *other == id) {
            return Err(StrataError::invalid(format!("peer id {id} appears twice")));
        }
        out.push((id, addr.trim().to_string()));
    }
    Ok(out)
}

impl MasterConfig {
    /// Checks the fields that have no safe default.
    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(StrataError::invalid("master id must not be 0"));
        }
        let peers = parse_peers(&self.peers)?;
        if !peers.iter().any(|(id, _)| *id == self.id) {
            return Err(StrataError::invalid(format!("master id {} is not among the peers {:?}", self.id, self.peers)));
        }
        if self.meta_replicas == 0 || self.initial_meta_partitions == 0 {
            return Err(StrataError::invalid("meta_replicas and initial_meta_partitions must be >= 1"));
        }
        if self.meta_partition_inode_span == 0 {
            return Err(StrataError::invalid("meta_partition_inode_span must be >= 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        let peers = parse_peers(&["1=127.0.0.1:1".into(), "2 = h:2".into()]).unwrap();
        assert_eq!(peers, vec![(1, "127.0.0.1:1".into()), (2, "h:2".into())]);
        assert!(parse_peers(&["0=h:1".into()]).is_err());
        assert!(parse_peers(&["1=h:1".into(), "1=h:2".into()]).is_err());
        assert!(parse_peers(&["h:1".into()]).is_err());
    }

    #[test]
    fn minimal_master_section_gets_defaults() {
        let file: ConfigFile = toml::from_str(
            "[master]\nid = 1\nlisten = \"127.0.0.1:1\"\npeers = [\"1=127.0.0.1:1\"]\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let master = file.master.unwrap();
        master.validate().unwrap();
        assert_eq!(master.raft.election_ticks, 10);
        assert_eq!(master.meta_replicas, 3);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<ConfigFile>("[master]\nid = 1\nlisten=\"a\"\npeers=[]\ndata_dir=\"d\"\ntypo = 3\n");
        assert!(err.is_err());
    }
}
