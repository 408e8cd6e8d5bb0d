//! L1: blocks in this process's memory, least recently used dropped first
//! once the total passes the configured size.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;

use crate::BlockKey;

pub struct MemCache {
    capacity: u64,
    inner: Mutex<Lru>,
    /// Blocks dropped to make room.
    pub evicted: AtomicU64,
}

struct Lru {
    blocks: LruCache<BlockKey, Bytes>,
    bytes: u64,
}

impl MemCache {
    pub fn new(capacity: u64) -> MemCache {
        MemCache {
            capacity,
            inner: Mutex::new(Lru { blocks: LruCache::unbounded(), bytes: 0 }),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.inner.lock().unwrap().blocks.get(key).cloned()
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.inner.lock().unwrap().blocks.contains(key)
    }

    /// Keeps `block`, dropping the least recently used blocks to stay within
    /// the capacity. A block larger than the whole cache is not kept.
    pub fn insert(&self, key: BlockKey, block: Bytes) {
        let size = block.len() as u64;
        if size > self.capacity {
            return;
        }
        let mut lru = self.inner.lock().unwrap();
        if let Some(old) = lru.blocks.put(key, block) {
            lru.bytes -= old.len() as u64;
        }
        lru.bytes += size;
        while lru.bytes > self.capacity {
            let Some((_, dropped)) = lru.blocks.pop_lru() else { break };
            lru.bytes -= dropped.len() as u64;
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops `key` if held.
    pub fn remove(&self, key: &BlockKey) {
        let mut lru = self.inner.lock().unwrap();
        if let Some(old) = lru.blocks.pop(key) {
            lru.bytes -= old.len() as u64;
        }
    }

    /// The block an insert of `size` bytes would drop first, if it would drop any.
    pub fn victim_for(&self, size: u64) -> Option<BlockKey> {
        let lru = self.inner.lock().unwrap();
        if lru.bytes + size <= self.capacity {
            return None;
        }
        lru.blocks.peek_lru().map(|(key, _)| *key)
    }

    /// (blocks, bytes) held.
    pub fn usage(&self) -> (u64, u64) {
        let lru = self.inner.lock().unwrap();
        (lru.blocks.len() as u64, lru.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(blob_id: u64) -> BlockKey {
        BlockKey { data_partition: 1, blob_id, block: 0 }
    }

    #[test]
    fn drops_least_recently_used_past_capacity() {
        let cache = MemCache::new(300);
        cache.insert(key(1), Bytes::from(vec![1; 100]));
        cache.insert(key(2), Bytes::from(vec![2; 100]));
        cache.insert(key(3), Bytes::from(vec![3; 100]));
        assert!(cache.get(&key(1)).is_some()); // 1 is now the most recent
        cache.insert(key(4), Bytes::from(vec![4; 100]));
        assert!(cache.get(&key(2)).is_none());
        assert_eq!(cache.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(cache.get(&key(1)).unwrap()[0], 1);
        assert_eq!(cache.usage(), (3, 300));
        cache.insert(key(5), Bytes::from(vec![5; 301]));
        assert!(cache.get(&key(5)).is_none());
        assert_eq!(cache.usage(), (3, 300));
    }
}
