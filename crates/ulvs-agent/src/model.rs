//! The agent's own model of services and real servers, normalised so that desired and observed
//! values compare equal exactly when the daemon would report the desired one back.
//!
//! Normalisation rules (the daemon's, see `ulvs-control`): the scheduler is always named (the
//! default is `wlc`); scheduler flags are a sorted set of their canonical names (`sh-*` for sh,
//! `mh-*` for mh, `flag-N` otherwise); a persistent service always has a prefix length (32 or
//! 128 by default); a real server's port is the service's port for direct routing and tunnels;
//! tunnel settings are only set for tunnel-mode real servers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `"tcp"` or `"udp"`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Identifies a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Virtual address.
    pub address: IpAddr,
    /// Virtual port (0: every port of a persistent service).
    pub port: u16,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.protocol.name(),
            SocketAddr::new(self.address, self.port)
        )
    }
}

/// How packets reach a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// NAT / masquerading (ipvsadm `-m`).
    Masq,
    /// Direct routing (ipvsadm `-g`).
    Route,
    /// IP tunnelling (ipvsadm `-i`).
    Tunnel,
    /// Full NAT.
    Fullnat,
}

impl Forward {
    /// The name used in configuration files and plans.
    pub fn name(self) -> &'static str {
        match self {
            Forward::Masq => "masq",
            Forward::Route => "route",
            Forward::Tunnel => "tunnel",
            Forward::Fullnat => "fullnat",
        }
    }

    /// Parses a configuration name (`masq`/`nat`, `route`/`dr`/`gate`, `tunnel`/`ipip`, `fullnat`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "masq" | "nat" | "masquerade" => Forward::Masq,
            "route" | "dr" | "gate" | "direct" => Forward::Route,
            "tunnel" | "ipip" | "tun" => Forward::Tunnel,
            "fullnat" => Forward::Fullnat,
            _ => return None,
        })
    }

    /// Whether the real server's port is always the service's port (DR and tunnels).
    pub fn keeps_port(self) -> bool {
        matches!(self, Forward::Route | Forward::Tunnel)
    }
}

/// Tunnel encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// IP in IP (the default).
    Ipip,
    /// Generic UDP encapsulation.
    Gue,
    /// GRE.
    Gre,
}

impl TunnelType {
    /// Configuration name.
    pub fn name(self) -> &'static str {
        match self {
            TunnelType::Ipip => "ipip",
            TunnelType::Gue => "gue",
            TunnelType::Gre => "gre",
        }
    }
}

/// Tunnel checksum option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelChecksum {
    /// No checksum (the default).
    None,
    /// Checksum.
    Csum,
    /// Remote checksum offload (GUE only).
    Remcsum,
}

impl TunnelChecksum {
    /// Configuration name.
    pub fn name(self) -> &'static str {
        match self {
            TunnelChecksum::None => "none",
            TunnelChecksum::Csum => "csum",
            TunnelChecksum::Remcsum => "remcsum",
        }
    }
}

/// The fourteen schedulers ulvs implements, by ipvsadm name.
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// The settings of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Identity.
    pub key: ServiceKey,
    /// Scheduler name (never empty).
    pub scheduler: String,
    /// Scheduler flags, canonical names.
    pub scheduler_flags: BTreeSet<String>,
    /// Persistence timeout in seconds; 0 is not persistent.
    pub persistence_timeout: u32,
    /// Persistence prefix length; 0 exactly when not persistent.
    pub persistence_prefix_len: u32,
    /// One-packet scheduling (UDP).
    pub one_packet: bool,
    /// Labels, including the owner label.
    pub labels: BTreeMap<String, String>,
    /// FULLNAT local addresses, sorted.
    pub local_addresses: Vec<IpAddr>,
    /// New-connection rate cap; 0 is none.
    pub max_new_connections_per_second: u32,
}

impl ServiceSpec {
    /// A service with the daemon's defaults (`wlc`, not persistent, no labels).
    pub fn new(key: ServiceKey) -> Self {
        Self {
            key,
            scheduler: "wlc".to_owned(),
            scheduler_flags: BTreeSet::new(),
            persistence_timeout: 0,
            persistence_prefix_len: 0,
            one_packet: false,
            labels: BTreeMap::new(),
            local_addresses: Vec::new(),
            max_new_connections_per_second: 0,
        }
    }
}

/// The settings of a real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServerSpec {
    /// Address.
    pub address: IpAddr,
    /// Port (the service's port for DR and tunnels).
    pub port: u16,
    /// Forwarding method.
    pub forward: Forward,
    /// Weight; 0 is quiescent.
    pub weight: u32,
    /// Upper connection threshold; 0 is none.
    pub upper_threshold: u32,
    /// Lower connection threshold; 0 is none.
    pub lower_threshold: u32,
    /// Tunnel type (`ipip` unless a tunnel says otherwise).
    pub tunnel_type: TunnelType,
    /// GUE port; 0 otherwise.
    pub tunnel_port: u16,
    /// Tunnel checksum option.
    pub tunnel_checksum: TunnelChecksum,
}

impl RealServerSpec {
    /// A real server with weight 1 and no thresholds or tunnel settings.
    pub fn new(address: IpAddr, port: u16, forward: Forward) -> Self {
        Self {
            address,
            port,
            forward,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel_type: TunnelType::Ipip,
            tunnel_port: 0,
            tunnel_checksum: TunnelChecksum::None,
        }
    }

    /// `address:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// Connection-table timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Established TCP.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// A virtual service as the daemon has it (settings only, no counters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedService {
    /// The service's settings.
    pub spec: ServiceSpec,
    /// Its real servers.
    pub real_servers: Vec<RealServerSpec>,
}

/// What the daemon has: the planner's second input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The configuration's global generation when it was read.
    pub generation: u64,
    /// The daemon run it was read from (`GetInfo.instance_id`).
    #[serde(default)]
    pub instance_id: String,
    /// Every virtual service.
    pub services: Vec<ObservedService>,
    /// The timeouts, if they were read (only when the desired state manages them).
    pub timeouts: Option<Timeouts>,
}
