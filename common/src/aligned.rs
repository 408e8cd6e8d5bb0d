//! Page-aligned byte buffers: what O_DIRECT reads and writes need (address,
//! length and file offset multiples of the device's block size; 4 KiB covers
//! every device here). Used by the disk cache, by the data path's frame
//! reader (so a block received from a datanode can go to the disk cache
//! without another copy) and by the benchmarks.
//!
//! Freed buffers of up to [`POOL_MAX_BUFFER`] bytes go to a small pool
//! ([`POOL_BYTES`] in all) that later buffers of the same size come from: a
//! stream of 1 MiB blocks otherwise has the allocator map fresh memory for
//! most of them, and faulting and zeroing those pages cost more CPU than
//! the bytes' own copies (measured on the mount's warm reread: 18 % of the
//! machine's CPU). When the pool is full, a freed buffer takes the place of
//! buffers of a size asked for less recently: after a pass over 128 KiB
//! files the pool must not stay full of 128 KiB buffers while 1 MiB blocks
//! are allocated afresh (measured: a warm reread fell from 1,143 to 315 MiB/s,
//! the mount's memory growing by 2.5 GB; docs/PERFORMANCE.md).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The alignment of every [`AlignedBuf`], and the unit its size is rounded to.
pub const ALIGN: usize = 4096;

/// Rounds `len` up to a multiple of [`ALIGN`].
pub fn round_up(len: usize) -> usize {
    len.div_ceil(ALIGN).max(1) * ALIGN
}

/// Buffers larger than this are never pooled.
pub const POOL_MAX_BUFFER: usize = 8 << 20;
/// Bytes of free buffers the pool keeps at most.
pub const POOL_BYTES: usize = 64 << 20;

/// Free allocations by size, and the bytes of all of them.
struct Pool {
    sizes: BTreeMap<usize, SizeClass>,
    bytes: usize,
    /// Counts requests: what [`SizeClass::wanted`] is measured in.
    requests: u64,
}

/// The free allocations of one size.
#[derive(Default)]
struct SizeClass {
    free: Vec<usize>,
    /// When a buffer of this size was last asked for (a request count).
    wanted: u64,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { sizes: BTreeMap::new(), bytes: 0, requests: 0 });

/// An allocation of `size` bytes from the pool, if it holds one.
fn pooled(size: usize) -> Option<*mut u8> {
    if size > POOL_MAX_BUFFER {
        return None;
    }
    let mut pool = POOL.lock().unwrap();
    pool.requests += 1;
    let now = pool.requests;
    let class = pool.sizes.entry(size).or_default();
    class.wanted = now;
    let address = class.free.pop()?;
    pool.bytes -= size;
    Some(address as *mut u8)
}

/// Keeps an allocation for reuse, in place of buffers of sizes asked for
/// less recently if the pool is full; false if it is not kept.
fn give_back(ptr: *mut u8, size: usize) -> bool {
    if size > POOL_MAX_BUFFER {
        return false;
    }
    let mut evicted = Vec::new();
    let kept = {
        let mut pool = POOL.lock().unwrap();
        let wanted = pool.sizes.get(&size).map_or(0, |class| class.wanted);
        while pool.bytes + size > POOL_BYTES {
            let stale = pool
                .sizes
                .iter()
                .filter(|(_, class)| class.wanted < wanted && !class.free.is_empty())
                .min_by_key(|(_, class)| class.wanted)
                .map(|(size, _)| *size);
            let Some(stale) = stale else { break };
            let address = pool.sizes.get_mut(&stale).and_then(|class| class.free.pop()).expect("a free buffer");
            pool.bytes -= stale;
            evicted.push((address, stale));
        }
        let room = pool.bytes + size <= POOL_BYTES;
        if room {
            pool.sizes.entry(size).or_default().free.push(ptr as usize);
            pool.bytes += size;
        }
        room
    };
    for (address, size) in evicted {
        // SAFETY: pooled allocations were made in `for_overwrite` with this layout.
        unsafe { dealloc(address as *mut u8, layout(size)) }
    }
    kept
}

/// The layout of an allocation of `size` bytes (a multiple of [`ALIGN`]).
fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).expect("a valid layout")
}

/// Bytes held by the pool now (for tests and statistics).
pub fn pooled_bytes() -> usize {
    POOL.lock().unwrap().bytes
}

/// A zeroed buffer of `len` bytes whose allocation starts on a 4 KiB boundary
/// and extends to the next multiple of 4 KiB ([`AlignedBuf::padded`]).
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
    layout: Layout,
    /// Came from the pool: its bytes are an earlier buffer's, not zeros.
    recycled: bool,
}

// SAFETY: the buffer is owned; shared access only reads, mutation needs &mut.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::for_overwrite(len);
        if buf.recycled {
            buf.padded_mut().fill(0);
        }
        buf
    }

    /// A buffer of `len` bytes whose contents are unspecified (zeros, or
    /// what an earlier buffer of this process held): for reads that fill it.
    pub fn for_overwrite(len: usize) -> AlignedBuf {
        let layout = layout(round_up(len));
        if let Some(ptr) = pooled(layout.size()) {
            return AlignedBuf { ptr, len, layout, recycled: true };
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len, layout, recycled: false }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points at layout.size() >= len initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The whole allocation: the bytes, then zeros up to a multiple of 4 KiB.
    pub fn padded(&self) -> &[u8] {
        // SAFETY: ptr points at layout.size() initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    /// Mutable access to the whole allocation.
    pub fn padded_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }

    /// Shortens the buffer to `len` bytes (the allocation stays).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if give_back(self.ptr, self.layout.size()) {
            return;
        }
        // SAFETY: allocated in `for_overwrite` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_zeroed_and_padded() {
        for len in [0, 1, 4095, 4096, 4097, 1 << 20] {
            let mut buf = AlignedBuf::new(len);
            assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(buf.len(), len);
            assert_eq!(buf.padded().len(), round_up(len));
            assert!(buf.padded().iter().all(|b| *b == 0));
            buf.as_mut_slice().fill(7);
            assert_eq!(buf.padded().iter().filter(|b| **b == 7).count(), len);
        }
    }

    #[test]
    fn freed_buffers_are_reused_and_new_ones_still_read_as_zeros() {
        // A size no other test here allocates, so the pool's entry is this test's.
        let len = 7 * ALIGN + 5;
        let mut first = AlignedBuf::new(len);
        first.as_mut_slice().fill(9);
        let address = first.as_slice().as_ptr() as usize;
        drop(first);
        assert!(pooled_bytes() >= round_up(len));
        let again = AlignedBuf::new(len);
        assert_eq!(again.as_slice().as_ptr() as usize, address, "the freed allocation is reused");
        assert!(again.padded().iter().all(|b| *b == 0), "new() zeroes a reused allocation");
        drop(again);
        let overwrite = AlignedBuf::for_overwrite(len);
        assert_eq!(overwrite.as_slice().as_ptr() as usize, address);
        assert_eq!(overwrite.len(), len);
    }

    #[test]
    fn a_full_pool_makes_room_for_the_size_asked_for_last() {
        // Sizes no other test here allocates.
        let (old_size, new_size) = (13 * ALIGN, 11 * ALIGN);
        let old: Vec<AlignedBuf> = (0..=POOL_BYTES / old_size).map(|_| AlignedBuf::for_overwrite(old_size)).collect();
        drop(old);
        assert!(pooled_bytes() + old_size > POOL_BYTES, "the old size filled the pool");
        let new = AlignedBuf::for_overwrite(new_size);
        let address = new.as_slice().as_ptr() as usize;
        drop(new);
        assert!(pooled_bytes() <= POOL_BYTES);
        let again = AlignedBuf::for_overwrite(new_size);
        assert!(again.recycled, "kept in place of older sizes");
        assert_eq!(again.as_slice().as_ptr() as usize, address);
    }
}
