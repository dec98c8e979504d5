//! `ControlService`: the `ulvs.v1.Ulvs` gRPC service over a [`Backend`].
//!
//! Writers are serialised by one tokio mutex around the desired state (engine configuration,
//! labels and generations). Every write, a single RPC or an `Apply` batch, is a list of
//! validated [`Change`]s run by one transaction: the changes are applied in order to a copy of
//! the state, the whole result is checked, handed to [`Backend::apply`] and stored only if that
//! succeeds. It runs inside a spawned task so that a client hanging up mid-request cannot leave
//! the backend half-applied. A committed transaction bumps the configuration's generation by
//! one, gives every service it touched that generation, and publishes its events to `Watch`.
//! A batch's `set_timeouts` items are validated with the rest and set on the connection table
//! only after the backend has taken the new configuration (never on a refusal or a dry run).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, broadcast, mpsc};
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span, field};
use ulvs_engine::{
    Config, Counters, DestConfig, ForwardMethod, Protocol, ServiceConfig, ServiceKey, StatsSnapshot,
};
use ulvs_proto::v1 as pb;

use crate::validate::{self, Change, Labels};
use crate::{Backend, ControlError};

/// The IPVS version whose semantics and formats ulvs follows.
pub const IPVS_VERSION: &str = "1.2.1";

/// The ulvs version reported by `GetInfo`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Events a slow `Watch` client may fall behind by before its stream ends with `ABORTED`.
const WATCH_BUFFER: usize = 4096;

/// How often real-server states (available / quiescent / overloaded) are sampled for `Watch`.
const STATE_POLL: Duration = Duration::from_secs(1);

/// The desired state: what was last applied successfully.
#[derive(Debug, Default, Clone)]
struct State {
    config: Config,
    labels: HashMap<ServiceKey, Labels>,
    /// Generation of each service: the configuration generation of its last change.
    generations: HashMap<ServiceKey, u64>,
    /// Generation of the whole configuration: the number of committed writes.
    generation: u64,
}

/// Real servers flagged overloaded (IPVS's `IP_VS_DEST_F_OVERLOAD` hysteresis, as seen by the
/// control plane from the connection counts).
type Overloaded = BTreeSet<(ServiceKey, SocketAddr)>;

/// The last sampled state of each real server, by (service, address, port), for `Watch`.
type Sampled = HashMap<(pb::ServiceKey, String, u32), i32>;

/// The `ulvs.v1.Ulvs` service. Cheap to clone; clones share state.
#[derive(Debug)]
pub struct ControlService<B> {
    backend: Arc<B>,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<pb::WatchEvent>,
    overloaded: Arc<std::sync::Mutex<Overloaded>>,
    sampled: Arc<std::sync::Mutex<Option<Sampled>>>,
    poller: Arc<std::sync::Once>,
    started: Instant,
    /// `GetInfo.instance_id`: random, made when the service is created.
    instance_id: u128,
}

impl<B> Clone for ControlService<B> {
    fn clone(&self) -> Self {
        ControlService {
            backend: Arc::clone(&self.backend),
            state: Arc::clone(&self.state),
            events: self.events.clone(),
            overloaded: Arc::clone(&self.overloaded),
            sampled: Arc::clone(&self.sampled),
            poller: Arc::clone(&self.poller),
            started: self.started,
            instance_id: self.instance_id,
        }
    }
}

/// What a committed (or dry-run) transaction produced.
#[derive(Debug)]
struct Committed {
    /// The configuration's generation after it.
    generation: u64,
}

impl<B: Backend> ControlService<B> {
    /// A service with an empty configuration over `backend`.
    pub fn new(backend: impl Into<Arc<B>>) -> Self {
        ControlService {
            backend: backend.into(),
            state: Arc::default(),
            events: broadcast::channel(WATCH_BUFFER).0,
            overloaded: Arc::default(),
            sampled: Arc::default(),
            poller: Arc::new(std::sync::Once::new()),
            started: Instant::now(),
            instance_id: new_instance_id(),
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

    /// The configuration's generation: the number of writes committed so far.
    pub async fn generation(&self) -> u64 {
        self.state.lock().await.generation
    }

    /// This service as a tonic server, for `Server::add_service`.
    pub fn into_server(self) -> pb::ulvs_server::UlvsServer<Self> {
        pb::ulvs_server::UlvsServer::new(self)
    }

    /// Runs `changes` as one transaction (see the module docs). `prefix` says how errors name
    /// a change: `false` for a single RPC (paths relative to its request), `true` for a batch
    /// (`changes[i].<kind>.` before each path). `expected_generation` (0: any) is checked
    /// against the configuration's generation. With `dry_run` everything is checked and
    /// nothing changes. On any error the stored state is untouched.
    async fn transact(
        &self,
        changes: Vec<Change>,
        batch: bool,
        expected_generation: u64,
        dry_run: bool,
    ) -> Result<Committed, ControlError> {
        let backend = Arc::clone(&self.backend);
        let state = Arc::clone(&self.state);
        let events = self.events.clone();
        let task = async move {
            let mut state = state.lock().await;
            if expected_generation != 0 && expected_generation != state.generation {
                return Err(ControlError::StaleGeneration {
                    field: "expected_generation".to_owned(),
                    message: format!(
                        "the configuration is at generation {}, not {expected_generation}",
                        state.generation
                    ),
                });
            }
            let generation = state.generation + 1;
            let name = |i: usize, c: &Change, e: ControlError| {
                if batch {
                    e.prefixed(&format!("changes[{i}].{}", c.kind()))
                } else {
                    e
                }
            };
            let mut next = state.clone();
            let mut out = Vec::new();
            let mut touched = BTreeSet::new();
            // Timeouts live in the connection table, not in the configuration: collected here
            // and set only once the configuration has committed.
            let mut timeouts: Option<validate::TimeoutsChange> = None;
            for (i, change) in changes.iter().enumerate() {
                if let Change::SetTimeouts(t) = change {
                    if backend.conntrack().is_none() {
                        return Err(name(
                            i,
                            change,
                            ControlError::Unsupported {
                                field: "timeouts".to_owned(),
                                message: "this daemon has no connection table".to_owned(),
                            },
                        ));
                    }
                    timeouts = Some(timeouts.unwrap_or_default().then(*t));
                }
                apply_change(&mut next, change, generation, &mut out, &mut touched)
                    .map_err(|e| name(i, change, e))?;
            }
            if let Err(err) = backend.check(&next.config) {
                // Find the change that made the configuration unacceptable, to name it.
                let mut probe = state.clone();
                let mut scratch = (Vec::new(), BTreeSet::new());
                for (i, change) in changes.iter().enumerate() {
                    apply_change(
                        &mut probe,
                        change,
                        generation,
                        &mut scratch.0,
                        &mut scratch.1,
                    )
                    .map_err(|e| name(i, change, e))?;
                    if let Err(e) = backend.check(&probe.config) {
                        return Err(name(i, change, validate::config_error(e, &change.paths())));
                    }
                }
                return Err(validate::config_error(err, &validate::SERVICE_SPEC));
            }
            if dry_run {
                return Ok(Committed {
                    generation: state.generation,
                });
            }
            backend.apply(&state.config, &next.config).await?;
            // Infallible from here on: the batch's timeouts join the committed configuration.
            if let (Some(t), Some(engine)) = (timeouts, backend.conntrack()) {
                engine.set_timeouts(t.applied_to(engine.timeouts()));
            }
            for key in touched {
                if next.config.service(&key).is_some() {
                    next.generations.insert(key, generation);
                } else {
                    next.generations.remove(&key);
                }
            }
            next.generation = generation;
            *state = next;
            let unix_time_ms = unix_ms();
            for event in out {
                // No receiver is not an error: nobody is watching.
                let _ = events.send(pb::WatchEvent {
                    generation,
                    unix_time_ms,
                    event: Some(event),
                });
            }
            Ok(Committed { generation })
        };
        // Spawned so that the change runs to completion even if the client goes away.
        tokio::spawn(task.in_current_span())
            .await
            .map_err(|e| ControlError::Internal(format!("apply task failed: {e}")))?
    }

    /// One write RPC: a transaction of one change.
    async fn write(&self, change: Change) -> Result<(), ControlError> {
        self.transact(vec![change], false, 0, false).await.map(drop)
    }

    /// The services (with counters and real-server states) selected by `selector`, and the
    /// configuration's generation.
    async fn list(&self, selector: &HashMap<String, String>) -> (Vec<pb::Service>, u64) {
        let state = self.state.lock().await.clone();
        let stats = self.backend.stats();
        let overloaded = self.refresh_overload(&state.config, &stats);
        let by_key: HashMap<ServiceKey, &ulvs_engine::ServiceStats> =
            stats.services.iter().map(|s| (s.key, s)).collect();
        let services = state
            .config
            .services
            .iter()
            .filter(|svc| {
                let labels = state.labels.get(&svc.key);
                selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .map(|svc| {
                let mut pb = service_to_pb(
                    svc,
                    state.labels.get(&svc.key),
                    by_key.get(&svc.key).copied(),
                    &overloaded,
                );
                pb.generation = state.generations.get(&svc.key).copied().unwrap_or(0);
                pb
            })
            .collect();
        (services, state.generation)
    }

    /// Updates the overload flags from the connection counts (IPVS: set at the upper
    /// threshold, cleared under the lower one, or under 3/4 of the upper one without a lower
    /// one) and returns them.
    fn refresh_overload(&self, config: &Config, stats: &StatsSnapshot) -> Overloaded {
        let mut flags = self
            .overloaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = Overloaded::new();
        for svc in &config.services {
            let svc_stats = stats.services.iter().find(|s| s.key == svc.key);
            for d in &svc.dests {
                if d.upper_threshold == 0 {
                    continue;
                }
                let conns = svc_stats
                    .and_then(|s| s.dests.iter().find(|x| x.addr == d.addr))
                    .map_or(0, |x| {
                        u64::from(x.active_conns) + u64::from(x.inactive_conns)
                    });
                let upper = u64::from(d.upper_threshold);
                let was = flags.contains(&(svc.key, d.addr));
                let over = if conns >= upper {
                    true
                } else if !was {
                    false
                } else if d.lower_threshold != 0 {
                    conns >= u64::from(d.lower_threshold)
                } else {
                    conns * 4 >= upper * 3
                };
                if over {
                    next.insert((svc.key, d.addr));
                }
            }
        }
        *flags = next.clone();
        next
    }

    /// Samples every real server's state and publishes the ones that changed since the last
    /// sample to `Watch` as `real_server_state_changed`. The first sample only records.
    async fn sample_states(&self) {
        let (services, generation) = self.list(&HashMap::new()).await;
        let mut now = HashMap::new();
        for svc in &services {
            let Some(key) = svc.spec.as_ref().and_then(|sp| sp.key.as_ref()) else {
                continue;
            };
            for rs in &svc.real_servers {
                let Some(spec) = rs.spec.as_ref() else {
                    continue;
                };
                let id = (key.clone(), spec.address.clone(), spec.port);
                now.insert(id, (rs.state, key.clone(), rs.clone()));
            }
        }
        let mut last = self
            .sampled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(prev) = last.as_ref() {
            for (id, (state, key, rs)) in &now {
                if prev.get(id).is_some_and(|p| p != state) {
                    // No receiver is not an error: nobody is watching.
                    let _ = self.events.send(pb::WatchEvent {
                        generation,
                        unix_time_ms: unix_ms(),
                        event: Some(pb::watch_event::Event::RealServerStateChanged(
                            pb::RealServerEvent {
                                service: Some(key.clone()),
                                real_server: Some(rs.clone()),
                            },
                        )),
                    });
                }
            }
        }
        *last = Some(
            now.into_iter()
                .map(|(id, (state, ..))| (id, state))
                .collect(),
        );
    }

    /// Starts (once) the task that calls [`Self::sample_states`] every [`STATE_POLL`]. It holds
    /// only weak references and ends with the service.
    fn start_state_poller(&self) {
        let weak = WeakService {
            backend: Arc::downgrade(&self.backend),
            state: Arc::downgrade(&self.state),
            overloaded: Arc::downgrade(&self.overloaded),
            sampled: Arc::downgrade(&self.sampled),
            poller: Arc::downgrade(&self.poller),
            events: self.events.downgrade(),
            started: self.started,
            instance_id: self.instance_id,
        };
        self.poller.call_once(|| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(STATE_POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(svc) = weak.upgrade() else { return };
                    if svc.events.receiver_count() > 0 {
                        svc.sample_states().await;
                    }
                }
            });
        });
    }
}

/// The parts of a [`ControlService`] the state poller needs, held weakly.
#[derive(Debug)]
struct WeakService<B> {
    backend: Weak<B>,
    state: Weak<Mutex<State>>,
    overloaded: Weak<std::sync::Mutex<Overloaded>>,
    sampled: Weak<std::sync::Mutex<Option<Sampled>>>,
    poller: Weak<std::sync::Once>,
    events: broadcast::WeakSender<pb::WatchEvent>,
    started: Instant,
    instance_id: u128,
}

impl<B> WeakService<B> {
    fn upgrade(&self) -> Option<ControlService<B>> {
        Some(ControlService {
            backend: self.backend.upgrade()?,
            state: self.state.upgrade()?,
            overloaded: self.overloaded.upgrade()?,
            sampled: self.sampled.upgrade()?,
            poller: self.poller.upgrade()?,
            events: self.events.upgrade()?,
            started: self.started,
            instance_id: self.instance_id,
        })
    }
}

/// 128 random bits for `GetInfo.instance_id`: two hashers of the standard library's
/// randomly keyed `RandomState` (seeded from the operating system's randomness once per
/// process), over the time and the process id.
fn new_instance_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = |i: u8| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_u8(i);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn not_found_service(key: &ServiceKey) -> ControlError {
    ControlError::NotFound(format!("service {key} does not exist"))
}

fn not_found_dest(key: &ServiceKey, addr: SocketAddr) -> ControlError {
    ControlError::NotFound(format!(
        "real server {addr} of service {key} does not exist"
    ))
}

/// Checks a change's `expected_generation` (0: any) against the service's generation.
fn check_generation(state: &State, key: &ServiceKey, expected: u64) -> Result<(), ControlError> {
    let actual = state.generations.get(key).copied().unwrap_or(0);
    if expected != 0 && expected != actual {
        return Err(ControlError::StaleGeneration {
            field: "expected_generation".to_owned(),
            message: format!("service {key} is at generation {actual}, not {expected}"),
        });
    }
    Ok(())
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

/// Applies one change to `state` (a copy being built by a transaction), recording its watch
/// event in `events` and the services it touched in `touched`. Generations are checked
/// against the services' generations before the transaction (they change only at commit).
fn apply_change(
    state: &mut State,
    change: &Change,
    generation: u64,
    events: &mut Vec<pb::watch_event::Event>,
    touched: &mut BTreeSet<ServiceKey>,
) -> Result<(), ControlError> {
    use pb::watch_event::Event;
    let no_overload = Overloaded::new();
    let rs_event = |key: &ServiceKey, d: &DestConfig| pb::RealServerEvent {
        service: Some(key_to_pb(key)),
        real_server: Some(dest_to_pb(d, None, false)),
    };
    match change {
        Change::AddService(settings) => {
            let key = settings.config.key;
            if state.config.service(&key).is_some() {
                return Err(ControlError::AlreadyExists(format!(
                    "service {key} already exists"
                )));
            }
            state.config.services.push(settings.config.clone());
            state.labels.insert(key, settings.labels.clone());
            let mut svc =
                service_to_pb(&settings.config, Some(&settings.labels), None, &no_overload);
            svc.generation = generation;
            events.push(Event::ServiceAdded(svc));
            touched.insert(key);
        }
        Change::EditService {
            settings,
            expected_generation,
        } => {
            let key = settings.config.key;
            let svc = service_mut(&mut state.config, &key)?;
            let dests = std::mem::take(&mut svc.dests);
            *svc = ServiceConfig {
                dests,
                ..settings.config.clone()
            };
            let svc = svc.clone();
            check_generation(state, &key, *expected_generation)?;
            // Labels are replaced when given; an edit without labels (ipvsadm -E) keeps them.
            if !settings.labels.is_empty() {
                state.labels.insert(key, settings.labels.clone());
            }
            let mut pb = service_to_pb(&svc, state.labels.get(&key), None, &no_overload);
            pb.generation = generation;
            events.push(Event::ServiceUpdated(pb));
            touched.insert(key);
        }
        Change::DeleteService {
            key,
            expected_generation,
        } => {
            let before = state.config.services.len();
            state.config.services.retain(|s| s.key != *key);
            if state.config.services.len() == before {
                return Err(not_found_service(key));
            }
            check_generation(state, key, *expected_generation)?;
            state.labels.remove(key);
            events.push(Event::ServiceDeleted(key_to_pb(key)));
            touched.insert(*key);
        }
        Change::AddRealServer {
            service,
            dest,
            expected_generation,
        } => {
            let svc = service_mut(&mut state.config, service)?;
            if svc.dest(dest.addr).is_some() {
                return Err(ControlError::AlreadyExists(format!(
                    "real server {} of service {service} already exists",
                    dest.addr
                )));
            }
            svc.dests.push(*dest);
            check_generation(state, service, *expected_generation)?;
            events.push(Event::RealServerAdded(rs_event(service, dest)));
            touched.insert(*service);
        }
        Change::EditRealServer {
            service,
            dest,
            expected_generation,
        } => {
            let svc = service_mut(&mut state.config, service)?;
            let slot = svc
                .dests
                .iter_mut()
                .find(|d| d.addr == dest.addr)
                .ok_or_else(|| not_found_dest(service, dest.addr))?;
            *slot = *dest;
            check_generation(state, service, *expected_generation)?;
            events.push(Event::RealServerUpdated(rs_event(service, dest)));
            touched.insert(*service);
        }
        Change::DeleteRealServer {
            service,
            addr,
            expected_generation,
        } => {
            let svc = service_mut(&mut state.config, service)?;
            let Some(pos) = svc.dests.iter().position(|d| d.addr == *addr) else {
                return Err(not_found_dest(service, *addr));
            };
            let dest = svc.dests.remove(pos);
            check_generation(state, service, *expected_generation)?;
            events.push(Event::RealServerDeleted(rs_event(service, &dest)));
            touched.insert(*service);
        }
        Change::Clear => {
            touched.extend(state.config.services.iter().map(|s| s.key));
            state.config.services.clear();
            state.labels.clear();
            events.push(Event::Cleared(pb::ClearRequest {}));
        }
        // Set by the transaction at commit (the timeouts are not in the configuration).
        Change::SetTimeouts(_) => {}
    }
    Ok(())
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

fn tunnel_type_to_pb(d: &DestConfig) -> pb::TunnelType {
    if d.forward != ForwardMethod::Tunnel {
        return pb::TunnelType::Unspecified;
    }
    match d.tunnel.kind {
        ulvs_engine::TunnelType::Ipip => pb::TunnelType::Ipip,
        ulvs_engine::TunnelType::Gue => pb::TunnelType::Gue,
        ulvs_engine::TunnelType::Gre => pb::TunnelType::Gre,
    }
}

fn tunnel_checksum_to_pb(d: &DestConfig) -> pb::TunnelChecksum {
    match d.tunnel.checksum {
        _ if d.forward != ForwardMethod::Tunnel => pb::TunnelChecksum::Unspecified,
        ulvs_engine::TunnelChecksum::None => pb::TunnelChecksum::None,
        ulvs_engine::TunnelChecksum::Csum => pb::TunnelChecksum::Csum,
        ulvs_engine::TunnelChecksum::Remcsum => pb::TunnelChecksum::Remcsum,
    }
}

fn key_to_pb(key: &ServiceKey) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: protocol_to_pb(key.protocol) as i32,
        address: key.addr.ip().to_string(),
        port: u32::from(key.addr.port()),
    }
}

fn dest_to_pb(
    d: &DestConfig,
    stats: Option<&ulvs_engine::DestStats>,
    overloaded: bool,
) -> pb::RealServer {
    let state = if d.weight == 0 {
        pb::RealServerState::Quiescent
    } else if overloaded {
        pb::RealServerState::Overloaded
    } else {
        pb::RealServerState::Available
    };
    pb::RealServer {
        spec: Some(pb::RealServerSpec {
            address: d.addr.ip().to_string(),
            port: u32::from(d.addr.port()),
            forward: forward_to_pb(d.forward) as i32,
            weight: d.weight,
            upper_threshold: d.upper_threshold,
            lower_threshold: d.lower_threshold,
            tunnel_type: tunnel_type_to_pb(d) as i32,
            tunnel_port: u32::from(d.tunnel.port),
            tunnel_checksum: tunnel_checksum_to_pb(d) as i32,
        }),
        active_connections: stats.map_or(0, |s| s.active_conns),
        inactive_connections: stats.map_or(0, |s| s.inactive_conns),
        persistent_connections: stats.map_or(0, |s| s.persistent_conns),
        stats: Some(stats_to_pb(&stats.map(|s| s.counters).unwrap_or_default())),
        rates: Some(crate::conntrack::rates_to_pb(
            &stats.map(|s| s.rates).unwrap_or_default(),
        )),
        state: state as i32,
    }
}

fn service_to_pb(
    svc: &ServiceConfig,
    labels: Option<&Labels>,
    stats: Option<&ulvs_engine::ServiceStats>,
    overloaded: &Overloaded,
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
        max_new_connections_per_second: svc.max_new_connections_per_second,
        labels: labels
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        local_addresses: svc.local_addresses.iter().map(|a| a.to_string()).collect(),
    };
    let dest_stats: BTreeMap<_, _> = stats
        .map(|s| s.dests.iter().map(|d| (d.addr, d)).collect())
        .unwrap_or_default();
    pb::Service {
        spec: Some(spec),
        real_servers: svc
            .dests
            .iter()
            .map(|d| {
                dest_to_pb(
                    d,
                    dest_stats.get(&d.addr).copied(),
                    overloaded.contains(&(svc.key, d.addr)),
                )
            })
            .collect(),
        stats: Some(stats_to_pb(&stats.map(|s| s.counters).unwrap_or_default())),
        rates: Some(crate::conntrack::rates_to_pb(
            &stats.map(|s| s.rates).unwrap_or_default(),
        )),
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

/// Records the change's service (and real server) on the request span.
fn record(span: &Span, change: &Change) {
    if let Some(key) = change.service() {
        span.record("service", field::display(key));
    }
    match change {
        Change::AddRealServer { dest, .. } | Change::EditRealServer { dest, .. } => {
            span.record("real_server", field::display(dest.addr));
        }
        Change::DeleteRealServer { addr, .. } => {
            span.record("real_server", field::display(addr));
        }
        _ => {}
    }
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
                uptime_seconds: self.started.elapsed().as_secs(),
                queues: info.queues,
                instance_id: format!("{:032x}", self.instance_id),
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
            let change = validate::add_service(request.get_ref())?;
            record(&span, &change);
            self.write(change).await?;
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
            let change = validate::edit_service(request.get_ref())?;
            record(&span, &change);
            self.write(change).await?;
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
            let change = validate::delete_service(request.get_ref())?;
            record(&span, &change);
            self.write(change).await?;
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
            let change = validate::add_real_server(request.get_ref())?;
            record(&span, &change);
            self.write(change).await?;
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
            let change = validate::edit_real_server(request.get_ref())?;
            record(&span, &change);
            self.write(change).await?;
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
            let change = validate::delete_real_server(request.get_ref())?;
            record(&span, &change);
            self.write(change).await?;
            Ok(pb::DeleteRealServerResponse {})
        })
        .await
    }

    async fn clear(
        &self,
        _request: Request<pb::ClearRequest>,
    ) -> Result<Response<pb::ClearResponse>, Status> {
        traced(span("Clear"), true, async {
            self.write(Change::Clear).await?;
            Ok(pb::ClearResponse {})
        })
        .await
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        traced(span("ListServices"), false, async {
            let (services, generation) = self.list(&request.get_ref().label_selector).await;
            Ok(pb::ListServicesResponse {
                services,
                generation,
            })
        })
        .await
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let req = request.into_inner();
        let span = span("Apply");
        traced(span, !req.dry_run, async move {
            let changes = validate::changes(&req)?;
            let done = self
                .transact(changes, true, req.expected_generation, req.dry_run)
                .await?;
            Ok(pb::ApplyResponse {
                generation: done.generation,
            })
        })
        .await
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let include_initial = request.get_ref().include_initial;
        // Take the first real-server state sample now, so that any change after this call is
        // reported; then the poller samples periodically.
        self.sample_states().await;
        self.start_state_poller();
        // Subscribe under the state lock, so that no write falls between the initial snapshot
        // and the first streamed event.
        let (mut events, initial) = {
            let state = self.state.lock().await;
            let events = self.events.subscribe();
            let mut initial = Vec::new();
            if include_initial {
                let stats = self.backend.stats();
                let overloaded = self.refresh_overload(&state.config, &stats);
                let now = unix_ms();
                for svc in &state.config.services {
                    let stats = stats.services.iter().find(|s| s.key == svc.key);
                    let mut pb = service_to_pb(svc, state.labels.get(&svc.key), stats, &overloaded);
                    pb.generation = state.generations.get(&svc.key).copied().unwrap_or(0);
                    initial.push(pb::WatchEvent {
                        generation: state.generation,
                        unix_time_ms: now,
                        event: Some(pb::watch_event::Event::ServiceAdded(pb)),
                    });
                }
            }
            (events, initial)
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for event in initial {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let item = match events.recv().await {
                    Ok(event) => Ok(event),
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::aborted(format!(
                        "the watcher fell {n} events behind; list the services and watch again"
                    ))),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
    // The RPCs below are declared in proto/ulvs/v1/ulvs.proto ahead of their implementation
    // (issues 3 and 4); until then they answer UNIMPLEMENTED, naming the RPC.

    async fn get_timeouts(
        &self,
        _request: Request<pb::GetTimeoutsRequest>,
    ) -> Result<Response<pb::GetTimeoutsResponse>, Status> {
        Ok(Response::new(crate::conntrack::get_timeouts(
            &*self.backend,
        )?))
    }

    async fn set_timeouts(
        &self,
        request: Request<pb::SetTimeoutsRequest>,
    ) -> Result<Response<pb::SetTimeoutsResponse>, Status> {
        let r = crate::conntrack::set_timeouts(&*self.backend, request.get_ref())?;
        Ok(Response::new(r))
    }

    async fn get_conntrack_settings(
        &self,
        _request: Request<pb::GetConntrackSettingsRequest>,
    ) -> Result<Response<pb::GetConntrackSettingsResponse>, Status> {
        Ok(Response::new(crate::conntrack::get_settings(
            &*self.backend,
        )?))
    }

    async fn set_conntrack_settings(
        &self,
        request: Request<pb::SetConntrackSettingsRequest>,
    ) -> Result<Response<pb::SetConntrackSettingsResponse>, Status> {
        let r = crate::conntrack::set_settings(&*self.backend, request.get_ref())?;
        Ok(Response::new(r))
    }

    type ListConnectionsStream = BoxStream<pb::ListConnectionsResponse>;

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<Self::ListConnectionsStream>, Status> {
        let config = self.state.lock().await.config.clone();
        let rx = crate::conntrack::list_connections(
            Arc::clone(&self.backend),
            config,
            request.get_ref(),
        )?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        Ok(Response::new(crate::conntrack::get_stats(&*self.backend)?))
    }

    async fn zero_counters(
        &self,
        request: Request<pb::ZeroCountersRequest>,
    ) -> Result<Response<pb::ZeroCountersResponse>, Status> {
        let r = crate::conntrack::zero_counters(&*self.backend, request.get_ref())?;
        Ok(Response::new(r))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let r = crate::explain::explain(&*self.backend, request.get_ref())?;
        Ok(Response::new(r))
    }
}

/// A server-streaming response body.
type BoxStream<T> =
    std::pin::Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<T, Status>> + Send>>;
