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
    /// The configuration last made live, for telemetry (weights, thresholds).
    applied: Arc<ulvs_telemetry::AppliedConfig>,
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
            applied: Arc::default(),
            apply_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration last made live (updated after every successful apply).
    pub fn applied(&self) -> Arc<ulvs_telemetry::AppliedConfig> {
        Arc::clone(&self.applied)
    }
}

fn router_error(e: &RouterError) -> BackendError {
    let message = match e {
        RouterError::Netlink { source, .. } => source.to_string(),
        RouterError::NoRoute(_) => "the director has no route to it".to_owned(),
        RouterError::RoutedThroughTun(_, dev) => {
            format!("it is routed through the TUN device {dev}, which would loop")
        }
        RouterError::Connect(source) => source.to_string(),
    };
    BackendError {
        operation: e.operation(),
        message,
    }
}

/// Whether `new` stops routing some virtual address that `old` routes.
fn drops_a_vip(old: &Config, new: &Config) -> bool {
    old.services.iter().any(|o| {
        !new.services
            .iter()
            .any(|n| n.key.addr.ip() == o.key.addr.ip())
    })
}

impl DaemonBackend {
    /// Gives the engine the kernel's path MTU to each tunnel-mode real server, so that it
    /// answers packets too big for the tunnel with FRAG_NEEDED / Packet Too Big.
    async fn learn_path_mtus(&self, cfg: &Config) {
        let mut seen = std::collections::BTreeSet::new();
        for d in cfg.services.iter().flat_map(|s| s.dests.iter()) {
            if d.forward != ulvs_engine::ForwardMethod::Tunnel || !seen.insert(d.addr.ip()) {
                continue;
            }
            match self.router.path_mtu(d.addr.ip()).await {
                Ok(Some(mtu)) => self.engine.set_path_mtu(d.addr.ip(), mtu),
                Ok(None) => {}
                Err(e) => tracing::warn!(rs = %d.addr.ip(), error = %e, "path MTU lookup failed"),
            }
        }
    }
}

impl Backend for DaemonBackend {
    /// Order matters for packets in flight: a VIP route without its service in the engine sends
    /// packets through the TUN unchanged and back into it until their TTL runs out. So when a
    /// virtual address goes away the routes change first and the engine second; otherwise the
    /// engine first. Either way a failure of the second step restores the first.
    async fn apply(&self, old: &Config, new: &Config) -> Result<(), BackendError> {
        let _guard = self.apply_lock.lock().await;
        let engine_err = |e: ulvs_engine::ConfigError| BackendError {
            operation: "apply configuration to the engine".to_owned(),
            message: e.to_string(),
        };
        new.validate().map_err(engine_err)?;
        if drops_a_vip(old, new) {
            self.router.sync(new).await.map_err(|e| router_error(&e))?;
            if let Err(e) = self.engine.apply_config(new) {
                if let Err(back) = self.router.sync(old).await {
                    tracing::error!(error = %back, "restoring the previous routes failed");
                }
                return Err(engine_err(e));
            }
        } else {
            self.engine.apply_config(new).map_err(engine_err)?;
            if let Err(e) = self.router.sync(new).await {
                if let Err(back) = self.engine.apply_config(old) {
                    tracing::error!(error = %back, "restoring the previous engine configuration failed");
                }
                return Err(router_error(&e));
            }
        }
        self.applied.set(new);
        self.learn_path_mtus(new).await;
        tracing::info!(services = new.services.len(), "configuration applied");
        Ok(())
    }

    fn stats(&self) -> StatsSnapshot {
        self.engine.stats()
    }

    fn conntrack(&self) -> Option<&Engine> {
        Some(&self.engine)
    }

    fn info(&self) -> BackendInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulvs_engine::{Protocol, ServiceConfig, ServiceKey};

    fn cfg(addrs: &[&str]) -> Config {
        Config {
            services: addrs
                .iter()
                .map(|a| {
                    ServiceConfig::new(ServiceKey {
                        protocol: Protocol::Tcp,
                        addr: a.parse().unwrap(),
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn vip_removal_is_detected_per_address_not_per_port() {
        let two_ports = cfg(&["198.18.100.1:80", "198.18.100.1:443"]);
        let one_port = cfg(&["198.18.100.1:80"]);
        let other = cfg(&["198.18.100.2:80"]);
        assert!(!drops_a_vip(&two_ports, &one_port));
        assert!(!drops_a_vip(&one_port, &two_ports));
        assert!(drops_a_vip(&one_port, &other));
        assert!(drops_a_vip(&one_port, &Config::default()));
        assert!(!drops_a_vip(&Config::default(), &one_port));
    }
}
