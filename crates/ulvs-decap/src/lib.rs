//! `ulvs-decap`: a userspace tunnel endpoint for ulvs real servers whose kernel has no IPIP,
//! GRE, FOU or IPv6 tunnel devices.
//!
//! It receives tunnelled packets addressed to this host (IPIP and IPv6-in-IP and GRE on raw
//! sockets of protocol 4, 41 and 47, over IPv4 and IPv6; GUE on UDP sockets bound to the
//! configured ports), checks them ([`decap`]), and writes the inner packet into a TUN device.
//! The kernel then receives the inner packet as if it had arrived on that device: with the VIP
//! on `lo` and reverse-path filtering off on the TUN, the local socket answers the client
//! directly, as with a kernel tunnel device.
//!
//! # Layout
//! - [`decap`]: pure parsing, from socket bytes to the inner packet, with a reason per drop.
//! - [`Counters`]: what was received, delivered and dropped (by reason); printed on `SIGUSR1`
//!   and at exit.
//! - [`Decapsulator`]: the sockets, the TUN device and the single-threaded `poll` loop that ends
//!   on `SIGTERM` / `SIGINT`.
//!
//! # Invariants
//! - One fixed receive buffer (64 KiB + 1: a datagram larger than an IP packet can be is
//!   impossible, a larger read is a counted truncation); nothing allocates per packet.
//! - Malformed input is a counted drop, never a panic.
//! - The process never changes addresses or routes; the only system setting it writes is the
//!   TUN's own `rp_filter` (to 0).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, bail};
use ulvs_dataplane::{TunConfig, TunDevice, TunQueue};

pub mod decap;

pub use decap::{DecapError, DecapOptions};

/// Default name of the TUN device.
pub const DEFAULT_TUN_NAME: &str = "ulvsdecap0";

/// Largest datagram accepted; one byte more than the largest IP packet so that a truncated
/// read is detectable.
const BUF_LEN: usize = 65536 + 1;

/// What to listen for and where to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// TUN device name.
    pub tun_name: String,
    /// TUN device MTU (the kernel does not check it on packets written into the device).
    pub tun_mtu: u32,
    /// Receive IPIP and IPv6-in-IP (protocols 4 and 41).
    pub ipip: bool,
    /// Receive GRE (protocol 47).
    pub gre: bool,
    /// UDP ports on which GUE is received.
    pub gue_ports: Vec<u16>,
    /// Listen on IPv4 (outer IPv4 packets).
    pub ipv4: bool,
    /// Listen on IPv6 (outer IPv6 packets).
    pub ipv6: bool,
    /// Receive-side checks.
    pub opts: DecapOptions,
    /// Set the TUN's `net.ipv4.conf.<tun>.rp_filter` to 0.
    pub set_rp_filter: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tun_name: DEFAULT_TUN_NAME.to_owned(),
            tun_mtu: 65000,
            ipip: true,
            gre: true,
            gue_ports: Vec::new(),
            ipv4: true,
            ipv6: true,
            opts: DecapOptions::default(),
            set_rp_filter: true,
        }
    }
}

/// What happened to received packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams read from the tunnel sockets.
    pub received: u64,
    /// Of those, datagrams with an outer IPv4 header.
    pub received_v4: u64,
    /// Of those, datagrams with an outer IPv6 header.
    pub received_v6: u64,
    /// Inner packets written into the TUN device.
    pub delivered: u64,
    /// Bytes of inner packets written.
    pub delivered_bytes: u64,
    /// Of the delivered packets, GUE packets whose inner checksum was completed here (remote
    /// checksum offload, `--tun-remcsum` on the director).
    pub remcsum: u64,
    /// Datagrams larger than the receive buffer.
    pub truncated: u64,
    /// Writes into the TUN device that failed.
    pub tun_write_errors: u64,
    /// Packets the kernel routed into the TUN device (read and discarded).
    pub tun_ignored: u64,
    /// Drops by reason, indexed by [`DecapError::index`].
    pub drops: [u64; DecapError::ALL.len()],
}

impl Counters {
    /// Counts a drop.
    pub fn drop(&mut self, reason: DecapError) {
        self.drops[reason.index()] += 1;
    }

    /// The count for one reason.
    pub fn dropped(&self, reason: DecapError) -> u64 {
        self.drops[reason.index()]
    }
}

impl fmt::Display for Counters {
    /// One line: `received=.. received_v4=.. received_v6=.. delivered=.. delivered_bytes=..
    /// remcsum=.. truncated=.. tun_write_errors=.. tun_ignored=..` then every non-zero drop reason as
    /// `drop_<name>=..`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} received_v4={} received_v6={} delivered={} delivered_bytes={} remcsum={} truncated={} tun_write_errors={} tun_ignored={}",
            self.received,
            self.received_v4,
            self.received_v6,
            self.delivered,
            self.delivered_bytes,
            self.remcsum,
            self.truncated,
            self.tun_write_errors,
            self.tun_ignored
        )?;
        for r in DecapError::ALL {
            let n = self.dropped(r);
            if n != 0 {
                write!(f, " drop_{}={n}", r.name())?;
            }
        }
        Ok(())
    }
}

/// How a socket's datagrams are decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Raw IPv4 socket: the outer IPv4 header comes with the datagram.
    RawV4,
    /// Raw IPv6 socket of this protocol: only the outer payload comes.
    RawV6(u8),
    /// UDP socket: the GUE header and inner packet.
    Gue,
}

#[derive(Debug)]
struct Listener {
    fd: OwnedFd,
    kind: Kind,
    /// The socket's family: the outer header's.
    v6: bool,
}

/// The running decapsulator: its sockets, the TUN device and the counters.
#[derive(Debug)]
pub struct Decapsulator {
    listeners: Vec<Listener>,
    tun: TunDevice,
    queue: TunQueue,
    opts: DecapOptions,
    counters: Counters,
    buf: Box<[u8]>,
    description: String,
}

fn last_err(what: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(io::Error::last_os_error()).context(what.into())
}

fn socket(domain: i32, ty: i32, proto: i32, what: &str) -> Result<OwnedFd> {
    // SAFETY: socket has no memory preconditions.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, proto) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) || e.raw_os_error() == Some(libc::EACCES) {
            bail!("open {what}: {e} (raw sockets need root or CAP_NET_RAW)");
        }
        return Err(anyhow::Error::new(e).context(format!("open {what}")));
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, value: i32, what: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `value`.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(last_err(what.to_owned()));
    }
    Ok(())
}

fn udp_socket(v6: bool, port: u16) -> Result<OwnedFd> {
    let what = format!(
        "GUE UDP socket on port {port} ({})",
        if v6 { "IPv6" } else { "IPv4" }
    );
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let fd = socket(domain, libc::SOCK_DGRAM, 0, &what)?;
    let rc = if v6 {
        setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1, "IPV6_V6ONLY")?;
        // A zero UDP checksum is what `--tun-nocsum` sends; RFC 6935 allows it for tunnels.
        setsockopt_int(
            &fd,
            libc::IPPROTO_UDP,
            libc::UDP_NO_CHECK6_RX,
            1,
            "UDP_NO_CHECK6_RX",
        )?;
        // SAFETY: an all-zero sockaddr_in6 is valid (the unspecified address).
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        // SAFETY: the pointer and length describe `sa`.
        unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    } else {
        // SAFETY: an all-zero sockaddr_in is valid (0.0.0.0).
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        // SAFETY: the pointer and length describe `sa`.
        unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
    };
    if rc < 0 {
        return Err(last_err(format!("bind {what}")));
    }
    Ok(fd)
}

/// Sets the TUN's `rp_filter` to 0 and explains when the `all` setting still makes the kernel
/// drop decapsulated packets (the effective value is the larger of the two).
fn relax_rp_filter(tun: &str) -> Result<Option<String>> {
    let path = format!("/proc/sys/net/ipv4/conf/{tun}/rp_filter");
    std::fs::write(&path, "0").with_context(|| format!("write 0 to {path}"))?;
    let all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
        .context("read net.ipv4.conf.all.rp_filter")?;
    Ok((all.trim() == "1").then(|| {
        "net.ipv4.conf.all.rp_filter is 1 (strict): the kernel will drop decapsulated IPv4 \
         packets whose source is not routed via the TUN; set it to 0 or 2"
            .to_owned()
    }))
}

impl Decapsulator {
    /// Creates the TUN device and opens every socket `cfg` asks for. Returns the decapsulator
    /// and any warnings about the host's settings.
    pub fn open(cfg: &Config) -> Result<(Decapsulator, Vec<String>)> {
        if !cfg.ipv4 && !cfg.ipv6 {
            bail!("neither IPv4 nor IPv6 enabled: nothing to listen on");
        }
        if !cfg.ipip && !cfg.gre && cfg.gue_ports.is_empty() {
            bail!("no tunnel type enabled (IPIP, GRE or a GUE port)");
        }
        let mut listeners = Vec::new();
        let mut parts = Vec::new();
        let families: Vec<bool> = [(cfg.ipv4, false), (cfg.ipv6, true)]
            .into_iter()
            .filter_map(|(on, v6)| on.then_some(v6))
            .collect();
        let mut raw_protos = Vec::new();
        if cfg.ipip {
            raw_protos.extend([decap::IPPROTO_IPIP, decap::IPPROTO_IPV6]);
            parts.push("ipip".to_owned());
        }
        if cfg.gre {
            raw_protos.push(decap::IPPROTO_GRE);
            parts.push("gre".to_owned());
        }
        for &v6 in &families {
            for &proto in &raw_protos {
                let what = format!(
                    "raw {} socket for protocol {proto}",
                    if v6 { "IPv6" } else { "IPv4" }
                );
                let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
                let fd = socket(domain, libc::SOCK_RAW, i32::from(proto), &what)?;
                let kind = if v6 { Kind::RawV6(proto) } else { Kind::RawV4 };
                listeners.push(Listener { fd, kind, v6 });
            }
            for &port in &cfg.gue_ports {
                let fd = udp_socket(v6, port)?;
                listeners.push(Listener {
                    fd,
                    kind: Kind::Gue,
                    v6,
                });
            }
        }
        for p in &cfg.gue_ports {
            parts.push(format!("gue:{p}"));
        }
        let tun = TunDevice::open(&TunConfig {
            name: cfg.tun_name.clone(),
            mtu: cfg.tun_mtu,
            txqueuelen: ulvs_dataplane::tun::DEFAULT_TXQUEUELEN,
            queues: 1,
            // Plain packets in, no virtio-net header: the inner packets are complete.
            offload: false,
        })
        .context("create the TUN device")?;
        let queue = tun
            .clone_queues()
            .context("TUN queue")?
            .pop()
            .context("TUN device without a queue")?;
        let mut warnings = Vec::new();
        if cfg.set_rp_filter && cfg.ipv4 {
            warnings.extend(relax_rp_filter(tun.name())?);
        }
        let fams = match (cfg.ipv4, cfg.ipv6) {
            (true, true) => "IPv4 and IPv6",
            (true, false) => "IPv4",
            _ => "IPv6",
        };
        let description = format!(
            "{} over {fams} into {} (ifindex {})",
            parts.join(", "),
            tun.name(),
            tun.index()
        );
        Ok((
            Decapsulator {
                listeners,
                tun,
                queue,
                opts: cfg.opts,
                counters: Counters::default(),
                buf: vec![0u8; BUF_LEN].into_boxed_slice(),
                description,
            },
            warnings,
        ))
    }

    /// What it listens for, for the startup line.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The TUN device.
    pub fn tun(&self) -> &TunDevice {
        &self.tun
    }

    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Runs until `stop` (a signalfd for SIGTERM/SIGINT/SIGUSR1) reports SIGTERM or SIGINT;
    /// `on_usr1` is called with the counters on every SIGUSR1.
    pub fn run(&mut self, stop: &OwnedFd, mut on_usr1: impl FnMut(&Counters)) -> Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .listeners
            .iter()
            .map(|l| l.fd.as_raw_fd())
            .chain([self.queue.as_raw_fd(), stop.as_raw_fd()])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let n_listeners = self.listeners.len();
        loop {
            // SAFETY: `fds` is a valid array of pollfd of the given length.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(anyhow::Error::new(e).context("poll"));
            }
            for (i, p) in fds[..n_listeners].iter().enumerate() {
                if p.revents != 0 {
                    self.drain(i)?;
                }
            }
            if fds[n_listeners].revents != 0 {
                self.drain_tun();
            }
            if fds[n_listeners + 1].revents != 0 {
                // SAFETY: an all-zero signalfd_siginfo is valid.
                let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                // SAFETY: the pointer and length describe `info`.
                let n = unsafe {
                    libc::read(
                        stop.as_raw_fd(),
                        (&mut info as *mut libc::signalfd_siginfo).cast(),
                        size_of::<libc::signalfd_siginfo>(),
                    )
                };
                if n as usize == size_of::<libc::signalfd_siginfo>() {
                    if info.ssi_signo == libc::SIGUSR1 as u32 {
                        on_usr1(&self.counters);
                    } else {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reads every pending datagram of listener `i`.
    fn drain(&mut self, i: usize) -> Result<()> {
        let fd = self.listeners[i].fd.as_raw_fd();
        let kind = self.listeners[i].kind;
        let v6 = self.listeners[i].v6;
        // A bounded batch per wakeup, so one busy socket cannot starve the others.
        for _ in 0..256 {
            let n = match recv_trunc(fd, &mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors queued on the socket surface as recv errors; they are not fatal.
                Err(e) if e.raw_os_error().is_some_and(|c| c != libc::EBADF) => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("recv on a tunnel socket")),
            };
            self.counters.received += 1;
            if v6 {
                self.counters.received_v6 += 1;
            } else {
                self.counters.received_v4 += 1;
            }
            if n > self.buf.len() {
                self.counters.truncated += 1;
                continue;
            }
            let inner = match kind {
                Kind::RawV4 => decap::strip_outer_ipv4(&self.buf[..n])
                    .and_then(|(proto, payload)| decap::decap_ip(proto, payload, self.opts))
                    .map(|inner| (inner, false)),
                Kind::RawV6(proto) => {
                    decap::decap_ip(proto, &self.buf[..n], self.opts).map(|inner| (inner, false))
                }
                // In place: a remote checksum offload option is completed in the buffer.
                Kind::Gue => decap::decap_gue_completing(&mut self.buf[..n]),
            };
            match inner {
                Ok((pkt, remcsum)) => match self.queue.send(pkt) {
                    Ok(_) => {
                        self.counters.delivered += 1;
                        self.counters.delivered_bytes += pkt.len() as u64;
                        self.counters.remcsum += u64::from(remcsum);
                    }
                    Err(_) => self.counters.tun_write_errors += 1,
                },
                Err(reason) => self.counters.drop(reason),
            }
        }
        Ok(())
    }

    /// Reads and discards what the kernel routed into the TUN device.
    fn drain_tun(&mut self) {
        for _ in 0..256 {
            match self.queue.recv(&mut self.buf) {
                Ok(_) => self.counters.tun_ignored += 1,
                Err(_) => return,
            }
        }
    }
}

/// `recv` with `MSG_TRUNC`: returns the datagram's real length even when larger than `buf`.
fn recv_trunc(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, valid for writes.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Blocks SIGTERM, SIGINT and SIGUSR1 for the calling thread (call it before starting any
/// thread) and returns a signalfd that reports them.
pub fn signal_fd() -> Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these calls.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGUSR1);
    }
    // SAFETY: `set` is initialised; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(anyhow::Error::new(io::Error::from_raw_os_error(rc)).context("block signals"));
    }
    // SAFETY: `set` is initialised.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(last_err("signalfd"));
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_line_names_every_value_and_nonzero_drops() {
        let mut c = Counters {
            received: 3,
            received_v4: 1,
            received_v6: 2,
            delivered: 2,
            delivered_bytes: 120,
            remcsum: 1,
            ..Counters::default()
        };
        c.drop(DecapError::ALL[0]);
        let line = c.to_string();
        assert!(
            line.starts_with(
                "received=3 received_v4=1 received_v6=2 delivered=2 delivered_bytes=120 \
                 remcsum=1 truncated=0 tun_write_errors=0 tun_ignored=0 drop_"
            ),
            "{line}"
        );
        assert_eq!(line.matches("drop_").count(), 1, "{line}");
    }
}
