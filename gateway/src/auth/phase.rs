//! The authentication phase of a SASL connection: before a principal is
//! established, a connection may send only ApiVersions, SaslHandshake and
//! SaslAuthenticate (or, after a v0 handshake, raw SASL tokens); anything
//! else closes it, and so does a failed authentication (after its answer),
//! an oversized frame (more than [`MAX_AUTH_FRAME`]) or a phase that does
//! not finish within its deadline.

use super::sasl::{Authenticator, Exchange, Step};
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
use std::time::Duration;
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

/// Runs the phase on `stream` from `ip`; the authenticated principal.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &Authenticator,
    ip: IpAddr,
    deadline: Duration,
) -> Result<String, AuthError> {
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
    Exchanging { ex: Exchange, raw: bool },
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &Authenticator,
    ip: IpAddr,
) -> Result<String, AuthError> {
    let mut state = State::Handshake;
    loop {
        let mut frame = read_frame(stream).await?;
        if let State::Exchanging { raw: true, .. } = state {
            let State::Exchanging { ex, .. } = std::mem::replace(&mut state, State::Handshake)
            else {
                unreachable!()
            };
            let (next, step) = auth.step(ex, &frame, ip).await;
            match step {
                Step::Continue(reply) => {
                    write_frame(stream, &reply).await?;
                    state = State::Exchanging {
                        ex: next.ok_or(AuthError::Malformed)?,
                        raw: true,
                    };
                }
                Step::Done { user, reply } => {
                    write_frame(stream, &reply).await?;
                    return Ok(user_principal(&user));
                }
                // Unframed SASL has no error answer: the connection closes.
                Step::Failed(msg) => return Err(AuthError::Failed(msg)),
            }
            continue;
        }
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
                let cid = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                respond(stream, api_versions::unsupported_version(cid)).await?;
                continue;
            }
            return Err(AuthError::Unexpected(Some(key)));
        }
        let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
            .map_err(|_| AuthError::Malformed)?;
        let cid = header.correlation_id;
        match (key, state) {
            (ApiKey::ApiVersions, s) => {
                decode::<ApiVersionsRequest>(&mut frame, version).ok_or(AuthError::Malformed)?;
                respond(stream, encode(cid, version, &api_versions::response())).await?;
                state = s;
            }
            (ApiKey::SaslHandshake, State::Handshake) => {
                let req = decode::<SaslHandshakeRequest>(&mut frame, version)
                    .ok_or(AuthError::Malformed)?;
                let mut resp = SaslHandshakeResponse::default();
                resp.mechanisms = auth
                    .enabled()
                    .iter()
                    .map(|m| StrBytes::from_static_str(m.name()))
                    .collect();
                match auth.start(req.mechanism.as_str()) {
                    Some(ex) => {
                        respond(stream, encode(cid, version, &resp)).await?;
                        state = State::Exchanging {
                            ex,
                            raw: version == 0,
                        };
                    }
                    None => {
                        resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
                        respond(stream, encode(cid, version, &resp)).await?;
                        return Err(AuthError::Failed(format!(
                            "unsupported SASL mechanism {}",
                            req.mechanism.as_str()
                        )));
                    }
                }
            }
            (ApiKey::SaslAuthenticate, State::Exchanging { ex, raw: false }) => {
                let req = decode::<SaslAuthenticateRequest>(&mut frame, version)
                    .ok_or(AuthError::Malformed)?;
                let (next, step) = auth.step(ex, &req.auth_bytes, ip).await;
                let mut resp = SaslAuthenticateResponse::default();
                match step {
                    Step::Continue(reply) => {
                        resp.auth_bytes = reply.into();
                        respond(stream, encode(cid, version, &resp)).await?;
                        state = State::Exchanging {
                            ex: next.ok_or(AuthError::Malformed)?,
                            raw: false,
                        };
                    }
                    Step::Done { user, reply } => {
                        resp.auth_bytes = reply.into();
                        respond(stream, encode(cid, version, &resp)).await?;
                        return Ok(user_principal(&user));
                    }
                    Step::Failed(msg) => {
                        resp.error_code = ResponseError::SaslAuthenticationFailed.code();
                        resp.error_message = Some(StrBytes::from_string(msg.clone()));
                        respond(stream, encode(cid, version, &resp)).await?;
                        return Err(AuthError::Failed(msg));
                    }
                }
            }
            (other, _) => return Err(AuthError::Unexpected(Some(other))),
        }
    }
}
