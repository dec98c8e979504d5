//! End-to-end tunnel mode (needs root): `ulvsd -i` encapsulates in IPIP, GUE and GRE, the real
//! servers decapsulate with `ulvs-decap` and answer the client directly. The real-server LAN
//! has an MTU of 1600, so full-sized client packets (1500) fit every tunnel. For each tunnel type,
//! over IPv4 and over IPv6 (IPv6-in-IPv6 for ipip, RFC 2473), TCP and UDP: every byte comes
//! back, both real servers are used, no reply passed the director (its outbound counters stay
//! at zero), and the decapsulators delivered packets and dropped none. The mixed-family cases
//! IPVS allows in tunnel mode (an IPv4 VIP on IPv6 real-server addresses and the reverse) are
//! covered with ipip, and path MTU to an IPv6 tunnel endpoint (Packet Too Big / FRAG_NEEDED
//! announcing the room left inside the tunnel) for an IPv6 and an IPv4 client.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration::dr::tcp_bulk;
use integration::tunnel::{
    GUE_PORT, TUN_CLIENT, TUN_CLIENT6, TunRig, TunServer, tun_vip, tun_vip6,
};
use integration::{Bins, require_root};

/// The MTU of the director's LAN and the real servers' links: room for a 1500-byte client
/// packet plus the largest overhead (GUE, 32 bytes).
const LAN_MTU: u32 = 1600;

fn rig(n: usize) -> Result<TunRig> {
    require_root()?;
    TunRig::new(Bins::from_env()?, n, LAN_MTU)
}

/// The packets the director saw in the reply direction (every `out_packets` counter).
fn out_pkts(rig: &TunRig) -> Result<u64> {
    integration::out_packets(&rig.ulvsadm(&["-L", "-n", "-o", "json"])?)
}

/// The address families of a case: the VIP's (what the client speaks) and the real servers'
/// (the outer header's).
#[derive(Debug, Clone, Copy)]
struct Families {
    vip6: bool,
    rs6: bool,
}

const V4: Families = Families {
    vip6: false,
    rs6: false,
};
const V6: Families = Families {
    vip6: true,
    rs6: true,
};

impl Families {
    fn vip(self) -> SocketAddr {
        if self.vip6 { tun_vip6() } else { tun_vip() }
    }

    fn client(self) -> IpAddr {
        if self.vip6 {
            IpAddr::V6(TUN_CLIENT6)
        } else {
            IpAddr::V4(TUN_CLIENT)
        }
    }

    fn rs(self, rs: &TunServer) -> String {
        if self.rs6 {
            rs.addr6.to_string()
        } else {
            rs.addr.to_string()
        }
    }
}

/// ulvsadm's tunnel options for a type.
fn tun_args(kind: &str) -> Vec<String> {
    let mut v = vec!["-i".to_owned(), "--tun-type".to_owned(), kind.to_owned()];
    match kind {
        "gue" => v.extend(["--tun-port".to_owned(), GUE_PORT.to_string()]),
        "gue-remcsum" => {
            v[2] = "gue".to_owned();
            v.extend([
                "--tun-port".to_owned(),
                GUE_PORT.to_string(),
                "--tun-remcsum".to_owned(),
            ]);
        }
        "gre" => v.push("--tun-csum".to_owned()),
        _ => {}
    }
    v
}

fn add_service(rig: &TunRig, proto_flag: &str, kind: &str, fam: Families) -> Result<()> {
    let vip = fam.vip().to_string();
    rig.ulvsadm(&["-A", proto_flag, &vip, "-s", "rr"])?;
    for rs in &rig.servers {
        let mut args = vec![
            "-a".to_owned(),
            proto_flag.to_owned(),
            vip.clone(),
            "-r".to_owned(),
            fam.rs(rs),
        ];
        args.extend(tun_args(kind));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rig.ulvsadm(&args)?;
    }
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    ensure!(
        listing.matches("Tunnel").count() == rig.servers.len(),
        "-L -n:\n{listing}"
    );
    Ok(())
}

/// Every real server's decapsulator dropped nothing, and together they received tunnel
/// packets of the real servers' family only (the outer header's) and delivered them.
fn check_decaps(rig: &mut TunRig, kind: &str, fam: Families) -> Result<()> {
    let mut sum = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..rig.servers.len() {
        let c = rig.decap_counters(i)?;
        for (k, v) in &c {
            let bad = k.starts_with("drop_") || k == "truncated" || k == "tun_write_errors";
            ensure!(!bad || *v == 0, "rs{} decap: {c:?}", i + 1);
            *sum.entry(k.clone()).or_default() += v;
        }
    }
    let get = |k: &str| sum.get(k).copied().unwrap_or(0);
    let delivered = get("delivered");
    ensure!(delivered > 0, "no packet was decapsulated");
    let (want, other) = if fam.rs6 {
        ("received_v6", "received_v4")
    } else {
        ("received_v4", "received_v6")
    };
    ensure!(
        get(want) >= delivered && get(other) == 0,
        "{fam:?}: outer family of the tunnel packets: {sum:?}"
    );
    // With --tun-remcsum the TUN's partial checksums travel as GUE remote checksum offload and
    // the real servers complete them; without it no packet carries the option.
    let remcsum = get("remcsum");
    if kind == "gue-remcsum" {
        ensure!(
            remcsum > 0,
            "no packet carried remote checksum offload: {sum:?}"
        );
    } else {
        ensure!(remcsum == 0, "{kind}: {sum:?}");
    }
    Ok(())
}

fn tcp_case(kind: &str, fam: Families) -> Result<()> {
    let mut rig = rig(2)?;
    add_service(&rig, "-t", kind, fam)?;
    let vip = fam.vip();
    let mut seen = BTreeSet::new();
    let mut bytes = 0;
    let sizes: Vec<usize> = (0..4).map(|i| 20_000 + i * 3_000).collect();
    for (i, &size) in sizes.iter().enumerate() {
        let (name, peer, n) = rig
            .client
            .run(move || tcp_bulk(vip, size, Duration::from_secs(10)))?
            .with_context(|| format!("{kind} {fam:?} transfer {i}\n{}", rig.logs()))?;
        ensure!(peer == vip, "reply from {peer}");
        seen.insert(name);
        bytes += n;
    }
    ensure!(seen.len() == 2, "rr used only {seen:?}");
    ensure!(bytes == sizes.iter().sum::<usize>(), "{bytes} bytes echoed");
    let out = out_pkts(&rig)?;
    ensure!(out == 0, "the director saw {out} reply packets");
    check_decaps(&mut rig, kind, fam)
}

fn udp_case(kind: &str, fam: Families) -> Result<()> {
    let mut rig = rig(2)?;
    add_service(&rig, "-u", kind, fam)?;
    let vip = fam.vip();
    let replies = rig
        .client
        .run(|| {
            integration::client::udp_many(
                vip,
                6,
                Duration::from_secs(20),
                Duration::from_secs(1),
                5,
            )
        })?
        .with_context(|| format!("{kind} {fam:?}\n{}", rig.logs()))?;
    ensure!(replies.len() == 6);
    let mut seen = BTreeSet::new();
    for r in &replies {
        ensure!(r.peer == vip, "{r:?}");
        ensure!(
            r.seen_client.ip() == fam.client(),
            "the real server saw {r:?}"
        );
        seen.insert(r.server.clone());
    }
    ensure!(seen.len() == 2, "rr used only {seen:?}");
    ensure!(out_pkts(&rig)? == 0, "replies passed the director");
    check_decaps(&mut rig, kind, fam)
}

#[test]
fn ipip_tcp_bulk_echo() -> Result<()> {
    tcp_case("ipip", V4)
}

#[test]
fn ipip_udp() -> Result<()> {
    udp_case("ipip", V4)
}

#[test]
fn gue_tcp_bulk_echo() -> Result<()> {
    tcp_case("gue", V4)
}

#[test]
fn gue_udp() -> Result<()> {
    udp_case("gue", V4)
}

#[test]
fn gue_remcsum_tcp_bulk_echo() -> Result<()> {
    tcp_case("gue-remcsum", V4)
}

#[test]
fn gue_remcsum_udp() -> Result<()> {
    udp_case("gue-remcsum", V4)
}

#[test]
fn gre_tcp_bulk_echo() -> Result<()> {
    tcp_case("gre", V4)
}

#[test]
fn gre_udp() -> Result<()> {
    udp_case("gre", V4)
}

#[test]
fn ipip6_tcp_bulk_echo() -> Result<()> {
    tcp_case("ipip", V6)
}

#[test]
fn ipip6_udp() -> Result<()> {
    udp_case("ipip", V6)
}

#[test]
fn gue6_tcp_bulk_echo() -> Result<()> {
    tcp_case("gue", V6)
}

#[test]
fn gue6_udp() -> Result<()> {
    udp_case("gue", V6)
}

#[test]
fn gue6_remcsum_tcp_bulk_echo() -> Result<()> {
    tcp_case("gue-remcsum", V6)
}

#[test]
fn gre6_tcp_bulk_echo() -> Result<()> {
    tcp_case("gre", V6)
}

#[test]
fn gre6_udp() -> Result<()> {
    udp_case("gre", V6)
}

/// An IPv4 VIP on IPv6 real-server addresses: IPv4-in-IPv6.
#[test]
fn ipip_ipv4_vip_over_ipv6_real_servers_tcp() -> Result<()> {
    tcp_case(
        "ipip",
        Families {
            vip6: false,
            rs6: true,
        },
    )
}

/// An IPv6 VIP on IPv4 real-server addresses: IPv6-in-IPv4.
#[test]
fn ipip_ipv6_vip_over_ipv4_real_servers_udp() -> Result<()> {
    udp_case(
        "ipip",
        Families {
            vip6: true,
            rs6: false,
        },
    )
}

/// Path MTU to an IPv6 tunnel endpoint: the director's route to the real server has MTU 1400
/// (the LAN stays at 1500), so a full-sized client packet plus the outer IPv6 header (40
/// bytes) does not fit. The engine answers Packet Too Big (FRAG_NEEDED for an IPv4 client)
/// announcing 1360, the client's kernel caches it for the VIP, TCP re-segments and the bulk
/// transfer completes.
///
/// With `route_mtu` and `want_mtu` other than 1400 and 1360 the same for other paths.
fn pmtu_case(fam: Families) -> Result<()> {
    pmtu_case_with(fam, 1400, 1360)
}

fn pmtu_case_with(fam: Families, route_mtu: u32, want_mtu: u32) -> Result<()> {
    require_root()?;
    let rig = TunRig::new(Bins::from_env()?, 1, 1500)?;
    let rs = fam.rs(&rig.servers[0]);
    let host = if fam.rs6 { "128" } else { "32" };
    // Before the real server is added, so ulvsd learns the path MTU from this route.
    rig.director.ip(&[
        "route",
        "add",
        &format!("{rs}/{host}"),
        "dev",
        "br0",
        "mtu",
        &route_mtu.to_string(),
    ])?;
    let vip = fam.vip();
    let vip_s = vip.to_string();
    rig.ulvsadm(&["-A", "-t", &vip_s, "-s", "rr"])?;
    rig.ulvsadm(&["-a", "-t", &vip_s, "-r", &rs, "-i"])?;
    let (_, _, n) = rig
        .client
        .run(|| tcp_bulk(vip, 60_000, Duration::from_secs(10)))?
        .with_context(|| format!("bulk transfer\n{}", rig.logs()))?;
    ensure!(n == 60_000);
    let route = rig.client.ip(&["route", "get", &vip.ip().to_string()])?;
    ensure!(
        route.contains(&format!("mtu {want_mtu}")),
        "the client did not learn the tunnel's MTU {want_mtu}: {route}"
    );
    Ok(())
}

#[test]
fn ipip6_path_mtu_packet_too_big_reaches_the_client() -> Result<()> {
    pmtu_case(V6)
}

#[test]
fn ipip_ipv4_vip_over_ipv6_path_mtu_frag_needed() -> Result<()> {
    pmtu_case(Families {
        vip6: false,
        rs6: true,
    })
}

/// IPv6 over a 1290-byte IPv4 path (IPv6-in-IPv4): 1270 bytes are left, below the IPv6
/// minimum, so the client is told 1280 and its 1280-byte packets go in an outer IPv4 header
/// without DF that the director's kernel fragments and the real server's reassembles.
#[test]
fn ipip_ipv6_vip_over_a_small_ipv4_path_fragments_the_outer_header() -> Result<()> {
    pmtu_case_with(
        Families {
            vip6: true,
            rs6: false,
        },
        1290,
        1280,
    )
}
