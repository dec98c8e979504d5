//! The tunnel-mode topology: client, director and real servers on one LAN (a bridge in the
//! director namespace, as in the kernel's IPVS selftest); the client reaches the VIP through
//! the director, `ulvsd` encapsulates (IPIP, GUE or GRE) to the chosen real server, and the
//! real server decapsulates with `ulvs-decap` (the kernel here has no tunnel devices) and
//! answers the client directly.
//!
//! ```text
//!  client ns                 director ns                        real-server ns (one each)
//!  eth0 198.18.1.2/24 --- cl0 -+                                  lo: VIP 198.18.100.1/32
//!       fd00:1b5:0:1::2/64     |                                      VIP6 fd00:1b5:0:100::1/128
//!  VIP/32 via 198.18.1.1       br0 198.18.1.1/24 --+-- rs1 ------ eth0 198.18.1.11/24
//!  VIP6/128 via fd00:1b5:0:1::1    fd00:1b5:0:1::1 |                   fd00:1b5:0:1::11/64
//!                              ulvs0 (TUN, ulvsd)  +-- rs2 ------ eth0 198.18.1.12/24
//!                              --tunnel-source 198.18.1.1              fd00:1b5:0:1::12/64
//!                              --tunnel-source fd00:1b5:0:1::1    ulvsdecap0 (TUN, ulvs-decap:
//!                                                                 ipip, gre, gue on GUE_PORT,
//!                                                                 outer IPv4 and IPv6)
//! ```
//!
//! Replies never pass the director: its outbound counters stay at zero. Either family of VIP
//! may be tunnelled to either family of real-server address (IPv4-in-IPv6 and IPv6-in-IPv4 are
//! the mixed cases IPVS allows, in tunnel mode only).
//!
//! [`TunRig::new`] takes the MTU of the director's LAN ports and the real servers' links
//! (`cl0`, `rsN`, `br0` and each real server's `eth0`; the client's own `eth0` stays at 1500).
//! Above 1500 plus the tunnel overhead, full-sized client packets fit the tunnel, as on a
//! real-server network whose MTU was raised for tunnel mode.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::dr::start_vip_testservers;
use crate::netns::{Netns, lan_host, veth};
use crate::process::Spawned;
use crate::{Bins, spawn_ulvsd, wait_until};

/// The client's address on the LAN.
pub const TUN_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The director's address on the LAN (also the tunnel source).
pub const TUN_DIRECTOR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The VIP.
pub const TUN_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// The client's IPv6 address on the LAN.
pub const TUN_CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 2);
/// The director's IPv6 address on the LAN (also the IPv6 tunnel source).
pub const TUN_DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 1);
/// The IPv6 VIP.
pub const TUN_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 0x100, 0, 0, 0, 1);
/// The service port (TCP and UDP).
pub const PORT: u16 = 80;
/// The UDP port GUE is sent to.
pub const GUE_PORT: u16 = 6080;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A real server of the tunnel rig.
#[derive(Debug)]
pub struct TunServer {
    /// `rs1`, `rs2`, ...
    pub name: String,
    /// Its LAN address (the outer destination of IPv4 tunnels).
    pub addr: Ipv4Addr,
    /// Its IPv6 LAN address, fd00:1b5:0:1::1N for rsN (the outer destination of IPv6
    /// tunnels).
    pub addr6: Ipv6Addr,
    /// Its namespace.
    pub ns: Netns,
}

/// The tunnel rig; see the module doc.
#[derive(Debug)]
pub struct TunRig {
    // Field order is drop order: processes before their namespaces.
    ulvsd: Option<Spawned>,
    decaps: Vec<Spawned>,
    server_procs: Vec<Spawned>,
    /// The client host.
    pub client: Netns,
    /// The director host.
    pub director: Netns,
    /// The real servers.
    pub servers: Vec<TunServer>,
    bins: Bins,
    dir: tempfile::TempDir,
}

impl TunRig {
    /// Builds the namespaces (IPv4 and IPv6), starts `ulvs-decap` (IPIP, IPv6-in-IP, GRE and
    /// GUE on [`GUE_PORT`], outer IPv4 and IPv6) and the test servers (TCP `0.0.0.0:80`, UDP
    /// `VIP:80`, TCP and UDP `[VIP6]:80`) in each real server, then `ulvsd` with the
    /// director's LAN addresses as tunnel sources.
    pub fn new(bins: Bins, n_servers: usize, lan_mtu: u32) -> Result<Self> {
        ensure!((1..=8).contains(&n_servers), "1 to 8 real servers");
        ensure!((1280..=9000).contains(&lan_mtu), "LAN MTU 1280 to 9000");
        let mtu = lan_mtu.to_string();
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "{}{}-",
                crate::cleanup::TEMP_DIR_PREFIX,
                std::process::id()
            ))
            .tempdir()
            .context("create rig temp dir")?;
        let client = lan_host("client")?;
        let director = lan_host("director")?;
        director.add_bridge("br0")?;
        director.add_addr("br0", TUN_DIRECTOR, 24)?;
        director.add_addr6("br0", TUN_DIRECTOR6, 64)?;
        veth(&client, "eth0", &director, "cl0")?;
        director.ip(&["link", "set", "cl0", "mtu", &mtu])?;
        director.enslave("cl0", "br0")?;
        client.add_addr("eth0", TUN_CLIENT, 24)?;
        client.add_addr6("eth0", TUN_CLIENT6, 64)?;
        client.ip(&[
            "route",
            "add",
            &format!("{TUN_VIP}/32"),
            "via",
            &TUN_DIRECTOR.to_string(),
        ])?;
        client.ip(&[
            "-6",
            "route",
            "add",
            &format!("{TUN_VIP6}/128"),
            "via",
            &TUN_DIRECTOR6.to_string(),
        ])?;
        let mut servers = Vec::new();
        for i in 1..=n_servers {
            let name = format!("rs{i}");
            let ns = lan_host(&name)?;
            let addr = Ipv4Addr::new(198, 18, 1, 10 + u8::try_from(i)?);
            let addr6 = Ipv6Addr::new(0xfd00, 0x1b5, 0, 1, 0, 0, 0, 0x10 + u16::try_from(i)?);
            veth(&ns, "eth0", &director, &name)?;
            director.ip(&["link", "set", &name, "mtu", &mtu])?;
            ns.ip(&["link", "set", "eth0", "mtu", &mtu])?;
            director.enslave(&name, "br0")?;
            ns.add_addr("eth0", addr, 24)?;
            ns.add_addr6("eth0", addr6, 64)?;
            ns.link_up("lo")?;
            ns.add_addr("lo", TUN_VIP, 32)?;
            ns.add_addr6("lo", TUN_VIP6, 128)?;
            for (k, v) in [
                ("net/ipv4/conf/all/arp_ignore", "1"),
                ("net/ipv4/conf/all/arp_announce", "2"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/eth0/rp_filter", "0"),
            ] {
                ns.sysctl(k, v)?;
            }
            servers.push(TunServer {
                name,
                addr,
                addr6,
                ns,
            });
        }
        director.ip(&["link", "set", "br0", "mtu", &mtu])?;
        let mut rig = TunRig {
            ulvsd: None,
            decaps: Vec::new(),
            server_procs: Vec::new(),
            client,
            director,
            servers,
            bins,
            dir,
        };
        for rs in &rig.servers {
            let mut cmd = rs.ns.command(&rig.bins.decap);
            cmd.args(["--gue-port", &GUE_PORT.to_string()]);
            let mut decap = Spawned::start(&format!("{}-decap", rs.name), cmd, rig.dir.path())?;
            decap.wait_for_output("ready", READY_TIMEOUT)?;
            rig.decaps.push(decap);
            rig.server_procs.extend(start_vip_testservers(
                &rig.bins,
                &rs.ns,
                &rs.name,
                TUN_VIP,
                Some(TUN_VIP6),
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
            .args(["--tunnel-source", &TUN_DIRECTOR.to_string()])
            .args(["--tunnel-source", &TUN_DIRECTOR6.to_string()])
            .arg("--configure-sysctls");
        self.ulvsd = Some(spawn_ulvsd(cmd, &sock, self.dir.path())?);
        Ok(())
    }

    /// Runs `ulvsadm` against this rig's daemon.
    pub fn ulvsadm(&self, args: &[&str]) -> Result<String> {
        self.bins.ulvsadm_at(&self.socket(), args)
    }

    /// The counters line of real server `i`'s `ulvs-decap` (asked for with SIGUSR1), parsed
    /// into `name=value` pairs.
    pub fn decap_counters(&mut self, i: usize) -> Result<Vec<(String, u64)>> {
        // Only whole lines count: stderr is unbuffered, so a line may arrive in pieces.
        fn complete(s: &str) -> &str {
            &s[..s.rfind('\n').map_or(0, |i| i + 1)]
        }
        let p = self.decaps.get_mut(i).context("no such real server")?;
        let before = complete(&p.stderr()).matches("counters:").count();
        p.signal(libc::SIGUSR1)?;
        wait_until("ulvs-decap to print its counters", READY_TIMEOUT, || {
            Ok(complete(&p.stderr()).matches("counters:").count() > before)
        })?;
        let err = p.stderr();
        let line = complete(&err)
            .lines()
            .rfind(|l| l.contains("counters:"))
            .context("counters line")?;
        let mut out = Vec::new();
        for kv in line
            .split("counters:")
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
        {
            let (k, v) = kv.split_once('=').context("name=value")?;
            out.push((k.to_owned(), v.parse().context("counter value")?));
        }
        Ok(out)
    }

    /// `ulvsd`'s and every `ulvs-decap`'s logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = self.ulvsd.as_ref().map(|p| p.logs()).unwrap_or_default();
        for d in &self.decaps {
            s.push_str(&d.logs());
        }
        s
    }
}

/// The VIP's TCP / UDP service address.
pub fn tun_vip() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(TUN_VIP, PORT))
}

/// The IPv6 VIP's TCP / UDP service address.
pub fn tun_vip6() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(TUN_VIP6, PORT, 0, 0))
}
