//! Client quota enforcement (the gateway's rate-limiting layer).
//!
//! Which quota applies to a connection is decided by
//! [`kafscale_controlplane::quota::QuotaSet`] (Kafka's entity precedence);
//! here each group of clients sharing a quota gets a `governor` rate limiter
//! per quota kind, holding this gateway's share: the configured rate divided
//! by the number of registered gateways (docs/architecture.md, "Quotas").
//!
//! Kafka's way is kept: a request is served, then its cost is charged; a
//! cost that does not fit becomes a [`Debt`], the response carries the
//! expected wait as `throttle_time_ms`, and the connection is muted (its
//! socket not read) until the debt is paid. Clients back off by themselves
//! on the throttle time (KIP-219); clients that do not are held by the mute.

use crate::metrics::GatewayMetrics;
use governor::clock::{Clock, MonotonicClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use kafscale_controlplane::quota::{QuotaGroup, QuotaKind, QuotaSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Limiter = RateLimiter<
    NotKeyed,
    InMemoryState,
    MonotonicClock,
    governor::middleware::NoOpMiddleware<Instant>,
>;

/// How many seconds of its rate a group may spend at once.
const BURST_SECONDS: f64 = 1.0;
/// Shortest refill period a limiter uses; faster rates count in larger cells.
const MIN_CELL_PERIOD_NS: f64 = 10.0;
/// Idle groups are forgotten once this many exist (client ids are chosen by
/// clients, so the table must not grow without bound).
const MAX_GROUPS: usize = 10_000;
/// A group unused this long may be forgotten.
const IDLE_GROUP: Duration = Duration::from_secs(60);

/// One group's limiter for one quota kind at one rate.
struct Bucket {
    /// The per-gateway rate it was built for, in units per second.
    rate: f64,
    /// Units (bytes, microseconds, connections) per governor cell.
    unit: f64,
    /// Largest number of cells one check may take.
    burst: u32,
    limiter: Limiter,
    clock: MonotonicClock,
    /// When the bucket was last charged (ms since the gateway's epoch).
    used_ms: AtomicU64,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        let rate = rate.max(1e-3);
        let unit = (rate * MIN_CELL_PERIOD_NS / 1e9).max(1.0);
        let cells_per_sec = rate / unit;
        let period = Duration::from_secs_f64(1.0 / cells_per_sec).max(Duration::from_nanos(1));
        let burst = (cells_per_sec * BURST_SECONDS).clamp(1.0, u32::MAX as f64) as u32;
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            rate,
            unit,
            burst,
            limiter: RateLimiter::direct_with_clock(quota, MonotonicClock),
            clock: MonotonicClock,
            used_ms: AtomicU64::new(0),
        }
    }

    fn cells(&self, amount: f64) -> u64 {
        (amount / self.unit).ceil().max(1.0) as u64
    }

    /// Takes up to one burst of `cells`: the cells taken, or how long until
    /// they would fit.
    fn take(&self, cells: u64) -> Result<u64, Duration> {
        let n = cells.min(u64::from(self.burst)).max(1) as u32;
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(u64::from(n.get())),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // n never exceeds the burst; treat it as one burst's wait.
            Err(_) => Err(Duration::from_secs_f64(BURST_SECONDS)),
        }
    }

    /// Charges `amount` units: `None` if it fits now, else the debt and the
    /// expected wait until it is paid.
    fn charge(self: &Arc<Self>, amount: f64) -> Option<(Debt, Duration)> {
        let mut cells = self.cells(amount);
        while cells > 0 {
            match self.take(cells) {
                Ok(taken) => cells -= taken,
                Err(wait) => {
                    let later = (cells.saturating_sub(u64::from(self.burst))) as f64 * self.unit;
                    let wait = wait + Duration::from_secs_f64(later / self.rate);
                    return Some((
                        Debt {
                            bucket: self.clone(),
                            cells,
                        },
                        wait,
                    ));
                }
            }
        }
        None
    }
}

/// A cost charged but not yet paid: the connection that owes it stays muted
/// until [`Debt::pay`] returns.
pub struct Debt {
    bucket: Arc<Bucket>,
    cells: u64,
}

impl Debt {
    /// Waits until the quota has room for the whole cost, and takes it.
    pub async fn pay(mut self) {
        while self.cells > 0 {
            match self.bucket.take(self.cells) {
                Ok(taken) => self.cells -= taken,
                Err(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
            }
        }
    }
}

/// The gateway's quota state: one limiter per (kind, group) seen.
pub struct Quotas {
    buckets: dashmap::DashMap<(QuotaKind, QuotaGroup), Arc<Bucket>>,
    epoch: Instant,
    metrics: GatewayMetrics,
}

impl Quotas {
    /// Empty state, counting throttles into `metrics`.
    pub fn new(metrics: GatewayMetrics) -> Self {
        Self {
            buckets: Default::default(),
            epoch: Instant::now(),
            metrics,
        }
    }

    /// The limiter of `group` for `kind` at `rate` per gateway (rebuilt when
    /// the rate changed).
    fn bucket(&self, kind: QuotaKind, group: QuotaGroup, rate: f64) -> Arc<Bucket> {
        let now = self.epoch.elapsed().as_millis() as u64;
        if self.buckets.len() >= MAX_GROUPS {
            let idle = IDLE_GROUP.as_millis() as u64;
            self.buckets
                .retain(|_, b| now.saturating_sub(b.used_ms.load(Ordering::Relaxed)) < idle);
        }
        let mut entry = self
            .buckets
            .entry((kind, group))
            .or_insert_with(|| Arc::new(Bucket::new(rate)));
        if (entry.rate - rate).abs() > f64::EPSILON * rate.abs().max(1.0) {
            *entry = Arc::new(Bucket::new(rate));
        }
        entry.used_ms.store(now, Ordering::Relaxed);
        entry.clone()
    }

    /// Charges `amount` to the `kind` quota of a client, if one applies;
    /// the debt it leaves (recorded on `mute`) and its wait.
    fn charge(
        &self,
        set: &QuotaSet,
        gateways: usize,
        kind: QuotaKind,
        who: (&str, &str),
        amount: f64,
        mute: &Mute,
    ) -> Duration {
        let Some((group, rate)) = set.client(kind, who.0, who.1) else {
            return Duration::ZERO;
        };
        // request_percentage p allows p/100 s of work per second, charged
        // in microseconds: p * 10,000 per second.
        let rate = match kind {
            QuotaKind::RequestPercentage => rate * 1e4,
            _ => rate,
        };
        let share = rate / gateways.max(1) as f64;
        match self.bucket(kind, group, share).charge(amount) {
            None => Duration::ZERO,
            Some((debt, wait)) => {
                self.metrics.throttled(kind.key(), wait);
                mute.owe(debt);
                wait
            }
        }
    }

    /// Whether a new connection from `ip` fits its connection creation rate
    /// (always, when none applies).
    pub fn admit_connection(&self, set: &QuotaSet, gateways: usize, ip: &str) -> bool {
        let Some(rate) = set.ip(ip) else {
            return true;
        };
        let group = QuotaGroup {
            user: String::new(),
            client_id: ip.to_string(),
        };
        let kind = QuotaKind::ConnectionCreationRate;
        let bucket = self.bucket(kind, group, rate / gateways.max(1) as f64);
        match bucket.take(1) {
            Ok(_) => true,
            Err(wait) => {
                self.metrics.throttled(kind.key(), wait);
                false
            }
        }
    }
}

/// The debts a connection owes; it reads no request until they are paid.
#[derive(Clone, Default)]
pub struct Mute(Arc<Mutex<Vec<Debt>>>);

impl Mute {
    fn owe(&self, debt: Debt) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(debt);
    }

    /// Pays every debt owed so far (the connection is muted meanwhile).
    pub async fn served(&self) {
        loop {
            let owed = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
            if owed.is_empty() {
                return;
            }
            for debt in owed {
                debt.pay().await;
            }
        }
    }
}

/// One request's view of the quotas that apply to it.
pub struct RequestQuota<'a> {
    quotas: &'a Quotas,
    set: Arc<QuotaSet>,
    gateways: usize,
    /// The principal's name (without `User:`) and the request's client id.
    user: &'a str,
    client_id: &'a str,
    mute: &'a Mute,
    /// Throttle time of a produce request charged on arrival, in ms.
    produce_throttle_ms: std::sync::atomic::AtomicI32,
}

impl<'a> RequestQuota<'a> {
    /// The quotas of a request by `principal` with `client_id` on the
    /// connection muted by `mute`, per the cluster view's quota set.
    pub fn new(
        quotas: &'a Quotas,
        snapshot: &crate::cluster::Snapshot,
        principal: &'a str,
        client_id: &'a str,
        mute: &'a Mute,
    ) -> Self {
        Self {
            quotas,
            set: snapshot.quotas.clone(),
            gateways: snapshot.gateways,
            user: principal.strip_prefix("User:").unwrap_or(principal),
            client_id,
            mute,
            produce_throttle_ms: Default::default(),
        }
    }

    fn charge(&self, kind: QuotaKind, amount: f64) -> Duration {
        if self.set.is_empty() {
            return Duration::ZERO;
        }
        self.quotas.charge(
            &self.set,
            self.gateways,
            kind,
            (self.user, self.client_id),
            amount,
            self.mute,
        )
    }

    /// Charges a produce request of `bytes` as it arrives, before it is
    /// served: a connection that pipelines requests is muted from the first
    /// one over its quota (charging on the answer would let a deep pipeline
    /// through first).
    pub fn producing(&self, bytes: usize) {
        let ms = millis(self.charge(QuotaKind::ProducerByteRate, bytes as f64));
        self.produce_throttle_ms.store(ms, Ordering::Relaxed);
    }

    /// The throttle time of the produce request charged by
    /// [`Self::producing`], in ms.
    pub fn produce_throttle_ms(&self) -> i32 {
        self.produce_throttle_ms.load(Ordering::Relaxed)
    }

    /// Charges a fetch response of `bytes`; its throttle time in ms.
    pub fn fetched(&self, bytes: usize) -> i32 {
        millis(self.charge(QuotaKind::ConsumerByteRate, bytes as f64))
    }

    /// Whether a `request_percentage` quota applies (so the request's
    /// running time is to be measured).
    pub fn times_requests(&self) -> bool {
        self.set.sets(QuotaKind::RequestPercentage)
            && self
                .set
                .client(QuotaKind::RequestPercentage, self.user, self.client_id)
                .is_some()
    }

    /// Charges `busy`, the time the gateway spent running the request
    /// (`request_percentage`); its throttle time.
    pub fn busy(&self, busy: Duration) -> Duration {
        self.charge(QuotaKind::RequestPercentage, busy.as_secs_f64() * 1e6)
    }
}

/// Runs `fut`, measuring the time spent inside its polls: the time the
/// gateway's threads worked on it, not the time it waited.
pub async fn timed<F: std::future::Future>(fut: F) -> (F::Output, Duration) {
    let mut fut = std::pin::pin!(fut);
    let mut busy = Duration::ZERO;
    let out = std::future::poll_fn(|cx| {
        let started = Instant::now();
        let poll = fut.as_mut().poll(cx);
        busy += started.elapsed();
        poll
    })
    .await;
    (out, busy)
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cost_within_the_burst_passes_and_the_next_owes() {
        let b = Arc::new(Bucket::new(1000.0));
        assert!(b.charge(600.0).is_none());
        let (debt, wait) = b.charge(600.0).expect("over the burst");
        assert!(debt.cells > 0);
        // 200 bytes over at 1,000 B/s: at most 0.2 s.
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
    }

    #[test]
    fn a_cost_larger_than_the_burst_waits_for_all_of_it() {
        let b = Arc::new(Bucket::new(1000.0));
        let (_, wait) = b.charge(5_000.0).expect("over the burst");
        // One burst passes at once; the other 4,000 bytes take about 4 s.
        assert!(
            wait > Duration::from_secs(3) && wait <= Duration::from_secs(4),
            "{wait:?}"
        );
    }

    #[test]
    fn fast_rates_count_in_larger_cells() {
        let b = Bucket::new(10e9);
        assert!(b.unit > 1.0);
        assert!(b.burst >= 1);
        assert_eq!(Bucket::new(100.0).unit, 1.0);
    }

    #[tokio::test]
    async fn a_paid_debt_is_taken_from_the_quota() {
        let b = Arc::new(Bucket::new(100_000.0));
        assert!(b.charge(100_000.0).is_none());
        let (debt, _) = b.charge(20_000.0).expect("over");
        debt.pay().await;
        // What was paid is spent: the quota has no room left right away.
        assert!(b.charge(20_000.0).is_some());
    }
}
