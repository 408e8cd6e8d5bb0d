//! Reads of an open file. The extent map of the region being read is kept
//! with the open file (one metadata request per [`EXTENT_WINDOW`] instead of
//! one per read), and dropped whenever this mount changes the file or an open
//! finds it changed elsewhere (close-to-open). Bytes come through the block
//! caches; reads that follow each other grow a read-ahead window whose blocks
//! are fetched in parallel in the background. An open for reading fetches
//! the first window with the attributes it needs anyway ([`FirstWindow`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_common::Result;
use strata_proto::meta::{Extent, Inode};
use strata_sdk::data::file::read_extents;

use crate::handles::OpenFile;
use crate::inner::Inner;

/// Bytes of a file whose extents one metadata request fetches.
const EXTENT_WINDOW: u64 = 256 << 20;
/// An extent window is fetched again after this long, well within the time
/// freed blobs are kept (`gc_grace_secs`), so a file held open while another
/// mount rewrites it never reads blobs that were deleted meanwhile.
const WINDOW_MAX_AGE: Duration = Duration::from_secs(10);
/// Read-ahead starts at this many bytes past a sequential read...
const READ_AHEAD_MIN: u64 = 1 << 20;
/// ...and doubles with each sequential read up to this.
const READ_AHEAD_MAX: u64 = 32 << 20;
/// A read starting this close to where the last one ended counts as
/// sequential (the kernel's own read-ahead may reorder its requests).
const SEQUENTIAL_SLACK: u64 = 1 << 20;

/// Extent changes made through this process (writes flushed, truncates,
/// holes punched), and those under way: a window fetched at open is kept
/// only if none happened or was under way meanwhile.
static EXTENT_CHANGES: AtomicU64 = AtomicU64::new(0);
static EXTENT_CHANGES_UNDER_WAY: AtomicU64 = AtomicU64::new(0);

pub fn note_extent_change() {
    EXTENT_CHANGES.fetch_add(1, Ordering::SeqCst);
}

/// Held while an extent change is under way (see [`Inner::changing_extents`]).
pub struct ChangingExtents(());

impl Drop for ChangingExtents {
    fn drop(&mut self) {
        note_extent_change();
        EXTENT_CHANGES_UNDER_WAY.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The first extent window of a file, fetched by an open with its inode.
pub struct FirstWindow {
    window: ExtentWindow,
    /// [`EXTENT_CHANGES`] before it was fetched.
    changes: u64,
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

/// Per open file: the cached extent window and the read-ahead state.
#[derive(Default)]
pub struct ReadState {
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
}

impl ReadState {
    /// Forgets the extent map: the file changed.
    pub fn invalidate(&self) {
        note_extent_change();
        let mut state = self.inner.lock().unwrap();
        state.window = None;
        state.generation += 1;
        state.prefetched_to = 0;
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
        // A read from past the size the window knows means the kernel knows
        // the file to be longer: look again rather than answer end-of-file.
        let usable = |w: &&ExtentWindow| {
            w.start <= offset && end <= w.end && offset < w.size && w.fetched.elapsed() < WINDOW_MAX_AGE
        };
        state.window.as_ref().filter(usable).cloned()
    }

    /// Notes a read of [offset, end) and answers which range to read ahead, if any.
    fn advance(&self, offset: u64, end: u64, size: u64) -> Option<(u64, u64)> {
        let mut state = self.inner.lock().unwrap();
        let sequential = offset.abs_diff(state.next) <= SEQUENTIAL_SLACK;
        state.next = state.next.max(end);
        if !sequential {
            state.ahead = 0;
            state.prefetched_to = 0;
            state.next = end;
            return None;
        }
        state.ahead = (state.ahead * 2).clamp(READ_AHEAD_MIN, READ_AHEAD_MAX);
        let from = end.max(state.prefetched_to);
        let to = (end + state.ahead).min(size);
        if to <= from {
            return None;
        }
        state.prefetched_to = to;
        Some((from, to))
    }
}

/// The extents covering [from, to) of `extents`, clipped to it.
fn clipped(extents: &[Extent], from: u64, to: u64) -> Vec<Extent> {
    extents
        .iter()
        .filter_map(|e| {
            let start = e.file_offset.max(from);
            let end = (e.file_offset + e.length).min(to);
            let mut blob = e.blob?;
            blob.offset += start.checked_sub(e.file_offset)?;
            (start < end).then(|| Extent { file_offset: start, length: end - start, blob: Some(blob) })
        })
        .collect()
}

impl Inner {
    /// The inode and the extents of its first [`EXTENT_WINDOW`] bytes, in one request.
    pub async fn first_window(&self, ino: u64) -> Result<(Inode, FirstWindow)> {
        let changes = EXTENT_CHANGES.load(Ordering::SeqCst);
        let (extents, inode) = self.meta.get_extents_and_inode(ino, 0, EXTENT_WINDOW).await?;
        let window = ExtentWindow { start: 0, end: EXTENT_WINDOW, size: inode.size, extents, fetched: Instant::now() };
        Ok((inode, FirstWindow { window, changes }))
    }

    /// Gives a newly opened file the window its open fetched, unless this
    /// process changed extents (of any file) since, or is changing some.
    pub fn seed(&self, file: &OpenFile, first: Option<FirstWindow>) {
        let Some(first) = first else { return };
        let quiet = EXTENT_CHANGES_UNDER_WAY.load(Ordering::SeqCst) == 0
            && EXTENT_CHANGES.load(Ordering::SeqCst) == first.changes;
        if quiet {
            file.reads.keep(first.window, file.reads.generation());
        }
    }

    /// Marks an extent change under way until the guard is dropped.
    pub fn changing_extents(&self) -> ChangingExtents {
        EXTENT_CHANGES_UNDER_WAY.fetch_add(1, Ordering::SeqCst);
        ChangingExtents(())
    }

    /// Bytes [offset, offset + size) of an open file, clipped to its size.
    pub async fn read_open(&self, file: &OpenFile, offset: u64, size: u32) -> Result<Bytes> {
        let end = offset.saturating_add(size.into());
        let window = match file.reads.window_for(offset, end) {
            Some(window) => window,
            None => {
                let generation = file.reads.generation();
                let span = EXTENT_WINDOW.max(size.into());
                let (extents, file_size) = self.meta.get_extents(file.ino, offset, span).await?;
                let window = ExtentWindow {
                    start: offset,
                    end: offset.saturating_add(span),
                    size: file_size,
                    extents,
                    fetched: Instant::now(),
                };
                file.reads.keep(window.clone(), generation);
                window
            }
        };
        let end = end.min(window.size);
        if end <= offset {
            return Ok(Bytes::new());
        }
        let bytes = read_extents(&self.cache, &clipped(&window.extents, offset, end), offset, end).await?;
        if let Some((from, to)) = file.reads.advance(offset, end, window.size) {
            for extent in clipped(&window.extents, from, to.min(window.end)) {
                let blob = extent.blob.expect("clipped extents keep their blob");
                self.cache.prefetch(&blob, blob.offset, extent.length);
            }
        }
        Ok(bytes)
    }
}
