//! Name lookups for addresses and ports: `/etc/services` and `/etc/hosts`, read by us.
//!
//! ipvsadm resolves names with `getservbyport` / `gethostbyaddr` when listing without `-n`, and
//! accepts host and service names on input. ulvsadm does the same with one deliberate difference:
//! **listing never asks DNS**. Reverse lookups come from `/etc/hosts` only, so `ulvsadm -L` on a
//! host with an unreachable resolver prints at once instead of hanging once per address; an address
//! without an `/etc/hosts` entry prints numerically. Port names come from `/etc/services`, first
//! match in file order, like `getservbyport`.
//!
//! On input (`-t www.example.com:http`), a host name is looked up in `/etc/hosts` first and then
//! through the system resolver (the user asked for that name, so a lookup is expected); only IPv4
//! results count, as with ipvsadm's `gethostbyname`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;

use crate::model::Protocol;

/// Looks up names for addresses and ports.
pub trait Resolver {
    /// The service name of `port` for `proto` (`getservbyport`).
    fn port_name(&self, port: u16, proto: Protocol) -> Option<String>;
    /// The port of the service called `name` for `proto` (`getservbyname`).
    fn port_by_name(&self, name: &str, proto: Protocol) -> Option<u16>;
    /// The host name of `addr` (reverse lookup).
    fn host_name(&self, addr: IpAddr) -> Option<String>;
    /// The IPv4 address of the host called `name` (`gethostbyname`).
    fn host_v4(&self, name: &str) -> Option<Ipv4Addr>;
}

#[derive(Debug, Clone)]
struct ServiceEntry {
    name: String,
    aliases: Vec<String>,
    port: u16,
    proto: String,
}

#[derive(Debug, Clone)]
struct HostEntry {
    addr: IpAddr,
    /// Canonical name first, then aliases.
    names: Vec<String>,
}

/// Parsed contents of a services file and a hosts file.
#[derive(Debug, Clone, Default)]
pub struct NameTables {
    services: Vec<ServiceEntry>,
    hosts: Vec<HostEntry>,
}

fn strip_comment(line: &str) -> &str {
    line.split('#').next().unwrap_or("")
}

impl NameTables {
    /// Parses the text of an `/etc/services` file and an `/etc/hosts` file. Lines that do not
    /// parse are skipped, as the C library does.
    pub fn parse(services: &str, hosts: &str) -> Self {
        let services = services
            .lines()
            .filter_map(|line| {
                let mut it = strip_comment(line).split_whitespace();
                let name = it.next()?.to_string();
                let (port, proto) = it.next()?.split_once('/')?;
                let port = port.parse().ok()?;
                Some(ServiceEntry {
                    name,
                    port,
                    proto: proto.to_string(),
                    aliases: it.map(str::to_string).collect(),
                })
            })
            .collect();
        let hosts = hosts
            .lines()
            .filter_map(|line| {
                let mut it = strip_comment(line).split_whitespace();
                let addr = it.next()?.parse().ok()?;
                let names: Vec<String> = it.map(str::to_string).collect();
                (!names.is_empty()).then_some(HostEntry { addr, names })
            })
            .collect();
        NameTables { services, hosts }
    }

    fn port_name(&self, port: u16, proto: Protocol) -> Option<String> {
        self.services
            .iter()
            .find(|s| s.port == port && s.proto == proto.services_name())
            .map(|s| s.name.clone())
    }

    fn port_by_name(&self, name: &str, proto: Protocol) -> Option<u16> {
        self.services
            .iter()
            .find(|s| {
                s.proto == proto.services_name()
                    && (s.name == name || s.aliases.iter().any(|a| a == name))
            })
            .map(|s| s.port)
    }

    fn host_name(&self, addr: IpAddr) -> Option<String> {
        self.hosts
            .iter()
            .find(|h| h.addr == addr)
            .map(|h| h.names[0].clone())
    }

    fn host_v4(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.iter().find_map(|h| match h.addr {
            IpAddr::V4(a) if h.names.iter().any(|n| n.eq_ignore_ascii_case(name)) => Some(a),
            _ => None,
        })
    }
}

/// Fixed tables and nothing else: no files, no DNS. For tests and for `-n`.
#[derive(Debug, Clone, Default)]
pub struct StaticNames(pub NameTables);

impl Resolver for StaticNames {
    fn port_name(&self, port: u16, proto: Protocol) -> Option<String> {
        self.0.port_name(port, proto)
    }
    fn port_by_name(&self, name: &str, proto: Protocol) -> Option<u16> {
        self.0.port_by_name(name, proto)
    }
    fn host_name(&self, addr: IpAddr) -> Option<String> {
        self.0.host_name(addr)
    }
    fn host_v4(&self, name: &str) -> Option<Ipv4Addr> {
        self.0.host_v4(name)
    }
}

/// The system's `/etc/services` and `/etc/hosts`, read on first use; forward host lookups
/// fall back to the system resolver.
#[derive(Debug, Default)]
pub struct SystemNames {
    tables: OnceLock<NameTables>,
}

impl SystemNames {
    /// A resolver that reads the system files when first asked.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> &NameTables {
        self.tables.get_or_init(|| {
            let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
            let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            NameTables::parse(&services, &hosts)
        })
    }
}

impl Resolver for SystemNames {
    fn port_name(&self, port: u16, proto: Protocol) -> Option<String> {
        self.tables().port_name(port, proto)
    }
    fn port_by_name(&self, name: &str, proto: Protocol) -> Option<u16> {
        self.tables().port_by_name(name, proto)
    }
    fn host_name(&self, addr: IpAddr) -> Option<String> {
        self.tables().host_name(addr)
    }
    fn host_v4(&self, name: &str) -> Option<Ipv4Addr> {
        if let Some(a) = self.tables().host_v4(name) {
            return Some(a);
        }
        (name, 0u16)
            .to_socket_addrs()
            .ok()?
            .find_map(|sa| match sa {
                SocketAddr::V4(v4) => Some(*v4.ip()),
                SocketAddr::V6(_) => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: &str = "\
# comment line
http            80/tcp          www             # WorldWideWeb HTTP
http            80/udp
domain          53/tcp
domain          53/udp
broken line
https           443/tcp
";
    const HOSTS: &str = "\
127.0.0.1   localhost
::1         localhost ip6-localhost
198.18.0.1  vip.example vip   # the VIP
198.18.0.1  second.example
";

    fn names() -> StaticNames {
        StaticNames(NameTables::parse(SERVICES, HOSTS))
    }

    #[test]
    fn services_lookups_follow_file_order_and_aliases() {
        let n = names();
        assert_eq!(n.port_name(80, Protocol::Tcp).as_deref(), Some("http"));
        assert_eq!(n.port_name(443, Protocol::Udp), None);
        assert_eq!(n.port_by_name("www", Protocol::Tcp), Some(80));
        assert_eq!(n.port_by_name("www", Protocol::Udp), None);
        assert_eq!(n.port_by_name("domain", Protocol::Udp), Some(53));
    }

    #[test]
    fn hosts_lookups_use_the_first_matching_line() {
        let n = names();
        let vip: IpAddr = "198.18.0.1".parse().unwrap();
        assert_eq!(n.host_name(vip).as_deref(), Some("vip.example"));
        assert_eq!(
            n.host_name("::1".parse().unwrap()).as_deref(),
            Some("localhost")
        );
        assert_eq!(n.host_v4("VIP"), Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(n.host_v4("ip6-localhost"), None);
    }
}
