//! The CLI's own view of services and real servers, independent of the generated gRPC types.
//!
//! The parser produces these; `client` converts them to `ulvs_proto` messages at the edge.

use std::fmt;
use std::net::IpAddr;

/// ipvsadm's default scheduler, used when `-s` is not given to `-A` / `-E`.
pub const DEFAULT_SCHEDULER: &str = "wlc";

/// Default persistence timeout (seconds) for a bare `-p`: 300 s, as ipvsadm's man page
/// documents (ipvsadm's code uses 360; ulvs follows the documented value).
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 300;

/// The largest persistence timeout ipvsadm accepts (31 days, in seconds).
pub const MAX_TIMEOUT: u32 = 86400 * 31;

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (`-t`).
    Tcp,
    /// UDP (`-u`).
    Udp,
}

impl Protocol {
    /// The IANA protocol number; ipvsadm sorts services by it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The name ipvsadm prints in `-L` output (`TCP`, `UDP`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// The protocol column of /etc/services (`tcp`, `udp`).
    pub fn services_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Formats `addr:port` the way ipvsadm does: IPv6 addresses are bracketed.
pub fn addr_port(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Identifies a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Virtual address.
    pub addr: IpAddr,
    /// Virtual port; 0 is the wildcard port of a persistent service.
    pub port: u16,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.protocol.name(),
            addr_port(&self.addr, self.port)
        )
    }
}

/// The settings of a virtual service (`-A` / `-E`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Which service.
    pub key: ServiceKey,
    /// Scheduler name (`-s`); ipvsadm's default `wlc` when not given.
    pub scheduler: String,
    /// Scheduler flags (`-b`), as written by the user.
    pub sched_flags: Vec<String>,
    /// Persistence timeout in seconds (`-p`); `None` when not persistent.
    pub persistence_timeout: Option<u32>,
    /// Persistence granularity as a prefix length (`-M`); `None` means the default (/32, /128).
    pub persistence_prefix_len: Option<u8>,
    /// One-packet scheduling (`--ops`).
    pub one_packet: bool,
}

/// How packets reach a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// NAT (`-m`).
    Masq,
    /// Direct routing (`-g`, ipvsadm's default).
    Route,
    /// IP-in-IP tunnelling (`-i`).
    Tunnel,
    /// Full NAT (`--fullnat`, a ulvs extension after DPVS).
    FullNat,
}

/// The settings of a real server (`-a` / `-e`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServerSpec {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port (forced to the service port for `-g` and `-i`, as ipvsadm does).
    pub port: u16,
    /// Forwarding method.
    pub forward: Forward,
    /// Weight (`-w`, default 1).
    pub weight: u32,
    /// Upper connection threshold (`-x`, 0 = none).
    pub upper_threshold: u32,
    /// Lower connection threshold (`-y`, 0 = none).
    pub lower_threshold: u32,
    /// Tunnel settings (`--tun-type`, `--tun-port`, `--tun-*csum`), for `-i` only.
    pub tunnel: TunnelSpec,
}

/// Encapsulation of a tunnel-mode real server (`--tun-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunnelKind {
    /// `ipip` (the default).
    #[default]
    Ipip,
    /// `gue`.
    Gue,
    /// `gre`.
    Gre,
}

/// Checksum option of a GUE or GRE tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunnelCsum {
    /// `--tun-nocsum` (the default).
    #[default]
    None,
    /// `--tun-csum`.
    Csum,
    /// `--tun-remcsum` (GUE only).
    Remcsum,
}

/// Tunnel settings of a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelSpec {
    /// Encapsulation.
    pub kind: TunnelKind,
    /// GUE destination port (`--tun-port`), 0 when not given.
    pub port: u16,
    /// Checksum option.
    pub csum: TunnelCsum,
}
