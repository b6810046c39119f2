//! Logs and traces of a `kafscale` process.
//!
//! Logs go to stderr filtered by `--log-level`. With `KAFSCALE_OTLP_ENDPOINT`
//! set, the spans of target [`TRACE_TARGET`] (one per Kafka request at the
//! gateway, the gateway → worker call, the worker's steps, the WAL flush
//! and every S3 call) are exported over OTLP, sampled by
//! `KAFSCALE_TRACE_SAMPLE_RATIO` at the trace root and following the parent
//! across processes. Without it those spans are disabled at their call
//! sites, so they cost next to nothing.

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kafscale_proto::trace_context::TRACE_TARGET;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How spans are sent to the OTLP endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (usually port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (usually port 4318, path /v1/traces).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// Trace export settings (every serving role).
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// OTLP collector to export traces to, e.g. http://otel-collector:4317 (unset: no export).
    #[arg(long, env = "KAFSCALE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: grpc or http/protobuf (then `/v1/traces` is appended to the endpoint unless given).
    #[arg(
        long,
        env = "KAFSCALE_OTLP_PROTOCOL",
        value_enum,
        default_value = "grpc"
    )]
    pub otlp_protocol: OtlpProtocol,
    /// Fraction of traces started here that are recorded (0.0 to 1.0); traces started by a caller follow its decision.
    #[arg(long, env = "KAFSCALE_TRACE_SAMPLE_RATIO", default_value_t = 1.0, value_parser = sample_ratio)]
    pub trace_sample_ratio: f64,
}

fn sample_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a ratio between 0.0 and 1.0")),
    }
}

/// Keeps the trace pipeline alive; dropping it exports what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("trace export shutdown: {e}");
            }
        }
    }
}

/// Installs the log output and, when configured, the trace exporter for a
/// process of `role` (gateway, logworker, dev, operator). Must run inside
/// the Tokio runtime (the gRPC exporter's connection lives on it).
pub fn init(log_level: &str, role: &str, trace: Option<&TraceArgs>) -> anyhow::Result<Telemetry> {
    // Trace spans never reach the log output, whatever the level.
    let filter = EnvFilter::try_new(format!("{log_level},{TRACE_TARGET}=off"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{TRACE_TARGET}=off")));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_filter(filter);
    let Some((endpoint, args)) = trace.and_then(|t| t.otlp_endpoint.as_deref().map(|e| (e, t)))
    else {
        tracing_subscriber::registry().with(fmt).init();
        return Ok(Telemetry { provider: None });
    };
    let provider = tracer_provider(endpoint, args, role)?;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("kafscale"))
        .with_filter(Targets::new().with_target(TRACE_TARGET, tracing::Level::TRACE));
    tracing_subscriber::registry().with(fmt).with(otel).init();
    tracing::info!(
        endpoint,
        protocol = ?args.otlp_protocol,
        sample_ratio = args.trace_sample_ratio,
        "exporting traces over OTLP"
    );
    Ok(Telemetry {
        provider: Some(provider),
    })
}

fn tracer_provider(
    endpoint: &str,
    args: &TraceArgs,
    role: &str,
) -> anyhow::Result<SdkTracerProvider> {
    let exporter = match args.otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(http_traces_url(endpoint))
            .build(),
    }
    .with_context(|| format!("OTLP exporter for {endpoint}"))?;
    let mut resource = Resource::builder().with_attributes([
        KeyValue::new("kafscale.role", role.to_string()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ]);
    // OTEL_SERVICE_NAME, if set, wins over the per-role default.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(format!("kafscale-{role}"));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            args.trace_sample_ratio,
        ))))
        .with_resource(resource.build())
        .build())
}

/// The OTLP/HTTP traces URL for a collector base address.
fn http_traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoints_get_the_traces_path_once() {
        assert_eq!(http_traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            http_traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn sample_ratios_outside_zero_to_one_are_refused() {
        assert_eq!(sample_ratio("0.01"), Ok(0.01));
        assert!(sample_ratio("1.5").is_err());
        assert!(sample_ratio("-0.1").is_err());
        assert!(sample_ratio("x").is_err());
    }
}
