//! `EngineBackend`: a [`Backend`] that applies configuration to a [`ulvs_engine::Engine`] only.
//!
//! It is the real backend of a daemon without a dataplane (no devices, no kernel routes), and
//! what the control tests run against.

use std::sync::Arc;

use ulvs_engine::{Config, Engine, StatsSnapshot};

use crate::{Backend, BackendError, BackendInfo};

/// Applies configuration to an engine; no devices, no routes.
#[derive(Debug, Clone)]
pub struct EngineBackend {
    engine: Arc<Engine>,
    connection_table_size: u32,
}

impl EngineBackend {
    /// A backend over `engine`; `connection_table_size` is what `GetInfo` reports.
    pub fn new(engine: Arc<Engine>, connection_table_size: u32) -> Self {
        EngineBackend {
            engine,
            connection_table_size,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl Backend for EngineBackend {
    async fn apply(&self, _old: &Config, new: &Config) -> Result<(), BackendError> {
        // The engine swaps the whole snapshot or nothing, so there is nothing to restore.
        self.engine.apply_config(new).map_err(|e| BackendError {
            operation: "apply the configuration to the engine".to_owned(),
            message: e.to_string(),
        })
    }

    fn stats(&self) -> StatsSnapshot {
        self.engine.stats()
    }

    fn conntrack(&self) -> Option<&Engine> {
        Some(&self.engine)
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            connection_table_size: self.connection_table_size,
            devices: Vec::new(),
            queues: 0,
        }
    }
}
