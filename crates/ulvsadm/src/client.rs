//! Talking to ulvsd: finds the socket, connects, turns a [`Command`] into RPCs and their
//! answers into text. This is the only module that builds `ulvs.v1` request messages.

use std::error::Error as _;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use ulvs_proto::trace::TraceParent;
use ulvs_proto::v1 as pb;
use ulvs_proto::v1::ulvs_client::UlvsClient;

use crate::counters::{self, ListView, ServerColumns};
use crate::format::{self, ListStyle};
use crate::model::{
    Forward, Protocol, RealServerSpec, ServiceKey, ServiceSpec, TunnelCsum, TunnelKind,
};
use crate::names::Resolver;
use crate::parse::{Command, ListOptions, OutputFormat};

/// Where ulvsd listens unless `--socket` or `ULVS_SOCKET` say otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ulvs/ulvsd.sock";

/// The environment variable that overrides [`DEFAULT_SOCKET`].
pub const SOCKET_ENV: &str = "ULVS_SOCKET";

/// The socket to use: `--socket`, else a non-empty `ULVS_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path(flag: Option<&Path>, env: Option<OsString>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match env {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// How to reach ulvsd's TCP listener (`--server` and its options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `https://HOST:PORT`.
    pub url: String,
    /// `--tls-ca`: CA certificates (PEM) that the daemon's certificate must chain to.
    pub tls_ca: PathBuf,
    /// `--tls-cert` and `--tls-key`: the client certificate chain and key (PEM).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// `--token-file`: the bearer token is the file's first line.
    pub token_file: Option<PathBuf>,
}

/// Where ulvsd is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The unix socket at this path.
    Unix(PathBuf),
    /// The TCP listener.
    Tcp(Remote),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Tcp(r) => f.write_str(&r.url),
        }
    }
}

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_tuple("Bearer").field(&self.0.is_some()).finish()
    }
}

impl Interceptor for Bearer {
    /// Adds the token (if any) and this invocation's W3C `traceparent`.
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        invocation_trace().inject(request.metadata_mut());
        Ok(request)
    }
}

/// The trace context every request of this invocation carries: a span of its own, child of
/// `$TRACEPARENT` when that is set, so the daemon's trace joins the caller's.
pub fn invocation_trace() -> TraceParent {
    static TRACE: std::sync::OnceLock<TraceParent> = std::sync::OnceLock::new();
    *TRACE.get_or_init(TraceParent::from_env)
}

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing usable listens on the socket or at the URL.
    #[error("cannot connect to ulvsd at {target}: {reason}")]
    Connect {
        /// The socket path or the URL.
        target: String,
        /// The underlying error chain, on one line.
        reason: String,
    },
    /// The daemon refused or failed a request.
    #[error("{method}: {message}")]
    Rpc {
        /// The RPC name, for example `AddService`.
        method: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The daemon's message.
        message: String,
    },
    /// A file named by `--tls-ca`, `--tls-cert`, `--tls-key` or `--token-file` is unusable.
    #[error("{option} {path}: {reason}")]
    File {
        /// The option that named the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `-L -t/-u` named a service the daemon does not have.
    #[error("No such service: {0}")]
    NoSuchService(String),
    /// `-P` of a local address the service already has, or `-Q` of one it does not have.
    #[error("{0}")]
    LocalAddress(String),
}

/// Joins an error and its sources into one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn rpc_error(method: &'static str, status: tonic::Status) -> ClientError {
    let mut message = status.message().to_string();
    if message.is_empty() {
        message = match status.source() {
            Some(src) => chain(src),
            None => format!("{:?}", status.code()),
        };
    }
    ClientError::Rpc {
        method,
        code: status.code(),
        message,
    }
}

/// A connected client.
pub type Client = UlvsClient<InterceptedService<Channel, Bearer>>;

/// Connects to ulvsd's unix socket at `path`.
pub async fn connect(path: &Path) -> Result<Client, ClientError> {
    let channel =
        ulvs_proto::connect_unix_channel(path)
            .await
            .map_err(|e| ClientError::Connect {
                target: path.display().to_string(),
                reason: chain(&e),
            })?;
    Ok(UlvsClient::with_interceptor(channel, Bearer::default()))
}

fn read_file(option: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::File {
        option,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The bearer token in `path`: its first line, trimmed, not empty (as ulvsd reads its own).
pub fn read_token(path: &Path) -> Result<AsciiMetadataValue, ClientError> {
    let bad = |reason: &str| ClientError::File {
        option: "--token-file",
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let bytes = read_file("--token-file", path)?;
    let text = String::from_utf8(bytes).map_err(|_| bad("the token is not UTF-8"))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(bad("the token is empty"));
    }
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| bad("the token is not printable ASCII"))?;
    Ok(value)
}

/// Connects to ulvsd's TCP listener with TLS (and a client certificate and token if given).
pub async fn connect_tcp(remote: &Remote) -> Result<Client, ClientError> {
    let ca = read_file("--tls-ca", &remote.tls_ca)?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = &remote.client_identity {
        tls = tls.identity(Identity::from_pem(
            read_file("--tls-cert", cert)?,
            read_file("--tls-key", key)?,
        ));
    }
    let token = match &remote.token_file {
        Some(p) => Some(read_token(p)?),
        None => None,
    };
    let failed = |e: tonic::transport::Error| ClientError::Connect {
        target: remote.url.clone(),
        reason: chain(&e),
    };
    let channel = Endpoint::from_shared(remote.url.clone())
        .map_err(failed)?
        .tls_config(tls)
        .map_err(failed)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(failed)?;
    Ok(UlvsClient::with_interceptor(channel, Bearer(token)))
}

/// Connects to ulvsd wherever `target` says.
pub async fn connect_target(target: &Target) -> Result<Client, ClientError> {
    match target {
        Target::Unix(path) => connect(path).await,
        Target::Tcp(remote) => connect_tcp(remote).await,
    }
}

fn protocol_to_pb(p: Protocol) -> pb::Protocol {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
    }
}

/// The `ulvs.v1` form of a service key.
pub fn key_to_pb(k: &ServiceKey) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: protocol_to_pb(k.protocol) as i32,
        address: k.addr.to_string(),
        port: k.port.into(),
    }
}

/// The `ulvs.v1` form of a service's settings (no labels).
pub fn spec_to_pb(s: &ServiceSpec) -> pb::ServiceSpec {
    pb::ServiceSpec {
        key: Some(key_to_pb(&s.key)),
        scheduler: s.scheduler.clone(),
        scheduler_flags: s.sched_flags.clone(),
        persistence_timeout: s.persistence_timeout.unwrap_or(0),
        persistence_prefix_len: s.persistence_prefix_len.map_or(0, u32::from),
        one_packet: s.one_packet,
        labels: Default::default(),
        ..Default::default()
    }
}

/// The `ulvs.v1` form of a real server's settings.
pub fn real_server_to_pb(r: &RealServerSpec) -> pb::RealServerSpec {
    pb::RealServerSpec {
        address: r.addr.to_string(),
        port: r.port.into(),
        forward: match r.forward {
            Forward::Masq => pb::ForwardMethod::Masq,
            Forward::Route => pb::ForwardMethod::Route,
            Forward::Tunnel => pb::ForwardMethod::Tunnel,
            Forward::FullNat => pb::ForwardMethod::Fullnat,
        } as i32,
        weight: r.weight,
        upper_threshold: r.upper_threshold,
        lower_threshold: r.lower_threshold,
        tunnel_type: match (r.forward, r.tunnel.kind) {
            (Forward::Tunnel, TunnelKind::Ipip) => pb::TunnelType::Ipip,
            (Forward::Tunnel, TunnelKind::Gue) => pb::TunnelType::Gue,
            (Forward::Tunnel, TunnelKind::Gre) => pb::TunnelType::Gre,
            _ => pb::TunnelType::Unspecified,
        } as i32,
        tunnel_port: r.tunnel.port.into(),
        tunnel_checksum: match (r.forward, r.tunnel.csum) {
            (Forward::Tunnel, TunnelCsum::None) => pb::TunnelChecksum::None,
            (Forward::Tunnel, TunnelCsum::Csum) => pb::TunnelChecksum::Csum,
            (Forward::Tunnel, TunnelCsum::Remcsum) => pb::TunnelChecksum::Remcsum,
            _ => pb::TunnelChecksum::Unspecified,
        } as i32,
    }
}

/// Whether a listed service is the one `key` names (addresses compared as addresses).
fn same_service(svc: &pb::Service, key: &ServiceKey) -> bool {
    let Some(k) = svc.spec.as_ref().and_then(|s| s.key.as_ref()) else {
        return false;
    };
    k.protocol == protocol_to_pb(key.protocol) as i32
        && k.port == u32::from(key.port)
        && k.address.parse::<IpAddr>().ok() == Some(key.addr)
}

async fn list_services(client: &mut Client) -> Result<Vec<pb::Service>, ClientError> {
    Ok(client
        .list_services(pb::ListServicesRequest::default())
        .await
        .map_err(|s| rpc_error("ListServices", s))?
        .into_inner()
        .services)
}

/// The service `key` names, or [`ClientError::NoSuchService`].
async fn find_service(client: &mut Client, key: &ServiceKey) -> Result<pb::Service, ClientError> {
    list_services(client)
        .await?
        .into_iter()
        .find(|s| same_service(s, key))
        .ok_or_else(|| ClientError::NoSuchService(key.to_string()))
}

/// `-G` output: the service, then one `  -> laddr ADDR` line per local address.
pub fn local_addresses_text(key: &ServiceKey, addrs: &[String]) -> String {
    let mut out = format!("{key}\n");
    for a in addrs {
        out.push_str(&format!("  -> laddr {a}\n"));
    }
    out
}

async fn list(
    client: &mut Client,
    opts: &ListOptions,
    names: &dyn Resolver,
) -> Result<String, ClientError> {
    let style = ListStyle {
        numeric: opts.numeric,
        sort: opts.sort,
    };
    let json = opts.output == OutputFormat::Json;
    match opts.view {
        ListView::Timeout => {
            let t = client
                .get_timeouts(pb::GetTimeoutsRequest {})
                .await
                .map_err(|s| rpc_error("GetTimeouts", s))?
                .into_inner()
                .timeouts
                .unwrap_or_default();
            return Ok(if json {
                counters::timeout_json(&t)
            } else {
                counters::timeout_text(&t)
            });
        }
        ListView::Connections => {
            let mut stream = client
                .list_connections(pb::ListConnectionsRequest::default())
                .await
                .map_err(|s| rpc_error("ListConnections", s))?
                .into_inner();
            let mut conns = Vec::new();
            while let Some(m) = stream
                .message()
                .await
                .map_err(|s| rpc_error("ListConnections", s))?
            {
                conns.extend(m.connections);
            }
            if opts.sort {
                conns.sort_by(|a, b| {
                    (a.protocol, &a.virtual_address, a.virtual_port)
                        .cmp(&(b.protocol, &b.virtual_address, b.virtual_port))
                        .then(
                            (&a.client_address, a.client_port)
                                .cmp(&(&b.client_address, b.client_port)),
                        )
                });
            }
            return Ok(if json {
                counters::connections_json(&conns)
            } else {
                counters::connections_text(&conns, opts.numeric, names)
            });
        }
        ListView::Table
        | ListView::Stats
        | ListView::Rate
        | ListView::TunInfo
        | ListView::Thresholds
        | ListView::PersistentConn => {}
    }
    let mut services = list_services(client).await?;
    if let Some(key) = &opts.service {
        services.retain(|s| same_service(s, key));
        if services.is_empty() {
            return Err(ClientError::NoSuchService(key.to_string()));
        }
    }
    if json {
        return Ok(format::list_json(&services, opts.sort));
    }
    // ipvsadm prints no version header when listing one service.
    let info = match opts.service {
        Some(_) => None,
        None => Some(
            client
                .get_info(pb::GetInfoRequest {})
                .await
                .map_err(|s| rpc_error("GetInfo", s))?
                .into_inner(),
        ),
    };
    let info = info.as_ref();
    Ok(match opts.view {
        ListView::Stats | ListView::Rate => counters::counters_text(
            info,
            &services,
            style,
            opts.view == ListView::Rate,
            opts.exact,
            names,
        ),
        ListView::Thresholds => {
            counters::server_columns_text(info, &services, style, ServerColumns::Thresholds, names)
        }
        ListView::PersistentConn => counters::server_columns_text(
            info,
            &services,
            style,
            ServerColumns::PersistentConn,
            names,
        ),
        ListView::TunInfo => format::list_tun_info_text(info, &services, style, names),
        _ => format::list_text(info, &services, style, names),
    })
}

/// `-R`: applies `changes` as one batch (all or none).
pub async fn apply(client: &mut Client, changes: Vec<pb::Change>) -> Result<String, ClientError> {
    client
        .apply(pb::ApplyRequest {
            changes,
            ..Default::default()
        })
        .await
        .map_err(|s| rpc_error("Apply", s))?;
    Ok(String::new())
}

/// Runs `cmd` against the daemon and returns what to print on stdout.
///
/// `Help` and `Version` need no daemon and are handled by the caller; `Restore` needs its input
/// and is run with [`apply`]; here they print nothing.
pub async fn execute(
    client: &mut Client,
    cmd: &Command,
    names: &dyn Resolver,
) -> Result<String, ClientError> {
    match cmd {
        Command::AddService(spec) => {
            client
                .add_service(pb::AddServiceRequest {
                    service: Some(spec_to_pb(spec)),
                })
                .await
                .map_err(|s| rpc_error("AddService", s))?;
        }
        Command::EditService(spec) => {
            // ipvsadm -E replaces every ipvsadm setting; labels are not one of them (the agent
            // marks what it owns with a label), so keep the service's current labels.
            let mut service = spec_to_pb(spec);
            if let Some(current) = list_services(client)
                .await?
                .into_iter()
                .find(|s| same_service(s, &spec.key))
            {
                // Neither are FULLNAT local addresses (-P/-Q) nor the new-connection cap.
                if let Some(cur) = current.spec {
                    service.labels = cur.labels;
                    service.local_addresses = cur.local_addresses;
                    service.max_new_connections_per_second = cur.max_new_connections_per_second;
                }
            }
            client
                .edit_service(pb::EditServiceRequest {
                    service: Some(service),
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc_error("EditService", s))?;
        }
        Command::DeleteService(key) => {
            client
                .delete_service(pb::DeleteServiceRequest {
                    key: Some(key_to_pb(key)),
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc_error("DeleteService", s))?;
        }
        Command::AddServer(key, rs) => {
            client
                .add_real_server(pb::AddRealServerRequest {
                    service: Some(key_to_pb(key)),
                    real_server: Some(real_server_to_pb(rs)),
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc_error("AddRealServer", s))?;
        }
        Command::EditServer(key, rs) => {
            client
                .edit_real_server(pb::EditRealServerRequest {
                    service: Some(key_to_pb(key)),
                    real_server: Some(real_server_to_pb(rs)),
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc_error("EditRealServer", s))?;
        }
        Command::DeleteServer {
            service,
            addr,
            port,
        } => {
            client
                .delete_real_server(pb::DeleteRealServerRequest {
                    service: Some(key_to_pb(service)),
                    address: addr.to_string(),
                    port: (*port).into(),
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc_error("DeleteRealServer", s))?;
        }
        Command::Clear => {
            client
                .clear(pb::ClearRequest {})
                .await
                .map_err(|s| rpc_error("Clear", s))?;
        }
        Command::List(opts) => return list(client, opts, names).await,
        Command::Zero(key) => {
            client
                .zero_counters(pb::ZeroCountersRequest {
                    service: key.as_ref().map(key_to_pb),
                })
                .await
                .map_err(|s| rpc_error("ZeroCounters", s))?;
        }
        Command::SetTimeouts { tcp, tcp_fin, udp } => {
            client
                .set_timeouts(pb::SetTimeoutsRequest {
                    timeouts: Some(pb::Timeouts {
                        tcp: *tcp,
                        tcp_fin: *tcp_fin,
                        udp: *udp,
                    }),
                })
                .await
                .map_err(|s| rpc_error("SetTimeouts", s))?;
        }
        Command::Explain(opts) => {
            let resp = client
                .explain(pb::ExplainRequest {
                    service: Some(key_to_pb(&opts.service)),
                    client_address: opts.client_addr.to_string(),
                    client_port: opts.client_port.into(),
                })
                .await
                .map_err(|s| rpc_error("Explain", s))?
                .into_inner();
            return Ok(crate::explain::render(opts, &resp));
        }
        Command::AddLocalAddress(key, addr) | Command::DeleteLocalAddress(key, addr) => {
            let adding = matches!(cmd, Command::AddLocalAddress(..));
            let current = find_service(client, key).await?;
            let mut spec = current.spec.unwrap_or_default();
            let pos = spec
                .local_addresses
                .iter()
                .position(|a| a.parse::<IpAddr>().ok() == Some(*addr));
            match (adding, pos) {
                (true, Some(_)) => {
                    return Err(ClientError::LocalAddress(format!(
                        "local address {addr} already exists on {key}"
                    )));
                }
                (true, None) => spec.local_addresses.push(addr.to_string()),
                (false, Some(i)) => {
                    spec.local_addresses.remove(i);
                }
                (false, None) => {
                    return Err(ClientError::LocalAddress(format!(
                        "no local address {addr} on {key}"
                    )));
                }
            }
            // The service's whole current spec, only its local addresses changed, and only if
            // nobody changed it since it was read.
            client
                .edit_service(pb::EditServiceRequest {
                    service: Some(spec),
                    expected_generation: current.generation,
                })
                .await
                .map_err(|s| rpc_error("EditService", s))?;
        }
        Command::GetLocalAddresses(key) => {
            let current = find_service(client, key).await?;
            let spec = current.spec.unwrap_or_default();
            return Ok(local_addresses_text(key, &spec.local_addresses));
        }
        Command::Save(opts) => {
            let services = list_services(client).await?;
            return Ok(crate::rules::save_text(&services, *opts, names));
        }
        // Restore needs its input: see [`apply`].
        Command::Restore
        | Command::Help
        | Command::Version
        | Command::Man
        | Command::Completions(_) => {}
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_flag_beats_env_beats_default() {
        let flag = Path::new("/tmp/flag.sock");
        let env = || Some(OsString::from("/tmp/env.sock"));
        assert_eq!(
            socket_path(Some(flag), env()),
            PathBuf::from("/tmp/flag.sock")
        );
        assert_eq!(socket_path(None, env()), PathBuf::from("/tmp/env.sock"));
        assert_eq!(
            socket_path(None, Some(OsString::new())),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(socket_path(None, None), PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn requests_carry_every_parsed_field() {
        let spec = ServiceSpec {
            key: ServiceKey {
                protocol: Protocol::Udp,
                addr: "fd00:1b5::1".parse().unwrap(),
                port: 53,
            },
            scheduler: "sh".into(),
            sched_flags: vec!["sh-port".into()],
            persistence_timeout: Some(300),
            persistence_prefix_len: Some(64),
            one_packet: true,
        };
        let pb = spec_to_pb(&spec);
        assert_eq!(
            pb.key,
            Some(pb::ServiceKey {
                protocol: pb::Protocol::Udp as i32,
                address: "fd00:1b5::1".into(),
                port: 53
            })
        );
        assert_eq!(
            (
                pb.scheduler.as_str(),
                pb.persistence_timeout,
                pb.persistence_prefix_len,
                pb.one_packet
            ),
            ("sh", 300, 64, true)
        );
        let rs = real_server_to_pb(&RealServerSpec {
            addr: "198.18.1.1".parse().unwrap(),
            port: 8080,
            forward: Forward::FullNat,
            weight: 7,
            upper_threshold: 100,
            lower_threshold: 50,
            tunnel: Default::default(),
        });
        assert_eq!(
            rs,
            pb::RealServerSpec {
                address: "198.18.1.1".into(),
                port: 8080,
                forward: pb::ForwardMethod::Fullnat as i32,
                weight: 7,
                upper_threshold: 100,
                lower_threshold: 50,
                ..Default::default()
            }
        );
    }
}
