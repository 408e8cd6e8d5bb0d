//! The metrics of a `strata dev` cluster: every node, the S3 gateway and the
//! mount serve Prometheus metrics on a port of their own (kept in
//! cluster.json, so a restarted cluster keeps its targets), and the cluster
//! directory gets `prometheus.yml`, a scrape configuration naming them all:
//! `prometheus --config.file=DIR/prometheus.yml` watches the cluster.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cluster_file::ClusterFile;

/// The scrape configuration's file name in the cluster directory.
pub const SCRAPE_CONFIG: &str = "prometheus.yml";
/// How often the generated configuration scrapes.
const SCRAPE_INTERVAL_SECS: u64 = 5;

/// Gives every node (and the gateway and mount, when started) a metrics
/// port if it has none yet, and every master a console port.
pub fn assign_ports(file: &mut ClusterFile, gateway: bool, mount: bool) -> anyhow::Result<()> {
    let free = || -> anyhow::Result<String> { Ok(format!("127.0.0.1:{}", crate::dev::free_port()?)) };
    for node in file.nodes.iter_mut().filter(|n| n.metrics.is_none()) {
        node.metrics = Some(free()?);
    }
    for master in file.nodes.iter_mut().filter(|n| n.role == "master" && n.console.is_none()) {
        master.console = Some(free()?);
    }
    if gateway && file.s3_metrics.is_none() {
        file.s3_metrics = Some(free()?);
    }
    if mount && file.mount_metrics.is_none() {
        file.mount_metrics = Some(free()?);
    }
    Ok(())
}

/// Writes `prometheus.yml` into `dir` for what runs now: the nodes, the
/// gateway if it is up, the mount if `mounted`. Returns its path.
pub fn write_scrape_config(dir: &Path, file: &ClusterFile, mounted: bool) -> anyhow::Result<PathBuf> {
    let mut targets: Vec<(String, String, Option<u64>)> =
        file.nodes.iter().filter_map(|n| Some((n.role.clone(), n.metrics.clone()?, Some(n.id)))).collect();
    if let (Some(address), Some(_)) = (&file.s3_metrics, &file.s3) {
        targets.push(("s3".into(), address.clone(), None));
    }
    if let (Some(address), true) = (&file.mount_metrics, mounted) {
        targets.push(("mount".into(), address.clone(), None));
    }
    let path = dir.join(SCRAPE_CONFIG);
    strata_common::files::write_atomic(&path, scrape_config(&targets).as_bytes(), false)?;
    Ok(path)
}

/// The YAML: one job per role, one static target per process, labelled with
/// its node id where it has one.
fn scrape_config(targets: &[(String, String, Option<u64>)]) -> String {
    let mut yaml = format!(
        "# written by strata dev: every process of this cluster\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL_SECS}s\n  evaluation_interval: {SCRAPE_INTERVAL_SECS}s\n\
         scrape_configs:\n"
    );
    let mut roles: Vec<&str> = targets.iter().map(|(role, _, _)| role.as_str()).collect();
    roles.dedup();
    for role in roles {
        let _ = writeln!(yaml, "  - job_name: strata-{role}\n    static_configs:");
        for (_, address, id) in targets.iter().filter(|(r, _, _)| r == role) {
            let _ = writeln!(yaml, "      - targets: [\"{address}\"]");
            if let Some(id) = id {
                let _ = writeln!(yaml, "        labels: {{node_id: \"{id}\"}}");
            }
        }
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_per_role_with_node_labels() {
        let targets = vec![
            ("master".to_string(), "127.0.0.1:1".to_string(), Some(1)),
            ("master".to_string(), "127.0.0.1:2".to_string(), Some(2)),
            ("s3".to_string(), "127.0.0.1:3".to_string(), None),
        ];
        let yaml = scrape_config(&targets);
        assert_eq!(yaml.matches("job_name: strata-master").count(), 1);
        assert!(yaml.contains("- targets: [\"127.0.0.1:2\"]\n        labels: {node_id: \"2\"}"));
        assert!(yaml.contains("job_name: strata-s3\n    static_configs:\n      - targets: [\"127.0.0.1:3\"]\n"));
    }
}
