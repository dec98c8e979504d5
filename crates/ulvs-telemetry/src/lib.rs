//! ulvs observability: the engine's counters as OpenTelemetry instruments, OTLP export of
//! metrics and traces, a Prometheus scrape endpoint, trace-context propagation and log setup.
//!
//! # Invariants
//! - The packet path is untouched: every instrument is an *observable* one whose callback reads
//!   the engine's atomic counters ([`ulvs_engine::Engine::stats`]) at collection time.
//! - One instrument table ([`registry::INSTRUMENTS`]) feeds both exporters, so OTLP and
//!   Prometheus always agree on names, units and values.
//! - Control operations are counted by the daemon through [`Metrics::record_control`]; the
//!   control crate only knows its own observer trait, not this crate.
//!
//! # Layout
//! - [`registry`]: instrument names, units, kinds and how each reads the engine.
//! - `metrics.rs`: [`Metrics`], the shared source of observations (engine, applied
//!   configuration, control counts), with a short cache so one collection reads the engine once.
//! - `otel.rs`: [`Telemetry::init`]: the log subscriber (text or JSON), and with an OTLP
//!   endpoint the meter and tracer providers, the observable instruments and the
//!   `tracing` → OpenTelemetry bridge.
//! - [`prometheus`]: the text exposition format and the scrape server.
//! - `propagate.rs`: [`server_span`], the span of one control request, child of the caller's
//!   W3C trace context ([`ulvs_proto::trace::TraceParent`]); on the client side
//!   [`PropagateTrace`], an interceptor putting the current span's context on each request,
//!   and [`adopt_env_parent`] for `$TRACEPARENT`.

mod metrics;
mod otel;
pub mod prometheus;
mod propagate;
pub mod registry;

pub use metrics::{AppliedConfig, Metrics, result_label};
pub use otel::{LogFormat, Telemetry, TelemetryConfig, TelemetryError};
pub use propagate::{
    PropagateTrace, adopt_env_parent, current_trace_parent, remote_context, server_span,
};
