//! The direct-routing topology: client, director and real servers on one LAN (a bridge in the
//! director namespace); `ulvsd` attaches a TAP to that bridge and answers ARP for the VIP.
//!
//! ```text
//!  client ns                director ns                      real-server ns (one each)
//!  eth0 198.18.1.2/24 --- cl0 -+                              lo: VIP 198.18.100.1/32
//!       fd00:1b5:0:1::2/64       |                                  VIP6 fd00:1b5:0:100::1/128
//!  VIP/32, VIP6/128 dev eth0   br0 198.18.1.1/24 --+-- rs1 --- eth0 198.18.1.11/24
//!  (on-link)                       fd00:1b5:0:1::1/64 |               fd00:1b5:0:1::11/64
//!                              ulvst0 (TAP, ulvsd) +-- rs2 --- eth0 198.18.1.12/24
//!                              ulvs0 (TUN, ulvsd)                   fd00:1b5:0:1::12/64
//!                                                              arp_ignore=1, arp_announce=2
//! ```
//!
//! The client reaches the VIP on-link: it asks ARP (NDP for the IPv6 VIP) for the VIP, only
//! `ulvsd` (through the TAP) answers, the client's frames go to the TAP, `ulvsd` rewrites the
//! destination MAC to the chosen real server's (which it resolved itself with ARP or NDP), and
//! the real server (VIP on `lo`) answers the client directly over the LAN. Replies never pass
//! the director, as in the kernel's IPVS selftest. A Linux host answers neighbour
//! solicitations only for addresses of the interface they arrive on, so the IPv6 VIP on `lo`
//! needs no counterpart of `arp_ignore`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::netns::{Netns, lan_host, veth};
use crate::process::Spawned;
use crate::{Bins, spawn_ulvsd, start_testserver};

/// The client's address on the LAN.
pub const LAN_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The director's (bridge's) address on the LAN.
pub const LAN_DIRECTOR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The VIP.
pub const DR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// The client's IPv6 address on the LAN.
pub const LAN_CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 2);
/// The director's (bridge's) IPv6 address on the LAN.
pub const LAN_DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 1);
/// The IPv6 VIP.
pub const DR_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 0x100, 0, 0, 0, 1);
/// The TAP device `ulvsd` attaches to the bridge.
pub const TAP_NAME: &str = "ulvst0";
/// The service port (TCP and UDP).
pub const PORT: u16 = 80;

/// A real server of the DR rig.
#[derive(Debug)]
pub struct DrServer {
    /// `rs1`, `rs2`, ...
    pub name: String,
    /// Its LAN address.
    pub addr: Ipv4Addr,
    /// Its IPv6 LAN address (fd00:1b5:0:1::1N for rsN).
    pub addr6: Ipv6Addr,
    /// Its namespace.
    pub ns: Netns,
}

/// Starts the test servers of one real server whose VIPs are on `lo`: TCP on `0.0.0.0:port`
/// and UDP on `vip:port`, and, with `vip6`, TCP and UDP on `[vip6]:port` (bound to the VIPs
/// so that UDP replies leave from the VIP; a wildcard socket would answer from the primary
/// address). Shared by the DR and tunnel rigs.
pub(crate) fn start_vip_testservers(
    bins: &Bins,
    ns: &Netns,
    name: &str,
    vip: Ipv4Addr,
    vip6: Option<Ipv6Addr>,
    port: u16,
    log_dir: &std::path::Path,
) -> Result<Vec<Spawned>> {
    let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let v4 = SocketAddr::V4(SocketAddrV4::new(vip, port));
    let mut procs = vec![start_testserver(
        bins,
        ns,
        name,
        &format!("{name}-testserver"),
        Some(any),
        Some(v4),
        log_dir,
    )?];
    if let Some(vip6) = vip6 {
        let v6 = SocketAddr::V6(SocketAddrV6::new(vip6, port, 0, 0));
        procs.push(start_testserver(
            bins,
            ns,
            name,
            &format!("{name}-testserver6"),
            Some(v6),
            Some(v6),
            log_dir,
        )?);
    }
    Ok(procs)
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
    /// Builds the namespaces (IPv4 and IPv6 on the LAN), starts the test servers in each real
    /// server (TCP on `0.0.0.0:80`, UDP on `VIP:80`, TCP and UDP on `[VIP6]:80`) and `ulvsd`
    /// with `--tap`/`--bridge`.
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
        let client = lan_host("client")?;
        let director = Netns::new("director")?;
        director.add_bridge("br0")?;
        director.add_addr("br0", LAN_DIRECTOR, 24)?;
        director.add_addr6("br0", LAN_DIRECTOR6, 64)?;
        veth(&client, "eth0", &director, "cl0")?;
        director.enslave("cl0", "br0")?;
        client.add_addr("eth0", LAN_CLIENT, 24)?;
        client.add_addr6("eth0", LAN_CLIENT6, 64)?;
        client.ip(&["route", "add", &format!("{DR_VIP}/32"), "dev", "eth0"])?;
        client.ip(&[
            "-6",
            "route",
            "add",
            &format!("{DR_VIP6}/128"),
            "dev",
            "eth0",
        ])?;
        let mut servers = Vec::new();
        for i in 1..=n_servers {
            let name = format!("rs{i}");
            let ns = lan_host(&name)?;
            let addr = Ipv4Addr::new(198, 18, 1, 10 + u8::try_from(i)?);
            let addr6 = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 0x10 + u16::try_from(i)?);
            veth(&ns, "eth0", &director, &name)?;
            director.enslave(&name, "br0")?;
            ns.add_addr("eth0", addr, 24)?;
            ns.add_addr6("eth0", addr6, 64)?;
            ns.link_up("lo")?;
            ns.add_addr("lo", DR_VIP, 32)?;
            ns.add_addr6("lo", DR_VIP6, 128)?;
            for (k, v) in [
                ("net/ipv4/conf/all/arp_ignore", "1"),
                ("net/ipv4/conf/all/arp_announce", "2"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/eth0/rp_filter", "0"),
            ] {
                ns.sysctl(k, v)?;
            }
            servers.push(DrServer {
                name,
                addr,
                addr6,
                ns,
            });
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
        for rs in &rig.servers {
            rig.server_procs.extend(start_vip_testservers(
                &rig.bins,
                &rs.ns,
                &rs.name,
                DR_VIP,
                Some(DR_VIP6),
                PORT,
                rig.dir.path(),
            )?);
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
            // No --arp-source: requests from the director's own address would teach the real
            // servers ulvsd's MAC for it (see the README's DR setup); probes from 0.0.0.0 are
            // answered all the same.
            .arg("--configure-sysctls");
        self.ulvsd = Some(spawn_ulvsd(cmd, &sock, self.dir.path())?);
        Ok(())
    }

    /// Runs `ulvsadm` against this rig's daemon.
    pub fn ulvsadm(&self, args: &[&str]) -> Result<String> {
        self.bins.ulvsadm_at(&self.socket(), args)
    }

    /// Adds the IPv4 DR service `VIP:80` (`proto` is `-t` or `-u`, scheduler rr) with every real
    /// server of the rig (`-g`).
    pub fn add_dr_service(&self, proto: &str) -> Result<()> {
        let vip = dr_vip().to_string();
        self.ulvsadm(&["-A", proto, &vip, "-s", "rr"])?;
        for rs in &self.servers {
            self.ulvsadm(&["-a", proto, &vip, "-r", &rs.addr.to_string(), "-g"])?;
        }
        Ok(())
    }

    /// The MAC `ulvsd` forwards from and answers ARP and NDP with (its startup line
    /// `TAP device attached ... mac=xx:xx:xx:xx:xx:xx`), lower case.
    pub fn station_mac(&self) -> Result<String> {
        let logs = self.logs();
        let line = logs
            .lines()
            .find(|l| l.contains("TAP device attached"))
            .with_context(|| format!("no TAP line in ulvsd's logs:\n{logs}"))?;
        let mac = line
            .split("mac=")
            .nth(1)
            .and_then(|m| m.get(..17))
            .with_context(|| format!("no mac= in {line:?}"))?;
        Ok(mac.to_ascii_lowercase())
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

/// The IPv6 VIP's TCP / UDP service address.
pub fn dr_vip6() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(DR_VIP6, PORT, 0, 0))
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

/// Makes `ns` a direct-routing real server for `vip`, as [`DrRig`] sets up its own: `lo` up
/// with `vip/32` on it, and `arp_ignore=1`, `arp_announce=2` (the server neither answers nor
/// announces the VIP on its LAN), `rp_filter` off on `all` and `lan_dev`. Used by the bench
/// rig, whose real servers serve NAT, FULLNAT and DR services at once.
pub fn hold_vip_on_lo(ns: &Netns, lan_dev: &str, vip: Ipv4Addr) -> Result<()> {
    ns.link_up("lo")?;
    ns.add_addr("lo", vip, 32)?;
    let lan_rp = format!("net/ipv4/conf/{lan_dev}/rp_filter");
    for (k, v) in [
        ("net/ipv4/conf/all/arp_ignore", "1"),
        ("net/ipv4/conf/all/arp_announce", "2"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        (lan_rp.as_str(), "0"),
    ] {
        ns.sysctl(k, v)?;
    }
    Ok(())
}
