//! W3C trace context across gRPC: the span of one control request, child of the caller's
//! context (server side), and the caller's current span put on each request (client side).

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use ulvs_proto::trace::{TRACEPARENT_ENV, TraceParent};

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

/// The W3C trace context of the current `tracing` span, when OpenTelemetry records it (an
/// OTLP endpoint is configured and the span is enabled).
pub fn current_trace_parent() -> Option<TraceParent> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    Some(TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        sampled: sc.is_sampled(),
    })
}

/// Makes `span` a child of the trace context in `$TRACEPARENT` (a CI job's trace, say) when
/// that is set and valid; call it before the span is first entered. Returns whether it did.
pub fn adopt_env_parent(span: &tracing::Span) -> bool {
    let Some(tp) = std::env::var(TRACEPARENT_ENV)
        .ok()
        .and_then(|v| TraceParent::parse(&v))
    else {
        return false;
    };
    span.set_parent(remote_context(&tp)).is_ok()
}

/// A client interceptor that puts the trace context of the span the request is made in on
/// every request, as `traceparent` metadata; when no span is recorded (no OTLP export) it puts
/// its fallback there instead, so the daemon's spans still join the caller's trace.
#[derive(Debug, Clone, Copy)]
pub struct PropagateTrace {
    fallback: TraceParent,
}

impl PropagateTrace {
    /// Falls back to `fallback` outside recorded spans.
    pub fn new(fallback: TraceParent) -> Self {
        PropagateTrace { fallback }
    }

    /// Falls back to one span of this process: a child of `$TRACEPARENT` when that is set,
    /// else the root of a new trace (chosen once per process).
    pub fn from_env() -> Self {
        static FALLBACK: std::sync::OnceLock<TraceParent> = std::sync::OnceLock::new();
        Self::new(*FALLBACK.get_or_init(TraceParent::from_env))
    }

    /// The context a request made now carries.
    pub fn current(&self) -> TraceParent {
        current_trace_parent().unwrap_or(self.fallback)
    }
}

impl tonic::service::Interceptor for PropagateTrace {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.current().inject(req.metadata_mut());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn a_span_under_a_remote_parent_propagates_its_own_id_in_the_parents_trace() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let parent =
            TraceParent::parse("00-5a1b2c3d4e5f60718293a4b5c6d7e8f9-1122334455667788-01").unwrap();
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(current_trace_parent(), None, "outside any span");
            let root = tracing::info_span!("root");
            root.set_parent(remote_context(&parent)).unwrap();
            let _r = root.enter();
            let at_root = current_trace_parent().expect("a recorded span");
            assert_eq!(at_root.trace_id, parent.trace_id);
            assert_ne!(at_root.span_id, parent.span_id);
            let step = tracing::info_span!("step");
            let _s = step.enter();
            let mut md = tonic::metadata::MetadataMap::new();
            let mut req = tonic::Request::new(());
            req = tonic::service::Interceptor::call(
                &mut PropagateTrace::new(TraceParent::new_root()),
                req,
            )
            .unwrap();
            md.clone_from(req.metadata());
            let sent = TraceParent::extract(&md).unwrap();
            assert_eq!(sent.trace_id, parent.trace_id);
            assert_ne!(
                sent.span_id, at_root.span_id,
                "the innermost span is the parent"
            );
        });
        // Without an OpenTelemetry layer the fallback is sent.
        let fallback = TraceParent::new_root();
        assert_eq!(PropagateTrace::new(fallback).current(), fallback);
    }
}
