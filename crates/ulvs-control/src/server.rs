//! Serving the control API on a unix socket, with gRPC health and reflection beside it.
//!
//! [`bind_unix`] takes the socket path over safely: it creates the parent directory, refuses
//! to start while another daemon answers on the socket, removes a stale socket file left by a
//! crash, binds, and makes the socket file mode 0600. [`UnixControlSocket::serve`] then serves
//! until the shutdown future resolves and removes the socket file.

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::observe::{Observed, RequestObserver};
use crate::{Backend, ControlService};

/// Why the control socket could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket's parent directory could not be created.
    #[error("create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another process is listening on the socket already.
    #[error("another daemon is already listening on {0}")]
    AlreadyRunning(PathBuf),
    /// The path exists and is not a socket; it is left alone.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// The existing path could not be inspected or probed.
    #[error("probe {path}: {source}")]
    Probe {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A stale socket file could not be removed.
    #[error("remove stale socket {path}: {source}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Binding the socket failed.
    #[error("bind {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Setting the socket file mode failed.
    #[error("set mode 0600 on {path}: {source}")]
    SetMode {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The reflection service could not be built from the descriptor sets.
    #[error("build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Binding the TCP listener failed.
    #[error("bind {addr}: {source}")]
    BindTcp {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The bound TCP listener's address could not be read.
    #[error("read the listener address: {0}")]
    LocalAddr(io::Error),
    /// The gRPC server failed (or its TLS settings are unusable).
    #[error("serve gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The socket file we created; removed on drop if it is still ours (same inode).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino);
        if ours && let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the control socket");
        }
    }
}

/// A bound control socket, ready to serve. Dropping it removes the socket file.
pub struct UnixControlSocket {
    listener: UnixListener,
    file: SocketFile,
    observer: Option<std::sync::Arc<dyn RequestObserver>>,
}

impl std::fmt::Debug for UnixControlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixControlSocket")
            .field("listener", &self.listener)
            .field("file", &self.file)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

/// Binds the control socket at `path` (see the module docs for the steps).
///
/// Must be called inside a tokio runtime. Once it returns, clients can connect: their
/// connections queue until [`UnixControlSocket::serve`] runs.
pub fn bind_unix(path: impl AsRef<Path>) -> Result<UnixControlSocket, ServeError> {
    let path = path.as_ref().to_path_buf();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| ServeError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match fs::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(ServeError::NotASocket(path)),
        Ok(_) => match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => return Err(ServeError::AlreadyRunning(path)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing a stale control socket");
                fs::remove_file(&path).map_err(|source| ServeError::RemoveStale {
                    path: path.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(ServeError::Probe { path, source }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(ServeError::Probe { path, source }),
    }

    let listener = UnixListener::bind(&path).map_err(|source| ServeError::Bind {
        path: path.clone(),
        source,
    })?;
    let meta = fs::symlink_metadata(&path).map_err(|source| ServeError::Probe {
        path: path.clone(),
        source,
    })?;
    let file = SocketFile {
        path: path.clone(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .map_err(|source| ServeError::SetMode { path, source })?;
    Ok(UnixControlSocket {
        listener,
        file,
        observer: None,
    })
}

impl UnixControlSocket {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Reports every `ulvs.v1.Ulvs` request to `observer` (its span, its outcome).
    pub fn observe(mut self, observer: std::sync::Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Serves `ulvs.v1.Ulvs`, `grpc.health.v1.Health` (reporting `ulvs.v1.Ulvs` as serving) and
    /// gRPC reflection (v1 and v1alpha) until `shutdown` resolves; then finishes the requests
    /// in flight and removes the socket file.
    pub async fn serve<B: Backend>(
        self,
        service: ControlService<B>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let UnixControlSocket {
            listener,
            file,
            observer,
        } = self;
        let (plain, observed) = match observer {
            Some(o) => (None, Some(Observed::new(service.into_server(), o))),
            None => (Some(service.into_server()), None),
        };
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(ulvs_proto::SERVICE_NAME, ServingStatus::Serving)
            .await;
        let reflection_v1 = reflection_builder().build_v1()?;
        let reflection_v1alpha = reflection_builder().build_v1alpha()?;

        tracing::info!(path = %file.path.display(), "control API listening");
        let result = Server::builder()
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_optional_service(plain)
            .add_optional_service(observed)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await;
        reporter
            .set_service_status(ulvs_proto::SERVICE_NAME, ServingStatus::NotServing)
            .await;
        drop(file);
        tracing::info!("control API stopped");
        Ok(result?)
    }
}

pub(crate) fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ulvs_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// [`bind_unix`] then [`UnixControlSocket::serve`].
pub async fn serve_unix<B: Backend>(
    path: impl AsRef<Path>,
    service: ControlService<B>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    bind_unix(path)?.serve(service, shutdown).await
}
