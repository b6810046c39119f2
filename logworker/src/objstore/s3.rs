//! S3 object store for the distributed mode (`aws-sdk-s3` over rustls).
//!
//! Guarantees:
//! - `put_if_absent` is a single `PutObject` with `If-None-Match: *`: the
//!   object is created with exactly the given bytes or the call fails; an
//!   existing object is never overwritten (HTTP 412 → [`ObjectError::AlreadyExists`]).
//!   The SDK's own retries are disabled (one HTTP attempt per call), so a 412
//!   always answers *this* request and never a hidden SDK retry of a PUT whose
//!   first response was lost; callers retry with their own jittered backoff.
//! - Every PUT carries the object's CRC32C, which S3 checks before it
//!   stores the object. Its payload is signed or not as [`PayloadSigning`]
//!   says; an unsigned one is streamed from the object's parts, uncopied.
//! - Errors are classified for retrying: missing objects are
//!   [`ObjectError::NotFound`]; throttling, 5xx, timeouts, connection and I/O
//!   failures, credential refresh failures and `409 ConditionalRequestConflict`
//!   are [`ObjectError::Transient`]; other client errors (access denied,
//!   missing bucket, bad request, 501) are [`ObjectError::Permanent`].
//! - `list` follows continuation tokens until the listing is complete and
//!   returns keys in ascending byte order.
//! - Keys must be non-empty, at most 1024 bytes, and made of non-empty `/`
//!   segments other than `.` and `..` (the same keys [`super::local::LocalDirStore`]
//!   accepts), so a key means the same object under every implementation.
//! - Every call is counted in [`S3Metrics`] (`kafscale_s3_requests_total`,
//!   `kafscale_s3_request_seconds`, `kafscale_s3_bytes_total`).

use super::{Body, ObjectError, ObjectMeta, ObjectStore};
use crate::metrics::S3Metrics;
use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::ChecksumAlgorithm;
use aws_sdk_s3::Client;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use kafscale_proto::trace_context::TRACE_TARGET;
use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};
use tracing::{Instrument, Span};

/// How to reach one S3 bucket.
#[derive(Clone)]
pub struct S3Config {
    /// Bucket name (`KAFSCALE_S3_BUCKET`).
    pub bucket: String,
    /// Region (`KAFSCALE_S3_REGION`); empty means "from the AWS environment"
    /// (`AWS_REGION`, profile), as resolved by `aws-config`.
    pub region: String,
    /// Endpoint URL of an S3-compatible server (`KAFSCALE_S3_ENDPOINT`);
    /// `None` means AWS S3 itself.
    pub endpoint: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`), needed by most
    /// S3-compatible servers (`KAFSCALE_S3_PATH_STYLE`).
    pub path_style: bool,
    /// Static access key id. Used together with `secret_key`; when either is
    /// missing the standard AWS credential chain is used instead (environment,
    /// shared profile, web identity / IRSA, ECS and EC2 instance metadata).
    pub access_key: Option<String>,
    /// Static secret access key (see `access_key`).
    pub secret_key: Option<String>,
    /// Session token for temporary static credentials.
    pub session_token: Option<String>,
    /// Keys per `ListObjectsV2` page; `None` uses the server default (1000).
    pub list_page_size: Option<i32>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Limit on one HTTP attempt (request sent to response body read).
    pub attempt_timeout: Duration,
    /// Limit on one attempt of a ranged read of at most
    /// [`SMALL_READ_BYTES`] (footers, seals, segment blocks), at most
    /// `attempt_timeout`: such a read that has not finished by then is
    /// almost surely held by a stuck connection, and another attempt on a
    /// fresh one is cheaper than waiting.
    pub small_read_timeout: Duration,
    /// Whether PUT payloads are covered by the request signature
    /// (`KAFSCALE_S3_PAYLOAD_SIGNING`).
    pub payload_signing: PayloadSigning,
}

/// Whether a PUT's payload is covered by its SigV4 signature. Whichever is
/// chosen, every PUT carries the object's CRC32C (`x-amz-checksum-crc32c`,
/// a signed header), which S3 checks before it stores the object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PayloadSigning {
    /// Unsigned over HTTPS, where TLS already protects the payload, and
    /// signed over plain HTTP: what AWS's own SDKs do.
    #[default]
    Auto,
    /// Always signed: the payload is hashed with SHA-256 on both sides.
    Signed,
    /// Never signed (`UNSIGNED-PAYLOAD`), also over plain HTTP: for a
    /// trusted network, where the SHA-256 costs more than it protects.
    Unsigned,
}

impl PayloadSigning {
    /// True if PUTs to `endpoint` (`None`: AWS S3, always HTTPS) are sent
    /// with an unsigned payload.
    pub fn unsigned_for(self, endpoint: Option<&str>) -> bool {
        match self {
            PayloadSigning::Signed => false,
            PayloadSigning::Unsigned => true,
            PayloadSigning::Auto => endpoint.is_none_or(|e| {
                e.get(..8)
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
            }),
        }
    }
}

impl std::str::FromStr for PayloadSigning {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(PayloadSigning::Auto),
            "signed" => Ok(PayloadSigning::Signed),
            "unsigned" => Ok(PayloadSigning::Unsigned),
            other => Err(format!(
                "unknown payload signing {other:?} (expected auto, signed or unsigned)"
            )),
        }
    }
}

/// Ranged reads up to this size use [`S3Config::small_read_timeout`].
pub const SMALL_READ_BYTES: u64 = 2 << 20;

impl S3Config {
    /// A configuration for `bucket` in `region` on AWS S3 with the default
    /// credential chain, virtual-hosted addressing, a 3 s connect timeout,
    /// a 30 s attempt timeout and a 5 s limit on small ranged reads.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: region.into(),
            endpoint: None,
            path_style: false,
            access_key: None,
            secret_key: None,
            session_token: None,
            list_page_size: None,
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(30),
            small_read_timeout: Duration::from_secs(5),
            payload_signing: PayloadSigning::Auto,
        }
    }
}

impl fmt::Debug for S3Config {
    /// Never prints the secret key or the session token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("list_page_size", &self.list_page_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("small_read_timeout", &self.small_read_timeout)
            .field("payload_signing", &self.payload_signing)
            .finish()
    }
}

/// Objects in one S3 bucket (see the module docs for the guarantees).
#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    list_page_size: Option<i32>,
    metrics: S3Metrics,
    /// Bound on a whole GET attempt, body included (the SDK's attempt
    /// timeout ends when the response head arrives, not the body).
    attempt_timeout: Duration,
    /// Bound on a small ranged GET attempt.
    small_read_timeout: Duration,
    /// PUTs stream their parts with an unsigned payload (see [`PayloadSigning`]).
    unsigned_payload: bool,
}

/// The store operations, as metrics label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    GetRange,
    List,
    Delete,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::GetRange => "get_range",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }
}

/// S3 error codes worth retrying whatever their HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "TokenRefreshRequired",
    "ConditionalRequestConflict",
    "OperationAborted",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// How an S3 error response is reported to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    NotFound,
    AlreadyExists,
    Transient,
    Permanent,
}

/// Classifies an S3 error response by operation, HTTP status and S3 error code.
fn classify(op: Op, status: Option<u16>, code: Option<&str>) -> Class {
    if let Some(code) = code {
        if TRANSIENT_CODES.contains(&code) {
            return Class::Transient;
        }
        if code == "NoSuchBucket" {
            return Class::Permanent;
        }
    }
    match status {
        Some(412) if op == Op::Put => Class::AlreadyExists,
        Some(404) => Class::NotFound,
        Some(408 | 409 | 429) => Class::Transient,
        Some(501) => Class::Permanent,
        Some(500..=599) => Class::Transient,
        Some(_) => Class::Permanent,
        None => Class::Transient,
    }
}

fn transient(key: &str, reason: impl fmt::Display) -> ObjectError {
    ObjectError::Transient {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn permanent(key: &str, reason: impl fmt::Display) -> ObjectError {
    ObjectError::Permanent {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// Maps an SDK error of `op` on `key` to an [`ObjectError`].
fn map_sdk_error<E>(op: Op, key: &str, err: SdkError<E>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::ServiceError(_) => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            match classify(op, status, err.code()) {
                Class::NotFound => ObjectError::NotFound(key.to_string()),
                Class::AlreadyExists => ObjectError::AlreadyExists(key.to_string()),
                Class::Transient => transient(key, reason),
                Class::Permanent => permanent(key, reason),
            }
        }
        SdkError::ConstructionFailure(_) => permanent(key, reason),
        SdkError::DispatchFailure(d) if d.is_user() => permanent(key, reason),
        // Timeouts, connection and I/O failures, credential resolution
        // failures, truncated or malformed responses.
        _ => transient(key, reason),
    }
}

/// Rejects keys that S3 cannot store or that would not name the same object
/// in [`super::local::LocalDirStore`].
fn check_key(key: &str) -> Result<(), ObjectError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(ObjectError::InvalidKey(key.to_string()))
    }
}

impl S3Store {
    /// Builds a client for `cfg` and returns the store. Makes no request:
    /// an unreachable endpoint or a missing bucket shows on the first call
    /// (use [`S3Store::check_conditional_put`] at startup).
    ///
    /// Credentials are static when both `access_key` and `secret_key` are
    /// given, else the standard AWS chain. HTTPS uses rustls.
    pub async fn connect(cfg: S3Config, metrics: S3Metrics) -> Result<Self, ObjectError> {
        if cfg.bucket.is_empty() {
            return Err(permanent("", "S3 bucket name is empty"));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::v2026_01_12())
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(cfg.connect_timeout)
                    .operation_attempt_timeout(cfg.attempt_timeout)
                    .build(),
            );
        if !cfg.region.is_empty() {
            loader = loader.region(Region::new(cfg.region.clone()));
        }
        if let Some(endpoint) = &cfg.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        match (&cfg.access_key, &cfg.secret_key) {
            (Some(ak), Some(sk)) => {
                loader = loader.credentials_provider(Credentials::new(
                    ak.clone(),
                    sk.clone(),
                    cfg.session_token.clone(),
                    None,
                    "kafscale-static",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(permanent(
                    "",
                    "S3 access key and secret key must be given together",
                ))
            }
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(permanent(
                "",
                "no S3 region configured (set the region or AWS_REGION)",
            ));
        }
        // PUTs carry the CRC32C computed here; the SDK adds no checksum of
        // its own (with one it would hash every body again, or stream it
        // in aws-chunked encoding).
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        let unsigned_payload = cfg.payload_signing.unsigned_for(cfg.endpoint.as_deref());
        Ok(Self {
            client: Client::from_conf(s3_config),
            bucket: cfg.bucket,
            list_page_size: cfg.list_page_size.filter(|n| *n > 0),
            metrics,
            attempt_timeout: cfg.attempt_timeout,
            small_read_timeout: cfg.small_read_timeout,
            unsigned_payload,
        })
    }

    /// The underlying SDK client, for administrative calls outside the
    /// [`ObjectStore`] trait (creating buckets in tests, say). Calls made
    /// through it are not counted in the metrics.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket this store reads and writes.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Verifies that the store honours conditional creates, the basis of WAL
    /// fencing: writes the probe object `<namespace>/_probe/<uuid>` twice with
    /// `If-None-Match: *`, requires the second write to fail with 412 and the
    /// first body to be kept, then deletes the probe.
    ///
    /// Returns `Ok` only if all of that held. A store that overwrote the probe
    /// or rejected the conditional header yields [`ObjectError::Permanent`]
    /// saying the store is unsafe; an unreachable store yields its own error
    /// (transient or permanent). The worker must not start on an error.
    pub async fn check_conditional_put(&self, namespace: &str) -> Result<(), ObjectError> {
        let ns = namespace.trim_matches('/');
        let key = if ns.is_empty() {
            format!("_probe/{}", uuid::Uuid::new_v4().simple())
        } else {
            format!("{ns}/_probe/{}", uuid::Uuid::new_v4().simple())
        };
        let unsafe_store = |what: String| {
            permanent(
                &key,
                format!(
                    "bucket {} is not safe to use: {what}; KafScale needs conditional \
                     PUT (If-None-Match: *) to fence WAL writers",
                    self.bucket
                ),
            )
        };
        let first = Bytes::from_static(b"kafscale conditional-put probe 1");
        let second = Bytes::from_static(b"kafscale conditional-put probe 2");
        match self.put_if_absent(&key, first.clone()).await {
            Ok(()) => {}
            Err(ObjectError::Permanent { reason, .. }) => {
                return Err(unsafe_store(format!(
                    "cannot create a probe object with a conditional PUT ({reason}); \
                     the bucket is missing or not writable, or the store does not \
                     support If-None-Match"
                )))
            }
            Err(e) => return Err(e),
        }
        let outcome = match self.put_if_absent(&key, second).await {
            Err(ObjectError::AlreadyExists(_)) => match self.get(&key).await {
                Ok(body) if body == first => Ok(()),
                Ok(_) => Err(unsafe_store(
                    "a conditional PUT on an existing object answered 412 but replaced it".into(),
                )),
                Err(e) => Err(e),
            },
            Ok(()) => Err(unsafe_store(
                "a conditional PUT on an existing object succeeded (If-None-Match ignored)".into(),
            )),
            Err(ObjectError::Permanent { reason, .. }) => Err(unsafe_store(format!(
                "a conditional PUT on an existing object was rejected ({reason})"
            ))),
            Err(e) => Err(e),
        };
        if let Err(e) = self.delete(&key).await {
            tracing::warn!(key = %key, error = %e, "cannot delete the conditional-put probe");
        }
        outcome
    }

    /// Counts one finished call: outcome, latency and, on success, `bytes`;
    /// and notes outcome and bytes on the call's trace span.
    fn record(&self, op: Op, span: &Span, started: Instant, result: Result<usize, &ObjectError>) {
        let label = op.label();
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        span.record("s3.outcome", outcome);
        if let Ok(n) = result {
            span.record("s3.bytes", n);
        }
        self.metrics
            .requests
            .with_label_values(&[label, outcome])
            .inc();
        self.metrics
            .request_seconds
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        if let Ok(n) = result {
            if matches!(op, Op::Put | Op::Get | Op::GetRange) {
                self.metrics
                    .bytes
                    .with_label_values(&[label])
                    .inc_by(n as u64);
            }
        }
    }

    /// One PutObject attempt. An unsigned payload is streamed from the
    /// body's parts; a signed one is hashed, so it goes as one buffer.
    async fn do_put(&self, key: &str, body: Body) -> Result<(), ObjectError> {
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .content_length(body.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(BASE64.encode(body.crc32c().to_be_bytes()));
        let sent = if self.unsigned_payload {
            put.body(ByteStream::new(PartsBody::sdk_body(body)))
                .customize()
                .disable_payload_signing()
                .send()
                .await
        } else {
            put.body(ByteStream::from(body.to_bytes())).send().await
        };
        sent.map(|_| ()).map_err(|e| map_sdk_error(Op::Put, key, e))
    }

    /// One GET attempt, head and body, within `limit`: a connection that
    /// stops answering (or stalls mid-body) fails the attempt transiently
    /// instead of holding the caller forever.
    async fn do_get(
        &self,
        op: Op,
        key: &str,
        range: Option<String>,
        limit: Duration,
    ) -> Result<Bytes, ObjectError> {
        match tokio::time::timeout(limit, self.do_get_unbounded(op, key, range)).await {
            Ok(r) => r,
            Err(_) => Err(transient(
                key,
                format!("GET timed out after {} ms", limit.as_millis()),
            )),
        }
    }

    async fn do_get_unbounded(
        &self,
        op: Op,
        key: &str,
        range: Option<String>,
    ) -> Result<Bytes, ObjectError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
            .map_err(|e| map_sdk_error(op, key, e))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| transient(key, format!("reading the body: {e}")))?;
        Ok(body.into_bytes())
    }

    async fn do_list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_max_keys(self.list_page_size)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk_error(Op::List, prefix, e))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            match page.next_continuation_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => {
                    return Err(permanent(
                        prefix,
                        "truncated listing without a continuation token",
                    ))
                }
            }
        }
        if !out.is_sorted_by(|a, b| a.key <= b.key) {
            out.sort_by(|a, b| a.key.cmp(&b.key));
        }
        Ok(out)
    }

    async fn do_delete(&self, key: &str) -> Result<(), ObjectError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_sdk_error(Op::Delete, key, e))
        {
            Ok(_) | Err(ObjectError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The trace span of one S3 call (outcome and bytes recorded when it ends).
/// A PUT body that streams an object's parts as they are, with its exact
/// length (so the request has a `Content-Length`, not chunked encoding).
struct PartsBody {
    parts: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl PartsBody {
    /// Streams `body`'s parts, from the first.
    fn new(body: &Body) -> Self {
        Self {
            parts: body.parts().to_vec().into_iter(),
            remaining: body.len() as u64,
        }
    }

    /// A body the SDK can replay: each attempt streams the same parts.
    fn sdk_body(body: Body) -> SdkBody {
        SdkBody::retryable(move || SdkBody::from_body_1_x(PartsBody::new(&body)))
    }
}

impl http_body::Body for PartsBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.parts.by_ref().find(|p| !p.is_empty());
        if let Some(p) = &next {
            self.remaining -= p.len() as u64;
        }
        std::task::Poll::Ready(next.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

fn call_span(op: Op, key: &str) -> Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "s3.call",
        otel.name = format!("S3 {}", op.label()),
        otel.kind = "client",
        s3.op = op.label(),
        s3.key = key,
        s3.outcome = tracing::field::Empty,
        s3.bytes = tracing::field::Empty,
    )
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_body_if_absent(&self, key: &str, body: Body) -> Result<(), ObjectError> {
        check_key(key)?;
        let started = Instant::now();
        let len = body.len();
        let span = call_span(Op::Put, key);
        let r = self.do_put(key, body).instrument(span.clone()).await;
        self.record(Op::Put, &span, started, r.as_ref().map(|_| len));
        r
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        check_key(key)?;
        let started = Instant::now();
        let span = call_span(Op::Get, key);
        let r = self
            .do_get(Op::Get, key, None, self.attempt_timeout)
            .instrument(span.clone())
            .await;
        self.record(Op::Get, &span, started, r.as_ref().map(Bytes::len));
        r
    }

    /// Reads `range` with one ranged GET (`Range: bytes=start-(end-1)`). An
    /// empty range returns no bytes without a request; a range that is not
    /// wholly inside the object is [`ObjectError::Permanent`].
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        check_key(key)?;
        if range.end <= range.start {
            return Ok(Bytes::new());
        }
        let started = Instant::now();
        let want = range.end - range.start;
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let limit = if want <= SMALL_READ_BYTES {
            self.small_read_timeout.min(self.attempt_timeout)
        } else {
            self.attempt_timeout
        };
        let span = call_span(Op::GetRange, key);
        let r = match self
            .do_get(Op::GetRange, key, Some(header), limit)
            .instrument(span.clone())
            .await
        {
            Ok(b) if b.len() as u64 == want => Ok(b),
            Ok(b) => Err(permanent(
                key,
                format!(
                    "range {}..{} asked for {want} bytes, got {} (object too short)",
                    range.start,
                    range.end,
                    b.len()
                ),
            )),
            Err(e) => Err(e),
        };
        self.record(Op::GetRange, &span, started, r.as_ref().map(Bytes::len));
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let started = Instant::now();
        let span = call_span(Op::List, prefix);
        let r = self.do_list(prefix).instrument(span.clone()).await;
        self.record(Op::List, &span, started, r.as_ref().map(|_| 0));
        r
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        check_key(key)?;
        let started = Instant::now();
        let span = call_span(Op::Delete, key);
        let r = self.do_delete(key).instrument(span.clone()).await;
        self.record(Op::Delete, &span, started, r.as_ref().map(|_| 0));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_signing_auto_signs_only_over_plain_http() {
        let auto = PayloadSigning::Auto;
        assert!(auto.unsigned_for(None), "AWS S3 is HTTPS");
        assert!(auto.unsigned_for(Some("https://s3.example:9000")));
        assert!(auto.unsigned_for(Some("HTTPS://s3.example")));
        assert!(!auto.unsigned_for(Some("http://127.0.0.1:9000")));
        assert!(!auto.unsigned_for(Some("s3.example")));
        assert!(!PayloadSigning::Signed.unsigned_for(None));
        assert!(PayloadSigning::Unsigned.unsigned_for(Some("http://127.0.0.1:9000")));
        for (text, mode) in [
            ("auto", PayloadSigning::Auto),
            ("signed", PayloadSigning::Signed),
            ("unsigned", PayloadSigning::Unsigned),
        ] {
            assert_eq!(text.parse::<PayloadSigning>(), Ok(mode));
        }
        assert!("yes".parse::<PayloadSigning>().is_err());
    }

    #[test]
    fn a_parts_body_streams_every_part_with_its_exact_length() {
        use http_body::Body as _;
        let mut body = PartsBody::new(&Body::from_parts(vec![
            Bytes::from_static(b"head"),
            Bytes::new(),
            Bytes::from_static(b"chunk"),
        ]));
        assert_eq!(body.size_hint().exact(), Some(9));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut got = Vec::new();
        while let std::task::Poll::Ready(Some(frame)) =
            std::pin::Pin::new(&mut body).poll_frame(&mut cx)
        {
            let data = frame
                .expect("infallible")
                .into_data()
                .expect("a data frame");
            assert!(!data.is_empty(), "no empty frames");
            got.extend_from_slice(&data);
        }
        assert_eq!(got, b"headchunk");
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[test]
    fn classifies_s3_errors() {
        use Class::*;
        assert_eq!(
            classify(Op::Put, Some(412), Some("PreconditionFailed")),
            AlreadyExists
        );
        assert_eq!(classify(Op::Get, Some(412), None), Permanent);
        assert_eq!(
            classify(Op::Put, Some(409), Some("ConditionalRequestConflict")),
            Transient
        );
        assert_eq!(classify(Op::Get, Some(404), Some("NoSuchKey")), NotFound);
        assert_eq!(classify(Op::Get, Some(404), None), NotFound);
        assert_eq!(
            classify(Op::Put, Some(404), Some("NoSuchBucket")),
            Permanent
        );
        assert_eq!(classify(Op::Put, Some(503), Some("SlowDown")), Transient);
        assert_eq!(
            classify(Op::Get, Some(500), Some("InternalError")),
            Transient
        );
        assert_eq!(classify(Op::Get, Some(502), None), Transient);
        assert_eq!(
            classify(Op::Put, Some(400), Some("RequestTimeout")),
            Transient
        );
        assert_eq!(
            classify(Op::Put, Some(400), Some("ExpiredToken")),
            Transient
        );
        assert_eq!(classify(Op::Put, Some(429), None), Transient);
        assert_eq!(
            classify(Op::Put, Some(403), Some("AccessDenied")),
            Permanent
        );
        assert_eq!(
            classify(Op::Put, Some(400), Some("InvalidRequest")),
            Permanent
        );
        assert_eq!(
            classify(Op::Put, Some(501), Some("NotImplemented")),
            Permanent
        );
        assert_eq!(
            classify(Op::GetRange, Some(416), Some("InvalidRange")),
            Permanent
        );
    }

    #[test]
    fn key_rules_match_the_local_store() {
        assert!(check_key("ns/wal/w/1/00000000000000000001").is_ok());
        for bad in [
            "",
            "../evil",
            "a//b",
            "/a",
            "a/",
            "a/./b",
            &"k".repeat(1025),
        ] {
            assert!(
                matches!(check_key(bad), Err(ObjectError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut cfg = S3Config::new("b", "us-east-1");
        cfg.access_key = Some("AKIDEXAMPLE".into());
        cfg.secret_key = Some("very-secret".into());
        cfg.session_token = Some("token-secret".into());
        let shown = format!("{cfg:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("very-secret") && !shown.contains("token-secret"));
    }
}
