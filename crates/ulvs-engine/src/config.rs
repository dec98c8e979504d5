//! Configuration of the engine: virtual services and their real servers.
//!
//! A [`Config`] is a plain value. The control plane builds one, [`Config::validate`] checks it,
//! and [`crate::Engine::apply_config`] turns it into an immutable snapshot that the packet path
//! reads without locks.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol with this IP protocol number, if the engine balances it.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// How packets reach a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardMethod {
    /// NAT / masquerading (ipvsadm `-m`).
    Masq,
    /// Direct routing (ipvsadm `-g`).
    Route,
    /// IP tunnelling (ipvsadm `-i`).
    Tunnel,
    /// Full NAT (DPVS `-b`).
    FullNat,
}

/// Encapsulation of a tunnel-mode real server (ipvsadm `--tun-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunnelType {
    /// IP in IP: IPv4 or IPv6 outer header, protocol 4 (IPv4 inner) or 41 (IPv6 inner)
    /// (RFC 2003, RFC 2473). The default.
    #[default]
    Ipip,
    /// Generic UDP Encapsulation (draft-ietf-intarea-gue, version 0) to `port`.
    Gue,
    /// Generic Routing Encapsulation (RFC 2784), protocol 47.
    Gre,
}

/// Checksum option of a GUE or GRE tunnel (ipvsadm `--tun-nocsum|--tun-csum|--tun-remcsum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunnelChecksum {
    /// No outer checksum (UDP checksum 0, GRE without the C bit). The default.
    #[default]
    None,
    /// An outer checksum (UDP checksum over GUE, GRE checksum field).
    Csum,
    /// Remote checksum offload (GUE only), as IPVS and the kernel's `fou` send it: a full
    /// outer UDP checksum and, for an inner TCP/UDP packet whose checksum is partial (checksum
    /// offload on the TUN), the REMCSUM option with the inner checksum left for the receiver
    /// to complete (`ulvs-decap` does; so does the kernel's GUE receive path). Packets with a
    /// complete inner checksum go out without the option.
    Remcsum,
}

/// Tunnel settings of a real server; meaningful only with [`ForwardMethod::Tunnel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TunnelConfig {
    /// Encapsulation.
    pub kind: TunnelType,
    /// GUE destination port (ipvsadm `--tun-port`); must be non-zero for GUE, 0 otherwise.
    pub port: u16,
    /// Checksum option.
    pub checksum: TunnelChecksum,
}

impl TunnelConfig {
    /// ipvsadm's `--tun-info` column: `ipip`, `gue:<port>:<-c|+c|r+c>` or `gre:<-c|+c>`.
    pub fn info(&self) -> String {
        let c = match self.checksum {
            TunnelChecksum::None => "-c",
            TunnelChecksum::Csum => "+c",
            TunnelChecksum::Remcsum => "r+c",
        };
        match self.kind {
            TunnelType::Ipip => "ipip".to_owned(),
            TunnelType::Gue => format!("gue:{}:{c}", self.port),
            TunnelType::Gre => format!("gre:{c}"),
        }
    }
}

/// The IPVS schedulers, by their ipvsadm names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SchedulerKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections (the ipvsadm default).
    #[default]
    Wlc,
    /// Locality-based least connections.
    Lblc,
    /// Locality-based least connections with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Maglev hashing.
    Mh,
    /// Power of two random choices.
    Twos,
}

impl SchedulerKind {
    /// Every scheduler, in the order ipvsadm's man page lists them.
    pub const ALL: [SchedulerKind; 14] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Lblc,
        SchedulerKind::Lblcr,
        SchedulerKind::Dh,
        SchedulerKind::Sh,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
        SchedulerKind::Mh,
        SchedulerKind::Twos,
    ];

    /// The ipvsadm name (`"wlc"`).
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Lblc => "lblc",
            SchedulerKind::Lblcr => "lblcr",
            SchedulerKind::Dh => "dh",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
            SchedulerKind::Fo => "fo",
            SchedulerKind::Ovf => "ovf",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Twos => "twos",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ConfigError::UnknownScheduler(s.to_owned()))
    }
}

/// Identifies a virtual service: protocol and virtual address with port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Virtual IP and port.
    pub addr: SocketAddr,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.addr)
    }
}

/// Scheduler flags (ipvsadm `-b`), as IPVS's bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SchedFlags(pub u8);

impl SchedFlags {
    /// `flag-1`, named `sh-fallback` / `mh-fallback` for sh and mh.
    pub const FLAG_1: SchedFlags = SchedFlags(1);
    /// `flag-2`, named `sh-port` / `mh-port` for sh and mh.
    pub const FLAG_2: SchedFlags = SchedFlags(2);
    /// `flag-3`.
    pub const FLAG_3: SchedFlags = SchedFlags(4);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: SchedFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Persistence settings (ipvsadm `-p` / `-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// Template timeout in seconds.
    pub timeout_secs: u32,
    /// Client address prefix length that shares one template (32 / 128 = per client address).
    pub prefix_len: u8,
}

/// A real server of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestConfig {
    /// Real server address and port.
    pub addr: SocketAddr,
    /// Forwarding method.
    pub forward: ForwardMethod,
    /// Weight; 0 is quiescent (no new connections).
    pub weight: u32,
    /// Upper connection threshold; 0 means none.
    pub upper_threshold: u32,
    /// Lower connection threshold; 0 means none.
    pub lower_threshold: u32,
    /// Tunnel settings (used with [`ForwardMethod::Tunnel`]; leave the default otherwise).
    pub tunnel: TunnelConfig,
}

/// A virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Protocol and virtual address.
    pub key: ServiceKey,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Scheduler flags.
    pub flags: SchedFlags,
    /// Persistence, if the service is persistent.
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (UDP).
    pub one_packet: bool,
    /// Real servers, in the order they were added.
    pub dests: Vec<DestConfig>,
    /// New connections per second allowed; 0 means no cap. New connections above it are a
    /// counted drop ([`crate::DropReason::RateLimited`]).
    pub max_new_connections_per_second: u32,
    /// FULLNAT local addresses (DPVS `-P`): the sources used towards FULLNAT real servers,
    /// of the service's address family. Replies to them must be routed into the TUN.
    pub local_addresses: Vec<IpAddr>,
}

impl ServiceConfig {
    /// A service with the default scheduler and no real servers.
    pub fn new(key: ServiceKey) -> Self {
        ServiceConfig {
            key,
            scheduler: SchedulerKind::default(),
            flags: SchedFlags::default(),
            persistence: None,
            one_packet: false,
            dests: Vec::new(),
            max_new_connections_per_second: 0,
            local_addresses: Vec::new(),
        }
    }

    /// The real server at `addr`, if any.
    pub fn dest(&self, addr: SocketAddr) -> Option<&DestConfig> {
        self.dests.iter().find(|d| d.addr == addr)
    }
}

/// The whole configuration of an engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Virtual services, in the order they were added.
    pub services: Vec<ServiceConfig>,
}

impl Config {
    /// The service with this key, if any.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| &s.key == key)
    }

    /// Checks the configuration as a whole: unique services, unique real servers per service,
    /// matching address families, supported schedulers and forwarding methods, FULLNAT local
    /// addresses (of the service's family, unique, not a virtual address, present when a
    /// FULLNAT real server needs them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, svc) in self.services.iter().enumerate() {
            for (j, &l) in svc.local_addresses.iter().enumerate() {
                if ip_family(l) != ip_family(svc.key.addr.ip()) {
                    return Err(ConfigError::LocalAddressFamily(svc.key, l));
                }
                if l.is_unspecified() || l.is_multicast() {
                    return Err(ConfigError::BadLocalAddress(svc.key, l));
                }
                if svc.local_addresses[..j].contains(&l) {
                    return Err(ConfigError::DuplicateLocalAddress(svc.key, l));
                }
                if self.services.iter().any(|s| s.key.addr.ip() == l) {
                    return Err(ConfigError::LocalAddressIsVip(svc.key, l));
                }
            }
            if svc.local_addresses.is_empty()
                && let Some(d) = svc
                    .dests
                    .iter()
                    .find(|d| d.forward == ForwardMethod::FullNat)
            {
                return Err(ConfigError::NoLocalAddress(svc.key, d.addr));
            }
            if self.services[..i].iter().any(|s| s.key == svc.key) {
                return Err(ConfigError::DuplicateService(svc.key));
            }
            if svc.key.addr.ip().is_unspecified() {
                return Err(ConfigError::UnspecifiedAddress(svc.key));
            }
            if svc.key.addr.port() == 0 && svc.persistence.is_none() {
                return Err(ConfigError::PortZeroNotPersistent(svc.key));
            }
            if let Some(p) = svc.persistence {
                let max = if svc.key.addr.is_ipv4() { 32 } else { 128 };
                if p.prefix_len == 0 || p.prefix_len > max {
                    return Err(ConfigError::BadPrefix(svc.key, p.prefix_len));
                }
            }
            for (j, d) in svc.dests.iter().enumerate() {
                if svc.dests[..j].iter().any(|o| o.addr == d.addr) {
                    return Err(ConfigError::DuplicateDest(svc.key, d.addr));
                }
                // As in IPVS, only tunnelled real servers may be of the other family.
                if ip_family(d.addr.ip()) != ip_family(svc.key.addr.ip())
                    && d.forward != ForwardMethod::Tunnel
                {
                    return Err(ConfigError::FamilyMismatch(svc.key, d.addr));
                }
                if d.forward == ForwardMethod::Tunnel {
                    let t = d.tunnel;
                    let bad = match t.kind {
                        TunnelType::Gue => t.port == 0,
                        TunnelType::Ipip => t.port != 0 || t.checksum != TunnelChecksum::None,
                        TunnelType::Gre => t.port != 0 || t.checksum == TunnelChecksum::Remcsum,
                    };
                    if bad {
                        return Err(ConfigError::BadTunnel(svc.key, d.addr));
                    }
                }
                if d.addr.ip().is_unspecified() {
                    return Err(ConfigError::DestUnspecified(svc.key, d.addr));
                }
                if d.lower_threshold > d.upper_threshold && d.upper_threshold != 0 {
                    return Err(ConfigError::BadThresholds(svc.key, d.addr));
                }
            }
        }
        Ok(())
    }
}

fn ip_family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The scheduler name is not one of IPVS's.
    #[error("unknown scheduler {0:?}")]
    UnknownScheduler(String),
    /// The scheduler exists in IPVS but the engine does not implement it yet.
    #[error("scheduler {0} is not supported by this engine")]
    UnsupportedScheduler(SchedulerKind),
    /// The forwarding method is not implemented yet.
    #[error("forwarding method {0:?} is not supported by this engine")]
    UnsupportedForward(ForwardMethod),
    /// A service uses a feature the engine does not implement yet (persistence, one-packet
    /// scheduling, IPv6).
    #[error("service {0}: {1} is not supported by this engine")]
    UnsupportedFeature(ServiceKey, &'static str),
    /// Two services have the same key.
    #[error("service {0} already exists")]
    DuplicateService(ServiceKey),
    /// A service's virtual address is 0.0.0.0 or ::.
    #[error("service {0}: the virtual address must not be unspecified")]
    UnspecifiedAddress(ServiceKey),
    /// Port 0 is only meaningful for persistent services.
    #[error("service {0}: port 0 is only allowed on a persistent service")]
    PortZeroNotPersistent(ServiceKey),
    /// The persistence prefix length is out of range for the family.
    #[error("service {0}: persistence prefix length {1} is out of range")]
    BadPrefix(ServiceKey, u8),
    /// Two real servers of one service have the same address.
    #[error("service {0}: real server {1} already exists")]
    DuplicateDest(ServiceKey, SocketAddr),
    /// A real server's address family differs from the service's.
    #[error("service {0}: real server {1} is of another address family")]
    FamilyMismatch(ServiceKey, SocketAddr),
    /// A real server's address is 0.0.0.0 or ::.
    #[error("service {0}: real server {1} has an unspecified address")]
    DestUnspecified(ServiceKey, SocketAddr),
    /// Tunnel settings that do not fit the tunnel type: GUE without a port, a port or checksum
    /// option on IPIP, a port or remote checksum offload on GRE.
    #[error(
        "service {0}: real server {1} has inconsistent tunnel settings (GUE needs --tun-port; \
         IPIP takes no port or checksum option; GRE takes no port or --tun-remcsum)"
    )]
    BadTunnel(ServiceKey, SocketAddr),
    /// A FULLNAT local address is of another family than the service.
    #[error("service {0}: local address {1} is of another address family")]
    LocalAddressFamily(ServiceKey, IpAddr),
    /// A FULLNAT local address is unspecified or multicast.
    #[error("service {0}: local address {1} is not a unicast address")]
    BadLocalAddress(ServiceKey, IpAddr),
    /// A FULLNAT local address is listed twice.
    #[error("service {0}: local address {1} is listed twice")]
    DuplicateLocalAddress(ServiceKey, IpAddr),
    /// A FULLNAT local address is also a virtual address.
    #[error("service {0}: local address {1} is a virtual service address")]
    LocalAddressIsVip(ServiceKey, IpAddr),
    /// A FULLNAT real server on a service without local addresses.
    #[error("service {0}: FULLNAT real server {1} needs local addresses on the service")]
    NoLocalAddress(ServiceKey, SocketAddr),
    /// The lower threshold is above the upper one.
    #[error("service {0}: real server {1} has a lower threshold above its upper threshold")]
    BadThresholds(ServiceKey, SocketAddr),
}
