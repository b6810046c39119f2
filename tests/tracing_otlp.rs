//! One produce is one trace (issue 14): gateway and worker run as separate
//! processes on etcd + S3 and export over OTLP to a real OTLP trace receiver
//! (the collector's gRPC service, from `opentelemetry-proto`) started here.
//! A produce sent by librdkafka shows up as the gateway's request span, the
//! gateway → worker call beneath it, the worker's call span through the
//! gRPC hop with its validate / sequence / wait-durable steps, and the WAL
//! flush as its own trace linked to that produce, with the S3 PUT beneath
//! it. A fetch is the same chain down to the worker.

mod common;
mod common_cluster;
mod common_etcd;
mod common_s3;

use common::{consume_ranges, create_topic, producer, unique_name};
use common_cluster::{Cluster, ClusterOptions};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use rdkafka::producer::FutureRecord;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A received span with the service that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        string_attr(&self.span.attributes, key)
    }
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

/// The OTLP trace service: keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Starts the gRPC receiver on a free loopback port; its endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let svc = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the spans received satisfy `cond`, and returns them; on
    /// timeout fails listing what did arrive.
    async fn wait_for(&self, what: &str, cond: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if cond(&spans) {
                return spans;
            }
            if std::time::Instant::now() > deadline {
                let summary: Vec<String> = spans
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} trace={} parent={} links={} attrs={:?}",
                            s.service,
                            s.span.name,
                            hex(&s.span.trace_id),
                            hex(&s.span.parent_span_id),
                            s.span.links.len(),
                            s.span
                                .attributes
                                .iter()
                                .map(|kv| kv.key.as_str())
                                .collect::<Vec<_>>()
                        )
                    })
                    .collect();
                panic!(
                    "timed out waiting until {what}; received:\n{}",
                    summary.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The gateway's request span for `api` naming `topic`, if received.
fn request_span(spans: &[Received], api: &str, topic: &str) -> Option<Received> {
    spans
        .iter()
        .find(|s| {
            s.service == "kafscale-gateway"
                && s.span.name == api
                && s.attr("kafka.topics").as_deref() == Some(topic)
        })
        .cloned()
}

/// The spans of one trace whose parent is `parent`.
fn children<'a>(spans: &'a [Received], parent: &Span) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.span.trace_id == parent.trace_id && s.span.parent_span_id == parent.span_id)
        .collect()
}

/// The one child of `parent` named `name` sent by `service`.
fn child<'a>(spans: &'a [Received], parent: &Span, service: &str, name: &str) -> &'a Received {
    let found: Vec<_> = children(spans, parent)
        .into_iter()
        .filter(|s| s.service == service && s.span.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {service} span {name} under {}; children: {:?}",
        parent.name,
        children(spans, parent)
            .iter()
            .map(|s| (&s.service, &s.span.name))
            .collect::<Vec<_>>()
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_produce_and_a_fetch_are_each_one_trace_across_gateway_worker_and_s3() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let c = Cluster::start(ClusterOptions {
        workers: 1,
        gateways: 1,
        env: vec![
            ("KAFSCALE_OTLP_ENDPOINT".into(), endpoint),
            // Export every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        ..Default::default()
    })
    .await;
    let b = c.bootstrap(0);
    let topic = unique_name("traced");
    create_topic(&b, &topic, 1, &[]).await;
    let p = producer(&b, &[]);
    p.send(
        FutureRecord::to(&topic).partition(0).key("k").payload("v"),
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|(e, _)| panic!("produce: {e}"));

    // The produce: gateway request → worker call → worker's Produce with
    // its steps; the flush that carried it links to it, the PUT beneath.
    let spans = receiver
        .wait_for("the produce's spans arrive", |spans| {
            request_span(spans, "Produce", &topic).is_some_and(|req| {
                spans.iter().any(|s| {
                    s.span.name == "wal.flush"
                        && s.span.links.iter().any(|l| l.trace_id == req.span.trace_id)
                        && !children(spans, &s.span).is_empty()
                })
            })
        })
        .await;
    let req = request_span(&spans, "Produce", &topic).expect("request span");
    assert!(
        req.span.parent_span_id.is_empty(),
        "the request is the trace's root"
    );
    assert!(req.attr("kafka.api_version").is_some());
    assert_eq!(
        req.attr("kafka.principal").as_deref(),
        Some("User:ANONYMOUS")
    );
    let call = child(&spans, &req.span, "kafscale-gateway", "worker.call");
    let rpc = child(&spans, &call.span, "kafscale-logworker", "Produce");
    for step in ["validate", "sequence", "wait_durable"] {
        child(&spans, &rpc.span, "kafscale-logworker", step);
    }
    let sequence = child(&spans, &rpc.span, "kafscale-logworker", "sequence");
    let flush = spans
        .iter()
        .find(|s| {
            s.span.name == "wal.flush"
                && s.span
                    .links
                    .iter()
                    .any(|l| l.trace_id == req.span.trace_id && l.span_id == sequence.span.span_id)
        })
        .expect("a flush span linked to the produce's sequence step");
    assert_ne!(
        flush.span.trace_id, req.span.trace_id,
        "the flush is its own trace (it carries many produces), linked, not parented"
    );
    let put = child(&spans, &flush.span, "kafscale-logworker", "S3 put");
    assert_eq!(put.attr("s3.outcome").as_deref(), Some("ok"));
    assert!(
        put.attr("s3.bytes")
            .and_then(|b| b.parse::<u64>().ok())
            .is_some_and(|b| b > 0),
        "the PUT span carries its bytes: {put:?}"
    );

    // A fetch: gateway request → worker call → worker's Fetch.
    let (bb, t) = (b.clone(), topic.clone());
    let read = tokio::task::spawn_blocking(move || {
        consume_ranges(&bb, &t, &[(0, 0, 1)], Duration::from_secs(30))
    })
    .await
    .expect("consumer");
    assert_eq!(read.get(&0).map(Vec::len), Some(1));
    let spans = receiver
        .wait_for("the fetch's spans arrive", |spans| {
            request_span(spans, "Fetch", &topic).is_some_and(|req| {
                children(spans, &req.span)
                    .iter()
                    .any(|call| !children(spans, &call.span).is_empty())
            })
        })
        .await;
    let req = request_span(&spans, "Fetch", &topic).expect("fetch span");
    let call = child(&spans, &req.span, "kafscale-gateway", "worker.call");
    child(&spans, &call.span, "kafscale-logworker", "Fetch");
}
