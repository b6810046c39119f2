//! A bounded cache of chunks read from storage, segment blocks and WAL chunks
//! below the tail cache (`KAFSCALE_SEGMENT_CACHE_BYTES`), least recently
//! used out first, with read-ahead: a consumer reading from storage gets the
//! next chunks of the partition loaded in the background
//! (`reader::READ_AHEAD_BLOCKS`), so a sequential catch-up read rarely waits
//! for S3, and a reader that needs a block being loaded waits for that load
//! instead of reading it a second time. Blocks are verified (CRC32C) before they are cached.

use bytes::Bytes;
use lru::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a reader waits for a read-ahead of the block it needs before
/// reading the block itself.
const LOAD_WAIT: Duration = Duration::from_secs(5);

type Key = (Arc<str>, u64);

struct Inner {
    lru: LruCache<Key, Bytes>,
    bytes: usize,
    /// Blocks a read-ahead is loading (so none is loaded twice at once),
    /// with the signal of the load's end for readers waiting on it.
    loading: HashMap<Key, Arc<Notify>>,
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
                loading: HashMap::new(),
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

    /// The cached block, or, while a read-ahead loads it, the block once
    /// that load ends (`None` if it failed or took longer than
    /// [`LOAD_WAIT`]: the caller reads the block itself).
    pub async fn get_or_wait(&self, object: &Arc<str>, position: u64) -> Option<Bytes> {
        let key = (object.clone(), position);
        let notify;
        let loaded;
        {
            let mut g = self.lock();
            if let Some(b) = g.lru.get(&key) {
                return Some(b.clone());
            }
            notify = g.loading.get(&key)?.clone();
            // Created under the lock, so the end of the load cannot be missed.
            loaded = notify.notified();
        }
        let _ = tokio::time::timeout(LOAD_WAIT, loaded).await;
        self.get(object, position)
    }

    /// Ends a claimed load and wakes the readers waiting on it.
    fn finish_load(g: &mut Inner, key: &Key) {
        if let Some(n) = g.loading.remove(key) {
            n.notify_waiters();
        }
    }

    /// Caches a verified block, evicting the least recently used ones; a
    /// block larger than a quarter of the cache is not kept.
    pub fn insert(&self, object: &Arc<str>, position: u64, block: Bytes) {
        let mut g = self.lock();
        let key = (object.clone(), position);
        if block.len() > self.limit / 4 {
            Self::finish_load(&mut g, &key);
            return;
        }
        g.bytes += block.len();
        if let Some(old) = g.lru.put(key.clone(), block) {
            g.bytes -= old.len();
        }
        while g.bytes > self.limit {
            match g.lru.pop_lru() {
                Some((_, b)) => g.bytes -= b.len(),
                None => break,
            }
        }
        Self::finish_load(&mut g, &key);
    }

    /// Claims a read-ahead of the block: false if it is cached or being
    /// loaded already (or the cache is disabled).
    pub fn begin_load(&self, object: &Arc<str>, position: u64) -> bool {
        if self.limit == 0 {
            return false;
        }
        let mut g = self.lock();
        let key = (object.clone(), position);
        if g.lru.contains(&key) || g.loading.contains_key(&key) {
            return false;
        }
        g.loading.insert(key, Arc::new(Notify::new()));
        true
    }

    /// Gives up a claimed read-ahead (the load failed).
    pub fn end_load(&self, object: &Arc<str>, position: u64) {
        Self::finish_load(&mut self.lock(), &(object.clone(), position));
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_waits_for_the_load_in_flight() {
        let c = Arc::new(BlockCache::new(400));
        let o: Arc<str> = Arc::from("seg");
        assert_eq!(
            c.get_or_wait(&o, 1).await,
            None,
            "neither cached nor loading"
        );
        assert!(c.begin_load(&o, 1));
        let waiter = tokio::spawn({
            let (c, o) = (c.clone(), o.clone());
            async move { c.get_or_wait(&o, 1).await }
        });
        tokio::task::yield_now().await;
        c.insert(&o, 1, Bytes::from_static(b"block"));
        assert_eq!(
            waiter.await.ok().flatten(),
            Some(Bytes::from_static(b"block"))
        );
        // A failed load wakes its waiters with nothing.
        assert!(c.begin_load(&o, 2));
        let waiter = tokio::spawn({
            let (c, o) = (c.clone(), o.clone());
            async move { c.get_or_wait(&o, 2).await }
        });
        tokio::task::yield_now().await;
        c.end_load(&o, 2);
        assert_eq!(waiter.await.ok().flatten(), None);
    }

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
