//! `cluster.json`: what `strata dev` started, where, and under which pid.
//! Tests and admin commands read it to find masters and to kill or restart
//! nodes; `strata dev` and `strata dev restart` keep it current.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const CLUSTER_FILE: &str = "cluster.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevNode {
    pub id: u64,
    /// "master", "metanode" or "datanode".
    pub role: String,
    pub address: String,
    /// Pid of the running process; None when stopped.
    pub pid: Option<u32>,
    pub data_dir: PathBuf,
    /// The node's TOML config file.
    pub config: PathBuf,
    /// Where the node's stdout and stderr go.
    pub log: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterFile {
    pub nodes: Vec<DevNode>,
    /// Pid of the `strata dev` process supervising the cluster, if running.
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
}

impl ClusterFile {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CLUSTER_FILE)
    }

    pub fn load(dir: &Path) -> anyhow::Result<Option<ClusterFile>> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes atomically (temp file and rename) so readers never see half a file.
    pub fn store(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join(format!("{CLUSTER_FILE}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    pub fn master_addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.role == "master")
            .map(|n| n.address.clone())
            .collect()
    }

    pub fn node(&self, id: u64) -> Option<&DevNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}
