//! Directory quotas on a live cluster, seen from a FUSE mount as a pod sees
//! its `subdir` PVC: `df` shows the quota, a write past it fails with
//! EDQUOT and takes no space, raising the quota lets the same write through
//! at once, the inode limit holds, and files (not trees) move in and out.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use strata_common::sys::usage_and_inodes;

const ROOT: u64 = 1;
const MIB: u64 = 1 << 20;
/// Two heartbeats of `strata dev`'s nodes (one a second) and some margin.
const HEARTBEATS: Duration = Duration::from_millis(2500);

/// Writes `len` bytes and fsyncs them, as an application that checks.
fn write_synced(path: &Path, len: u64) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(&vec![7u8; len as usize])?;
    file.sync_all()
}

/// Waits until `df` at `path` shows `ok` (usage reaches the master a
/// heartbeat after it changes).
fn df_until(path: &Path, what: &str, ok: impl Fn(u64, u64, u64, u64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (space, inodes) = usage_and_inodes(path).unwrap();
        if ok(space.total_bytes, space.used_bytes, inodes.total, inodes.used) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: df shows {space:?} {inodes:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_quota_holds_on_the_mount_and_grows_online() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let mount = Mount::new(&cluster, "mnt");
    let meta = open_volume(cluster.masters()).await;
    let pvc = mount.path.join("pvc");
    std::fs::create_dir(&pvc).unwrap();
    let root = meta.lookup(ROOT, b"pvc").await.unwrap().ino;
    let status = meta.set_quota(root, 8 * MIB, 0).await.unwrap();
    assert_eq!(status.max_bytes, 8 * MIB, "{status:?}");

    // In force from the first file on, without waiting for a heartbeat.
    write_synced(&pvc.join("a"), 4 * MIB).expect("4 MiB fit in 8");
    let err = write_synced(&pvc.join("b"), 8 * MIB).expect_err("4 + 8 MiB do not fit in 8");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");

    // df inside the quota shows its size; the volume's root does not.
    df_until(&pvc, "the quota's size", |total, _, _, _| total == 8 * MIB);
    assert_ne!(usage_and_inodes(&mount.path).unwrap().0.total_bytes, 8 * MIB);
    df_until(&pvc, "the refused write took no space", |_, used, _, _| used == 4 * MIB);
    assert_eq!(std::fs::metadata(pvc.join("a")).unwrap().len(), 4 * MIB, "what fitted is intact");

    // Expansion holds at once, without waiting for a heartbeat.
    meta.set_quota(root, 32 * MIB, 0).await.unwrap();
    write_synced(&pvc.join("b"), 8 * MIB).expect("4 + 8 MiB fit in 32");
    df_until(&pvc, "the expanded quota", |total, used, _, _| total == 32 * MIB && used == 12 * MIB);

    // Removing a file gives its bytes back.
    std::fs::remove_file(pvc.join("a")).unwrap();
    df_until(&pvc, "space given back", |_, used, _, _| used == 8 * MIB);

    // A file moves in and out by rename, its bytes with it; a directory does
    // not (EXDEV: mv copies its tree, so the counts stay exact).
    std::fs::write(mount.path.join("outside"), b"x").unwrap();
    std::fs::rename(mount.path.join("outside"), pvc.join("inside")).expect("a file moves in");
    df_until(&pvc, "a file moved in (df counts whole 4 KiB blocks)", |_, used, _, _| used == 8 * MIB + 4096);
    std::fs::rename(pvc.join("inside"), mount.path.join("outside")).expect("and out");
    df_until(&pvc, "a file moved out", |_, used, _, inodes| used == 8 * MIB && inodes == 2);
    std::fs::create_dir(mount.path.join("outdir")).unwrap();
    let err = std::fs::rename(mount.path.join("outdir"), pvc.join("outdir")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    std::fs::create_dir(pvc.join("sub")).unwrap();
    std::fs::rename(pvc.join("b"), pvc.join("sub/b")).expect("a move inside the quota");
    let err = std::fs::rename(pvc.join("sub"), mount.path.join("sub")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");

    // The inode limit: the root, sub and sub/b are 3; one more fits in 4, the next does not.
    // A lowered limit reaches the metanodes with their next heartbeat.
    meta.set_quota(root, 32 * MIB, 4).await.unwrap();
    std::thread::sleep(HEARTBEATS);
    std::fs::write(pvc.join("sub/c"), b"c").expect("a fourth inode");
    let err = std::fs::write(pvc.join("sub/d"), b"d").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    df_until(&pvc, "inodes", |_, _, total, used| total == 4 && used == 4);
    // Once the other partitions' counts went round (master, then each metanode), a
    // directory placed in any partition is refused too.
    std::thread::sleep(HEARTBEATS);
    let err = std::fs::create_dir(pvc.join("e")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");

    // A quota comes off an empty directory only.
    let err = meta.remove_quota(root).await.unwrap_err();
    assert_eq!(err.code, strata_common::ErrorCode::FailedPrecondition, "{err}");
}
