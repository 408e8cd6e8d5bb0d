//! `strata bench csi`: what a PVC costs through a running CSI plugin. Times
//! CreateVolume and NodeStageVolume for PVCs of one StorageClass mode
//! (medians), next to the local baseline of what staging amounts to on a
//! host (mkdir and a bind mount of a local directory); then, with all of
//! them staged at once, the node's FUSE processes and their memory and the
//! Raft groups the cluster gained. Everything made is removed at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use strata_common::size::format_size;
use strata_proto::csi::controller_client::ControllerClient;
use strata_proto::csi::node_client::NodeClient;
use strata_proto::csi::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use strata_proto::csi::{self as pb};
use strata_sdk::MasterClient;

pub struct CsiBench {
    pub socket: PathBuf,
    /// `subdir` or `volume`.
    pub mode: String,
    pub pvcs: usize,
    /// Staging paths and the local baseline go below it.
    pub work_dir: PathBuf,
    /// The plugin's state directory (its FUSE mounts live below it).
    pub state_dir: PathBuf,
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Processes serving a FUSE mount below `dir`, with their resident memory.
fn fuse_processes(dir: &Path) -> (usize, u64) {
    let (mut count, mut rss) = (0, 0);
    let Ok(entries) = std::fs::read_dir("/proc") else { return (0, 0) };
    for entry in entries.flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let serves_here = args.contains(&b"--foreground".as_slice())
            && args.iter().any(|a| a.starts_with(dir.as_os_str().as_encoded_bytes()));
        if !serves_here {
            continue;
        }
        count += 1;
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
        rss += kib.unwrap_or(0) * 1024;
    }
    (count, rss)
}

/// Raft groups of the cluster: every meta partition's replicas.
async fn raft_groups(master: &MasterClient) -> anyhow::Result<usize> {
    Ok(master.list_volumes().await?.iter().map(|v| v.meta_partitions.len()).sum())
}

/// The host-side baseline of a stage: a directory and a bind mount onto a staging path.
fn local_stage(work: &Path, i: usize) -> anyhow::Result<f64> {
    let (source, target) = (work.join(format!("local-src-{i}")), work.join(format!("local-stage-{i}")));
    let start = Instant::now();
    std::fs::create_dir_all(&source)?;
    std::fs::create_dir_all(&target)?;
    strata_csi_driver::mounts::bind(&source, &target, false)?;
    let took = ms_since(start);
    strata_csi_driver::mounts::detach(&target)?;
    Ok(took)
}

pub async fn run(master: &MasterClient, bench: CsiBench) -> anyhow::Result<()> {
    anyhow::ensure!(matches!(bench.mode.as_str(), "subdir" | "volume"), "--mode is subdir or volume");
    let channel = strata_csi_driver::connect(&bench.socket).await?;
    let (mut controller, mut node) = (ControllerClient::new(channel.clone()), NodeClient::new(channel));
    std::fs::create_dir_all(&bench.work_dir)?;
    let capability = pb::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: Mode::MultiNodeMultiWriter as i32 }),
    };
    let groups_before = raft_groups(master).await?;
    let tag = std::process::id();
    let (mut create_ms, mut stage_ms, mut local_ms, mut made) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // What was made is removed however the run ends.
    let made_all = async {
        for i in 0..bench.pvcs {
            let request = pb::CreateVolumeRequest {
                name: format!("bench-{tag}-{i}"),
                capacity_range: Some(pb::CapacityRange { required_bytes: 1 << 30, limit_bytes: 0 }),
                volume_capabilities: vec![capability.clone()],
                parameters: HashMap::from([("mode".to_string(), bench.mode.clone())]),
                ..Default::default()
            };
            let start = Instant::now();
            let volume = controller
                .create_volume(request)
                .await
                .context("CreateVolume")?
                .into_inner()
                .volume
                .unwrap_or_default();
            create_ms.push(ms_since(start));
            let staging = bench.work_dir.join(format!("stage-{i}"));
            made.push((volume.volume_id.clone(), staging.clone()));
            let stage = pb::NodeStageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                staging_target_path: staging.to_string_lossy().into_owned(),
                volume_capability: Some(capability.clone()),
                volume_context: volume.volume_context,
                ..Default::default()
            };
            let start = Instant::now();
            node.node_stage_volume(stage).await.context("NodeStageVolume")?;
            stage_ms.push(ms_since(start));
            local_ms.push(local_stage(&bench.work_dir, i)?);
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = made_all {
        eprintln!("stopped after {} PVCs: {e:#}", made.len());
        clean_up(&mut controller, &mut node, made).await?;
        return Err(e);
    }
    let (processes, rss) = fuse_processes(&bench.state_dir);
    let groups = raft_groups(master).await?.saturating_sub(groups_before);
    let (create, stage, local) = (median(create_ms), median(stage_ms), median(local_ms));
    println!("{} PVCs, mode {}:", bench.pvcs, bench.mode);
    println!("  CreateVolume     median {create:>8.1} ms");
    println!(
        "  NodeStageVolume  median {stage:>8.1} ms   (local mkdir + bind mount {local:.2} ms: {:.0}x)",
        stage / local.max(0.001)
    );
    println!("  with all staged: {processes} FUSE processes holding {}, {groups} more Raft groups", format_size(rss));
    clean_up(&mut controller, &mut node, made).await
}

/// Unstages and deletes the PVCs a run made.
async fn clean_up(
    controller: &mut ControllerClient<tonic::transport::Channel>,
    node: &mut NodeClient<tonic::transport::Channel>,
    made: Vec<(String, PathBuf)>,
) -> anyhow::Result<()> {
    for (id, staging) in made {
        let staging_target_path = staging.to_string_lossy().into_owned();
        let unstage = pb::NodeUnstageVolumeRequest { volume_id: id.clone(), staging_target_path };
        node.node_unstage_volume(unstage).await.context("NodeUnstageVolume")?;
        let delete = pb::DeleteVolumeRequest { volume_id: id, ..Default::default() };
        controller.delete_volume(delete).await.context("DeleteVolume")?;
    }
    Ok(())
}
