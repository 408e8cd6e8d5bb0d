//! The CSI driver over its real Unix socket, spoken to as kubelet and the
//! provisioner/resizer sidecars would: every RPC, idempotent repeats, the
//! spec's refusals, the whole life of a PVC in both modes against a live
//! `strata dev` cluster with real FUSE and bind mounts, and mounts that
//! outlive a SIGKILLed plugin and come back after their FUSE process dies.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use strata_proto::csi::controller_client::ControllerClient;
use strata_proto::csi::identity_client::IdentityClient;
use strata_proto::csi::node_client::NodeClient;
use strata_proto::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode};
use strata_proto::csi::{self as pb, plugin_capability};
use tonic::Code;
use tonic::transport::Channel;

/// A `strata csi` plugin process serving both roles.
struct Plugin {
    child: Child,
    socket: PathBuf,
    state: PathBuf,
    log: PathBuf,
    /// Where it serves its Prometheus metrics.
    metrics: String,
}

impl Plugin {
    fn start(cluster: &DevCluster, dir: &Path, starts: &mut u32) -> Plugin {
        *starts += 1;
        let socket = dir.join("csi.sock");
        let state = dir.join("csi-state");
        let log = dir.join(format!("csi-{starts}.log"));
        let masters = cluster.masters().join(",");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let metrics = format!("127.0.0.1:{port}");
        let child = Command::new(STRATA)
            .args(["--metrics", &metrics])
            .args(["csi", "--mode", "both", "--node-id", "node-1", "--default-volume", "default"])
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .arg("--state-dir")
            .arg(&state)
            .args(["--master", &masters])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        let plugin = Plugin { child, socket, state, log, metrics };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = Command::new(STRATA)
                .args(["csi", "--probe", "--endpoint", plugin.socket.to_str().unwrap()])
                .output()
                .unwrap();
            if probe.status.success() {
                return plugin;
            }
            assert!(Instant::now() < deadline, "the plugin never became ready: {}", plugin.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        out + &std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Detaches every mount below the test's directory when dropped, so a
/// failed test leaves no bind mounts behind.
struct MountSweeper(PathBuf);

impl Drop for MountSweeper {
    fn drop(&mut self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(self.0.to_str().unwrap()))
            .map(String::from)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let c = std::ffi::CString::new(point).unwrap();
            // SAFETY: a NUL-terminated path; umount2 has no memory effects.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

struct Clients {
    identity: IdentityClient<Channel>,
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
}

async fn clients(socket: &Path) -> Clients {
    let channel = strata_csi_driver::connect(socket).await.unwrap();
    Clients {
        identity: IdentityClient::new(channel.clone()),
        controller: ControllerClient::new(channel.clone()),
        node: NodeClient::new(channel),
    }
}

fn capability(mode: Mode) -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn create_request(name: &str, params: &[(&str, &str)], required: i64, limit: i64) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(pb::CapacityRange { required_bytes: required, limit_bytes: limit }),
        volume_capabilities: vec![capability(Mode::MultiNodeMultiWriter)],
        parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn stage_request(id: &str, staging: &Path, context: HashMap<String, String>) -> pb::NodeStageVolumeRequest {
    pb::NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.to_str().unwrap().into(),
        volume_capability: Some(capability(Mode::MultiNodeMultiWriter)),
        volume_context: context,
        ..Default::default()
    }
}

fn publish_request(id: &str, staging: &Path, target: &Path, readonly: bool) -> pb::NodePublishVolumeRequest {
    pb::NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.to_str().unwrap().into(),
        target_path: target.to_str().unwrap().into(),
        volume_capability: Some(capability(Mode::MultiNodeMultiWriter)),
        readonly,
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.expect_err("the request should be refused").code()
}

/// Every id ListVolumes hands out, two per page.
async fn listed(c: &mut Clients) -> Vec<String> {
    let (mut ids, mut token) = (Vec::new(), String::new());
    loop {
        let request = pb::ListVolumesRequest { max_entries: 2, starting_token: token.clone() };
        let page = c.controller.list_volumes(request).await.unwrap().into_inner();
        assert!(page.entries.len() <= 2);
        ids.extend(page.entries.into_iter().map(|e| e.volume.unwrap().volume_id));
        if page.next_token.is_empty() {
            return ids;
        }
        token = page.next_token;
    }
}

fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == path.to_str())
}

async fn identity_and_refusals(c: &mut Clients, dir: &Path) {
    let info = c.identity.get_plugin_info(pb::GetPluginInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "csi.strata.io");
    assert!(!info.vendor_version.is_empty());
    let caps = c.identity.get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {}).await.unwrap().into_inner();
    let controller = plugin_capability::Type::Service(plugin_capability::Service {
        r#type: plugin_capability::service::Type::ControllerService as i32,
    });
    assert!(caps.capabilities.iter().any(|c| c.r#type.as_ref() == Some(&controller)), "{caps:?}");
    let probe = c.identity.probe(pb::ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));
    let info = c.node.node_get_info(pb::NodeGetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id, "node-1");
    let caps = c.node.node_get_capabilities(pb::NodeGetCapabilitiesRequest {}).await.unwrap().into_inner();
    assert_eq!(caps.capabilities.len(), 4, "{caps:?}");
    let caps =
        c.controller.controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {}).await.unwrap().into_inner();
    assert_eq!(caps.capabilities.len(), 4, "{caps:?}");
    let capacity = c.controller.get_capacity(pb::GetCapacityRequest::default()).await.unwrap().into_inner();
    assert!(capacity.available_capacity > 0);

    // Refusals, each with the spec's code, and nothing made.
    let before = listed(c).await;
    assert_eq!(code(c.controller.create_volume(create_request("", &[], 1 << 30, 0)).await), Code::InvalidArgument);
    let mut no_caps = create_request("pvc-nocaps", &[], 1 << 30, 0);
    no_caps.volume_capabilities.clear();
    assert_eq!(code(c.controller.create_volume(no_caps).await), Code::InvalidArgument);
    let mut block = create_request("pvc-block", &[], 1 << 30, 0);
    block.volume_capabilities[0].access_type = Some(AccessType::Block(BlockVolume {}));
    assert_eq!(code(c.controller.create_volume(block).await), Code::InvalidArgument);
    let mut unknown_mode = create_request("pvc-mode", &[], 1 << 30, 0);
    unknown_mode.volume_capabilities[0].access_mode = Some(AccessMode { mode: Mode::Unknown as i32 });
    assert_eq!(code(c.controller.create_volume(unknown_mode).await), Code::InvalidArgument);
    let unmeetable = create_request("pvc-range", &[], 2 << 30, 1 << 30);
    assert_eq!(code(c.controller.create_volume(unmeetable).await), Code::OutOfRange);
    let unknown_param = create_request("pvc-param", &[("colour", "blue")], 1 << 30, 0);
    assert_eq!(code(c.controller.create_volume(unknown_param).await), Code::InvalidArgument);
    let no_shared = create_request("pvc-noshared", &[("volume", "no-such-volume")], 1 << 30, 0);
    assert_eq!(code(c.controller.create_volume(no_shared).await), Code::InvalidArgument);
    let mut half_secret = create_request("pvc-half", &[], 1 << 30, 0);
    half_secret.secrets.insert("accessKeyID".into(), "AKIDONLY".into());
    assert_eq!(code(c.controller.create_volume(half_secret.clone()).await), Code::InvalidArgument);
    let mut unknown_key = half_secret;
    unknown_key.secrets.insert("secretAccessKey".into(), "not-a-secret".into());
    assert_eq!(code(c.controller.create_volume(unknown_key).await), Code::Unauthenticated);
    assert_eq!(listed(c).await, before, "a refused create made something");
    let no_id = pb::DeleteVolumeRequest { volume_id: String::new(), ..Default::default() };
    assert_eq!(code(c.controller.delete_volume(no_id).await), Code::InvalidArgument);
    // A well-formed id of nothing: deleting it is done already.
    let nothing = pb::DeleteVolumeRequest { volume_id: "v1:subdir:default:pvc-never".into(), ..Default::default() };
    c.controller.delete_volume(nothing).await.unwrap();
    let validate = pb::ValidateVolumeCapabilitiesRequest {
        volume_id: "v1:volume:pvc-never".into(),
        volume_capabilities: vec![capability(Mode::SingleNodeWriter)],
        ..Default::default()
    };
    assert_eq!(code(c.controller.validate_volume_capabilities(validate).await), Code::NotFound);
    let expand = pb::ControllerExpandVolumeRequest {
        volume_id: "v1:volume:pvc-never".into(),
        capacity_range: Some(pb::CapacityRange { required_bytes: 1 << 30, limit_bytes: 0 }),
        ..Default::default()
    };
    assert_eq!(code(c.controller.controller_expand_volume(expand).await), Code::NotFound);
    let bad_token = pb::ListVolumesRequest { max_entries: 1, starting_token: "garbage".into() };
    assert_eq!(code(c.controller.list_volumes(bad_token).await), Code::Aborted);
    let staging_file = dir.join("not-a-dir");
    std::fs::write(&staging_file, b"x").unwrap();
    let request = stage_request("v1:subdir:default:pvc-never", &staging_file, HashMap::new());
    assert_eq!(code(c.node.node_stage_volume(request).await), Code::InvalidArgument);
    let request = stage_request("someone-else's-id", &dir.join("staging-x"), HashMap::new());
    assert_eq!(code(c.node.node_stage_volume(request).await), Code::NotFound);
    let request = stage_request("v1:volume:pvc-never", &dir.join("staging-x"), HashMap::new());
    assert_eq!(code(c.node.node_stage_volume(request).await), Code::NotFound);
    let mut no_cap = stage_request("v1:volume:pvc-never", &dir.join("staging-x"), HashMap::new());
    no_cap.volume_capability = None;
    assert_eq!(code(c.node.node_stage_volume(no_cap).await), Code::InvalidArgument);
    let unstaged = publish_request("v1:subdir:default:pvc-x", &dir.join("staging-x"), &dir.join("target-x"), false);
    assert_eq!(code(c.node.node_publish_volume(unstaged).await), Code::FailedPrecondition);
    let mut no_staging = publish_request("v1:subdir:default:pvc-x", &dir.join("s"), &dir.join("t"), false);
    no_staging.staging_target_path.clear();
    assert_eq!(code(c.node.node_publish_volume(no_staging).await), Code::FailedPrecondition);
    let stats = pb::NodeGetVolumeStatsRequest {
        volume_id: "v1:subdir:default:pvc-x".into(),
        volume_path: dir.join("nowhere").to_str().unwrap().into(),
        ..Default::default()
    };
    assert_eq!(code(c.node.node_get_volume_stats(stats).await), Code::NotFound);
}

/// The size PVCs are made with (small, so writing past it is quick).
const SIZE: i64 = 8 << 20;

/// Writes `len` bytes and fsyncs them, as an application that checks.
fn write_synced(path: &Path, len: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(&vec![7u8; len])?;
    file.sync_all()
}

/// The whole life of one PVC: create → stage → publish twice → write
/// through the pod paths → stats → expand → unpublish → unstage → delete.
async fn pvc_life(c: &mut Clients, cluster: &DevCluster, dir: &Path, name: &str, params: &[(&str, &str)]) {
    let created = c.controller.create_volume(create_request(name, params, SIZE, 0)).await.unwrap().into_inner();
    let volume = created.volume.unwrap();
    assert_eq!(volume.capacity_bytes, SIZE);
    let id = volume.volume_id.clone();
    // With the dev user's key in the StorageClass's secrets: its right secret passes, a wrong one does not.
    let s3 = &cluster.cluster_file()["s3"];
    let mut with_key = create_request(name, params, SIZE, 0);
    with_key.secrets.insert("accessKeyID".into(), s3["access_key_id"].as_str().unwrap().into());
    with_key.secrets.insert("secretAccessKey".into(), s3["secret_access_key"].as_str().unwrap().into());
    let again = c.controller.create_volume(with_key.clone()).await.unwrap().into_inner();
    assert_eq!(again.volume.unwrap().volume_id, id, "a repeated create is the same volume");
    with_key.secrets.insert("secretAccessKey".into(), "wrong".into());
    assert_eq!(code(c.controller.create_volume(with_key).await), Code::Unauthenticated);
    let other_size = create_request(name, params, 3 * SIZE, 3 * SIZE);
    assert_eq!(code(c.controller.create_volume(other_size).await), Code::AlreadyExists);
    assert!(listed(c).await.contains(&id));
    let validate = pb::ValidateVolumeCapabilitiesRequest {
        volume_id: id.clone(),
        volume_capabilities: vec![capability(Mode::MultiNodeReaderOnly)],
        ..Default::default()
    };
    let confirmed = c.controller.validate_volume_capabilities(validate.clone()).await.unwrap().into_inner();
    assert!(confirmed.confirmed.is_some(), "{confirmed:?}");
    let mut block = validate;
    block.volume_capabilities[0].access_type = Some(AccessType::Block(BlockVolume {}));
    let refused = c.controller.validate_volume_capabilities(block).await.unwrap().into_inner();
    assert!(refused.confirmed.is_none() && !refused.message.is_empty());

    let staging = dir.join(format!("{name}-staging"));
    let (pod_a, pod_b) = (dir.join(format!("{name}-pod-a")), dir.join(format!("{name}-pod-b")));
    c.node.node_stage_volume(stage_request(&id, &staging, volume.volume_context.clone())).await.unwrap();
    c.node.node_stage_volume(stage_request(&id, &staging, volume.volume_context.clone())).await.unwrap();
    let other = stage_request("v1:subdir:default:pvc-other", &staging, HashMap::new());
    assert!(matches!(c.node.node_stage_volume(other).await.unwrap_err().code(), Code::AlreadyExists | Code::NotFound));
    c.node.node_publish_volume(publish_request(&id, &staging, &pod_a, false)).await.unwrap();
    c.node.node_publish_volume(publish_request(&id, &staging, &pod_a, false)).await.unwrap();
    c.node.node_publish_volume(publish_request(&id, &staging, &pod_b, true)).await.unwrap();
    assert_eq!(
        code(c.node.node_publish_volume(publish_request(&id, &staging, &pod_b, false)).await),
        Code::AlreadyExists
    );

    // Pods write and read through their paths.
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(pod_a.join("data.bin"), &data).unwrap();
    std::fs::create_dir_all(pod_a.join("sub/dir")).unwrap();
    std::fs::write(pod_a.join("sub/dir/small"), b"hello").unwrap();
    assert_eq!(std::fs::read(pod_b.join("data.bin")).unwrap(), data);
    let denied = std::fs::write(pod_b.join("nope"), b"x").unwrap_err();
    assert_eq!(denied.raw_os_error(), Some(libc::EROFS), "the read-only publish refused a write");

    let stats = |path: &Path| pb::NodeGetVolumeStatsRequest {
        volume_id: id.clone(),
        volume_path: path.to_str().unwrap().into(),
        ..Default::default()
    };
    // Usage inside a quota is as the metanodes last reported it: a second or two old.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (usage, bytes, inodes) = loop {
        let usage = c.node.node_get_volume_stats(stats(&pod_a)).await.unwrap().into_inner();
        let unit = |unit: pb::volume_usage::Unit| *usage.usage.iter().find(|u| u.unit == unit as i32).unwrap();
        let (bytes, inodes) = (unit(pb::volume_usage::Unit::Bytes), unit(pb::volume_usage::Unit::Inodes));
        if (bytes.used >= data.len() as i64 && inodes.used >= 3) || std::time::Instant::now() > deadline {
            break (usage, bytes, inodes);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(usage.volume_condition.as_ref().map(|v| v.abnormal), Some(false));
    assert!(bytes.used >= data.len() as i64 && bytes.total >= bytes.used, "{usage:?}");
    assert!(inodes.used >= 3, "{usage:?}");
    let per_volume = params.contains(&("mode", "volume"));
    assert_eq!(bytes.total, SIZE, "statfs of a PVC reports its capacity");

    // The capacity holds: past it a write fails with EDQUOT and leaves what fitted.
    let err = write_synced(&pod_a.join("too-big"), 6 << 20).expect_err("3 + 6 MiB do not fit in 8");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    assert_eq!(std::fs::read(pod_b.join("data.bin")).unwrap(), data);

    // Expansion, online: the capacity grows, and a smaller request changes nothing.
    let expand = |bytes: i64| pb::ControllerExpandVolumeRequest {
        volume_id: id.clone(),
        capacity_range: Some(pb::CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        ..Default::default()
    };
    let grown = c.controller.controller_expand_volume(expand(2 * SIZE)).await.unwrap().into_inner();
    assert_eq!((grown.capacity_bytes, grown.node_expansion_required), (2 * SIZE, false));
    let kept = c.controller.controller_expand_volume(expand(SIZE)).await.unwrap().into_inner();
    assert_eq!(kept.capacity_bytes, 2 * SIZE);
    let node_expand = pb::NodeExpandVolumeRequest {
        volume_id: id.clone(),
        volume_path: pod_a.to_str().unwrap().into(),
        capacity_range: Some(pb::CapacityRange { required_bytes: 2 * SIZE, limit_bytes: 0 }),
        ..Default::default()
    };
    c.node.node_expand_volume(node_expand).await.unwrap();
    let again = c.controller.create_volume(create_request(name, params, 2 * SIZE, 0)).await.unwrap().into_inner();
    assert_eq!(again.volume.unwrap().capacity_bytes, 2 * SIZE, "the volume reports its new size");
    let usage = c.node.node_get_volume_stats(stats(&pod_a)).await.unwrap().into_inner();
    let bytes = usage.usage.iter().find(|u| u.unit == pb::volume_usage::Unit::Bytes as i32).unwrap();
    assert_eq!(bytes.total, 2 * SIZE, "statfs follows the expansion");
    write_synced(&pod_a.join("too-big"), 6 << 20).expect("3 + 6 MiB fit in 16 at once");

    // Tear down, each step twice.
    for pod in [&pod_a, &pod_b] {
        let request =
            pb::NodeUnpublishVolumeRequest { volume_id: id.clone(), target_path: pod.to_str().unwrap().into() };
        c.node.node_unpublish_volume(request.clone()).await.unwrap();
        c.node.node_unpublish_volume(request).await.unwrap();
        assert!(!is_mounted(pod) && !pod.exists(), "{} is gone", pod.display());
    }
    let unstage =
        pb::NodeUnstageVolumeRequest { volume_id: id.clone(), staging_target_path: staging.to_str().unwrap().into() };
    c.node.node_unstage_volume(unstage.clone()).await.unwrap();
    c.node.node_unstage_volume(unstage).await.unwrap();
    assert!(!is_mounted(&staging));
    let delete = pb::DeleteVolumeRequest { volume_id: id.clone(), ..Default::default() };
    c.controller.delete_volume(delete.clone()).await.unwrap();
    c.controller.delete_volume(delete).await.unwrap();
    assert!(!listed(c).await.contains(&id), "{id} is still listed");
    let volumes = cluster.strata_ok(&["volume", "list"]);
    let left_in_default = cluster.strata(&["fs", "stat", "default", name]);
    if per_volume {
        assert!(!volumes.contains(name), "volume {name} is left: {volumes}");
    } else {
        assert!(!left_in_default.status.success(), "directory {name} is left in the shared volume");
    }
}

/// The pid of the FUSE process serving `mountpoint`.
fn fuse_pid(mountpoint: &Path) -> u64 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u64>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let serving =
            args.iter().any(|a| *a == b"--foreground") && args.contains(&mountpoint.as_os_str().as_encoded_bytes());
        if serving {
            return pid;
        }
    }
    panic!("no FUSE process serves {}", mountpoint.display());
}

#[test]
fn csi_volumes_live_and_survive_the_plugin_and_their_fuse_process() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--datanodes", "3"]);
    let dir = cluster.cluster_dir().parent().unwrap().join("csi");
    std::fs::create_dir_all(&dir).unwrap();
    let _sweeper = MountSweeper(dir.clone());
    let mut starts = 0;
    let plugin = Plugin::start(&cluster, &dir, &mut starts);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = runtime.block_on(clients(&plugin.socket));

    runtime.block_on(identity_and_refusals(&mut c, &dir));
    runtime.block_on(pvc_life(&mut c, &cluster, &dir, "pvc-subdir", &[]));
    // The plugin's metrics count its CSI calls per method and outcome.
    let (status, exposition) = http::get(&plugin.metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    for call in ["Identity/Probe", "Controller/CreateVolume", "Node/NodePublishVolume"] {
        let line = format!("strata_requests_total{{role=\"csi\",service=\"grpc\",op=\"{call}\",code=\"ok\"}}");
        assert!(exposition.contains(&line), "no {line} in the plugin's metrics:\n{exposition}");
    }
    runtime.block_on(pvc_life(
        &mut c,
        &cluster,
        &dir,
        "pvc-volume",
        &[("mode", "volume"), ("redundancy", "replica:3")],
    ));

    // A writer keeps writing through a pod path while the plugin is killed and restarted.
    let created = runtime
        .block_on(c.controller.create_volume(create_request("pvc-survivor", &[], 1 << 30, 0)))
        .unwrap()
        .into_inner();
    let id = created.volume.unwrap().volume_id;
    let staging = dir.join("survivor-staging");
    let pod = dir.join("survivor-pod");
    runtime.block_on(c.node.node_stage_volume(stage_request(&id, &staging, HashMap::new()))).unwrap();
    runtime.block_on(c.node.node_publish_volume(publish_request(&id, &staging, &pod, false))).unwrap();
    let path = pod.join("log.bin");
    let writer = std::thread::spawn(move || {
        let mut file = std::fs::File::create(&path).unwrap();
        let mut written = Vec::new();
        for i in 0..60u32 {
            let chunk = vec![(i % 251) as u8; 64 << 10];
            file.write_all(&chunk).expect("a write failed while the plugin restarted");
            file.sync_all().expect("an fsync failed while the plugin restarted");
            written.extend_from_slice(&chunk);
            std::thread::sleep(Duration::from_millis(50));
        }
        written
    });
    std::thread::sleep(Duration::from_millis(500));
    plugin.kill();
    std::thread::sleep(Duration::from_millis(500));
    let plugin = Plugin::start(&cluster, &dir, &mut starts);
    let written = writer.join().unwrap();
    let mut read_back = Vec::new();
    std::fs::File::open(pod.join("log.bin")).unwrap().read_to_end(&mut read_back).unwrap();
    assert!(read_back == written, "the writer's {} bytes read back as {}", written.len(), read_back.len());
    let mut c = runtime.block_on(clients(&plugin.socket));

    // The FUSE process dies: the plugin mounts the volume again and binds the paths again.
    let base = plugin.state.join("mounts").join("default");
    let fuse = fuse_pid(&base);
    kill(fuse, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match std::fs::read(pod.join("log.bin")) {
            Ok(bytes) if bytes == written => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the pod path never came back: {:?}\n{}",
                    other.map(|b| b.len()),
                    plugin.logs()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    assert_ne!(fuse_pid(&base), fuse, "a new FUSE process serves the volume");
    std::fs::write(pod.join("after-repair"), b"ok").unwrap();

    let unpublish = pb::NodeUnpublishVolumeRequest { volume_id: id.clone(), target_path: pod.to_str().unwrap().into() };
    runtime.block_on(c.node.node_unpublish_volume(unpublish)).unwrap();
    let unstage =
        pb::NodeUnstageVolumeRequest { volume_id: id.clone(), staging_target_path: staging.to_str().unwrap().into() };
    runtime.block_on(c.node.node_unstage_volume(unstage)).unwrap();
    assert!(!is_mounted(&base), "the volume's FUSE mount is released with its last staged PVC");
    runtime
        .block_on(c.controller.delete_volume(pb::DeleteVolumeRequest { volume_id: id, ..Default::default() }))
        .unwrap();
    plugin.kill();
}
