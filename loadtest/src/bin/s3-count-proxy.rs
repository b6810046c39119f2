//! `s3-count-proxy`: an HTTP/1.1 reverse proxy in front of an S3-compatible
//! server that counts the requests passing through it by S3 operation, so a
//! benchmark can report S3 requests per GiB for any system (ours reports
//! them in its metrics; a peer such as Tansu does not).
//!
//! Usage: `s3-count-proxy LISTEN_ADDR UPSTREAM_ADDR [DELAY_MS]`, e.g.
//! `s3-count-proxy 127.0.0.1:23001 127.0.0.1:23000`. With `DELAY_MS`, every
//! request waits that long before it is forwarded: a local server then
//! answers with the time to first byte of a remote object store (S3 Standard
//! is in the tens of milliseconds), so that a benchmark shows what
//! sequential requests cost there. Point the system's S3
//! endpoint at the listen address (path-style addressing). `GET
//! /__counts` answers the counts so far as JSON (`{"PutObject": 12, ...}`)
//! and is not forwarded or counted. Requests are forwarded unchanged,
//! including their signatures (the Host header is kept).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;
type Counts = Arc<Mutex<BTreeMap<&'static str, u64>>>;

/// The S3 operation a request is, from its method, path and query.
fn operation(method: &Method, uri: &Uri) -> &'static str {
    let query = uri.query().unwrap_or("");
    let has = |key: &str| {
        query
            .split('&')
            .any(|kv| kv == key || kv.starts_with(&format!("{key}=")))
    };
    // Path-style: "/bucket" is a bucket operation, "/bucket/key" an object one.
    let object = uri.path().trim_start_matches('/').contains('/');
    match *method {
        Method::PUT if has("partNumber") => "UploadPart",
        Method::PUT if object => "PutObject",
        Method::PUT => "CreateBucket",
        Method::GET if !object && has("uploads") => "ListMultipartUploads",
        Method::GET if !object => "ListObjects",
        Method::GET => "GetObject",
        Method::HEAD if object => "HeadObject",
        Method::HEAD => "HeadBucket",
        Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        Method::DELETE => "DeleteObject",
        Method::POST if has("delete") => "DeleteObjects",
        Method::POST if has("uploads") => "CreateMultipartUpload",
        Method::POST if has("uploadId") => "CompleteMultipartUpload",
        _ => "Other",
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    client: Client<HttpConnector, Incoming>,
    counts: Counts,
    delay: Duration,
) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/__counts" {
        let json = match counts.lock() {
            Ok(c) => serde_json::to_string(&*c).unwrap_or_default(),
            Err(_) => "{}".to_string(),
        };
        return Ok(Response::new(full(json)));
    }
    let op = operation(req.method(), req.uri());
    if let Ok(mut c) = counts.lock() {
        *c.entry(op).or_default() += 1;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = match format!("http://{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(e) => {
            let mut resp = Response::new(full(format!("bad uri: {e}")));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(resp);
        }
    };
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(e) => {
            let mut resp = Response::new(full(format!("upstream: {e}")));
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(resp)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: s3-count-proxy LISTEN_ADDR UPSTREAM_ADDR [DELAY_MS]";
    let listen: SocketAddr = args.next().context(usage)?.parse().context(usage)?;
    let upstream: SocketAddr = args.next().context(usage)?.parse().context(usage)?;
    let delay = match args.next() {
        Some(ms) => Duration::from_millis(ms.parse().context(usage)?),
        None => Duration::ZERO,
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let counts: Counts = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (client, counts) = (client.clone(), counts.clone());
        tokio::spawn(async move {
            let service =
                service_fn(move |req| handle(req, upstream, client.clone(), counts.clone(), delay));
            // A client closing mid-request is not the proxy's error.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, uri: &str) -> &'static str {
        operation(&method, &uri.parse().expect("uri"))
    }

    #[test]
    fn classifies_path_style_requests() {
        assert_eq!(op(Method::PUT, "/b/wal/0001"), "PutObject");
        assert_eq!(op(Method::PUT, "/b"), "CreateBucket");
        assert_eq!(
            op(Method::PUT, "/b/k?partNumber=2&uploadId=x"),
            "UploadPart"
        );
        assert_eq!(op(Method::GET, "/b/k"), "GetObject");
        assert_eq!(op(Method::GET, "/b?list-type=2&prefix=wal"), "ListObjects");
        assert_eq!(op(Method::GET, "/b?uploads"), "ListMultipartUploads");
        assert_eq!(op(Method::HEAD, "/b/k"), "HeadObject");
        assert_eq!(op(Method::DELETE, "/b/k"), "DeleteObject");
        assert_eq!(op(Method::POST, "/b?delete"), "DeleteObjects");
        assert_eq!(op(Method::POST, "/b/k?uploads"), "CreateMultipartUpload");
        assert_eq!(
            op(Method::POST, "/b/k?uploadId=x"),
            "CompleteMultipartUpload"
        );
    }
}
