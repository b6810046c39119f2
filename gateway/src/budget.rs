//! Byte budgets: what one connection and the whole gateway may hold in
//! memory for requests read and responses not yet written.
//!
//! A request frame's bytes are taken whole from both budgets before they are
//! read ([`Budgets::take_frame`]), so a spent budget stops the reading of
//! sockets (TCP backpressure) instead of growing memory. A response whose
//! size the client chooses (a fetch's `max_bytes`) is reserved before it is
//! produced ([`RequestBudget::reserve_response`]): from the connection's
//! budget in full, waiting if needed (a client that does not read its answers
//! stops itself), and from the gateway's budget only as far as it has room,
//! never waiting, so clients that hold the gateway's budget cannot stall the
//! others; the response is then made to fit what was granted. Everything is
//! given back once the response is written.

use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The smallest response reservation, granted even when the gateway's
/// budget is spent (a fetch answers at least one batch anyway).
pub const MIN_RESPONSE_BYTES: usize = 64 << 10;

/// The least a request frame is charged, however small: a request in
/// progress also holds its task and its decoded form. So the budgets bound
/// memory however many small requests a connection pipelines (a produce
/// waits for its WAL flush, up to the flush ceiling).
pub const MIN_FRAME_CHARGE: usize = 4 << 10;

/// One connection's budget and the gateway's.
#[derive(Clone)]
pub struct Budgets {
    connection: Arc<Semaphore>,
    connection_bytes: usize,
    gateway: Arc<Semaphore>,
    /// One response at a time per connection may go beyond the gateway's
    /// budget (by at most [`MIN_RESPONSE_BYTES`]).
    beyond_gateway: Arc<Semaphore>,
}

/// Permits held until a request's response is written.
#[derive(Default)]
pub struct Held {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// Semaphores count `u32` permits at a time and at most `MAX_PERMITS`.
fn permits(n: usize) -> u32 {
    u32::try_from(n.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX)
}

impl Budgets {
    /// The gateway-wide budget of `bytes`, shared by every connection.
    pub fn gateway(bytes: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)))
    }

    /// A new connection's budget of `bytes`, drawing also on `gateway`.
    pub fn connection(bytes: usize, gateway: Arc<Semaphore>) -> Self {
        let bytes = bytes.min(Semaphore::MAX_PERMITS);
        Self {
            connection: Arc::new(Semaphore::new(bytes)),
            connection_bytes: bytes,
            gateway,
            beyond_gateway: Arc::new(Semaphore::new(1)),
        }
    }

    /// `len` bytes (at least [`MIN_FRAME_CHARGE`], at most the connection's
    /// budget) from the connection's budget, then from the gateway's, each
    /// taken whole (no two connections can hold parts of a budget and wait
    /// for each other); `None` if `len` is larger than the connection's
    /// budget.
    pub async fn take_frame(&self, len: usize) -> Option<Held> {
        if len > self.connection_bytes {
            return None;
        }
        let n = u32::try_from(len.max(MIN_FRAME_CHARGE).min(self.connection_bytes)).ok()?;
        let c = self.connection.clone().acquire_many_owned(n).await.ok()?;
        let g = self.gateway.clone().acquire_many_owned(n).await.ok()?;
        Some(Held {
            _permits: vec![c, g],
        })
    }
}

/// Room reserved for one response, given back once it is written.
pub struct ResponseRoom {
    bytes: usize,
    connection: Option<OwnedSemaphorePermit>,
    gateway: Option<OwnedSemaphorePermit>,
    _beyond_gateway: Option<OwnedSemaphorePermit>,
}

impl ResponseRoom {
    /// Keeps at most `want` bytes of the room (giving the rest back now)
    /// and returns how many bytes the response may have.
    pub fn trim(&mut self, want: usize) -> usize {
        if want < self.bytes {
            for p in [&mut self.connection, &mut self.gateway]
                .into_iter()
                .flatten()
            {
                let n = p.num_permits();
                if n > want {
                    drop(p.split(n - want));
                }
            }
            self.bytes = want;
        }
        self.bytes
    }
}

impl Budgets {
    /// Reserves room for a response of up to `want` bytes, at most half the
    /// connection's budget and at least `min(want, MIN_RESPONSE_BYTES)`.
    /// Waits for the connection's budget; takes from the gateway's what it
    /// has free, and when that is less than the floor, takes the floor
    /// beyond it, one response per connection at a time. So a gateway holds
    /// at most its budget plus `MIN_RESPONSE_BYTES` per connection.
    ///
    /// Must be called in request order (by the connection's reader): the
    /// waits are for room held by earlier requests, which their answers,
    /// written first, give back.
    pub async fn take_response(&self, want: usize) -> ResponseRoom {
        let want = want.min(self.connection_bytes / 2).max(1);
        let floor = want.min(MIN_RESPONSE_BYTES);
        let mut connection = self
            .connection
            .clone()
            .acquire_many_owned(permits(want))
            .await
            .ok();
        let free = permits(self.gateway.available_permits()).min(permits(want));
        let gateway = (free as usize >= floor)
            .then(|| self.gateway.clone().try_acquire_many_owned(free).ok())
            .flatten();
        let (bytes, beyond) = match gateway {
            Some(_) => (free as usize, None),
            None => (
                floor,
                self.beyond_gateway.clone().acquire_owned().await.ok(),
            ),
        };
        // The connection keeps only what the response may use.
        if let Some(c) = connection.as_mut() {
            if c.num_permits() > bytes {
                drop(c.split(c.num_permits() - bytes));
            }
        }
        ResponseRoom {
            bytes,
            connection,
            gateway,
            _beyond_gateway: beyond,
        }
    }
}

/// One request's share of the budgets, alive until its response is written.
pub struct RequestBudget {
    _frame: Held,
    response: Mutex<Option<ResponseRoom>>,
}

impl RequestBudget {
    /// A request's budget: its frame's bytes and, for a response whose size
    /// the client chooses, the room reserved for it.
    pub fn new(frame: Held, response: Option<ResponseRoom>) -> Self {
        Self {
            _frame: frame,
            response: Mutex::new(response),
        }
    }

    /// A request dispatched without budgets (tests that call the dispatcher
    /// directly): its response is not limited.
    pub fn unlimited() -> Self {
        Self::new(Held::default(), None)
    }

    /// How many bytes the response may have, at most `want`; room reserved
    /// beyond that is given back now.
    pub fn response_bytes(&self, want: usize) -> usize {
        let mut room = self.response.lock().unwrap_or_else(|p| p.into_inner());
        room.as_mut().map_or(want, |r| r.trim(want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: usize = 1 << 20;

    /// Asserts that `fut` is still waiting 50 ms later.
    async fn assert_waits<F: std::future::Future + Unpin>(fut: &mut F, why: &str) {
        let waited = tokio::time::timeout(Duration::from_millis(50), fut).await;
        assert!(waited.is_err(), "{why}");
    }

    fn budgets(connection: usize, gateway: usize) -> Budgets {
        Budgets::connection(connection, Budgets::gateway(gateway))
    }

    #[tokio::test]
    async fn a_response_gets_what_the_gateway_has_free_and_never_waits_for_it() {
        let b = budgets(200 * MIB, 40 * MIB);
        let r = b.take_response(30 * MIB).await;
        assert_eq!(r.bytes, 30 * MIB);
        assert_eq!(b.gateway.available_permits(), 10 * MIB);
        // The gateway has 10 MiB left: a response that wants 50 gets 10.
        let r2 = b.take_response(50 * MIB).await;
        assert_eq!(r2.bytes, 10 * MIB);
        assert_eq!(b.gateway.available_permits(), 0);
        assert_eq!(b.connection.available_permits(), 160 * MIB);
        // With the gateway's spent, the floor.
        let r3 = b.take_response(1000 * MIB).await;
        assert_eq!(r3.bytes, MIN_RESPONSE_BYTES);
        drop((r, r2, r3));
        assert_eq!(b.gateway.available_permits(), 40 * MIB);
        assert_eq!(b.connection.available_permits(), 200 * MIB);
        // Never more than half the connection's budget.
        let big = budgets(200 * MIB, 1000 * MIB);
        assert_eq!(big.take_response(1000 * MIB).await.bytes, 100 * MIB);
    }

    #[tokio::test]
    async fn trimming_gives_the_rest_back_at_once() {
        let b = budgets(200 * MIB, 100 * MIB);
        let request = RequestBudget::new(Held::default(), Some(b.take_response(80 * MIB).await));
        assert_eq!(request.response_bytes(MIB), MIB);
        assert_eq!(b.gateway.available_permits(), 99 * MIB);
        assert_eq!(b.connection.available_permits(), 199 * MIB);
        // Never grows back.
        assert_eq!(request.response_bytes(50 * MIB), MIB);
        drop(request);
        assert_eq!(b.gateway.available_permits(), 100 * MIB);
        assert_eq!(RequestBudget::unlimited().response_bytes(7), 7);
    }

    #[tokio::test]
    async fn a_spent_gateway_grants_the_floor_to_one_response_per_connection() {
        let b = budgets(4 * MIB, 0);
        let first = b.take_response(MIB).await;
        assert_eq!(first.bytes, MIN_RESPONSE_BYTES);
        let second = b.take_response(100);
        tokio::pin!(second);
        assert_waits(
            &mut second,
            "a second response beyond the gateway's budget waits",
        )
        .await;
        drop(first);
        assert_eq!(second.await.bytes, 100);
        // Another connection has its own.
        let other = Budgets::connection(4 * MIB, b.gateway.clone());
        assert_eq!(other.take_response(MIB).await.bytes, MIN_RESPONSE_BYTES);
    }

    #[tokio::test]
    async fn responses_wait_for_the_connection_budget() {
        let b = budgets(100 * MIB, 1000 * MIB);
        let first = b.take_response(50 * MIB).await;
        let _frame = b.take_frame(30 * MIB).await.expect("fits");
        let second = b.take_response(50 * MIB);
        tokio::pin!(second);
        assert_waits(
            &mut second,
            "the connection's budget is spent: the reservation waits",
        )
        .await;
        drop(first);
        assert_eq!(second.await.bytes, 50 * MIB);
    }

    #[tokio::test]
    async fn frames_are_taken_whole_from_both_budgets() {
        let b = budgets(100, 150);
        let a = b.take_frame(100).await.expect("fits");
        assert_eq!(b.gateway.available_permits(), 50);
        assert!(
            b.take_frame(101).await.is_none(),
            "larger than the connection's budget"
        );
        drop(a);
        assert_eq!(b.connection.available_permits(), 100);
        assert_eq!(b.gateway.available_permits(), 150);
    }

    #[tokio::test]
    async fn a_small_frame_is_charged_what_a_request_in_progress_holds() {
        let b = budgets(MIB, 4 * MIB);
        let _small = b.take_frame(10).await.expect("fits");
        assert_eq!(b.connection.available_permits(), MIB - MIN_FRAME_CHARGE);
        assert_eq!(b.gateway.available_permits(), 4 * MIB - MIN_FRAME_CHARGE);
        // A connection pipelining tiny requests runs out of budget at
        // MIB / MIN_FRAME_CHARGE of them, and then stops being read.
        let mut held = Vec::new();
        for _ in 1..MIB / MIN_FRAME_CHARGE {
            held.push(b.take_frame(10).await.expect("fits"));
        }
        let next = b.take_frame(10);
        tokio::pin!(next);
        assert_waits(
            &mut next,
            "the connection's budget is spent: the next frame waits",
        )
        .await;
        held.pop();
        assert!(next.await.is_some());
    }
}
