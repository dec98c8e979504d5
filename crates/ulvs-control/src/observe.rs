//! A hook that sees every control request: the span it runs in and its outcome.
//!
//! The daemon's telemetry implements [`RequestObserver`] (spans whose parent is the caller's
//! trace context from the request headers, counters of operations by method and result), so
//! this crate stays free of any telemetry dependency. [`Observed`] wraps a gRPC service with
//! an observer; [`crate::UnixControlSocket::observe`] installs one on the control socket.
//!
//! A request is finished when its response *ends*, not when the response starts: the status
//! is read from the response's trailers (or its headers, for an error without a body), so a
//! streaming RPC (`ListConnections`, `Watch`) is reported once, with its final status and its
//! whole duration, and its span lasts as long as the stream. A response the client abandons
//! before its end is reported as `Cancelled`.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Bytes, Context, Poll, Service};
use tonic::server::NamedService;
use tracing::Instrument;

/// Sees every request of the control API.
pub trait RequestObserver: Send + Sync + 'static {
    /// The span request `method` (for example `AddService`) runs in; `headers` are the request's
    /// HTTP/2 headers (gRPC metadata), which may carry a trace context.
    fn start(&self, method: &str, headers: &HeaderMap) -> tracing::Span;

    /// Called once per request, when its response has ended (inside the request's span):
    /// `code` is the final gRPC status (from the trailers, so a stream that fails midway is
    /// not `Ok`; `Cancelled` when the client went away before the end), `elapsed` the time
    /// from the request to the end of the response.
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

/// The `grpc-status` in headers or trailers, if any.
fn status_of(headers: &HeaderMap) -> Option<tonic::Code> {
    let v = headers.get("grpc-status")?;
    Some(
        v.to_str()
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .map_or(tonic::Code::Unknown, tonic::Code::from),
    )
}

/// What reports a request once: its observer, method, start and span.
struct Report {
    observer: Arc<dyn RequestObserver>,
    method: String,
    started: Instant,
    span: tracing::Span,
}

impl Report {
    fn finish(self, code: tonic::Code) {
        let _entered = self.span.enter();
        self.observer
            .finish(&self.method, code, self.started.elapsed());
    }
}

/// A response body that reports its request when it ends (trailers, error or end of data)
/// or is dropped before that (the client went away).
struct ObservedBody<B> {
    inner: Pin<Box<B>>,
    report: Option<Report>,
}

impl<B> ObservedBody<B> {
    fn finish(&mut self, code: tonic::Code) {
        if let Some(r) = self.report.take() {
            r.finish(code);
        }
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_of(trailers).unwrap_or(tonic::Code::Unknown);
                    self.finish(code);
                }
            }
            // The body failed, or ended without the status gRPC requires.
            Poll::Ready(Some(Err(_)) | None) => self.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // Until reported, let the server poll us to the end (so the end is seen).
        self.report.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<S, B, R> Service<Request<B>> for Observed<S>
where
    S: Service<Request<B>, Response = Response<R>, Error = Infallible>,
    S::Future: Send + 'static,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<tonic::body::Body>;
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
        let report = Report {
            observer: Arc::clone(&self.observer),
            method,
            started: Instant::now(),
            span: span.clone(),
        };
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let res = match fut.await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                // An error without a body carries its status in the headers: done now.
                if let Some(code) = status_of(res.headers()) {
                    report.finish(code);
                    return Ok(res.map(tonic::body::Body::new));
                }
                Ok(res.map(|body| {
                    tonic::body::Body::new(ObservedBody {
                        inner: Box::pin(body),
                        report: Some(report),
                    })
                }))
            }
            .instrument(span),
        )
    }
}
