//! `cluster.json`: what `strata dev` started, where, and under which pid.
//! Tests and admin commands read it to find masters and to kill or restart
//! nodes; `strata dev` and `strata dev restart` keep it current.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_common::files::{read_json, write_json};

pub const CLUSTER_FILE: &str = "cluster.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevNode {
    pub id: u64,
    /// "master", "metanode", "datanode" or "cachenode".
    pub role: String,
    pub address: String,
    /// Pid of the running process; None when stopped.
    pub pid: Option<u32>,
    pub data_dir: PathBuf,
    /// The node's TOML config file.
    pub config: PathBuf,
    /// Where the node's stdout and stderr go.
    pub log: PathBuf,
    /// Where others reach the node when not at `address`: the emulated
    /// network's proxy in front of a datanode (`strata dev --net-delay-ms`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Where the node serves its Prometheus metrics (`--metrics`).
    #[serde(default)]
    pub metrics: Option<String>,
    /// Where a master serves the web console (`--console`).
    #[serde(default)]
    pub console: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterFile {
    pub nodes: Vec<DevNode>,
    /// Pid of the `strata dev` process supervising the cluster, if running.
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    /// The S3 gateway and the dev user's key pair, once started.
    #[serde(default)]
    pub s3: Option<crate::dev_s3::DevS3>,
    /// Where the S3 gateway and the mount serve their metrics.
    #[serde(default)]
    pub s3_metrics: Option<String>,
    #[serde(default)]
    pub mount_metrics: Option<String>,
    /// The `admin` user's access key (the console's login).
    #[serde(default)]
    pub admin: Option<crate::dev_admin::AdminKey>,
}

impl ClusterFile {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CLUSTER_FILE)
    }

    pub fn load(dir: &Path) -> anyhow::Result<Option<ClusterFile>> {
        Ok(read_json(&Self::path(dir))?)
    }

    /// Replaces the file atomically so readers never see half of it.
    pub fn store(&self, dir: &Path) -> anyhow::Result<()> {
        Ok(write_json(&Self::path(dir), self, false)?)
    }

    pub fn master_addresses(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.role == "master").map(|n| n.address.clone()).collect()
    }

    pub fn node(&self, id: u64) -> Option<&DevNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}
