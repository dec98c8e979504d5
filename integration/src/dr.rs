//! The direct-routing topology: client, director and real servers on one LAN (a bridge in the
//! director namespace); `ulvsd` attaches a TAP to that bridge and answers ARP for the VIP.
//!
//! ```text
//!  client ns                director ns                      real-server ns (one each)
//!  eth0 198.18.1.2/24 --- cl0 -+                              lo: VIP 198.18.100.1/32
//!  VIP/32 dev eth0 (on-link)   br0 198.18.1.1/24 --+-- rs1 --- eth0 198.18.1.11/24
//!                              ulvst0 (TAP, ulvsd) +-- rs2 --- eth0 198.18.1.12/24
//!                              ulvs0 (TUN, ulvsd)              arp_ignore=1, arp_announce=2
//! ```
//!
//! The client reaches the VIP on-link: it asks ARP for the VIP, only `ulvsd` (through the TAP)
//! answers, the client's frames go to the TAP, `ulvsd` rewrites the destination MAC to the
//! chosen real server's, and the real server (VIP on `lo`) answers the client directly over the
//! LAN. Replies never pass the director, as in the kernel's IPVS selftest.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::netns::{Netns, veth};
use crate::process::Spawned;
use crate::{Bins, run_cmd, spawn_ulvsd};

pub const LAN_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const LAN_DIRECTOR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const DR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
pub const TAP_NAME: &str = "ulvst0";
pub const PORT: u16 = 80;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A real server of the DR rig.
#[derive(Debug)]
pub struct DrServer {
    pub name: String,
    pub addr: Ipv4Addr,
    pub ns: Netns,
}

/// The DR rig; see the module doc.
#[derive(Debug)]
pub struct DrRig {
    // Field order is drop order: processes before their namespaces.
    ulvsd: Option<Spawned>,
    server_procs: Vec<Spawned>,
    pub client: Netns,
    pub director: Netns,
    pub servers: Vec<DrServer>,
    bins: Bins,
    dir: tempfile::TempDir,
}

impl DrRig {
    /// Builds the namespaces, starts a test server in each real server (TCP and UDP on
    /// `0.0.0.0:80`, UDP on `VIP:80`) and `ulvsd` with `--tap`/`--bridge`.
    pub fn new(bins: Bins, n_servers: usize) -> Result<Self> {
        ensure!((1..=8).contains(&n_servers), "1 to 8 real servers");
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "{}{}-",
                crate::cleanup::TEMP_DIR_PREFIX,
                std::process::id()
            ))
            .tempdir()
            .context("create rig temp dir")?;
        let client = Netns::new("client")?;
        let director = Netns::new("director")?;
        director.add_bridge("br0")?;
        director.add_addr("br0", LAN_DIRECTOR, 24)?;
        veth(&client, "eth0", &director, "cl0")?;
        director.enslave("cl0", "br0")?;
        client.add_addr("eth0", LAN_CLIENT, 24)?;
        client.ip(&["route", "add", &format!("{DR_VIP}/32"), "dev", "eth0"])?;
        let mut servers = Vec::new();
        for i in 1..=n_servers {
            let name = format!("rs{i}");
            let ns = Netns::new(&name)?;
            let addr = Ipv4Addr::new(198, 18, 1, 10 + u8::try_from(i)?);
            veth(&ns, "eth0", &director, &name)?;
            director.enslave(&name, "br0")?;
            ns.add_addr("eth0", addr, 24)?;
            ns.link_up("lo")?;
            ns.add_addr("lo", DR_VIP, 32)?;
            for (k, v) in [
                ("net/ipv4/conf/all/arp_ignore", "1"),
                ("net/ipv4/conf/all/arp_announce", "2"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/eth0/rp_filter", "0"),
            ] {
                ns.sysctl(k, v)?;
            }
            servers.push(DrServer { name, addr, ns });
        }
        let mut rig = DrRig {
            ulvsd: None,
            server_procs: Vec::new(),
            client,
            director,
            servers,
            bins,
            dir,
        };
        for i in 0..rig.servers.len() {
            let rs = &rig.servers[i];
            let mut cmd = rs.ns.command(&rig.bins.testserver);
            // UDP bound to the VIP itself, so replies leave from the VIP (a wildcard socket
            // would answer from the primary address).
            let udp = format!("{DR_VIP}:{PORT}");
            cmd.args(["--name", &rs.name, "--tcp", "0.0.0.0:80", "--udp", &udp]);
            let mut proc = Spawned::start(&format!("{}-testserver", rs.name), cmd, rig.dir.path())?;
            proc.wait_for_output("ready", READY_TIMEOUT)?;
            rig.server_procs.push(proc);
        }
        rig.start_ulvsd()?;
        Ok(rig)
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("ulvsd.sock")
    }

    fn start_ulvsd(&mut self) -> Result<()> {
        let sock = self.socket();
        let mut cmd = self.director.command(&self.bins.ulvsd);
        cmd.arg("--socket")
            .arg(&sock)
            .args(["--tap", TAP_NAME, "--bridge", "br0"])
            .args(["--arp-source", &LAN_DIRECTOR.to_string()])
            .arg("--configure-sysctls");
        self.ulvsd = Some(spawn_ulvsd(cmd, &sock, self.dir.path())?);
        Ok(())
    }

    /// Runs `ulvsadm` against this rig's daemon.
    pub fn ulvsadm(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.bins.ulvsadm);
        cmd.env("ULVS_SOCKET", self.socket()).args(args);
        run_cmd(&mut cmd)
    }

    /// `ulvsd`'s logs, for failure messages.
    pub fn logs(&self) -> String {
        self.ulvsd.as_ref().map(|p| p.logs()).unwrap_or_default()
    }
}

/// The VIP's TCP / UDP service address.
pub fn dr_vip() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(DR_VIP, PORT))
}

/// One TCP connection to `target` (a `ulvs-testserver` behind it): reads the greeting line
/// (`name client-addr`), sends `size` bytes (at most 64 KiB, what the server echoes) and reads
/// them back. Returns the server's name, the peer address and the bytes echoed; the echo must
/// equal what was sent. Bounded by `timeout` per step.
pub fn tcp_bulk(
    target: SocketAddr,
    size: usize,
    timeout: Duration,
) -> Result<(String, SocketAddr, usize)> {
    ensure!(size <= 64 * 1024, "the test server echoes at most 64 KiB");
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("connect to {target}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let peer = stream.peer_addr()?;
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        stream.read_exact(&mut byte).context("read greeting")?;
        greeting.push(byte[0]);
        ensure!(greeting.len() < 200, "greeting too long");
    }
    let greeting = String::from_utf8_lossy(&greeting).into_owned();
    let name = greeting
        .split_whitespace()
        .next()
        .context("empty greeting")?
        .to_owned();
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    let writer = {
        let mut w = stream.try_clone()?;
        let data = data.clone();
        std::thread::spawn(move || w.write_all(&data))
    };
    let mut got = vec![0u8; size];
    stream
        .read_exact(&mut got)
        .with_context(|| format!("read {size} echoed bytes from {name}"))?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
        .context("send bulk data")?;
    ensure!(got == data, "{name} echoed different bytes");
    Ok((name, peer, got.len()))
}
