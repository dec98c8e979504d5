//! The connection-table RPCs: GetTimeouts, SetTimeouts, GetConntrackSettings,
//! SetConntrackSettings, ListConnections (streamed in batches), GetStats and ZeroCounters, and
//! the rate conversion used by ListServices.
//!
//! They act on the backend's engine ([`Backend::conntrack`]) directly: none of them changes the
//! configuration, so they take no part in the configuration transaction.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::Status;
use ulvs_engine::{
    Config, ConnectionInfo, ConntrackSettings, Engine, ForwardMethod, Protocol, Rates, TcpState,
};
use ulvs_proto::v1 as pb;

use crate::{Backend, ControlError, validate};

/// Connections per ListConnections message.
pub(crate) const BATCH: usize = 1024;

fn engine<B: Backend>(backend: &B) -> Result<&Engine, ControlError> {
    backend
        .conntrack()
        .ok_or_else(|| ControlError::Unsupported {
            field: String::new(),
            message: "this daemon has no connection table".to_owned(),
        })
}

fn secs(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

fn timeouts_to_pb(e: &Engine) -> pb::Timeouts {
    let t = e.timeouts();
    pb::Timeouts {
        tcp: secs(t.tcp(TcpState::Established)),
        tcp_fin: secs(t.tcp(TcpState::FinWait)),
        udp: secs(t.udp_ms),
    }
}

/// GetTimeouts: ipvsadm's three (tcp = ESTABLISHED, tcpfin = FIN_WAIT, udp), in seconds.
pub(crate) fn get_timeouts<B: Backend>(b: &B) -> Result<pb::GetTimeoutsResponse, ControlError> {
    Ok(pb::GetTimeoutsResponse {
        timeouts: Some(timeouts_to_pb(engine(b)?)),
    })
}

/// SetTimeouts: a 0 keeps the current value (ipvsadm `--set`).
pub(crate) fn set_timeouts<B: Backend>(
    b: &B,
    req: &pb::SetTimeoutsRequest,
) -> Result<pb::SetTimeoutsResponse, ControlError> {
    let e = engine(b)?;
    let Some(want) = req.timeouts.as_ref() else {
        return Err(ControlError::invalid("timeouts", "missing"));
    };
    let mut t = e.timeouts();
    let ms = |s: u32| u64::from(s) * 1000;
    if want.tcp != 0 {
        t.set_tcp(TcpState::Established, ms(want.tcp));
    }
    if want.tcp_fin != 0 {
        t.set_tcp(TcpState::FinWait, ms(want.tcp_fin));
    }
    if want.udp != 0 {
        t.udp_ms = ms(want.udp);
    }
    e.set_timeouts(t);
    Ok(pb::SetTimeoutsResponse {
        timeouts: Some(timeouts_to_pb(e)),
    })
}

fn settings_to_pb(e: &Engine) -> pb::ConntrackSettings {
    let s = e.conntrack_settings();
    pb::ConntrackSettings {
        max_connections: e.max_connections() as u64,
        expire_nodest_conn: s.expire_nodest_conn,
        expire_quiescent_template: s.expire_quiescent_template,
        conn_reuse_reschedule: s.conn_reuse_reschedule,
    }
}

/// GetConntrackSettings.
pub(crate) fn get_settings<B: Backend>(
    b: &B,
) -> Result<pb::GetConntrackSettingsResponse, ControlError> {
    Ok(pb::GetConntrackSettingsResponse {
        settings: Some(settings_to_pb(engine(b)?)),
    })
}

/// SetConntrackSettings: the three switches are set as given; `max_connections` is read-only
/// (0, or the current value, is accepted).
pub(crate) fn set_settings<B: Backend>(
    b: &B,
    req: &pb::SetConntrackSettingsRequest,
) -> Result<pb::SetConntrackSettingsResponse, ControlError> {
    let e = engine(b)?;
    let Some(s) = req.settings.as_ref() else {
        return Err(ControlError::invalid("settings", "missing"));
    };
    let max = e.max_connections() as u64;
    if s.max_connections != 0 && s.max_connections != max {
        return Err(ControlError::invalid(
            "settings.max_connections",
            format!("is fixed at daemon start ({max}); send 0 or {max}"),
        ));
    }
    e.set_conntrack_settings(ConntrackSettings {
        expire_nodest_conn: s.expire_nodest_conn,
        expire_quiescent_template: s.expire_quiescent_template,
        conn_reuse_reschedule: s.conn_reuse_reschedule,
    });
    Ok(pb::SetConntrackSettingsResponse {
        settings: Some(settings_to_pb(e)),
    })
}

fn forward_of(config: &Config, c: &ConnectionInfo) -> ForwardMethod {
    config
        .services
        .iter()
        .filter(|s| s.key.protocol == c.protocol && s.key.addr.ip() == c.virtual_addr.ip())
        .flat_map(|s| &s.dests)
        .find(|d| {
            d.addr.ip() == c.real_server.ip()
                && (d.addr.port() == c.real_server.port() || d.addr.port() == 0)
        })
        .map_or(ForwardMethod::Masq, |d| d.forward)
}

fn connection_to_pb(config: &Config, c: &ConnectionInfo) -> pb::Connection {
    let forward = forward_of(config, c);
    let (local_address, local_port) = if c.reply_to == c.client {
        (String::new(), 0)
    } else {
        (c.reply_to.ip().to_string(), u32::from(c.reply_to.port()))
    };
    let ip = |a: SocketAddr| a.ip().to_string();
    pb::Connection {
        protocol: match c.protocol {
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
        } as i32,
        client_address: ip(c.client),
        client_port: u32::from(c.client.port()),
        virtual_address: ip(c.virtual_addr),
        virtual_port: u32::from(c.virtual_addr.port()),
        local_address,
        local_port,
        real_server_address: ip(c.real_server),
        real_server_port: u32::from(c.real_server.port()),
        forward: match forward {
            ForwardMethod::Masq => pb::ForwardMethod::Masq,
            ForwardMethod::Route => pb::ForwardMethod::Route,
            ForwardMethod::Tunnel => pb::ForwardMethod::Tunnel,
            ForwardMethod::FullNat => pb::ForwardMethod::Fullnat,
        } as i32,
        state: c.state.to_owned(),
        expires_in_ms: c.expires_in_ms,
        template: false,
        in_packets: c.in_packets,
        out_packets: c.out_packets,
    }
}

/// ListConnections: walks the table page by page on a blocking thread and sends batches of at
/// most [`BATCH`] entries; stops early when the client goes away.
pub(crate) fn list_connections<B: Backend>(
    backend: Arc<B>,
    config: Config,
    req: &pb::ListConnectionsRequest,
) -> Result<tokio::sync::mpsc::Receiver<Result<pb::ListConnectionsResponse, Status>>, ControlError>
{
    engine(&*backend)?;
    let filter = match req.service.as_ref() {
        Some(k) => Some(validate::service_key(Some(k), "service")?),
        None => None,
    };
    let include_templates = req.include_templates;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let Some(e) = backend.conntrack() else { return };
        let now = e.clock();
        let mut batch = Vec::with_capacity(BATCH);
        for page in 0..e.connection_pages() {
            for c in e.connections(page, now, filter.as_ref()) {
                batch.push(connection_to_pb(&config, &c));
                if batch.len() == BATCH {
                    let msg = pb::ListConnectionsResponse {
                        connections: std::mem::replace(&mut batch, Vec::with_capacity(BATCH)),
                    };
                    if tx.blocking_send(Ok(msg)).is_err() {
                        return;
                    }
                }
            }
        }
        if include_templates {
            for t in e.templates(now) {
                if filter.as_ref().is_none_or(|k| {
                    k.protocol == t.protocol
                        && k.addr.ip() == t.virtual_addr.ip()
                        && (k.addr.port() == 0 || k.addr.port() == t.virtual_addr.port())
                }) {
                    batch.push(crate::explain::template_to_pb(&config, &t));
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(pb::ListConnectionsResponse { connections: batch }));
        }
    });
    Ok(rx)
}

/// The protobuf form of engine rates.
pub(crate) fn rates_to_pb(r: &Rates) -> pb::Rates {
    pb::Rates {
        connections_per_second: r.cps,
        in_packets_per_second: r.in_pps,
        out_packets_per_second: r.out_pps,
        in_bytes_per_second: r.in_bps,
        out_bytes_per_second: r.out_bps,
    }
}

/// GetStats: totals and rates summed over the services, drops by reason, table fill.
pub(crate) fn get_stats<B: Backend>(b: &B) -> Result<pb::GetStatsResponse, ControlError> {
    let s = b.stats();
    let mut totals = pb::Stats::default();
    let mut rates = pb::Rates::default();
    for svc in &s.services {
        let c = &svc.counters;
        totals.connections += c.conns;
        totals.in_packets += c.in_pkts;
        totals.out_packets += c.out_pkts;
        totals.in_bytes += c.in_bytes;
        totals.out_bytes += c.out_bytes;
        let r = &svc.rates;
        rates.connections_per_second += r.cps;
        rates.in_packets_per_second += r.in_pps;
        rates.out_packets_per_second += r.out_pps;
        rates.in_bytes_per_second += r.in_bps;
        rates.out_bytes_per_second += r.out_bps;
    }
    Ok(pb::GetStatsResponse {
        totals: Some(totals),
        rates: Some(rates),
        drops: s
            .drops
            .iter()
            .map(|(r, n)| pb::DropCount {
                reason: r.name().to_owned(),
                packets: *n,
            })
            .collect(),
        connections: s.connections as u64,
        max_connections: s.max_connections as u64,
    })
}

/// ZeroCounters: one service (NOT_FOUND if it does not exist) or all.
pub(crate) fn zero_counters<B: Backend>(
    b: &B,
    req: &pb::ZeroCountersRequest,
) -> Result<pb::ZeroCountersResponse, ControlError> {
    let e = engine(b)?;
    let key = match req.service.as_ref() {
        Some(k) => Some(validate::service_key(Some(k), "service")?),
        None => None,
    };
    if !e.zero_counters(key.as_ref()) {
        let k = key.map(|k| k.to_string()).unwrap_or_default();
        return Err(ControlError::NotFound(format!(
            "service {k} does not exist"
        )));
    }
    Ok(pb::ZeroCountersResponse {})
}
