//! The side-by-side benchmark (`cargo xtask bench`): one rig of namespaces, the same workloads
//! through plain kernel forwarding, ulvs NAT and HAProxy `mode tcp`, medians of interleaved runs.
//!
//! ```text
//!  client ns                 director ns                          real-server ns (three)
//!  eth0 198.18.0.2/24 ---- cl0 198.18.0.1/24  (HAProxy binds here)
//!  default via .0.1          br0 198.18.1.1/24 ---+-- rs1 ------- eth0 198.18.1.11/24
//!                            ulvs0 (TUN, ulvsd)   +-- rs2 ------- eth0 198.18.1.12/24
//!                            VIP 198.18.100.1     +-- rs3 ------- eth0 198.18.1.13/24
//! ```
//!
//! Every real server runs `iperf3 -s` (TCP/UDP 5201), nginx (8080, a 3-byte answer) and the
//! bench's own idle-connection server (9000). The targets:
//! - kernel: the client talks to rs1 directly (on ports ulvs does not balance, so its replies are
//!   not steered into the TUN); the director only routes (the ceiling of the path);
//! - ulvs NAT: the VIP; iperf3 goes to rs1 only (its control and data connections must meet),
//!   HTTP and idle connections are spread round-robin over the three servers;
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
}

/// Which path a measurement goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Plain kernel forwarding in the director.
    Kernel,
    /// ulvs NAT.
    UlvsNat,
    /// HAProxy `mode tcp` in the director.
    Haproxy,
}

impl Target {
    const ALL: [Target; 3] = [Target::Kernel, Target::UlvsNat, Target::Haproxy];

    fn name(self) -> &'static str {
        match self {
            Target::Kernel => "kernel",
            Target::UlvsNat => "ulvs NAT",
            Target::Haproxy => "HAProxy",
        }
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

    fn name(self) -> &'static str {
        match self {
            Workload::Tcp1 => "1 TCP stream (Gb/s)",
            Workload::Tcp4 => "4 TCP streams (Gb/s)",
            Workload::ShortConns => "short conns/s (wrk)",
            Workload::Udp64 => "64 B UDP (kpps recv)",
            Workload::Idle => "idle conns: +MB per 10k",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Default)]
struct Sample {
    value: f64,
    /// Extra facts (latency percentiles, loss, errors).
    note: String,
    /// ulvsd CPU seconds during the workload (ulvs target only).
    ulvsd_cpu: Option<f64>,
}

/// The rig; dropping it stops every process and removes every namespace.
#[derive(Debug)]
pub struct BenchRig {
    // Field order is drop order: processes before their namespaces.
    ulvsd: Option<Spawned>,
    haproxy: Option<Spawned>,
    procs: Vec<Spawned>,
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
        let mut servers = Vec::new();
        for i in 1..=SERVERS {
            let name = format!("brs{i}");
            let ns = Netns::new(&name)?;
            veth(&ns, "eth0", &director, &format!("rs{i}"))?;
            director.enslave(&format!("rs{i}"), "br0")?;
            ns.add_addr("eth0", server_addr(i), 24)?;
            ns.default_route(DIRECTOR_RS_ADDR)?;
            ns.sysctl("net/core/somaxconn", "8192")?;
            servers.push(ns);
        }
        let mut rig = BenchRig {
            ulvsd: None,
            haproxy: None,
            procs: Vec::new(),
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

    fn start_servers(&mut self) -> Result<()> {
        for (i, ns) in self.servers.iter().enumerate() {
            let n = i + 1;
            let addr = server_addr(n as u8);
            // rs1 also serves the kernel target on the ports above the balanced ones.
            let extra = if n == 1 { 2 } else { 1 };
            for k in 0..extra {
                let port = IPERF_PORT + k;
                let mut iperf = ns.command("iperf3");
                iperf.args(["-s", "-p", &port.to_string(), "-B", &addr.to_string()]);
                let label = format!("iperf3-rs{n}-{port}");
                self.procs
                    .push(Spawned::start(&label, iperf, self.dir.path())?);
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
            for k in 0..extra {
                let port = IDLE_PORT + k;
                let mut idle = ns.command(&self.opts.self_exe);
                idle.args(["idle-server", "--listen", &format!("{addr}:{port}")]);
                let label = format!("idle-rs{n}-{port}");
                let mut p = Spawned::start(&label, idle, self.dir.path())?;
                p.wait_for_output("listening", READY)?;
                self.procs.push(p);
            }
        }
        for n in 1..=SERVERS {
            for port in [IPERF_PORT, HTTP_PORT, HTTP_PORT + 1] {
                let a = SocketAddr::from((server_addr(n), port));
                wait_until(&format!("{a} to listen"), READY, || {
                    for p in &mut self.procs {
                        p.check_running()?;
                    }
                    self.client.run(move || {
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
            .args(&self.opts.ulvsd_args);
        let mut p = Spawned::start("ulvsd", cmd, self.dir.path())?;
        wait_until("ulvsd's control socket", READY, || {
            p.check_running()?;
            Ok(self.ulvsadm(&["-L", "-n"]).is_ok())
        })
        .with_context(|| p.logs())?;
        self.ulvsd = Some(p);
        let vip = |port: u16| format!("{VIP}:{port}");
        let rs = |n: u8, port: u16| format!("{}:{port}", server_addr(n));
        self.ulvsadm(&["-A", "-t", &vip(IPERF_PORT), "-s", "rr"])?;
        self.ulvsadm(&["-a", "-t", &vip(IPERF_PORT), "-r", &rs(1, IPERF_PORT), "-m"])?;
        self.ulvsadm(&["-A", "-u", &vip(IPERF_PORT), "-s", "rr"])?;
        self.ulvsadm(&["-a", "-u", &vip(IPERF_PORT), "-r", &rs(1, IPERF_PORT), "-m"])?;
        for port in [HTTP_PORT, IDLE_PORT] {
            self.ulvsadm(&["-A", "-t", &vip(port), "-s", "rr"])?;
            for n in 1..=SERVERS {
                self.ulvsadm(&["-a", "-t", &vip(port), "-r", &rs(n, port), "-m"])?;
            }
        }
        let a = Target::UlvsNat.addr(HTTP_PORT);
        wait_until("the VIP to answer", READY, || {
            self.client
                .run(move || TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
        })
        .with_context(|| self.ulvsd.as_ref().map(|p| p.logs()).unwrap_or_default())
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
        for run in 0..self.opts.runs {
            for w in Workload::ALL {
                for k in 0..Target::ALL.len() {
                    // Rotate the order per run, so no target always goes first.
                    let t = Target::ALL[(k + run) % Target::ALL.len()];
                    let s = self.measure(w, t).with_context(|| {
                        format!("run {} of {} through {}", run + 1, w.name(), t.name())
                    })?;
                    if let Some(s) = s {
                        eprintln!(
                            "run {}: {:<22} {:<9} {:>10.3} {}",
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
            samples,
            peak_rss_kb,
            idle_conns: self.opts.idle_conns,
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
        let mut s = match w {
            Workload::Tcp1 => self.iperf_tcp(t, 1)?,
            Workload::Tcp4 => self.iperf_tcp(t, 4)?,
            Workload::ShortConns => self.wrk(t)?,
            Workload::Udp64 => self.iperf_udp(t)?,
            Workload::Idle => unreachable!("handled above"),
        };
        if t == Target::UlvsNat {
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
        ]))?;
        let bps = json_number(&out, &["end", "sum_received", "bits_per_second"])
            .context("iperf3 JSON has no end.sum_received.bits_per_second")?;
        let retr = json_number(&out, &["end", "sum_sent", "retransmits"]).unwrap_or(0.0);
        Ok(Sample {
            value: bps / 1e9,
            note: format!("retransmits {retr}"),
            ulvsd_cpu: None,
        })
    }

    fn iperf_udp(&self, t: Target) -> Result<Sample> {
        let a = t.addr(IPERF_PORT);
        let bits = self.opts.udp_pps * 64 * 8;
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
        ]))?;
        let packets =
            json_number(&out, &["end", "sum", "packets"]).context("no end.sum.packets")?;
        let lost = json_number(&out, &["end", "sum", "lost_packets"]).unwrap_or(0.0);
        let secs = json_number(&out, &["end", "sum", "seconds"]).unwrap_or(1.0);
        Ok(Sample {
            value: (packets - lost) / secs / 1e3,
            note: format!(
                "sent {:.0} kpps, loss {:.1}%",
                packets / secs / 1e3,
                100.0 * lost / packets.max(1.0)
            ),
            ulvsd_cpu: None,
        })
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
            Target::UlvsNat => {
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
    samples: BTreeMap<(Workload, Target), Vec<Sample>>,
    peak_rss_kb: u64,
    idle_conns: usize,
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

    /// The results as a Markdown table plus notes.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "n/a".to_owned(),
        };
        let mut out = String::new();
        out.push_str(
            "| workload | kernel | ulvs NAT | HAProxy | ulvs / kernel | HAProxy / kernel | ulvs / HAProxy | ulvsd CPU s |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for w in Workload::ALL {
            let (k, u, h) = (
                self.median(w, Target::Kernel),
                self.median(w, Target::UlvsNat),
                self.median(w, Target::Haproxy),
            );
            let cpu = median(
                self.samples
                    .get(&(w, Target::UlvsNat))
                    .map(|v| v.iter().filter_map(|s| s.ulvsd_cpu).collect())
                    .unwrap_or_default(),
            );
            if w == Workload::Idle {
                out.push_str(&format!(
                    "| {} (ulvs {} conns) | - | {} | {} | - | - | {} | - |\n",
                    w.name(),
                    self.idle_conns,
                    f(u),
                    f(h),
                    ratio(u, h),
                ));
                continue;
            }
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                w.name(),
                f(k),
                f(u),
                f(h),
                ratio(u, k),
                ratio(h, k),
                ratio(u, h),
                f(cpu)
            ));
        }
        out.push_str("| ulvs FULLNAT | not available yet | | | | | | |\n");
        out.push_str("| ulvs DR / tunnel | not in this rig yet (needs the L2 rig) | | | | | | |\n");
        out.push_str(&format!(
            "\nulvsd peak RSS (VmHWM of the last instance): {:.1} MB\n",
            self.peak_rss_kb as f64 / 1024.0
        ));
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
pub fn idle_server(listen: SocketAddr) -> Result<()> {
    let l = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    println!("listening");
    std::io::stdout().flush()?;
    let mut held: Vec<TcpStream> = Vec::new();
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut b = [0u8; 1];
        if s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {
            held.push(s);
        }
        // Forget connections the client has closed (bounded memory across runs).
        if held.len().is_multiple_of(1024) {
            held.retain(|s| {
                let _ = s.set_nonblocking(true);
                let mut b = [0u8; 1];
                !matches!((&*s).read(&mut b), Ok(0))
            });
        }
    }
    Ok(())
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
    fn medians_take_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
