//! Read handles on segment files, opened on demand and kept in a bounded map
//! so that a node never holds more than a fixed number of descriptors
//! (the process may open 20,000 files in all).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::keys::segment_disk;

/// Path of a segment file under the disk directories.
pub fn segment_path(disks: &[PathBuf], segment: u64) -> io::Result<PathBuf> {
    let disk = disks
        .get(segment_disk(segment))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("segment {segment:x} names an unknown disk")))?;
    Ok(segment_file(disk, segment))
}

pub fn segment_file(disk_dir: &Path, segment: u64) -> PathBuf {
    disk_dir.join("segments").join(format!("{segment:016x}.seg"))
}

pub use strata_common::sys::advise;

pub struct FileCache {
    open: Mutex<HashMap<u64, Arc<File>>>,
    capacity: usize,
}

impl FileCache {
    pub fn new(capacity: usize) -> FileCache {
        FileCache { open: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// A read handle on `segment`, opening it if needed.
    pub fn get(&self, disks: &[PathBuf], segment: u64) -> io::Result<Arc<File>> {
        if let Some(file) = self.open.lock().unwrap().get(&segment) {
            return Ok(file.clone());
        }
        let file = File::open(segment_path(disks, segment)?)?;
        // No kernel read-ahead: a segment interleaves many blobs, readers
        // ask for whole blocks and read ahead themselves, so the kernel's
        // guesses mostly read what nobody asked for (measured: 2 GiB read
        // from the disk per GiB a mount streamed).
        advise(&file, 0, 0, libc::POSIX_FADV_RANDOM);
        let file = Arc::new(file);
        let mut open = self.open.lock().unwrap();
        if open.len() >= self.capacity {
            // Forget an arbitrary half: handles in use stay valid through their Arc.
            let victims: Vec<u64> = open.keys().copied().take(open.len() / 2 + 1).collect();
            for v in victims {
                open.remove(&v);
            }
        }
        open.insert(segment, file.clone());
        Ok(file)
    }

    /// Drops the handle of a removed segment so its space is freed.
    pub fn forget(&self, segment: u64) {
        self.open.lock().unwrap().remove(&segment);
    }
}
