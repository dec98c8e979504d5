//! Path MTU through a tunnel (needs root): the director's route to the real server has MTU
//! 1400, so a full-sized client packet plus the IPIP header does not fit. The engine must answer
//! the client with ICMP FRAG_NEEDED carrying 1400 - 20 = 1380; the client's kernel then caches
//! that MTU for the VIP, TCP re-segments, and the bulk transfer completes.
//!
//! And a smaller hop behind the director (a router between it and the real server): the
//! router's FRAG_NEEDED goes to the director's tunnel source, and ulvsd relays it to the client
//! with the tunnel overhead taken off.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::dr::tcp_bulk;
use integration::netns::{Netns, veth};
use integration::process::Spawned;
use integration::tunnel::{GUE_PORT, TUN_VIP, TunRig, tun_vip};
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

/// The far real server's link (behind real server 1, which routes to it).
const FAR_NET_HOP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The far real server's address.
const FAR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);

/// A router between the director and the real server has a 1400-byte next hop; the director's
/// own route MTU is 1500, so the engine encapsulates full-sized packets and the router answers
/// the director's tunnel source with FRAG_NEEDED 1400. The ICMP watcher hands the kernel's copy
/// to the engine, which tells the client 1400 - 20 = 1380 from the VIP; the transfer completes.
#[test]
fn frag_needed_from_a_hop_behind_the_director_reaches_the_client_minus_the_tunnel() -> Result<()> {
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
    far.add_addr("eth0", FAR, 24)?;
    far.default_route(FAR_NET_HOP)?;
    hop.sysctl("net/ipv4/ip_forward", "1")?;
    // The router forwards the far server's replies from the VIP: a VIP of its own would make
    // them martians.
    hop.ip(&["addr", "del", &format!("{TUN_VIP}/32"), "dev", "lo"])?;
    far.link_up("lo")?;
    far.add_addr("lo", TUN_VIP, 32)?;
    for k in [
        "net/ipv4/conf/all/rp_filter",
        "net/ipv4/conf/default/rp_filter",
        "net/ipv4/conf/eth0/rp_filter",
    ] {
        far.sysctl(k, "0")?;
    }
    rig.director.ip(&[
        "route",
        "add",
        "198.18.2.0/24",
        "via",
        &rig.servers[0].addr.to_string(),
    ])?;
    let logs = tempfile::tempdir()?;
    let mut cmd = far.command(&bins.decap);
    cmd.args(["--gue-port", &GUE_PORT.to_string(), "--ipv4-only"]);
    let mut decap = Spawned::start("far-decap", cmd, logs.path())?;
    decap.wait_for_output("ready", Duration::from_secs(30))?;
    let mut cmd = far.command(&bins.testserver);
    let udp = format!("{TUN_VIP}:80");
    cmd.args(["--name", "far", "--tcp", "0.0.0.0:80", "--udp", &udp]);
    let mut server = Spawned::start("far-testserver", cmd, logs.path())?;
    server.wait_for_output("ready", Duration::from_secs(30))?;

    let vip = tun_vip().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"])?;
    rig.ulvsadm(&["-a", "-t", &vip, "-r", &FAR.to_string(), "-i"])?;
    let (_, _, n) = rig
        .client
        .run(|| tcp_bulk(tun_vip(), 40_000, Duration::from_secs(10)))?
        .with_context(|| format!("bulk transfer\n{}{}", rig.logs(), decap.logs()))?;
    ensure!(n == 40_000);
    let route = rig.client.ip(&["route", "get", &TUN_VIP.to_string()])?;
    ensure!(
        route.contains("mtu 1380"),
        "the client did not learn the hop's MTU minus the IPIP header: {route}\n{}",
        rig.logs()
    );
    drop(server);
    drop(decap);
    Ok(())
}
