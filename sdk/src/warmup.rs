//! Warm-up: loading files into the shared cache tier before a job reads
//! them. The tree is walked first (so progress knows the total), then every
//! block of every file is asked of its cachenode with `fill_only`: the
//! cachenode reads it from the datanodes itself and answers without the
//! bytes, so the data never passes through the machine running the warm-up.
//! A block a cachenode holds already costs one round trip and no transfer,
//! so running the warm-up again finishes what an interrupted run left.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use serde::Serialize;
use strata_common::{ErrorCode, Result, StrataError};

use crate::fs::Volume;

/// A file to warm: its path in the volume, inode and size.
#[derive(Debug, Clone)]
pub struct WarmFile {
    pub path: Vec<u8>,
    pub ino: u64,
    pub size: u64,
}

/// What a warm-up has done so far (shared with whoever shows progress).
#[derive(Debug, Default)]
pub struct WarmProgress {
    /// Bytes of the blocks to load in all (known once the files are mapped).
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub blocks_done: AtomicU64,
    /// Blocks the tier could not take (no cachenode, or it failed).
    pub blocks_failed: AtomicU64,
}

/// The end of a warm-up, for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct WarmSummary {
    pub files: u64,
    pub bytes: u64,
    pub blocks: u64,
    pub blocks_failed: u64,
    pub seconds: f64,
    pub bytes_per_sec: f64,
}

/// Every regular file at or under each of `paths` in `volume`, in path order.
pub async fn collect(volume: &Volume, paths: &[Vec<u8>]) -> Result<Vec<WarmFile>> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    for path in paths {
        let attr = volume.stat(path).await?;
        let mut pending = vec![(path.clone(), attr)];
        while let Some((path, attr)) = pending.pop() {
            if attr.is_file() {
                if seen.insert(attr.ino) {
                    files.push(WarmFile { path, ino: attr.ino, size: attr.size });
                }
                continue;
            }
            if !attr.is_dir() {
                continue;
            }
            let mut after = Vec::new();
            loop {
                let page = volume.list_dir(attr.ino, &after, 1000).await?;
                for entry in page.entries {
                    let Some(child) = entry.attr else { continue };
                    let mut child_path = path.clone();
                    if !child_path.ends_with(b"/") {
                        child_path.push(b'/');
                    }
                    child_path.extend_from_slice(&entry.name);
                    pending.push((child_path, child));
                }
                match page.next {
                    Some(next) => after = next,
                    None => break,
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Loads every block of `files` into the shared tier, `threads` blocks at a
/// time, counting into `progress`.
pub async fn warm(volume: &Volume, files: &[WarmFile], threads: usize, progress: &WarmProgress) -> Result<()> {
    let cache = volume.cache().clone();
    if cache.shared_nodes() == 0 {
        return Err(StrataError::new(ErrorCode::Unavailable, "the cluster has no live cachenodes to warm"));
    }
    let block_size = cache.block_size();
    let meta = volume.meta();
    // Every file's blocks (extent maps read `threads` files at a time).
    let mut mapped = futures::stream::iter(files.iter().enumerate())
        .map(|(i, file)| async move {
            let (extents, _) = meta.get_extents(file.ino, 0, file.size).await?;
            let mut blocks = BTreeMap::new();
            for extent in extents {
                let blob = extent.blob;
                let end = (blob.offset + extent.length).min(blob.blob_size).div_ceil(block_size);
                for index in blob.offset / block_size..end {
                    blocks.insert((blob.data_partition, blob.blob_id, index), blob);
                }
            }
            Ok::<_, StrataError>((i, blocks))
        })
        .buffer_unordered(threads.max(1));
    // (file, blob, block index, bytes of the block)
    let mut blocks = Vec::new();
    // Blocks left per file: a file is done when its last block is.
    let mut left = vec![0u64; files.len()];
    while let Some(result) = mapped.next().await {
        let (i, file_blocks) = result?;
        left[i] = file_blocks.len() as u64;
        if file_blocks.is_empty() {
            progress.files_done.fetch_add(1, Ordering::Relaxed);
        }
        for ((_, _, index), blob) in file_blocks {
            let covered = block_size.min(blob.blob_size - index * block_size);
            progress.bytes_total.fetch_add(covered, Ordering::Relaxed);
            blocks.push((i, blob, index, covered));
        }
    }
    drop(mapped);
    let cache = &cache;
    let mut warmed = futures::stream::iter(blocks)
        .map(|(i, blob, index, covered)| async move { (i, cache.warm_shared_tier(&blob, index).await, covered) })
        .buffer_unordered(threads.max(1));
    while let Some((i, ok, covered)) = warmed.next().await {
        progress.blocks_done.fetch_add(1, Ordering::Relaxed);
        progress.bytes_done.fetch_add(covered, Ordering::Relaxed);
        if !ok {
            progress.blocks_failed.fetch_add(1, Ordering::Relaxed);
        }
        left[i] -= 1;
        if left[i] == 0 {
            progress.files_done.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
