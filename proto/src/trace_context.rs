//! W3C trace context carried in gRPC metadata between gateway and worker,
//! so one Kafka request is one trace across processes.
//!
//! Both ends use the process-wide OpenTelemetry propagator: without
//! `KAFSCALE_OTLP_ENDPOINT` it is the no-op propagator, so injecting adds
//! nothing to a request and extracting yields an empty context.

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Target of every span that is exported as a trace (`kafscale::trace`):
/// the log output filters it out, the OTLP exporter takes only it.
pub const TRACE_TARGET: &str = "kafscale::trace";

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// A tonic interceptor that writes the current span's trace context into
/// the outgoing request (`traceparent`, `tracestate`).
pub fn inject_current(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    // Tracing off (or this call untraced): nothing to carry, and the
    // produce and fetch paths skip the global propagator's lock.
    let span = tracing::Span::current();
    if span.is_disabled() {
        return Ok(req);
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(req.metadata_mut()))
    });
    Ok(req)
}

/// Makes the trace context a request carries the parent of `span`.
pub fn set_remote_parent(span: &tracing::Span, metadata: &MetadataMap) {
    if span.is_disabled() {
        return;
    }
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(metadata)));
    if opentelemetry::trace::TraceContextExt::has_active_span(&cx) {
        let _ = span.set_parent(cx);
    }
}

/// A recorded span another span can link to (a WAL flush links to every
/// produce it carries: one flush serves many requests, so it has no parent).
pub type TraceLink = opentelemetry::trace::SpanContext;

/// A link to the current span, if it is being recorded and sampled.
pub fn current_link() -> Option<TraceLink> {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = opentelemetry::trace::TraceContextExt::span(&cx)
        .span_context()
        .clone();
    (sc.is_valid() && sc.is_sampled()).then_some(sc)
}

/// Links `span` to each of `links`.
pub fn add_links(span: &tracing::Span, links: impl IntoIterator<Item = TraceLink>) {
    for l in links {
        span.add_link(l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    #[test]
    fn trace_context_round_trips_through_metadata() {
        let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc.clone());
        let mut md = MetadataMap::new();
        propagator.inject_context(&cx, &mut MetadataInjector(&mut md));
        assert_eq!(
            md.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let back = propagator.extract(&MetadataExtractor(&md));
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
        assert_eq!(back.span().span_context().span_id(), sc.span_id());
        assert!(back.span().span_context().is_remote());
    }
}
