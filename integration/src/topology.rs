//! The reference NAT topology: client -- director (real `ulvsd`, TUN) -- bridge -- real servers.
//!
//! ```text
//!  client ns                 director ns                          real-server ns (one each)
//!  eth0 198.18.0.2/24 ---- cl0 198.18.0.1/24
//!  default via .0.1          br0 198.18.1.1/24 ---+-- rs1 ------- eth0 198.18.1.11/24
//!                            ulvs0 (TUN, ulvsd)   +-- rs2 ------- eth0 198.18.1.12/24
//!                            VIP 198.18.100.1     +-- ...         default via 198.18.1.1
//! ```
//!
//! This mirrors the kernel's IPVS selftest. The rig sets up only addresses and plain routes; the
//! VIP route into the TUN, the policy rule that steers real-server replies into it, and the
//! forwarding sysctls are `ulvsd`'s job (`--configure-sysctls`), so the tests check them for real.
//! Each rig has its own namespaces, TUN and control socket, so rigs can run side by side.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::client::{self, Reply};
use crate::netns::{Netns, lan_host, veth};
use crate::process::Spawned;
use crate::{Bins, start_testserver, wait_until};

/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The director's address on the client side (the client's gateway).
pub const DIRECTOR_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The director's address on the real-server bridge (the real servers' gateway).
pub const DIRECTOR_RS_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The virtual IP the services use.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// The TCP port of the virtual service.
pub const VIP_TCP_PORT: u16 = 80;
/// The UDP port of the virtual service.
pub const VIP_UDP_PORT: u16 = 53;
/// The TCP port the real servers listen on (NAT maps the VIP port to it).
pub const RS_TCP_PORT: u16 = 8080;
/// The UDP port the real servers listen on.
pub const RS_UDP_PORT: u16 = 5353;
/// The client's IPv6 address (after [`NatRig::enable_ipv6`]).
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 0, 0, 0, 0, 2);
/// The director's IPv6 address on the client side.
pub const DIRECTOR_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 0, 0, 0, 0, 1);
/// The director's IPv6 address on the real-server bridge.
pub const DIRECTOR_RS_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 1);
/// The IPv6 virtual IP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 0x100, 0, 0, 0, 1);

/// The TUN device `ulvsd` creates in the director namespace.
pub const TUN_NAME: &str = "ulvs0";
/// Most real servers a rig builds.
pub const MAX_SERVERS: usize = 8;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `VIP:80`, the TCP virtual service.
pub fn vip_tcp() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(VIP, VIP_TCP_PORT))
}

/// `VIP:53`, the UDP virtual service.
pub fn vip_udp() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(VIP, VIP_UDP_PORT))
}

/// `[VIP6]:80`, the IPv6 TCP virtual service.
pub fn vip6_tcp() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(VIP6, VIP_TCP_PORT, 0, 0))
}

/// `[VIP6]:53`, the IPv6 UDP virtual service.
pub fn vip6_udp() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(VIP6, VIP_UDP_PORT, 0, 0))
}

/// One real-server host.
#[derive(Debug)]
pub struct RealServer {
    /// The name the test server answers with (`rs1`, `rs2`, ...).
    pub name: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
    /// Its namespace.
    pub ns: Netns,
}

impl RealServer {
    /// Its IPv6 address on the bridge (after [`NatRig::enable_ipv6`]): fd00:1b5:1::1X for
    /// IPv4 198.18.1.1X.
    pub fn addr6(&self) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            0x1b5,
            0,
            1,
            0,
            0,
            0,
            u16::from(self.addr.octets()[3]),
        )
    }

    /// `[addr6]:8080`.
    pub fn tcp6(&self) -> String {
        format!("[{}]:{RS_TCP_PORT}", self.addr6())
    }

    /// `[addr6]:5353`.
    pub fn udp6(&self) -> String {
        format!("[{}]:{RS_UDP_PORT}", self.addr6())
    }

    /// `addr:8080`, as given to `ulvsadm -a ... -r`.
    pub fn tcp(&self) -> String {
        format!("{}:{RS_TCP_PORT}", self.addr)
    }

    /// `addr:5353`, as given to `ulvsadm -a ... -r`.
    pub fn udp(&self) -> String {
        format!("{}:{RS_UDP_PORT}", self.addr)
    }

    /// Starts its `ulvs-testserver` on the TCP and UDP ports of its IPv4 address, or of its
    /// IPv6 one with `v6`, logged as `{name}-{what}`, and waits until it listens.
    fn start_testserver(
        &self,
        bins: &Bins,
        v6: bool,
        what: &str,
        log_dir: &Path,
    ) -> Result<Spawned> {
        let ip = if v6 {
            IpAddr::V6(self.addr6())
        } else {
            IpAddr::V4(self.addr)
        };
        start_testserver(
            bins,
            &self.ns,
            &self.name,
            &format!("{}-{what}", self.name),
            Some(SocketAddr::new(ip, RS_TCP_PORT)),
            Some(SocketAddr::new(ip, RS_UDP_PORT)),
            log_dir,
        )
    }
}

/// The reference NAT rig. Dropping it stops `ulvsd` (SIGTERM), the test servers, and removes all
/// namespaces, in that order; when dropped during a panic it prints the processes' logs first.
#[derive(Debug)]
pub struct NatRig {
    // Field order is drop order: processes before the namespaces they run in.
    ulvsd: Option<Spawned>,
    server_procs: Vec<Spawned>,
    server6_procs: Vec<Spawned>,
    /// The client namespace.
    pub client: Netns,
    /// The director namespace, where `ulvsd` runs.
    pub director: Netns,
    /// The real servers.
    pub servers: Vec<RealServer>,
    bins: Bins,
    dir: tempfile::TempDir,
}

impl NatRig {
    /// Builds the namespaces for `n_servers` real servers and starts a test server in each
    /// (waiting until each is listening). `ulvsd` is not started yet: see [`NatRig::start_ulvsd`].
    pub fn new(bins: Bins, n_servers: usize) -> Result<Self> {
        ensure!(
            (1..=MAX_SERVERS).contains(&n_servers),
            "a rig has 1 to {MAX_SERVERS} real servers, not {n_servers}"
        );
        let dir = crate::cleanup::rig_temp_dir()?;

        let client = lan_host("client")?;
        let director = lan_host("director")?;
        veth(&client, "eth0", &director, "cl0")?;
        client.add_addr("eth0", CLIENT_ADDR, 24)?;
        client.default_route(DIRECTOR_CLIENT_ADDR)?;
        director.add_addr("cl0", DIRECTOR_CLIENT_ADDR, 24)?;
        director.add_bridge("br0")?;
        director.add_addr("br0", DIRECTOR_RS_ADDR, 24)?;

        let mut servers = Vec::with_capacity(n_servers);
        for i in 1..=n_servers {
            let name = format!("rs{i}");
            let ns = lan_host(&name)?;
            let addr = Ipv4Addr::new(198, 18, 1, 10 + u8::try_from(i)?);
            veth(&ns, "eth0", &director, &name)?;
            director.enslave(&name, "br0")?;
            ns.add_addr("eth0", addr, 24)?;
            ns.default_route(DIRECTOR_RS_ADDR)?;
            servers.push(RealServer { name, addr, ns });
        }

        let mut rig = Self {
            ulvsd: None,
            server_procs: Vec::new(),
            server6_procs: Vec::new(),
            client,
            director,
            servers,
            bins,
            dir,
        };
        for rs in &rig.servers {
            let proc = rs.start_testserver(&rig.bins, false, "testserver", rig.dir.path())?;
            rig.server_procs.push(proc);
        }
        Ok(rig)
    }

    /// Stops the test server of real server `i` (SIGTERM, reaped), as if its service died.
    pub fn stop_server(&mut self, i: usize) -> Result<ExitStatus> {
        let proc = self
            .server_procs
            .get_mut(i)
            .with_context(|| format!("no real server {i}"))?;
        proc.terminate(Duration::from_secs(5))
    }

    /// Starts the test server of real server `i` again (after [`NatRig::stop_server`]) and
    /// waits until it is listening.
    pub fn start_server(&mut self, i: usize) -> Result<()> {
        ensure!(i < self.server_procs.len(), "no real server {i}");
        self.server_procs[i] = self.servers[i].start_testserver(
            &self.bins,
            false,
            "testserver-restarted",
            self.dir.path(),
        )?;
        Ok(())
    }

    /// Adds the IPv6 side of the rig: fd00:1b5::/64 between client and director, fd00:1b5:1::/64
    /// on the bridge (real server i at fd00:1b5:1::1X), default routes through the director, and
    /// a second test server per real server on its IPv6 address (same name and ports). IPv6
    /// forwarding in the director is `ulvsd --configure-sysctls`'s job.
    pub fn enable_ipv6(&mut self) -> Result<()> {
        ensure!(self.server6_procs.is_empty(), "IPv6 already enabled");
        self.client.add_addr6("eth0", CLIENT_ADDR6, 64)?;
        self.client.default_route6(DIRECTOR_CLIENT_ADDR6)?;
        self.director.add_addr6("cl0", DIRECTOR_CLIENT_ADDR6, 64)?;
        self.director.add_addr6("br0", DIRECTOR_RS_ADDR6, 64)?;
        for rs in &self.servers {
            rs.ns.add_addr6("eth0", rs.addr6(), 64)?;
            rs.ns.default_route6(DIRECTOR_RS_ADDR6)?;
        }
        for rs in &self.servers {
            let proc = rs.start_testserver(&self.bins, true, "testserver6", self.dir.path())?;
            self.server6_procs.push(proc);
        }
        Ok(())
    }

    /// The rig's temporary directory (control socket, process logs); removed on drop.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Builds a rig with `n_servers` real servers and a running `ulvsd`.
    pub fn with_ulvsd(bins: Bins, n_servers: usize) -> Result<Self> {
        let mut rig = Self::new(bins, n_servers)?;
        rig.start_ulvsd()?;
        Ok(rig)
    }

    /// The control socket of this rig's `ulvsd`.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("ulvsd.sock")
    }

    /// Starts `ulvsd --tun ulvs0 --socket <sock> --configure-sysctls` in the director namespace and
    /// waits until its socket accepts and `ulvsadm -L -n` succeeds.
    pub fn start_ulvsd(&mut self) -> Result<()> {
        self.start_ulvsd_with(&[])
    }

    /// [`NatRig::start_ulvsd`] with extra `ulvsd` arguments (for example
    /// `["--max-connections", "2000"]`).
    pub fn start_ulvsd_with(&mut self, extra: &[&str]) -> Result<()> {
        self.start_ulvsd_with_env(extra, &[])
    }

    /// [`NatRig::start_ulvsd_with`] with environment variables for `ulvsd` too (for example
    /// `OTEL_METRIC_EXPORT_INTERVAL`).
    pub fn start_ulvsd_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> Result<()> {
        ensure!(self.ulvsd.is_none(), "ulvsd already started");
        let sock = self.socket();
        let mut cmd = self.director.command(&self.bins.ulvsd);
        cmd.arg("--tun")
            .arg(TUN_NAME)
            .arg("--socket")
            .arg(&sock)
            .arg("--configure-sysctls")
            .args(extra)
            .envs(env.iter().copied());
        self.ulvsd = Some(crate::spawn_ulvsd(cmd, &sock, self.dir.path())?);
        let mut last_err = None;
        let listed = wait_until("`ulvsadm -L -n` to succeed", READY_TIMEOUT, || {
            if let Some(p) = self.ulvsd.as_mut() {
                p.check_running()?;
            }
            match self.ulvsadm(&["-L", "-n"]) {
                Ok(_) => Ok(true),
                Err(e) => {
                    last_err = Some(e);
                    Ok(false)
                }
            }
        });
        listed.with_context(|| format!("last ulvsadm error: {last_err:?}"))
    }

    /// Sends SIGTERM to `ulvsd` and waits for it to exit; returns its exit status.
    pub fn stop_ulvsd(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut proc = self.ulvsd.take().context("ulvsd is not running")?;
        let status = proc.terminate(timeout)?;
        Ok(status)
    }

    /// The running `ulvsd`, if any.
    pub fn ulvsd(&mut self) -> Option<&mut Spawned> {
        self.ulvsd.as_mut()
    }

    /// Runs the real `ulvsadm` against this rig's daemon (socket passed in `ULVS_SOCKET`) and
    /// returns its stdout; a non-zero exit is an error carrying its stderr.
    pub fn ulvsadm(&self, args: &[&str]) -> Result<String> {
        self.bins.ulvsadm_at(&self.socket(), args)
    }

    /// Opens `count` TCP connections to `target` from the client namespace, one after another.
    pub fn tcp_probes(
        &self,
        target: SocketAddr,
        count: usize,
        overall: Duration,
    ) -> Result<Vec<Reply>> {
        self.client
            .run(|| client::many(count, overall, || client::tcp_once(target, PROBE_TIMEOUT)))?
    }

    /// Sends `count` UDP datagrams to `target` from the client namespace, each from its own
    /// source port (no two alike), each answered before the next is sent (up to 3 tries each).
    pub fn udp_probes(
        &self,
        target: SocketAddr,
        count: usize,
        overall: Duration,
    ) -> Result<Vec<Reply>> {
        self.client
            .run(|| client::udp_many(target, count, overall, Duration::from_secs(1), 3))?
    }

    /// What `tc` shows on the ingress of the real servers' bridge `br0` in the director: the
    /// filters (with statistics) and the qdiscs.
    pub fn bridge_tc(&self) -> Result<(String, String)> {
        let filters = crate::run_cmd(
            self.director
                .command("tc")
                .args(["-s", "filter", "show", "dev", "br0", "ingress"]),
        )?;
        let qdiscs = crate::run_cmd(
            self.director
                .command("tc")
                .args(["qdisc", "show", "dev", "br0"]),
        )?;
        Ok((filters, qdiscs))
    }

    /// Packets the filters on `br0`'s ingress have redirected to the TUN (the `Sent N bytes P
    /// pkt` counters of their `mirred` actions).
    pub fn redirected_packets(&self) -> Result<u64> {
        let (filters, _) = self.bridge_tc()?;
        sent_packets(&filters, "mirred")
    }

    /// A report of the director's state for failure messages: `ulvsadm -L -n`, policy rules,
    /// routes, and every process's output.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        let mut add = |title: &str, r: Result<String>| {
            s.push_str(&format!("--- {title} ---\n"));
            match r {
                Ok(out) => s.push_str(&out),
                Err(e) => s.push_str(&format!("error: {e:#}\n")),
            }
        };
        add("ulvsadm -L -n", self.ulvsadm(&["-L", "-n"]));
        add("director: ip rule", self.director.ip(&["rule", "show"]));
        add(
            "director: ip route show table all",
            self.director.ip(&["route", "show", "table", "all"]),
        );
        add(
            "director: ip -6 route show table all",
            self.director.ip(&["-6", "route", "show", "table", "all"]),
        );
        add("director: ip -s link", self.director.ip(&["-s", "link"]));
        for p in self
            .ulvsd
            .iter()
            .chain(&self.server_procs)
            .chain(&self.server6_procs)
        {
            s.push_str(&p.logs());
        }
        s
    }
}

impl Drop for NatRig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("=== rig diagnostics ===\n{}", self.diagnostics());
        }
    }
}

/// The sum of the `Sent N bytes P pkt` counters of the actions of kind `action` (`mirred`,
/// `gact`) in `tc -s filter show` output.
pub fn sent_packets(tc_output: &str, action: &str) -> Result<u64> {
    let mut total = 0;
    let mut counting = false;
    for line in tc_output.lines().map(str::trim) {
        if let Some(kind) = line.strip_prefix("action order ") {
            counting = kind.split_whitespace().nth(1).is_some_and(|k| k == action);
            continue;
        }
        let Some(rest) = line.strip_prefix("Sent ") else {
            continue;
        };
        if !counting {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (Some(p), Some(&"pkt")) = (words.get(2), words.get(3)) else {
            anyhow::bail!("unexpected tc statistics line {line:?}");
        };
        total += p
            .parse::<u64>()
            .with_context(|| format!("packet count in {line:?}"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::sent_packets;

    #[test]
    fn sent_packets_sums_every_statistics_line() {
        let out = "filter protocol ip pref 29952 u32 chain 0 fh 800::800\n  match c6120101/ffffffff at 16\n\taction order 1: gact action pass\n\t random type none pass val 0\n\t index 1 ref 1 bind 1\n\tAction statistics:\n\tSent 600 bytes 7 pkt (dropped 0, overlimits 0 requeues 0) \n\nfilter protocol ip pref 29952 u32 chain 0 fh 800::801\n  match c612010b/ffffffff at 12\n\taction order 1: mirred (Egress Redirect to device ulvs0) stolen\n\tSent 2320 bytes 28 pkt (dropped 0, overlimits 0 requeues 0) \n\tbacklog 0b 0p requeues 0\n\tSent 82 bytes 1 pkt (dropped 0)\n";
        assert_eq!(sent_packets(out, "mirred").unwrap(), 29);
        assert_eq!(sent_packets(out, "gact").unwrap(), 7);
        assert_eq!(sent_packets("", "mirred").unwrap(), 0);
        assert!(
            sent_packets("action order 1: mirred x\nSent 12 bytes many pkt", "mirred").is_err()
        );
    }
}
