//! Kafka connections: length-prefixed frames, bounded in size, pipelined
//! (up to `max_pipelined` requests in progress) but answered strictly in
//! request order. A frame that cannot be served closes the connection; other
//! connections are unaffected.
//!
//! Memory is bounded ([`crate::config::Limits`]): before a frame's bytes are
//! read, its length is taken from the connection's and the gateway's byte
//! budgets, and given back once its response is written; when a budget is
//! spent the connection waits without reading (TCP backpressure). A frame
//! must arrive within the read timeout once its length is known. Connections
//! beyond the per-gateway and per-address limits are closed on accept, and
//! so is every new connection while the listener is drained
//! ([`ListenerControl`], the control API's Drain).
//!
//! Before a connection is served, [`establish`] runs the listener's
//! security steps: the TLS handshake, then SASL authentication; the
//! principal they yield is what every request is authorized as.

use crate::auth::phase::{Reauth, ReauthStep, Session};
use crate::budget::{Budgets, RequestBudget};
use crate::dispatch::{Dispatcher, Outcome, Sequenced, ANONYMOUS};
use crate::quota::Mute;
use bytes::{BufMut, BytesMut};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// Open connections per source address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounted when dropped.
struct Admitted {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn admit(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Admitted> {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Admitted {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// What the control API sees of, and does to, a gateway's Kafka listener.
#[derive(Clone)]
pub struct ListenerControl {
    accepting: Arc<watch::Sender<bool>>,
    /// The gateway's `kafscale_gateway_connections` gauge, kept by [`serve`].
    connections: prometheus::IntGauge,
    view: crate::cluster::ClusterView,
}

impl ListenerControl {
    /// A listener that accepts connections, routing with `view`; open
    /// connections are read from the `connections` gauge [`serve`] keeps.
    pub fn new(view: crate::cluster::ClusterView, connections: prometheus::IntGauge) -> Self {
        Self {
            accepting: Arc::new(watch::channel(true).0),
            connections,
            view,
        }
    }

    /// Whether new connections are served (false while drained).
    pub fn accepting(&self) -> bool {
        *self.accepting.borrow()
    }

    /// Drained (false): new connections are closed at once; the open ones
    /// are served until their clients close them.
    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.send_replace(accepting);
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        usize::try_from(self.connections.get()).unwrap_or(0)
    }

    /// Workers this gateway knows and routes to.
    pub fn workers(&self) -> usize {
        self.view.snapshot().workers.len()
    }
}

/// Accepts Kafka connections until `shutdown`, then drains: every
/// connection stops reading new requests, answers the ones in progress and
/// closes; returns once all connections are closed.
pub async fn serve(
    listener: TcpListener,
    dispatcher: Arc<Dispatcher>,
    control: ListenerControl,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = dispatcher.config().limits.clone();
    let gateway_budget = Budgets::gateway(limits.gateway_bytes);
    let per_address = Arc::new(PerAddress::default());
    let mut connections = tokio::task::JoinSet::new();
    let metrics = dispatcher.metrics().clone();
    let outcome = |o: &str| metrics.connections_total.with_label_values(&[o]).inc();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if !control.accepting() {
                        tracing::debug!(%peer, "refusing connection: gateway drained");
                        outcome("drained");
                        continue;
                    }
                    if connections.len() >= limits.max_connections {
                        tracing::warn!(%peer, max = limits.max_connections, "refusing connection: gateway connection limit");
                        outcome("gateway_limit");
                        continue;
                    }
                    let Some(admitted) = per_address.admit(peer.ip(), limits.max_connections_per_ip) else {
                        tracing::warn!(%peer, max = limits.max_connections_per_ip, "refusing connection: per-address connection limit");
                        outcome("address_limit");
                        continue;
                    };
                    if !dispatcher.admit_connection(peer.ip()) {
                        tracing::debug!(%peer, "refusing connection: connection_creation_rate quota");
                        outcome("quota");
                        continue;
                    }
                    outcome("accepted");
                    let _ = stream.set_nodelay(true);
                    let d = dispatcher.clone();
                    let stop = shutdown.clone();
                    let budget = gateway_budget.clone();
                    connections.spawn(async move {
                        let _admitted = admitted;
                        if let Err(e) = establish(stream, peer.ip(), d, budget, stop).await {
                            tracing::debug!(%peer, error = %e, "connection closed");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
        metrics.connections.set(connections.len() as i64);
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(connections = open, "draining client connections");
    }
    while connections.join_next().await.is_some() {}
}

/// The steps before dispatch: the TLS handshake on SSL listeners (the
/// principal of a client certificate, with mTLS), then SASL on SASL
/// listeners (the authenticated user), both done within the auth timeout
/// ([`crate::config::Limits::auth_timeout`]) of the accept; then the
/// connection is served with that principal.
async fn establish(
    stream: TcpStream,
    ip: IpAddr,
    d: Arc<Dispatcher>,
    gateway_budget: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let security = d.security().clone();
    let deadline = tokio::time::Instant::now() + d.config().limits.auth_timeout;
    let Some(acceptor) = security.tls else {
        let mut stream = stream;
        let Ok(session) = authenticated(&mut stream, ip, &d, deadline).await else {
            return Ok(());
        };
        let principal = session
            .as_ref()
            .map_or(ANONYMOUS.to_string(), |s| s.principal.clone());
        let (rd, wr) = stream.into_split();
        let conn = Connection::new(ip, principal, session);
        return handle(rd, wr, conn, d, gateway_budget, shutdown).await;
    };
    let tls_outcome = |o: &str| {
        d.metrics()
            .authentications
            .with_label_values(&["TLS", o])
            .inc()
    };
    let mut stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tls_outcome("failure");
            tracing::debug!(%ip, error = %e, "TLS handshake failed");
            return Ok(());
        }
        Err(_) => {
            tls_outcome("failure");
            tracing::debug!(%ip, "TLS handshake did not finish in time");
            return Ok(());
        }
    };
    tls_outcome("success");
    let cert_principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(crate::auth::tls::certificate_principal);
    let Ok(session) = authenticated(&mut stream, ip, &d, deadline).await else {
        return Ok(());
    };
    let principal = match &session {
        Some(s) => s.principal.clone(),
        None => cert_principal.unwrap_or_else(|| ANONYMOUS.to_string()),
    };
    let (rd, wr) = tokio::io::split(stream);
    let conn = Connection::new(ip, principal, session);
    handle(rd, wr, conn, d, gateway_budget, shutdown).await
}

/// The SASL session on SASL listeners (none elsewhere), finished by
/// `deadline`; `Err`: authentication failed and the connection is to be
/// closed.
async fn authenticated<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    ip: IpAddr,
    d: &Dispatcher,
    deadline: tokio::time::Instant,
) -> Result<Option<Session>, ()> {
    let Some(auth) = &d.security().sasl else {
        return Ok(None);
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    match crate::auth::phase::authenticate(stream, auth, ip, left).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            tracing::info!(%ip, error = %e, "closing connection: not authenticated");
            Err(())
        }
    }
}

/// Who is on the other end of a connection.
struct Connection {
    ip: IpAddr,
    principal: Arc<str>,
    /// The SASL session, re-authenticated in band (SASL listeners only).
    reauth: Option<Reauth>,
}

impl Connection {
    fn new(ip: IpAddr, principal: String, session: Option<Session>) -> Self {
        Self {
            ip,
            principal: principal.into(),
            reauth: session.map(Reauth::new),
        }
    }
}

/// The API keys of SaslHandshake and SaslAuthenticate, as the first two
/// bytes of a request frame.
const SASL_KEYS: [[u8; 2]; 2] = [17i16.to_be_bytes(), 36i16.to_be_bytes()];

/// Reads a frame body of exactly `len` bytes into a buffer of that
/// capacity: nothing is zeroed first (a produce frame is megabytes) and
/// nothing past the frame is read.
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, len: usize) -> std::io::Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let want = len - buf.len();
        if rd.read_buf(&mut (&mut buf).limit(want)).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf)
}

async fn handle<R, W>(
    mut rd: R,
    wr: W,
    mut conn: Connection,
    d: Arc<Dispatcher>,
    gateway_budget: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let ip = conn.ip;
    let host: Arc<str> = format!("/{ip}").into();
    let principal = conn.principal.clone();
    let limits = d.config().limits.clone();
    let budgets = Budgets::connection(limits.connection_bytes, gateway_budget);
    let (tx, mut rx) = mpsc::channel::<(tokio::task::JoinHandle<Outcome>, Arc<RequestBudget>)>(
        d.config().max_pipelined.max(1),
    );
    let write_timeout = limits.response_write_timeout;
    let writer = tokio::spawn(async move {
        let mut wr = BufWriter::new(wr);
        // The request's budget is given back once its response is written.
        while let Some((h, _budget)) = rx.recv().await {
            // Never hold written responses while waiting for a slow one.
            if !h.is_finished() {
                within(write_timeout, wr.flush()).await?;
            }
            match h.await {
                Ok(Outcome::Respond(body)) => {
                    let len = (body.len() as u32).to_be_bytes();
                    within(write_timeout, async {
                        wr.write_all(&len).await?;
                        wr.write_all(&body).await
                    })
                    .await?;
                }
                Ok(Outcome::Silent) => {}
                Ok(Outcome::Close) | Err(_) => {
                    within(write_timeout, wr.flush()).await?;
                    return wr.into_inner().shutdown().await;
                }
            }
            if rx.is_empty() {
                within(write_timeout, wr.flush()).await?;
            }
        }
        within(write_timeout, wr.flush()).await
    });
    let max = d.config().max_frame_bytes;
    let mute = Mute::default();
    loop {
        let len = tokio::select! {
            len = rd.read_u32() => match len {
                Ok(len) => len,
                Err(_) => break,
            },
            // Draining: no new requests; those in progress are answered.
            _ = shutdown.wait_for(|s| *s) => break,
            // The writer gave up (a client that does not read its answers).
            _ = tx.closed() => break,
            // Idle: nothing received and nothing left to answer.
            _ = idle(&tx, limits.idle_timeout) => {
                tracing::debug!(timeout = ?limits.idle_timeout, "closing idle connection");
                break;
            }
        };
        // A client over its quota is muted: no request is served until what
        // its earlier requests owe is paid (Kafka's throttling).
        tokio::select! {
            _ = mute.served() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let len = len as usize;
        if len > max || len < 8 {
            tracing::warn!(len, max, "rejecting frame: size out of bounds");
            d.metrics().refused("frame_size");
            break;
        }
        // Take the frame's bytes from both budgets before reading them; with
        // a budget spent, this connection waits without reading.
        let held = tokio::select! {
            held = budgets.take_frame(len) => match held {
                Some(h) => h,
                None => break,
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let buf = match tokio::time::timeout(limits.frame_read_timeout, read_frame(&mut rd, len))
            .await
        {
            Ok(Ok(buf)) => buf,
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::warn!(len, timeout = ?limits.frame_read_timeout, "closing connection: frame not received in time");
                break;
            }
        };
        // An authenticated SASL connection: re-authentication is served
        // here, and an expired session serves nothing else.
        if let (Some(reauth), Some(auth)) = (conn.reauth.as_mut(), &d.security().sasl) {
            if SASL_KEYS.iter().any(|k| buf[..2] == *k) {
                let (outcome, close) = match reauth.request(auth, buf.freeze(), ip).await {
                    ReauthStep::Answer(o) => (o, false),
                    ReauthStep::AnswerAndClose(o) => (o, true),
                };
                let budget = Arc::new(RequestBudget::new(held, None));
                let answered = tokio::spawn(async move { outcome });
                if tx.send((answered, budget)).await.is_err() || close {
                    break;
                }
                continue;
            }
            if reauth.expired() {
                tracing::info!(%ip, principal = reauth.principal(), "closing connection: session expired without re-authentication");
                d.metrics().refused("session_expired");
                break;
            }
        }
        let (d2, host, principal, mute2) =
            (d.clone(), host.clone(), principal.clone(), mute.clone());
        let (seq_tx, seq_rx) = tokio::sync::oneshot::channel();
        // A fetch's answer can be far larger than its request: its room is
        // reserved here, in request order (see Budgets::take_response).
        let response = if buf[..2] == FETCH_KEY {
            Some(budgets.take_response(limits.fetch_max_bytes).await)
        } else {
            None
        };
        let budget = Arc::new(RequestBudget::new(held, response));
        let b2 = budget.clone();
        let task = tokio::spawn(async move {
            let sequenced = Sequenced::new(seq_tx);
            d2.dispatch(buf.freeze(), &host, &principal, sequenced, &b2, &mute2)
                .await
        });
        if tx.send((task, budget)).await.is_err() {
            break;
        }
        // Kafka answers and applies a connection's requests in order: the
        // next one starts once this one's place in the log is fixed.
        let _ = seq_rx.await;
    }
    drop(tx);
    writer.await.unwrap_or(Ok(()))
}

/// The API key of Fetch, as the first two bytes of a request frame.
const FETCH_KEY: [u8; 2] = 1i16.to_be_bytes();

/// `io` within `timeout`, or a `TimedOut` error: a client that does not read
/// its answers is disconnected, and everything its requests held is freed.
async fn within<T>(
    timeout: Duration,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(timeout, io).await.unwrap_or_else(|_| {
        tracing::warn!(
            ?timeout,
            "closing connection: the client does not read its responses"
        );
        Err(std::io::ErrorKind::TimedOut.into())
    })
}

/// Completes once the connection has had nothing to answer for `timeout`
/// (checked every `timeout`; a request in progress restarts the wait).
async fn idle<T>(tx: &mpsc::Sender<T>, timeout: Duration) {
    loop {
        tokio::time::sleep(timeout).await;
        if tx.capacity() == tx.max_capacity() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_is_read_whole_and_nothing_past_it() {
        // A small pipe: frames arrive in pieces, and both are in flight at once.
        let (mut client, mut server) = tokio::io::duplex(7);
        let first: Vec<u8> = (0..100u8).collect();
        let second: Vec<u8> = (100..130u8).collect();
        let sent = [first.clone(), second.clone()].concat();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.expect("write");
            client
        });
        assert_eq!(
            read_frame(&mut server, 100).await.expect("first")[..],
            first
        );
        assert_eq!(
            read_frame(&mut server, 30).await.expect("second")[..],
            second
        );
        drop(writer.await.expect("writer"));
        let eof = read_frame(&mut server, 1).await.expect_err("nothing left");
        assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
