//! Request validation: protobuf messages in, engine configuration types out.
//!
//! Every check on a request lives here. A refused request gets
//! [`ControlError::InvalidArgument`] whose `field` is the path of the offending field in the
//! request message (`service.key.address`, `real_server.port`, ...). The engine's own
//! [`Config::validate`](ulvs_engine::Config::validate) runs afterwards on the whole new
//! configuration; `config_error` maps its errors to the same field paths.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ulvs_engine::{
    ConfigError, DestConfig, ForwardMethod, Persistence, Protocol, SchedFlags, SchedulerKind,
    ServiceConfig, ServiceKey, TcpState, Timeouts, TunnelChecksum, TunnelConfig, TunnelType,
};
use ulvs_proto::v1 as pb;

use crate::ControlError;

/// Labels of a service, kept next to the engine configuration.
pub type Labels = BTreeMap<String, String>;

/// The largest weight ipvsadm accepts.
pub const MAX_WEIGHT: u32 = 65535;

/// Where the fields that a [`ConfigError`] can be about sit in a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paths {
    /// The `ServiceKey` message.
    pub key: &'static str,
    /// The `ServiceSpec` message, if the request has one.
    pub service: Option<&'static str>,
    /// The `RealServerSpec` message, if the request has one.
    pub real_server: Option<&'static str>,
}

/// Add/EditService: `service` is a `ServiceSpec`.
pub(crate) const SERVICE_SPEC: Paths = Paths {
    key: "service.key",
    service: Some("service"),
    real_server: None,
};

/// DeleteService: `key` is a `ServiceKey`.
pub(crate) const SERVICE_KEY: Paths = Paths {
    key: "key",
    service: None,
    real_server: None,
};

/// Add/EditRealServer: `service` is a `ServiceKey`, `real_server` a `RealServerSpec`.
pub(crate) const REAL_SERVER: Paths = Paths {
    key: "service",
    service: None,
    real_server: Some("real_server"),
};

/// DeleteRealServer: `service` is a `ServiceKey`; `address` and `port` are top-level.
pub(crate) const DELETE_REAL_SERVER: Paths = Paths {
    key: "service",
    service: None,
    real_server: None,
};

/// A service's settings from a `ServiceSpec`: the engine configuration (without real servers)
/// and the labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Engine configuration; `dests` is empty.
    pub config: ServiceConfig,
    /// Labels.
    pub labels: Labels,
}

fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Parses a `Protocol` enum value.
pub fn protocol(value: i32, path: &str) -> Result<Protocol, ControlError> {
    match pb::Protocol::try_from(value) {
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        Ok(pb::Protocol::Unspecified) => Err(ControlError::invalid(
            path,
            "protocol is unspecified (PROTOCOL_TCP or PROTOCOL_UDP)",
        )),
        Err(_) => Err(ControlError::invalid(
            path,
            format!("unknown protocol value {value}"),
        )),
    }
}

/// Parses an IP address in its textual form.
pub fn ip_addr(text: &str, path: &str) -> Result<IpAddr, ControlError> {
    if text.is_empty() {
        return Err(ControlError::invalid(path, "an IP address is required"));
    }
    text.parse()
        .map_err(|_| ControlError::invalid(path, format!("invalid IP address {text:?}")))
}

/// Checks a port number (`uint32` on the wire).
pub fn port(value: u32, path: &str) -> Result<u16, ControlError> {
    u16::try_from(value)
        .map_err(|_| ControlError::invalid(path, format!("{value} is out of range (0-65535)")))
}

/// Parses a required `ServiceKey` at `path`.
pub fn service_key(key: Option<&pb::ServiceKey>, path: &str) -> Result<ServiceKey, ControlError> {
    let key = key.ok_or_else(|| ControlError::invalid(path, "a service key is required"))?;
    let protocol = protocol(key.protocol, &field(path, "protocol"))?;
    let ip = ip_addr(&key.address, &field(path, "address"))?;
    if ip.is_unspecified() {
        return Err(ControlError::invalid(
            field(path, "address"),
            format!("{ip} is unspecified; a virtual address is required"),
        ));
    }
    let port = port(key.port, &field(path, "port"))?;
    Ok(ServiceKey {
        protocol,
        addr: SocketAddr::new(ip, port),
    })
}

/// Parses a scheduler name; empty means the default (`wlc`).
pub fn scheduler(name: &str, path: &str) -> Result<SchedulerKind, ControlError> {
    if name.is_empty() {
        return Ok(SchedulerKind::default());
    }
    name.parse()
        .map_err(|_| ControlError::invalid(path, format!("unknown scheduler {name:?}")))
}

/// Parses scheduler flags (ipvsadm `-b`). `sh-*` flags need the sh scheduler and `mh-*` flags
/// the mh scheduler, as in ipvsadm.
pub fn scheduler_flags(
    names: &[String],
    sched: SchedulerKind,
    path: &str,
) -> Result<SchedFlags, ControlError> {
    let mut flags = SchedFlags::default();
    for (i, name) in names.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let (flag, needs) = match name.as_str() {
            "flag-1" => (SchedFlags::FLAG_1, None),
            "flag-2" => (SchedFlags::FLAG_2, None),
            "flag-3" => (SchedFlags::FLAG_3, None),
            "sh-fallback" => (SchedFlags::FLAG_1, Some(SchedulerKind::Sh)),
            "sh-port" => (SchedFlags::FLAG_2, Some(SchedulerKind::Sh)),
            "mh-fallback" => (SchedFlags::FLAG_1, Some(SchedulerKind::Mh)),
            "mh-port" => (SchedFlags::FLAG_2, Some(SchedulerKind::Mh)),
            _ => {
                return Err(ControlError::invalid(
                    at,
                    format!("unknown scheduler flag {name:?}"),
                ));
            }
        };
        if let Some(needed) = needs
            && needed != sched
        {
            return Err(ControlError::invalid(
                at,
                format!("{name:?} needs scheduler {needed}, not {sched}"),
            ));
        }
        flags = SchedFlags(flags.0 | flag.0);
    }
    Ok(flags)
}

/// The names of `flags` as ListServices reports them (`sh-*` / `mh-*` for those schedulers).
pub fn scheduler_flag_names(flags: SchedFlags, sched: SchedulerKind) -> Vec<String> {
    let named = |one: &str, two: &str| -> [(SchedFlags, String); 3] {
        [
            (SchedFlags::FLAG_1, one.to_owned()),
            (SchedFlags::FLAG_2, two.to_owned()),
            (SchedFlags::FLAG_3, "flag-3".to_owned()),
        ]
    };
    let table = match sched {
        SchedulerKind::Sh => named("sh-fallback", "sh-port"),
        SchedulerKind::Mh => named("mh-fallback", "mh-port"),
        _ => named("flag-1", "flag-2"),
    };
    table
        .into_iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| n)
        .collect()
}

/// Parses a required `ServiceSpec` at `service`.
pub fn service_spec(spec: Option<&pb::ServiceSpec>) -> Result<ServiceSettings, ControlError> {
    let spec = spec.ok_or_else(|| ControlError::invalid("service", "a service is required"))?;
    let key = service_key(spec.key.as_ref(), "service.key")?;
    let scheduler = scheduler(&spec.scheduler, "service.scheduler")?;
    let flags = scheduler_flags(&spec.scheduler_flags, scheduler, "service.scheduler_flags")?;

    let max_prefix: u32 = if key.addr.is_ipv4() { 32 } else { 128 };
    let persistence = match (spec.persistence_timeout, spec.persistence_prefix_len) {
        (0, 0) => None,
        (0, len) => {
            return Err(ControlError::invalid(
                "service.persistence_prefix_len",
                format!(
                    "{len} is set but the service is not persistent (persistence_timeout is 0)"
                ),
            ));
        }
        (timeout, len) if len <= max_prefix => Some(Persistence {
            timeout_secs: timeout,
            // len <= 128 here.
            prefix_len: if len == 0 {
                max_prefix as u8
            } else {
                len as u8
            },
        }),
        (_, len) => {
            return Err(ControlError::invalid(
                "service.persistence_prefix_len",
                format!(
                    "{len} is out of range for an {} service (1-{max_prefix})",
                    family(key.addr.ip())
                ),
            ));
        }
    };
    if key.addr.port() == 0 && persistence.is_none() {
        return Err(ControlError::invalid(
            "service.key.port",
            "port 0 is only allowed on a persistent service (persistence_timeout > 0)",
        ));
    }
    if spec.one_packet && key.protocol != Protocol::Udp {
        return Err(ControlError::invalid(
            "service.one_packet",
            "one-packet scheduling is only for UDP services",
        ));
    }
    let mut labels = Labels::new();
    for (k, v) in &spec.labels {
        if k.is_empty() {
            return Err(ControlError::invalid(
                "service.labels",
                "a label key is empty",
            ));
        }
        labels.insert(k.clone(), v.clone());
    }

    let mut local_addresses = Vec::with_capacity(spec.local_addresses.len());
    for (i, text) in spec.local_addresses.iter().enumerate() {
        let path = format!("service.local_addresses[{i}]");
        let ip = ip_addr(text, &path)?;
        if family(ip) != family(key.addr.ip()) {
            return Err(ControlError::invalid(
                path,
                format!(
                    "{ip} is an {} address but the service is {}",
                    family(ip),
                    family(key.addr.ip())
                ),
            ));
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(ControlError::invalid(
                path,
                format!("{ip} is not a unicast address"),
            ));
        }
        if local_addresses.contains(&ip) {
            return Err(ControlError::invalid(path, format!("{ip} is listed twice")));
        }
        local_addresses.push(ip);
    }

    let mut config = ServiceConfig::new(key);
    config.scheduler = scheduler;
    config.flags = flags;
    config.persistence = persistence;
    config.one_packet = spec.one_packet;
    config.max_new_connections_per_second = spec.max_new_connections_per_second;
    config.local_addresses = local_addresses;
    Ok(ServiceSettings { config, labels })
}

/// Parses a `ForwardMethod`; unspecified means direct routing (ipvsadm's default `-g`).
pub fn forward(value: i32, path: &str) -> Result<ForwardMethod, ControlError> {
    match pb::ForwardMethod::try_from(value) {
        Ok(pb::ForwardMethod::Unspecified | pb::ForwardMethod::Route) => Ok(ForwardMethod::Route),
        Ok(pb::ForwardMethod::Masq) => Ok(ForwardMethod::Masq),
        Ok(pb::ForwardMethod::Tunnel) => Ok(ForwardMethod::Tunnel),
        Ok(pb::ForwardMethod::Fullnat) => Ok(ForwardMethod::FullNat),
        Err(_) => Err(ControlError::invalid(
            path,
            format!("unknown forwarding method value {value}"),
        )),
    }
}

/// The socket address of a real server of `svc`.
///
/// As with ipvsadm: port 0 means the service's port, and direct routing and tunnelling cannot
/// change the port, so for them the port is the service's. `forward` is `None` when the method
/// is not known (a delete), where only the port-0 rule applies.
pub fn real_server_addr(
    address: &str,
    port_value: u32,
    forward: Option<ForwardMethod>,
    svc: &ServiceKey,
    prefix: &str,
) -> Result<SocketAddr, ControlError> {
    let addr_path = field(prefix, "address");
    let ip = ip_addr(address, &addr_path)?;
    if ip.is_unspecified() {
        return Err(ControlError::invalid(
            addr_path,
            format!("{ip} is unspecified; a real server address is required"),
        ));
    }
    // As in IPVS, only tunnelled real servers may be of the other family (the delete form,
    // with no method, accepts either).
    if family(ip) != family(svc.addr.ip()) && !matches!(forward, Some(ForwardMethod::Tunnel) | None)
    {
        return Err(ControlError::invalid(
            addr_path,
            format!(
                "{ip} is an {} address but the service is {}",
                family(ip),
                family(svc.addr.ip())
            ),
        ));
    }
    let mut port = port(port_value, &field(prefix, "port"))?;
    if port == 0 || matches!(forward, Some(ForwardMethod::Route | ForwardMethod::Tunnel)) {
        port = svc.addr.port();
    }
    Ok(SocketAddr::new(ip, port))
}

/// Parses a required `RealServerSpec` at `real_server` for service `svc`.
pub fn real_server(
    spec: Option<&pb::RealServerSpec>,
    svc: &ServiceKey,
) -> Result<DestConfig, ControlError> {
    let spec =
        spec.ok_or_else(|| ControlError::invalid("real_server", "a real server is required"))?;
    let forward = forward(spec.forward, "real_server.forward")?;
    let addr = real_server_addr(&spec.address, spec.port, Some(forward), svc, "real_server")?;
    if spec.weight > MAX_WEIGHT {
        return Err(ControlError::invalid(
            "real_server.weight",
            format!("{} is out of range (0-{MAX_WEIGHT})", spec.weight),
        ));
    }
    if spec.upper_threshold != 0 && spec.lower_threshold > spec.upper_threshold {
        return Err(ControlError::invalid(
            "real_server.lower_threshold",
            format!(
                "{} is above upper_threshold {}",
                spec.lower_threshold, spec.upper_threshold
            ),
        ));
    }
    let tunnel = tunnel(spec, forward)?;
    Ok(DestConfig {
        addr,
        forward,
        weight: spec.weight,
        upper_threshold: spec.upper_threshold,
        lower_threshold: spec.lower_threshold,
        tunnel,
    })
}

/// One validated change: a write RPC's request, or one item of an `Apply` batch.
///
/// `expected_generation` is the generation of the service the client read (0: do not check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add a service (`AddServiceRequest`).
    AddService(ServiceSettings),
    /// Replace a service's settings, keeping its real servers (`EditServiceRequest`).
    EditService {
        /// The new settings (the key names the service).
        settings: ServiceSettings,
        /// Required generation of the service, 0 for any.
        expected_generation: u64,
    },
    /// Delete a service and its real servers (`DeleteServiceRequest`).
    DeleteService {
        /// The service.
        key: ServiceKey,
        /// Required generation of the service, 0 for any.
        expected_generation: u64,
    },
    /// Add a real server (`AddRealServerRequest`).
    AddRealServer {
        /// The service.
        service: ServiceKey,
        /// The real server.
        dest: DestConfig,
        /// Required generation of the service, 0 for any.
        expected_generation: u64,
    },
    /// Replace a real server's settings (`EditRealServerRequest`).
    EditRealServer {
        /// The service.
        service: ServiceKey,
        /// The real server's new settings (its address names it).
        dest: DestConfig,
        /// Required generation of the service, 0 for any.
        expected_generation: u64,
    },
    /// Remove a real server (`DeleteRealServerRequest`).
    DeleteRealServer {
        /// The service.
        service: ServiceKey,
        /// The real server's address.
        addr: SocketAddr,
        /// Required generation of the service, 0 for any.
        expected_generation: u64,
    },
    /// Remove every service (`ClearRequest`).
    Clear,
    /// Set connection-table timeouts (`SetTimeoutsRequest` in a batch); they take effect when
    /// the transaction commits.
    SetTimeouts(TimeoutsChange),
}

/// New connection-table timeouts, in seconds; `None` keeps the current value (a 0 in the
/// request, as ipvsadm `--set`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutsChange {
    /// ESTABLISHED TCP connections.
    pub tcp: Option<u32>,
    /// TCP connections after a FIN.
    pub tcp_fin: Option<u32>,
    /// UDP.
    pub udp: Option<u32>,
}

impl TimeoutsChange {
    /// `self` followed by `later`: the later change wins where it sets a value.
    pub fn then(self, later: TimeoutsChange) -> TimeoutsChange {
        TimeoutsChange {
            tcp: later.tcp.or(self.tcp),
            tcp_fin: later.tcp_fin.or(self.tcp_fin),
            udp: later.udp.or(self.udp),
        }
    }

    /// `t` with this change applied.
    pub fn applied_to(&self, mut t: Timeouts) -> Timeouts {
        let ms = |s: u32| u64::from(s) * 1000;
        if let Some(s) = self.tcp {
            t.set_tcp(TcpState::Established, ms(s));
        }
        if let Some(s) = self.tcp_fin {
            t.set_tcp(TcpState::FinWait, ms(s));
        }
        if let Some(s) = self.udp {
            t.udp_ms = ms(s);
        }
        t
    }
}

/// Validates a `SetTimeoutsRequest`: the timeouts must be present; a 0 keeps a value.
pub fn set_timeouts(req: &pb::SetTimeoutsRequest) -> Result<Change, ControlError> {
    let Some(t) = req.timeouts.as_ref() else {
        return Err(ControlError::invalid("timeouts", "missing"));
    };
    let keep_zero = |s: u32| (s != 0).then_some(s);
    Ok(Change::SetTimeouts(TimeoutsChange {
        tcp: keep_zero(t.tcp),
        tcp_fin: keep_zero(t.tcp_fin),
        udp: keep_zero(t.udp),
    }))
}

impl Change {
    /// The name of this change's field in the `Change` oneof (`add_service`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::AddService(_) => "add_service",
            Change::EditService { .. } => "edit_service",
            Change::DeleteService { .. } => "delete_service",
            Change::AddRealServer { .. } => "add_real_server",
            Change::EditRealServer { .. } => "edit_real_server",
            Change::DeleteRealServer { .. } => "delete_real_server",
            Change::Clear => "clear",
            Change::SetTimeouts(_) => "set_timeouts",
        }
    }

    /// The service this change is about (`None` for [`Change::Clear`] and
    /// [`Change::SetTimeouts`]).
    pub fn service(&self) -> Option<ServiceKey> {
        match self {
            Change::AddService(s) | Change::EditService { settings: s, .. } => Some(s.config.key),
            Change::DeleteService { key, .. } => Some(*key),
            Change::AddRealServer { service, .. }
            | Change::EditRealServer { service, .. }
            | Change::DeleteRealServer { service, .. } => Some(*service),
            Change::Clear | Change::SetTimeouts(_) => None,
        }
    }

    /// Where the fields an engine refusal can be about sit in this change's request.
    pub(crate) fn paths(&self) -> Paths {
        match self {
            Change::AddService(_) | Change::EditService { .. } => SERVICE_SPEC,
            // Timeouts are not part of the engine configuration: no refusal names them.
            Change::DeleteService { .. } | Change::Clear | Change::SetTimeouts(_) => SERVICE_KEY,
            Change::AddRealServer { .. } | Change::EditRealServer { .. } => REAL_SERVER,
            Change::DeleteRealServer { .. } => DELETE_REAL_SERVER,
        }
    }
}

/// Validates an `AddServiceRequest`.
pub fn add_service(req: &pb::AddServiceRequest) -> Result<Change, ControlError> {
    Ok(Change::AddService(service_spec(req.service.as_ref())?))
}

/// Validates an `EditServiceRequest`.
pub fn edit_service(req: &pb::EditServiceRequest) -> Result<Change, ControlError> {
    Ok(Change::EditService {
        settings: service_spec(req.service.as_ref())?,
        expected_generation: req.expected_generation,
    })
}

/// Validates a `DeleteServiceRequest`.
pub fn delete_service(req: &pb::DeleteServiceRequest) -> Result<Change, ControlError> {
    Ok(Change::DeleteService {
        key: service_key(req.key.as_ref(), "key")?,
        expected_generation: req.expected_generation,
    })
}

/// Validates an `AddRealServerRequest`.
pub fn add_real_server(req: &pb::AddRealServerRequest) -> Result<Change, ControlError> {
    let service = service_key(req.service.as_ref(), "service")?;
    Ok(Change::AddRealServer {
        dest: real_server(req.real_server.as_ref(), &service)?,
        service,
        expected_generation: req.expected_generation,
    })
}

/// Validates an `EditRealServerRequest`.
pub fn edit_real_server(req: &pb::EditRealServerRequest) -> Result<Change, ControlError> {
    let service = service_key(req.service.as_ref(), "service")?;
    Ok(Change::EditRealServer {
        dest: real_server(req.real_server.as_ref(), &service)?,
        service,
        expected_generation: req.expected_generation,
    })
}

/// Validates a `DeleteRealServerRequest`.
pub fn delete_real_server(req: &pb::DeleteRealServerRequest) -> Result<Change, ControlError> {
    let service = service_key(req.service.as_ref(), "service")?;
    Ok(Change::DeleteRealServer {
        addr: real_server_addr(&req.address, req.port, None, &service, "")?,
        service,
        expected_generation: req.expected_generation,
    })
}

/// Validates item `index` of an `ApplyRequest`; field paths start `changes[index].<kind>`.
pub fn change(change: &pb::Change, index: usize) -> Result<Change, ControlError> {
    use pb::change::Change as C;
    let at = format!("changes[{index}]");
    let Some(inner) = change.change.as_ref() else {
        return Err(ControlError::invalid(
            at,
            "the change is empty (set one of its fields)",
        ));
    };
    let (kind, result) = match inner {
        C::AddService(r) => ("add_service", add_service(r)),
        C::EditService(r) => ("edit_service", edit_service(r)),
        C::DeleteService(r) => ("delete_service", delete_service(r)),
        C::AddRealServer(r) => ("add_real_server", add_real_server(r)),
        C::EditRealServer(r) => ("edit_real_server", edit_real_server(r)),
        C::DeleteRealServer(r) => ("delete_real_server", delete_real_server(r)),
        C::Clear(_) => ("clear", Ok(Change::Clear)),
        C::SetTimeouts(r) => ("set_timeouts", set_timeouts(r)),
    };
    result.map_err(|e| e.prefixed(&format!("{at}.{kind}")))
}

/// Validates every item of an `ApplyRequest`, in order; the first bad one is the error.
pub fn changes(req: &pb::ApplyRequest) -> Result<Vec<Change>, ControlError> {
    req.changes
        .iter()
        .enumerate()
        .map(|(i, c)| change(c, i))
        .collect()
}

/// The tunnel settings of a real server: only for tunnel mode; GUE needs a port (1-65535),
/// IPIP takes no port or checksum option, GRE no port or remote checksum offload.
fn tunnel(spec: &pb::RealServerSpec, forward: ForwardMethod) -> Result<TunnelConfig, ControlError> {
    let kind = match pb::TunnelType::try_from(spec.tunnel_type) {
        Ok(pb::TunnelType::Unspecified | pb::TunnelType::Ipip) => TunnelType::Ipip,
        Ok(pb::TunnelType::Gue) => TunnelType::Gue,
        Ok(pb::TunnelType::Gre) => TunnelType::Gre,
        Err(_) => {
            return Err(ControlError::invalid(
                "real_server.tunnel_type",
                format!("unknown tunnel type value {}", spec.tunnel_type),
            ));
        }
    };
    let checksum = match pb::TunnelChecksum::try_from(spec.tunnel_checksum) {
        Ok(pb::TunnelChecksum::Unspecified | pb::TunnelChecksum::None) => TunnelChecksum::None,
        Ok(pb::TunnelChecksum::Csum) => TunnelChecksum::Csum,
        Ok(pb::TunnelChecksum::Remcsum) => TunnelChecksum::Remcsum,
        Err(_) => {
            return Err(ControlError::invalid(
                "real_server.tunnel_checksum",
                format!("unknown tunnel checksum value {}", spec.tunnel_checksum),
            ));
        }
    };
    let set = kind != TunnelType::Ipip || spec.tunnel_port != 0 || checksum != TunnelChecksum::None;
    if forward != ForwardMethod::Tunnel {
        if set {
            return Err(ControlError::invalid(
                "real_server.tunnel_type",
                "tunnel settings are only for tunnel-mode (-i) real servers",
            ));
        }
        return Ok(TunnelConfig::default());
    }
    let port = u16::try_from(spec.tunnel_port).map_err(|_| {
        ControlError::invalid(
            "real_server.tunnel_port",
            format!("{} is out of range (1-65535)", spec.tunnel_port),
        )
    })?;
    match kind {
        TunnelType::Gue if port == 0 => Err(ControlError::invalid(
            "real_server.tunnel_port",
            "GUE needs a destination port (--tun-port)",
        )),
        TunnelType::Ipip | TunnelType::Gre if port != 0 => Err(ControlError::invalid(
            "real_server.tunnel_port",
            "a port is only for GUE tunnels",
        )),
        TunnelType::Ipip if checksum != TunnelChecksum::None => Err(ControlError::invalid(
            "real_server.tunnel_checksum",
            "IPIP tunnels have no checksum option",
        )),
        TunnelType::Gre if checksum == TunnelChecksum::Remcsum => Err(ControlError::invalid(
            "real_server.tunnel_checksum",
            "remote checksum offload is only for GUE tunnels",
        )),
        _ => Ok(TunnelConfig {
            kind,
            port,
            checksum,
        }),
    }
}

/// Maps an error of the engine's whole-configuration check to the request's field paths.
pub(crate) fn config_error(err: ConfigError, paths: &Paths) -> ControlError {
    let message = err.to_string();
    let svc = |name: &str| {
        paths
            .service
            .map_or_else(|| paths.key.to_owned(), |s| field(s, name))
    };
    let rs = |name: &str| {
        paths
            .real_server
            .map_or_else(|| "real_servers".to_owned(), |r| field(r, name))
    };
    match err {
        ConfigError::UnknownScheduler(_) => ControlError::invalid(svc("scheduler"), message),
        ConfigError::UnsupportedScheduler(_) => ControlError::Unsupported {
            field: svc("scheduler"),
            message,
        },
        ConfigError::UnsupportedForward(_) => ControlError::Unsupported {
            field: rs("forward"),
            message,
        },
        ConfigError::UnsupportedFeature(_, feature) => ControlError::Unsupported {
            field: match feature {
                "persistence" => svc("persistence_timeout"),
                "one-packet scheduling" => svc("one_packet"),
                "IPv6" => field(paths.key, "address"),
                _ => paths.service.unwrap_or(paths.key).to_owned(),
            },
            message,
        },
        ConfigError::DuplicateService(_) | ConfigError::DuplicateDest(..) => {
            ControlError::AlreadyExists(message)
        }
        ConfigError::UnspecifiedAddress(_) => {
            ControlError::invalid(field(paths.key, "address"), message)
        }
        ConfigError::PortZeroNotPersistent(_) => {
            ControlError::invalid(field(paths.key, "port"), message)
        }
        ConfigError::BadPrefix(..) => ControlError::invalid(svc("persistence_prefix_len"), message),
        ConfigError::FamilyMismatch(..) | ConfigError::DestUnspecified(..) => {
            ControlError::invalid(rs("address"), message)
        }
        ConfigError::BadTunnel(..) => ControlError::invalid(rs("tunnel_type"), message),
        ConfigError::BadThresholds(..) => ControlError::invalid(rs("lower_threshold"), message),
        ConfigError::LocalAddressFamily(..)
        | ConfigError::BadLocalAddress(..)
        | ConfigError::DuplicateLocalAddress(..)
        | ConfigError::LocalAddressIsVip(..) => {
            ControlError::invalid(svc("local_addresses"), message)
        }
        // The request is well-formed; the service lacks what a FULLNAT real server needs.
        ConfigError::NoLocalAddress(..) => ControlError::Unsupported {
            field: rs("forward"),
            message,
        },
    }
}

fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(proto: pb::Protocol, addr: &str, port: u32) -> pb::ServiceKey {
        pb::ServiceKey {
            protocol: proto as i32,
            address: addr.into(),
            port,
        }
    }

    fn spec(k: pb::ServiceKey) -> pb::ServiceSpec {
        pb::ServiceSpec {
            key: Some(k),
            ..Default::default()
        }
    }

    fn invalid_field(err: ControlError) -> String {
        match err {
            ControlError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn bad_address_names_the_field() {
        let err = service_spec(Some(&spec(key(pb::Protocol::Tcp, "1.2.3", 80)))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service.key.address: invalid IP address \"1.2.3\""
        );
    }

    #[test]
    fn defaults_follow_ipvsadm() {
        let s = service_spec(Some(&spec(key(pb::Protocol::Udp, "198.18.0.10", 53)))).unwrap();
        assert_eq!(s.config.scheduler, SchedulerKind::Wlc);
        assert_eq!(s.config.persistence, None);

        let mut p = spec(key(pb::Protocol::Tcp, "fd00:1b5::10", 0));
        p.persistence_timeout = 300;
        let s = service_spec(Some(&p)).unwrap();
        assert_eq!(
            s.config.persistence,
            Some(Persistence {
                timeout_secs: 300,
                prefix_len: 128
            })
        );

        let svc = s.config.key;
        let rs = pb::RealServerSpec {
            address: "fd00:1b5::20".into(),
            port: 8080,
            ..Default::default()
        };
        let d = real_server(Some(&rs), &svc).unwrap();
        assert_eq!(d.forward, ForwardMethod::Route);
        // Direct routing keeps the service's port (here the wildcard 0).
        assert_eq!(d.addr, "[fd00:1b5::20]:0".parse().unwrap());
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(pb::ServiceSpec, &str)> = vec![
            (
                spec(key(pb::Protocol::Unspecified, "198.18.0.10", 80)),
                "service.key.protocol",
            ),
            (
                spec(key(pb::Protocol::Tcp, "198.18.0.10", 70000)),
                "service.key.port",
            ),
            (
                spec(key(pb::Protocol::Tcp, "0.0.0.0", 80)),
                "service.key.address",
            ),
            (
                spec(key(pb::Protocol::Tcp, "198.18.0.10", 0)),
                "service.key.port",
            ),
            (
                pb::ServiceSpec {
                    scheduler: "nope".into(),
                    ..spec(key(pb::Protocol::Tcp, "198.18.0.10", 80))
                },
                "service.scheduler",
            ),
            (
                pb::ServiceSpec {
                    scheduler: "rr".into(),
                    scheduler_flags: vec!["sh-port".into()],
                    ..spec(key(pb::Protocol::Tcp, "198.18.0.10", 80))
                },
                "service.scheduler_flags[0]",
            ),
            (
                pb::ServiceSpec {
                    persistence_timeout: 60,
                    persistence_prefix_len: 33,
                    ..spec(key(pb::Protocol::Tcp, "198.18.0.10", 80))
                },
                "service.persistence_prefix_len",
            ),
            (
                pb::ServiceSpec {
                    one_packet: true,
                    ..spec(key(pb::Protocol::Tcp, "198.18.0.10", 80))
                },
                "service.one_packet",
            ),
        ];
        for (s, want) in cases {
            let got = invalid_field(service_spec(Some(&s)).unwrap_err());
            assert_eq!(got, want, "{s:?}");
        }
        assert_eq!(invalid_field(service_spec(None).unwrap_err()), "service");
    }

    #[test]
    fn real_server_fields_are_checked() {
        let svc = ServiceKey {
            protocol: Protocol::Tcp,
            addr: "198.18.0.10:80".parse().unwrap(),
        };
        let ok = pb::RealServerSpec {
            address: "198.18.1.1".into(),
            port: 8080,
            forward: pb::ForwardMethod::Masq as i32,
            weight: 1,
            ..Default::default()
        };
        assert_eq!(
            real_server(Some(&ok), &svc).unwrap().addr,
            "198.18.1.1:8080".parse().unwrap()
        );
        let cases: Vec<(pb::RealServerSpec, &str)> = vec![
            (
                pb::RealServerSpec {
                    port: 70000,
                    ..ok.clone()
                },
                "real_server.port",
            ),
            (
                pb::RealServerSpec {
                    address: "fd00:1b5::1".into(),
                    ..ok.clone()
                },
                "real_server.address",
            ),
            (
                pb::RealServerSpec {
                    address: "nonsense".into(),
                    ..ok.clone()
                },
                "real_server.address",
            ),
            (
                pb::RealServerSpec {
                    forward: 42,
                    ..ok.clone()
                },
                "real_server.forward",
            ),
            (
                pb::RealServerSpec {
                    weight: 65536,
                    ..ok.clone()
                },
                "real_server.weight",
            ),
            (
                pb::RealServerSpec {
                    upper_threshold: 5,
                    lower_threshold: 6,
                    ..ok.clone()
                },
                "real_server.lower_threshold",
            ),
        ];
        for (rs, want) in cases {
            assert_eq!(
                invalid_field(real_server(Some(&rs), &svc).unwrap_err()),
                want,
                "{rs:?}"
            );
        }
    }

    #[test]
    fn flag_names_round_trip() {
        let names = vec!["sh-port".to_owned(), "flag-1".to_owned()];
        let f = scheduler_flags(&names, SchedulerKind::Sh, "f").unwrap();
        assert_eq!(
            scheduler_flag_names(f, SchedulerKind::Sh),
            vec!["sh-fallback".to_owned(), "sh-port".to_owned()]
        );
    }

    #[test]
    fn engine_errors_map_to_fields() {
        let k = ServiceKey {
            protocol: Protocol::Tcp,
            addr: "198.18.0.10:80".parse().unwrap(),
        };
        let e = config_error(
            ConfigError::UnsupportedForward(ForwardMethod::Tunnel),
            &REAL_SERVER,
        );
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().starts_with("real_server.forward: "), "{e}");
        let e = config_error(ConfigError::BadPrefix(k, 40), &SERVICE_SPEC);
        assert!(
            e.to_string()
                .starts_with("service.persistence_prefix_len: "),
            "{e}"
        );
    }
}
