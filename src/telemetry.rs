//! Logs (plain or JSON, by flag) and the metrics registry.

pub mod metrics;
#[cfg(feature = "otlp")]
mod otlp;
pub mod process;

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

pub use metrics::Metrics;

/// Set once a trace exporter is installed (see [`spans_exported`]).
static SPANS_EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans leave the process (OTLP), so every span counts, not only
/// those an event is logged in: the hot path opens its request span up front
/// only then.
pub fn spans_exported() -> bool {
    SPANS_EXPORTED.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What [`init`] set up that needs a word at exit: the trace exporter, which
/// sends its last batch in [`Telemetry::shutdown`].
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    otlp: Option<otlp::Exporter>,
}

impl Telemetry {
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(exporter) = self.otlp {
            exporter.shutdown();
        }
    }
}

/// Installs the global subscriber; `level` is a tracing filter (`info`,
/// `konsumer=debug,kube=warn`); with `otlp_endpoint` (`--features otlp`), spans
/// are also exported over OTLP/HTTP. A second call is a no-op.
pub fn init(
    format: LogFormat,
    level: &str,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("--log-level {level:?}: {e}"))?;
    if let Some(endpoint) = otlp_endpoint {
        return with_otlp(format, filter, endpoint);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Tests start several servers in one process; the first subscriber stays.
    let _ = result;
    Ok(Telemetry::default())
}

#[cfg(not(feature = "otlp"))]
fn with_otlp(_: LogFormat, _: EnvFilter, _: &str) -> anyhow::Result<Telemetry> {
    anyhow::bail!(
        "--otlp-endpoint: this konsumer was built without trace export; build it with \
         `cargo build --release --features otlp`, or leave the flag out"
    )
}

#[cfg(feature = "otlp")]
fn with_otlp(format: LogFormat, filter: EnvFilter, endpoint: &str) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let exporter = otlp::exporter(endpoint)?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(exporter.layer())
        .try_init()
        .is_ok()
    {
        SPANS_EXPORTED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Telemetry {
        otlp: Some(exporter),
    })
}
