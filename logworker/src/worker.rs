//! The log worker's data plane: appends produced batches through the WAL
//! writer, answers produce only after durability, serves fetches with long
//! polling on high-watermark notifications, list-offsets, delete-records and
//! sizes, and passes group requests to the coordinator. Which partitions it
//! serves is decided in `ownership`.

use crate::batch;
use crate::cache::TailCache;
use crate::completion::{wait_durable, Completion};
use crate::groups::group::GroupConfig;
use crate::groups::GroupCoordinator;
use crate::metrics::Metrics;
use crate::objstore::ObjectStore;
use crate::partition::{PartitionId, PartitionLog};
use crate::producers::Verdict;
use crate::reader;
use crate::recovery::StreamCatalog;
use crate::wal::writer::{WalConfig, WalWriter};
use dashmap::DashMap;
use kafka_protocol::error::ResponseError;
use kafscale_controlplane::metadata::now_ms;
use kafscale_controlplane::{MetaError, Metadata};
use kafscale_proto::data::v1 as pb;
use kafscale_proto::metadata::v1::{Topic, WorkerRegistration};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Partition reads of one fetch that run at once.
const FETCH_READS: usize = 8;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub worker_id: String,
    pub namespace: String,
    pub grpc_advertised_addr: String,
    /// When the WAL buffer is flushed.
    pub flush: crate::wal::policy::FlushSettings,
    pub max_inflight_puts: usize,
    pub cache_bytes: usize,
    pub default_max_message_bytes: usize,
    /// Group coordinator settings.
    pub groups: GroupConfig,
    /// How often owned partitions are checked for compaction and retention.
    pub compaction_interval: Duration,
    /// Bytes of segment blocks kept in memory for reads below the tail.
    pub segment_cache_bytes: usize,
    /// Broker-wide segment and retention defaults.
    pub log_defaults: kafscale_controlplane::log_policy::LogDefaults,
}

/// Errors starting a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Recovery(#[from] crate::recovery::RecoveryError),
    #[error(transparent)]
    Groups(#[from] crate::groups::GroupLogError),
    #[error(transparent)]
    Read(#[from] crate::reader::ReadError),
    #[error(transparent)]
    Segment(#[from] crate::segment::SegmentError),
}

/// A running log worker.
pub struct Worker {
    pub(crate) cfg: WorkerConfig,
    pub(crate) meta: Metadata,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) wal: Arc<WalWriter>,
    pub(crate) metrics: Metrics,
    /// Where log bytes are read from (store, caches).
    pub(crate) source: reader::Source,
    pub(crate) partitions: DashMap<PartitionId, Arc<PartitionLog>>,
    pub(crate) topics: DashMap<Uuid, Topic>,
    /// Partition count by topic name (for checks by name, e.g. commits).
    pub(crate) topic_partitions: DashMap<String, i32>,
    pub(crate) catalog: StreamCatalog,
    pub(crate) groups: Arc<GroupCoordinator>,
    /// Partitions whose handover is still draining.
    pub(crate) handovers: DashMap<PartitionId, ()>,
    /// Partitions being opened (each in its own task).
    pub(crate) opening: DashMap<PartitionId, ()>,
    /// Wakes the ownership loop when an open finishes.
    pub(crate) opened: tokio::sync::Notify,
    /// Set by `drain` and by a drain on request: no partition is opened.
    pub(crate) draining: std::sync::atomic::AtomicBool,
    pub(crate) ready: watch::Sender<bool>,
    /// This worker's registration as last written (under `lease`); held
    /// while it is rewritten, so two updates never undo each other.
    pub(crate) registration: tokio::sync::Mutex<WorkerRegistration>,
    pub(crate) lease: Option<i64>,
}

fn code(e: ResponseError) -> i32 {
    i32::from(e.code())
}

fn pid(p: &Option<pb::PartitionRef>) -> Option<PartitionId> {
    let p = p.as_ref()?;
    Some(PartitionId {
        topic_id: Uuid::from_slice(&p.topic_id).ok()?,
        partition: p.partition,
    })
}

impl Worker {
    /// Starts a worker: takes a fresh stream epoch, registers, starts the WAL
    /// writer and the ownership loop. Ready once assigned partitions are open.
    pub async fn start(
        cfg: WorkerConfig,
        meta: Metadata,
        store: Arc<dyn ObjectStore>,
        lease: Option<i64>,
        registry: &prometheus::Registry,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), WorkerError> {
        let metrics = Metrics::new(registry).map_err(|e| MetaError::Invalid(e.to_string()))?;
        let stream_epoch = meta.next_stream_epoch(&cfg.worker_id).await?;
        let cache = Arc::new(TailCache::new(cfg.cache_bytes));
        let wal = WalWriter::new(
            WalConfig {
                namespace: cfg.namespace.clone(),
                worker_id: cfg.worker_id.clone(),
                stream_epoch,
                flush: cfg.flush,
                max_inflight: cfg.max_inflight_puts,
                put_deadline: Duration::from_secs(30),
                // A third of the deadline: far beyond a healthy PUT (well
                // under a second), soon enough that clients see a
                // retriable error before their own 30 s request timeout.
                stall_limit: Duration::from_secs(10),
            },
            store.clone(),
            cache,
            metrics.clone(),
        );
        let source = reader::Source {
            store: store.clone(),
            metrics: metrics.clone(),
            blocks: Arc::new(crate::segment::blocks::BlockCache::new(
                cfg.segment_cache_bytes,
            )),
        };
        let groups = GroupCoordinator::new(cfg.groups.clone(), wal.clone(), source.clone());
        let registration = WorkerRegistration {
            worker_id: cfg.worker_id.clone(),
            grpc_addr: cfg.grpc_advertised_addr.clone(),
            started_at_ms: now_ms(),
            stream_epoch,
            ..Default::default()
        };
        meta.register_worker(&registration, lease).await?;
        let worker = Arc::new(Self {
            cfg: cfg.clone(),
            meta: meta.clone(),
            store,
            wal: wal.clone(),
            metrics,
            source,
            partitions: DashMap::new(),
            topics: DashMap::new(),
            topic_partitions: DashMap::new(),
            catalog: StreamCatalog::default(),
            groups: groups.clone(),
            handovers: DashMap::new(),
            opening: DashMap::new(),
            opened: tokio::sync::Notify::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            ready: watch::channel(false).0,
            registration: tokio::sync::Mutex::new(registration),
            lease,
        });
        registry
            .register(Box::new(crate::offset_metrics::OffsetMetrics::new(
                Arc::downgrade(&worker),
            )))
            .map_err(|e| MetaError::Invalid(e.to_string()))?;
        let flusher = tokio::spawn(wal.run(shutdown.clone()));
        tokio::spawn(groups.run_timers(shutdown.clone()));
        tokio::spawn(worker.clone().compaction_loop(shutdown.clone()));
        tokio::spawn(worker.clone().report_load_loop(shutdown.clone()));
        tokio::spawn(worker.clone().ownership_loop(shutdown));
        Ok((worker, flusher))
    }

    /// The garbage collector of this worker's namespace, running a round
    /// every [`crate::gc::interval`] until `stop`. Exactly one process of a
    /// cluster may run it at a time.
    pub fn run_gc(
        &self,
        stop: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::gc::Collector::new(
            self.store.clone(),
            self.meta.clone(),
            &self.cfg.namespace,
            &self.cfg.worker_id,
        )
        .run(crate::gc::interval(self.cfg.compaction_interval), stop)
    }

    /// True once a new owner sealed this worker's stream: it can acknowledge
    /// nothing more and must be restarted (with a fresh stream epoch).
    pub fn is_fenced(&self) -> bool {
        self.wal.is_fenced()
    }

    /// Rewrites this worker's registration with `change` applied.
    pub(crate) async fn update_registration(
        &self,
        change: impl FnOnce(&mut WorkerRegistration),
    ) -> Result<(), MetaError> {
        let mut reg = self.registration.lock().await;
        let mut next = reg.clone();
        change(&mut next);
        self.meta.register_worker(&next, self.lease).await?;
        *reg = next;
        Ok(())
    }

    /// The ingest rate this worker's registration says, bytes per second.
    pub(crate) async fn published_rate(&self) -> u64 {
        self.registration.lock().await.ingest_bytes_per_sec
    }

    /// Bytes produced to this worker since it started.
    pub(crate) fn produced_bytes(&self) -> u64 {
        self.metrics.produced_bytes.get()
    }

    /// Becomes true once the partitions assigned at start are open.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// The owned log a request names, or the Kafka error code to answer with.
    pub(crate) fn owned(&self, p: &Option<pb::PartitionRef>) -> Result<Arc<PartitionLog>, i32> {
        let id = pid(p).ok_or(code(ResponseError::UnknownTopicOrPartition))?;
        self.partitions
            .get(&id)
            .map(|l| l.clone())
            .ok_or_else(|| self.unknown_code(&id))
    }

    /// The error for a partition this worker does not serve. The gateway
    /// routes only partitions that exist to the owner it sees in the
    /// assignments, so a topic this worker has not learned yet (its watch
    /// lags the assignment) is "not the owner yet", which the gateway
    /// retries, not an unknown topic.
    fn unknown_code(&self, id: &PartitionId) -> i32 {
        match self.topics.get(&id.topic_id) {
            Some(t) if id.partition >= t.partitions => code(ResponseError::UnknownTopicOrPartition),
            _ if id.partition < 0 => code(ResponseError::UnknownTopicOrPartition),
            _ => code(ResponseError::NotLeaderOrFollower),
        }
    }

    fn max_message_bytes(&self, id: &PartitionId) -> usize {
        self.topics
            .get(&id.topic_id)
            .and_then(|t| {
                t.configs
                    .get("max.message.bytes")
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(self.cfg.default_max_message_bytes)
    }

    /// Validates and appends every batch (offsets are assigned when this
    /// returns); the returned pending produce resolves once durable.
    pub fn produce_append(&self, req: pb::ProduceRequest) -> PendingProduce {
        let deadline = durability_deadline(req.timeout_ms);
        let mut results = Vec::with_capacity(req.partitions.len());
        let mut waits = Vec::new();
        for part in req.partitions {
            let mut r = pb::ProducePartitionResult {
                partition: part.partition.clone(),
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
                ..Default::default()
            };
            let log = match self.owned(&part.partition) {
                Ok(log) => log,
                Err(c) => {
                    r.error_code = c;
                    results.push(r);
                    continue;
                }
            };
            r.log_start_offset = log.log_start_offset();
            let checked = step_span("validate", &log.id, part.records.len()).in_scope(|| {
                batch::validate(&part.records, self.max_message_bytes(&log.id)).and_then(|infos| {
                    if self.log_policy(&log).compact {
                        batch::require_keys(&part.records, &infos)?;
                    }
                    Ok(infos)
                })
            });
            let _sequence = step_span("sequence", &log.id, part.records.len()).entered();
            match checked {
                Err(e) => {
                    r.error_code = i32::from(e.code());
                    r.error_message = e.to_string();
                }
                Ok(infos) if infos.iter().any(|b| b.producer_id >= 0) => {
                    match self.append_idempotent(&log, &part.records, &infos) {
                        Ok((base, dones)) => {
                            r.base_offset = base;
                            r.appended = true;
                            waits.extend(dones.into_iter().map(|d| (results.len(), d)));
                        }
                        Err(code) => r.error_code = code,
                    }
                }
                Ok(infos) => match self.wal.append(&log, &part.records, &infos) {
                    Ok((base, done)) => {
                        self.count_produced(&infos, part.records.len());
                        r.base_offset = base;
                        r.appended = true;
                        waits.push((results.len(), done));
                    }
                    Err(e) => {
                        r.error_code = i32::from(e.kafka_code());
                        r.error_message = e.to_string();
                    }
                },
            }
            results.push(r);
        }
        PendingProduce {
            acks: req.acks,
            results,
            waits,
            deadline,
        }
    }

    fn count_produced(&self, infos: &[batch::BatchInfo], bytes: usize) {
        self.metrics
            .produced_records
            .inc_by(infos.iter().map(|b| b.record_count as u64).sum());
        self.metrics.produced_bytes.inc_by(bytes as u64);
    }

    /// Appends the batches of idempotent producers one by one: retries of
    /// remembered batches are answered with their original offsets instead
    /// of being appended again (see `producers`). Returns the first batch's
    /// offset and the completions to wait for, or the partition's error code.
    fn append_idempotent(
        &self,
        log: &Arc<PartitionLog>,
        records: &[u8],
        infos: &[batch::BatchInfo],
    ) -> Result<(i64, Vec<Completion>), i32> {
        let mut states = log.producers();
        let mut first = None;
        let mut dones = Vec::with_capacity(infos.len());
        for info in infos {
            let (base, done) = match states.check(info) {
                Verdict::Refuse(code) => return Err(i32::from(code)),
                Verdict::Duplicate { base_offset, done } => (base_offset, done),
                Verdict::Append => {
                    let bytes = &records[info.position..info.position + info.size];
                    let one = batch::BatchInfo {
                        position: 0,
                        ..*info
                    };
                    let (base, done) = self
                        .wal
                        .append(log, bytes, std::slice::from_ref(&one))
                        .map_err(|e| i32::from(e.kafka_code()))?;
                    self.count_produced(std::slice::from_ref(info), info.size);
                    if info.producer_id >= 0 {
                        states.record(info, base, done.clone());
                    }
                    (base, done)
                }
            };
            first.get_or_insert(base);
            dones.push(done);
        }
        Ok((first.unwrap_or(-1), dones))
    }

    /// Appends and (for acks ≠ 0) waits until durable.
    pub async fn produce(&self, req: pb::ProduceRequest) -> pb::ProduceResponse {
        self.produce_append(req).finish().await
    }

    /// Serves a fetch, long-polling up to `max_wait_ms` for `min_bytes`.
    pub async fn fetch(&self, req: pb::FetchRequest) -> pb::FetchResponse {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
        let mut watchers: Vec<watch::Receiver<i64>> = req
            .partitions
            .iter()
            .filter_map(|p| pid(&p.partition))
            .filter_map(|id| self.partitions.get(&id).map(|l| l.subscribe()))
            .collect();
        for w in &mut watchers {
            w.mark_unchanged();
        }
        loop {
            let (resp, bytes, errors) = self.fetch_once(&req).await;
            if bytes >= req.min_bytes.max(1) as usize
                || errors
                || tokio::time::Instant::now() >= deadline
                || watchers.is_empty()
            {
                return resp;
            }
            let changed =
                futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn fetch_once(&self, req: &pb::FetchRequest) -> (pb::FetchResponse, usize, bool) {
        let mut errors = false;
        let max_total = if req.max_bytes > 0 {
            req.max_bytes as usize
        } else {
            usize::MAX
        };
        let mut out = Vec::with_capacity(req.partitions.len());
        // (index in `out`, log, fetch offset, partition limit) of each read.
        let mut to_read = Vec::new();
        for p in &req.partitions {
            let mut r = pb::FetchPartitionResult {
                partition: p.partition.clone(),
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                ..Default::default()
            };
            let log = match self.owned(&p.partition) {
                Ok(log) => log,
                Err(c) => {
                    r.error_code = c;
                    errors = true;
                    out.push(r);
                    continue;
                }
            };
            let hwm = log.high_watermark();
            let start = log.log_start_offset();
            r.high_watermark = hwm;
            r.last_stable_offset = hwm;
            r.log_start_offset = start;
            if p.fetch_offset < start || p.fetch_offset > hwm {
                r.error_code = code(ResponseError::OffsetOutOfRange);
                errors = true;
            } else if p.fetch_offset < hwm {
                let limit = p.max_bytes.max(0) as usize;
                to_read.push((out.len(), log, p.fetch_offset, limit));
            }
            out.push(r);
        }
        // Partitions are read concurrently (a cold read waits for storage
        // once per window rather than once per partition), in windows of at
        // most FETCH_READS partitions whose limits together fit the bytes
        // left in the request's budget, so a fetch never holds much more than
        // its budget; the budget is then applied in request order, with
        // KIP-74's oversized first batch for the first non-empty partition
        // only.
        let source = &self.source;
        let mut total = 0usize;
        let mut pending = to_read.into_iter();
        while total < max_total {
            let room = max_total - total;
            let n = reader::read_window(
                pending.as_slice().iter().map(|(_, _, _, limit)| *limit),
                room,
                FETCH_READS,
            );
            if n == 0 {
                break;
            }
            let reads = pending
                .by_ref()
                .take(n)
                .map(|(i, log, offset, limit)| async move {
                    let res = reader::read(source, &log, offset, limit.min(room), true).await;
                    (i, log, limit, res)
                });
            for (i, log, limit, res) in futures::future::join_all(reads).await {
                match res {
                    Ok(records) if total < max_total => {
                        let records = if total == 0 {
                            records
                        } else {
                            reader::whole_batches_within(records, limit.min(max_total - total))
                        };
                        total += records.len();
                        self.metrics.fetched_bytes.inc_by(records.len() as u64);
                        out[i].records = records;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, topic = %log.topic, "fetch read failed");
                        out[i].error_code = i32::from(e.kafka_code());
                        errors = true;
                    }
                }
            }
        }
        (pb::FetchResponse { partitions: out }, total, errors)
    }

    /// Serves a forwarded group API request for a coordinator slot.
    pub async fn group(
        &self,
        req: pb::GroupRequest,
        sequenced: crate::groups::api::Sequenced,
    ) -> pb::GroupResponse {
        let exists = |topic: &str, p: i32| {
            self.topic_partitions
                .get(topic)
                .is_some_and(|n| p >= 0 && p < *n)
        };
        self.groups.handle(req, &exists, sequenced).await
    }

    /// Advances log start offsets (DeleteRecords): durably in the partition
    /// state first, then in memory. Records below it are no longer served.
    pub async fn delete_records(&self, req: pb::DeleteRecordsRequest) -> pb::DeleteRecordsResponse {
        let mut out = Vec::with_capacity(req.partitions.len());
        for p in req.partitions {
            let mut r = pb::DeleteRecordsPartitionResult {
                partition: p.partition.clone(),
                error_code: 0,
                low_watermark: -1,
            };
            match self.owned(&p.partition) {
                Err(c) => r.error_code = c,
                Ok(log) => {
                    let hwm = log.high_watermark();
                    let target = if p.offset == -1 { hwm } else { p.offset };
                    if target < 0 || target > hwm {
                        r.error_code = code(ResponseError::OffsetOutOfRange);
                    } else if target <= log.log_start_offset() {
                        r.low_watermark = log.log_start_offset();
                    } else {
                        let stored = self
                            .meta
                            .update_partition_state(log.id.topic_id, log.id.partition, |st| {
                                st.log_start_offset = st.log_start_offset.max(target);
                            })
                            .await;
                        match stored {
                            Ok(st) => r.low_watermark = log.advance_log_start(st.log_start_offset),
                            Err(e) => {
                                // The metadata store is unavailable: retriable.
                                tracing::warn!(error = %e, "log start offset not stored");
                                r.error_code = code(ResponseError::KafkaStorageError);
                            }
                        }
                    }
                }
            }
            out.push(r);
        }
        pb::DeleteRecordsResponse { partitions: out }
    }

    /// Bytes stored per owned partition.
    pub fn partition_sizes(&self, req: pb::PartitionSizesRequest) -> pb::PartitionSizesResponse {
        let partitions = req
            .partitions
            .into_iter()
            .map(|p| match self.owned(&Some(p.clone())) {
                Ok(log) => pb::PartitionSize {
                    partition: Some(p),
                    error_code: 0,
                    size_bytes: log.stored_bytes(),
                },
                Err(c) => pb::PartitionSize {
                    partition: Some(p),
                    error_code: c,
                    size_bytes: -1,
                },
            })
            .collect();
        pb::PartitionSizesResponse { partitions }
    }

    /// Resolves earliest (-2), latest (-1), max-timestamp (-3), earliest-local
    /// (-4), latest-tiered (-5) and by-timestamp offsets. There is no separate
    /// local tier (the log is in the object store), so, as in a Kafka broker
    /// without tiered storage, earliest-local is the log start and
    /// latest-tiered is -1.
    pub async fn list_offsets(&self, req: pb::ListOffsetsRequest) -> pb::ListOffsetsResponse {
        let mut out = Vec::with_capacity(req.partitions.len());
        for p in req.partitions {
            let mut r = pb::ListOffsetsPartitionResult {
                partition: p.partition.clone(),
                timestamp: -1,
                offset: -1,
                ..Default::default()
            };
            let log = match self.owned(&p.partition) {
                Ok(log) => log,
                Err(c) => {
                    r.error_code = c;
                    out.push(r);
                    continue;
                }
            };
            let found = match p.timestamp {
                -1 => Ok(Some((log.high_watermark(), -1))),
                -2 | -4 => Ok(Some((log.log_start_offset(), -1))),
                -5 => Ok(None),
                -3 => reader::max_timestamp_offset(&self.source, &log).await,
                ts => reader::offset_for_timestamp(&self.source, &log, ts).await,
            };
            match found {
                Ok(Some((o, ts))) => {
                    r.offset = o;
                    r.timestamp = ts;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "list offsets read failed");
                    r.error_code = i32::from(e.kafka_code());
                }
            }
            out.push(r);
        }
        pb::ListOffsetsResponse { partitions: out }
    }
}

/// When a produce with the request's `timeout_ms` stops waiting for
/// durability: `timeout_ms` after it arrived, as a Kafka broker bounds an
/// acks=all wait; none for a timeout of 0 or less.
fn durability_deadline(timeout_ms: i32) -> Option<tokio::time::Instant> {
    let ms = u64::try_from(timeout_ms).ok().filter(|&ms| ms > 0)?;
    Some(tokio::time::Instant::now() + Duration::from_millis(ms))
}

/// A produce whose batches have their offsets, awaiting durability.
pub struct PendingProduce {
    acks: i32,
    results: Vec<pb::ProducePartitionResult>,
    waits: Vec<(usize, Completion)>,
    /// See [`durability_deadline`].
    deadline: Option<tokio::time::Instant>,
}

impl PendingProduce {
    /// Whether some partition was refused because this worker does not own
    /// it (the gateway retries those parts at their owner).
    pub fn refused_as_not_owner(&self) -> bool {
        self.results.iter().any(|r| r.refused_as_not_owner())
    }

    /// The results, once every appended batch is durable (acks ≠ 0) or at
    /// once (acks = 0). A batch that could not be made durable reports a
    /// retriable error, never an offset; one that is not durable by the
    /// request's deadline reports REQUEST_TIMED_OUT (it may still become
    /// durable: an idempotent producer's retry then waits for the same
    /// outcome, never appends it twice).
    pub async fn finish(mut self) -> pb::ProduceResponse {
        if self.acks != 0 {
            for (i, done) in self.waits {
                let waited = match self.deadline {
                    Some(d) => tokio::time::timeout_at(d, wait_durable(done)).await.ok(),
                    None => Some(wait_durable(done).await),
                };
                let r = &mut self.results[i];
                match waited {
                    Some(Ok(())) => continue,
                    Some(Err(e)) => {
                        r.error_code = i32::from(e.kafka_code());
                        r.error_message = e.to_string();
                    }
                    None => {
                        r.error_code = i32::from(ResponseError::RequestTimedOut.code());
                        r.error_message =
                            "not durable within the request's timeout; it may still become durable"
                                .into();
                    }
                }
                r.base_offset = -1;
            }
        }
        pb::ProduceResponse {
            partitions: self.results,
            sequenced: false,
        }
    }
}
/// A traced step of a produce for one partition (validate, sequence).
fn step_span(step: &'static str, id: &PartitionId, bytes: usize) -> tracing::Span {
    tracing::info_span!(
        target: kafscale_proto::trace_context::TRACE_TARGET,
        "produce.step",
        otel.name = step,
        kafka.topic_id = %id.topic_id,
        kafka.partition = id.partition,
        kafka.bytes = bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::{self, WalError};

    fn pending(waits: Vec<Completion>, timeout_ms: i32) -> PendingProduce {
        PendingProduce {
            acks: -1,
            results: waits
                .iter()
                .map(|_| pb::ProducePartitionResult {
                    base_offset: 7,
                    ..Default::default()
                })
                .collect(),
            waits: waits.into_iter().enumerate().collect(),
            deadline: durability_deadline(timeout_ms),
        }
    }

    #[tokio::test]
    async fn a_produce_not_durable_by_its_timeout_is_answered_as_timed_out_not_failed() {
        let (_never, pending_forever) = completion::pending();
        let (failed_tx, failed) = completion::pending();
        failed_tx.send_replace(Some(Err(WalError::NotOwner)));
        let answer = pending(vec![completion::durable(), pending_forever, failed], 50)
            .finish()
            .await;
        let codes: Vec<(i32, i64)> = answer
            .partitions
            .iter()
            .map(|r| (r.error_code, r.base_offset))
            .collect();
        assert_eq!(
            codes,
            [
                (0, 7),
                (i32::from(ResponseError::RequestTimedOut.code()), -1),
                (i32::from(ResponseError::NotLeaderOrFollower.code()), -1),
            ]
        );
    }

    #[test]
    fn only_a_positive_timeout_bounds_the_wait() {
        assert!(durability_deadline(0).is_none());
        assert!(durability_deadline(-1).is_none());
        assert!(durability_deadline(30_000).is_some());
    }
}
