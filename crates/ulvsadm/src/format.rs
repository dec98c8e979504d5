//! Pure functions from `ulvs.v1` messages to ipvsadm's text and to JSON.
//!
//! The text layout is ipvsadm 1.31's `-L` (see `list_all` / `print_service_entry` in its
//! source): a version header, two title lines, then per service `"%-4s %s"` (protocol and
//! `addr:port`, cut to 33 bytes for IPv4), the scheduler, ` (<flags>)`, ` persistent <t>`,
//! ` mask <m>`, ` ops`; and per real server `"  -> %-28s %-7s %-6d %-10u %-10u"` (the
//! address cut to 28 bytes for IPv4). Services are sorted by family (IPv4 first), protocol
//! number, address and port; real servers by family, address and port. Addresses compare
//! numerically (libipvs compares by wrapped `u32` subtraction, which sorts some pairs backwards;
//! the reference asks for the numeric order).

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Map, Value, json};
use ulvs_proto::v1 as pb;

use crate::model::Protocol;
use crate::names::Resolver;

/// The two title lines of `-L`.
pub const TITLE: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

/// The two title lines of `-L --tun-info`.
pub const TITLE_TUN_INFO: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n";

/// How to render `-L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListStyle {
    /// `-n`: numeric addresses and ports.
    pub numeric: bool,
    /// Sort services and real servers (false with `--nosort`).
    pub sort: bool,
}

/// `IP Virtual Server version 1.2.1 (size=4096)` and a newline.
pub fn header(info: &pb::GetInfoResponse) -> String {
    format!(
        "IP Virtual Server version {} (size={})\n",
        info.ipvs_version, info.connection_table_size
    )
}

/// The whole `-L` output: header (when `info` is given), title, services.
pub fn list_text(
    info: Option<&pb::GetInfoResponse>,
    services: &[pb::Service],
    style: ListStyle,
    names: &dyn Resolver,
) -> String {
    let mut out = String::new();
    if let Some(info) = info {
        out.push_str(&header(info));
    }
    out.push_str(TITLE);
    for svc in ordered_services(services, style.sort) {
        out.push_str(&service_block(svc, style, names));
    }
    out
}

/// `-L --tun-info`: the table with ipvsadm's `TunnelInfo` column after `Forward`
/// (`"  -> %-28s %-7s %-13s %-6d %-10u %-10u"`), empty for real servers not in tunnel mode.
pub fn list_tun_info_text(
    info: Option<&pb::GetInfoResponse>,
    services: &[pb::Service],
    style: ListStyle,
    names: &dyn Resolver,
) -> String {
    let mut out = String::new();
    if let Some(info) = info {
        out.push_str(&header(info));
    }
    out.push_str(TITLE_TUN_INFO);
    for svc in ordered_services(services, style.sort) {
        let default_spec = pb::ServiceSpec::default();
        let spec = svc.spec.as_ref().unwrap_or(&default_spec);
        let proto = spec.key.as_ref().and_then(|k| protocol(k.protocol));
        out.push_str(&service_line(spec, style.numeric, names));
        out.push('\n');
        for rs in ordered_real_servers(&svc.real_servers, style.sort) {
            let default_rs = pb::RealServerSpec::default();
            let rspec = rs.spec.as_ref().unwrap_or(&default_rs);
            let a = addr(&rspec.address);
            let mut name = addr_port_name(&a, rspec.port, proto, style.numeric, names);
            if is_v4(&a) {
                name = truncate(name, 28);
            }
            out.push_str(&format!(
                "  -> {:<28} {:<7} {:<13} {:<6} {:<10} {:<10}\n",
                name,
                forward_name(rspec.forward),
                tunnel_info(rspec),
                rspec.weight,
                rs.active_connections,
                rs.inactive_connections
            ));
        }
    }
    out
}

/// ipvsadm's tunnel info of a real server: `ipip`, `gue:<port>:<-c|+c|r+c>` or `gre:<-c|+c>`;
/// empty unless it is in tunnel mode.
pub fn tunnel_info(rs: &pb::RealServerSpec) -> String {
    if pb::ForwardMethod::try_from(rs.forward) != Ok(pb::ForwardMethod::Tunnel) {
        return String::new();
    }
    let csum = match pb::TunnelChecksum::try_from(rs.tunnel_checksum) {
        Ok(pb::TunnelChecksum::Csum) => "+c",
        Ok(pb::TunnelChecksum::Remcsum) => "r+c",
        _ => "-c",
    };
    match pb::TunnelType::try_from(rs.tunnel_type) {
        Ok(pb::TunnelType::Gue) => format!("gue:{}:{csum}", rs.tunnel_port),
        Ok(pb::TunnelType::Gre) => format!("gre:{csum}"),
        _ => "ipip".to_owned(),
    }
}

/// ipvsadm's `-S` tunnel options of a real server: ` --tun-type ipip`,
/// ` --tun-type gue --tun-port <p> <--tun-nocsum|--tun-csum|--tun-remcsum>` or
/// ` --tun-type gre <--tun-nocsum|--tun-csum|--tun-remcsum>`; empty unless in tunnel mode.
pub fn tunnel_rule_options(rs: &pb::RealServerSpec) -> String {
    if pb::ForwardMethod::try_from(rs.forward) != Ok(pb::ForwardMethod::Tunnel) {
        return String::new();
    }
    let csum = match pb::TunnelChecksum::try_from(rs.tunnel_checksum) {
        Ok(pb::TunnelChecksum::Csum) => "--tun-csum",
        Ok(pb::TunnelChecksum::Remcsum) => "--tun-remcsum",
        _ => "--tun-nocsum",
    };
    match pb::TunnelType::try_from(rs.tunnel_type) {
        Ok(pb::TunnelType::Gue) => format!(" --tun-type gue --tun-port {} {csum}", rs.tunnel_port),
        Ok(pb::TunnelType::Gre) => format!(" --tun-type gre {csum}"),
        _ => " --tun-type ipip".to_owned(),
    }
}

/// One service line and its real-server lines, each ending in a newline.
pub fn service_block(svc: &pb::Service, style: ListStyle, names: &dyn Resolver) -> String {
    let default_spec = pb::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    let proto = spec.key.as_ref().and_then(|k| protocol(k.protocol));
    let mut out = service_line(spec, style.numeric, names);
    out.push('\n');
    for rs in ordered_real_servers(&svc.real_servers, style.sort) {
        out.push_str(&real_server_line(rs, proto, style.numeric, names));
        out.push('\n');
    }
    out
}

pub(crate) fn protocol(p: i32) -> Option<Protocol> {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Tcp) => Some(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Some(Protocol::Udp),
        _ => None,
    }
}

/// A parsed address, or the daemon's text if it does not parse (printed as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    Ip(IpAddr),
    Raw(String),
}

pub(crate) fn addr(s: &str) -> Addr {
    s.parse()
        .map(Addr::Ip)
        .unwrap_or_else(|_| Addr::Raw(s.to_string()))
}

/// Cuts `s` to at most `max` bytes (on a character boundary), as ipvsadm cuts its buffers.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// ipvsadm's `addrport_to_anyname`: `addr:port`, IPv6 in brackets, names unless `numeric`.
pub(crate) fn addr_port_name(
    a: &Addr,
    port: u32,
    proto: Option<Protocol>,
    numeric: bool,
    names: &dyn Resolver,
) -> String {
    let (host, v6) = match a {
        Addr::Ip(ip) => {
            let host = if numeric { None } else { names.host_name(*ip) };
            (host.unwrap_or_else(|| ip.to_string()), ip.is_ipv6())
        }
        Addr::Raw(s) => (s.clone(), s.contains(':')),
    };
    let port_text = match (numeric, proto, u16::try_from(port)) {
        (false, Some(p), Ok(port16)) => names.port_name(port16, p),
        _ => None,
    }
    .unwrap_or_else(|| port.to_string());
    let s = if v6 {
        format!("[{host}]:{port_text}")
    } else {
        format!("{host}:{port_text}")
    };
    // ipvsadm formats into a 60-byte buffer.
    truncate(s, 59)
}

fn is_v4(a: &Addr) -> bool {
    matches!(a, Addr::Ip(IpAddr::V4(_)))
}

/// The scheduler flags as ipvsadm prints them: by bit, named after the scheduler.
pub(crate) fn sched_flags_text(sched: &str, flags: &[String]) -> String {
    let mut bits = [false; 3];
    let mut other = Vec::new();
    for f in flags {
        match f.as_str() {
            "flag-1" | "sh-fallback" | "mh-fallback" => bits[0] = true,
            "flag-2" | "sh-port" | "mh-port" => bits[1] = true,
            "flag-3" => bits[2] = true,
            _ => other.push(f.as_str()),
        }
    }
    let labels: [&str; 3] = match sched {
        "sh" => ["sh-fallback", "sh-port", ""],
        "mh" => ["mh-fallback", "mh-port", ""],
        _ => ["flag-1", "flag-2", "flag-3"],
    };
    let mut words: Vec<&str> = bits
        .iter()
        .zip(labels)
        .filter(|(set, label)| **set && !label.is_empty())
        .map(|(_, label)| label)
        .collect();
    words.extend(other);
    words.join(",")
}

/// One service line without the newline.
pub fn service_line(spec: &pb::ServiceSpec, numeric: bool, names: &dyn Resolver) -> String {
    let default_key = pb::ServiceKey::default();
    let key = spec.key.as_ref().unwrap_or(&default_key);
    let proto = protocol(key.protocol);
    let a = addr(&key.address);
    let mut line = format!(
        "{:<4} {}",
        proto.map_or("?", Protocol::name),
        addr_port_name(&a, key.port, proto, numeric, names)
    );
    if is_v4(&a) {
        line = truncate(line, 33);
    }
    line.push(' ');
    line.push_str(&spec.scheduler);
    let flags = sched_flags_text(&spec.scheduler, &spec.scheduler_flags);
    if !flags.is_empty() {
        line.push_str(&format!(" ({flags})"));
    }
    if spec.persistence_timeout != 0 {
        line.push_str(&format!(" persistent {}", spec.persistence_timeout));
        let len = spec.persistence_prefix_len;
        match a {
            Addr::Ip(IpAddr::V4(_)) if len != 0 && len < 32 => {
                let mask = Ipv4Addr::from(u32::MAX << (32 - len));
                line.push_str(&format!(" mask {mask}"));
            }
            Addr::Ip(IpAddr::V6(_)) if len != 0 && len != 128 => {
                line.push_str(&format!(" mask {len}"));
            }
            _ => {}
        }
    }
    if spec.one_packet {
        line.push_str(" ops");
    }
    line
}

/// ipvsadm's `fwd_name`, plus DPVS's `FullNat`.
pub fn forward_name(forward: i32) -> &'static str {
    match pb::ForwardMethod::try_from(forward) {
        Ok(pb::ForwardMethod::Masq) => "Masq",
        Ok(pb::ForwardMethod::Route) => "Route",
        Ok(pb::ForwardMethod::Tunnel) => "Tunnel",
        Ok(pb::ForwardMethod::Fullnat) => "FullNat",
        _ => "?",
    }
}

/// One real-server line without the newline; `proto` is the service's, for port names.
pub fn real_server_line(
    rs: &pb::RealServer,
    proto: Option<Protocol>,
    numeric: bool,
    names: &dyn Resolver,
) -> String {
    let default_spec = pb::RealServerSpec::default();
    let spec = rs.spec.as_ref().unwrap_or(&default_spec);
    let a = addr(&spec.address);
    let mut name = addr_port_name(&a, spec.port, proto, numeric, names);
    if is_v4(&a) {
        name = truncate(name, 28);
    }
    format!(
        "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
        name,
        forward_name(spec.forward),
        spec.weight,
        rs.active_connections,
        rs.inactive_connections
    )
}

/// Sort key of an address: family, then numeric value; unparsable text sorts last.
fn addr_key(s: &str) -> (u8, u128, String) {
    match addr(s) {
        Addr::Ip(IpAddr::V4(a)) => (0, u32::from(a).into(), String::new()),
        Addr::Ip(IpAddr::V6(a)) => (1, u128::from(a), String::new()),
        Addr::Raw(r) => (2, 0, r),
    }
}

fn protocol_number(p: i32) -> u8 {
    protocol(p).map_or(0, Protocol::number)
}

/// Services in ipvsadm's order (or as given when `sort` is false).
pub fn ordered_services(services: &[pb::Service], sort: bool) -> Vec<&pb::Service> {
    let mut v: Vec<&pb::Service> = services.iter().collect();
    if sort {
        v.sort_by_cached_key(|s| {
            let key = s
                .spec
                .as_ref()
                .and_then(|sp| sp.key.clone())
                .unwrap_or_default();
            let (fam, num, raw) = addr_key(&key.address);
            (fam, protocol_number(key.protocol), num, raw, key.port)
        });
    }
    v
}

/// Real servers in ipvsadm's order (or as given when `sort` is false).
pub fn ordered_real_servers(servers: &[pb::RealServer], sort: bool) -> Vec<&pb::RealServer> {
    let mut v: Vec<&pb::RealServer> = servers.iter().collect();
    if sort {
        v.sort_by_cached_key(|rs| {
            let spec = rs.spec.clone().unwrap_or_default();
            let (fam, num, raw) = addr_key(&spec.address);
            (fam, num, raw, spec.port)
        });
    }
    v
}

fn protocol_json(v: i32) -> Value {
    pb::Protocol::try_from(v).map_or_else(|_| Value::from(v), |p| Value::from(p.as_str_name()))
}

fn forward_json(v: i32) -> Value {
    pb::ForwardMethod::try_from(v).map_or_else(|_| Value::from(v), |f| Value::from(f.as_str_name()))
}

fn stats_json(s: Option<&pb::Stats>) -> Value {
    let s = s.cloned().unwrap_or_default();
    json!({
        "connections": s.connections,
        "in_packets": s.in_packets,
        "out_packets": s.out_packets,
        "in_bytes": s.in_bytes,
        "out_bytes": s.out_bytes,
    })
}

fn rates_json(r: Option<&pb::Rates>) -> Value {
    let r = r.copied().unwrap_or_default();
    json!({
        "connections_per_second": r.connections_per_second,
        "in_packets_per_second": r.in_packets_per_second,
        "out_packets_per_second": r.out_packets_per_second,
        "in_bytes_per_second": r.in_bytes_per_second,
        "out_bytes_per_second": r.out_bytes_per_second,
    })
}

fn key_json(k: Option<&pb::ServiceKey>) -> Value {
    let k = k.cloned().unwrap_or_default();
    json!({
        "protocol": protocol_json(k.protocol),
        "address": k.address,
        "port": k.port,
    })
}

/// One service as JSON, field names and enum names as in `ulvs.proto`.
pub fn service_json(svc: &pb::Service, sort: bool) -> Value {
    let spec = svc.spec.clone().unwrap_or_default();
    let labels: Map<String, Value> = {
        let mut l: Vec<_> = spec.labels.iter().collect();
        l.sort();
        l.into_iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect()
    };
    let real_servers: Vec<Value> = ordered_real_servers(&svc.real_servers, sort)
        .into_iter()
        .map(|rs| {
            let s = rs.spec.clone().unwrap_or_default();
            let mut v = json!({
                "spec": {
                    "address": s.address,
                    "port": s.port,
                    "forward": forward_json(s.forward),
                    "weight": s.weight,
                    "upper_threshold": s.upper_threshold,
                    "lower_threshold": s.lower_threshold,
                },
                "active_connections": rs.active_connections,
                "inactive_connections": rs.inactive_connections,
                "persistent_connections": rs.persistent_connections,
                "stats": stats_json(rs.stats.as_ref()),
                "rates": rates_json(rs.rates.as_ref()),
            });
            if s.forward == pb::ForwardMethod::Tunnel as i32 {
                v["spec"]["tunnel_type"] = pb::TunnelType::try_from(s.tunnel_type)
                    .map_or_else(|_| Value::from(s.tunnel_type), |t| t.as_str_name().into());
                v["spec"]["tunnel_port"] = Value::from(s.tunnel_port);
                v["spec"]["tunnel_checksum"] = pb::TunnelChecksum::try_from(s.tunnel_checksum)
                    .map_or_else(
                        |_| Value::from(s.tunnel_checksum),
                        |t| t.as_str_name().into(),
                    );
            }
            v
        })
        .collect();
    json!({
        "spec": {
            "key": key_json(spec.key.as_ref()),
            "scheduler": spec.scheduler,
            "scheduler_flags": spec.scheduler_flags,
            "persistence_timeout": spec.persistence_timeout,
            "persistence_prefix_len": spec.persistence_prefix_len,
            "one_packet": spec.one_packet,
            "labels": labels,
        },
        "real_servers": real_servers,
        "stats": stats_json(svc.stats.as_ref()),
        "rates": rates_json(svc.rates.as_ref()),
    })
}

/// `-L -o json` (also with `--stats`, `--rate`, `--thresholds` and `--persistent-conn`, which
/// show parts of the same data): `{"services": [...]}`, the ListServices response, in the same
/// order as the text output. Field and enum names are the proto's; 64-bit counters are JSON numbers.
pub fn list_json(services: &[pb::Service], sort: bool) -> String {
    let services: Vec<Value> = ordered_services(services, sort)
        .into_iter()
        .map(|s| service_json(s, sort))
        .collect();
    pretty_json(&json!({ "services": services }))
}

/// Indented JSON and a newline.
pub(crate) fn pretty_json(v: &Value) -> String {
    // A `Value` always serialises.
    let mut text = serde_json::to_string_pretty(v).unwrap_or_default();
    text.push('\n');
    text
}
