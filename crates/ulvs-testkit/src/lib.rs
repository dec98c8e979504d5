//! Test harness shared by the tests of `ulvs-control`, `ulvsadm` and `ulvs-agent`: the real
//! control service started in process on a temporary unix socket or a TLS listener on
//! 127.0.0.1, and a throw-away PKI (rcgen) for the TLS tests.
//!
//! A dev-only crate (`publish = false`), used only from `[dev-dependencies]`, so that none of
//! this (nor `tempfile` or `rcgen`) reaches a production build. `ulvs-control` itself
//! dev-depends on it too; that cycle is fine for its integration tests (`tests/*.rs`), which
//! link the same `ulvs-control` library as this crate does.
//!
//! - [`Server`]: the service spawned on the caller's tokio runtime (`#[tokio::test]`), stopped
//!   and checked with [`Server::stop`].
//! - [`Daemon`]: the same on its own runtime, for blocking tests that run the built binaries
//!   (`ulvsadm`, `ulvs-agent`) against it; stopped on drop.
//! - [`tcp_key`] and [`masq`]: API messages most tests need.
//! - [`syn`] and [`process`]: a packet through the engine the service configured.
//! - [`Pki`]: a CA, its leaf certificates, and [`Pki::tcp_options`] for a listener that wants
//!   client certificates from it.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
pub use rcgen::ExtendedKeyUsagePurpose;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use ulvs_control::{
    Backend, ControlService, EngineBackend, RequestObserver, ServeError, TcpOptions, bind_tcp,
    bind_unix,
};
use ulvs_engine::{Engine, EngineOptions, PacketBuf, Timestamp, Verdict};
use ulvs_proto::v1 as pb;
use ulvs_proto::v1::ulvs_client::UlvsClient;

/// The connection-table size [`engine_backend`] reports (`ipvsadm -L`'s `size=`).
pub const TABLE_SIZE: u32 = 4096;

/// The backend ulvsd runs (`EngineBackend`) over a small engine with a fixed hash seed, so
/// that runs are repeatable: 1024 connections, 2 shards, seed 1; reports [`TABLE_SIZE`].
pub fn engine_backend() -> EngineBackend {
    let engine = Arc::new(Engine::new(EngineOptions {
        max_connections: 1024,
        shards: 2,
        hash_seed: 1,
    }));
    EngineBackend::new(engine, TABLE_SIZE)
}

/// The key of the TCP service `address:port`, as the API names it.
pub fn tcp_key(address: &str, port: u32) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: pb::Protocol::Tcp as i32,
        address: address.into(),
        port,
    }
}

/// A masquerading (NAT) real server `address:port` with `weight`, as the API takes it.
pub fn masq(address: &str, port: u32, weight: u32) -> pb::RealServerSpec {
    pb::RealServerSpec {
        address: address.into(),
        port,
        forward: pb::ForwardMethod::Masq as i32,
        weight,
        ..Default::default()
    }
}

/// An IPv4 TCP SYN from `client:sport` to `vip:port`, checksums computed (etherparse).
pub fn syn(client: [u8; 4], sport: u16, vip: [u8; 4], port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ipv4(client, vip, 64)
        .tcp(sport, port, 1, 64240)
        .syn()
        .write(&mut out, &[])
        .expect("an IPv4 TCP SYN always builds");
    out
}

/// Runs one IP packet through `engine` at `now` (ms), in a buffer with 64 bytes of headroom as
/// the dataplane gives it; the verdict.
pub fn process(engine: &Engine, now: u64, packet: &[u8]) -> Verdict {
    let mut buf = vec![0u8; 64 + packet.len()];
    buf[64..].copy_from_slice(packet);
    engine.process(
        Timestamp(now),
        &mut PacketBuf::new(&mut buf, 64, packet.len()),
    )
}

/// Where a [`Server`] listens.
#[derive(Debug)]
enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// Resolves when a [`Server`] is told to stop (or dropped).
type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The control service serving `backend`, spawned on the current tokio runtime, with a
/// temporary directory for its socket and for whatever files a test wants next to it.
/// [`Server::stop`] stops it and reports how serving ended; dropping it also stops it (the
/// shutdown signal's sender goes away), without waiting.
pub struct Server<B: Backend = EngineBackend> {
    dir: tempfile::TempDir,
    listen: Listen,
    backend: Arc<B>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl<B: Backend> fmt::Debug for Server<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("dir", &self.dir.path())
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Server<B> {
    /// Serves on `ulvs.sock` in a new temporary directory.
    pub async fn unix(backend: B) -> Result<Self> {
        Self::unix_at(backend, "ulvs.sock").await
    }

    /// Serves on `relative` (which may name directories that do not exist yet) in a new
    /// temporary directory. Once this returns, clients can connect: connections queue until
    /// the spawned task serves them, no waiting needed.
    pub async fn unix_at(backend: B, relative: impl AsRef<Path>) -> Result<Self> {
        Self::unix_with(backend, relative.as_ref(), None).await
    }

    /// [`Server::unix`], reporting every request to `observer`.
    pub async fn unix_observed(backend: B, observer: Arc<dyn RequestObserver>) -> Result<Self> {
        Self::unix_with(backend, Path::new("ulvs.sock"), Some(observer)).await
    }

    async fn unix_with(
        backend: B,
        relative: &Path,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let socket = dir.path().join(relative);
        Self::serve_unix(dir, socket, backend, observer)
    }

    fn serve_unix(
        dir: tempfile::TempDir,
        socket: PathBuf,
        backend: B,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Self> {
        let mut bound = bind_unix(&socket).context("bind control socket")?;
        if let Some(observer) = observer {
            bound = bound.observe(observer);
        }
        Ok(Self::spawn(
            dir,
            Listen::Unix(socket),
            backend,
            |service, shutdown| bound.serve(service, shutdown),
        ))
    }

    /// Serves over TLS on 127.0.0.1, on a port the system picks (see [`Server::addr`]).
    pub async fn tcp(backend: B, options: TcpOptions) -> Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let listener = bind_tcp("127.0.0.1:0".parse()?, options)
            .await
            .context("bind the TCP listener")?;
        let addr = listener.local_addr()?;
        Ok(Self::spawn(
            dir,
            Listen::Tcp(addr),
            backend,
            |service, shutdown| listener.serve(service, shutdown),
        ))
    }

    /// Spawns `serve(service over backend, shutdown signal)` on the current runtime.
    fn spawn<F>(
        dir: tempfile::TempDir,
        listen: Listen,
        backend: B,
        serve: impl FnOnce(ControlService<B>, Shutdown) -> F,
    ) -> Self
    where
        F: Future<Output = Result<(), ServeError>> + Send + 'static,
    {
        let backend = Arc::new(backend);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            ControlService::<B>::new(backend.clone()),
            Box::pin(async {
                let _ = stopped.await;
            }),
        ));
        Server {
            dir,
            listen,
            backend,
            stop: Some(stop),
            task,
        }
    }

    /// The temporary directory (removed when the server is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The unix socket's path.
    ///
    /// # Panics
    /// If this server listens on TCP.
    pub fn socket(&self) -> &Path {
        match &self.listen {
            Listen::Unix(p) => p,
            Listen::Tcp(a) => panic!("the server listens on TCP {a}, not on a unix socket"),
        }
    }

    /// The TCP listener's address.
    ///
    /// # Panics
    /// If this server listens on a unix socket.
    pub fn addr(&self) -> SocketAddr {
        match &self.listen {
            Listen::Tcp(a) => *a,
            Listen::Unix(p) => panic!("the server listens on {}, not on TCP", p.display()),
        }
    }

    /// The backend the service drives (shared with it).
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// A client connected to the unix socket.
    pub async fn client(&self) -> Result<UlvsClient<Channel>> {
        ulvs_proto::connect_unix(self.socket())
            .await
            .context("connect to the control socket")
    }

    /// Signals shutdown and waits for the service to finish: its error if serving failed, or
    /// if it left its unix socket file behind.
    pub async fn stop(mut self) -> Result<()> {
        self.halt().await
    }

    /// A daemon restart: stops the service as [`Server::stop`] does, then serves `backend`
    /// (without an observer) on the same socket, in the same directory.
    ///
    /// # Panics
    /// If this server listens on TCP.
    pub async fn restart(mut self, backend: B) -> Result<Self> {
        let socket = self.socket().to_owned();
        self.halt().await?;
        Self::serve_unix(self.dir, socket, backend, None)
    }

    async fn halt(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.context("join server")??;
        if let Listen::Unix(socket) = &self.listen {
            ensure!(
                !socket.exists(),
                "socket file left behind at {}",
                socket.display()
            );
        }
        Ok(())
    }
}

impl Server<EngineBackend> {
    /// The engine behind the service.
    pub fn engine(&self) -> &Arc<Engine> {
        self.backend.engine()
    }
}

/// A [`Server`] on a runtime of its own (one worker thread), for tests that block, e.g. to run
/// the built CLI binaries against it. Stopped and joined on drop; a serving error is printed.
pub struct Daemon<B: Backend = EngineBackend> {
    server: Option<Server<B>>,
    runtime: tokio::runtime::Runtime,
}

impl<B: Backend> fmt::Debug for Daemon<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Daemon<B> {
    /// [`Server::unix`] on a new runtime.
    pub fn unix(backend: B) -> Result<Self> {
        Self::start(|| Server::unix(backend))
    }

    /// [`Server::tcp`] on a new runtime.
    pub fn tcp(backend: B, options: TcpOptions) -> Result<Self> {
        Self::start(|| Server::tcp(backend, options))
    }

    fn start<F: Future<Output = Result<Server<B>>>>(start: impl FnOnce() -> F) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("runtime")?;
        let server = runtime.block_on(start())?;
        Ok(Daemon {
            server: Some(server),
            runtime,
        })
    }

    fn server(&self) -> &Server<B> {
        self.server
            .as_ref()
            .expect("the server runs until drop (or a failed restart)")
    }

    /// See [`Server::dir`].
    pub fn dir(&self) -> &Path {
        self.server().dir()
    }

    /// See [`Server::socket`].
    pub fn socket(&self) -> &Path {
        self.server().socket()
    }

    /// See [`Server::addr`].
    pub fn addr(&self) -> SocketAddr {
        self.server().addr()
    }

    /// See [`Server::backend`].
    pub fn backend(&self) -> &Arc<B> {
        self.server().backend()
    }

    /// [`Server::restart`]: a daemon restart on the same socket, serving `backend`.
    pub fn restart(&mut self, backend: B) -> Result<()> {
        let server = self
            .server
            .take()
            .expect("the server runs until drop (or a failed restart)");
        self.server = Some(self.runtime.block_on(server.restart(backend))?);
        Ok(())
    }

    /// Runs `f` to completion on the daemon's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

impl<B: Backend> Drop for Daemon<B> {
    fn drop(&mut self) {
        if let Some(server) = self.server.take()
            && let Err(e) = self.runtime.block_on(server.stop())
        {
            eprintln!("control service failed: {e:#}");
        }
    }
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

/// A self-signed test CA that signs leaf certificates.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// A new CA with common name `name`.
    pub fn new(name: &str) -> Result<Pki> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Pki {
            ca_pem: issuer.pem(),
            issuer,
        })
    }

    /// A certificate for `names` (DNS names or IP addresses) for `usage`, signed by this CA.
    pub fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Result<Leaf> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for `name`, signed by this CA.
    pub fn client_leaf(&self, name: &str) -> Result<Leaf> {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Options for a control listener on 127.0.0.1: a server certificate for `localhost` and
    /// `127.0.0.1` from this CA, client certificates required from this CA, and `token` as the
    /// bearer token if given.
    pub fn tcp_options(&self, token: Option<&str>) -> Result<TcpOptions> {
        let server = self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        Ok(TcpOptions {
            cert_pem: server.cert_pem.into_bytes(),
            key_pem: server.key_pem.into_bytes(),
            client_ca_pem: Some(self.ca_pem.clone().into_bytes()),
            token: token.map(str::to_owned),
        })
    }
}
