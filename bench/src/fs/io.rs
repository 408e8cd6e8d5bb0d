//! Small I/O helpers shared by the workloads: page-aligned buffers for
//! O_DIRECT, dropping a file's cached pages, positional reads.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Context;
pub use strata_common::aligned::AlignedBuf;

/// Drops the kernel's cached pages of `path`, so the next read reaches the
/// file system (for a FUSE mount: the daemon and its own caches).
pub fn drop_pages(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    drop_file_pages(&file);
    Ok(())
}

pub fn drop_file_pages(file: &File) {
    // SAFETY: a valid descriptor; fadvise has no memory effects.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// Opens `path` for reading, with O_DIRECT if asked.
pub fn open_read(path: &Path, direct: bool) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path).with_context(|| format!("opening {}", path.display()))
}

/// Creates (truncating) `path` for writing, with O_DIRECT if asked.
pub fn create(path: &Path, direct: bool) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path).with_context(|| format!("creating {}", path.display()))
}

/// A small xorshift generator: workloads need reproducible, cheap randomness.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
