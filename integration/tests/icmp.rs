//! End-to-end ICMP tests (needs root): ICMP errors of NAT real servers are steered into the
//! TUN and translated for the client, while untracked ICMP of real servers (a real server
//! pinging the client) is handed back by the engine and still flows; errors of a router between
//! the director and a NAT real server (a smaller link on the way) reach the client translated,
//! so path MTU discovery works through the director; errors that reach the VIP about a
//! direct-routing or tunnel real server's reply are sent on to that real server.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use integration::dr::tcp_bulk;
use integration::dr::{DrRig, LAN_CLIENT, dr_vip};
use integration::netns::{Netns, veth};
use integration::process::Spawned;
use integration::topology::{
    CLIENT_ADDR, CLIENT_ADDR6, DIRECTOR_RS_ADDR, DIRECTOR_RS_ADDR6, RS_TCP_PORT, TUN_NAME, VIP,
    VIP6, vip_tcp, vip_udp, vip6_tcp, vip6_udp,
};
use integration::tunnel::{TUN_CLIENT, TunRig, tun_vip};
use integration::{Bins, NatRig, require_root, wait_until};

/// A UDP port on the real server where nothing listens: the real server answers with ICMP
/// port unreachable.
const CLOSED_PORT: u16 = 5999;

/// Sends datagrams from a connected UDP socket until a receive fails with "connection
/// refused" (the client's kernel matched a translated port unreachable to the socket), for at
/// most `timeout`. Any answer or a different error is a failure.
fn expect_refused(target: SocketAddr, timeout: Duration) -> Result<()> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(target)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        match sock.send(b"anyone there?") {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => return Err(e).context("send"),
            Ok(_) => {}
        }
        match sock.recv(&mut buf) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e).context("recv"),
            Ok(n) => bail!("unexpected answer from {target}: {:?}", &buf[..n]),
        }
    }
    bail!("no port unreachable for {target} within {timeout:?}")
}

/// The Internet checksum of `data`.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Pings `dst` from the calling thread's namespace with a raw ICMP / ICMPv6 socket until an
/// echo reply with our identifier comes back, for at most `timeout`.
fn ping(dst: IpAddr, timeout: Duration) -> Result<()> {
    let (domain, proto, req, rep) = match dst {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128, 129),
    };
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 300_000,
    };
    // SAFETY: the pointer and length describe `tv`.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let ident = (std::process::id() & 0xffff) as u16;
    let deadline = Instant::now() + timeout;
    let mut seq = 0u16;
    while Instant::now() < deadline {
        seq += 1;
        let mut msg = [0u8; 16];
        msg[0] = req;
        msg[4..6].copy_from_slice(&ident.to_be_bytes());
        msg[6..8].copy_from_slice(&seq.to_be_bytes());
        msg[8..].copy_from_slice(b"ulvsping");
        if dst.is_ipv4() {
            // The kernel fills the ICMPv6 checksum itself; ICMPv4's is ours.
            let c = inet_checksum(&msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
        }
        send_to(&fd, &msg, dst)?;
        let mut buf = [0u8; 1500];
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until {
            // SAFETY: the pointer and length describe `buf`.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                break;
            }
            let n = n as usize;
            // IPv4 raw sockets deliver the IP header too; ICMPv6 ones only the message.
            let icmp = if dst.is_ipv4() {
                let hl = usize::from(buf[0] & 0x0f) * 4;
                &buf[hl.min(n)..n]
            } else {
                &buf[..n]
            };
            if icmp.len() >= 8 && icmp[0] == rep && icmp[4..6] == ident.to_be_bytes() {
                return Ok(());
            }
        }
    }
    bail!("no echo reply from {dst} within {timeout:?}")
}

fn send_to(fd: &OwnedFd, msg: &[u8], dst: IpAddr) -> Result<()> {
    let rc = match dst {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain data.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            // SAFETY: the pointers and lengths describe `msg` and `sa`.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            }
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr = a.octets();
            // SAFETY: the pointers and lengths describe `msg` and `sa`.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as u32,
                )
            }
        }
    };
    ensure!(
        rc == msg.len() as isize,
        "sendto {dst}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// A NAT UDP service whose real server has nothing on its port: the real server's port
/// unreachable (to the client, quoting client -> real server) is steered into the TUN by the
/// `ipproto icmp` rule and translated (quoting client -> VIP, from the VIP), so the client's
/// connected socket sees "connection refused". A real server's own ping to the client is
/// steered too, handed back by the engine and answered.
#[test]
fn nat_real_server_icmp_errors_are_translated_and_its_pings_still_flow() -> Result<()> {
    require_root()?;
    let mut rig = NatRig::with_ulvsd(Bins::from_env()?, 1)?;
    rig.enable_ipv6()?;
    let rs4 = format!("{}:{CLOSED_PORT}", rig.servers[0].addr);
    let rs6 = format!("[{}]:{CLOSED_PORT}", rig.servers[0].addr6());
    for (vip, rs) in [(vip_udp(), &rs4), (vip6_udp(), &rs6)] {
        let vip = vip.to_string();
        rig.ulvsadm(&["-A", "-u", &vip, "-s", "rr"])?;
        rig.ulvsadm(&["-a", "-u", &vip, "-r", rs, "-m"])?;
    }
    let rules = rig.director.ip(&["rule", "show"])?;
    ensure!(
        rules.contains("ipproto icmp"),
        "no ICMP steering rule:\n{rules}"
    );
    let rules6 = rig.director.ip(&["-6", "rule", "show"])?;
    ensure!(
        rules6.contains("ipproto ipv6-icmp"),
        "no ICMPv6 steering rule:\n{rules6}"
    );
    for vip in [vip_udp(), vip6_udp()] {
        rig.client
            .run(|| expect_refused(vip, Duration::from_secs(10)))?
            .with_context(|| rig.diagnostics())?;
    }
    for client in [IpAddr::V4(CLIENT_ADDR), IpAddr::V6(CLIENT_ADDR6)] {
        rig.servers[0]
            .ns
            .run(|| ping(client, Duration::from_secs(10)))?
            .with_context(|| format!("real server pings {client}\n{}", rig.diagnostics()))?;
    }
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
/// The FULLNAT local addresses (on no link; ulvsd routes them into its TUN).
const LADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
const LADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x1b5, 0, 3, 0, 0, 0, 1);
/// The port of the FULLNAT services on the VIPs.
const FULLNAT_PORT: u16 = 81;
/// The MTU of the link between the router and the far real server.
const SMALL_MTU: &str = "1400";

/// A NAT (and FULLNAT) real server behind a router: rs1 of the rig becomes the router, and the real server
/// sits on a 1400-byte link behind it. The real server advertises a full-sized MSS (`advmss`),
/// so the client sends 1500-byte DF segments; the router answers them with FRAG_NEEDED /
/// Packet Too Big 1400 from its own address, quoting client -> real server. The director
/// steers it into the TUN by the `iif br0 ipproto icmp` rule (the source is the router, not
/// the real server), and the engine sends it on to the client from the VIP quoting
/// client -> VIP. The client caches MTU 1400 for the VIP and the echo transfer completes, over
/// IPv4 and IPv6. The same with FULLNAT services to the same real server: the router's error
/// goes to the local address, which is routed into the TUN. The router's own pings to the
/// client and the client's pings of the router are steered too, handed back and answered; ICMP
/// to the director's own addresses is not steered (`ip route get ... iif br0 ipproto icmp`
/// says `local`) and is answered.
#[test]
fn errors_from_a_router_before_a_nat_real_server_reach_the_client() -> Result<()> {
    require_root()?;
    let bins = Bins::from_env()?;
    let mut rig = NatRig::with_ulvsd(bins.clone(), 1)?;
    rig.enable_ipv6()?;
    let hop = &rig.servers[0].ns;
    let far = Netns::new("far")?;
    veth(hop, "far0", &far, "eth0")?;
    hop.ip(&["link", "set", "far0", "mtu", SMALL_MTU])?;
    far.ip(&["link", "set", "eth0", "mtu", SMALL_MTU])?;
    hop.add_addr("far0", FAR_NET_HOP, 24)?;
    hop.add_addr6("far0", FAR_NET_HOP6, 64)?;
    far.add_addr("eth0", FAR, 24)?;
    far.add_addr6("eth0", FAR6, 64)?;
    // The far server announces the MSS of a 1500-byte path, as a server on a bigger LAN would.
    let hop_v4 = FAR_NET_HOP.to_string();
    far.ip(&["route", "add", "default", "via", &hop_v4, "advmss", "1460"])?;
    let hop_v6 = FAR_NET_HOP6.to_string();
    far.ip(&[
        "-6", "route", "add", "default", "via", &hop_v6, "advmss", "1440",
    ])?;
    hop.sysctl("net/ipv4/ip_forward", "1")?;
    hop.sysctl("net/ipv6/conf/all/forwarding", "1")?;
    // Before the real servers are added, so ulvsd finds br0 as their interface.
    let via = rig.servers[0].addr.to_string();
    rig.director
        .ip(&["route", "add", "198.18.2.0/24", "via", &via])?;
    let via6 = rig.servers[0].addr6().to_string();
    rig.director
        .ip(&["-6", "route", "add", "fd00:1b5:0:2::/64", "via", &via6])?;
    let mut servers = Vec::new();
    for (label, tcp) in [
        ("far-testserver", format!("{FAR}:{RS_TCP_PORT}")),
        ("far-testserver6", format!("[{FAR6}]:{RS_TCP_PORT}")),
    ] {
        let mut cmd = far.command(&bins.testserver);
        cmd.args(["--name", "far", "--tcp", &tcp]);
        let mut server = Spawned::start(label, cmd, rig.dir())?;
        server.wait_for_output("ready", Duration::from_secs(30))?;
        servers.push(server);
    }
    let logs = |servers: &[Spawned]| {
        servers.iter().map(Spawned::logs).collect::<String>() + &rig.diagnostics()
    };
    let fullnat_vip = SocketAddr::new(IpAddr::V4(VIP), FULLNAT_PORT);
    let fullnat_vip6 = SocketAddr::new(IpAddr::V6(VIP6), FULLNAT_PORT);
    let cases = [
        (vip_tcp(), format!("{FAR}:{RS_TCP_PORT}"), None),
        (vip6_tcp(), format!("[{FAR6}]:{RS_TCP_PORT}"), None),
        (
            fullnat_vip,
            format!("{FAR}:{RS_TCP_PORT}"),
            Some(IpAddr::V4(LADDR)),
        ),
        (
            fullnat_vip6,
            format!("[{FAR6}]:{RS_TCP_PORT}"),
            Some(IpAddr::V6(LADDR6)),
        ),
    ];
    for (vip, rs, laddr) in cases {
        let v = vip.to_string();
        rig.ulvsadm(&["-A", "-t", &v, "-s", "rr"])?;
        let method = match laddr {
            Some(l) => {
                rig.ulvsadm(&["-P", "-t", &v, "-z", &l.to_string()])?;
                "--fullnat"
            }
            None => "-m",
        };
        rig.ulvsadm(&["-a", "-t", &v, "-r", &rs, method])?;
        // The VIP's path MTU may be cached from the previous case.
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        rig.client.ip(&[family, "route", "flush", "cache"])?;
        let (name, _, n) = rig
            .client
            .run(|| tcp_bulk(vip, 40_000, Duration::from_secs(10)))?
            .with_context(|| format!("bulk transfer to {vip} ({method})\n{}", logs(&servers)))?;
        ensure!(name == "far" && n == 40_000, "{name} echoed {n} bytes");
        let route = rig.client.ip(&["route", "get", &vip.ip().to_string()])?;
        ensure!(
            route.contains(&format!("mtu {SMALL_MTU}")),
            "the client did not learn the router's MTU for {vip} ({method}): {route}\n{}",
            logs(&servers)
        );
    }
    let rules = rig.director.ip(&["rule", "show"])?;
    ensure!(
        rules.contains("iif br0 ipproto icmp"),
        "no per-interface ICMP rule:\n{rules}"
    );
    let rules6 = rig.director.ip(&["-6", "rule", "show"])?;
    ensure!(
        rules6.contains("iif br0 ipproto ipv6-icmp"),
        "no per-interface ICMPv6 rule:\n{rules6}"
    );
    // Untracked ICMP through the steering rule: both ways, both families.
    let router = [
        IpAddr::V4(rig.servers[0].addr),
        IpAddr::V6(rig.servers[0].addr6()),
    ];
    for client in [IpAddr::V4(CLIENT_ADDR), IpAddr::V6(CLIENT_ADDR6)] {
        hop.run(|| ping(client, Duration::from_secs(10)))?
            .with_context(|| format!("the router pings {client}\n{}", logs(&servers)))?;
    }
    for r in router {
        rig.client
            .run(|| ping(r, Duration::from_secs(10)))?
            .with_context(|| format!("the client pings the router at {r}\n{}", logs(&servers)))?;
    }
    // The director's own addresses are in the `local` table, looked up before the rule: ICMP
    // to them is never steered into the TUN, and is answered.
    for (dst, family) in [
        (IpAddr::V4(DIRECTOR_RS_ADDR), "-4"),
        (IpAddr::V6(DIRECTOR_RS_ADDR6), "-6"),
    ] {
        let src = if dst.is_ipv4() { router[0] } else { router[1] };
        let proto = if dst.is_ipv4() { "icmp" } else { "ipv6-icmp" };
        let get = |to: IpAddr| {
            rig.director.ip(&[
                family,
                "route",
                "get",
                &to.to_string(),
                "from",
                &src.to_string(),
                "iif",
                "br0",
                "ipproto",
                proto,
            ])
        };
        let own = get(dst)?;
        ensure!(
            own.starts_with("local ") && !own.contains(TUN_NAME),
            "ICMP to the director's {dst} would be steered: {own}"
        );
        let client = if dst.is_ipv4() {
            IpAddr::V4(CLIENT_ADDR)
        } else {
            IpAddr::V6(CLIENT_ADDR6)
        };
        let through = get(client)?;
        ensure!(
            through.contains(&format!("dev {TUN_NAME}")),
            "ICMP from the router to {client} is not steered into the TUN: {through}"
        );
        hop.run(|| ping(dst, Duration::from_secs(10)))?
            .with_context(|| format!("the router pings the director at {dst}"))?;
    }
    drop(servers);
    drop(far);
    Ok(())
}

/// Sends a UDP datagram from a connected socket to `vip` until an answer comes back (the
/// engine then tracks the connection and the real server has replied from the VIP), then
/// sends the VIP a FRAG_NEEDED with next-hop MTU `mtu` quoting that reply (VIP:port ->
/// client), as a router on the real server's direct path to the client would. Returns the
/// client port.
fn forge_frag_needed_for_a_reply(vip: SocketAddr, client: Ipv4Addr, mtu: u16) -> Result<u16> {
    let IpAddr::V4(vip_ip) = vip.ip() else {
        bail!("IPv4 only");
    };
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(vip)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = [0u8; 512];
    let mut answered = false;
    for _ in 0..20 {
        sock.send(b"hello")?;
        if sock.recv(&mut buf).is_ok() {
            answered = true;
            break;
        }
    }
    ensure!(answered, "no answer from {vip}");
    let cport = sock.local_addr()?.port();
    // The quoted reply: IPv4 header (DF, UDP, VIP -> client) and the UDP header.
    let mut quote = vec![0x45, 0, 0, 36, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
    quote.extend_from_slice(&vip_ip.octets());
    quote.extend_from_slice(&client.octets());
    let c = inet_checksum(&quote);
    quote[10..12].copy_from_slice(&c.to_be_bytes());
    quote.extend_from_slice(&vip.port().to_be_bytes());
    quote.extend_from_slice(&cport.to_be_bytes());
    quote.extend_from_slice(&[0, 16, 0, 0]);
    quote.extend_from_slice(b"greeting");
    let mut msg = vec![3, 4, 0, 0, 0, 0];
    msg.extend_from_slice(&mtu.to_be_bytes());
    msg.extend_from_slice(&quote);
    let c = inet_checksum(&msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    send_to(&fd, &msg, vip.ip())?;
    Ok(cport)
}

/// Waits until the real server's kernel has a path MTU of `mtu` cached for `client` (it took
/// the relayed FRAG_NEEDED as an answer to its own reply).
fn wait_for_pmtu(rs: &Netns, client: Ipv4Addr, mtu: u16) -> Result<()> {
    let want = format!("mtu {mtu}");
    wait_until(
        "the real server to learn the path MTU",
        Duration::from_secs(5),
        || {
            Ok(rs
                .ip(&["route", "get", &client.to_string()])?
                .contains(&want))
        },
    )
}

/// Direct routing: the real server answers the client straight from the VIP; a FRAG_NEEDED
/// about that reply comes back to the VIP, which leads to the director. ulvsd sends it on to
/// the real server's MAC unchanged, and the real server's kernel learns the smaller path MTU.
#[test]
fn frag_needed_at_the_vip_reaches_the_direct_routing_real_server() -> Result<()> {
    require_root()?;
    let rig = DrRig::new(Bins::from_env()?, 1)?;
    rig.add_dr_service("-u")?;
    let client = LAN_CLIENT;
    rig.client
        .run(|| forge_frag_needed_for_a_reply(dr_vip(), client, 1300))?
        .with_context(|| rig.logs())?;
    wait_for_pmtu(&rig.servers[0].ns, client, 1300).with_context(|| rig.logs())
}

/// Tunnel mode: the same, with the error encapsulated to the real server (IPIP), which
/// decapsulates it with ulvs-decap.
#[test]
fn frag_needed_at_the_vip_reaches_the_tunnel_real_server() -> Result<()> {
    require_root()?;
    let rig = TunRig::new(Bins::from_env()?, 1, 1500)?;
    let vip = tun_vip().to_string();
    rig.ulvsadm(&["-A", "-u", &vip, "-s", "rr"])?;
    rig.ulvsadm(&[
        "-a",
        "-u",
        &vip,
        "-r",
        &rig.servers[0].addr.to_string(),
        "-i",
    ])?;
    let client = TUN_CLIENT;
    rig.client
        .run(|| forge_frag_needed_for_a_reply(tun_vip(), client, 1300))?
        .with_context(|| rig.logs())?;
    wait_for_pmtu(&rig.servers[0].ns, client, 1300).with_context(|| rig.logs())
}
