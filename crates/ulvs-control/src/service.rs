//! `ControlService`: the `ulvs.v1.Ulvs` gRPC service over a [`Backend`].
//!
//! Writers are serialised by one tokio mutex around the desired state (engine configuration
//! plus labels). Every change builds a whole new [`Config`], checks it, hands it to
//! [`Backend::apply`] and stores it only if that succeeds, inside a spawned task so that a client
//! hanging up mid-request cannot leave the backend half-applied.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Mutex;
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span, field};
use ulvs_engine::{
    Config, Counters, DestConfig, ForwardMethod, Protocol, ServiceConfig, ServiceKey,
};
use ulvs_proto::v1 as pb;

use crate::validate::{self, Labels, Paths};
use crate::{Backend, ControlError};

/// The IPVS version whose semantics and formats ulvs follows.
pub const IPVS_VERSION: &str = "1.2.1";

/// The ulvs version reported by `GetInfo`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The desired state: what was last applied successfully.
#[derive(Debug, Default, Clone)]
struct State {
    config: Config,
    labels: HashMap<ServiceKey, Labels>,
}

/// The `ulvs.v1.Ulvs` service. Cheap to clone; clones share state.
#[derive(Debug)]
pub struct ControlService<B> {
    backend: Arc<B>,
    state: Arc<Mutex<State>>,
}

impl<B> Clone for ControlService<B> {
    fn clone(&self) -> Self {
        ControlService {
            backend: Arc::clone(&self.backend),
            state: Arc::clone(&self.state),
        }
    }
}

impl<B: Backend> ControlService<B> {
    /// A service with an empty configuration over `backend`.
    pub fn new(backend: impl Into<Arc<B>>) -> Self {
        ControlService {
            backend: backend.into(),
            state: Arc::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// The configuration that is live now (the last one applied successfully).
    pub async fn config(&self) -> Config {
        self.state.lock().await.config.clone()
    }

    /// This service as a tonic server, for `Server::add_service`.
    pub fn into_server(self) -> pb::ulvs_server::UlvsServer<Self> {
        pb::ulvs_server::UlvsServer::new(self)
    }

    /// Applies `change` to a copy of the state, checks the result, makes it live through the
    /// backend and stores it. On any error the stored state is untouched.
    async fn commit<F>(&self, paths: Paths, change: F) -> Result<(), ControlError>
    where
        F: FnOnce(&mut Config, &mut HashMap<ServiceKey, Labels>) -> Result<(), ControlError>
            + Send
            + 'static,
    {
        let backend = Arc::clone(&self.backend);
        let state = Arc::clone(&self.state);
        let task = async move {
            let mut state = state.lock().await;
            let mut next = state.clone();
            change(&mut next.config, &mut next.labels)?;
            backend
                .check(&next.config)
                .map_err(|e| validate::config_error(e, &paths))?;
            backend.apply(&state.config, &next.config).await?;
            *state = next;
            Ok(())
        };
        // Spawned so that the change runs to completion even if the client goes away.
        tokio::spawn(task.in_current_span())
            .await
            .map_err(|e| ControlError::Internal(format!("apply task failed: {e}")))?
    }

    async fn list(&self) -> Vec<pb::Service> {
        let state = self.state.lock().await.clone();
        let stats = self.backend.stats();
        let by_key: HashMap<ServiceKey, &ulvs_engine::ServiceStats> =
            stats.services.iter().map(|s| (s.key, s)).collect();
        state
            .config
            .services
            .iter()
            .map(|svc| {
                let svc_stats = by_key.get(&svc.key).copied();
                let labels = state.labels.get(&svc.key);
                service_to_pb(svc, labels, svc_stats)
            })
            .collect()
    }
}

fn not_found_service(key: &ServiceKey) -> ControlError {
    ControlError::NotFound(format!("service {key} does not exist"))
}

fn service_mut<'a>(
    config: &'a mut Config,
    key: &ServiceKey,
) -> Result<&'a mut ServiceConfig, ControlError> {
    config
        .services
        .iter_mut()
        .find(|s| &s.key == key)
        .ok_or_else(|| not_found_service(key))
}

fn stats_to_pb(c: &Counters) -> pb::Stats {
    pb::Stats {
        connections: c.conns,
        in_packets: c.in_pkts,
        out_packets: c.out_pkts,
        in_bytes: c.in_bytes,
        out_bytes: c.out_bytes,
    }
}

fn protocol_to_pb(p: Protocol) -> pb::Protocol {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
    }
}

fn forward_to_pb(f: ForwardMethod) -> pb::ForwardMethod {
    match f {
        ForwardMethod::Masq => pb::ForwardMethod::Masq,
        ForwardMethod::Route => pb::ForwardMethod::Route,
        ForwardMethod::Tunnel => pb::ForwardMethod::Tunnel,
        ForwardMethod::FullNat => pb::ForwardMethod::Fullnat,
    }
}

fn key_to_pb(key: &ServiceKey) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: protocol_to_pb(key.protocol) as i32,
        address: key.addr.ip().to_string(),
        port: u32::from(key.addr.port()),
    }
}

fn dest_to_pb(d: &DestConfig, stats: Option<&ulvs_engine::DestStats>) -> pb::RealServer {
    pb::RealServer {
        spec: Some(pb::RealServerSpec {
            address: d.addr.ip().to_string(),
            port: u32::from(d.addr.port()),
            forward: forward_to_pb(d.forward) as i32,
            weight: d.weight,
            upper_threshold: d.upper_threshold,
            lower_threshold: d.lower_threshold,
            ..Default::default()
        }),
        active_connections: stats.map_or(0, |s| s.active_conns),
        inactive_connections: stats.map_or(0, |s| s.inactive_conns),
        persistent_connections: stats.map_or(0, |s| s.persistent_conns),
        stats: Some(stats_to_pb(&stats.map(|s| s.counters).unwrap_or_default())),
        ..Default::default()
    }
}

fn service_to_pb(
    svc: &ServiceConfig,
    labels: Option<&Labels>,
    stats: Option<&ulvs_engine::ServiceStats>,
) -> pb::Service {
    let (persistence_timeout, persistence_prefix_len) = svc
        .persistence
        .map_or((0, 0), |p| (p.timeout_secs, u32::from(p.prefix_len)));
    let spec = pb::ServiceSpec {
        key: Some(key_to_pb(&svc.key)),
        scheduler: svc.scheduler.name().to_owned(),
        scheduler_flags: validate::scheduler_flag_names(svc.flags, svc.scheduler),
        persistence_timeout,
        persistence_prefix_len,
        one_packet: svc.one_packet,
        labels: labels
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        ..Default::default()
    };
    let dest_stats: BTreeMap<_, _> = stats
        .map(|s| s.dests.iter().map(|d| (d.addr, d)).collect())
        .unwrap_or_default();
    pb::Service {
        spec: Some(spec),
        real_servers: svc
            .dests
            .iter()
            .map(|d| dest_to_pb(d, dest_stats.get(&d.addr).copied()))
            .collect(),
        stats: Some(stats_to_pb(&stats.map(|s| s.counters).unwrap_or_default())),
        ..Default::default()
    }
}

/// Runs one request inside its span, logs the outcome and maps errors to a gRPC status.
async fn traced<T>(
    span: Span,
    mutating: bool,
    fut: impl Future<Output = Result<T, ControlError>>,
) -> Result<Response<T>, Status> {
    async move {
        match fut.await {
            Ok(v) => {
                if mutating {
                    tracing::info!("applied");
                } else {
                    tracing::debug!("answered");
                }
                Ok(Response::new(v))
            }
            Err(e) => {
                let status = e.to_status();
                tracing::warn!(code = ?status.code(), error = %e, "refused");
                Err(status)
            }
        }
    }
    .instrument(span)
    .await
}

fn span(method: &'static str) -> Span {
    tracing::info_span!(
        "control",
        method,
        service = field::Empty,
        real_server = field::Empty
    )
}

#[tonic::async_trait]
impl<B: Backend> pb::ulvs_server::Ulvs for ControlService<B> {
    async fn get_info(
        &self,
        _request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::GetInfoResponse>, Status> {
        traced(span("GetInfo"), false, async {
            let info = self.backend.info();
            Ok(pb::GetInfoResponse {
                version: VERSION.to_owned(),
                ipvs_version: IPVS_VERSION.to_owned(),
                connection_table_size: info.connection_table_size,
                devices: info.devices,
                ..Default::default()
            })
        })
        .await
    }

    async fn add_service(
        &self,
        request: Request<pb::AddServiceRequest>,
    ) -> Result<Response<pb::AddServiceResponse>, Status> {
        let span = span("AddService");
        traced(span.clone(), true, async move {
            let settings = validate::service_spec(request.get_ref().service.as_ref())?;
            let key = settings.config.key;
            span.record("service", field::display(key));
            self.commit(validate::SERVICE_SPEC, move |config, labels| {
                if config.service(&key).is_some() {
                    return Err(ControlError::AlreadyExists(format!(
                        "service {key} already exists"
                    )));
                }
                config.services.push(settings.config);
                labels.insert(key, settings.labels);
                Ok(())
            })
            .await?;
            Ok(pb::AddServiceResponse {})
        })
        .await
    }

    async fn edit_service(
        &self,
        request: Request<pb::EditServiceRequest>,
    ) -> Result<Response<pb::EditServiceResponse>, Status> {
        let span = span("EditService");
        traced(span.clone(), true, async move {
            let settings = validate::service_spec(request.get_ref().service.as_ref())?;
            let key = settings.config.key;
            span.record("service", field::display(key));
            self.commit(validate::SERVICE_SPEC, move |config, labels| {
                let svc = service_mut(config, &key)?;
                let dests = std::mem::take(&mut svc.dests);
                *svc = ServiceConfig {
                    dests,
                    ..settings.config
                };
                // Labels are replaced when given; an edit without labels (ipvsadm -E) keeps them.
                if !settings.labels.is_empty() {
                    labels.insert(key, settings.labels);
                }
                Ok(())
            })
            .await?;
            Ok(pb::EditServiceResponse {})
        })
        .await
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteServiceResponse>, Status> {
        let span = span("DeleteService");
        traced(span.clone(), true, async move {
            let key = validate::service_key(request.get_ref().key.as_ref(), "key")?;
            span.record("service", field::display(key));
            self.commit(validate::SERVICE_KEY, move |config, labels| {
                let before = config.services.len();
                config.services.retain(|s| s.key != key);
                if config.services.len() == before {
                    return Err(not_found_service(&key));
                }
                labels.remove(&key);
                Ok(())
            })
            .await?;
            Ok(pb::DeleteServiceResponse {})
        })
        .await
    }

    async fn add_real_server(
        &self,
        request: Request<pb::AddRealServerRequest>,
    ) -> Result<Response<pb::AddRealServerResponse>, Status> {
        let span = span("AddRealServer");
        traced(span.clone(), true, async move {
            let req = request.get_ref();
            let key = validate::service_key(req.service.as_ref(), "service")?;
            span.record("service", field::display(key));
            let dest = validate::real_server(req.real_server.as_ref(), &key)?;
            span.record("real_server", field::display(dest.addr));
            self.commit(validate::REAL_SERVER, move |config, _| {
                let svc = service_mut(config, &key)?;
                if svc.dest(dest.addr).is_some() {
                    return Err(ControlError::AlreadyExists(format!(
                        "real server {} of service {key} already exists",
                        dest.addr
                    )));
                }
                svc.dests.push(dest);
                Ok(())
            })
            .await?;
            Ok(pb::AddRealServerResponse {})
        })
        .await
    }

    async fn edit_real_server(
        &self,
        request: Request<pb::EditRealServerRequest>,
    ) -> Result<Response<pb::EditRealServerResponse>, Status> {
        let span = span("EditRealServer");
        traced(span.clone(), true, async move {
            let req = request.get_ref();
            let key = validate::service_key(req.service.as_ref(), "service")?;
            span.record("service", field::display(key));
            let dest = validate::real_server(req.real_server.as_ref(), &key)?;
            span.record("real_server", field::display(dest.addr));
            self.commit(validate::REAL_SERVER, move |config, _| {
                let svc = service_mut(config, &key)?;
                let slot = svc
                    .dests
                    .iter_mut()
                    .find(|d| d.addr == dest.addr)
                    .ok_or_else(|| {
                        ControlError::NotFound(format!(
                            "real server {} of service {key} does not exist",
                            dest.addr
                        ))
                    })?;
                *slot = dest;
                Ok(())
            })
            .await?;
            Ok(pb::EditRealServerResponse {})
        })
        .await
    }

    async fn delete_real_server(
        &self,
        request: Request<pb::DeleteRealServerRequest>,
    ) -> Result<Response<pb::DeleteRealServerResponse>, Status> {
        let span = span("DeleteRealServer");
        traced(span.clone(), true, async move {
            let req = request.get_ref();
            let key = validate::service_key(req.service.as_ref(), "service")?;
            span.record("service", field::display(key));
            let addr = validate::real_server_addr(&req.address, req.port, None, &key, "")?;
            span.record("real_server", field::display(addr));
            self.commit(validate::DELETE_REAL_SERVER, move |config, _| {
                let svc = service_mut(config, &key)?;
                let before = svc.dests.len();
                svc.dests.retain(|d| d.addr != addr);
                if svc.dests.len() == before {
                    return Err(ControlError::NotFound(format!(
                        "real server {addr} of service {key} does not exist"
                    )));
                }
                Ok(())
            })
            .await?;
            Ok(pb::DeleteRealServerResponse {})
        })
        .await
    }

    async fn clear(
        &self,
        _request: Request<pb::ClearRequest>,
    ) -> Result<Response<pb::ClearResponse>, Status> {
        traced(span("Clear"), true, async {
            self.commit(validate::SERVICE_KEY, |config, labels| {
                config.services.clear();
                labels.clear();
                Ok(())
            })
            .await?;
            Ok(pb::ClearResponse {})
        })
        .await
    }

    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        traced(span("ListServices"), false, async {
            Ok(pb::ListServicesResponse {
                services: self.list().await,
                ..Default::default()
            })
        })
        .await
    }
    // The RPCs below are declared in proto/ulvs/v1/ulvs.proto ahead of their implementation
    // (issues 3, 4 and 9); until then they answer UNIMPLEMENTED, naming the RPC.

    async fn apply(
        &self,
        _request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        Err(not_yet("Apply"))
    }

    async fn get_timeouts(
        &self,
        _request: Request<pb::GetTimeoutsRequest>,
    ) -> Result<Response<pb::GetTimeoutsResponse>, Status> {
        Err(not_yet("GetTimeouts"))
    }

    async fn set_timeouts(
        &self,
        _request: Request<pb::SetTimeoutsRequest>,
    ) -> Result<Response<pb::SetTimeoutsResponse>, Status> {
        Err(not_yet("SetTimeouts"))
    }

    async fn get_conntrack_settings(
        &self,
        _request: Request<pb::GetConntrackSettingsRequest>,
    ) -> Result<Response<pb::GetConntrackSettingsResponse>, Status> {
        Err(not_yet("GetConntrackSettings"))
    }

    async fn set_conntrack_settings(
        &self,
        _request: Request<pb::SetConntrackSettingsRequest>,
    ) -> Result<Response<pb::SetConntrackSettingsResponse>, Status> {
        Err(not_yet("SetConntrackSettings"))
    }

    type ListConnectionsStream = BoxStream<pb::ListConnectionsResponse>;

    async fn list_connections(
        &self,
        _request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<Self::ListConnectionsStream>, Status> {
        Err(not_yet("ListConnections"))
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        Err(not_yet("GetStats"))
    }

    async fn zero_counters(
        &self,
        _request: Request<pb::ZeroCountersRequest>,
    ) -> Result<Response<pb::ZeroCountersResponse>, Status> {
        Err(not_yet("ZeroCounters"))
    }

    async fn explain(
        &self,
        _request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        Err(not_yet("Explain"))
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(not_yet("Watch"))
    }
}

/// A server-streaming response body.
type BoxStream<T> =
    std::pin::Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by this ulvsd yet"))
}
