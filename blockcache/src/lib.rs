//! Block caches shared by the client (its L1 in memory and L2 on a local
//! disk) and the cachenode (the shared L3), so that both hold blocks the
//! same way: keyed by (data partition, blob id, block index). Blob ids are
//! never reused within a cluster and blobs never change once written, so a
//! cached block is never stale and needs no invalidation.
//!
//! [`Admission`] decides, once a cache is full, whether a new block may push
//! out the one that would be evicted: the cachenode's guard against a single
//! scan of a large dataset flushing the blocks many clients keep reading.

mod admission;
pub mod disk;
mod memory;

pub use admission::Admission;
pub use disk::DiskCache;
pub use memory::MemCache;
use strata_proto::meta::BlobRef;

/// Where a cached block comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub data_partition: u64,
    pub blob_id: u64,
    pub block: u64,
}

impl BlockKey {
    /// Block `index` of `blob`.
    pub fn of(blob: &BlobRef, index: u64) -> BlockKey {
        BlockKey { data_partition: blob.data_partition, blob_id: blob.blob_id, block: index }
    }

    /// A 64-bit hash of the key, the same in every process and release
    /// (placement on the cachenode ring and the admission sketch use it).
    pub fn stable_hash(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for word in [self.data_partition, self.blob_id, self.block] {
            h = mix(h ^ word);
        }
        h
    }
}

/// splitmix64's finaliser: every input bit moves every output bit.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
