//! Connection tracking end to end (needs root): under a SYN flood from random source ports that
//! fills a small connection table, an established TCP transfer through `ulvsd` keeps going
//! (half-open entries are evicted first, established ones never), and the table stays at its
//! limit. Also `ulvsadm --set` / `-L --timeout` / `-L -c` / `--stats` / `-Z` against the daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use integration::topology::{CLIENT_ADDR, VIP, VIP_TCP_PORT, vip_tcp};
use integration::{Bins, NatRig, require_root};

/// The daemon's table limit in these tests.
const MAX_CONNECTIONS: usize = 2000;
/// SYNs in the flood, and the time it may take at most.
const FLOOD_PACKETS: u32 = 30_000;
const FLOOD_TIME: Duration = Duration::from_secs(8);

fn rig() -> Result<NatRig> {
    require_root()?;
    let mut rig = NatRig::new(Bins::from_env()?, 1)?;
    rig.start_ulvsd_with(&["--max-connections", &MAX_CONNECTIONS.to_string()])?;
    let vip = vip_tcp().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"])?;
    rig.ulvsadm(&["-a", "-t", &vip, "-r", &rig.servers[0].tcp(), "-m"])?;
    Ok(rig)
}

/// The Internet checksum of `data` (RFC 1071) starting from `sum`.
fn checksum(mut sum: u32, data: &[u8]) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 TCP SYN from `src:sport` to `dst:dport` with correct checksums.
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(0, &p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut pseudo = 0u32;
    for w in [src.octets(), dst.octets()] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    pseudo += 6 + 20;
    let c = checksum(pseudo, &p[20..]);
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// Sends up to `count` SYNs from random source ports of the client address to the VIP, for at
/// most `limit`, through a raw socket of the calling thread's namespace. Returns how many went.
fn flood(count: u32, limit: Duration) -> Result<u32> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("raw socket");
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(VIP).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut x: u32 = 0x9e37_79b9;
    let start = Instant::now();
    let mut sent = 0;
    while sent < count && start.elapsed() < limit {
        // xorshift32: random source ports (above the client's ephemeral range's start).
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let sport = 1024 + (x % 30_000) as u16;
        let p = syn(CLIENT_ADDR, sport, VIP, VIP_TCP_PORT, x);
        // SAFETY: `p` and `dst` are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                p.as_ptr().cast(),
                p.len(),
                0,
                (&dst as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // A full socket buffer: let it drain.
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            return Err(e).context("send a SYN");
        }
        sent += 1;
    }
    Ok(sent)
}

/// An established connection through the VIP that echoes: sends `chunks` chunks of 1000 bytes
/// `gap` apart, each checked against its echo, for at most `limit`. Returns the chunks echoed.
fn transfer(chunks: u32, gap: Duration, limit: Duration) -> Result<u32> {
    let mut s = TcpStream::connect_timeout(&vip_tcp(), Duration::from_secs(5))
        .context("connect to the VIP")?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut greeting = String::new();
    r.read_line(&mut greeting).context("greeting")?;
    let start = Instant::now();
    for i in 0..chunks {
        if start.elapsed() > limit {
            bail!("transfer out of time after {i} chunks");
        }
        let chunk: Vec<u8> = (0..1000u32).map(|k| (k + i) as u8).collect();
        s.write_all(&chunk)
            .with_context(|| format!("send chunk {i}"))?;
        let mut back = vec![0u8; chunk.len()];
        r.read_exact(&mut back)
            .with_context(|| format!("echo of chunk {i} (the flow stalled)"))?;
        ensure!(back == chunk, "chunk {i} came back altered");
        std::thread::sleep(gap);
    }
    Ok(chunks)
}

#[test]
fn established_transfer_survives_a_syn_flood() -> Result<()> {
    let rig = rig()?;
    let (echoed, sent) = std::thread::scope(|s| {
        let t = s.spawn(|| {
            rig.client
                .run(|| transfer(60, Duration::from_millis(50), Duration::from_secs(20)))
        });
        // Let the transfer get established before the flood starts.
        std::thread::sleep(Duration::from_millis(300));
        let f = rig
            .client
            .run(|| flood(FLOOD_PACKETS, FLOOD_TIME))
            .and_then(|r| r);
        (t.join().expect("transfer thread"), f)
    });
    let sent = sent?;
    let echoed = echoed.and_then(|r| r).with_context(|| rig.diagnostics())?;
    assert_eq!(echoed, 60);
    ensure!(
        sent as usize > 2 * MAX_CONNECTIONS,
        "the flood sent only {sent} SYNs"
    );
    // The table filled up with half-open entries, never beyond its limit.
    let entries = rig.ulvsadm(&["-L", "-n", "-c"])?;
    let syn_recv = entries.lines().filter(|l| l.contains("SYN_RECV")).count();
    let total = entries.lines().count().saturating_sub(2);
    ensure!(
        total <= MAX_CONNECTIONS && syn_recv > MAX_CONNECTIONS / 2,
        "{total} entries, {syn_recv} SYN_RECV:\n{}",
        entries.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    // The table is still full of half-open entries, yet new clients get in: each SYN evicts one.
    let replies = rig
        .tcp_probes(vip_tcp(), 5, Duration::from_secs(30))
        .with_context(|| rig.diagnostics())?;
    ensure!(replies.len() == 5, "{replies:?}");
    Ok(())
}

#[test]
fn timeouts_listing_stats_and_zero_through_ulvsadm() -> Result<()> {
    let rig = rig()?;
    ensure!(rig.ulvsadm(&["-L", "--timeout"])? == "Timeout (tcp tcpfin udp): 900 120 300\n");
    rig.ulvsadm(&["--set", "3600", "0", "60"])?;
    ensure!(rig.ulvsadm(&["-L", "--timeout"])? == "Timeout (tcp tcpfin udp): 3600 120 60\n");

    // One connection held open while listing.
    let addr: SocketAddr = vip_tcp();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| -> Result<()> {
        let client = &rig.client;
        let held = s.spawn(move || {
            client.run(move || -> Result<()> {
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                let mut r = BufReader::new(s);
                let mut greeting = String::new();
                r.read_line(&mut greeting)?;
                let _ = rx.recv_timeout(Duration::from_secs(20));
                Ok(())
            })
        });
        let mut listed = String::new();
        let ok = integration::wait_until(
            "the connection to be ESTABLISHED in -L -c",
            Duration::from_secs(10),
            || {
                listed = rig.ulvsadm(&["-L", "-n", "-c"])?;
                Ok(listed.contains("ESTABLISHED"))
            },
        );
        let _ = tx.send(());
        held.join().expect("holder")??;
        ok.with_context(|| listed.clone())?;
        let line = listed
            .lines()
            .find(|l| l.contains("ESTABLISHED"))
            .unwrap_or_default();
        ensure!(
            line.starts_with("TCP 59:") || line.starts_with("TCP 60:00"),
            "expiry per the new tcp timeout: {line}"
        );
        ensure!(line.contains(&format!("{VIP}:{VIP_TCP_PORT}")), "{line}");
        Ok(())
    })?;
    let stats = rig.ulvsadm(&["-L", "-n", "--stats"])?;
    let row = stats
        .lines()
        .find(|l| l.starts_with("TCP "))
        .context("service row")?;
    ensure!(row.split_whitespace().nth(2) == Some("1"), "{stats}");
    rig.ulvsadm(&["-Z"])?;
    let stats = rig.ulvsadm(&["-L", "-n", "--stats", "--exact"])?;
    let row = stats
        .lines()
        .find(|l| l.starts_with("TCP "))
        .unwrap_or_default();
    // Connections scheduled are zeroed (late FIN segments of the closed connection may still
    // count packets, so only the connection column is checked).
    ensure!(
        row.split_whitespace().nth(2) == Some("0"),
        "zeroed: {stats}"
    );
    Ok(())
}
