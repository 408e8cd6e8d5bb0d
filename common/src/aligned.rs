//! Page-aligned byte buffers: what O_DIRECT reads and writes need (address,
//! length and file offset multiples of the device's block size; 4 KiB covers
//! every device here). Used by the disk cache, by the data path's frame
//! reader (so a block received from a datanode can go to the disk cache
//! without another copy) and by the benchmarks.

use std::alloc::{Layout, alloc_zeroed, dealloc};

/// The alignment of every [`AlignedBuf`], and the unit its size is rounded to.
pub const ALIGN: usize = 4096;

/// Rounds `len` up to a multiple of [`ALIGN`].
pub fn round_up(len: usize) -> usize {
    len.div_ceil(ALIGN).max(1) * ALIGN
}

/// A zeroed buffer of `len` bytes whose allocation starts on a 4 KiB boundary
/// and extends to the next multiple of 4 KiB ([`AlignedBuf::padded`]).
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
    layout: Layout,
}

// SAFETY: the buffer is owned; shared access only reads, mutation needs &mut.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(round_up(len), ALIGN).expect("a valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len, layout }
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
        // SAFETY: allocated in `new` with this layout.
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
}
