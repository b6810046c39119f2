//! The authentication phase of a SASL connection: before a principal is
//! established, a connection may send only ApiVersions, SaslHandshake and
//! SaslAuthenticate (or, after a v0 handshake, raw SASL tokens); anything
//! else closes it, and so does a failed authentication (after its answer),
//! an oversized frame (more than [`MAX_AUTH_FRAME`]) or a phase that does
//! not finish within its deadline.

use super::sasl::{Authenticator, Exchange, SaslMechanism, Step};
use super::user_principal;
use crate::dispatch::{decode, encode, Outcome};
use crate::handlers::api_versions;
use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted before authentication (Kafka's
/// `sasl.server.max.receive.size` default).
pub const MAX_AUTH_FRAME: usize = 512 * 1024;

/// Why a connection did not authenticate (it is closed).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication failed: {0}")]
    Failed(String),
    #[error("request {0:?} before authentication")]
    Unexpected(Option<ApiKey>),
    #[error("frame of {0} bytes before authentication")]
    Oversized(usize),
    #[error("malformed request before authentication")]
    Malformed,
    #[error("authentication did not finish in time")]
    Timeout,
    #[error("address refused: too many failed authentications")]
    Blocked,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What authentication established for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `User:<name>`.
    pub principal: String,
    /// The SASL mechanism used (re-authentication must use it again).
    pub mechanism: &'static str,
    /// When the session ends unless the client re-authenticates (KIP-368);
    /// none: never.
    pub expires: Option<Instant>,
}

/// Runs the phase on `stream` from `ip`; the authenticated session.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &Authenticator,
    ip: IpAddr,
    deadline: Duration,
) -> Result<Session, AuthError> {
    if !auth.may_try(ip) {
        return Err(AuthError::Blocked);
    }
    tokio::time::timeout(deadline, run(stream, auth, ip))
        .await
        .unwrap_or(Err(AuthError::Timeout))
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Bytes, AuthError> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_AUTH_FRAME {
        return Err(AuthError::Oversized(len));
    }
    let mut buf = BytesMut::zeroed(len);
    stream.read_exact(&mut buf).await?;
    Ok(buf.freeze())
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, body: &[u8]) -> Result<(), AuthError> {
    let len = u32::try_from(body.len()).map_err(|_| AuthError::Malformed)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    Ok(())
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, outcome: Outcome) -> Result<(), AuthError> {
    match outcome {
        Outcome::Respond(body) => write_frame(stream, &body).await,
        Outcome::Silent => Ok(()),
        Outcome::Close => Err(AuthError::Malformed),
    }
}

/// Where the exchange stands.
enum State {
    /// No mechanism chosen yet.
    Handshake,
    /// A mechanism was chosen; `raw`: tokens come unframed (v0 handshake).
    Exchanging {
        ex: Exchange,
        mechanism: &'static str,
        raw: bool,
    },
}

/// The outcome of one client token.
enum Progress {
    /// More tokens to come.
    Continue(Exchange),
    /// Authenticated as `user` for `lifetime` (none: for ever).
    Done {
        user: String,
        lifetime: Option<Duration>,
    },
    /// Refused, with the message the client was sent.
    Failed(String),
}

/// Answers a SaslHandshake: the enabled mechanisms, and the exchange of the
/// one asked for (none: UNSUPPORTED_SASL_MECHANISM was answered).
fn handshake(
    auth: &Authenticator,
    cid: i32,
    version: i16,
    req: &SaslHandshakeRequest,
) -> (Outcome, Option<(Exchange, &'static str)>) {
    let mut resp = SaslHandshakeResponse::default();
    resp.mechanisms = auth
        .enabled()
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect();
    let name = req.mechanism.as_str();
    let started = auth
        .start(name)
        .zip(SaslMechanism::from_name(name).map(SaslMechanism::name));
    if started.is_none() {
        resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
    }
    (encode(cid, version, &resp), started)
}

/// Takes one SaslAuthenticate token and answers it (with the session's
/// lifetime from v1 once authenticated).
async fn exchange_step(
    auth: &Authenticator,
    ex: Exchange,
    cid: i32,
    version: i16,
    token: &[u8],
    ip: IpAddr,
) -> (Outcome, Progress) {
    let (next, step) = auth.step(ex, token, ip).await;
    let mut resp = SaslAuthenticateResponse::default();
    let progress = match step {
        Step::Continue(reply) => {
            resp.auth_bytes = reply.into();
            match next {
                Some(ex) => Progress::Continue(ex),
                None => Progress::Failed("the exchange ended early".into()),
            }
        }
        Step::Done {
            user,
            reply,
            expires,
        } => {
            resp.auth_bytes = reply.into();
            let lifetime = auth.session_lifetime(expires);
            if version >= 1 {
                resp.session_lifetime_ms = lifetime.map_or(0, |l| {
                    i64::try_from(l.as_millis()).unwrap_or(i64::MAX).max(1)
                });
            }
            Progress::Done { user, lifetime }
        }
        Step::Failed(msg) => {
            resp.error_code = ResponseError::SaslAuthenticationFailed.code();
            resp.error_message = Some(StrBytes::from_string(msg.clone()));
            Progress::Failed(msg)
        }
    };
    (encode(cid, version, &resp), progress)
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &Authenticator,
    ip: IpAddr,
) -> Result<Session, AuthError> {
    let mut state = State::Handshake;
    let session = |user: &str, mechanism, lifetime: Option<Duration>| Session {
        principal: user_principal(user),
        mechanism,
        expires: lifetime.map(|l| Instant::now() + l),
    };
    loop {
        let mut frame = read_frame(stream).await?;
        if let State::Exchanging { raw: true, .. } = state {
            let State::Exchanging { ex, mechanism, .. } =
                std::mem::replace(&mut state, State::Handshake)
            else {
                unreachable!()
            };
            let (next, step) = auth.step(ex, &frame, ip).await;
            match step {
                Step::Continue(reply) => {
                    write_frame(stream, &reply).await?;
                    state = State::Exchanging {
                        ex: next.ok_or(AuthError::Malformed)?,
                        mechanism,
                        raw: true,
                    };
                }
                Step::Done {
                    user,
                    reply,
                    expires,
                } => {
                    write_frame(stream, &reply).await?;
                    return Ok(session(&user, mechanism, auth.session_lifetime(expires)));
                }
                // Unframed SASL has no error answer: the connection closes.
                Step::Failed(msg) => return Err(AuthError::Failed(msg)),
            }
            continue;
        }
        let (key, version, header) = request_header(&mut frame)?;
        let cid = header.correlation_id;
        if version.is_none() {
            // ApiVersions at a version we do not serve.
            respond(stream, api_versions::unsupported_version(cid)).await?;
            continue;
        }
        let version = version.unwrap_or_default();
        match (key, state) {
            (ApiKey::ApiVersions, s) => {
                decode::<ApiVersionsRequest>(&mut frame, version).ok_or(AuthError::Malformed)?;
                respond(stream, encode(cid, version, &api_versions::response())).await?;
                state = s;
            }
            (ApiKey::SaslHandshake, State::Handshake) => {
                let req = decode::<SaslHandshakeRequest>(&mut frame, version)
                    .ok_or(AuthError::Malformed)?;
                let (answer, started) = handshake(auth, cid, version, &req);
                respond(stream, answer).await?;
                let Some((ex, mechanism)) = started else {
                    return Err(AuthError::Failed(format!(
                        "unsupported SASL mechanism {}",
                        req.mechanism.as_str()
                    )));
                };
                state = State::Exchanging {
                    ex,
                    mechanism,
                    raw: version == 0,
                };
            }
            (
                ApiKey::SaslAuthenticate,
                State::Exchanging {
                    ex,
                    mechanism,
                    raw: false,
                },
            ) => {
                let req = decode::<SaslAuthenticateRequest>(&mut frame, version)
                    .ok_or(AuthError::Malformed)?;
                let (answer, progress) =
                    exchange_step(auth, ex, cid, version, &req.auth_bytes, ip).await;
                respond(stream, answer).await?;
                match progress {
                    Progress::Continue(ex) => {
                        state = State::Exchanging {
                            ex,
                            mechanism,
                            raw: false,
                        }
                    }
                    Progress::Done { user, lifetime } => {
                        return Ok(session(&user, mechanism, lifetime))
                    }
                    Progress::Failed(msg) => return Err(AuthError::Failed(msg)),
                }
            }
            (other, _) => return Err(AuthError::Unexpected(Some(other))),
        }
    }
}

/// A request frame's API key, its version (none: an ApiVersions version we
/// do not serve, to be answered with the v0 fallback) and its header.
fn request_header(frame: &mut Bytes) -> Result<(ApiKey, Option<i16>, RequestHeader), AuthError> {
    if frame.len() < 8 {
        return Err(AuthError::Malformed);
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).ok();
    let Some((lo, hi)) = key.and_then(crate::dispatch::supported) else {
        return Err(AuthError::Unexpected(key));
    };
    let key = key.ok_or(AuthError::Malformed)?;
    if version < lo || version > hi {
        if key == ApiKey::ApiVersions {
            let mut header = RequestHeader::default();
            header.correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return Ok((key, None, header));
        }
        return Err(AuthError::Unexpected(Some(key)));
    }
    let header = RequestHeader::decode(frame, key.request_header_version(version))
        .map_err(|_| AuthError::Malformed)?;
    Ok((key, Some(version), header))
}

/// Re-authentication (KIP-368) of an established SASL session: the client
/// sends SaslHandshake (v1+) and SaslAuthenticate again, in band, with the
/// same mechanism and as the same principal; the session is then extended.
/// A session past its expiry serves nothing but re-authentication.
pub struct Reauth {
    session: Session,
    exchange: Option<Exchange>,
}

/// What a re-authentication request led to.
pub enum ReauthStep {
    /// Answer and carry on.
    Answer(Outcome),
    /// Answer, then close the connection (failed or malformed).
    AnswerAndClose(Outcome),
}

impl Reauth {
    /// Tracks `session`.
    pub fn new(session: Session) -> Self {
        Self {
            session,
            exchange: None,
        }
    }

    /// The session's principal.
    pub fn principal(&self) -> &str {
        &self.session.principal
    }

    /// Whether the session has expired (its connection is to be closed
    /// unless it re-authenticates).
    pub fn expired(&self) -> bool {
        self.session.expires.is_some_and(|e| Instant::now() >= e)
    }

    /// Serves one SaslHandshake or SaslAuthenticate request of an
    /// authenticated connection.
    pub async fn request(
        &mut self,
        auth: &Authenticator,
        mut frame: Bytes,
        ip: IpAddr,
    ) -> ReauthStep {
        let illegal = |key: ApiKey, cid: i32, version: i16| {
            let code = ResponseError::IllegalSaslState.code();
            ReauthStep::AnswerAndClose(match key {
                ApiKey::SaslHandshake => {
                    let mut r = SaslHandshakeResponse::default();
                    r.error_code = code;
                    encode(cid, version, &r)
                }
                _ => {
                    let mut r = SaslAuthenticateResponse::default();
                    r.error_code = code;
                    encode(cid, version, &r)
                }
            })
        };
        let Ok((key, Some(version), header)) = request_header(&mut frame) else {
            return ReauthStep::AnswerAndClose(Outcome::Close);
        };
        let cid = header.correlation_id;
        match key {
            // Re-authentication needs the framed (v1) exchange.
            ApiKey::SaslHandshake if version >= 1 && self.exchange.is_none() => {
                let Some(req) = decode::<SaslHandshakeRequest>(&mut frame, version) else {
                    return ReauthStep::AnswerAndClose(Outcome::Close);
                };
                if req.mechanism.as_str() != self.session.mechanism {
                    tracing::info!(%ip, "re-authentication with another mechanism refused");
                    return illegal(key, cid, version);
                }
                let (answer, started) = handshake(auth, cid, version, &req);
                match started {
                    Some((ex, _)) => {
                        self.exchange = Some(ex);
                        ReauthStep::Answer(answer)
                    }
                    None => ReauthStep::AnswerAndClose(answer),
                }
            }
            ApiKey::SaslAuthenticate => {
                let Some(ex) = self.exchange.take() else {
                    return illegal(key, cid, version);
                };
                let Some(req) = decode::<SaslAuthenticateRequest>(&mut frame, version) else {
                    return ReauthStep::AnswerAndClose(Outcome::Close);
                };
                let (answer, progress) =
                    exchange_step(auth, ex, cid, version, &req.auth_bytes, ip).await;
                match progress {
                    Progress::Continue(ex) => {
                        self.exchange = Some(ex);
                        ReauthStep::Answer(answer)
                    }
                    Progress::Done { user, lifetime }
                        if user_principal(&user) == self.session.principal =>
                    {
                        self.session.expires = lifetime.map(|l| Instant::now() + l);
                        ReauthStep::Answer(answer)
                    }
                    Progress::Done { .. } => {
                        tracing::info!(%ip, "re-authentication as another principal refused");
                        let mut r = SaslAuthenticateResponse::default();
                        r.error_code = ResponseError::SaslAuthenticationFailed.code();
                        r.error_message = Some(StrBytes::from_static_str(
                            "Cannot change principals during re-authentication",
                        ));
                        ReauthStep::AnswerAndClose(encode(cid, version, &r))
                    }
                    Progress::Failed(msg) => {
                        tracing::info!(%ip, error = %msg, "re-authentication failed");
                        ReauthStep::AnswerAndClose(answer)
                    }
                }
            }
            _ => illegal(key, cid, version),
        }
    }
}
