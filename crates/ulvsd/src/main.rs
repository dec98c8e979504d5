//! The ulvs daemon: dataplane + control server, signals and shutdown.
//!
//! Start-up: check the host (CAP_NET_ADMIN, `/dev/net/tun`, forwarding; `--configure-sysctls`
//! fixes the sysctls instead of failing), create the engine, the TUN device and its workers (and, with a tunnel source, the ICMP watcher),
//! remove stale routes and rules of an earlier run, and serve the gRPC control API on a unix
//! socket. "ulvsd ready" is logged once the socket accepts. SIGINT/SIGTERM stop serving, stop the
//! workers, remove every route and rule, remove the socket and exit 0. A fatal error prints one
//! line on stderr and exits 1.

mod backend;
mod telemetry;

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ulvs_control::{BackendInfo, ControlService};
use ulvs_dataplane::router::{DEFAULT_RULE_PRIORITY, DEFAULT_TABLE};
use ulvs_dataplane::steer::Steering;
use ulvs_dataplane::tun::{DEFAULT_MTU, DEFAULT_TUN_NAME};
use ulvs_dataplane::{
    Clock, Host, RedirectOptions, Router, RouterOptions, TapDevice, TunConfig, TunDevice,
    WorkerOptions, Workers,
};
use ulvs_engine::{Engine, EngineOptions};

use crate::backend::DaemonBackend;

/// `--steering` values (see [`ulvs_dataplane::steer::Steering`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SteeringArg {
    /// The queue of the CPU the packet was routed on; workers pinned.
    Cpu,
    /// The packet's flow hash.
    Flow,
    /// The kernel's own flow table.
    Kernel,
}

impl From<SteeringArg> for Steering {
    fn from(a: SteeringArg) -> Steering {
        match a {
            SteeringArg::Cpu => Steering::Cpu,
            SteeringArg::Flow => Steering::Flow,
            SteeringArg::Kernel => Steering::Kernel,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How often the reply redirects' pass filters are checked against the director's addresses.
const REDIRECT_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// ulvsd: userspace Linux Virtual Server daemon.
#[derive(Debug, Parser)]
#[command(name = "ulvsd", version, about)]
struct Args {
    /// Name of the TUN device to create.
    #[arg(long = "tun", value_name = "NAME", default_value = DEFAULT_TUN_NAME)]
    tun: String,
    /// Unix socket of the gRPC control API.
    #[arg(
        long,
        value_name = "PATH",
        env = "ULVS_SOCKET",
        default_value = "/run/ulvs/ulvsd.sock"
    )]
    socket: PathBuf,
    /// Number of TUN queues, one worker thread each (default: three per CPU ulvsd may run on,
    /// at most 64; one per CPU with `--steering cpu`). Each flow stays on one queue.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=MAX_QUEUES as i64))]
    queues: Option<u16>,
    /// Size of the connection table; new connections beyond it are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    max_connections: usize,
    /// Routing table that holds the default route into the TUN for real-server replies.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TABLE,
          value_parser = clap::value_parser!(u32).range(1..=0xffff_fffe))]
    route_table: u32,
    /// Priority of the policy rules that steer real-server replies into the TUN.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RULE_PRIORITY)]
    rule_priority: u32,
    /// Do not install the `tc` ingress filters that hand NAT and FULLNAT replies straight to
    /// the TUN on the real servers' interfaces; the policy rules and routes, which are always
    /// installed, then steer every reply through the kernel's forwarding path.
    #[arg(long)]
    no_reply_redirect: bool,
    /// MTU of the TUN device.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MTU,
          value_parser = clap::value_parser!(u32).range(576..=65535))]
    mtu: u32,
    /// Do not use TUN and TAP offloads (IFF_VNET_HDR, checksum and segmentation offload): every
    /// packet is then read and written at MTU size.
    #[arg(long)]
    no_offload: bool,
    /// How a packet routed into the TUN finds its queue (with more than one): `cpu`, the queue
    /// of the CPU it was routed on, read by a worker pinned to that CPU; `flow`, its flow hash;
    /// `kernel`, the kernel's own flow table. `cpu` and `flow` load an eBPF steering program
    /// (CAP_BPF; without it ulvsd warns and the kernel chooses).
    #[arg(long, value_enum, default_value_t = SteeringArg::Flow)]
    steering: SteeringArg,
    /// Pin worker thread i to the i-th CPU the daemon may run on.
    #[arg(long)]
    pin_workers: bool,
    /// Set net.ipv4.ip_forward=1 (and IPv6 forwarding) and rp_filter=0 (all and the TUN)
    /// instead of failing when they are not so.
    #[arg(long)]
    configure_sysctls: bool,
    /// Create a TAP device of this name for direct routing (-g), attached to --bridge.
    #[arg(long, value_name = "NAME", requires = "bridge")]
    tap: Option<String>,
    /// The bridge that holds the real-server LAN; the TAP is attached to it.
    #[arg(long, value_name = "BR", requires = "tap")]
    bridge: Option<String>,
    /// Outer source address of tunnel-mode (-i) packets; give one per address family in use.
    #[arg(long = "tunnel-source", value_name = "ADDR")]
    tunnel_sources: Vec<std::net::IpAddr>,
    /// Sender address of the daemon's ARP requests for direct-routing real servers (0.0.0.0
    /// when not given). Never an address the director or another host uses: the real servers
    /// would learn ulvsd's MAC for it.
    #[arg(long, value_name = "ADDR")]
    arp_source: Option<std::net::Ipv4Addr>,
    /// Path MTU to tunnel-mode real servers when the kernel's route to one says none.
    #[arg(long, value_name = "BYTES", default_value_t = ulvs_engine::DEFAULT_PATH_MTU,
          value_parser = clap::value_parser!(u32).range(576..=65535))]
    tunnel_mtu: u32,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (e.g. "info", "ulvsd=debug"); RUST_LOG is used when this is not given.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Export metrics and traces over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317).
    /// The export interval follows OTEL_METRIC_EXPORT_INTERVAL (milliseconds).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (off when not given).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Also serve the control API on TCP at this address, TLS only (needs --tls-cert and
    /// --tls-key; there is no plain-text TCP listener).
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["tls_cert", "tls_key"])]
    listen: Option<std::net::SocketAddr>,
    /// Server certificate chain (PEM) of the TCP listener.
    #[arg(long, value_name = "FILE", requires = "listen")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM) of the TCP listener.
    #[arg(long, value_name = "FILE", requires = "listen")]
    tls_key: Option<PathBuf>,
    /// Require TCP clients to present a certificate signed by one of these CAs (PEM): mTLS.
    #[arg(long, value_name = "FILE", requires = "listen")]
    tls_client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer <token>` on every TCP API call; the token is the file's
    /// first line. Health checks stay open.
    #[arg(long, value_name = "FILE", requires = "listen")]
    token_file: Option<PathBuf>,
}

impl Args {
    /// The TCP listener's address and settings, with every file read, if `--listen` is given.
    fn tcp(&self) -> anyhow::Result<Option<(std::net::SocketAddr, ulvs_control::TcpOptions)>> {
        let Some(addr) = self.listen else {
            return Ok(None);
        };
        let read = |flag: &str, path: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            path.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("{flag} {}", p.display())))
                .transpose()
        };
        let (Some(cert_pem), Some(key_pem)) = (
            read("--tls-cert", &self.tls_cert)?,
            read("--tls-key", &self.tls_key)?,
        ) else {
            anyhow::bail!("--listen needs --tls-cert and --tls-key: TCP is served with TLS only");
        };
        let token = match read("--token-file", &self.token_file)? {
            None => None,
            Some(bytes) => {
                let text = String::from_utf8(bytes).context("--token-file is not UTF-8")?;
                let token = text.lines().next().unwrap_or("").trim().to_owned();
                anyhow::ensure!(!token.is_empty(), "--token-file: the token is empty");
                Some(token)
            }
        };
        Ok(Some((
            addr,
            ulvs_control::TcpOptions {
                cert_pem,
                key_pem,
                client_ca_pem: read("--tls-client-ca", &self.tls_client_ca)?,
                token,
            },
        )))
    }
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ulvs-ctl")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ulvsd: error: start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let format = match args.log_format {
        LogFormat::Text => ulvs_telemetry::LogFormat::Text,
        LogFormat::Json => ulvs_telemetry::LogFormat::Json,
    };
    let telemetry = {
        let _rt = rt.enter();
        telemetry::init(format, args.log_level.clone(), args.otlp_endpoint.clone())
    };
    let telemetry = match telemetry {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ulvsd: error: {e:#}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(run(args, telemetry.metrics().clone()));
    // Flush the last metrics and spans while the runtime still drives the exporters.
    telemetry.shutdown();
    if let Err(e) = result {
        eprintln!("ulvsd: error: {e:#}");
        std::process::exit(1);
    }
}

/// Most TUN queues (worker threads) ulvsd opens.
const MAX_QUEUES: u16 = 64;

/// Queues per CPU by default when packets are steered by flow (or by the kernel).
const QUEUES_PER_CPU: u16 = 3;

/// The default number of queues for `cpus` CPUs (this process's affinity and cgroup quota):
/// [`QUEUES_PER_CPU`] per CPU, at most [`MAX_QUEUES`]; one per CPU with CPU steering, whose
/// queue *i* is the queue of CPU *i* (a queue beyond the CPUs would stay empty).
///
/// More workers than CPUs: measured on the two-core bench rig (NAT, short connections, 20 s
/// runs, two at a time, alternating), 2 queues made 12.6-13.5k connections/s at 143-149 us of
/// machine CPU per connection, 4 queues 13.5-14.2k at 137-144 us, 6 queues 14.6-14.9k at 134-137
/// us, 8 queues 14.5k; context switches per connection fell from 3.8 to 2.2 and interrupts
/// (mostly wake-up IPIs) from 0.7 to 0.3, likely because with several workers per CPU the one a
/// packet is steered to is more often woken on the CPU that routed the packet. Streams and
/// 64-byte UDP did not lose (README, Performance).
fn default_queues(cpus: usize, steering: SteeringArg) -> u16 {
    let cpus = u16::try_from(cpus).unwrap_or(MAX_QUEUES).max(1);
    let per_cpu = match steering {
        SteeringArg::Cpu => 1,
        SteeringArg::Flow | SteeringArg::Kernel => QUEUES_PER_CPU,
    };
    cpus.saturating_mul(per_cpu).clamp(1, MAX_QUEUES)
}

/// Checks the host; with `configure`, fixes forwarding instead of failing.
fn check_host(host: &Host, configure: bool) -> anyhow::Result<()> {
    host.check_net_admin()?;
    host.check_tun_device()?;
    if configure {
        host.configure_forwarding()?;
    }
    host.check_forwarding()?;
    if host.ipv6_forwarding() == Some(false) {
        tracing::warn!(
            "net.ipv6.conf.all.forwarding is 0: IPv6 services will not forward (use --configure-sysctls)"
        );
    }
    Ok(())
}

async fn run(args: Args, metrics: Arc<ulvs_telemetry::Metrics>) -> anyhow::Result<()> {
    // Read the TLS material first: a bad file fails before any device or route exists.
    let tcp = args.tcp()?;
    let host = Host::default();
    check_host(&host, args.configure_sysctls)?;

    let engine = Arc::new(Engine::new(EngineOptions {
        max_connections: args.max_connections,
        shards: 64,
        hash_seed: RandomState::new().hash_one(std::process::id()),
    }));
    // FULLNAT local ports start at a random point per daemon start (see the method's doc).
    engine
        .set_local_port_seed(RandomState::new().hash_one((std::process::id(), "local ports")) | 1);

    let director = director_settings(&args)?;
    engine.set_director(director.clone());

    let queues = args.queues.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        default_queues(cpus, args.steering)
    });
    let tun = TunDevice::open(&TunConfig {
        name: args.tun.clone(),
        mtu: args.mtu,
        queues: usize::from(queues),
        offload: !args.no_offload,
        ..TunConfig::default()
    })?;
    let steering = if queues > 1 {
        match tun.steer(args.steering.into()) {
            Ok(()) => Steering::from(args.steering),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the kernel picks TUN queues with its flow table (loading the steering \
                     program needs CAP_BPF)"
                );
                Steering::Kernel
            }
        }
    } else {
        Steering::Kernel
    };
    // With CPU steering, the worker of queue i must run on CPU i.
    let pin = args.pin_workers || steering == Steering::Cpu;
    if args.configure_sysctls {
        host.configure_rp_filter(tun.name())?;
    }
    host.check_rp_filter(tun.name())?;
    // The TUN is ours, so is its accept_local: IPv4 tunnel modes need it (see the method), and
    // every other mode gains a route lookup less per packet written.
    if let Err(err) = host.set_accept_local(tun.name()) {
        if director.tunnel_source_v4.is_some() {
            return Err(err.into());
        }
        tracing::warn!(error = %err, "could not turn accept_local on for the TUN; every packet ulvsd writes costs the kernel a reverse-path lookup");
    }
    let tap = match (&args.tap, &args.bridge) {
        (Some(tap), Some(bridge)) => {
            let dev = TapDevice::open(tap, bridge, args.mtu, !args.no_offload)?;
            let mac = station_mac(dev.mac());
            engine.set_director(ulvs_engine::Director {
                mac: Some(mac),
                frame_offload: dev.has_vnet_hdr(),
                ..director.clone()
            });
            tracing::info!(
                tap = dev.name(),
                bridge = %bridge,
                mac = %format_mac(mac),
                "TAP device attached for direct routing"
            );
            Some(dev)
        }
        _ => None,
    };

    let router = Arc::new(Router::connect(RouterOptions {
        table: args.route_table,
        rule_priority: args.rule_priority,
        redirect: RedirectOptions {
            enabled: !args.no_reply_redirect,
            ..RedirectOptions::default()
        },
        ..RouterOptions::new(tun.name(), tun.index())
    })?);
    if let Err(err) = router.use_noqueue().await {
        tracing::warn!(error = %err, "the TUN keeps its default qdisc");
    }
    let stale = router.remove_stale().await?;
    if stale > 0 {
        tracing::info!(
            removed = stale,
            "removed routes, rules and redirect filters left by an earlier run"
        );
    }

    let clock = Clock::start();
    let tap_queues = match &tap {
        Some(dev) => {
            let tun_q = tun
                .clone_queues()?
                .into_iter()
                .next()
                .context("the TUN has no queue")?;
            Some((dev.clone_queue()?, tun_q))
        }
        None => None,
    };
    let mut workers = Workers::start_with_tap(
        engine.clone(),
        tun.clone_queues()?,
        tap_queues,
        clock,
        &WorkerOptions { pin },
    )?;
    // Errors routers send to the tunnel source about our tunnel packets (FRAG_NEEDED / Packet
    // Too Big from a hop behind the director) arrive at a local address: a raw socket sees a
    // copy, the engine relays them to the client.
    let families = ulvs_dataplane::Families {
        v4: director.tunnel_source_v4.is_some(),
        v6: director.tunnel_source_v6.is_some(),
    };
    let mut icmp_watcher = if families.v4 || families.v6 {
        let q = tun
            .clone_queues()?
            .into_iter()
            .next()
            .context("the TUN has no queue")?;
        match ulvs_dataplane::IcmpWatcher::start(engine.clone(), q, families, clock) {
            Ok(w) => Some(w),
            // Raw sockets need CAP_NET_RAW; without it tunnels still work, only the errors of
            // hops behind the director are not relayed (the engine's own FRAG_NEEDED for the
            // director's route MTU still is).
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "ICMP errors sent to the tunnel source will not be relayed to clients \
                     (the ICMP watcher needs CAP_NET_RAW)"
                );
                None
            }
        }
    } else {
        None
    };
    tracing::info!(
        tun = tun.name(),
        queues,
        mtu = tun.mtu(),
        offloads = %tun.offloads().names(),
        pinned = pin,
        steering = ?steering,
        table = args.route_table,
        rule_priority = args.rule_priority,
        "dataplane started"
    );

    let backend = DaemonBackend::new(
        engine.clone(),
        router.clone(),
        BackendInfo {
            connection_table_size: u32::try_from(args.max_connections).unwrap_or(u32::MAX),
            devices: std::iter::once(tun.name().to_owned())
                .chain(tap.as_ref().map(|t| t.name().to_owned()))
                .collect(),
            queues: u32::from(queues),
        },
    );

    metrics.attach(engine.clone(), backend.applied());
    let prometheus = match args.metrics_listen {
        Some(addr) => Some(telemetry::start_prometheus(addr, metrics.clone()).await?),
        None => None,
    };
    // The pass filters in front of the reply redirects follow the director's own addresses.
    let refresher = {
        let router = router.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REDIRECT_REFRESH);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                router.refresh_redirects().await;
            }
        })
    };
    let observer = telemetry::ControlTelemetry::new(metrics);
    let served = serve(&args.socket, tcp, backend, observer).await;
    refresher.abort();
    if let Some(p) = prometheus {
        p.abort();
    }

    // Shutdown, in reverse: workers, then routes and rules (before the TUN goes), then the TUN.
    let stopped = workers.stop();
    if let Some(w) = icmp_watcher.as_mut()
        && !w.stop()
    {
        tracing::error!("the ICMP watcher thread panicked");
    }
    let cleared = router.clear().await;
    drop(tun);
    drop(tap);
    served?;
    stopped?;
    cleared.context("remove routes and rules")?;
    tracing::info!("ulvsd stopped");
    Ok(())
}

/// The engine's director settings from the command line.
fn director_settings(args: &Args) -> anyhow::Result<ulvs_engine::Director> {
    let mut d = ulvs_engine::Director {
        arp_source: args.arp_source,
        path_mtu: args.tunnel_mtu,
        ..ulvs_engine::Director::default()
    };
    for ip in &args.tunnel_sources {
        match ip {
            std::net::IpAddr::V4(a) if d.tunnel_source_v4.is_none() => {
                d.tunnel_source_v4 = Some(*a)
            }
            std::net::IpAddr::V6(a) if d.tunnel_source_v6.is_none() => {
                d.tunnel_source_v6 = Some(*a)
            }
            _ => anyhow::bail!("--tunnel-source: give at most one address per family ({ip})"),
        }
    }
    Ok(d)
}

/// The MAC the engine uses behind the TAP: a random locally administered unicast address,
/// distinct from the TAP device's own (the bridge keeps each port's own address as a local
/// entry and would deliver frames to it to the director's stack instead of out the TAP port).
fn station_mac(tap_mac: [u8; 6]) -> [u8; 6] {
    let h = RandomState::new().hash_one((std::process::id(), tap_mac));
    let b = h.to_be_bytes();
    let mut mac = [b[0], b[1], b[2], b[3], b[4], b[5]];
    mac[0] = (mac[0] & 0xfe) | 0x02;
    if mac == tap_mac {
        mac[5] ^= 1;
    }
    mac
}

fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Serves the control API on `socket` (and on TCP with TLS when configured) until SIGINT or
/// SIGTERM; the socket file is removed when serving ends.
async fn serve(
    socket: &Path,
    tcp: Option<(std::net::SocketAddr, ulvs_control::TcpOptions)>,
    backend: DaemonBackend,
    observer: Arc<telemetry::ControlTelemetry>,
) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let service = ControlService::new(backend);
    let bound = ulvs_control::bind_unix(socket)
        .context("control socket")?
        .observe(observer.clone());
    let listener = match tcp {
        Some((addr, options)) => Some(
            ulvs_control::bind_tcp(addr, options)
                .await
                .context("control TCP listener")?
                .observe(observer),
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("signal received, shutting down");
        let _ = stop_tx.send(true);
    });
    tracing::info!(socket = %bound.path().display(), "ulvsd ready");
    let unix = async {
        bound
            .serve(service.clone(), stopped(stop_rx.clone()))
            .await
            .context("control server")
    };
    let tcp = async {
        match listener {
            Some(l) => l
                .serve(service.clone(), stopped(stop_rx.clone()))
                .await
                .context("control TCP server"),
            None => Ok(()),
        }
    };
    tokio::try_join!(unix, tcp).map(drop)
}

/// A future that completes on SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn default_queues_are_three_per_cpu_or_one_per_cpu_with_cpu_steering() {
        assert_eq!(default_queues(1, SteeringArg::Flow), 3);
        assert_eq!(default_queues(2, SteeringArg::Flow), 6);
        assert_eq!(default_queues(2, SteeringArg::Kernel), 6);
        assert_eq!(default_queues(2, SteeringArg::Cpu), 2);
        assert_eq!(default_queues(21, SteeringArg::Flow), 63);
        assert_eq!(default_queues(22, SteeringArg::Flow), MAX_QUEUES);
        assert_eq!(default_queues(100_000, SteeringArg::Flow), MAX_QUEUES);
        assert_eq!(default_queues(100, SteeringArg::Cpu), MAX_QUEUES);
    }

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    /// `deploy/systemd/ulvsd.service` starts ulvsd with flags it accepts and grants the
    /// capabilities it needs (the TUN, netlink and tc; raw ICMP sockets for the hop-error relay;
    /// eBPF for the queue-steering program).
    #[test]
    fn the_systemd_unit_matches_the_cli() {
        let unit = include_str!("../../../deploy/systemd/ulvsd.service");
        let value =
            |key: &str| -> Vec<&str> { unit.lines().filter_map(|l| l.strip_prefix(key)).collect() };
        let exec = value("ExecStart=");
        assert_eq!(exec.len(), 1, "one ExecStart line");
        let argv: Vec<&str> = exec[0].split_whitespace().collect();
        assert!(argv[0].ends_with("/ulvsd"), "{argv:?}");
        if let Err(e) = Args::try_parse_from(&argv) {
            panic!("ExecStart of ulvsd.service does not parse: {e}");
        }
        for key in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
            let caps = value(key);
            assert_eq!(caps.len(), 1, "{key}");
            let caps: Vec<&str> = caps[0].split_whitespace().collect();
            assert_eq!(caps, ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF"], "{key}");
        }
    }

    #[test]
    fn defaults() {
        let a = Args::try_parse_from(["ulvsd"]).unwrap();
        assert_eq!(a.tun, "ulvs0");
        assert_eq!(a.queues, None);
        assert_eq!(a.steering, SteeringArg::Flow);
        assert_eq!(a.route_table, 0x75);
        assert_eq!(a.rule_priority, 100);
        assert!(!a.configure_sysctls);
        assert_eq!(a.log_format, LogFormat::Text);
    }

    #[test]
    fn tcp_listener_needs_tls() {
        let e = Args::try_parse_from(["ulvsd", "--listen", "127.0.0.1:7443"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = Args::try_parse_from(["ulvsd", "--tls-cert", "c.pem"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let a = Args::try_parse_from([
            "ulvsd",
            "--listen",
            "127.0.0.1:7443",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .unwrap();
        let err = a.tcp().unwrap_err().to_string();
        assert!(err.starts_with("--tls-cert /nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Args::try_parse_from(["ulvsd", "--queues", "0"]).is_err());
        assert!(Args::try_parse_from(["ulvsd", "--queues", "65"]).is_err());
        assert_eq!(
            Args::try_parse_from(["ulvsd", "--queues", "3"])
                .unwrap()
                .queues,
            Some(3)
        );
        assert!(Args::try_parse_from(["ulvsd", "--route-table", "0"]).is_err());
        assert!(Args::try_parse_from(["ulvsd", "--log-format", "xml"]).is_err());
        assert!(Args::try_parse_from(["ulvsd", "--tap", "t0"]).is_err());
        assert!(Args::try_parse_from(["ulvsd", "--bridge", "br0"]).is_err());
        let two_v4 = Args::try_parse_from([
            "ulvsd",
            "--tunnel-source",
            "198.18.1.1",
            "--tunnel-source",
            "198.18.1.2",
        ])
        .unwrap();
        assert!(director_settings(&two_v4).is_err());
        let both = Args::try_parse_from([
            "ulvsd",
            "--tunnel-source",
            "198.18.1.1",
            "--tunnel-source",
            "fd00:1b5::1",
        ])
        .unwrap();
        let tap = [0x02, 1, 2, 3, 4, 5];
        let m = station_mac(tap);
        assert!(m != tap && m[0] & 1 == 0 && m[0] & 2 == 2, "{m:?}");
        let d = director_settings(&both).unwrap();
        assert_eq!(d.tunnel_source_v4, Some("198.18.1.1".parse().unwrap()));
        assert_eq!(d.tunnel_source_v6, Some("fd00:1b5::1".parse().unwrap()));
    }
}
