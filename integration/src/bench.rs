//! The side-by-side benchmark (`cargo xtask bench`): one rig of namespaces, the same workloads
//! through plain kernel forwarding, ulvs NAT, ulvs FULLNAT, ulvs direct routing and HAProxy
//! `mode tcp`, medians of interleaved runs.
//!
//! ```text
//!  client ns                 director ns                          real-server ns (three)
//!  eth0 198.18.0.2/24 ---- cl0 198.18.0.1/24  (HAProxy binds here)
//!  default via .0.1          br0 198.18.1.1/24 ---+-- rs1 ------- eth0 198.18.1.11/24
//!                            ulvs0 (TUN, ulvsd)   +-- rs2 ------- eth0 198.18.1.12/24
//!                            ulvst0 (TAP on br0)  +-- rs3 ------- eth0 198.18.1.13/24
//!                            VIPs 198.18.100.1-3                  lo: 198.18.100.3/32 (DR VIP)
//!                            laddrs 198.18.2.1-4 (FULLNAT)        default via 198.18.1.1
//! ```
//!
//! Every real server runs `iperf3 -s` (TCP/UDP 5201), nginx (8080, a 3-byte answer) and the
//! bench's own idle-connection server (9000), on its own address and on the DR VIP. The targets:
//! - kernel: the client talks to rs1 directly (on ports ulvs does not balance, so its replies are
//!   not steered into the TUN); the director only routes (the ceiling of the path);
//! - ulvs NAT (VIP .100.1), FULLNAT (VIP .100.2, local addresses 198.18.2.1-4, set with
//!   `ulvsadm -P ... -z` as in the FULLNAT tests) and DR (VIP .100.3, `-g`): one `ulvsd` with a
//!   TUN and a TAP on the bridge (as [`crate::dr::DrRig`]); the client reaches every VIP through
//!   the director's routes into the TUN, and DR frames leave through the TAP to the real
//!   servers, which hold the DR VIP on `lo` ([`crate::dr::hold_vip_on_lo`]) and answer the
//!   client through the director's plain kernel forwarding. iperf3 goes to rs1 only (its
//!   control and data connections must meet), HTTP and idle connections are spread round-robin
//!   over the three servers;
//! - HAProxy `mode tcp` in the director, bound to 198.18.0.1, with the same backends (no UDP).
//!
//! Workloads, each bounded in time or count: one TCP stream and four streams (iperf3), short
//! connections (wrk, `Connection: close`, 64 at a time, with latency percentiles), 64-byte UDP
//! (iperf3 at a fixed offered rate, received packets per second), and 10,000 idle connections
//! held by [`idle_client`] (ulvsd and HAProxy are restarted before it, so the memory they gain is
//! the cost of the connections).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::{Netns, veth};
use crate::process::Spawned;
use crate::{run_cmd, wait_until};

const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const DIRECTOR_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DIRECTOR_RS_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const FULLNAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
const DR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 3);
/// FULLNAT local addresses: on no link; ulvsd routes them into its TUN and the real servers
/// reach them through their default route. Four of them, so the short-connection workload does
/// not reuse a local port towards a server that still holds it in TIME_WAIT.
const LADDRS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(198, 18, 2, 1),
    Ipv4Addr::new(198, 18, 2, 2),
    Ipv4Addr::new(198, 18, 2, 3),
    Ipv4Addr::new(198, 18, 2, 4),
];
const IPERF_PORT: u16 = 5201;
const HTTP_PORT: u16 = 8080;
const IDLE_PORT: u16 = 9000;
const SERVERS: u8 = 3;
const READY: Duration = Duration::from_secs(30);
/// HAProxy needs two descriptors per proxied connection; with the open-file limit of 20,000
/// these machines allow, it cannot hold more than about 9,900.
const HAPROXY_MAXCONN: usize = 9_700;
/// Idle connections held through HAProxy (the rest of the bench uses `idle_conns`).
const HAPROXY_IDLE: usize = 9_000;

/// Bench settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Directory holding release builds of `ulvsd` and `ulvsadm`.
    pub bin_dir: PathBuf,
    /// This program (for the idle-connection server and client).
    pub self_exe: PathBuf,
    /// Runs of each workload per target.
    pub runs: usize,
    /// Seconds per timed workload.
    pub seconds: u32,
    /// Idle connections to hold.
    pub idle_conns: usize,
    /// Offered rate of the 64-byte UDP workload, packets per second.
    pub udp_pps: u64,
    /// Extra arguments for ulvsd (for example `--queues 2`).
    pub ulvsd_args: Vec<String>,
    /// Workloads to run (all when empty).
    pub workloads: Vec<Workload>,
    /// Targets to measure (all when empty).
    pub targets: Vec<Target>,
}

/// Which path a measurement goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Plain kernel forwarding in the director.
    Kernel,
    /// ulvs NAT.
    UlvsNat,
    /// ulvs FULLNAT (source rewritten to a local address).
    UlvsFullnat,
    /// ulvs direct routing (frames to the real servers through the TAP).
    UlvsDr,
    /// HAProxy `mode tcp` in the director.
    Haproxy,
}

impl Target {
    const ALL: [Target; 5] = [
        Target::Kernel,
        Target::UlvsNat,
        Target::UlvsFullnat,
        Target::UlvsDr,
        Target::Haproxy,
    ];
    const ULVS: [Target; 3] = [Target::UlvsNat, Target::UlvsFullnat, Target::UlvsDr];

    fn name(self) -> &'static str {
        match self {
            Target::Kernel => "kernel",
            Target::UlvsNat => "ulvs NAT",
            Target::UlvsFullnat => "ulvs FULLNAT",
            Target::UlvsDr => "ulvs DR",
            Target::Haproxy => "HAProxy",
        }
    }

    /// The short name of `--target`.
    pub fn key(self) -> &'static str {
        match self {
            Target::Kernel => "kernel",
            Target::UlvsNat => "nat",
            Target::UlvsFullnat => "fullnat",
            Target::UlvsDr => "dr",
            Target::Haproxy => "haproxy",
        }
    }

    /// The target of a short name (`kernel`, `nat`, `fullnat`, `dr`, `haproxy`).
    pub fn from_key(key: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.key() == key)
    }

    fn is_ulvs(self) -> bool {
        Target::ULVS.contains(&self)
    }

    /// Where the client connects for `port` (a real-server port). The kernel target uses the
    /// port above it on rs1, where the same servers listen too: ulvsd steers replies from the
    /// real-server ports it balances into its TUN (`from RS iif br0 sport PORT` rules), and a
    /// direct connection there would not be plain kernel forwarding (and would meet ulvs's
    /// conntrack entries of the same client ports).
    fn addr(self, port: u16) -> SocketAddr {
        match self {
            Target::Kernel => SocketAddr::from((server_addr(1), port + 1)),
            Target::UlvsNat => SocketAddr::from((VIP, port)),
            Target::UlvsFullnat => SocketAddr::from((FULLNAT_VIP, port)),
            Target::UlvsDr => SocketAddr::from((DR_VIP, port)),
            Target::Haproxy => SocketAddr::from((DIRECTOR_CLIENT_ADDR, port)),
        }
    }
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// One iperf3 TCP stream, Gb/s.
    Tcp1,
    /// Four iperf3 TCP streams, Gb/s.
    Tcp4,
    /// Short connections per second (wrk, `Connection: close`).
    ShortConns,
    /// 64-byte UDP, received packets per second.
    Udp64,
    /// Idle connections: memory the balancer gained holding them, MB.
    Idle,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::Tcp1,
        Workload::Tcp4,
        Workload::ShortConns,
        Workload::Udp64,
        Workload::Idle,
    ];

    /// The short name of `--workload`.
    pub fn key(self) -> &'static str {
        match self {
            Workload::Tcp1 => "tcp1",
            Workload::Tcp4 => "tcp4",
            Workload::ShortConns => "short",
            Workload::Udp64 => "udp64",
            Workload::Idle => "idle",
        }
    }

    /// The workload of a short name (`tcp1`, `tcp4`, `short`, `udp64`, `idle`).
    pub fn from_key(key: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.key() == key)
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Tcp1 => "1 TCP stream (Gb/s)",
            Workload::Tcp4 => "4 TCP streams (Gb/s)",
            Workload::ShortConns => "short conns/s (wrk)",
            Workload::Udp64 => "64 B UDP (kpps recv)",
            Workload::Idle => "idle conns: +MB per 10k",
        }
    }

    /// The unit of work whose whole-machine CPU cost the report gives, and how many of them
    /// one unit of the workload's value is per second (`None`: no cost row).
    fn cost_unit(self) -> Option<(&'static str, f64)> {
        match self {
            // Gb/s: a gigabit per second of run.
            Workload::Tcp1 | Workload::Tcp4 => Some(("ms per Gbit", 1e-3)),
            Workload::ShortConns => Some(("us per connection", 1e-6)),
            // kpps: a thousand packets per second of run.
            Workload::Udp64 => Some(("us per packet", 1e-3)),
            Workload::Idle => None,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Default)]
struct Sample {
    value: f64,
    /// Extra facts (latency percentiles, loss, errors).
    note: String,
    /// ulvsd CPU seconds during the workload (ulvs targets only).
    ulvsd_cpu: Option<f64>,
    /// Busy CPU seconds of the whole machine during the workload (every process, the kernel's
    /// softirq work included; idle, iowait and steal time left out).
    machine_cpu: Option<f64>,
}

/// The rig; dropping it stops every process and removes every namespace.
#[derive(Debug)]
pub struct BenchRig {
    // Field order is drop order: processes before their namespaces.
    ulvsd: Option<Spawned>,
    haproxy: Option<Spawned>,
    procs: Vec<Spawned>,
    /// The iperf3 servers (restarted after a failed run) and where they listen.
    iperf: Vec<Spawned>,
    iperf_at: Vec<(usize, Ipv4Addr, u16)>,
    client: Netns,
    director: Netns,
    servers: Vec<Netns>,
    opts: BenchOptions,
    dir: tempfile::TempDir,
}

impl BenchRig {
    /// Builds the namespaces and starts the servers, ulvsd (with its services) and HAProxy.
    pub fn new(opts: BenchOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "{}{}-bench-",
                crate::cleanup::TEMP_DIR_PREFIX,
                std::process::id()
            ))
            .tempdir()
            .context("create bench temp dir")?;
        let client = Netns::new("bclient")?;
        let director = Netns::new("bdirector")?;
        veth(&client, "eth0", &director, "cl0")?;
        client.add_addr("eth0", CLIENT_ADDR, 24)?;
        client.default_route(DIRECTOR_CLIENT_ADDR)?;
        // Many short connections from one address: use the whole port range, reuse TIME_WAIT.
        client.sysctl("net/ipv4/ip_local_port_range", "1024 65000")?;
        client.sysctl("net/ipv4/tcp_tw_reuse", "1")?;
        director.add_addr("cl0", DIRECTOR_CLIENT_ADDR, 24)?;
        director.add_bridge("br0")?;
        director.add_addr("br0", DIRECTOR_RS_ADDR, 24)?;
        director.sysctl("net/ipv4/ip_forward", "1")?;
        // DR replies come from the DR VIP (routed into the TUN) over br0: no reverse-path check.
        director.sysctl("net/ipv4/conf/all/rp_filter", "0")?;
        director.sysctl("net/ipv4/conf/br0/rp_filter", "0")?;
        let mut servers = Vec::new();
        for i in 1..=SERVERS {
            let name = format!("brs{i}");
            let ns = Netns::new(&name)?;
            veth(&ns, "eth0", &director, &format!("rs{i}"))?;
            director.enslave(&format!("rs{i}"), "br0")?;
            ns.add_addr("eth0", server_addr(i), 24)?;
            ns.default_route(DIRECTOR_RS_ADDR)?;
            ns.sysctl("net/core/somaxconn", "8192")?;
            crate::dr::hold_vip_on_lo(&ns, "eth0", DR_VIP)?;
            servers.push(ns);
        }
        let mut rig = BenchRig {
            ulvsd: None,
            haproxy: None,
            procs: Vec::new(),
            iperf: Vec::new(),
            iperf_at: Vec::new(),
            client,
            director,
            servers,
            opts,
            dir,
        };
        rig.start_servers()?;
        rig.start_ulvsd()?;
        rig.start_haproxy()?;
        Ok(rig)
    }

    /// (Re)starts every iperf3 server. After a run fails, the server may be stuck in the
    /// failed test (iperf3 serves one test at a time), so the retry gets fresh ones.
    fn start_iperf(&mut self) -> Result<()> {
        for mut old in self.iperf.drain(..) {
            old.terminate(Duration::from_secs(5))?;
        }
        for &(i, a, port) in &self.iperf_at {
            let mut iperf = self.servers[i].command("iperf3");
            iperf.args(["-s", "-p", &port.to_string(), "-B", &a.to_string()]);
            let label = format!("iperf3-rs{}-{a}-{port}", i + 1);
            self.iperf
                .push(Spawned::start(&label, iperf, self.dir.path())?);
        }
        // Each listens on an address of its own namespace: check from there.
        for &(i, a, port) in &self.iperf_at {
            let a = SocketAddr::from((a, port));
            let ns = &self.servers[i];
            wait_until(&format!("iperf3 on {a}"), READY, || {
                for p in &mut self.iperf {
                    p.check_running()?;
                }
                ns.run(move || TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
            })?;
        }
        Ok(())
    }

    fn start_servers(&mut self) -> Result<()> {
        for (i, ns) in self.servers.iter().enumerate() {
            let n = i + 1;
            let addr = server_addr(n as u8);
            // rs1 also serves the kernel target on the ports above the balanced ones; every
            // server also listens on the DR VIP (its `lo`) at the balanced ports.
            let extra = if n == 1 { 2 } else { 1 };
            let mut iperf_at = (0..extra)
                .map(|k| (addr, IPERF_PORT + k))
                .collect::<Vec<_>>();
            iperf_at.push((DR_VIP, IPERF_PORT));
            for (a, port) in iperf_at {
                self.iperf_at.push((i, a, port));
            }
            let conf = self.dir.path().join(format!("nginx-rs{n}.conf"));
            std::fs::write(&conf, nginx_conf(self.dir.path(), n, addr))
                .context("write nginx config")?;
            let mut nginx = ns.command("nginx");
            nginx
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(self.dir.path())
                .arg("-e")
                .arg(self.dir.path().join(format!("nginx-rs{n}.early.log")));
            self.procs.push(Spawned::start(
                &format!("nginx-rs{n}"),
                nginx,
                self.dir.path(),
            )?);
            let mut idle_at = (0..extra)
                .map(|k| (addr, IDLE_PORT + k))
                .collect::<Vec<_>>();
            idle_at.push((DR_VIP, IDLE_PORT));
            for (a, port) in idle_at {
                let mut idle = ns.command(&self.opts.self_exe);
                idle.args(["idle-server", "--listen", &format!("{a}:{port}")]);
                let label = format!("idle-rs{n}-{a}-{port}");
                let mut p = Spawned::start(&label, idle, self.dir.path())?;
                p.wait_for_output("listening", READY)?;
                self.procs.push(p);
            }
        }
        self.start_iperf()?;
        // The DR VIP is local to each server: check its listeners from inside.
        for n in 1..=SERVERS {
            let rs = &self.servers[usize::from(n) - 1];
            let checks = [IPERF_PORT, HTTP_PORT, HTTP_PORT + 1]
                .map(|p| (&self.client, SocketAddr::from((server_addr(n), p))))
                .into_iter()
                .chain([IPERF_PORT, HTTP_PORT].map(|p| (rs, SocketAddr::from((DR_VIP, p)))));
            for (ns, a) in checks {
                wait_until(&format!("{a} to listen in {}", ns.name()), READY, || {
                    for p in &mut self.procs {
                        p.check_running()?;
                    }
                    ns.run(move || {
                        TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
                    })
                })?;
            }
        }
        Ok(())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("ulvsd.sock")
    }

    fn ulvsadm(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(self.opts.bin_dir.join("ulvsadm"));
        cmd.env("ULVS_SOCKET", self.socket()).args(args);
        run_cmd(&mut cmd)
    }

    /// (Re)starts ulvsd and configures the bench services.
    fn start_ulvsd(&mut self) -> Result<()> {
        if let Some(mut old) = self.ulvsd.take() {
            old.terminate(Duration::from_secs(10))?;
        }
        let sock = self.socket();
        let mut cmd = self.director.command(self.opts.bin_dir.join("ulvsd"));
        cmd.arg("--socket")
            .arg(&sock)
            .args(["--configure-sysctls", "--log-level", "warn"])
            // No --arp-source: ARP requests from the director's own address but ulvsd's
            // station MAC would teach the real servers that MAC for their gateway, and their
            // replies to the client (routed through the director) would go to the TAP.
            // Requests from 0.0.0.0 (probes) are answered without touching their neighbour table.
            .args(["--tap", crate::dr::TAP_NAME, "--bridge", "br0"])
            .args(&self.opts.ulvsd_args);
        let mut p = Spawned::start("ulvsd", cmd, self.dir.path())?;
        wait_until("ulvsd's control socket", READY, || {
            p.check_running()?;
            Ok(self.ulvsadm(&["-L", "-n"]).is_ok())
        })
        .with_context(|| p.logs())?;
        self.ulvsd = Some(p);
        for t in Target::ULVS {
            self.configure(t)?;
        }
        for t in Target::ULVS {
            // The first DR packets wait for ARP; the probes repeat until the VIP answers.
            let a = t.addr(HTTP_PORT);
            wait_until(&format!("{} to answer at {a}", t.name()), READY, || {
                self.client
                    .run(move || TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
            })
            .with_context(|| self.ulvsd.as_ref().map(|p| p.logs()).unwrap_or_default())?;
        }
        Ok(())
    }

    /// Configures the services of one ulvs target: iperf3 (TCP and UDP) to rs1, HTTP and idle
    /// connections round-robin over every server.
    fn configure(&self, t: Target) -> Result<()> {
        let (method, port_mapped) = match t {
            Target::UlvsNat => ("-m", true),
            Target::UlvsFullnat => ("--fullnat", true),
            Target::UlvsDr => ("-g", false),
            Target::Kernel | Target::Haproxy => bail!("{} is not a ulvs target", t.name()),
        };
        let rs = |n: u8, port: u16| {
            if port_mapped {
                format!("{}:{port}", server_addr(n))
            } else {
                server_addr(n).to_string()
            }
        };
        let services = [
            ("-t", IPERF_PORT, 1),
            ("-u", IPERF_PORT, 1),
            ("-t", HTTP_PORT, SERVERS),
            ("-t", IDLE_PORT, SERVERS),
        ];
        for (proto, port, servers) in services {
            let vip = t.addr(port).to_string();
            self.ulvsadm(&["-A", proto, &vip, "-s", "rr"])?;
            if t == Target::UlvsFullnat {
                for l in LADDRS {
                    self.ulvsadm(&["-P", proto, &vip, "-z", &l.to_string()])?;
                }
            }
            for n in 1..=servers {
                self.ulvsadm(&["-a", proto, &vip, "-r", &rs(n, port), method])?;
            }
        }
        Ok(())
    }

    /// (Re)starts HAProxy.
    fn start_haproxy(&mut self) -> Result<()> {
        if let Some(mut old) = self.haproxy.take() {
            old.terminate(Duration::from_secs(10))?;
        }
        let conf = self.dir.path().join("haproxy.cfg");
        std::fs::write(&conf, haproxy_conf()).context("write haproxy config")?;
        let mut cmd = self.director.command("haproxy");
        cmd.arg("-db").arg("-f").arg(&conf);
        let mut p = Spawned::start("haproxy", cmd, self.dir.path())?;
        let a = Target::Haproxy.addr(HTTP_PORT);
        wait_until("HAProxy to listen", READY, || {
            p.check_running()?;
            self.client
                .run(move || TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
        })
        .with_context(|| p.logs())?;
        self.haproxy = Some(p);
        Ok(())
    }

    fn ulvsd_pid(&self) -> Option<u32> {
        self.ulvsd.as_ref().map(Spawned::pid)
    }

    /// Runs every workload `runs` times through every target, interleaved, and returns the
    /// report.
    pub fn run_all(&mut self) -> Result<Report> {
        let mut samples: BTreeMap<(Workload, Target), Vec<Sample>> = BTreeMap::new();
        let mut failures = Vec::new();
        let pick = |want: &[Target]| -> Vec<Target> {
            Target::ALL
                .into_iter()
                .filter(|t| want.is_empty() || want.contains(t))
                .collect()
        };
        let targets = pick(&self.opts.targets);
        let workloads: Vec<Workload> = Workload::ALL
            .into_iter()
            .filter(|w| self.opts.workloads.is_empty() || self.opts.workloads.contains(w))
            .collect();
        for run in 0..self.opts.runs {
            for &w in &workloads {
                for k in 0..targets.len() {
                    // Rotate the order per run, so no target always goes first.
                    let t = targets[(k + run) % targets.len()];
                    let what = format!("run {} of {} through {}", run + 1, w.name(), t.name());
                    // One retry: a run that fails twice is reported, not fatal.
                    let s = match self.measure(w, t) {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("{what} failed, retrying with fresh iperf3 servers: {e:#}");
                            let retried = self.start_iperf();
                            match retried.and_then(|()| self.measure(w, t)) {
                                Ok(s) => s,
                                Err(e) => {
                                    eprintln!("{what} failed again: {e:#}");
                                    failures.push(format!("{what}: {e:#}"));
                                    None
                                }
                            }
                        }
                    };
                    if let Some(s) = s {
                        eprintln!(
                            "run {}: {:<22} {:<12} {:>10.3} {}",
                            run + 1,
                            w.name(),
                            t.name(),
                            s.value,
                            s.note
                        );
                        samples.entry((w, t)).or_default().push(s);
                    }
                }
            }
        }
        let peak_rss_kb = self
            .ulvsd_pid()
            .and_then(|p| proc_status_kb(p, "VmHWM:"))
            .unwrap_or(0);
        Ok(Report {
            failures,
            samples,
            peak_rss_kb,
            idle_conns: self.opts.idle_conns,
            seconds: f64::from(self.opts.seconds),
        })
    }

    fn measure(&mut self, w: Workload, t: Target) -> Result<Option<Sample>> {
        if w == Workload::Udp64 && t == Target::Haproxy {
            return Ok(None);
        }
        if w == Workload::Idle {
            return self.idle(t).map(Some);
        }
        let cpu0 = self.ulvsd_pid().and_then(cpu_seconds);
        let busy0 = machine_busy_seconds();
        let mut s = match w {
            Workload::Tcp1 => self.iperf_tcp(t, 1)?,
            Workload::Tcp4 => self.iperf_tcp(t, 4)?,
            Workload::ShortConns => self.wrk(t)?,
            Workload::Udp64 => self.iperf_udp(t)?,
            Workload::Idle => unreachable!("handled above"),
        };
        s.machine_cpu = busy0.zip(machine_busy_seconds()).map(|(a, b)| b - a);
        if t.is_ulvs() {
            let cpu1 = self.ulvsd_pid().and_then(cpu_seconds);
            s.ulvsd_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
        }
        Ok(Some(s))
    }

    fn iperf_tcp(&self, t: Target, streams: u32) -> Result<Sample> {
        let a = t.addr(IPERF_PORT);
        let out = run_cmd(self.client.command("iperf3").args([
            "-c",
            &a.ip().to_string(),
            "-p",
            &a.port().to_string(),
            "-t",
            &self.opts.seconds.to_string(),
            "-P",
            &streams.to_string(),
            "-J",
            "--connect-timeout",
            "5000",
        ]))?;
        let bps =
            json_number(&out, &["end", "sum_received", "bits_per_second"]).with_context(|| {
                format!(
                    "no end.sum_received.bits_per_second; iperf3 said: {}",
                    iperf_error(&out)
                )
            })?;
        let retr = json_number(&out, &["end", "sum_sent", "retransmits"]).unwrap_or(0.0);
        Ok(Sample {
            value: bps / 1e9,
            note: format!("retransmits {retr}"),
            ulvsd_cpu: None,
            machine_cpu: None,
        })
    }

    fn iperf_udp(&self, t: Target) -> Result<Sample> {
        let a = t.addr(IPERF_PORT);
        let bits = self.opts.udp_pps * 64 * 8;
        let before = self.udp_drops();
        let out = run_cmd(self.client.command("iperf3").args([
            "-c",
            &a.ip().to_string(),
            "-p",
            &a.port().to_string(),
            "-u",
            "-l",
            "64",
            "-b",
            &bits.to_string(),
            "-t",
            &self.opts.seconds.to_string(),
            "-J",
            "--connect-timeout",
            "5000",
        ]))?;
        let packets = json_number(&out, &["end", "sum", "packets"])
            .with_context(|| format!("no end.sum.packets; iperf3 said: {}", iperf_error(&out)))?;
        let lost = json_number(&out, &["end", "sum", "lost_packets"]).unwrap_or(0.0);
        let secs = json_number(&out, &["end", "sum", "seconds"]).unwrap_or(1.0);
        let after = self.udp_drops();
        let (rcvbuf, tun) = (
            after.0.saturating_sub(before.0),
            after.1.saturating_sub(before.1),
        );
        Ok(Sample {
            value: (packets - lost) / secs / 1e3,
            note: format!(
                "sent {:.0} kpps, loss {:.1}% (dropped: {rcvbuf} by rs1's socket buffer, \
                 {tun} in the TUN queue)",
                packets / secs / 1e3,
                100.0 * lost / packets.max(1.0)
            ),
            ulvsd_cpu: None,
            machine_cpu: None,
        })
    }

    /// Where 64-byte UDP is lost: datagrams rs1's sockets dropped for a full receive buffer
    /// (`Udp: RcvbufErrors`), and packets the TUN device dropped because ulvsd did not read
    /// them fast enough (its `tx_dropped`). Zeros where a counter cannot be read.
    fn udp_drops(&self) -> (u64, u64) {
        let rcvbuf = run_cmd(self.servers[0].command("cat").arg("/proc/net/snmp"))
            .ok()
            .and_then(|snmp| snmp_field(&snmp, "Udp:", "RcvbufErrors"))
            .unwrap_or(0);
        let tun = self
            .director
            .ip(&["-s", "-j", "link", "show", "dev", "ulvs0"])
            .ok()
            .and_then(|j| {
                let v: serde_json::Value = serde_json::from_str(&j).ok()?;
                v.get(0)?
                    .get("stats64")?
                    .get("tx")?
                    .get("dropped")?
                    .as_u64()
            })
            .unwrap_or(0);
        (rcvbuf, tun)
    }

    fn wrk(&self, t: Target) -> Result<Sample> {
        let a = t.addr(HTTP_PORT);
        let out = run_cmd(self.client.command("wrk").args([
            "-t2",
            "-c64",
            &format!("-d{}s", self.opts.seconds),
            "--timeout",
            "2s",
            "--latency",
            "-H",
            "Connection: close",
            &format!("http://{a}/"),
        ]))?;
        parse_wrk(&out)
    }

    /// Restarts the balancer, holds `idle_conns` connections (each with one request answered),
    /// and reports the balancer's resident memory gain.
    fn idle(&mut self, t: Target) -> Result<Sample> {
        let pid = match t {
            Target::UlvsNat | Target::UlvsFullnat | Target::UlvsDr => {
                self.start_ulvsd()?;
                self.ulvsd_pid()
            }
            Target::Haproxy => {
                self.start_haproxy()?;
                self.haproxy.as_ref().map(Spawned::pid)
            }
            Target::Kernel => None,
        };
        // Let start-up allocations settle before the baseline.
        std::thread::sleep(Duration::from_millis(300));
        let before = pid.and_then(|p| proc_status_kb(p, "VmRSS:")).unwrap_or(0);
        let a = t.addr(IDLE_PORT);
        let want = match t {
            Target::Haproxy => self.opts.idle_conns.min(HAPROXY_IDLE),
            _ => self.opts.idle_conns,
        };
        let mut child = self
            .client
            .command(&self.opts.self_exe)
            .args([
                "idle-client",
                "--target",
                &a.to_string(),
                "--count",
                &want.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start idle client")?;
        let started = Instant::now();
        let stdout = child.stdout.take().context("idle client stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(120));
        let held_for = started.elapsed();
        let after = pid.and_then(|p| proc_status_kb(p, "VmRSS:")).unwrap_or(0);
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait()?.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let line = line.map_err(|_| anyhow::anyhow!("idle client did not report: {err}"))?;
        let held: usize = line
            .trim()
            .strip_prefix("held ")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("idle client said {line:?}; stderr: {err}"))?;
        ensure!(held == want, "held {held} of {want} connections: {err}");
        let gained_mb = (after.saturating_sub(before)) as f64 / 1024.0;
        Ok(Sample {
            // Per 10,000 connections, so HAProxy's smaller count compares.
            value: gained_mb * 10_000.0 / held.max(1) as f64,
            note: format!(
                "{held} conns: rss {:.1} -> {:.1} MB, opened in {:.1?}",
                before as f64 / 1024.0,
                after as f64 / 1024.0,
                held_for
            ),
            ulvsd_cpu: None,
            machine_cpu: None,
        })
    }
}

fn server_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10 + n)
}

fn nginx_conf(dir: &Path, n: usize, addr: Ipv4Addr) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\n\
         daemon off;\n\
         pid {d}/nginx-rs{n}.pid;\n\
         error_log {d}/nginx-rs{n}.error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/nginx-rs{n}-body;\n\
           proxy_temp_path {d}/nginx-rs{n}-proxy;\n\
           fastcgi_temp_path {d}/nginx-rs{n}-fcgi;\n\
           uwsgi_temp_path {d}/nginx-rs{n}-uwsgi;\n\
           scgi_temp_path {d}/nginx-rs{n}-scgi;\n\
           server {{ listen {addr}:{HTTP_PORT} backlog=4096 reuseport; \
                     listen {addr}:{kernel_port} backlog=4096 reuseport; \
                     listen {DR_VIP}:{HTTP_PORT} backlog=4096 reuseport; \
                     location / {{ return 200 \"ok\\n\"; }} }}\n\
         }}\n",
        kernel_port = HTTP_PORT + 1
    )
}

fn haproxy_conf() -> String {
    let servers = |port: u16| -> String {
        (1..=SERVERS)
            .map(|n| format!("  server rs{n} {}:{port}\n", server_addr(n)))
            .collect()
    };
    format!(
        "global\n  maxconn {HAPROXY_MAXCONN}\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n\
         frontend iperf\n  bind {DIRECTOR_CLIENT_ADDR}:{IPERF_PORT}\n  default_backend iperf\n\
         backend iperf\n  server rs1 {}:{IPERF_PORT}\n\
         frontend web\n  bind {DIRECTOR_CLIENT_ADDR}:{HTTP_PORT}\n  default_backend web\n\
         backend web\n  balance roundrobin\n{}\
         frontend idle\n  bind {DIRECTOR_CLIENT_ADDR}:{IDLE_PORT}\n  default_backend idle\n\
         backend idle\n  balance roundrobin\n{}",
        server_addr(1),
        servers(HTTP_PORT),
        servers(IDLE_PORT)
    )
}

/// A counter of `/proc/net/snmp` (a header line and a value line per protocol, both starting
/// with `proto`).
fn snmp_field(snmp: &str, proto: &str, field: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with(proto));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The `error` of iperf3's JSON output (or the start of the output when it has none).
fn iperf_error(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| json.chars().take(200).collect())
}

/// Reads a number from iperf3's JSON output by key path.
fn json_number(json: &str, path: &[&str]) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    path.iter().try_fold(&v, |v, k| v.get(k))?.as_f64()
}

/// A wrk latency like `1.23ms`, `850.00us` or `2.01s`, in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

fn parse_wrk(out: &str) -> Result<Sample> {
    let mut rps = None;
    let mut pct = BTreeMap::new();
    let mut errors = String::new();
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            errors = format!(", socket errors:{v}");
        } else if let Some((p, v)) = l.split_once('%')
            && let (Ok(p), Some(ms)) = (p.trim().parse::<u32>(), wrk_ms(v.trim()))
        {
            pct.insert(p, ms);
        }
    }
    let Some(rps) = rps else {
        bail!("no Requests/sec in wrk output:\n{out}")
    };
    let p = |k: u32| pct.get(&k).map_or("?".to_owned(), |v| format!("{v:.2}"));
    Ok(Sample {
        value: rps,
        note: format!("p50 {} ms, p99 {} ms{errors}", p(50), p(99)),
        ulvsd_cpu: None,
        machine_cpu: None,
    })
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = &stat[stat.rfind(") ")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

/// Busy CPU seconds of the whole machine since boot, from the `cpu` line of /proc/stat.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(busy_ticks(&stat)? as f64 / hz.max(1.0))
}

/// user + nice + system + irq + softirq of the `cpu` line of /proc/stat, in clock ticks (idle,
/// iowait and steal are not work done here; guest time is already inside user).
fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let get = |i: usize| f.get(i).copied();
    // user nice system idle iowait irq softirq steal ...
    Some(get(0)? + get(1)? + get(2)? + get(5)? + get(6)?)
}

/// A `kB` line of /proc/PID/status (for example `VmRSS:`).
fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Medians and ratios of a finished bench.
#[derive(Debug)]
pub struct Report {
    /// Runs that failed twice.
    failures: Vec<String>,
    samples: BTreeMap<(Workload, Target), Vec<Sample>>,
    peak_rss_kb: u64,
    idle_conns: usize,
    /// Seconds per timed run.
    seconds: f64,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

impl Report {
    fn median(&self, w: Workload, t: Target) -> Option<f64> {
        median(self.samples.get(&(w, t))?.iter().map(|s| s.value).collect())
    }

    fn median_note(&self, w: Workload, t: Target) -> Option<String> {
        let s = self.samples.get(&(w, t))?;
        let mut v: Vec<&Sample> = s.iter().collect();
        v.sort_by(|a, b| a.value.total_cmp(&b.value));
        Some(v[v.len() / 2].note.clone())
    }

    /// Smallest and largest value of the runs.
    fn spread(&self, w: Workload, t: Target) -> Option<(f64, f64)> {
        let v = self.samples.get(&(w, t))?;
        let lo = v.iter().map(|s| s.value).fold(f64::INFINITY, f64::min);
        let hi = v.iter().map(|s| s.value).fold(f64::NEG_INFINITY, f64::max);
        (!v.is_empty()).then_some((lo, hi))
    }

    /// Median ulvsd CPU seconds of a ulvs target's runs of a workload.
    fn cpu(&self, w: Workload, t: Target) -> Option<f64> {
        median(
            self.samples
                .get(&(w, t))?
                .iter()
                .filter_map(|s| s.ulvsd_cpu)
                .collect(),
        )
    }

    /// Median whole-machine CPU cost of one unit of work (see [`Workload::cost_unit`]): busy
    /// CPU seconds of the run divided by the work it did. When every target keeps the cores
    /// busy, this is what decides who gets more done.
    fn cost(&self, w: Workload, t: Target, seconds: f64) -> Option<f64> {
        let (_, per) = w.cost_unit()?;
        median(
            self.samples
                .get(&(w, t))?
                .iter()
                .filter(|s| s.value > 0.0)
                .filter_map(|s| Some(s.machine_cpu? / (s.value * seconds) / per))
                .collect(),
        )
    }

    /// The results as Markdown tables plus notes: medians with the ratio to kernel forwarding,
    /// ratios to HAProxy, the spread of the runs, and ulvsd's CPU time.
    pub fn markdown(&self) -> String {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_owned(),
        };
        let row = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
        let header = |first: &str, targets: &[Target]| {
            let mut h = row(std::iter::once(first.to_owned())
                .chain(targets.iter().map(|t| t.name().to_owned()))
                .collect());
            h.push_str(&row(vec!["---".to_owned(); targets.len() + 1]));
            h
        };
        let mut out = String::from("Medians (ratio to kernel forwarding in brackets):\n\n");
        out.push_str(&header("workload", &Target::ALL));
        for w in Workload::ALL {
            let kernel = self.median(w, Target::Kernel);
            let mut cells = vec![if w == Workload::Idle {
                format!(
                    "{} ({} conns; HAProxy {})",
                    w.name(),
                    self.idle_conns,
                    HAPROXY_IDLE.min(self.idle_conns)
                )
            } else {
                w.name().to_owned()
            }];
            for t in Target::ALL {
                let m = self.median(w, t);
                cells.push(match (m, t) {
                    (None, _) => "-".to_owned(),
                    (Some(m), Target::Kernel) => format!("{m:.2}"),
                    (Some(m), _) if w == Workload::Idle => format!("{m:.2}"),
                    (Some(m), _) => format!("{m:.2} ({})", ratio(Some(m), kernel)),
                });
            }
            out.push_str(&row(cells));
        }
        out.push_str("\nulvs / HAProxy (for idle connections: memory, lower is better):\n\n");
        out.push_str(&header("workload", &Target::ULVS));
        for w in Workload::ALL {
            let h = self.median(w, Target::Haproxy);
            let mut cells = vec![w.name().to_owned()];
            cells.extend(Target::ULVS.map(|t| ratio(self.median(w, t), h)));
            out.push_str(&row(cells));
        }
        out.push_str("\nSpread of the runs (min - max):\n\n");
        out.push_str(&header("workload", &Target::ALL));
        for w in Workload::ALL {
            let mut cells = vec![w.name().to_owned()];
            cells.extend(Target::ALL.map(|t| {
                self.spread(w, t)
                    .map_or("-".to_owned(), |(lo, hi)| format!("{lo:.2} - {hi:.2}"))
            }));
            out.push_str(&row(cells));
        }
        out.push_str("\nulvsd CPU seconds during the workload (median):\n\n");
        out.push_str(&header("workload", &Target::ULVS));
        for w in Workload::ALL {
            if w == Workload::Idle {
                continue;
            }
            let mut cells = vec![w.name().to_owned()];
            cells.extend(
                Target::ULVS.map(|t| self.cpu(w, t).map_or("-".to_owned(), |c| format!("{c:.2}"))),
            );
            out.push_str(&row(cells));
        }
        out.push_str(&format!(
            "\nWhole-machine CPU per unit of work (median; busy CPU time of all processes and the \
             kernel during the run over the work done; with {cpus} CPUs):\n\n",
            cpus = std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
        out.push_str(&header("workload", &Target::ALL));
        for w in Workload::ALL {
            let Some((unit, _)) = w.cost_unit() else {
                continue;
            };
            let mut cells = vec![format!("{} ({unit})", w.name())];
            cells.extend(Target::ALL.map(|t| {
                self.cost(w, t, self.seconds)
                    .map_or("-".to_owned(), |c| format!("{c:.1}"))
            }));
            out.push_str(&row(cells));
        }
        out.push_str(&format!(
            "\nulvsd peak RSS (VmHWM of the last instance): {:.1} MB\n",
            self.peak_rss_kb as f64 / 1024.0
        ));
        for f in &self.failures {
            out.push_str(&format!("\nFailed (twice): {f}\n"));
        }
        out.push_str("\nMedian runs' details:\n");
        for w in Workload::ALL {
            for t in Target::ALL {
                if let Some(n) = self.median_note(w, t) {
                    out.push_str(&format!("- {} via {}: {}\n", w.name(), t.name(), n));
                }
            }
        }
        out
    }
}

/// Raises this process's soft open-file limit to its hard limit (inherited by the processes
/// it starts) and returns the new limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct through the pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// The idle-connection server: accepts, answers one byte per connection, holds it open until
/// the peer closes. Prints `listening` once bound. Runs until killed.
///
/// A thread closes connections whose peer has gone every 500 ms: a socket left in CLOSE_WAIT
/// would refuse a later connection from the same address and port, which FULLNAT's local
/// addresses (a fresh ulvsd allocates their ports from the start again) do reuse.
pub fn idle_server(listen: SocketAddr) -> Result<()> {
    let l = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    println!("listening");
    std::io::stdout().flush()?;
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
    let reaped = held.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let mut v = reaped.lock().unwrap_or_else(|e| e.into_inner());
            v.retain(|s| {
                let mut b = [0u8; 1];
                let keep = match (&*s).read(&mut b) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                };
                if !keep {
                    // Close with a reset: a FIN's last ACK may never come (the ulvsd that
                    // forwarded the connection has been restarted), and a socket left in
                    // LAST_ACK ignores the next SYN from the same local address and port.
                    abortive_close(s);
                }
                keep
            });
        }
    });
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut b = [0u8; 1];
        if s.read_exact(&mut b).is_ok()
            && s.write_all(&b).is_ok()
            && s.set_nonblocking(true).is_ok()
        {
            held.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        }
    }
    Ok(())
}

/// Makes closing `s` send a reset and free the socket at once (`SO_LINGER` with a zero timeout).
fn abortive_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from `&l`, a valid linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// The idle-connection client: opens `count` connections to `target`, one request (a byte
/// echoed back) on each, prints `held N`, and holds them until stdin closes.
pub fn idle_client(target: SocketAddr, count: usize) -> Result<()> {
    let mut held = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(100);
    while held.len() < count {
        ensure!(
            Instant::now() < deadline,
            "only {} connections in 100 s",
            held.len()
        );
        let mut s = match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("connect {target}: {e}");
                continue;
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).context("read the answer")?;
        held.push(s);
    }
    println!("held {}", held.len());
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}

/// Installs iperf3, nginx, wrk and HAProxy with apt-get if any is missing.
pub fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("iperf3", "iperf3"),
        ("nginx", "nginx-light"),
        ("wrk", "wrk"),
        ("haproxy", "haproxy"),
    ]
    .into_iter()
    .filter(|(bin, _)| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .map(|(_, pkg)| pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {}", missing.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("run apt-get")?;
    ensure!(status.success(), "apt-get install {missing:?} failed");
    Ok(())
}

/// The machine, for the report: CPUs and kernel.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} vCPU, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_are_found_by_path() {
        let j = r#"{"end": {"sum_sent": {"bits_per_second": 1.5e9, "retransmits": 3},
                   "sum_received": {"bits_per_second": 8123456789.5}}}"#;
        assert_eq!(
            json_number(j, &["end", "sum_received", "bits_per_second"]),
            Some(8123456789.5)
        );
        assert_eq!(
            json_number(j, &["end", "sum_sent", "retransmits"]),
            Some(3.0)
        );
        assert_eq!(json_number(j, &["end", "nothing"]), None);
    }

    #[test]
    fn wrk_output_is_parsed() {
        let out = "Running 5s test @ http://198.18.0.1:8080/\n  Latency Distribution\n     50%    1.20ms\n     75%  800.00us\n     99%    2.01s\n  31000 requests in 5.00s\n  Socket errors: connect 0, read 0, write 0, timeout 12\nRequests/sec:   6200.50\n";
        let s = parse_wrk(out).unwrap();
        assert_eq!(s.value, 6200.5);
        assert!(s.note.contains("p50 1.20 ms"), "{}", s.note);
        assert!(s.note.contains("p99 2010.00 ms"), "{}", s.note);
        assert!(s.note.contains("timeout 12"), "{}", s.note);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn busy_time_leaves_idle_iowait_and_steal_out() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 2 30 5000 7 4 9 11 0 0\ncpu0 50 1 15 2500 3 2 4 5 0 0\nintr 1 2\n";
        assert_eq!(busy_ticks(stat), Some(100 + 2 + 30 + 4 + 9));
        assert_eq!(busy_ticks("cpu0 1 2 3\n"), None);
        assert_eq!(busy_ticks("cpu  1 x 3 4 5 6 7\n"), None);
        assert_eq!(busy_ticks("cpu  1 2 3 4 5\n"), None);
    }

    #[test]
    fn cost_is_busy_cpu_over_the_work_done() {
        let sample = |value: f64, busy: f64| Sample {
            value,
            machine_cpu: Some(busy),
            ..Sample::default()
        };
        let mut samples = BTreeMap::new();
        // 10,000 connections/s for 5 s on 1.5 busy cores: 7.5 CPU-s for 50,000 connections.
        samples.insert(
            (Workload::ShortConns, Target::UlvsNat),
            vec![
                sample(10_000.0, 7.5),
                sample(12_000.0, 9.0),
                sample(0.0, 9.0),
            ],
        );
        // 10 Gb/s for 5 s on 2 busy cores: 10 CPU-s for 50 Gbit.
        samples.insert((Workload::Tcp1, Target::Kernel), vec![sample(10.0, 10.0)]);
        samples.insert((Workload::Udp64, Target::Kernel), vec![sample(100.0, 5.0)]);
        let r = Report {
            failures: Vec::new(),
            samples,
            peak_rss_kb: 0,
            idle_conns: 0,
            seconds: 5.0,
        };
        let near = |a: Option<f64>, b: f64| assert!((a.unwrap() - b).abs() < 1e-9, "{a:?} {b}");
        // 150 us per connection in both non-empty runs; the run that did nothing is left out.
        near(r.cost(Workload::ShortConns, Target::UlvsNat, 5.0), 150.0);
        near(r.cost(Workload::Tcp1, Target::Kernel, 5.0), 200.0);
        near(r.cost(Workload::Udp64, Target::Kernel, 5.0), 10.0);
        assert_eq!(r.cost(Workload::Idle, Target::UlvsNat, 5.0), None);
        assert_eq!(r.cost(Workload::Tcp4, Target::Kernel, 5.0), None);
        let md = r.markdown();
        assert!(
            md.contains("short conns/s (wrk) (us per connection) | - | 150.0 |"),
            "{md}"
        );
    }

    #[test]
    fn snmp_counters_are_found_by_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 100 2 7 50 5 0\nUdpLite: InDatagrams RcvbufErrors\nUdpLite: 0 9\n";
        assert_eq!(snmp_field(snmp, "Udp:", "RcvbufErrors"), Some(5));
        assert_eq!(snmp_field(snmp, "Udp:", "InErrors"), Some(7));
        assert_eq!(snmp_field(snmp, "UdpLite:", "RcvbufErrors"), Some(9));
        assert_eq!(snmp_field(snmp, "Udp:", "Nothing"), None);
        assert_eq!(snmp_field(snmp, "Tcp:", "InSegs"), None);
    }

    #[test]
    fn medians_take_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
