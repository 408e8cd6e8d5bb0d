//! What a `strata dev` cluster's processes cost: resident memory and bytes
//! on disk, read from /proc and the nodes' data directories.

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct NodeCost {
    pub id: u64,
    pub role: String,
    pub rss_bytes: Option<u64>,
    pub disk_bytes: u64,
}

/// Resident set size of a process, from /proc/PID/status.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes used by the files under `dir` (allocated blocks, like `du`).
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// The cost of every node of `role` listed in a dev cluster's cluster.json.
pub fn dev_cluster_costs(cluster_dir: &Path, role: &str) -> anyhow::Result<Vec<NodeCost>> {
    let text = std::fs::read(cluster_dir.join("cluster.json"))?;
    let file: serde_json::Value = serde_json::from_slice(&text)?;
    let mut out = Vec::new();
    for node in file["nodes"].as_array().into_iter().flatten().filter(|n| n["role"] == role) {
        let pid = node["pid"].as_u64().map(|p| p as u32);
        out.push(NodeCost {
            id: node["id"].as_u64().unwrap_or(0),
            role: role.to_string(),
            rss_bytes: pid.and_then(rss_bytes),
            disk_bytes: disk_bytes(Path::new(node["data_dir"].as_str().unwrap_or_default())),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_a_resident_size() {
        assert!(rss_bytes(std::process::id()).unwrap() > 1 << 20);
    }

    #[test]
    fn disk_bytes_counts_files_below() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), vec![1u8; 100_000]).unwrap();
        assert!(disk_bytes(dir.path()) >= 100_000);
    }
}
