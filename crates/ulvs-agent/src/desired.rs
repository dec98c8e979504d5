//! From configuration and health to the desired live state: drained servers, quorum and the
//! sorry server. Pure: a function of its two inputs.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::model::{RealServerSpec, ServiceKey, ServiceSpec, Timeouts};

/// Health of real servers: `false` for a server whose check has failed (`fall` times in a row and
/// not yet risen again). A server that is absent is healthy (checks start optimistic, as in
/// keepalived, and servers without a check are always healthy).
pub type HealthView = BTreeMap<(ServiceKey, SocketAddr), bool>;

/// A real server as it should be live, with the reason when it differs from the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRealServer {
    /// Settings, with the weight health allows.
    pub spec: RealServerSpec,
    /// Why the settings differ from the configuration (drained, sorry server), if they do.
    pub note: Option<String>,
}

/// A virtual service as it should be live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredService {
    /// Its name in the configuration.
    pub name: String,
    /// Settings, owner label included.
    pub spec: ServiceSpec,
    /// Real servers (the sorry server among them when in use).
    pub real_servers: Vec<DesiredRealServer>,
}

/// The planner's first input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// The owner label's key.
    pub owner_label: String,
    /// The agent's name: the owner label's value.
    pub owner: String,
    /// The services this agent owns.
    pub services: Vec<DesiredService>,
    /// Timeouts, if managed.
    pub timeouts: Option<Timeouts>,
}

impl Desired {
    /// No services, same owner: what `destroy` plans towards.
    pub fn empty(owner_label: &str, owner: &str) -> Self {
        Self {
            owner_label: owner_label.to_owned(),
            owner: owner.to_owned(),
            services: Vec::new(),
            timeouts: None,
        }
    }

    /// The desired live state for `config` given `health`.
    ///
    /// - A failed real server is drained: weight 0, so existing connections keep going and no
    ///   new ones arrive; it gets its configured weight back when it is healthy again.
    /// - A service with fewer healthy real servers than its `quorum` (default 1) is below
    ///   quorum. If it has a sorry server, every real server is drained and the sorry server
    ///   is added; without one, the healthy servers keep serving.
    pub fn from_config(config: &Config, health: &HealthView) -> Self {
        let owner_label = config.agent.owner_label.clone();
        let owner = config.agent.name.clone();
        let services = config
            .services
            .iter()
            .map(|svc| {
                let mut spec = svc.spec.clone();
                spec.labels.insert(owner_label.clone(), owner.clone());
                let healthy_of = |rs: &RealServerSpec| {
                    health
                        .get(&(svc.spec.key, rs.addr()))
                        .copied()
                        .unwrap_or(true)
                };
                let total = svc.real_servers.len();
                let healthy = svc
                    .real_servers
                    .iter()
                    .filter(|r| healthy_of(&r.spec))
                    .count();
                let below_quorum = (healthy as u64) < u64::from(svc.quorum);
                let use_sorry = below_quorum && svc.sorry_server.is_some();
                let mut real_servers: Vec<DesiredRealServer> = svc
                    .real_servers
                    .iter()
                    .map(|r| {
                        let mut spec = r.spec.clone();
                        let note = if !healthy_of(&r.spec) {
                            spec.weight = 0;
                            Some("drained: health check failing".to_owned())
                        } else if use_sorry {
                            spec.weight = 0;
                            Some(format!(
                                "drained: {healthy} of {total} real servers healthy, below quorum {}",
                                svc.quorum
                            ))
                        } else {
                            None
                        };
                        DesiredRealServer { spec, note }
                    })
                    .collect();
                if let (true, Some(sorry)) = (use_sorry, &svc.sorry_server) {
                    real_servers.push(DesiredRealServer {
                        spec: sorry.clone(),
                        note: Some(format!(
                            "sorry server: {healthy} of {total} real servers healthy, below quorum {}",
                            svc.quorum
                        )),
                    });
                }
                DesiredService {
                    name: svc.name.clone(),
                    spec,
                    real_servers,
                }
            })
            .collect();
        Self {
            owner_label,
            owner,
            services,
            timeouts: config.timeouts,
        }
    }
}
