//! End-to-end NAT over IPv6 (needs root): the rig's fd00:1b5::/48 side, a real `ulvsd`
//! configured with the real `ulvsadm`, TCP and UDP from the client to IPv6 test servers, with
//! masquerading (NAT66) and with FULLNAT over IPv6 (local addresses from fd00:1b5:2::/64).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::client::{Reply, split};
use integration::topology::{CLIENT_ADDR6, vip6_tcp, vip6_udp};
use integration::{Bins, NatRig, require_root};

/// The FULLNAT local address of the IPv6 services: on no link, routed into the TUN by ulvsd.
const LADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 2, 0, 0, 0, 1);

fn rig6(n_servers: usize) -> Result<NatRig> {
    require_root()?;
    let mut rig = NatRig::new(Bins::from_env()?, n_servers)?;
    rig.enable_ipv6()?;
    rig.start_ulvsd()?;
    Ok(rig)
}

/// `flag vip` (rr) with every real server's IPv6 address, forwarded by `method`; FULLNAT
/// services get [`LADDR6`] first.
fn configure(rig: &NatRig, flag: &str, vip: SocketAddr, method: &str) -> Result<()> {
    let vip = vip.to_string();
    rig.ulvsadm(&["-A", flag, &vip, "-s", "rr"])?;
    if method == "--fullnat" {
        rig.ulvsadm(&["-P", flag, &vip, "-z", &LADDR6.to_string()])?;
    }
    for rs in &rig.servers {
        let r = if flag == "-u" { rs.udp6() } else { rs.tcp6() };
        rig.ulvsadm(&["-a", flag, &vip, "-r", &r, method, "-w", "1"])?;
    }
    Ok(())
}

/// Every reply came from the VIP; the real server saw `source` (or, with `None`, the client's
/// own address and port).
fn check(replies: &[Reply], vip: SocketAddr, source: Option<IpAddr>) -> Result<()> {
    for r in replies {
        ensure!(
            r.peer == vip,
            "reply from {} instead of the VIP {vip}: {r:?}",
            r.peer
        );
        match source {
            None => ensure!(
                r.seen_client == SocketAddr::new(CLIENT_ADDR6.into(), r.local.port()),
                "real server {} saw client {} instead of [{CLIENT_ADDR6}]:{}",
                r.server,
                r.seen_client,
                r.local.port()
            ),
            Some(ip) => ensure!(
                r.seen_client.ip() == ip,
                "real server {} saw source {} instead of the local address {ip}",
                r.server,
                r.seen_client
            ),
        }
    }
    let per_server = split(replies);
    ensure!(
        per_server.get("rs1") == Some(&10) && per_server.get("rs2") == Some(&10),
        "rr over two real servers: {per_server:?}"
    );
    Ok(())
}

#[test]
fn nat66_tcp_spreads_over_ipv6_real_servers() -> Result<()> {
    let rig = rig6(2)?;
    configure(&rig, "-t", vip6_tcp(), "-m")?;
    let replies = rig
        .tcp_probes(vip6_tcp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    check(&replies, vip6_tcp(), None)
}

#[test]
fn nat66_udp_spreads_over_ipv6_real_servers() -> Result<()> {
    let rig = rig6(2)?;
    configure(&rig, "-u", vip6_udp(), "-m")?;
    let replies = rig
        .udp_probes(vip6_udp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    check(&replies, vip6_udp(), None)
}

#[test]
fn fullnat66_tcp_real_servers_see_the_local_address() -> Result<()> {
    let rig = rig6(2)?;
    configure(&rig, "-t", vip6_tcp(), "--fullnat")?;
    let replies = rig
        .tcp_probes(vip6_tcp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    check(&replies, vip6_tcp(), Some(LADDR6.into()))
}

#[test]
fn fullnat66_udp_real_servers_see_the_local_address() -> Result<()> {
    let rig = rig6(2)?;
    configure(&rig, "-u", vip6_udp(), "--fullnat")?;
    let replies = rig
        .udp_probes(vip6_udp(), 20, Duration::from_secs(60))
        .with_context(|| rig.diagnostics())?;
    check(&replies, vip6_udp(), Some(LADDR6.into()))
}
