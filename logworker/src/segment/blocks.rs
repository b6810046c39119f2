//! A bounded cache of segment blocks (`KAFSCALE_SEGMENT_CACHE_BYTES`), least
//! recently used out first, with read-ahead: a consumer reading a segment
//! block gets the next block of the partition loaded in the background, so a
//! sequential catch-up read waits for S3 about once per block rather than
//! once per fetch. Blocks are verified (CRC32C) before they are cached.

use bytes::Bytes;
use lru::LruCache;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

type Key = (Arc<str>, u64);

struct Inner {
    lru: LruCache<Key, Bytes>,
    bytes: usize,
    /// Blocks a read-ahead is loading (so none is loaded twice at once).
    loading: HashSet<Key>,
}

/// Segment blocks by (object, position).
pub struct BlockCache {
    limit: usize,
    inner: Mutex<Inner>,
}

impl BlockCache {
    /// A cache holding at most `limit` bytes (0 disables it).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                loading: HashSet::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached block at `position` of `object`.
    pub fn get(&self, object: &Arc<str>, position: u64) -> Option<Bytes> {
        self.lock().lru.get(&(object.clone(), position)).cloned()
    }

    /// Caches a verified block, evicting the least recently used ones; a
    /// block larger than a quarter of the cache is not kept.
    pub fn insert(&self, object: &Arc<str>, position: u64, block: Bytes) {
        if block.len() > self.limit / 4 {
            return;
        }
        let mut g = self.lock();
        let key = (object.clone(), position);
        g.loading.remove(&key);
        g.bytes += block.len();
        if let Some(old) = g.lru.put(key, block) {
            g.bytes -= old.len();
        }
        while g.bytes > self.limit {
            match g.lru.pop_lru() {
                Some((_, b)) => g.bytes -= b.len(),
                None => break,
            }
        }
    }

    /// Claims a read-ahead of the block: false if it is cached or being
    /// loaded already (or the cache is disabled).
    pub fn begin_load(&self, object: &Arc<str>, position: u64) -> bool {
        if self.limit == 0 {
            return false;
        }
        let mut g = self.lock();
        let key = (object.clone(), position);
        if g.lru.contains(&key) {
            return false;
        }
        g.loading.insert(key)
    }

    /// Gives up a claimed read-ahead (the load failed).
    pub fn end_load(&self, object: &Arc<str>, position: u64) {
        self.lock().loading.remove(&(object.clone(), position));
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_blocks_leave_first() {
        let c = BlockCache::new(400);
        let o: Arc<str> = Arc::from("seg");
        for p in 0..4u64 {
            c.insert(&o, p, Bytes::from(vec![p as u8; 100]));
        }
        assert!(c.get(&o, 0).is_some(), "touch block 0");
        c.insert(&o, 4, Bytes::from(vec![4u8; 100]));
        assert!(
            c.get(&o, 1).is_none(),
            "block 1 was the least recently used"
        );
        assert!(c.get(&o, 0).is_some());
        assert_eq!(c.bytes(), 400);
        // Too large to keep.
        c.insert(&o, 9, Bytes::from(vec![0u8; 101]));
        assert!(c.get(&o, 9).is_none());
    }

    #[test]
    fn a_block_is_loaded_ahead_once() {
        let c = BlockCache::new(1000);
        let o: Arc<str> = Arc::from("seg");
        assert!(c.begin_load(&o, 7));
        assert!(!c.begin_load(&o, 7), "already loading");
        c.end_load(&o, 7);
        assert!(c.begin_load(&o, 7));
        c.insert(&o, 7, Bytes::from_static(b"block"));
        assert!(!c.begin_load(&o, 7), "cached");
        assert!(!BlockCache::new(0).begin_load(&o, 1), "disabled");
    }
}
