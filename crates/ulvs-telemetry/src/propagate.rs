//! The span of one control request, child of the caller's W3C trace context.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use ulvs_proto::trace::TraceParent;

/// An OpenTelemetry context whose (remote) span is `tp`.
pub fn remote_context(tp: &TraceParent) -> opentelemetry::Context {
    let flags = if tp.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let sc = SpanContext::new(
        TraceId::from_bytes(tp.trace_id),
        SpanId::from_bytes(tp.span_id),
        flags,
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

/// The server span of gRPC method `method` of `ulvs.v1.Ulvs`, named as the OpenTelemetry RPC
/// conventions say (`ulvs.v1.Ulvs/AddService`), whose parent is the `traceparent` in `headers`
/// when there is a valid one.
pub fn server_span(method: &str, headers: &tonic::codegen::http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "rpc",
        otel.name = %format_args!("ulvs.v1.Ulvs/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "ulvs.v1.Ulvs",
        rpc.method = %method,
    );
    if let Some(tp) = TraceParent::from_headers(headers) {
        // Fails only when no OpenTelemetry layer is installed (no OTLP endpoint): nothing to do.
        let _ = span.set_parent(remote_context(&tp));
    }
    span
}
