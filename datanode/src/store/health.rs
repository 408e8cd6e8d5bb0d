//! Whether each disk still works. A disk is marked failed when an append,
//! sync or segment creation on it fails, or when the prober cannot write,
//! sync and read back a small file in its directory (every few seconds). A
//! failed disk stays failed until the process restarts: its partitions take
//! no more writes here, and the datanode reports them lost so that the master
//! rebuilds them on other nodes. A full disk is not a failed one: writes to
//! it fail with `NoSpace` (ENOSPC to applications, once every partition is
//! full) and it takes writes again once space is freed.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Store;
use super::compact::pause;

/// How often each disk is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(3);
const PROBE_FILE: &str = ".probe";

/// One flag per disk.
pub struct DiskHealth {
    failed: Vec<AtomicBool>,
}

impl DiskHealth {
    pub fn new(disks: usize) -> DiskHealth {
        DiskHealth { failed: (0..disks).map(|_| AtomicBool::new(false)).collect() }
    }

    pub fn mark_failed(&self, disk: usize, why: &str) {
        if let Some(flag) = self.failed.get(disk)
            && !flag.swap(true, Ordering::Relaxed)
        {
            tracing::error!(disk, why, "disk failed; its partitions are reported lost");
        }
    }

    pub fn is_failed(&self, disk: usize) -> bool {
        self.failed.get(disk).is_some_and(|f| f.load(Ordering::Relaxed))
    }
}

/// Whether an I/O error says the disk (or the quota) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Writes, syncs and reads back a small file in `dir`.
fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let content = b"strata disk probe";
    let mut file = std::fs::File::create(&path)?;
    file.write_all(content)?;
    file.sync_all()?;
    let mut back = Vec::new();
    std::fs::File::open(&path)?.read_to_end(&mut back)?;
    std::fs::remove_file(&path)?;
    if back != content {
        return Err(std::io::Error::other("probe read back different bytes"));
    }
    Ok(())
}

pub struct Prober {
    store: Weak<Store>,
}

impl Prober {
    pub fn new(store: Arc<Store>) -> Prober {
        Prober { store: Arc::downgrade(&store) }
    }

    pub fn run(self) {
        while pause(&self.store, PROBE_EVERY) {
            let Some(store) = self.store.upgrade() else { return };
            for (disk, dir) in store.shared.disks.iter().enumerate() {
                if store.shared.health.is_failed(disk) {
                    continue;
                }
                match probe(dir) {
                    Ok(()) => {}
                    Err(e) if is_full(&e) => tracing::debug!(disk, "disk full"),
                    Err(e) => store.shared.health.mark_failed(disk, &format!("probe of {}: {e}", dir.display())),
                }
            }
        }
    }
}
