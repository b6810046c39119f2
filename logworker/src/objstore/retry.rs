//! Retries transient object-store failures with jittered exponential backoff.
//!
//! Guarantees:
//! - Only [`ObjectError::Transient`] failures are retried; every other result
//!   is returned as soon as it is seen.
//! - No attempt starts after the policy's deadline (counted from the start of
//!   the call); the last transient error is returned then.
//! - `put_if_absent` keeps the conditional-create contract across retries: if
//!   an attempt failed transiently (its PUT may have succeeded with the
//!   response lost) and a later attempt gets `AlreadyExists`, the object is
//!   read back and the call succeeds only if it holds exactly `body`. An
//!   `AlreadyExists` on the first attempt is returned as is (another writer
//!   owns the key: this is how zombie WAL writers are fenced).
//! - Every failed attempt is counted in [`RetryMetrics`].
//!
//! This is the worker's only retry policy for storage: the WAL writer,
//! sealing, recovery and reads call the store once and rely on it.

use super::{Body, ObjectError, ObjectMeta, ObjectStore};
use crate::metrics::RetryMetrics;
use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long and how often to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// No attempt starts later than this after the call began.
    pub deadline: Duration,
    /// Backoff before the second attempt; doubled after each attempt.
    pub initial_backoff: Duration,
    /// Upper bound of the backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 30 s deadline, backoff from 10 ms doubling up to 1 s.
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// Jittered exponential backoff bounded by a deadline.
struct Backoff {
    next: Duration,
    max: Duration,
    give_up: Instant,
}

impl Backoff {
    fn new(policy: &RetryPolicy) -> Self {
        Self {
            next: policy.initial_backoff,
            max: policy.max_backoff,
            give_up: Instant::now() + policy.deadline,
        }
    }

    /// Sleeps before the next attempt; false if that attempt would start
    /// after the deadline (then it does not sleep).
    async fn wait(&mut self) -> bool {
        let base = self.next;
        let half = base.as_micros() as u64 / 2;
        let jitter = rand::rng().random_range(0..=half);
        let delay = Duration::from_micros(half + jitter);
        if Instant::now() + delay >= self.give_up {
            return false;
        }
        tokio::time::sleep(delay).await;
        self.next = (base * 2).min(self.max);
        true
    }
}

/// An [`ObjectStore`] that retries the transient failures of another.
pub struct RetryingStore {
    inner: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
    metrics: RetryMetrics,
}

impl RetryingStore {
    /// Wraps `inner`, retrying under `policy`, counting into `metrics`.
    pub fn new(inner: Arc<dyn ObjectStore>, policy: RetryPolicy, metrics: RetryMetrics) -> Self {
        Self {
            inner,
            policy,
            metrics,
        }
    }

    async fn retry<T, F, Fut>(&self, op: &str, key: &str, mut call: F) -> Result<T, ObjectError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, ObjectError>> + Send,
    {
        let mut backoff = Backoff::new(&self.policy);
        let mut attempt = 1u32;
        loop {
            match call().await {
                Err(e) if e.is_retriable() => {
                    if !backoff.wait().await {
                        return Err(e);
                    }
                    attempt += 1;
                    self.metrics.retries.with_label_values(&[op]).inc();
                    tracing::debug!(key, attempt, error = %e, "retrying object store call");
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl ObjectStore for RetryingStore {
    async fn put_body_if_absent(&self, key: &str, body: Body) -> Result<(), ObjectError> {
        let mut backoff = Backoff::new(&self.policy);
        let mut ambiguous = false;
        loop {
            match self.inner.put_body_if_absent(key, body.clone()).await {
                Err(ObjectError::AlreadyExists(_)) if ambiguous => {
                    return match self.get(key).await {
                        Ok(existing) if body.matches(&existing) => Ok(()),
                        Ok(_) | Err(ObjectError::NotFound(_)) => {
                            Err(ObjectError::AlreadyExists(key.to_string()))
                        }
                        Err(e) => Err(e),
                    };
                }
                Err(e) if e.is_retriable() => {
                    self.metrics.put_errors.inc();
                    ambiguous = true;
                    if !backoff.wait().await {
                        return Err(e);
                    }
                    self.metrics.retries.with_label_values(&["put"]).inc();
                    tracing::warn!(key, error = %e, "PUT failed; retrying");
                }
                Err(e @ ObjectError::AlreadyExists(_)) => return Err(e),
                Err(e) => {
                    self.metrics.put_errors.inc();
                    return Err(e);
                }
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        self.retry("get", key, || self.inner.get(key)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.retry("get_range", key, || {
            self.inner.get_range(key, range.clone())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        self.retry("list", prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.retry("delete", key, || self.inner.delete(key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objstore::local::LocalDirStore;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails the first `failures` calls transiently; with `lose_put_responses`
    /// a failing PUT still creates the object (the response was lost).
    struct Flaky {
        inner: LocalDirStore,
        failures: AtomicU32,
        calls: AtomicU32,
        lose_put_responses: bool,
    }

    impl Flaky {
        fn new(dir: &std::path::Path, failures: u32, lose_put_responses: bool) -> Arc<Self> {
            Arc::new(Self {
                inner: LocalDirStore::open(dir).unwrap(),
                failures: AtomicU32::new(failures),
                calls: AtomicU32::new(0),
                lose_put_responses,
            })
        }

        fn fail(&self, key: &str) -> Result<(), ObjectError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(ObjectError::Transient {
                    key: key.into(),
                    reason: "injected".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        async fn put_body_if_absent(&self, key: &str, body: Body) -> Result<(), ObjectError> {
            if let Err(e) = self.fail(key) {
                if self.lose_put_responses {
                    let _ = self.inner.put_body_if_absent(key, body).await;
                }
                return Err(e);
            }
            self.inner.put_body_if_absent(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
            self.fail(key)?;
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, r: Range<u64>) -> Result<Bytes, ObjectError> {
            self.fail(key)?;
            self.inner.get_range(key, r).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
            self.fail(prefix)?;
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), ObjectError> {
            self.fail(key)?;
            self.inner.delete(key).await
        }
    }

    fn metrics() -> RetryMetrics {
        RetryMetrics::new(&prometheus::Registry::new()).unwrap()
    }

    fn policy(deadline_ms: u64) -> RetryPolicy {
        RetryPolicy {
            deadline: Duration::from_millis(deadline_ms),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_until_success() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Flaky::new(dir.path(), 0, false);
        flaky
            .inner
            .put_if_absent("ns/a", Bytes::from_static(b"abc"))
            .await
            .unwrap();
        flaky.failures.store(3, Ordering::SeqCst);
        let s = RetryingStore::new(flaky.clone(), policy(5_000), metrics());
        assert_eq!(&s.get("ns/a").await.unwrap()[..], b"abc");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
        // Non-transient errors are not retried.
        flaky.calls.store(0, Ordering::SeqCst);
        assert!(matches!(s.get("ns/b").await, Err(ObjectError::NotFound(_))));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Flaky::new(dir.path(), u32::MAX, false);
        let s = RetryingStore::new(flaky.clone(), policy(200), metrics());
        let started = std::time::Instant::now();
        let r = s.list("ns/").await;
        assert!(matches!(r, Err(ObjectError::Transient { .. })));
        assert!(started.elapsed() < Duration::from_millis(200 + 100));
        assert!(flaky.calls.load(Ordering::SeqCst) > 3);
    }

    #[tokio::test]
    async fn lost_put_response_is_resolved_by_reading_back() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Flaky::new(dir.path(), 1, true);
        let m = metrics();
        let s = RetryingStore::new(flaky.clone(), policy(5_000), m.clone());
        s.put_if_absent("ns/w/1", Bytes::from_static(b"mine"))
            .await
            .unwrap();
        // The failed attempt is counted although the call succeeded.
        assert_eq!(m.put_errors.get(), 1);
        assert_eq!(m.retries.with_label_values(&["put"]).get(), 1);
        // Someone else's object behind a lost response is still a conflict.
        flaky
            .inner
            .put_if_absent("ns/w/2", Bytes::from_static(b"theirs"))
            .await
            .unwrap();
        flaky.failures.store(1, Ordering::SeqCst);
        let r = s.put_if_absent("ns/w/2", Bytes::from_static(b"mine")).await;
        assert!(matches!(r, Err(ObjectError::AlreadyExists(_))));
        // A conflict on the first attempt is returned at once (fencing).
        flaky.calls.store(0, Ordering::SeqCst);
        let r = s.put_if_absent("ns/w/1", Bytes::from_static(b"mine")).await;
        assert!(matches!(r, Err(ObjectError::AlreadyExists(_))));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
        // Losing a conditional create is fencing, not a storage failure.
        assert_eq!(m.put_errors.get(), 2);
    }
}
