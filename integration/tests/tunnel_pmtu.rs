//! Path MTU through a tunnel (needs root): the director's route to the real server has MTU
//! 1400, so a full-sized client packet plus the IPIP header does not fit. The engine must answer
//! the client with ICMP FRAG_NEEDED carrying 1400 - 20 = 1380; the client's kernel then caches
//! that MTU for the VIP, TCP re-segments, and the bulk transfer completes.
//!
//! And a smaller hop behind the director (a router between it and the real server): the
//! router's FRAG_NEEDED goes to the director's tunnel source, and ulvsd relays it to the client
//! with the tunnel overhead taken off.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::dr::tcp_bulk;
use integration::netns::{Netns, veth};
use integration::process::Spawned;
use integration::tunnel::{GUE_PORT, TUN_VIP, TUN_VIP6, TunRig, tun_vip, tun_vip6};
use integration::{Bins, require_root};

#[test]
fn tcp_through_a_smaller_tunnel_path_gets_frag_needed_and_completes() -> Result<()> {
    require_root()?;
    let rig = TunRig::new(Bins::from_env()?, 1, 1500)?;
    let rs = rig.servers[0].addr.to_string();
    // Before the real server is added, so ulvsd learns the path MTU from this route.
    rig.director.ip(&[
        "route",
        "add",
        &format!("{rs}/32"),
        "dev",
        "br0",
        "mtu",
        "1400",
    ])?;
    let vip = tun_vip().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"])?;
    rig.ulvsadm(&["-a", "-t", &vip, "-r", &rs, "-i"])?;
    let (_, _, n) = rig
        .client
        .run(|| tcp_bulk(tun_vip(), 40_000, Duration::from_secs(10)))?
        .with_context(|| format!("bulk transfer\n{}", rig.logs()))?;
    ensure!(n == 40_000);
    let route = rig.client.ip(&["route", "get", &TUN_VIP.to_string()])?;
    ensure!(
        route.contains("mtu 1380"),
        "the client did not learn the tunnel's MTU: {route}"
    );
    Ok(())
}

/// The router's address on the far real server's link.
const FAR_NET_HOP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The far real server's address.
const FAR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// The router's IPv6 address on the far link.
const FAR_NET_HOP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 2, 0, 0, 0, 1);
/// The far real server's IPv6 address.
const FAR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 2, 0, 0, 0, 2);

/// A router between the director and the real server has a 1400-byte next hop; the director's
/// own route MTU is 1500, so the engine encapsulates full-sized packets and the router answers
/// the director's tunnel source with FRAG_NEEDED / Packet Too Big 1400. The ICMP watcher hands
/// the kernel's copy to the engine, which tells the client 1400 minus the outer header from the
/// VIP (1380 over IPIP, 1360 over IPv6-in-IPv6); both transfers complete.
#[test]
fn errors_from_a_hop_behind_the_director_reach_the_client_minus_the_tunnel() -> Result<()> {
    require_root()?;
    let bins = Bins::from_env()?;
    let rig = TunRig::new(bins.clone(), 1, 1500)?;
    // rs1 turns into the router; the real server is a new host behind it.
    let hop = &rig.servers[0].ns;
    let far = Netns::new("far")?;
    veth(hop, "far0", &far, "eth0")?;
    hop.ip(&["link", "set", "far0", "mtu", "1400"])?;
    far.ip(&["link", "set", "eth0", "mtu", "1400"])?;
    hop.add_addr("far0", FAR_NET_HOP, 24)?;
    hop.add_addr6("far0", FAR_NET_HOP6, 64)?;
    far.add_addr("eth0", FAR, 24)?;
    far.add_addr6("eth0", FAR6, 64)?;
    far.default_route(FAR_NET_HOP)?;
    far.default_route6(FAR_NET_HOP6)?;
    hop.sysctl("net/ipv4/ip_forward", "1")?;
    hop.sysctl("net/ipv6/conf/all/forwarding", "1")?;
    // The router forwards the far server's replies from the VIPs: VIPs of its own would make
    // them martians.
    hop.ip(&["addr", "del", &format!("{TUN_VIP}/32"), "dev", "lo"])?;
    hop.ip(&["-6", "addr", "del", &format!("{TUN_VIP6}/128"), "dev", "lo"])?;
    far.link_up("lo")?;
    far.add_addr("lo", TUN_VIP, 32)?;
    far.add_addr6("lo", TUN_VIP6, 128)?;
    for k in [
        "net/ipv4/conf/all/rp_filter",
        "net/ipv4/conf/default/rp_filter",
        "net/ipv4/conf/eth0/rp_filter",
    ] {
        far.sysctl(k, "0")?;
    }
    let via = rig.servers[0].addr.to_string();
    rig.director
        .ip(&["route", "add", "198.18.2.0/24", "via", &via])?;
    let via6 = rig.servers[0].addr6.to_string();
    rig.director
        .ip(&["-6", "route", "add", "fd00:1b5:0:2::/64", "via", &via6])?;
    let logs = tempfile::tempdir()?;
    let mut cmd = far.command(&bins.decap);
    cmd.args(["--gue-port", &GUE_PORT.to_string()]);
    let mut decap = Spawned::start("far-decap", cmd, logs.path())?;
    decap.wait_for_output("ready", Duration::from_secs(30))?;
    let mut servers = Vec::new();
    for (label, tcp, udp) in [
        (
            "far-testserver",
            "0.0.0.0:80".to_owned(),
            format!("{TUN_VIP}:80"),
        ),
        (
            "far-testserver6",
            format!("[{TUN_VIP6}]:80"),
            format!("[{TUN_VIP6}]:80"),
        ),
    ] {
        let mut cmd = far.command(&bins.testserver);
        cmd.args(["--name", "far", "--tcp", &tcp, "--udp", &udp]);
        let mut server = Spawned::start(label, cmd, logs.path())?;
        server.wait_for_output("ready", Duration::from_secs(30))?;
        servers.push(server);
    }

    for (vip, rs, mtu) in [
        (tun_vip(), FAR.to_string(), "mtu 1380"),
        (tun_vip6(), format!("[{FAR6}]:80"), "mtu 1360"),
    ] {
        let v = vip.to_string();
        rig.ulvsadm(&["-A", "-t", &v, "-s", "rr"])?;
        rig.ulvsadm(&["-a", "-t", &v, "-r", &rs, "-i"])?;
        let (_, _, n) = rig
            .client
            .run(|| tcp_bulk(vip, 40_000, Duration::from_secs(10)))?
            .with_context(|| format!("bulk transfer to {vip}\n{}{}", rig.logs(), decap.logs()))?;
        ensure!(n == 40_000);
        let route = rig.client.ip(&["route", "get", &vip.ip().to_string()])?;
        ensure!(
            route.contains(mtu),
            "the client did not learn the hop's MTU minus the outer header ({mtu}): {route}\n{}",
            rig.logs()
        );
    }
    drop(servers);
    drop(decap);
    Ok(())
}
