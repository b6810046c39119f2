//! The gateway authenticates (issue 12): TLS with certificates made here,
//! SASL PLAIN and SCRAM against credentials in the metadata store, client
//! certificates mapped to principals that the ACL authorizer sees. Clients
//! are real: librdkafka through kcat, and kafka-python.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA, the listener's certificate, and client certificates, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Writes a CA (`ca`) with a server certificate for localhost and
    /// 127.0.0.1 (`server`) and client certificates `alice` and `mallory`,
    /// and a second, untrusted CA with a client certificate `rogue`.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Self::ca("kafscale test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        let write =
            |name: &str, cn: &str, sans: Vec<String>, issuer: &CertifiedIssuer<'_, KeyPair>| {
                let key = KeyPair::generate().expect("key");
                let mut params = CertificateParams::new(sans).expect("params");
                params.distinguished_name.push(DnType::CommonName, cn);
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, "KafScale tests");
                let cert = params.signed_by(&key, issuer).expect("sign");
                std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).expect("write");
                std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem())
                    .expect("write key");
            };
        write(
            "server",
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            &ca,
        );
        write("alice", "alice", Vec::new(), &ca);
        write("mallory", "mallory", Vec::new(), &ca);
        let rogue_ca = Self::ca("someone else's CA");
        write("rogue", "alice", Vec::new(), &rogue_ca);
        Self { dir }
    }

    fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn arg(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    /// The environment of a TLS listener; with client certificates
    /// required if `mtls`.
    fn server_env(&self, opts: DevOptions, mtls: bool) -> DevOptions {
        let opts = opts
            .env("KAFSCALE_TLS_CERT_FILE", self.arg("server.pem"))
            .env("KAFSCALE_TLS_KEY_FILE", self.arg("server.key"));
        if mtls {
            opts.env("KAFSCALE_TLS_CLIENT_CA_FILE", self.arg("ca.pem"))
        } else {
            opts
        }
    }
}

/// kcat's `-X` settings for the listener.
fn kcat_args<'a>(bootstrap: &'a str, settings: &'a [String]) -> Vec<&'a str> {
    let mut args = vec!["-b", bootstrap, "-m", "10"];
    for s in settings {
        args.push("-X");
        args.push(s);
    }
    args
}

fn sasl_ssl(pki: &Pki, mechanism: &str, user: &str, password: &str) -> Vec<String> {
    vec![
        "security.protocol=SASL_SSL".into(),
        format!("sasl.mechanisms={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={}", pki.arg("ca.pem")),
    ]
}

fn counter(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Produces `lines` (`key=value`) to `topic`, then reads them back.
async fn round_trip(bootstrap: &str, produce: &[String], consume: &[String], topic: &str) {
    let lines = "k1=v1\nk2=v2\nk3=v3\n";
    let mut p = kcat_args(bootstrap, produce);
    p.extend(["-P", "-t", topic, "-K", "="]);
    let out = run_kcat(&p, Some(lines)).await;
    assert!(out.ok, "produce failed:\n{}", out.stderr);
    let mut c = kcat_args(bootstrap, consume);
    c.extend(["-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k=%s\n"]);
    let out = run_kcat(&c, None).await;
    assert!(out.ok, "consume failed:\n{}", out.stderr);
    assert_eq!(out.stdout, lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_authenticates_over_sasl_ssl_with_scram_and_plain_and_bad_credentials_see_nothing(
) {
    let pki = Pki::new();
    let server = DevServer::start(
        pki.server_env(DevOptions::default(), false)
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_SSL")
            .env(
                "KAFSCALE_SASL_USERS",
                "alice:alice-secret,admin:admin-secret",
            ),
    )
    .await;
    let b = server.bootstrap();
    let topic = unique_name("sasl-ssl");
    round_trip(
        &b,
        &sasl_ssl(&pki, "SCRAM-SHA-512", "alice", "alice-secret"),
        &sasl_ssl(&pki, "PLAIN", "alice", "alice-secret"),
        &topic,
    )
    .await;
    for (mechanism, user, password) in [
        ("SCRAM-SHA-512", "alice", "wrong"),
        ("SCRAM-SHA-256", "nobody", "alice-secret"),
        ("PLAIN", "alice", "wrong"),
    ] {
        let settings = sasl_ssl(&pki, mechanism, user, password);
        let mut args = kcat_args(&b, &settings);
        args.extend(["-C", "-t", &topic, "-o", "beginning", "-e"]);
        let out = run_kcat(&args, None).await;
        assert!(
            !out.ok && out.stdout.is_empty(),
            "{mechanism} {user}/{password} read data:\n{}",
            out.stdout
        );
        assert!(
            out.stderr.contains("Authentication failed"),
            "{mechanism} {user}/{password}: no authentication error:\n{}",
            out.stderr
        );
    }
    let scrape = server.metrics().await;
    let auth = |m: &str, o: &str| {
        counter(
            &scrape,
            &format!("kafscale_gateway_authentications_total{{mechanism=\"{m}\",outcome=\"{o}\"}}"),
        )
    };
    assert!(auth("SCRAM-SHA-512", "success") >= 1.0, "{scrape}");
    assert!(auth("PLAIN", "success") >= 1.0);
    assert!(auth("SCRAM-SHA-512", "failure") >= 1.0);
    assert!(auth("SCRAM-SHA-256", "failure") >= 1.0);
    assert!(auth("PLAIN", "failure") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_scram_sha_256_and_the_credentials_api_over_sasl_plaintext() {
    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env("KAFSCALE_SASL_USERS", "admin:admin-secret"),
    )
    .await;
    run_kafka_python_check("sasl_check.py", &server, &[]).await;
    // kafka-python reports refusals as bootstrap failures: the broker's
    // counters show they were authentication failures.
    let scrape = server.metrics().await;
    for m in ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] {
        assert!(
            counter(
                &scrape,
                &format!("kafscale_gateway_authentications_total{{mechanism=\"{m}\",outcome=\"failure\"}}")
            ) >= 1.0,
            "no {m} failure counted:\n{scrape}"
        );
    }
}

/// Writes a request frame of `body` (after the length) and returns what the
/// gateway answers before closing (nothing, if it closes at once).
async fn raw_exchange(addr: std::net::SocketAddr, frame: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(frame).await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the gateway did not close the connection");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_authentication_only_the_sasl_apis_are_served() {
    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env("KAFSCALE_SASL_USERS", "admin:admin-secret"),
    )
    .await;
    // Metadata v0 (no topics) without authenticating: closed, unanswered.
    let mut metadata = Vec::new();
    let body: &[u8] = &[0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 0];
    metadata.extend_from_slice(&(body.len() as u32).to_be_bytes());
    metadata.extend_from_slice(body);
    assert!(raw_exchange(server.kafka_addr(), &metadata)
        .await
        .is_empty());
    // A 100 MiB SASL token is refused by its length, before it is read.
    let started = std::time::Instant::now();
    let huge = (100u32 << 20).to_be_bytes();
    assert!(raw_exchange(server.kafka_addr(), &huge).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    // An unsupported mechanism: UNSUPPORTED_SASL_MECHANISM, then closed.
    let mut hs = vec![0, 17, 0, 1, 0, 0, 0, 7, 0xff, 0xff, 0, 6];
    hs.extend_from_slice(b"GSSAPI");
    let mut frame = (hs.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&hs);
    let answer = raw_exchange(server.kafka_addr(), &frame).await;
    // length, correlation id 7, error code 33
    assert!(answer.len() >= 10, "{answer:?}");
    assert_eq!(&answer[4..8], &7i32.to_be_bytes());
    assert_eq!(&answer[8..10], &33i16.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_their_subject_is_the_principal() {
    let pki = Pki::new();
    let server = DevServer::start(
        pki.server_env(DevOptions::default(), true)
            .env("KAFSCALE_SECURITY_PROTOCOL", "SSL")
            .env("KAFSCALE_AUTHORIZER", "acl")
            .env("KAFSCALE_SUPER_USERS", "User:alice"),
    )
    .await;
    let b = server.bootstrap();
    let ssl = |who: &str| -> Vec<String> {
        let mut s = vec![
            "security.protocol=SSL".to_string(),
            format!("ssl.ca.location={}", pki.arg("ca.pem")),
        ];
        if !who.is_empty() {
            s.push(format!(
                "ssl.certificate.location={}",
                pki.arg(&format!("{who}.pem"))
            ));
            s.push(format!(
                "ssl.key.location={}",
                pki.arg(&format!("{who}.key"))
            ));
        }
        s
    };
    // alice (a super user by her certificate's CN) produces and consumes.
    let topic = unique_name("mtls");
    round_trip(&b, &ssl("alice"), &ssl("alice"), &topic).await;
    // mallory's certificate is valid, but User:mallory may do nothing.
    let settings = ssl("mallory");
    let mut args = kcat_args(&b, &settings);
    args.extend(["-P", "-t", &topic]);
    let out = run_kcat(&args, Some("x\n")).await;
    assert!(
        !out.ok && out.stderr.contains("authorization failed"),
        "mallory could write:\n{}",
        out.stderr
    );
    // A certificate from another CA, and none at all: no TLS session.
    for who in ["rogue", ""] {
        let settings = ssl(who);
        let mut args = kcat_args(&b, &settings);
        args.push("-L");
        let out = run_kcat(&args, None).await;
        assert!(!out.ok, "{who:?} listed metadata:\n{}", out.stdout);
    }
    let scrape = server.metrics().await;
    assert!(
        counter(
            &scrape,
            "kafscale_gateway_authentications_total{mechanism=\"TLS\",outcome=\"failure\"}"
        ) >= 2.0,
        "{scrape}"
    );
}
