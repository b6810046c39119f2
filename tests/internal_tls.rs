//! TLS on the internal hops (issue 12), in distributed mode on a real etcd
//! and S3 (moto), with certificates made here: the gateway reaches its
//! worker over gRPC with mutual TLS and clients produce and consume through
//! it; a gateway trusting another CA, and one without a client certificate,
//! cannot reach the worker; the HTTP endpoint (`/metrics`) answers over
//! HTTPS and not over plain HTTP. The same in `kafscale dev`, with a
//! rotated HTTP certificate served without a restart.

mod common;
mod common_cluster;
mod common_etcd;
mod common_s3;

use common::{
    consume_all, create_topic, http_get, https_get, producer, unique_name, DevOptions, DevServer,
    TestPki,
};
use common_cluster::{Cluster, ClusterOptions};
use rdkafka::producer::FutureRecord;
use std::path::Path;
use std::time::{Duration, Instant};

/// The internal CA with a worker certificate (for 127.0.0.1, also served
/// on the HTTP endpoints) and a gateway client certificate, and another CA
/// with a certificate of the same name.
fn pki() -> TestPki {
    let pki = TestPki::new();
    let ca = pki.ca("ca", "internal CA");
    pki.issue("worker", "worker", &ca);
    pki.issue("gateway", "gateway", &ca);
    pki.issue("http", "localhost", &ca);
    let other = pki.ca("other-ca", "someone else's CA");
    pki.issue("stranger", "gateway", &other);
    pki
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Whether one record produced through `bootstrap` is acknowledged within
/// `timeout`.
async fn produce_one(bootstrap: &str, topic: &str, timeout: Duration) -> Result<(), String> {
    let message_timeout = timeout.as_millis().to_string();
    let p = producer(
        bootstrap,
        &[("message.timeout.ms", message_timeout.as_str())],
    );
    p.send(
        FutureRecord::to(topic).partition(0).key("k").payload("v"),
        timeout,
    )
    .await
    .map(|_| ())
    .map_err(|(e, _)| e.to_string())
}

/// Reads both partitions of `topic` through `bootstrap`: `n` records in all.
async fn read_back(bootstrap: &str, topic: &str, n: usize) {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    let (highs, records) =
        tokio::task::spawn_blocking(move || consume_all(&b, &t, 2, Duration::from_secs(30)))
            .await
            .expect("consumer thread");
    assert_eq!(highs.values().sum::<i64>(), n as i64, "high watermarks");
    let read: usize = records.values().map(Vec::len).sum();
    assert_eq!(read, n, "records read back");
}

/// `/metrics` of `addr` answers over HTTPS (trusting `ca`) and not over
/// plain HTTP.
async fn metrics_only_over_https(addr: std::net::SocketAddr, ca: &Path, what: &str) {
    // A loaded machine may miss the helper's 3 s bound once.
    let mut attempt = https_get(addr, "/metrics", ca).await;
    for _ in 0..2 {
        if attempt.is_ok() {
            break;
        }
        attempt = https_get(addr, "/metrics", ca).await;
    }
    let (status, body) = attempt.unwrap_or_else(|e| panic!("{what}: /metrics over HTTPS: {e}"));
    assert_eq!(status, 200, "{what}: /metrics over HTTPS");
    assert!(
        body.contains("kafscale_"),
        "{what}: metrics text: {body:.200}"
    );
    let plain = http_get(addr, "/metrics").await;
    assert!(
        !matches!(plain, Ok((200, _))),
        "{what}: /metrics answered over plain HTTP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_workers_over_mutual_tls_and_metrics_are_served_over_https() {
    let pki = pki();
    let mut c = Cluster::start(ClusterOptions {
        workers: 1,
        gateways: 1,
        env: env(&[
            ("KAFSCALE_HTTP_TLS_CERT_FILE", pki.arg("worker.pem")),
            ("KAFSCALE_HTTP_TLS_KEY_FILE", pki.arg("worker.key")),
        ]),
        // Workers serve TLS and require client certificates of the CA.
        worker_env: env(&[
            ("KAFSCALE_INTERNAL_TLS_CERT_FILE", pki.arg("worker.pem")),
            ("KAFSCALE_INTERNAL_TLS_KEY_FILE", pki.arg("worker.key")),
            ("KAFSCALE_INTERNAL_TLS_CA_FILE", pki.arg("ca.pem")),
        ]),
        gateway_env: env(&[
            ("KAFSCALE_INTERNAL_TLS_CA_FILE", pki.arg("ca.pem")),
            ("KAFSCALE_INTERNAL_TLS_CERT_FILE", pki.arg("gateway.pem")),
            ("KAFSCALE_INTERNAL_TLS_KEY_FILE", pki.arg("gateway.key")),
        ]),
        http_ca: Some(pki.path("ca.pem")),
        ..Default::default()
    })
    .await;

    // Produce and consume through the gateway: every data request crosses
    // the mutual-TLS gRPC hop.
    let topic = unique_name("itls");
    let b = c.bootstrap(0);
    create_topic(&b, &topic, 2, &[]).await;
    let p = producer(&b, &[("acks", "all")]);
    for i in 0..20 {
        let v = format!("v{i}");
        p.send(
            FutureRecord::to(&topic)
                .partition(i % 2)
                .key("k")
                .payload(&v),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce over internal mTLS: {e}\n{}", c.logs(40)));
    }
    read_back(&b, &topic, 20).await;

    // The HTTP endpoints: HTTPS only.
    metrics_only_over_https(c.gateways[0].http_addr(), &pki.path("ca.pem"), "gateway").await;
    metrics_only_over_https(c.workers[0].http_addr(), &pki.path("ca.pem"), "worker").await;

    // A gateway that trusts another CA refuses the worker's certificate; a
    // gateway without a client certificate is refused by the worker.
    let other_ca = pki.arg("other-ca.pem");
    let wrong_ca = c
        .add_gateway_with(&[("KAFSCALE_INTERNAL_TLS_CA_FILE", Some(other_ca.as_str()))])
        .await;
    let no_cert = c
        .add_gateway_with(&[
            ("KAFSCALE_INTERNAL_TLS_CERT_FILE", None),
            ("KAFSCALE_INTERNAL_TLS_KEY_FILE", None),
        ])
        .await;
    let stranger = (pki.arg("stranger.pem"), pki.arg("stranger.key"));
    let foreign_cert = c
        .add_gateway_with(&[
            ("KAFSCALE_INTERNAL_TLS_CERT_FILE", Some(stranger.0.as_str())),
            ("KAFSCALE_INTERNAL_TLS_KEY_FILE", Some(stranger.1.as_str())),
        ])
        .await;
    // With TLS 1.3 the client learns of a refused client certificate only
    // from the worker's alert or its closing the connection.
    for (i, what, reasons) in [
        (
            wrong_ca,
            "a gateway trusting another CA",
            &["UnknownIssuer"][..],
        ),
        (
            no_cert,
            "a gateway without a client certificate",
            &["CertificateRequired", "connection closed"][..],
        ),
        (
            foreign_cert,
            "a gateway whose certificate another CA issued",
            &["UnknownCA", "connection closed"][..],
        ),
    ] {
        let started = Instant::now();
        let r = produce_one(&c.bootstrap(i), &topic, Duration::from_secs(8)).await;
        assert!(
            r.is_err(),
            "{what} produced through a worker it must not reach:\n{}",
            c.gateways[i].log_tail(20)
        );
        let log = c.gateways[i].log();
        assert!(
            reasons.iter().any(|r| log.contains(r)),
            "{what}: none of {reasons:?} in its log:\n{}",
            c.gateways[i].log_tail(20)
        );
        eprintln!(
            "[internal-tls] {what}: refused after {:?} ({})",
            started.elapsed(),
            r.err().unwrap_or_default()
        );
    }
    // The well-configured gateway is unaffected, and nothing was added by
    // the refused ones.
    produce_one(&b, &topic, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("produce after the refusals: {e}"));
    read_back(&b, &topic, 21).await;
}

/// `kafscale dev` with TLS on its loopback gRPC (mTLS) and its HTTP
/// endpoint: clients are served, and a certificate rotated on disk is served
/// by the HTTP endpoint without a restart (the reloader the Kafka listener
/// uses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_internal_and_http_tls_and_picks_up_a_rotated_certificate() {
    let pki = pki();
    let server =
        DevServer::start(DevOptions::default().internal_and_http_tls(&pki, "worker", "http")).await;
    let topic = unique_name("devtls");
    create_topic(&server.bootstrap(), &topic, 2, &[]).await;
    produce_one(&server.bootstrap(), &topic, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("produce through dev's TLS gRPC: {e}"));
    read_back(&server.bootstrap(), &topic, 1).await;
    metrics_only_over_https(server.http_addr(), &pki.path("ca.pem"), "dev").await;

    // cert-manager writes a pair from another CA: served within the reload
    // interval, and the old CA no longer verifies it.
    let other = pki.ca("rotated-ca", "rotated CA");
    pki.issue("http", "localhost", &other);
    let deadline = Instant::now() + Duration::from_secs(60);
    while https_get(server.http_addr(), "/metrics", &pki.path("rotated-ca.pem"))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the rotated HTTP certificate was never served:\n{}",
            server.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        https_get(server.http_addr(), "/metrics", &pki.path("ca.pem"))
            .await
            .is_err(),
        "the old HTTP certificate is still served"
    );
}
