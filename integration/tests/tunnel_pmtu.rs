//! Path MTU through a tunnel (needs root): the director's route to the real server has MTU
//! 1400, so a full-sized client packet plus the IPIP header does not fit. The engine must answer
//! the client with ICMP FRAG_NEEDED carrying 1400 - 20 = 1380; the client's kernel then caches
//! that MTU for the VIP, TCP re-segments, and the bulk transfer completes.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::dr::tcp_bulk;
use integration::tunnel::{TUN_VIP, TunRig, tun_vip};
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
