//! Trace export over OTLP/HTTP (protobuf), built with `--features otlp`: every
//! tracing span (one per admission request, deliveries) goes to a collector.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The exporter's provider; [`Exporter::shutdown`] sends what is still batched.
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// `endpoint` is the collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`);
/// spans go to `{endpoint}/v1/traces`.
pub fn exporter(endpoint: &str) -> anyhow::Result<Exporter> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("--otlp-endpoint {endpoint:?}: must be an http:// or https:// URL");
    }
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    // reqwest (https collectors) needs the process-wide rustls provider first.
    crate::server::tls::provider();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces)
        .build()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?}: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(
            Resource::builder()
                .with_service_name("konsumer")
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build();
    Ok(Exporter { provider })
}

impl Exporter {
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("konsumer"))
    }

    /// Sends the spans still batched. Blocks: the batch processor runs on its
    /// own thread.
    pub fn shutdown(self) {
        let provider = self.provider;
        let done = std::thread::spawn(move || provider.shutdown()).join();
        if let Ok(Err(e)) = done {
            eprintln!("konsumer: sending the last traces failed: {e}");
        }
    }
}
