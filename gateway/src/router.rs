//! Routing of partition requests to the owning workers over gRPC: the one
//! place where the gateway calls a worker.
//!
//! Guarantees:
//! - Every call goes through [`Router::call`] (one client per worker
//!   address, typed [`RouteError`]s, never strings).
//! - [`Router::fan_out`] splits parts by owner, calls each owner once per
//!   round, and accepts a worker's answer only if it answers exactly the
//!   partitions it was sent, in order; anything else is
//!   [`RouteError::Mismatched`] for every part of that call, so a short or
//!   scrambled answer can never read as success.
//! - Parts whose owner is moving (no owner yet, or NOT_LEADER_OR_FOLLOWER)
//!   are retried for up to [`RETRY_FOR`]; failed calls are retried too when
//!   the [`Retry`] policy says the operation may be repeated safely.
//! - Partitions without an owner yet are waited for briefly (a topic that
//!   was just created gets assigned within milliseconds).

use crate::cluster::{ClusterView, Snapshot};
use dashmap::DashMap;
use futures::stream::{BoxStream, StreamExt};
use kafka_protocol::error::ResponseError;
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_proto::data::http2;
use kafscale_proto::data::v1 as pb;
use kafscale_proto::data::v1::log_worker_client::LogWorkerClient;
use kafscale_proto::data::v1::log_worker_server::LogWorker;
use kafscale_proto::metadata::v1::Topic;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

/// How long a request waits for a partition to get an owner.
const ROUTE_WAIT: Duration = Duration::from_secs(3);

/// How long [`Router::fan_out`] retries parts whose owner is moving.
pub const RETRY_FOR: Duration = Duration::from_secs(5);

/// Pause between retry rounds.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// The interceptor that carries the caller's trace context to the worker.
type TraceInjector = fn(Request<()>) -> Result<Request<()>, Status>;

/// A gRPC client of a worker reached over the network.
type RemoteClient = LogWorkerClient<InterceptedService<Channel, TraceInjector>>;

/// A worker's streamed answer, however the worker was reached.
pub type AnswerStream<M> = BoxStream<'static, Result<M, Status>>;

/// A worker's data-plane service running in this process (`kafscale dev`),
/// called with the request messages as they are.
pub type LocalWorker = dyn LogWorker<
    ProduceStream = AnswerStream<pb::ProduceResponse>,
    GroupStream = AnswerStream<pb::GroupResponse>,
>;

/// A client of one worker; every call carries the current trace context.
#[derive(Clone)]
pub enum WorkerClient {
    /// gRPC over HTTP/2 to the worker's address.
    Remote(RemoteClient),
    /// The worker's service in this process: the same requests and answers,
    /// handed over as they are, with nothing encoded or decoded and no
    /// socket in between.
    Local(Arc<LocalWorker>),
}

/// `msg` as a request carrying the current trace context, as the remote
/// client's interceptor would send it.
fn traced<T>(msg: T) -> Result<Request<T>, Status> {
    let (metadata, extensions, ()) =
        kafscale_proto::trace_context::inject_current(Request::new(()))?.into_parts();
    Ok(Request::from_parts(metadata, extensions, msg))
}

/// Client methods that call a worker over gRPC or in this process alike.
macro_rules! worker_calls {
    ($($(#[$doc:meta])* $method:ident($request:ident) -> $answer:ty, $wrap:expr;)*) => {
        impl WorkerClient {
            $(
                $(#[$doc])*
                pub async fn $method(&mut self, r: pb::$request) -> Result<Response<$answer>, Status> {
                    match self {
                        WorkerClient::Remote(c) => Ok(c.$method(r).await?.map($wrap)),
                        WorkerClient::Local(w) => w.$method(traced(r)?).await,
                    }
                }
            )*
        }
    };
}

worker_calls! {
    /// Appends a produce's batches; streams "sequenced", then the result.
    produce(ProduceRequest) -> AnswerStream<pb::ProduceResponse>, StreamExt::boxed;
    /// A consumer-group request; streams "sequenced", then the result.
    group(GroupRequest) -> AnswerStream<pb::GroupResponse>, StreamExt::boxed;
    /// Reads records.
    fetch(FetchRequest) -> pb::FetchResponse, std::convert::identity;
    /// Looks up offsets by time or position.
    list_offsets(ListOffsetsRequest) -> pb::ListOffsetsResponse, std::convert::identity;
    /// Moves log start offsets forward.
    delete_records(DeleteRecordsRequest) -> pb::DeleteRecordsResponse, std::convert::identity;
    /// Reports partition sizes.
    partition_sizes(PartitionSizesRequest) -> pb::PartitionSizesResponse, std::convert::identity;
}

/// Errors talking to workers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    /// No live worker owns the partition (after a short wait).
    #[error("partition has no live owner")]
    NoOwner,
    #[error("bad worker address {0}")]
    BadAddress(String),
    #[error("worker call failed: {0}")]
    Call(#[from] tonic::Status),
    /// The worker ended a streamed answer before its result.
    #[error("worker closed the stream before answering")]
    StreamClosed,
    /// The worker's answer does not match the parts sent (count or order).
    #[error("worker answered {got} partitions for {sent} sent, or out of order")]
    Mismatched { sent: usize, got: usize },
}

impl RouteError {
    /// The Kafka error for a part its owner did not serve: the client
    /// refreshes metadata and retries (NOT_LEADER_OR_FOLLOWER).
    pub fn kafka_code(&self) -> i16 {
        ResponseError::NotLeaderOrFollower.code()
    }

    /// The Kafka error for a write (produce) that failed this way: when the
    /// worker may have applied it, REQUEST_TIMED_OUT (retriable; the outcome
    /// is unknown, as after a broker timeout), never success. A call that
    /// never reached a worker gets NOT_LEADER_OR_FOLLOWER: an idempotent
    /// producer must not take its batch for possibly persisted (librdkafka
    /// then treats a later out-of-sequence answer as fatal).
    pub fn write_code(&self) -> i16 {
        match self {
            RouteError::NoOwner | RouteError::BadAddress(_) => self.kafka_code(),
            RouteError::Call(status) if never_sent(status) => self.kafka_code(),
            _ => ResponseError::RequestTimedOut.code(),
        }
    }
}

/// Whether a failed call never reached the worker: no connection to it could
/// be made (tonic's `ConnectError` is in the status's sources), so nothing of
/// the request was sent.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Which failures [`Router::fan_out`] retries (moves are always retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Only moves: for writes, whose failed call may have been applied.
    Moves,
    /// Moves and failed calls: for reads and idempotent operations.
    MovesAndFailures,
}

/// A request part or a result that names its partition.
pub trait Routed {
    /// The partition reference it carries.
    fn partition_ref(&self) -> Option<&pb::PartitionRef>;

    /// (topic id, partition) of the reference; (nil, -1) without one.
    fn key(&self) -> (Uuid, i32) {
        match self.partition_ref() {
            Some(r) => (
                Uuid::from_slice(&r.topic_id).unwrap_or_default(),
                r.partition,
            ),
            None => (Uuid::nil(), -1),
        }
    }
}

impl Routed for pb::PartitionRef {
    fn partition_ref(&self) -> Option<&pb::PartitionRef> {
        Some(self)
    }
}

macro_rules! routed {
    ($($t:ty),*) => {$(
        impl Routed for $t {
            fn partition_ref(&self) -> Option<&pb::PartitionRef> {
                self.partition.as_ref()
            }
        }
    )*};
}

routed!(
    pb::ProducePartition,
    pb::ProducePartitionResult,
    pb::FetchPartition,
    pb::FetchPartitionResult,
    pb::ListOffsetsPartition,
    pb::ListOffsetsPartitionResult,
    pb::DeleteRecordsPartition,
    pb::DeleteRecordsPartitionResult,
    pb::PartitionSize
);

/// A worker's per-partition answer that can say "I do not own this
/// partition (any more)".
pub trait PartitionResult: Routed {
    /// The answer's Kafka error code.
    fn error_code(&self) -> i32;

    /// True for NOT_LEADER_OR_FOLLOWER.
    fn not_owner(&self) -> bool {
        self.error_code() == i32::from(ResponseError::NotLeaderOrFollower.code())
    }
}

macro_rules! partition_result {
    ($($t:ty),*) => {$(
        impl PartitionResult for $t {
            fn error_code(&self) -> i32 {
                self.error_code
            }
        }
    )*};
}

impl PartitionResult for pb::ProducePartitionResult {
    fn error_code(&self) -> i32 {
        self.error_code
    }

    /// Only parts refused before offsets: one appended and then not made
    /// durable is answered, and the client retries it in its own order.
    fn not_owner(&self) -> bool {
        self.refused_as_not_owner()
    }
}

partition_result!(
    pb::FetchPartitionResult,
    pb::ListOffsetsPartitionResult,
    pb::DeleteRecordsPartitionResult,
    pb::PartitionSize
);

/// The data-plane reference of partition `partition` of `topic`.
pub fn partition_ref(topic: &Topic, partition: i32) -> pb::PartitionRef {
    pb::PartitionRef {
        topic_id: topic_uuid(topic).as_bytes().to_vec().into(),
        topic: topic.name.clone(),
        partition,
    }
}

/// A streamed worker answer: a "sequenced" message, then the result.
pub trait Sequencing {
    /// True for the "sequenced" message.
    fn is_sequenced(&self) -> bool;
}

impl Sequencing for pb::ProduceResponse {
    fn is_sequenced(&self) -> bool {
        self.sequenced
    }
}

impl Sequencing for pb::GroupResponse {
    fn is_sequenced(&self) -> bool {
        self.sequenced
    }
}

/// Reads a streamed answer: calls `sequenced` when the worker reports the
/// request sequenced, then returns the result message. A call that fails
/// before that never reports sequenced: the caller's request then counts as
/// sequenced only when it is answered, so nothing after it can overtake it.
pub async fn streamed_answer<M: Sequencing>(
    stream: Result<Response<AnswerStream<M>>, Status>,
    sequenced: impl Fn(),
) -> Result<M, RouteError> {
    let mut stream = stream?.into_inner();
    loop {
        match stream.next().await.transpose()? {
            Some(m) if m.is_sequenced() => sequenced(),
            Some(m) => return Ok(m),
            None => return Err(RouteError::StreamClosed),
        }
    }
}

/// The per-worker call of [`Router::fan_out`] for a unary data-plane RPC
/// whose request carries the parts as `partitions` (plus the given fields)
/// and whose answer lists one result per part as `partitions`.
#[macro_export]
macro_rules! unary_parts {
    ($method:ident, $request:ident { $($field:ident: $value:expr),* $(,)? }) => {
        |mut c: $crate::router::WorkerClient, partitions| async move {
            let r = c
                .$method(kafscale_proto::data::v1::$request { partitions, $($field: $value),* })
                .await?;
            Ok(r.into_inner().partitions)
        }
    };
}

/// Connections to workers, one HTTP/2 channel per worker address.
#[derive(Clone)]
pub struct Router {
    view: ClusterView,
    /// Clients by worker address, workers in this process among them.
    clients: Arc<DashMap<String, WorkerClient>>,
    /// Set: workers are dialled over TLS (`KAFSCALE_INTERNAL_TLS_CA_FILE`).
    tls: Option<crate::auth::internal::TlsConnector>,
}

impl Router {
    /// A router over the cluster view.
    pub fn new(view: ClusterView) -> Self {
        Self {
            view,
            clients: Arc::new(DashMap::new()),
            tls: None,
        }
    }

    /// Dials workers through `tls` instead of plaintext TCP.
    pub fn with_tls(mut self, tls: crate::auth::internal::TlsConnector) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Calls the worker registered at `addr` through `worker`, its
    /// data-plane service running in this process, instead of dialling it.
    pub fn with_in_process(self, addr: &str, worker: Arc<LocalWorker>) -> Self {
        self.clients
            .insert(addr.to_string(), WorkerClient::Local(worker));
        self
    }

    /// The cluster view used for routing.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// A client for the worker at `addr`.
    fn client(&self, addr: &str) -> Result<WorkerClient, RouteError> {
        if let Some(c) = self.clients.get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| RouteError::BadAddress(addr.to_string()))?
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(http2::STREAM_WINDOW))
            .initial_connection_window_size(Some(http2::CONNECTION_WINDOW))
            .max_frame_size(Some(http2::MAX_FRAME))
            .connect_timeout(Duration::from_secs(3));
        let channel = match &self.tls {
            Some(tls) => ep.connect_with_connector_lazy(tls.clone()),
            None => ep.connect_lazy(),
        };
        let inject: TraceInjector = kafscale_proto::trace_context::inject_current;
        let c = WorkerClient::Remote(
            LogWorkerClient::with_interceptor(channel, inject)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        );
        self.clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Calls the worker at `addr` with `f`: the one call site of the
    /// data-plane API.
    pub async fn call<R, F, Fut>(&self, addr: &str, f: F) -> Result<R, RouteError>
    where
        F: FnOnce(WorkerClient) -> Fut,
        Fut: Future<Output = Result<R, RouteError>>,
    {
        let span = call_span(addr);
        let fut = span.in_scope(|| self.client(addr).map(f))?;
        fut.instrument(span).await
    }

    /// Calls the worker at `addr` with `parts` and checks that the answer
    /// holds exactly one result per part, for the same partitions in the
    /// same order ([`RouteError::Mismatched`] otherwise).
    pub async fn call_parts<P, R, F, Fut>(
        &self,
        addr: &str,
        parts: Vec<P>,
        f: F,
    ) -> Result<Vec<R>, RouteError>
    where
        P: Routed,
        R: Routed,
        F: FnOnce(WorkerClient, Vec<P>) -> Fut,
        Fut: Future<Output = Result<Vec<R>, RouteError>>,
    {
        let keys: Vec<(Uuid, i32)> = parts.iter().map(Routed::key).collect();
        let results = self.call(addr, |c| f(c, parts)).await?;
        check_answer(addr, &keys, results)
    }

    /// The address of the live worker owning `key`, if any.
    fn owner(s: &Snapshot, key: (Uuid, i32)) -> Option<String> {
        let a = s.assignments.get(&key)?;
        s.workers.get(&a.worker_id).map(|w| w.grpc_addr.clone())
    }

    /// Splits `items` by owning worker address; items whose partition has no
    /// live owner (after a short wait) come back in the second list.
    pub async fn split<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> (Uuid, i32),
    ) -> (HashMap<String, Vec<T>>, Vec<T>) {
        let mut snap = self.view.snapshot();
        if items.iter().any(|i| Self::owner(&snap, key(i)).is_none()) {
            let keys: Vec<_> = items.iter().map(&key).collect();
            snap = self
                .view
                .wait_for(ROUTE_WAIT, |s| {
                    keys.iter()
                        .all(|k| Self::owner(s, *k).is_some() || !s.topic_names.contains_key(&k.0))
                })
                .await;
        }
        let mut routed: HashMap<String, Vec<T>> = HashMap::new();
        let mut unroutable = Vec::new();
        for i in items {
            match Self::owner(&snap, key(&i)) {
                Some(addr) => routed.entry(addr).or_default().push(i),
                None => unroutable.push(i),
            }
        }
        (routed, unroutable)
    }

    /// The owner of one partition (after a short wait), or
    /// [`RouteError::NoOwner`].
    pub async fn owner_of(&self, part: &impl Routed) -> Result<String, RouteError> {
        let (routed, _) = self.split(vec![part.key()], |k| *k).await;
        routed.into_keys().next().ok_or(RouteError::NoOwner)
    }

    /// Sends each owning worker its share of `parts` with `call`, all
    /// workers concurrently, and returns every part's result in input
    /// order. Within a round, `call` is invoked for every worker before any
    /// call is awaited. Parts whose owner is moving (no owner, or answering
    /// NOT_LEADER_OR_FOLLOWER) are retried for up to [`RETRY_FOR`], and so
    /// are failed calls under [`Retry::MovesAndFailures`], so a client sees
    /// a retriable error only if the move takes longer.
    pub async fn fan_out<S, P, R, F, Fut>(
        &self,
        parts: Vec<(S, P)>,
        retry: Retry,
        call: F,
    ) -> Vec<(S, Result<R, RouteError>)>
    where
        P: Routed + Clone,
        R: PartitionResult,
        F: Fn(WorkerClient, Vec<P>) -> Fut,
        Fut: Future<Output = Result<Vec<R>, RouteError>>,
    {
        let (slots, parts): (Vec<S>, Vec<P>) = parts.into_iter().unzip();
        let mut out: Vec<Result<R, RouteError>> =
            (0..parts.len()).map(|_| Err(RouteError::NoOwner)).collect();
        let mut pending: Vec<(usize, P)> = parts.into_iter().enumerate().collect();
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            let results = self.fan_out_once(pending.clone(), &call).await;
            let mut again = Vec::new();
            for ((i, r), (_, p)) in results.into_iter().zip(pending) {
                let retriable = match &r {
                    Ok(r) => r.not_owner(),
                    Err(RouteError::NoOwner) => true,
                    Err(_) => retry == Retry::MovesAndFailures,
                };
                out[i] = r;
                if retriable {
                    again.push((i, p));
                }
            }
            if again.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            pending = again;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        slots.into_iter().zip(out).collect()
    }

    /// One round of [`Self::fan_out`].
    async fn fan_out_once<S, P, R, F, Fut>(
        &self,
        parts: Vec<(S, P)>,
        call: &F,
    ) -> Vec<(S, Result<R, RouteError>)>
    where
        P: Routed,
        R: Routed,
        F: Fn(WorkerClient, Vec<P>) -> Fut,
        Fut: Future<Output = Result<Vec<R>, RouteError>>,
    {
        let indexed: Vec<(usize, (S, P))> = parts.into_iter().enumerate().collect();
        let n = indexed.len();
        let (routed, unroutable) = self.split(indexed, |(_, (_, p))| p.key()).await;
        let mut out: Vec<Option<(S, Result<R, RouteError>)>> = (0..n).map(|_| None).collect();
        for (i, (slot, _)) in unroutable {
            out[i] = Some((slot, Err(RouteError::NoOwner)));
        }
        let calls: Vec<_> = routed
            .into_iter()
            .map(|(addr, group)| {
                let (ids, pairs): (Vec<usize>, Vec<(S, P)>) = group.into_iter().unzip();
                let (slots, ps): (Vec<S>, Vec<P>) = pairs.into_iter().unzip();
                let keys: Vec<(Uuid, i32)> = ps.iter().map(Routed::key).collect();
                // Invoked now, for every worker, before anything is awaited.
                let span = call_span(&addr);
                let fut = span.in_scope(|| self.client(&addr).map(|c| call(c, ps)));
                async move {
                    let result = match fut {
                        Ok(f) => f.await.and_then(|rs| check_answer(&addr, &keys, rs)),
                        Err(e) => Err(e),
                    };
                    (ids, slots, result)
                }
                .instrument(span)
            })
            .collect();
        for (ids, slots, result) in futures::future::join_all(calls).await {
            match result {
                Ok(results) => {
                    for ((i, slot), r) in ids.into_iter().zip(slots).zip(results) {
                        out[i] = Some((slot, Ok(r)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "worker call failed");
                    for (i, slot) in ids.into_iter().zip(slots) {
                        out[i] = Some((slot, Err(e.clone())));
                    }
                }
            }
        }
        out.into_iter().flatten().collect()
    }
}

/// The trace span of one call to the worker at `addr`; the call carries
/// its context to the worker.
fn call_span(addr: &str) -> tracing::Span {
    tracing::info_span!(
        target: kafscale_proto::trace_context::TRACE_TARGET,
        "worker.call",
        otel.kind = "client",
        rpc.system = "grpc",
        server.address = addr,
    )
}

/// Checks a worker's answer against the keys of the parts sent.
fn check_answer<R: Routed>(
    addr: &str,
    keys: &[(Uuid, i32)],
    results: Vec<R>,
) -> Result<Vec<R>, RouteError> {
    let matches = results.len() == keys.len()
        && results
            .iter()
            .zip(keys)
            .all(|(r, k)| r.partition_ref().is_none() || r.key() == *k);
    if matches {
        return Ok(results);
    }
    tracing::error!(
        worker = addr,
        sent = keys.len(),
        got = results.len(),
        "worker answer does not match the request"
    );
    Err(RouteError::Mismatched {
        sent: keys.len(),
        got: results.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeCluster, ShortAnswers};

    #[test]
    fn only_a_call_that_never_reached_a_worker_is_answered_as_not_applied() {
        use std::io::{Error, ErrorKind};
        let refused = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(
            Error::from(ErrorKind::ConnectionRefused),
        ))));
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert_eq!(
            RouteError::Call(refused).write_code(),
            ResponseError::NotLeaderOrFollower.code()
        );
        // Unavailable after the request may have gone out (a reset, a
        // keep-alive timeout) or any other failure: the outcome is unknown.
        let reset = tonic::Status::from_error(Box::new(Error::from(ErrorKind::ConnectionReset)));
        for e in [
            RouteError::Call(reset),
            RouteError::Call(tonic::Status::unavailable("worker says so")),
            RouteError::Call(tonic::Status::cancelled("connection closed")),
            RouteError::StreamClosed,
        ] {
            assert_eq!(e.write_code(), ResponseError::RequestTimedOut.code(), "{e}");
        }
    }

    /// Regression (nemesis: idempotent producers failed with "sequence
    /// desynchronization"): a produce part that was appended and then not
    /// made durable must reach the client, which retries in order; retried
    /// here it could land behind the connection's later requests.
    #[test]
    fn an_appended_produce_part_is_not_retried_here() {
        let not_leader = i32::from(ResponseError::NotLeaderOrFollower.code());
        let refused = pb::ProducePartitionResult {
            error_code: not_leader,
            ..Default::default()
        };
        assert!(
            refused.not_owner(),
            "refused before offsets: retried at the owner"
        );
        let appended = pb::ProducePartitionResult {
            error_code: not_leader,
            appended: true,
            ..Default::default()
        };
        assert!(!appended.not_owner(), "appended, then failed: answered");
    }

    fn list_part(topic: &Topic, p: i32) -> pb::ListOffsetsPartition {
        pb::ListOffsetsPartition {
            partition: Some(partition_ref(topic, p)),
            timestamp: -1,
        }
    }

    #[tokio::test]
    async fn a_short_answer_fails_every_part_of_the_call() {
        let c = FakeCluster::start(ShortAnswers, 3).await;
        let parts: Vec<_> = (0..3).map(|p| (p, list_part(&c.topic, p))).collect();
        let call = crate::unary_parts!(list_offsets, ListOffsetsRequest { isolation_level: 0 });
        let results = c.router.fan_out(parts, Retry::Moves, call).await;
        assert_eq!(results.len(), 3);
        for (p, r) in results {
            match r {
                Err(RouteError::Mismatched { sent: 3, got: 2 }) => {}
                other => panic!("partition {p}: expected a mismatch, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn call_parts_checks_the_answer_against_the_request() {
        let c = FakeCluster::start(ShortAnswers, 2).await;
        let addr = c
            .router
            .owner_of(&partition_ref(&c.topic, 0))
            .await
            .expect("owner");
        let parts: Vec<_> = (0..2).map(|p| list_part(&c.topic, p)).collect();
        let call = crate::unary_parts!(list_offsets, ListOffsetsRequest { isolation_level: 0 });
        let r = c.router.call_parts(&addr, parts, call).await;
        assert!(matches!(r, Err(RouteError::Mismatched { sent: 2, got: 1 })));
    }
}
