//! The daemon's telemetry: the command-line flags' effect (logs, OTLP export, the Prometheus
//! scrape endpoint) and the control-request observer (a span per request, child of the
//! caller's `traceparent`; operations counted and timed by method and final result).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tonic::codegen::http::HeaderMap;
use ulvs_control::RequestObserver;
use ulvs_telemetry::{Metrics, Telemetry, TelemetryConfig, server_span};

/// Sets up logging and, with `otlp_endpoint`, OTLP export of metrics and traces. Must be
/// called inside the daemon's tokio runtime.
pub fn init(
    format: ulvs_telemetry::LogFormat,
    filter: Option<String>,
    otlp_endpoint: Option<String>,
) -> anyhow::Result<Telemetry> {
    Telemetry::init(&TelemetryConfig {
        service_name: "ulvsd".to_owned(),
        otlp_endpoint,
        log_format: format,
        log_filter: filter,
    })
    .context("set up logging and telemetry")
}

/// Starts the Prometheus scrape endpoint on `addr`; it stops when the task is aborted.
pub async fn start_prometheus(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}"))?;
    let local = listener.local_addr().context("metrics listener address")?;
    tracing::info!(addr = %local, "Prometheus metrics on http://{local}/metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) =
            ulvs_telemetry::prometheus::serve(listener, metrics, std::future::pending()).await
        {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    }))
}

/// Observes control requests: spans and operation counts.
#[derive(Debug)]
pub struct ControlTelemetry {
    metrics: Arc<Metrics>,
}

impl ControlTelemetry {
    /// An observer counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ControlTelemetry { metrics })
    }
}

impl RequestObserver for ControlTelemetry {
    fn start(&self, method: &str, headers: &HeaderMap) -> tracing::Span {
        server_span(method, headers)
    }

    fn finish(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.metrics.record_request(method, code, elapsed);
    }
}
