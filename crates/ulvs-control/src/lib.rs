//! The ulvs gRPC control service: validates requests and applies them to the engine.
//!
//! The service keeps the desired configuration. Each request is validated (a bad request gets
//! `INVALID_ARGUMENT` naming the field), turned into a new whole [`ulvs_engine::Config`], and
//! handed to a [`Backend`], which makes it live (engine snapshot, kernel routes). If the backend
//! fails, the old configuration stays: no request leaves partial state.
//!
//! # Layout
//! - [`validate`]: every check on a request; protobuf in, engine configuration types out.
//! - [`ControlService`] (`service.rs`): the `ulvs.v1.Ulvs` implementation; one mutex serialises
//!   writers; labels are kept here, next to the engine configuration.
//! - [`ControlError`] (`error.rs`): refusals, and their one mapping to gRPC status codes.
//! - [`bind_unix`] / [`serve_unix`] (`server.rs`): the unix socket (mode 0600) with gRPC health
//!   and reflection on the same server.
//! - `conntrack.rs`: the connection-table RPCs (timeouts, conntrack settings, connection
//!   listing, stats, zeroing), which act on [`Backend::conntrack`] and not on the configuration.
//! - [`bind_tcp`] / [`TcpControlListener`] (`tcp.rs`): the optional TCP listener, TLS only
//!   (rustls), with optional client-certificate verification and bearer token.
//! - [`RequestObserver`] (`observe.rs`): a hook that sees every request (its span and its
//!   outcome), which the daemon's telemetry implements.
//! - [`EngineBackend`]: a backend that drives an engine only (no devices, no routes).
//!
//! # Semantics
//! As ipvsadm: adding an existing service or real server is `ALREADY_EXISTS`; editing or
//! deleting a missing one is `NOT_FOUND`; an empty scheduler is `wlc`; an unspecified forwarding
//! method is direct routing (`-g`); a real server's port 0 is the service's port, and direct
//! routing and tunnelling use the service's port. An edit of a service without labels keeps its
//! labels. Settings the engine does not implement are `FAILED_PRECONDITION` naming the field.

mod conntrack;
mod engine_backend;
mod error;
mod explain;
mod observe;
mod server;
mod service;
mod tcp;
pub mod validate;

pub use engine_backend::EngineBackend;
pub use error::ControlError;
pub use observe::{Observed, RequestObserver};
pub use server::{ServeError, UnixControlSocket, bind_unix, serve_unix};
pub use service::{ControlService, IPVS_VERSION, VERSION};
pub use tcp::{BearerCheck, TcpControlListener, TcpOptions, bind_tcp};

use std::future::Future;

use ulvs_engine::{Config, ConfigError, Engine, EngineOptions, StatsSnapshot};

/// Where the control service sends configuration changes: the daemon's dataplane.
pub trait Backend: Send + Sync + 'static {
    /// Makes `new` live; `old` is what is live now. Either all of `new` takes effect, or the
    /// backend restores `old` and returns an error.
    fn apply(
        &self,
        old: &Config,
        new: &Config,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Checks `new` without applying it: `Err` if [`Backend::apply`] would refuse it for a
    /// reason in the configuration itself. The control service calls it before `apply`, so that
    /// a refusal can name the request field at fault.
    ///
    /// The default runs every engine check, including what the engine does not implement yet
    /// ([`ConfigError::UnsupportedForward`], ...), by applying `new` to a scratch engine that has
    /// no connections and is dropped afterwards.
    fn check(&self, new: &Config) -> Result<(), ConfigError> {
        let scratch = Engine::new(EngineOptions {
            max_connections: 0,
            shards: 1,
            hash_seed: 0,
        });
        scratch.apply_config(new)
    }

    /// Current counters of every service and real server.
    fn stats(&self) -> StatsSnapshot;

    /// The engine whose connection table the timeouts, conntrack settings, connection listing
    /// and counter zeroing act on; `None` (the default) if the backend has none, and those
    /// RPCs answer `FAILED_PRECONDITION`.
    fn conntrack(&self) -> Option<&Engine> {
        None
    }

    /// Static facts about the daemon.
    fn info(&self) -> BackendInfo;
}

/// Static facts about the daemon, for `GetInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// Size of the connection table.
    pub connection_table_size: u32,
    /// Names of the TUN/TAP devices the daemon drives.
    pub devices: Vec<String>,
    /// Worker queues per device (0 without a dataplane).
    pub queues: u32,
}

/// A backend could not make a configuration live.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct BackendError {
    /// What failed, for example "add route to 198.18.100.1/32 via ulvs0".
    pub operation: String,
    /// Why.
    pub message: String,
}
