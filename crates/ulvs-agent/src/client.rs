//! The agent's edge to the daemon: reads the live state into the model, and executes a plan as
//! one `Apply` batch guarded by the plan's generation. The only place that names protobuf types.
//!
//! Reading the live state runs in an `observe_live_state` span, the batch in an `apply_batch`
//! (or `dry_run`) span; every request carries the W3C trace context of the span it is made in
//! ([`ulvs_telemetry::PropagateTrace`]), so the daemon's spans are children of the agent's.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument as _;
use ulvs_proto::v1 as pb;
use ulvs_telemetry::PropagateTrace;

use crate::model::{
    Forward, Observed, ObservedService, Protocol, RealServerSpec, ServiceKey, ServiceSpec,
    Timeouts, TunnelChecksum, TunnelType,
};
use crate::plan::{Op, Plan};

/// A connected control client; its requests carry the current span's trace context.
pub type Client = pb::ulvs_client::UlvsClient<InterceptedService<Channel, PropagateTrace>>;

/// Where ulvsd listens unless `--socket` or `ULVS_SOCKET` say otherwise (as ulvsadm).
pub const DEFAULT_SOCKET: &str = "/run/ulvs/ulvsd.sock";
/// The environment variable that overrides [`DEFAULT_SOCKET`].
pub const SOCKET_ENV: &str = "ULVS_SOCKET";

/// Talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing usable listens on the socket.
    #[error("cannot connect to ulvsd at {path}: {reason}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The live state changed since the plan was made.
    #[error(
        "the live configuration changed since this plan was made (it expected generation {expected}): {message}; run plan again"
    )]
    Stale {
        /// The plan's generation.
        expected: u64,
        /// The daemon's message.
        message: String,
    },
    /// The daemon restarted since the plan was made: its generations count again from 0, so
    /// the plan's generation says nothing about the live state.
    #[error(
        "ulvsd restarted since this plan was made (daemon instance {planned:?}, now {now:?}); run plan again"
    )]
    Restarted {
        /// The instance the plan was made against.
        planned: String,
        /// The instance running now.
        now: String,
    },
    /// An RPC failed.
    #[error("{operation}: {code:?}: {message}")]
    Rpc {
        /// Which call.
        operation: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The daemon's message.
        message: String,
    },
    /// The daemon reported something the agent cannot represent.
    #[error("unexpected live state: {0}")]
    Unexpected(String),
}

fn rpc(operation: &'static str) -> impl FnOnce(tonic::Status) -> ClientError {
    move |s| ClientError::Rpc {
        operation,
        code: s.code(),
        message: s.message().to_owned(),
    }
}

/// Connects to the daemon's unix socket.
pub async fn connect(path: &Path) -> Result<Client, ClientError> {
    let channel =
        ulvs_proto::connect_unix_channel(path)
            .await
            .map_err(|e| ClientError::Connect {
                path: path.to_path_buf(),
                reason: error_chain(&e),
            })?;
    Ok(pb::ulvs_client::UlvsClient::with_interceptor(
        channel,
        PropagateTrace::from_env(),
    ))
}

/// Marks `span` failed (OpenTelemetry status `ERROR`) with `e` as the description.
pub fn record_error(span: &tracing::Span, e: &dyn std::fmt::Display) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", tracing::field::display(e));
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads the live state. Timeouts are read only when `with_timeouts` (the desired state
/// manages them).
pub async fn observe(client: &mut Client, with_timeouts: bool) -> Result<Observed, ClientError> {
    let span = tracing::info_span!(
        "observe_live_state",
        with_timeouts,
        generation = tracing::field::Empty,
        services = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    let r = observe_inner(client, with_timeouts)
        .instrument(span.clone())
        .await;
    match &r {
        Ok(o) => {
            span.record("generation", o.generation);
            span.record("services", o.services.len());
        }
        Err(e) => record_error(&span, e),
    }
    r
}

async fn observe_inner(client: &mut Client, with_timeouts: bool) -> Result<Observed, ClientError> {
    let instance_id = instance_id(client).await?;
    let list = client
        .list_services(pb::ListServicesRequest::default())
        .await
        .map_err(rpc("ListServices"))?
        .into_inner();
    let mut services = Vec::with_capacity(list.services.len());
    for s in &list.services {
        services.push(service_from_pb(s)?);
    }
    let timeouts = if with_timeouts {
        let t = client
            .get_timeouts(pb::GetTimeoutsRequest {})
            .await
            .map_err(rpc("GetTimeouts"))?
            .into_inner()
            .timeouts
            .unwrap_or_default();
        Some(Timeouts {
            tcp: t.tcp,
            tcp_fin: t.tcp_fin,
            udp: t.udp,
        })
    } else {
        None
    };
    Ok(Observed {
        generation: list.generation,
        instance_id,
        services,
        timeouts,
    })
}

/// The daemon's `GetInfo.instance_id` (new at every daemon start).
async fn instance_id(client: &mut Client) -> Result<String, ClientError> {
    Ok(client
        .get_info(pb::GetInfoRequest {})
        .await
        .map_err(rpc("GetInfo"))?
        .into_inner()
        .instance_id)
}

/// Executes `plan`: one `Apply` batch (timeouts included) with `expected_generation` = the
/// plan's generation, or a dry run of it, after checking that the daemon has not restarted
/// since the plan was made (`GetInfo.instance_id`). Returns the generation after the batch.
pub async fn execute(client: &mut Client, plan: &Plan, dry_run: bool) -> Result<u64, ClientError> {
    let s = plan.summary();
    let span = if dry_run {
        tracing::info_span!(
            "dry_run",
            expected_generation = plan.observed_generation,
            add = s.add,
            change = s.change,
            destroy = s.destroy,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            "apply_batch",
            expected_generation = plan.observed_generation,
            add = s.add,
            change = s.change,
            destroy = s.destroy,
            generation = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        )
    };
    let r = execute_inner(client, plan, dry_run)
        .instrument(span.clone())
        .await;
    match &r {
        Ok(g) => {
            span.record("generation", g);
        }
        Err(e) => record_error(&span, e),
    }
    r
}

async fn execute_inner(
    client: &mut Client,
    plan: &Plan,
    dry_run: bool,
) -> Result<u64, ClientError> {
    let changes = plan_changes(plan);
    let mut generation = plan.observed_generation;
    if !changes.is_empty() {
        // Generations start over when the daemon restarts: the plan's generation only means
        // something to the daemon run it was read from.
        let now = instance_id(client).await?;
        if now != plan.observed_instance {
            return Err(ClientError::Restarted {
                planned: plan.observed_instance.clone(),
                now,
            });
        }
    }
    if plan.observed_generation == 0 && !changes.is_empty() {
        // The API reads expected_generation 0 as "do not check", and a fresh daemon is at
        // generation 0: check here instead (the window until the batch lands is one RPC).
        let now = client
            .list_services(pb::ListServicesRequest::default())
            .await
            .map_err(rpc("ListServices"))?
            .into_inner()
            .generation;
        if now != 0 {
            return Err(ClientError::Stale {
                expected: 0,
                message: format!("the configuration is at generation {now}"),
            });
        }
    }
    if !changes.is_empty() {
        let resp = client
            .apply(pb::ApplyRequest {
                changes,
                expected_generation: plan.observed_generation,
                dry_run,
            })
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::FailedPrecondition && s.message().contains("generation")
                {
                    ClientError::Stale {
                        expected: plan.observed_generation,
                        message: s.message().to_owned(),
                    }
                } else {
                    rpc("Apply")(s)
                }
            })?;
        generation = resp.into_inner().generation;
    }
    Ok(generation)
}

/// The batch for `plan`, in an order that is valid step by step: real-server deletes, service
/// edits, real-server edits, service adds, real-server adds, service deletes, then the
/// timeouts (set by the daemon only if the whole batch commits).
pub fn plan_changes(plan: &Plan) -> Vec<pb::Change> {
    use pb::change::Change as C;
    let mut phases: [Vec<pb::Change>; 7] = Default::default();
    if let Some(t) = &plan.timeouts {
        phases[6].push(pb::Change {
            change: Some(C::SetTimeouts(pb::SetTimeoutsRequest {
                timeouts: Some(pb::Timeouts {
                    tcp: t.after.tcp,
                    tcp_fin: t.after.tcp_fin,
                    udp: t.after.udp,
                }),
            })),
        });
    }
    for svc in &plan.services {
        let key = key_to_pb(&svc.key);
        match svc.op {
            Op::Create => {
                if let Some(after) = &svc.after {
                    phases[3].push(pb::Change {
                        change: Some(C::AddService(pb::AddServiceRequest {
                            service: Some(service_to_pb(after)),
                        })),
                    });
                }
            }
            Op::Update => {
                if let Some(after) = &svc.after {
                    phases[1].push(pb::Change {
                        change: Some(C::EditService(pb::EditServiceRequest {
                            service: Some(service_to_pb(after)),
                            expected_generation: 0,
                        })),
                    });
                }
            }
            Op::Delete => {
                phases[5].push(pb::Change {
                    change: Some(C::DeleteService(pb::DeleteServiceRequest {
                        key: Some(key.clone()),
                        expected_generation: 0,
                    })),
                });
                // Its real servers go with it.
                continue;
            }
            Op::Keep => {}
        }
        for r in &svc.real_servers {
            match (r.op, &r.before, &r.after) {
                (Op::Create, _, Some(a)) => phases[4].push(pb::Change {
                    change: Some(C::AddRealServer(pb::AddRealServerRequest {
                        service: Some(key.clone()),
                        real_server: Some(rs_to_pb(a)),
                        expected_generation: 0,
                    })),
                }),
                (Op::Update, _, Some(a)) => phases[2].push(pb::Change {
                    change: Some(C::EditRealServer(pb::EditRealServerRequest {
                        service: Some(key.clone()),
                        real_server: Some(rs_to_pb(a)),
                        expected_generation: 0,
                    })),
                }),
                (Op::Delete, Some(b), _) => phases[0].push(pb::Change {
                    change: Some(C::DeleteRealServer(pb::DeleteRealServerRequest {
                        service: Some(key.clone()),
                        address: b.address.to_string(),
                        port: u32::from(b.port),
                        expected_generation: 0,
                    })),
                }),
                _ => {}
            }
        }
    }
    phases.into_iter().flatten().collect()
}

fn key_to_pb(k: &ServiceKey) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: match k.protocol {
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
        } as i32,
        address: k.address.to_string(),
        port: u32::from(k.port),
    }
}

fn service_to_pb(s: &ServiceSpec) -> pb::ServiceSpec {
    pb::ServiceSpec {
        key: Some(key_to_pb(&s.key)),
        scheduler: s.scheduler.clone(),
        scheduler_flags: s.scheduler_flags.iter().cloned().collect(),
        persistence_timeout: s.persistence_timeout,
        persistence_prefix_len: s.persistence_prefix_len,
        one_packet: s.one_packet,
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        local_addresses: s.local_addresses.iter().map(IpAddr::to_string).collect(),
        max_new_connections_per_second: s.max_new_connections_per_second,
    }
}

fn rs_to_pb(r: &RealServerSpec) -> pb::RealServerSpec {
    let tunnel = r.forward == Forward::Tunnel;
    pb::RealServerSpec {
        address: r.address.to_string(),
        port: u32::from(r.port),
        forward: match r.forward {
            Forward::Masq => pb::ForwardMethod::Masq,
            Forward::Route => pb::ForwardMethod::Route,
            Forward::Tunnel => pb::ForwardMethod::Tunnel,
            Forward::Fullnat => pb::ForwardMethod::Fullnat,
        } as i32,
        weight: r.weight,
        upper_threshold: r.upper_threshold,
        lower_threshold: r.lower_threshold,
        tunnel_type: if tunnel {
            match r.tunnel_type {
                TunnelType::Ipip => pb::TunnelType::Ipip,
                TunnelType::Gue => pb::TunnelType::Gue,
                TunnelType::Gre => pb::TunnelType::Gre,
            }
        } else {
            pb::TunnelType::Unspecified
        } as i32,
        tunnel_port: u32::from(r.tunnel_port),
        tunnel_checksum: if tunnel {
            match r.tunnel_checksum {
                TunnelChecksum::None => pb::TunnelChecksum::None,
                TunnelChecksum::Csum => pb::TunnelChecksum::Csum,
                TunnelChecksum::Remcsum => pb::TunnelChecksum::Remcsum,
            }
        } else {
            pb::TunnelChecksum::Unspecified
        } as i32,
    }
}

fn ip(s: &str, what: &str) -> Result<IpAddr, ClientError> {
    s.parse()
        .map_err(|_| ClientError::Unexpected(format!("{what}: invalid address {s:?}")))
}

fn port(p: u32, what: &str) -> Result<u16, ClientError> {
    u16::try_from(p).map_err(|_| ClientError::Unexpected(format!("{what}: port {p} out of range")))
}

fn service_from_pb(s: &pb::Service) -> Result<ObservedService, ClientError> {
    let spec = s
        .spec
        .as_ref()
        .ok_or_else(|| ClientError::Unexpected("a service without settings".into()))?;
    let k = spec
        .key
        .as_ref()
        .ok_or_else(|| ClientError::Unexpected("a service without a key".into()))?;
    let protocol = match pb::Protocol::try_from(k.protocol) {
        Ok(pb::Protocol::Tcp) => Protocol::Tcp,
        Ok(pb::Protocol::Udp) => Protocol::Udp,
        _ => {
            return Err(ClientError::Unexpected(format!(
                "protocol value {}",
                k.protocol
            )));
        }
    };
    let key = ServiceKey {
        protocol,
        address: ip(&k.address, "service address")?,
        port: port(k.port, "service")?,
    };
    let mut local_addresses = Vec::new();
    for a in &spec.local_addresses {
        local_addresses.push(ip(a, "local address")?);
    }
    // Compared as a set: the planner sees no change in order alone.
    local_addresses.sort();
    local_addresses.dedup();
    let out = ServiceSpec {
        key,
        scheduler: if spec.scheduler.is_empty() {
            "wlc".to_owned()
        } else {
            spec.scheduler.clone()
        },
        scheduler_flags: spec.scheduler_flags.iter().cloned().collect(),
        persistence_timeout: spec.persistence_timeout,
        persistence_prefix_len: spec.persistence_prefix_len,
        one_packet: spec.one_packet,
        labels: spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        local_addresses,
        max_new_connections_per_second: spec.max_new_connections_per_second,
    };
    let mut real_servers = Vec::with_capacity(s.real_servers.len());
    for r in &s.real_servers {
        let Some(r) = r.spec.as_ref() else {
            return Err(ClientError::Unexpected(
                "a real server without settings".into(),
            ));
        };
        let forward = match pb::ForwardMethod::try_from(r.forward) {
            Ok(pb::ForwardMethod::Masq) => Forward::Masq,
            Ok(pb::ForwardMethod::Tunnel) => Forward::Tunnel,
            Ok(pb::ForwardMethod::Fullnat) => Forward::Fullnat,
            Ok(pb::ForwardMethod::Route | pb::ForwardMethod::Unspecified) => Forward::Route,
            Err(_) => {
                return Err(ClientError::Unexpected(format!(
                    "forward value {}",
                    r.forward
                )));
            }
        };
        let mut spec = RealServerSpec::new(
            ip(&r.address, "real server")?,
            port(r.port, "real server")?,
            forward,
        );
        spec.weight = r.weight;
        spec.upper_threshold = r.upper_threshold;
        spec.lower_threshold = r.lower_threshold;
        if forward == Forward::Tunnel {
            spec.tunnel_type = match pb::TunnelType::try_from(r.tunnel_type) {
                Ok(pb::TunnelType::Gue) => TunnelType::Gue,
                Ok(pb::TunnelType::Gre) => TunnelType::Gre,
                _ => TunnelType::Ipip,
            };
            spec.tunnel_port = port(r.tunnel_port, "tunnel")?;
            spec.tunnel_checksum = match pb::TunnelChecksum::try_from(r.tunnel_checksum) {
                Ok(pb::TunnelChecksum::Csum) => TunnelChecksum::Csum,
                Ok(pb::TunnelChecksum::Remcsum) => TunnelChecksum::Remcsum,
                _ => TunnelChecksum::None,
            };
        }
        real_servers.push(spec);
    }
    Ok(ObservedService {
        spec: out,
        real_servers,
    })
}
