//! The tail cache budget: chunks enter when their WAL object becomes durable
//! and leave oldest-first once the cached bytes exceed `KAFSCALE_CACHE_BYTES`.
//! A tailing consumer therefore reads from memory, never from storage.
//!
//! The cache only accounts bytes; the bytes themselves stay with their
//! owner (a partition log), which it asks to drop them through [`Evict`].
//! It knows nothing else of its owners, so it sits below them in the write
//! path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// An owner of cached chunks, asked to drop one when the budget is exceeded.
pub trait Evict: Send + Sync {
    /// Drops the cached bytes of the chunk starting at `base_offset`.
    fn evict(&self, base_offset: i64);
}

/// Global FIFO accounting of cached chunk bytes.
#[derive(Debug)]
pub struct TailCache {
    budget: usize,
    /// Bytes ever inserted (a chunk is evicted once about `budget` bytes
    /// were inserted after it); read without the lock on the commit path.
    inserted: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    used: usize,
    fifo: VecDeque<(Weak<dyn Evict>, i64, usize)>,
}

impl TailCache {
    /// A cache holding at most `budget` bytes of chunks.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inserted: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a chunk of `len` bytes may be cached at all.
    pub fn admits(&self, len: usize) -> bool {
        len <= self.budget
    }

    /// Accounts a newly cached chunk and evicts the oldest ones over budget.
    pub fn inserted<E: Evict + 'static>(&self, owner: &Arc<E>, base_offset: i64, len: usize) {
        let owner: Weak<dyn Evict> = Arc::downgrade(owner) as Weak<dyn Evict>;
        let mut evict = Vec::new();
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.used += len;
            self.inserted.fetch_add(len as u64, Ordering::Relaxed);
            s.fifo.push_back((owner, base_offset, len));
            while s.used > self.budget {
                let Some((w, base, l)) = s.fifo.pop_front() else {
                    break;
                };
                s.used -= l;
                evict.push((w, base));
            }
        }
        for (w, base) in evict {
            if let Some(owner) = w.upgrade() {
                owner.evict(base);
            }
        }
    }

    /// Bytes ever inserted: a chunk inserted when this was `at` is evicted
    /// once it has grown by about the budget.
    pub fn inserted_bytes(&self) -> u64 {
        self.inserted.load(Ordering::Relaxed)
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget as u64
    }

    /// Bytes currently accounted as cached.
    pub fn used(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).used
    }
}
