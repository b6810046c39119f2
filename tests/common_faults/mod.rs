//! A fault-injecting HTTP/1.1 reverse proxy for S3, for tests: it sits
//! between the log workers and the real S3-compatible server (moto) and
//! injects, per S3 operation and at runtime, the failures real object stores
//! produce.
//!
//! Guarantees:
//! - Requests and responses that are not faulted are forwarded byte for byte
//!   (request line, headers in their order and case, bodies with
//!   `Content-Length`, `Transfer-Encoding: chunked` or `aws-chunked` content
//!   encoding inside a sized body): SigV4 signatures stay valid. The `Host`
//!   the client signed is the proxy's address; moto does not verify
//!   signatures, so that is fine.
//! - Client connections are kept alive across requests as the client and
//!   server agree; each forwarded request uses a fresh upstream connection,
//!   so an injected fault never desynchronises an upstream connection.
//! - Each request is classified ([`Op`]) and at most one [`Fault`] is applied
//!   to it, chosen by one draw of a seeded RNG against the rules of its
//!   operation (in arrival order: sequential requests give the same faults on
//!   every run with the same seed).
//! - [`Fault::LostResponse`] really forwards the request and waits for the
//!   server's complete answer before dropping the client connection: the
//!   object exists on the server while the client sees a connection failure.
//! - [`Fault::InternalError`] and [`Fault::SlowDown`] never reach the server.
//! - Every request, every injected fault and every upstream status is
//!   counted ([`Stats`]), readable at any time through the cloneable handle.
//! - Dropping the last [`FaultProxy`] handle stops accepting connections and
//!   closes every connection still open (including held ones).
//!
//! Test crates using it declare `mod common_faults;`.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Longest request or response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest a held connection ([`Fault::Timeout`]) stays open.
const MAX_HOLD: Duration = Duration::from_secs(600);
/// Bound on one upstream exchange (connect, send, read the whole answer).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// The S3 operation a request performs (path-style addressing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// PUT of an object (conditional creates carry `If-None-Match: *`).
    Put,
    /// GET of a whole object.
    Get,
    /// GET of an object with a `Range` header.
    GetRange,
    /// HEAD of an object or bucket.
    Head,
    /// GET on a bucket listing its objects (`list-type=2`, or a v1 listing).
    List,
    /// DELETE of an object.
    Delete,
    /// Anything else (bucket creation, multi-object delete, ...).
    Other,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 7] = [
        Op::Put,
        Op::Get,
        Op::GetRange,
        Op::Head,
        Op::List,
        Op::Delete,
        Op::Other,
    ];

    /// A short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::GetRange => "get_range",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Other => "other",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do to one request instead of forwarding it plainly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `500 InternalError` (S3 XML error body) without forwarding.
    InternalError,
    /// Answer `503 SlowDown` (S3 XML error body) without forwarding.
    SlowDown,
    /// Read the request, then reset the connection without answering.
    Reset,
    /// Read the request, then hold the connection open and never answer
    /// (until the client gives up).
    Timeout,
    /// Wait this long, then forward normally.
    Slow(Duration),
    /// Forward, wait this long after the server answered, then answer.
    DelayedResponse(Duration),
    /// Forward, let the server complete it, then reset the client
    /// connection without sending the response.
    LostResponse,
}

impl Fault {
    /// The kind, for counters.
    pub fn kind(self) -> FaultKind {
        match self {
            Fault::InternalError => FaultKind::InternalError,
            Fault::SlowDown => FaultKind::SlowDown,
            Fault::Reset => FaultKind::Reset,
            Fault::Timeout => FaultKind::Timeout,
            Fault::Slow(_) => FaultKind::Slow,
            Fault::DelayedResponse(_) => FaultKind::DelayedResponse,
            Fault::LostResponse => FaultKind::LostResponse,
        }
    }
}

/// A [`Fault`] without its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    InternalError,
    SlowDown,
    Reset,
    Timeout,
    Slow,
    DelayedResponse,
    LostResponse,
}

impl FaultKind {
    /// A short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::InternalError => "500",
            FaultKind::SlowDown => "503",
            FaultKind::Reset => "reset",
            FaultKind::Timeout => "timeout",
            FaultKind::Slow => "slow",
            FaultKind::DelayedResponse => "delayed_response",
            FaultKind::LostResponse => "lost_response",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One fault rule of an operation: inject `fault` into a fraction `rate` of
/// the matching requests.
#[derive(Clone, Debug)]
pub struct Rule {
    /// What to inject.
    pub fault: Fault,
    /// Probability per matching request, in `0.0..=1.0`.
    pub rate: f64,
    /// Only requests whose target (path and query) contains this.
    pub target_contains: Option<String>,
    /// Inject at most this many more times (`None`: unlimited).
    pub remaining: Option<u64>,
}

impl Rule {
    /// `fault` at `rate` on every request of the operation.
    pub fn new(fault: Fault, rate: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&rate),
            "fault rate {rate} is not a probability"
        );
        Self {
            fault,
            rate,
            target_contains: None,
            remaining: None,
        }
    }

    /// Restricts the rule to request targets containing `needle`
    /// (e.g. `"/wal/"` spares the workers' startup probe objects).
    pub fn targets(mut self, needle: &str) -> Self {
        self.target_contains = Some(needle.to_string());
        self
    }

    /// Injects at most `n` times.
    pub fn at_most(mut self, n: u64) -> Self {
        self.remaining = Some(n);
        self
    }
}

/// A response the client never received ([`Fault::LostResponse`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostResponse {
    pub op: Op,
    /// Request target (path and query).
    pub target: String,
    /// The status the server answered with.
    pub status: u16,
}

/// Counters of one proxy.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Client connections accepted.
    pub connections: u64,
    /// Requests by operation.
    pub requests: BTreeMap<Op, u64>,
    /// PUTs carrying `If-None-Match: *`.
    pub conditional_puts: u64,
    /// Injected faults by operation and kind.
    pub faults: BTreeMap<(Op, FaultKind), u64>,
    /// Statuses answered by the server, by operation (forwarded requests).
    pub upstream_statuses: BTreeMap<(Op, u16), u64>,
    /// Forwarded requests that failed upstream (answered 502).
    pub upstream_failures: u64,
    /// Every lost response, in order.
    pub lost: Vec<LostResponse>,
}

impl Stats {
    /// Requests of `op`.
    pub fn requests(&self, op: Op) -> u64 {
        self.requests.get(&op).copied().unwrap_or(0)
    }

    /// Injected faults of `kind` on `op`.
    pub fn faults(&self, op: Op, kind: FaultKind) -> u64 {
        self.faults.get(&(op, kind)).copied().unwrap_or(0)
    }

    /// Injected faults of `kind`, every operation.
    pub fn faults_of_kind(&self, kind: FaultKind) -> u64 {
        self.faults
            .iter()
            .filter(|((_, k), _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every injected fault.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Every request.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "S3 proxy: {} connections, {} requests, {} injected faults, {} conditional PUTs, \
             {} upstream failures",
            self.connections,
            self.total_requests(),
            self.total_faults(),
            self.conditional_puts,
            self.upstream_failures
        )?;
        for op in Op::ALL {
            let n = self.requests(op);
            if n == 0 {
                continue;
            }
            let faults: Vec<String> = self
                .faults
                .iter()
                .filter(|((o, _), _)| *o == op)
                .map(|((_, k), n)| format!("{k}={n}"))
                .collect();
            let statuses: Vec<String> = self
                .upstream_statuses
                .iter()
                .filter(|((o, _), _)| *o == op)
                .map(|((_, s), n)| format!("{s}={n}"))
                .collect();
            writeln!(
                f,
                "  {op:<9} requests {n:>6}  faults [{}]  upstream [{}]",
                faults.join(" "),
                statuses.join(" ")
            )?;
        }
        Ok(())
    }
}

struct State {
    rules: BTreeMap<Op, Vec<Rule>>,
    rng: StdRng,
    stats: Stats,
    error_ids: u64,
}

struct Shared {
    upstream: RwLock<Option<SocketAddr>>,
    state: Mutex<State>,
    shutdown: watch::Sender<bool>,
    trace: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the request and picks its fault (one RNG draw if any rule
    /// matches).
    fn decide(&self, op: Op, target: &str, conditional: bool) -> Option<Fault> {
        let mut st = self.lock();
        *st.stats.requests.entry(op).or_default() += 1;
        if conditional {
            st.stats.conditional_puts += 1;
        }
        let candidates: Vec<usize> = st
            .rules
            .get(&op)
            .map(|rules| {
                rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| {
                        r.remaining != Some(0)
                            && r.target_contains
                                .as_deref()
                                .is_none_or(|n| target.contains(n))
                    })
                    .map(|(i, _)| i)
                    .collect()
            })
            .unwrap_or_default();
        if candidates.is_empty() {
            return None;
        }
        let draw: f64 = st.rng.random();
        let rules = st.rules.get_mut(&op)?;
        let mut acc = 0.0;
        let mut chosen = None;
        for i in candidates {
            acc += rules[i].rate;
            if draw < acc {
                if let Some(n) = rules[i].remaining.as_mut() {
                    *n -= 1;
                }
                chosen = Some(rules[i].fault);
                break;
            }
        }
        let fault = chosen?;
        *st.stats.faults.entry((op, fault.kind())).or_default() += 1;
        Some(fault)
    }
}

/// Stops the accept loop and every connection when the last handle goes.
struct Guard {
    shared: Arc<Shared>,
    accept: tokio::task::AbortHandle,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.shutdown.send_replace(true);
    }
}

/// Handle of a running fault proxy (cheap to clone; the proxy stops when
/// the last handle is dropped).
#[derive(Clone)]
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _guard: Arc<Guard>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

/// `host:port` of an `http://host:port[/]` endpoint, resolved.
fn resolve(endpoint: &str) -> SocketAddr {
    let hostport = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("resolve upstream {endpoint:?}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("upstream {endpoint:?} resolves to no address"))
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port with no upstream yet (requests
    /// are answered 502 until [`FaultProxy::set_upstream`]) and no faults.
    /// `seed` seeds the fault RNG. Must be called inside a tokio runtime.
    pub fn start(seed: u64) -> Self {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the S3 proxy listener");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let addr = std_listener.local_addr().expect("proxy listener address");
        let listener =
            TcpListener::from_std(std_listener).expect("proxy listener inside a tokio runtime");
        let shared = Arc::new(Shared {
            upstream: RwLock::new(None),
            state: Mutex::new(State {
                rules: BTreeMap::new(),
                rng: StdRng::seed_from_u64(seed),
                stats: Stats::default(),
                error_ids: 0,
            }),
            shutdown: watch::channel(false).0,
            trace: std::env::var_os("KAFSCALE_FAULT_PROXY_TRACE").is_some(),
        });
        let accept = tokio::spawn(accept_loop(shared.clone(), listener)).abort_handle();
        Self {
            shared: shared.clone(),
            addr,
            _guard: Arc::new(Guard { shared, accept }),
        }
    }

    /// Starts a proxy in front of `upstream` (`http://host:port`).
    pub fn start_to(upstream: &str, seed: u64) -> Self {
        let p = Self::start(seed);
        p.set_upstream(upstream);
        p
    }

    /// Points the proxy at `upstream` (`http://host:port`).
    pub fn set_upstream(&self, upstream: &str) {
        let addr = resolve(upstream);
        *self
            .shared
            .upstream
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    /// `http://127.0.0.1:PORT`, the endpoint clients use.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a rule for `op` (after the existing ones).
    pub fn add(&self, op: Op, rule: Rule) {
        self.shared.lock().rules.entry(op).or_default().push(rule);
        self.check_rates(op);
    }

    /// Replaces every rule of `op`.
    pub fn set(&self, op: Op, rules: Vec<Rule>) {
        self.shared.lock().rules.insert(op, rules);
        self.check_rates(op);
    }

    /// Removes every rule of `op`.
    pub fn clear(&self, op: Op) {
        self.shared.lock().rules.remove(&op);
    }

    /// Removes every rule: from now on requests are forwarded plainly.
    pub fn clear_all(&self) {
        self.shared.lock().rules.clear();
    }

    fn check_rates(&self, op: Op) {
        let st = self.shared.lock();
        let sum: f64 = st
            .rules
            .get(&op)
            .map(|r| r.iter().map(|r| r.rate).sum())
            .unwrap_or(0.0);
        assert!(sum <= 1.0 + 1e-9, "fault rates of {op} add up to {sum} > 1");
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        self.shared.lock().stats = Stats::default();
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                shared.lock().stats.connections += 1;
                let shared = shared.clone();
                let mut stop = shared.shutdown.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(shared.clone(), stream) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 framing
// ---------------------------------------------------------------------------

/// A request or response head, kept verbatim.
struct Head {
    raw: Vec<u8>,
    start: Vec<String>,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn version(&self, response: bool) -> &str {
        let i = if response { 0 } else { 2 };
        self.start.get(i).map(String::as_str).unwrap_or("")
    }

    /// The same head without any `name` header (raw bytes rewritten).
    fn without_header(self, name: &str) -> Head {
        let text = String::from_utf8_lossy(&self.raw).into_owned();
        let raw: String = text
            .split_inclusive("\r\n")
            .enumerate()
            .filter(|(i, line)| {
                *i == 0
                    || line
                        .split_once(':')
                        .is_none_or(|(k, _)| !k.trim().eq_ignore_ascii_case(name))
            })
            .map(|(_, line)| line)
            .collect();
        Head {
            raw: raw.into_bytes(),
            start: self.start,
            headers: self
                .headers
                .into_iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
                .collect(),
        }
    }

    /// Whether the sender asks to close the connection after this message.
    fn wants_close(&self, response: bool) -> bool {
        if self.has_token("connection", "close") {
            return true;
        }
        self.version(response).eq_ignore_ascii_case("HTTP/1.0")
            && !self.has_token("connection", "keep-alive")
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Bytes read from a peer, consumed message by message.
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    fn new() -> Self {
        Self { buf: Vec::new() }
    }

    /// Reads more bytes; false at end of stream.
    async fn more(&mut self, s: &mut TcpStream) -> io::Result<bool> {
        // Straight into the heap buffer: large arrays in async state
        // overflow test threads' stacks in debug builds.
        self.buf.reserve(64 * 1024);
        let n = s.read_buf(&mut self.buf).await?;
        Ok(n > 0)
    }

    /// Ensures `n` bytes are buffered.
    async fn fill(&mut self, s: &mut TcpStream, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            if !self.more(s).await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed mid-message",
                ));
            }
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// The next head; `None` if the peer closed cleanly between messages.
    async fn head(&mut self, s: &mut TcpStream) -> io::Result<Option<Head>> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(bad("HTTP head too large"));
            }
            if !self.more(s).await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed mid-head",
                ));
            }
        };
        let raw = self.take(end);
        let text = String::from_utf8_lossy(&raw[..end - 4]).into_owned();
        let mut lines = text.split("\r\n");
        let start: Vec<String> = lines
            .next()
            .unwrap_or("")
            .splitn(3, ' ')
            .map(str::to_string)
            .collect();
        if start.len() < 2 {
            return Err(bad(format!("bad start line {:?}", start.join(" "))));
        }
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
                None => Err(bad(format!("bad header line {l:?}"))),
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Some(Head {
            raw,
            start,
            headers,
        }))
    }

    /// One CRLF-terminated line, CRLF included.
    async fn line(&mut self, s: &mut TcpStream) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                return Ok(self.take(i + 2));
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(bad("chunk line too long"));
            }
            if !self.more(s).await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed mid-chunk",
                ));
            }
        }
    }

    /// The body, raw (chunk framing included), as `framing` delimits it.
    async fn body(&mut self, s: &mut TcpStream, framing: Framing) -> io::Result<Vec<u8>> {
        match framing {
            Framing::Empty => Ok(Vec::new()),
            Framing::Length(n) => {
                let n = usize::try_from(n).map_err(|_| bad("body too large"))?;
                self.fill(s, n).await?;
                Ok(self.take(n))
            }
            Framing::Chunked => {
                let mut raw = Vec::new();
                loop {
                    let line = self.line(s).await?;
                    let text = String::from_utf8_lossy(&line);
                    let size_text = text.trim_end().split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_text, 16)
                        .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
                    raw.extend_from_slice(&line);
                    if size == 0 {
                        // Trailers, up to the empty line.
                        loop {
                            let t = self.line(s).await?;
                            raw.extend_from_slice(&t);
                            if t == b"\r\n" {
                                return Ok(raw);
                            }
                        }
                    }
                    self.fill(s, size + 2).await?;
                    raw.extend_from_slice(&self.take(size + 2));
                }
            }
            Framing::UntilClose => {
                while self.more(s).await? {}
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing_of(head: &Head, response: Option<(&str, u16)>) -> io::Result<Framing> {
    if let Some((method, status)) = response {
        if method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            return Ok(Framing::Empty);
        }
    }
    if let Some(te) = head.header("transfer-encoding") {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Chunked);
        }
    }
    if let Some(cl) = head.header("content-length") {
        let n = cl
            .trim()
            .parse::<u64>()
            .map_err(|_| bad(format!("bad Content-Length {cl:?}")))?;
        return Ok(Framing::Length(n));
    }
    Ok(match response {
        Some(_) => Framing::UntilClose,
        None => Framing::Empty,
    })
}

/// Classifies a path-style S3 request.
fn classify(head: &Head) -> Op {
    let method = head.start[0].as_str();
    let target = head.start[1].as_str();
    // Absolute-form targets (`http://host/path`) carry the authority.
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => target,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let has_key = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    let is_listing = query.is_empty()
        || query
            .split('&')
            .any(|kv| kv.starts_with("list-type=") || kv.starts_with("prefix="));
    match method {
        "PUT" if has_key => Op::Put,
        "GET" if has_key && head.header("range").is_some() => Op::GetRange,
        "GET" if has_key => Op::Get,
        "GET" if is_listing => Op::List,
        "HEAD" => Op::Head,
        "DELETE" if has_key => Op::Delete,
        _ => Op::Other,
    }
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

/// A full request read from the client.
struct Request {
    head: Head,
    body: Vec<u8>,
}

/// A full response read from the server.
struct Response {
    head: Head,
    body: Vec<u8>,
    status: u16,
    close: bool,
}

async fn serve(shared: Arc<Shared>, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    let mut reader = Reader::new();
    loop {
        let head = match reader.head(&mut client).await {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        let Ok(framing) = framing_of(&head, None) else {
            return;
        };
        if head.has_token("expect", "100-continue") && framing != Framing::Empty {
            // We read the whole body before forwarding: let it come now. An
            // interim 100 from the server is skipped (see `exchange`).
            if client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
        let body = match reader.body(&mut client, framing).await {
            Ok(b) => b,
            Err(_) => return,
        };
        let req = Request { head, body };
        let op = classify(&req.head);
        let target = req.head.start[1].clone();
        let conditional = op == Op::Put
            && req
                .head
                .header("if-none-match")
                .is_some_and(|v| v.trim() == "*");
        if shared.trace {
            eprintln!(
                "[fault proxy] {} ({op}) body {} bytes\n{}",
                target,
                req.body.len(),
                String::from_utf8_lossy(&req.head.raw).trim_end()
            );
        }
        let fault = shared.decide(op, &target, conditional);
        let keep_open = match fault {
            None => forward(&shared, &mut client, &req, op, None).await,
            Some(Fault::InternalError) => {
                error_reply(&shared, &mut client, &req, 500, "InternalError").await
            }
            Some(Fault::SlowDown) => error_reply(&shared, &mut client, &req, 503, "SlowDown").await,
            Some(Fault::Reset) => {
                reset(client);
                return;
            }
            Some(Fault::Timeout) => {
                hold(client).await;
                return;
            }
            Some(Fault::Slow(d)) => {
                tokio::time::sleep(d).await;
                forward(&shared, &mut client, &req, op, None).await
            }
            Some(Fault::DelayedResponse(d)) => {
                forward(&shared, &mut client, &req, op, Some(d)).await
            }
            Some(Fault::LostResponse) => {
                let status = match exchange(&shared, &req).await {
                    Ok(r) => {
                        count_status(&shared, op, r.status);
                        r.status
                    }
                    Err(_) => {
                        shared.lock().stats.upstream_failures += 1;
                        0
                    }
                };
                shared
                    .lock()
                    .stats
                    .lost
                    .push(LostResponse { op, target, status });
                reset(client);
                return;
            }
        };
        if !keep_open || req.head.wants_close(false) {
            let _ = client.shutdown().await;
            return;
        }
    }
}

fn count_status(shared: &Shared, op: Op, status: u16) {
    *shared
        .lock()
        .stats
        .upstream_statuses
        .entry((op, status))
        .or_default() += 1;
}

/// Closes with a TCP reset (no FIN, no answer).
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}

/// Never answers: discards whatever the client sends until it closes (or
/// [`MAX_HOLD`]).
async fn hold(mut client: TcpStream) {
    let _ = tokio::time::timeout(MAX_HOLD, async {
        let mut sink = Vec::with_capacity(4096);
        while let Ok(n) = client.read_buf(&mut sink).await {
            if n == 0 {
                break;
            }
            sink.clear();
        }
    })
    .await;
}

/// Sends `req` to the server on a fresh connection and reads its whole
/// answer (skipping interim 1xx responses).
async fn exchange(shared: &Shared, req: &Request) -> io::Result<Response> {
    let upstream = *shared.upstream.read().unwrap_or_else(|p| p.into_inner());
    let upstream = upstream.ok_or_else(|| io::Error::other("no upstream configured"))?;
    let method = req.head.start[0].clone();
    let work = async {
        let mut s = TcpStream::connect(upstream).await?;
        let _ = s.set_nodelay(true);
        s.write_all(&req.head.raw).await?;
        s.write_all(&req.body).await?;
        s.flush().await?;
        let mut reader = Reader::new();
        loop {
            let head = reader.head(&mut s).await?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed without answering",
                )
            })?;
            let status: u16 = head.start[1]
                .parse()
                .map_err(|_| bad(format!("bad status {:?}", head.start[1])))?;
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let framing = framing_of(&head, Some((&method, status)))?;
            let body = reader.body(&mut s, framing).await?;
            // Each exchange has its own upstream connection, so the server
            // closing it says nothing about the client's connection, unless
            // the body's end is the close itself. Its `Connection` header is
            // hop-by-hop: dropped, so the client may keep its connection.
            let close = framing == Framing::UntilClose;
            let head = if close {
                head
            } else {
                head.without_header("connection")
            };
            return Ok(Response {
                head,
                body,
                status,
                close,
            });
        }
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream exchange timed out"))?
}

/// Forwards `req` and relays the answer (after `delay`, if any). Returns
/// whether the client connection stays usable.
async fn forward(
    shared: &Shared,
    client: &mut TcpStream,
    req: &Request,
    op: Op,
    delay: Option<Duration>,
) -> bool {
    match exchange(shared, req).await {
        Ok(resp) => {
            count_status(shared, op, resp.status);
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let sent = async {
                client.write_all(&resp.head.raw).await?;
                client.write_all(&resp.body).await?;
                client.flush().await
            }
            .await;
            sent.is_ok() && !resp.close
        }
        Err(e) => {
            shared.lock().stats.upstream_failures += 1;
            let body = format!("upstream failed: {e}");
            let head = format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = client.write_all(head.as_bytes()).await;
            let _ = client.write_all(body.as_bytes()).await;
            false
        }
    }
}

/// Answers an S3-style XML error without forwarding. Returns whether the
/// client connection stays usable.
async fn error_reply(
    shared: &Shared,
    client: &mut TcpStream,
    req: &Request,
    status: u16,
    code: &str,
) -> bool {
    let id = {
        let mut st = shared.lock();
        st.error_ids += 1;
        st.error_ids
    };
    let reason = match status {
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let message = match code {
        "SlowDown" => "Please reduce your request rate.",
        _ => "We encountered an internal error. Please try again.",
    };
    let resource = req.head.start[1].split('?').next().unwrap_or("");
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><Resource>{resource}</Resource>\
         <RequestId>FAULT{id:016X}</RequestId></Error>"
    );
    let is_head = req.head.start[0].eq_ignore_ascii_case("HEAD");
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: FAULT{id:016X}\r\n\r\n",
        if is_head { 0 } else { xml.len() }
    );
    let sent = async {
        client.write_all(head.as_bytes()).await?;
        if !is_head {
            client.write_all(xml.as_bytes()).await?;
        }
        client.flush().await
    }
    .await;
    sent.is_ok()
}

/// The S3 faults torture runs inject, at base rate `r`: on WAL objects only
/// (a restarted worker's startup probe must pass, or it refuses to start),
/// PUTs fail with 500, 503 SlowDown, resets, lost responses of PUTs that
/// succeeded, slow and delayed answers; GETs with 500s and resets; listings
/// with SlowDown.
pub fn arm_wal_faults(proxy: &FaultProxy, r: f64) {
    let wal = |fault, rate: f64| Rule::new(fault, rate).targets("/wal/");
    proxy.set(
        Op::Put,
        vec![
            wal(Fault::InternalError, r),
            wal(Fault::SlowDown, r),
            wal(Fault::Reset, r * 2.0 / 3.0),
            wal(Fault::LostResponse, r * 4.0 / 3.0),
            wal(Fault::Slow(Duration::from_millis(300)), r),
            wal(
                Fault::DelayedResponse(Duration::from_millis(300)),
                r * 2.0 / 3.0,
            ),
        ],
    );
    for op in [Op::Get, Op::GetRange] {
        proxy.set(
            op,
            vec![
                wal(Fault::InternalError, r),
                wal(Fault::Reset, r * 2.0 / 3.0),
            ],
        );
    }
    proxy.set(Op::List, vec![Rule::new(Fault::SlowDown, r * 5.0 / 3.0)]);
}
