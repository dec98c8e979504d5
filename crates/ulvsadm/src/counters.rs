//! Pure functions from `ulvs.v1` messages to ipvsadm's `-L --stats`, `-L --rate`,
//! `-L --thresholds`, `-L --persistent-conn`, `-L -c` and `-L --timeout` text, and to the JSON
//! of `-c` and `--timeout` (`-o json`).
//!
//! Layouts follow ipvsadm 1.31 (`print_title`, `print_service_entry`, `print_largenum`,
//! `list_conn`): the stats and rate titles are `"%-33s %8s %8s %8s %8s %8s"` plus
//! `"  -> RemoteAddress:Port"`; service rows are the `"%-4s %s"` service name padded to 33,
//! real-server rows `"  -> %-28s"`; counters go through the large-number formatter (`%9llu`, or
//! `%8lluK/M/G/T` from 1e8 on, unless `--exact`); rate rows print CPS and PPS as `" %8u"`.
//! `--thresholds` titles are `"%-33s %-10s %-10s %-10s %-10s"` (`Uthreshold Lthreshold
//! ActiveConn InActConn`), `--persistent-conn` titles `"%-33s %-9s %-11s %-10s %-10s"` (`Weight
//! PersistConn ActiveConn InActConn`), both followed by `"  -> RemoteAddress:Port"`; their
//! service rows are the plain `-L` service lines and their real-server rows
//! `"  -> %-28s %-10u %-10u %-10u %-10u"` and `"  -> %-28s %-9u %-11u %-10u %-10u"`.
//! Connection entries are `"%-3s %-6s %-11s %-18s %-18s %s"` under
//! `IPVS connection entries`.

use serde_json::{Value, json};
use ulvs_proto::v1 as pb;

use crate::format::{self, ListStyle, addr, addr_port_name, protocol};
use crate::model::Protocol;
use crate::names::Resolver;

/// What `-L` shows besides the plain table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListView {
    /// The plain table (`-L`).
    #[default]
    Table,
    /// `--stats`.
    Stats,
    /// `--rate`.
    Rate,
    /// `--thresholds`.
    Thresholds,
    /// `--persistent-conn`.
    PersistentConn,
    /// `-c`: connection entries.
    Connections,
    /// `--timeout`.
    Timeout,
    /// `--tun-info`: the table with a `TunnelInfo` column.
    TunInfo,
}

/// ipvsadm's `print_largenum`: `%9llu`, or from 1e8 on `%8llu` with a K/M/G/T suffix; with
/// `exact` the whole number, right-aligned in 9 columns (or one more than its length).
pub fn largenum(n: u64, exact: bool) -> String {
    if exact {
        let s = n.to_string();
        let w = if s.len() <= 8 { 9 } else { s.len() + 1 };
        return format!("{s:>w$}");
    }
    if n < 100_000_000 {
        format!("{n:9}")
    } else if n < 1_000_000_000 {
        format!("{:8}K", n / 1_000)
    } else if n < 100_000_000_000 {
        format!("{:8}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        format!("{:8}G", n / 1_000_000_000)
    } else {
        format!("{:8}T", n / 1_000_000_000_000)
    }
}

/// The two title lines of `--stats` (`rate == false`) or `--rate`.
pub fn title(rate: bool) -> String {
    let cols = if rate {
        ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]
    } else {
        ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]
    };
    format!(
        "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
        "Prot LocalAddress:Port", cols[0], cols[1], cols[2], cols[3], cols[4]
    )
}

/// The service name column (`"%-4s %s"`, cut to 33 bytes for IPv4) padded to 33.
fn service_name(spec: &pb::ServiceSpec, numeric: bool, names: &dyn Resolver) -> String {
    // The plain line starts with the name, then " <scheduler>..."; take the name part.
    let default_key = pb::ServiceKey::default();
    let key = spec.key.as_ref().unwrap_or(&default_key);
    let proto = protocol(key.protocol);
    let a = addr(&key.address);
    let mut name = format!(
        "{:<4} {}",
        proto.map_or("?", Protocol::name),
        addr_port_name(&a, key.port, proto, numeric, names)
    );
    if matches!(a, format::Addr::Ip(std::net::IpAddr::V4(_))) && name.len() > 33 {
        name.truncate(33);
    }
    format!("{name:<33}")
}

fn rs_name(
    rs: &pb::RealServer,
    proto: Option<Protocol>,
    numeric: bool,
    names: &dyn Resolver,
) -> String {
    let default_spec = pb::RealServerSpec::default();
    let spec = rs.spec.as_ref().unwrap_or(&default_spec);
    let a = addr(&spec.address);
    let mut name = addr_port_name(&a, spec.port, proto, numeric, names);
    if matches!(a, format::Addr::Ip(std::net::IpAddr::V4(_))) && name.len() > 28 {
        name.truncate(28);
    }
    format!("  -> {name:<28}")
}

fn stats_cols(s: Option<&pb::Stats>, exact: bool) -> String {
    let s = s.copied().unwrap_or_default();
    [
        s.connections,
        s.in_packets,
        s.out_packets,
        s.in_bytes,
        s.out_bytes,
    ]
    .iter()
    .map(|&n| largenum(n, exact))
    .collect()
}

fn rate_cols(r: Option<&pb::Rates>, exact: bool) -> String {
    let r = r.copied().unwrap_or_default();
    format!(
        " {:8} {:8} {:8}{}{}",
        r.connections_per_second,
        r.in_packets_per_second,
        r.out_packets_per_second,
        largenum(r.in_bytes_per_second, exact),
        largenum(r.out_bytes_per_second, exact)
    )
}

/// The whole `-L --stats` (`rate == false`) or `-L --rate` output: header (when `info` is
/// given), titles, a row per service and per real server.
pub fn counters_text(
    info: Option<&pb::GetInfoResponse>,
    services: &[pb::Service],
    style: ListStyle,
    rate: bool,
    exact: bool,
    names: &dyn Resolver,
) -> String {
    let mut out = String::new();
    if let Some(info) = info {
        out.push_str(&format::header(info));
    }
    out.push_str(&title(rate));
    for svc in format::ordered_services(services, style.sort) {
        let default_spec = pb::ServiceSpec::default();
        let spec = svc.spec.as_ref().unwrap_or(&default_spec);
        let proto = spec.key.as_ref().and_then(|k| protocol(k.protocol));
        out.push_str(&service_name(spec, style.numeric, names));
        if rate {
            out.push_str(&rate_cols(svc.rates.as_ref(), exact));
        } else {
            out.push_str(&stats_cols(svc.stats.as_ref(), exact));
        }
        out.push('\n');
        for rs in format::ordered_real_servers(&svc.real_servers, style.sort) {
            out.push_str(&rs_name(rs, proto, style.numeric, names));
            if rate {
                out.push_str(&rate_cols(rs.rates.as_ref(), exact));
            } else {
                out.push_str(&stats_cols(rs.stats.as_ref(), exact));
            }
            out.push('\n');
        }
    }
    out
}

/// `-L -c`: the connection entries. `expire` is `mm:ss` of the time left.
pub fn connections_text(conns: &[pb::Connection], numeric: bool, names: &dyn Resolver) -> String {
    let mut out = String::from("IPVS connection entries\n");
    out.push_str(&format!(
        "pro expire {:<11} {:<18} {:<18} {}\n",
        "state", "source", "virtual", "destination"
    ));
    for c in conns {
        let proto = protocol(c.protocol);
        let secs = c.expires_in_ms / 1000;
        let expire = format!("{:02}:{:02}", secs / 60, secs % 60);
        let ap = |a: &str, p: u32| addr_port_name(&addr(a), p, proto, numeric, names);
        out.push_str(&format!(
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}\n",
            proto.map_or("?", Protocol::name),
            expire,
            c.state,
            ap(&c.client_address, c.client_port),
            ap(&c.virtual_address, c.virtual_port),
            ap(&c.real_server_address, c.real_server_port),
        ));
    }
    out
}

/// `-L --timeout`.
pub fn timeout_text(t: &pb::Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcp_fin, t.udp
    )
}

/// Which per-real-server columns [`server_columns_text`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerColumns {
    /// `--thresholds`: upper and lower threshold, active and inactive connections.
    Thresholds,
    /// `--persistent-conn`: weight, persistent, active and inactive connections.
    PersistentConn,
}

/// The whole `-L --thresholds` or `-L --persistent-conn` output: header (when `info` is
/// given), titles, the plain service lines and a row per real server.
pub fn server_columns_text(
    info: Option<&pb::GetInfoResponse>,
    services: &[pb::Service],
    style: ListStyle,
    columns: ServerColumns,
    names: &dyn Resolver,
) -> String {
    let mut out = String::new();
    if let Some(info) = info {
        out.push_str(&format::header(info));
    }
    let prot = "Prot LocalAddress:Port";
    out.push_str(&match columns {
        ServerColumns::Thresholds => format!(
            "{prot:<33} {:<10} {:<10} {:<10} {:<10}\n",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        ),
        ServerColumns::PersistentConn => format!(
            "{prot:<33} {:<9} {:<11} {:<10} {:<10}\n",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        ),
    });
    out.push_str("  -> RemoteAddress:Port\n");
    for svc in format::ordered_services(services, style.sort) {
        let default_spec = pb::ServiceSpec::default();
        let spec = svc.spec.as_ref().unwrap_or(&default_spec);
        let proto = spec.key.as_ref().and_then(|k| protocol(k.protocol));
        out.push_str(&format::service_line(spec, style.numeric, names));
        out.push('\n');
        for rs in format::ordered_real_servers(&svc.real_servers, style.sort) {
            let default_rs = pb::RealServerSpec::default();
            let rs_spec = rs.spec.as_ref().unwrap_or(&default_rs);
            out.push_str(&rs_name(rs, proto, style.numeric, names));
            out.push_str(&match columns {
                ServerColumns::Thresholds => format!(
                    " {:<10} {:<10} {:<10} {:<10}\n",
                    rs_spec.upper_threshold,
                    rs_spec.lower_threshold,
                    rs.active_connections,
                    rs.inactive_connections
                ),
                ServerColumns::PersistentConn => format!(
                    " {:<9} {:<11} {:<10} {:<10}\n",
                    rs_spec.weight,
                    rs.persistent_connections,
                    rs.active_connections,
                    rs.inactive_connections
                ),
            });
        }
    }
    out
}

fn protocol_json(v: i32) -> Value {
    pb::Protocol::try_from(v).map_or_else(|_| Value::from(v), |p| Value::from(p.as_str_name()))
}

/// `-L -c -o json`: `{"connections": [...]}`, field names as in `ulvs.proto`'s `Connection`.
pub fn connections_json(conns: &[pb::Connection]) -> String {
    let conns: Vec<Value> = conns
        .iter()
        .map(|c| {
            json!({
                "protocol": protocol_json(c.protocol),
                "client_address": c.client_address,
                "client_port": c.client_port,
                "virtual_address": c.virtual_address,
                "virtual_port": c.virtual_port,
                "local_address": c.local_address,
                "local_port": c.local_port,
                "real_server_address": c.real_server_address,
                "real_server_port": c.real_server_port,
                "forward": pb::ForwardMethod::try_from(c.forward)
                    .map_or_else(|_| Value::from(c.forward), |f| Value::from(f.as_str_name())),
                "state": c.state,
                "expires_in_ms": c.expires_in_ms,
                "template": c.template,
            })
        })
        .collect();
    format::pretty_json(&json!({ "connections": conns }))
}

/// `-L --timeout -o json`: `{"timeouts": {"tcp": .., "tcp_fin": .., "udp": ..}}` in seconds.
pub fn timeout_json(t: &pb::Timeouts) -> String {
    format::pretty_json(&json!({
        "timeouts": { "tcp": t.tcp, "tcp_fin": t.tcp_fin, "udp": t.udp }
    }))
}
