//! [`Telemetry::init`]: the global `tracing` subscriber (text or JSON logs, level by flag or
//! `RUST_LOG`) and, with an OTLP endpoint, the OpenTelemetry meter and tracer providers
//! exporting over gRPC.

use std::any::Any;
use std::sync::Arc;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::Metrics;
use crate::registry::{CONTROL_DURATION, HISTOGRAMS, INSTRUMENTS, InstrumentSpec, Kind};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What [`Telemetry::init`] sets up.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` of the resource, e.g. `ulvsd`.
    pub service_name: String,
    /// OTLP gRPC endpoint (`http://host:4317`); `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// Log format (on stderr).
    pub log_format: LogFormat,
    /// Log filter (`info`, `ulvsd=debug`); `None`: `RUST_LOG`, else `info`.
    pub log_filter: Option<String>,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter did not parse.
    #[error("log filter {0:?}: {1}")]
    Filter(String, String),
    /// An OTLP exporter could not be built.
    #[error("OTLP exporter for {0}: {1}")]
    Exporter(&'static str, String),
    /// A global subscriber was installed already.
    #[error("install the log subscriber: {0}")]
    Subscriber(String),
}

/// The installed telemetry: call [`Telemetry::shutdown`] at exit to flush what is pending.
pub struct Telemetry {
    metrics: Arc<Metrics>,
    meters: Option<SdkMeterProvider>,
    tracers: Option<SdkTracerProvider>,
    /// Observable instruments, kept alive with their callbacks.
    _instruments: Vec<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("otlp_metrics", &self.meters.is_some())
            .field("otlp_traces", &self.tracers.is_some())
            .finish_non_exhaustive()
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

impl Telemetry {
    /// Installs the global subscriber and, with an OTLP endpoint, the exporters. Must run
    /// inside a tokio runtime when an endpoint is given (the gRPC channel lives on it). The
    /// metrics export interval follows `OTEL_METRIC_EXPORT_INTERVAL` (ms, default 60 000) and
    /// the span batch delay `OTEL_BSP_SCHEDULE_DELAY` (ms, default 5 000).
    pub fn init(cfg: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        Self::install(cfg, true)
    }

    /// As [`Telemetry::init`] but exports traces only: for command-line clients (ulvs-agent)
    /// whose spans should join the daemon's traces but that have no metrics of their own.
    pub fn init_traces(cfg: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        Self::install(cfg, false)
    }

    fn install(cfg: &TelemetryConfig, with_metrics: bool) -> Result<Telemetry, TelemetryError> {
        let filter = match &cfg.log_filter {
            Some(f) => EnvFilter::try_new(f)
                .map_err(|e| TelemetryError::Filter(f.clone(), e.to_string()))?,
            None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        };
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi);
        let mut layers: Vec<BoxedLayer> = vec![match cfg.log_format {
            LogFormat::Text => fmt.with_filter(filter).boxed(),
            LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        }];

        let metrics = Metrics::new();
        let mut telemetry = Telemetry {
            metrics: Arc::clone(&metrics),
            meters: None,
            tracers: None,
            _instruments: Vec::new(),
        };
        if let Some(endpoint) = &cfg.otlp_endpoint {
            let resource = Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build();
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| TelemetryError::Exporter("traces", e.to_string()))?;
            let tracers = SdkTracerProvider::builder()
                .with_batch_exporter(spans)
                .with_resource(resource.clone())
                .build();
            let tracer = tracers.tracer(cfg.service_name.clone());
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(LevelFilter::INFO)
                    .boxed(),
            );
            telemetry.tracers = Some(tracers);
        }
        if let (Some(endpoint), true) = (&cfg.otlp_endpoint, with_metrics) {
            let resource = Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build();
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| TelemetryError::Exporter("metrics", e.to_string()))?;
            let meters = SdkMeterProvider::builder()
                .with_reader(PeriodicReader::builder(exporter).build())
                .with_resource(resource)
                .build();
            let meter = meters.meter_with_scope(
                InstrumentationScope::builder("ulvs")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
            );
            telemetry._instruments = register(&meter, &metrics);
            let spec = &HISTOGRAMS[CONTROL_DURATION];
            metrics.set_otel_duration(
                meter
                    .f64_histogram(spec.name)
                    .with_unit(spec.unit)
                    .with_description(spec.description)
                    .with_boundaries(spec.bounds.to_vec())
                    .build(),
            );
            telemetry.meters = Some(meters);
        }
        tracing_subscriber::registry()
            .with(layers)
            .try_init()
            .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
        Ok(telemetry)
    }

    /// The source of every observation (attach the engine to it; count control operations).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Flushes and stops the exporters. Blocks until the last export is done (or failed); call
    /// it outside async code, while the runtime that was current at [`Telemetry::init`] runs.
    pub fn shutdown(self) {
        if let Some(t) = &self.tracers
            && let Err(e) = t.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces failed");
        }
        if let Some(m) = &self.meters
            && let Err(e) = m.shutdown()
        {
            tracing::warn!(error = %e, "flushing metrics failed");
        }
    }
}

/// The data points of instrument `index` as `(value, attributes)`.
fn points(metrics: &Metrics, index: usize) -> Vec<(u64, Vec<KeyValue>)> {
    let obs = metrics.observe_cached();
    let Some(o) = obs.get(index) else {
        return Vec::new();
    };
    o.points
        .iter()
        .map(|p| {
            let attrs = o
                .spec
                .attributes
                .iter()
                .zip(&p.attributes)
                .map(|(k, v)| KeyValue::new(*k, v.clone()))
                .collect();
            (p.value, attrs)
        })
        .collect()
}

/// Registers one observable instrument per [`INSTRUMENTS`] entry on `meter`.
fn register(meter: &Meter, metrics: &Arc<Metrics>) -> Vec<Box<dyn Any + Send + Sync>> {
    INSTRUMENTS
        .iter()
        .enumerate()
        .map(|(i, spec): (usize, &'static InstrumentSpec)| {
            let m = Arc::clone(metrics);
            let inst: Box<dyn Any + Send + Sync> = match spec.kind {
                Kind::Counter => Box::new(
                    meter
                        .u64_observable_counter(spec.name)
                        .with_unit(spec.unit)
                        .with_description(spec.description)
                        .with_callback(move |o| {
                            for (v, a) in points(&m, i) {
                                o.observe(v, &a);
                            }
                        })
                        .build(),
                ),
                Kind::UpDownCounter => Box::new(
                    meter
                        .i64_observable_up_down_counter(spec.name)
                        .with_unit(spec.unit)
                        .with_description(spec.description)
                        .with_callback(move |o| {
                            for (v, a) in points(&m, i) {
                                o.observe(i64::try_from(v).unwrap_or(i64::MAX), &a);
                            }
                        })
                        .build(),
                ),
                Kind::Gauge => Box::new(
                    meter
                        .u64_observable_gauge(spec.name)
                        .with_unit(spec.unit)
                        .with_description(spec.description)
                        .with_callback(move |o| {
                            for (v, a) in points(&m, i) {
                                o.observe(v, &a);
                            }
                        })
                        .build(),
                ),
            };
            inst
        })
        .collect()
}
