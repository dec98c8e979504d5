//! A hook that sees every control request: the span it runs in and its outcome.
//!
//! The daemon's telemetry implements [`RequestObserver`] (spans whose parent is the caller's
//! trace context from the request headers, counters of operations by method and result), so
//! this crate stays free of any telemetry dependency. [`Observed`] wraps a gRPC service with
//! an observer; [`crate::UnixControlSocket::observe`] installs one on the control socket.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tracing::Instrument;

/// Sees every request of the control API.
pub trait RequestObserver: Send + Sync + 'static {
    /// The span request `method` (for example `AddService`) runs in; `headers` are the request's
    /// HTTP/2 headers (gRPC metadata), which may carry a trace context.
    fn start(&self, method: &str, headers: &HeaderMap) -> tracing::Span;

    /// Called once the response (its headers) is ready: `code` is the gRPC status, `Ok` unless
    /// the request failed before its response started (a streaming response that fails later
    /// still counts as `Ok` here).
    fn finish(&self, method: &str, code: tonic::Code, elapsed: Duration);
}

/// A gRPC service whose requests are reported to a [`RequestObserver`].
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    observer: Arc<dyn RequestObserver>,
}

impl<S> fmt::Debug for Observed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

impl<S> Observed<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, observer: Arc<dyn RequestObserver>) -> Self {
        Observed { inner, observer }
    }
}

impl<S: NamedService> NamedService for Observed<S> {
    const NAME: &'static str = S::NAME;
}

/// The gRPC status of a response whose headers are ready: trailers-only error responses carry
/// `grpc-status` in the headers; otherwise the call is (so far) `Ok`.
fn status_of(headers: &HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

impl<S, B, R> Service<Request<B>> for Observed<S>
where
    S: Service<Request<B>, Response = Response<R>, Error = Infallible>,
    S::Future: Send + 'static,
    R: 'static,
{
    type Response = Response<R>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let span = self.observer.start(&method, req.headers());
        let observer = Arc::clone(&self.observer);
        let started = Instant::now();
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let res = fut.await;
                let code = match &res {
                    Ok(r) => status_of(r.headers()),
                    Err(never) => match *never {},
                };
                observer.finish(&method, code, started.elapsed());
                res
            }
            .instrument(span),
        )
    }
}
