//! The daemon's [`Backend`]: makes a configuration live in the engine and in the kernel's
//! routes and rules, all or nothing.

use std::sync::Arc;

use ulvs_control::{Backend, BackendError, BackendInfo};
use ulvs_dataplane::{Router, RouterError};
use ulvs_engine::{Config, Engine, StatsSnapshot};

/// The engine and router of a running daemon, as the control service sees them.
#[derive(Debug)]
pub struct DaemonBackend {
    engine: Arc<Engine>,
    router: Arc<Router>,
    info: BackendInfo,
    /// Serialises applies so the engine and the router never see two changes interleaved.
    apply_lock: tokio::sync::Mutex<()>,
}

impl DaemonBackend {
    /// A backend over a running engine and router.
    pub fn new(engine: Arc<Engine>, router: Arc<Router>, info: BackendInfo) -> Self {
        DaemonBackend {
            engine,
            router,
            info,
            apply_lock: tokio::sync::Mutex::new(()),
        }
    }
}

fn router_error(e: &RouterError) -> BackendError {
    let message = match e {
        RouterError::Netlink { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    BackendError {
        operation: e.operation(),
        message,
    }
}

impl Backend for DaemonBackend {
    async fn apply(&self, old: &Config, new: &Config) -> Result<(), BackendError> {
        let _guard = self.apply_lock.lock().await;
        self.engine.apply_config(new).map_err(|e| BackendError {
            operation: "apply configuration to the engine".to_owned(),
            message: e.to_string(),
        })?;
        if let Err(e) = self.router.sync(new).await {
            let err = router_error(&e);
            if let Err(back) = self.engine.apply_config(old) {
                tracing::error!(error = %back, "restoring the previous engine configuration failed");
            }
            tracing::warn!(error = %err, "configuration refused: kernel routes could not be set");
            return Err(err);
        }
        tracing::info!(services = new.services.len(), "configuration applied");
        Ok(())
    }

    fn stats(&self) -> StatsSnapshot {
        self.engine.stats()
    }

    fn info(&self) -> BackendInfo {
        self.info.clone()
    }
}
