//! Bounded TCP and UDP probes: which real server answered, and from which address the reply came.
//!
//! The test server (the `ulvs-testserver` binary of this crate) answers every TCP
//! connection with a line `<name> <client ip:port>\n` and then echoes; it answers every UDP
//! datagram with `<name> <client ip:port>`. These functions run on whatever network namespace the
//! calling thread is in; use [`crate::Netns::run`] to run them in the client namespace.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Most probes one call may send, so no loop runs away.
pub const MAX_PROBES: usize = 10_000;

/// One answered probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The name of the real server that answered.
    pub server: String,
    /// The client address as the real server saw it.
    pub seen_client: SocketAddr,
    /// The address the reply came from, as the client saw it.
    pub peer: SocketAddr,
    /// The client's own address for this probe.
    pub local: SocketAddr,
}

fn parse_greeting(line: &str) -> Result<(String, SocketAddr)> {
    let mut parts = line.split_whitespace();
    let (Some(name), Some(addr), None) = (parts.next(), parts.next(), parts.next()) else {
        bail!("malformed greeting {line:?}");
    };
    let addr = addr
        .parse()
        .with_context(|| format!("client address in greeting {line:?}"))?;
    Ok((name.to_owned(), addr))
}

/// Opens one TCP connection to `target`, reads the greeting, checks that one line is echoed back,
/// and closes. Every step is bounded by `timeout`.
pub fn tcp_once(target: SocketAddr, timeout: Duration) -> Result<Reply> {
    let stream = TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("connect to {target}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let local = stream.local_addr()?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut greeting = String::new();
    reader
        .read_line(&mut greeting)
        .with_context(|| format!("read greeting from {target} (local {local})"))?;
    let (server, seen_client) = parse_greeting(&greeting)?;
    let probe = format!("ping from {local}\n");
    (&stream)
        .write_all(probe.as_bytes())
        .with_context(|| format!("send echo probe to {server} via {target}"))?;
    let mut echo = String::new();
    reader
        .read_line(&mut echo)
        .with_context(|| format!("read echo from {server} via {target}"))?;
    ensure!(
        echo == probe,
        "{server} echoed {echo:?}, expected {probe:?}"
    );
    Ok(Reply {
        server,
        seen_client,
        peer,
        local,
    })
}

/// A UDP client socket on an ephemeral port of the family of `target`, unconnected, so
/// `recv_from` reports a reply's real source even when it is the wrong one (a connected socket
/// would silently drop such a reply).
fn udp_client_socket(target: SocketAddr) -> Result<UdpSocket> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    UdpSocket::bind(bind).context("bind UDP client socket")
}

/// Sends one datagram from a fresh socket (so a fresh source port, a new connection for the
/// balancer) to `target` and waits for the answer, resending up to `tries` times, each wait
/// bounded by `timeout`. The reply's source address is what `recv_from` reports.
pub fn udp_once(target: SocketAddr, timeout: Duration, tries: u32) -> Result<Reply> {
    udp_exchange(&udp_client_socket(target)?, target, timeout, tries)
}

/// Sends `count` datagrams to `target` in a row, each from its own socket, as [`udp_once`] does;
/// fails on the first unanswered one or when `overall` passes. Every socket stays open until
/// the last probe is answered, so no two probes share a source port: the kernel picks ports at
/// random and hands a closed socket's port out again, and a datagram on an earlier probe's
/// 5-tuple belongs to that probe's connection on the balancer, not to a new one (a test
/// counting rr picks would see one real server answer twice in a row).
pub fn udp_many(
    target: SocketAddr,
    count: usize,
    overall: Duration,
    timeout: Duration,
    tries: u32,
) -> Result<Vec<Reply>> {
    let mut open = Vec::with_capacity(count.min(MAX_PROBES));
    many(count, overall, || {
        let sock = udp_client_socket(target)?;
        let reply = udp_exchange(&sock, target, timeout, tries)?;
        open.push(sock);
        Ok(reply)
    })
}

/// One datagram from `sock` to `target` and its answer, resent up to `tries` times.
fn udp_exchange(
    sock: &UdpSocket,
    target: SocketAddr,
    timeout: Duration,
    tries: u32,
) -> Result<Reply> {
    sock.set_read_timeout(Some(timeout))?;
    // The local IP is learnt from a throwaway connected socket.
    let local_ip = {
        let probe = udp_client_socket(target)?;
        probe.connect(target)?;
        probe.local_addr()?.ip()
    };
    let local = SocketAddr::new(local_ip, sock.local_addr()?.port());
    let mut buf = [0u8; 512];
    for attempt in 1..=tries.max(1) {
        sock.send_to(b"hello", target)
            .with_context(|| format!("send datagram to {target}"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let text = std::str::from_utf8(&buf[..n]).context("non-UTF-8 UDP reply")?;
                let (server, seen_client) = parse_greeting(text)?;
                return Ok(Reply {
                    server,
                    seen_client,
                    peer,
                    local,
                });
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && attempt < tries =>
            {
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("no UDP reply from {target} after {attempt} tries of {timeout:?}")
                });
            }
        }
    }
    bail!("no UDP reply from {target}")
}

/// Runs `probe` `count` times in a row; fails on the first failed probe or when `overall` passes.
pub fn many(
    count: usize,
    overall: Duration,
    mut probe: impl FnMut() -> Result<Reply>,
) -> Result<Vec<Reply>> {
    ensure!(
        count <= MAX_PROBES,
        "{count} probes is more than {MAX_PROBES}"
    );
    let deadline = Instant::now() + overall;
    let mut replies = Vec::with_capacity(count);
    for i in 0..count {
        ensure!(
            Instant::now() < deadline,
            "only {i} of {count} probes done within {overall:?}"
        );
        replies.push(probe().with_context(|| format!("probe {} of {count}", i + 1))?);
    }
    Ok(replies)
}

/// How many replies each server gave.
pub fn split(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in replies {
        *counts.entry(r.server.clone()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback greeter in a thread: answers each datagram as the test server does, and
    /// stops after `MAX_PROBES` datagrams or 2 s without one.
    fn loopback_greeter() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let addr = sock.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            for _ in 0..MAX_PROBES {
                let Ok((_, peer)) = sock.recv_from(&mut buf) else {
                    return;
                };
                sock.send_to(format!("lo {peer}").as_bytes(), peer).unwrap();
            }
        });
        (addr, thread)
    }

    #[test]
    fn udp_many_never_reuses_a_source_port() {
        // 1,000 sockets opened and closed one after another share a port about 17 times on
        // Linux's 28,232 ephemeral ports; held open, none can.
        let (target, greeter) = loopback_greeter();
        let replies = udp_many(
            target,
            1000,
            Duration::from_secs(30),
            Duration::from_secs(1),
            3,
        )
        .unwrap();
        greeter.join().unwrap();
        let ports: std::collections::BTreeSet<u16> =
            replies.iter().map(|r| r.local.port()).collect();
        assert_eq!(ports.len(), 1000);
        assert!(
            replies
                .iter()
                .all(|r| r.seen_client == r.local && r.peer == target)
        );
    }

    #[test]
    fn greeting_parses_and_rejects_garbage() {
        let (name, addr) = parse_greeting("rs1 198.18.0.2:40000\n").unwrap();
        assert_eq!(name, "rs1");
        assert_eq!(addr, "198.18.0.2:40000".parse().unwrap());
        assert!(parse_greeting("rs1\n").is_err());
        assert!(parse_greeting("rs1 nope\n").is_err());
        assert!(parse_greeting("rs1 198.18.0.2:1 extra").is_err());
    }

    #[test]
    fn split_counts_per_server() {
        let r = |s: &str| Reply {
            server: s.into(),
            seen_client: "198.18.0.2:1".parse().unwrap(),
            peer: "198.18.100.1:80".parse().unwrap(),
            local: "198.18.0.2:1".parse().unwrap(),
        };
        let counts = split(&[r("a"), r("b"), r("a")]);
        assert_eq!(counts.get("a"), Some(&2));
        assert_eq!(counts.get("b"), Some(&1));
    }
}
