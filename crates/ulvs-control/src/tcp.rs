//! Serving the control API on TCP: TLS always (rustls), client certificates and a bearer token
//! optionally.
//!
//! There is no plain-text TCP listener: [`TcpOptions`] cannot be built without a certificate
//! and key. With a client CA, the TLS handshake requires a client certificate signed by it
//! (mTLS). With a token, every `ulvs.v1.Ulvs` and reflection call must carry
//! `authorization: Bearer <token>` (compared in constant time) or gets `UNAUTHENTICATED`; the
//! gRPC health service stays open so that load balancers and probes can check the daemon.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::ServingStatus;

use crate::server::reflection_builder;
use crate::{Backend, ControlService, ServeError};

/// How to serve the control API on TCP.
#[derive(Clone)]
pub struct TcpOptions {
    /// Server certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Server private key, PEM.
    pub key_pem: Vec<u8>,
    /// CA certificates (PEM) that client certificates must chain to; `None` accepts any client
    /// (no client certificate asked for).
    pub client_ca_pem: Option<Vec<u8>>,
    /// Bearer token every API call must carry; `None` for no token check.
    pub token: Option<String>,
}

impl std::fmt::Debug for TcpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key or the token.
        f.debug_struct("TcpOptions")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// Checks `authorization: Bearer <token>` on every request, when a token is set.
#[derive(Clone)]
pub struct BearerCheck {
    token: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for BearerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerCheck")
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl BearerCheck {
    /// A check for `token` (`None`: every request passes).
    pub fn new(token: Option<&str>) -> Self {
        BearerCheck {
            token: token.map(|t| Arc::from(t.as_bytes())),
        }
    }
}

/// Equal length and equal bytes, in time that depends only on the length.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for BearerCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = &self.token else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        let given = given
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| Status::unauthenticated("the authorization is not a bearer token"))?;
        if same_bytes(given, want) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("the bearer token is not valid"))
        }
    }
}

/// A bound TCP control listener, ready to serve.
pub struct TcpControlListener {
    listener: TcpListener,
    options: TcpOptions,
    observer: Option<std::sync::Arc<dyn crate::RequestObserver>>,
}

impl std::fmt::Debug for TcpControlListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpControlListener")
            .field("listener", &self.listener)
            .field("options", &self.options)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

/// Binds `addr` for the control API over TLS. Checks the certificate, key and CA up front, so
/// that a daemon with a broken TLS setup refuses to start rather than failing every handshake.
pub async fn bind_tcp(
    addr: SocketAddr,
    options: TcpOptions,
) -> Result<TcpControlListener, ServeError> {
    tls_config(&options)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::BindTcp { addr, source })?;
    Ok(TcpControlListener {
        listener,
        options,
        observer: None,
    })
}

fn tls_config(options: &TcpOptions) -> Result<ServerTlsConfig, ServeError> {
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(&options.cert_pem, &options.key_pem));
    if let Some(ca) = &options.client_ca_pem {
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    // Building a server with it parses the PEM data: errors show here, not at the first client.
    Server::builder().tls_config(tls.clone())?;
    Ok(tls)
}

impl TcpControlListener {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(ServeError::LocalAddr)
    }

    /// Reports every `ulvs.v1.Ulvs` request (its span, its outcome, refusals by the token
    /// check included) to `observer`.
    pub fn observe(mut self, observer: std::sync::Arc<dyn crate::RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Serves `ulvs.v1.Ulvs`, health and reflection over TLS until `shutdown` resolves.
    pub async fn serve<B: Backend>(
        self,
        service: ControlService<B>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let TcpControlListener {
            listener,
            options,
            observer,
        } = self;
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        let tls = tls_config(&options)?;
        let check = BearerCheck::new(options.token.as_deref());
        let api = InterceptedService::new(service.into_server(), check.clone());
        let (plain, observed) = match observer {
            Some(o) => (None, Some(crate::Observed::new(api, o))),
            None => (Some(api), None),
        };
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(ulvs_proto::SERVICE_NAME, ServingStatus::Serving)
            .await;
        let reflection_v1 = reflection_builder().build_v1()?;
        let reflection_v1alpha = reflection_builder().build_v1alpha()?;
        tracing::info!(
            %addr,
            mtls = options.client_ca_pem.is_some(),
            token = options.token.is_some(),
            "control API listening on TCP with TLS"
        );
        let result = Server::builder()
            .tls_config(tls)?
            .add_service(health)
            .add_service(InterceptedService::new(reflection_v1, check.clone()))
            .add_service(InterceptedService::new(reflection_v1alpha, check.clone()))
            .add_optional_service(plain)
            .add_optional_service(observed)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        tracing::info!(%addr, "TCP control API stopped");
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_compared_exactly() {
        let mut check = BearerCheck::new(Some("s3cret"));
        let with = |value: &str| {
            let mut r = Request::new(());
            r.metadata_mut()
                .insert("authorization", value.parse().expect("ascii"));
            r
        };
        assert!(check.call(with("Bearer s3cret")).is_ok());
        for bad in ["Bearer s3cre", "Bearer s3cret!", "bearer s3cret", "s3cret"] {
            let err = check.call(with(bad)).expect_err(bad);
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let err = check.call(Request::new(())).expect_err("no header");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(BearerCheck::new(None).call(Request::new(())).is_ok());
    }
}
