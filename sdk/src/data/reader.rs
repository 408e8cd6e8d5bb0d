//! Reads of an open file, shared by every front end (the mount, the S3
//! gateway, …). The extent map of the region being read is kept with the
//! open file (one metadata request per [`EXTENT_WINDOW`] instead of one per
//! read), and dropped whenever this process changes the file or an open finds
//! it changed elsewhere (close-to-open). Bytes come through the block caches;
//! reads that follow each other grow a read-ahead window whose blocks are
//! fetched in parallel in the background; reads that keep jumping far
//! apart (a file read at random) fetch only their own bytes, not whole
//! blocks. An open for reading fetches the first window with the
//! attributes it needs anyway ([`FirstWindow`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::types::{Attr, Extent};
use bytes::Bytes;
use strata_common::Result;

use super::file::{read_extents, read_extents_random};
use crate::MetaClient;
use crate::cache::BlockCache;

/// Bytes of a file whose extents one metadata request fetches.
pub const EXTENT_WINDOW: u64 = 256 << 20;
/// An extent window is fetched again after this long, well within the time
/// freed blobs are kept (`gc_grace_secs`), so a file held open while another
/// client rewrites it never reads blobs that were deleted meanwhile.
const WINDOW_MAX_AGE: Duration = Duration::from_secs(10);
/// Read-ahead starts at this many bytes past a sequential read...
const READ_AHEAD_MIN: u64 = 1 << 20;
/// ...and doubles with each sequential read up to this.
const READ_AHEAD_MAX: u64 = 32 << 20;
/// A read starting this close to where the last one ended counts as
/// sequential (the kernel's own read-ahead may reorder its requests).
const SEQUENTIAL_SLACK: u64 = 1 << 20;
/// A read starting farther than this from where the last one ended is a
/// jump; reads far from each other but within it (threads sharing a file's
/// sequential pass, say) still go through whole cached blocks.
const RANDOM_JUMP: u64 = 8 << 20;
/// Jumps in a row after which reads count as random (one jump is a seek).
const RANDOM_AFTER_JUMPS: u32 = 2;

/// Extent changes made through this process (writes flushed, truncates,
/// holes punched), and those under way: a window fetched at open is kept
/// only if none happened or was under way meanwhile.
static EXTENT_CHANGES: AtomicU64 = AtomicU64::new(0);
static EXTENT_CHANGES_UNDER_WAY: AtomicU64 = AtomicU64::new(0);

/// Tells every reader of this process that some file's extents changed.
pub fn note_extent_change() {
    EXTENT_CHANGES.fetch_add(1, Ordering::SeqCst);
}

/// Held while an extent change is under way (see [`changing_extents`]).
pub struct ChangingExtents(());

impl Drop for ChangingExtents {
    fn drop(&mut self) {
        note_extent_change();
        EXTENT_CHANGES_UNDER_WAY.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks an extent change under way until the guard is dropped: windows
/// fetched meanwhile are not kept.
pub fn changing_extents() -> ChangingExtents {
    EXTENT_CHANGES_UNDER_WAY.fetch_add(1, Ordering::SeqCst);
    ChangingExtents(())
}

/// The first extent window of a file, fetched by an open with its inode.
pub struct FirstWindow {
    window: ExtentWindow,
    /// [`EXTENT_CHANGES`] before it was fetched.
    changes: u64,
}

impl FirstWindow {
    /// Every extent of the file, if the window covers all of it.
    pub fn whole_file(&self) -> Option<&[Extent]> {
        (self.window.start == 0 && self.window.size <= self.window.end).then_some(self.window.extents.as_slice())
    }
}

/// The inode and the extents of its first [`EXTENT_WINDOW`] bytes, in one request.
pub async fn first_window(meta: &MetaClient, ino: u64) -> Result<(Attr, FirstWindow)> {
    let changes = EXTENT_CHANGES.load(Ordering::SeqCst);
    let (extents, inode) = meta.get_extents_and_inode(ino, 0, EXTENT_WINDOW).await?;
    let window = ExtentWindow { start: 0, end: EXTENT_WINDOW, size: inode.size, extents, fetched: Instant::now() };
    Ok((inode, FirstWindow { window, changes }))
}

/// The extents of [start, end) of a file whose size was `size`; gaps are holes.
#[derive(Clone)]
struct ExtentWindow {
    start: u64,
    end: u64,
    size: u64,
    extents: Vec<Extent>,
    fetched: Instant,
}

/// One open file's reads: the cached extent window and the read-ahead state.
pub struct FileReader {
    ino: u64,
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    window: Option<ExtentWindow>,
    /// Bumped by every invalidation: a window fetched across one is not kept.
    generation: u64,
    /// Where the next sequential read would start.
    next: u64,
    /// Current read-ahead length (0: reads are not sequential).
    ahead: u64,
    /// Read-ahead was started up to here.
    prefetched_to: u64,
    /// Jumps ([`RANDOM_JUMP`]) in a row, up to the last read.
    jumps: u32,
}

/// How a read relates to the ones before it.
#[derive(Debug, PartialEq, Eq)]
struct Access {
    /// The range to read ahead, if any.
    ahead: Option<(u64, u64)>,
    /// Reads keep jumping: fetch only what is asked.
    random: bool,
}

impl FileReader {
    pub fn new(ino: u64) -> FileReader {
        FileReader { ino, inner: Mutex::new(State::default()) }
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Forgets the extent map: the file changed.
    pub fn invalidate(&self) {
        note_extent_change();
        let mut state = self.inner.lock().unwrap();
        state.window = None;
        state.generation += 1;
        state.prefetched_to = 0;
    }

    /// Starts from the window an open fetched, unless this process changed
    /// extents (of any file) since, or is changing some.
    pub fn seed(&self, first: FirstWindow) {
        let quiet = EXTENT_CHANGES_UNDER_WAY.load(Ordering::SeqCst) == 0
            && EXTENT_CHANGES.load(Ordering::SeqCst) == first.changes;
        if quiet {
            self.keep(first.window, self.generation());
        }
    }

    /// The file's size as the cached window knows it, if one is cached.
    pub fn known_size(&self) -> Option<u64> {
        self.inner.lock().unwrap().window.as_ref().map(|w| w.size)
    }

    fn generation(&self) -> u64 {
        self.inner.lock().unwrap().generation
    }

    fn keep(&self, window: ExtentWindow, generation: u64) {
        let mut state = self.inner.lock().unwrap();
        if state.generation == generation {
            state.window = Some(window);
        }
    }

    fn window_for(&self, offset: u64, end: u64) -> Option<ExtentWindow> {
        let state = self.inner.lock().unwrap();
        // A read from past the size the window knows means the caller knows
        // the file to be longer: look again rather than answer end-of-file.
        let usable = |w: &&ExtentWindow| {
            w.start <= offset && end <= w.end && offset < w.size && w.fetched.elapsed() < WINDOW_MAX_AGE
        };
        state.window.as_ref().filter(usable).cloned()
    }

    /// Notes a read of [offset, end): what to read ahead, and whether reads
    /// are random.
    fn advance(&self, offset: u64, end: u64, size: u64) -> Access {
        let mut state = self.inner.lock().unwrap();
        let distance = offset.abs_diff(state.next);
        let sequential = distance <= SEQUENTIAL_SLACK;
        state.jumps = if distance > RANDOM_JUMP { state.jumps.saturating_add(1) } else { 0 };
        let random = state.jumps >= RANDOM_AFTER_JUMPS;
        state.next = state.next.max(end);
        if !sequential {
            state.ahead = 0;
            state.prefetched_to = 0;
            state.next = end;
            return Access { ahead: None, random };
        }
        state.ahead = (state.ahead * 2).clamp(READ_AHEAD_MIN, READ_AHEAD_MAX);
        let from = end.max(state.prefetched_to);
        let to = (end + state.ahead).min(size);
        if to <= from {
            return Access { ahead: None, random };
        }
        state.prefetched_to = to;
        Access { ahead: Some((from, to)), random }
    }

    /// Bytes [offset, offset + size) of the file, clipped to its size.
    pub async fn read(&self, meta: &MetaClient, cache: &Arc<BlockCache>, offset: u64, size: u32) -> Result<Bytes> {
        let end = offset.saturating_add(size.into());
        let window = match self.window_for(offset, end) {
            Some(window) => window,
            None => {
                let generation = self.generation();
                let span = EXTENT_WINDOW.max(size.into());
                let (extents, file_size) = meta.get_extents(self.ino, offset, span).await?;
                let window = ExtentWindow {
                    start: offset,
                    end: offset.saturating_add(span),
                    size: file_size,
                    extents,
                    fetched: Instant::now(),
                };
                self.keep(window.clone(), generation);
                window
            }
        };
        let end = end.min(window.size);
        if end <= offset {
            return Ok(Bytes::new());
        }
        let access = self.advance(offset, end, window.size);
        if let Some((from, to)) = access.ahead {
            for extent in clipped(&window.extents, from, to.min(window.end)) {
                cache.prefetch(&extent.blob, extent.blob.offset, extent.length);
            }
        }
        let extents = clipped(&window.extents, offset, end);
        if access.random {
            return read_extents_random(cache, &extents, offset, end).await;
        }
        read_extents(cache, &extents, offset, end).await
    }
}

/// The extents covering [from, to) of `extents`, clipped to it.
fn clipped(extents: &[Extent], from: u64, to: u64) -> Vec<Extent> {
    extents
        .iter()
        .filter_map(|e| {
            let start = e.file_offset.max(from);
            let end = (e.file_offset + e.length).min(to);
            let mut blob = e.blob;
            blob.offset += start.checked_sub(e.file_offset)?;
            (start < end).then(|| Extent { file_offset: start, length: end - start, blob })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_reads_grow_the_read_ahead_and_a_jump_resets_it() {
        let reader = FileReader::new(7);
        let size = 1 << 30;
        let ahead = |offset: u64, end: u64| reader.advance(offset, end, size).ahead;
        assert_eq!(ahead(0, 1 << 20), Some((1 << 20, 2 << 20)));
        assert_eq!(ahead(1 << 20, 2 << 20), Some((2 << 20, 4 << 20)));
        assert_eq!(ahead(500 << 20, 501 << 20), None, "a jump is not sequential");
        assert_eq!(ahead(501 << 20, 502 << 20), Some((502 << 20, 503 << 20)));
    }

    #[test]
    fn reads_that_keep_jumping_are_random_until_one_follows_on() {
        let reader = FileReader::new(7);
        let size = 1 << 30;
        let random = |offset: u64| reader.advance(offset, offset + 4096, size).random;
        assert!(!random(0), "a first read");
        assert!(!random(700 << 20), "one jump is a seek");
        assert!(random(100 << 20), "a second jump in a row");
        assert!(random(900 << 20));
        assert!(!random((900 << 20) + 4096), "a read that follows on");
        assert!(!random(300 << 20), "one jump again");
        assert!(!random((302 << 20) + 4096), "reads a little apart (threads sharing a pass) are not jumps");
        assert!(!random((298 << 20) + 4096));
    }

    #[test]
    fn an_invalidated_window_is_not_kept_by_a_fetch_that_started_before() {
        let reader = FileReader::new(7);
        let generation = reader.generation();
        reader.invalidate();
        let window = ExtentWindow { start: 0, end: 10, size: 10, extents: Vec::new(), fetched: Instant::now() };
        reader.keep(window, generation);
        assert!(reader.known_size().is_none());
    }
}
