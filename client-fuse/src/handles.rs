//! What a mount keeps per open file and per open directory. Writes of all
//! handles of one inode share one [`FileWriter`] (so a read through another
//! handle can first flush what this mount buffered); the open count decides
//! when an unlinked file is finally reclaimed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_sdk::data::file::FileWriter;
use strata_sdk::types::DirEntry;

use strata_sdk::data::reader::FileReader;

/// An open directory's listing, read at the first readdir.
pub type DirListing = Arc<Mutex<Option<Vec<DirEntry>>>>;

/// One inode open in this mount.
pub struct OpenFile {
    pub ino: u64,
    /// Buffered writes, created on the first write.
    pub writer: tokio::sync::Mutex<Option<FileWriter>>,
    /// End of the data written through this mount (the file is at least this long).
    pub written_end: AtomicU64,
    /// Cached extent map and read-ahead state.
    pub reads: FileReader,
}

#[derive(Default)]
struct Inodes {
    files: HashMap<u64, (Arc<OpenFile>, usize)>,
    /// Unlinked while open here: reclaimed at the last release.
    doomed: std::collections::HashSet<u64>,
}

/// Open files by handle and by inode, and directory listings by handle.
#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    inodes: Mutex<Inodes>,
    file_handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, DirListing>>,
}

impl Handles {
    fn new_handle(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Opens `ino`: a new handle on its shared [`OpenFile`]; `first` is
    /// called on that state when no handle had the inode open.
    pub fn open(&self, ino: u64, first: impl FnOnce(&OpenFile)) -> u64 {
        let mut inodes = self.inodes.lock().unwrap();
        let entry = inodes.files.entry(ino).or_insert_with(|| {
            let file = OpenFile {
                ino,
                writer: tokio::sync::Mutex::new(None),
                written_end: AtomicU64::new(0),
                reads: FileReader::new(ino),
            };
            first(&file);
            (Arc::new(file), 0)
        });
        entry.1 += 1;
        let file = entry.0.clone();
        let fh = self.new_handle();
        self.file_handles.lock().unwrap().insert(fh, file);
        fh
    }

    pub fn file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.file_handles.lock().unwrap().get(&fh).cloned()
    }

    /// The open state of `ino` in this mount, if any handle has it open.
    pub fn by_inode(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.inodes.lock().unwrap().files.get(&ino).map(|(f, _)| f.clone())
    }

    /// Closes a handle; answers the file and whether the inode must now be
    /// reclaimed (its last handle here closed after it lost its last name).
    pub fn release(&self, fh: u64) -> Option<(Arc<OpenFile>, bool)> {
        let file = self.file_handles.lock().unwrap().remove(&fh)?;
        let mut inodes = self.inodes.lock().unwrap();
        let last = match inodes.files.get_mut(&file.ino) {
            Some((_, count)) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                inodes.files.remove(&file.ino);
                true
            }
        };
        let reclaim = last && inodes.doomed.remove(&file.ino);
        Some((file, reclaim))
    }

    /// Records that `ino` lost its last name: true if it is open here (and
    /// so is reclaimed at its last release), false if it can go now.
    pub fn unlinked(&self, ino: u64) -> bool {
        let mut inodes = self.inodes.lock().unwrap();
        if inodes.files.contains_key(&ino) {
            inodes.doomed.insert(ino);
            true
        } else {
            false
        }
    }

    pub fn open_dir(&self) -> u64 {
        let fh = self.new_handle();
        self.dirs.lock().unwrap().insert(fh, Arc::new(Mutex::new(None)));
        fh
    }

    pub fn dir(&self, fh: u64) -> Option<DirListing> {
        self.dirs.lock().unwrap().get(&fh).cloned()
    }

    pub fn release_dir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
    }
}
