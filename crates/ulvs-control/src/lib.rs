//! The ulvs gRPC control service: validates requests and applies them to the engine.
//!
//! The service keeps the desired configuration. Each request is validated (a bad request gets
//! `INVALID_ARGUMENT` naming the field), turned into a new whole [`ulvs_engine::Config`], and
//! handed to a [`Backend`], which makes it live (engine snapshot, kernel routes). If the backend
//! fails, the old configuration stays: no request leaves partial state.

use std::future::Future;

use ulvs_engine::{Config, StatsSnapshot};

/// Where the control service sends configuration changes: the daemon's dataplane.
pub trait Backend: Send + Sync + 'static {
    /// Makes `new` live; `old` is what is live now. Either all of `new` takes effect, or the
    /// backend restores `old` and returns an error.
    fn apply(
        &self,
        old: &Config,
        new: &Config,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Current counters of every service and real server.
    fn stats(&self) -> StatsSnapshot;

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
