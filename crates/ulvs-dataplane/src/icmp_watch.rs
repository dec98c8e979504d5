//! The ICMP watcher: raw ICMP and ICMPv6 sockets that see the errors routers send to the
//! director's own tunnel source address, handed to [`Engine::process_local_icmp`].
//!
//! Tunnel packets leave the director with its tunnel source address as their outer source, so
//! a router between the director and a real server that cannot forward one (FRAG_NEEDED /
//! Packet Too Big because the encapsulated packet is too big for its next hop, or another
//! unreachable) answers to that address, which is local: the error never enters the TUN.
//! Steering it into the TUN instead would take it away from the kernel, which has its own use
//! for errors to its addresses. A raw socket gets a copy of every ICMP message the kernel
//! receives, while the kernel processes its own as before; the watcher thread reads the copies,
//! and the engine relays the ones about its tunnel packets to the client (the MTU reduced by
//! the tunnel overhead, the real server's path MTU learned), as IPVS does. Its answer is an IP
//! packet from the VIP to the client, written into the TUN like any other reply.
//!
//! The IPv4 socket filters out every type but destination unreachable and time exceeded
//! (`ICMP_FILTER`), the IPv6 one every type but destination unreachable, packet too big and
//! time exceeded (`ICMP6_FILTER`), so the thread wakes only for errors. It owns one reusable
//! buffer: the per-message path allocates nothing.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use ulvs_engine::{Engine, PacketBuf, Verdict};

use crate::tun::TunQueue;
use crate::vnet::VnetHdr;
use crate::worker::{Clock, HEADROOM, poll_in, poll_ready, send_tun};

/// Largest ICMP message read (errors are at most 576 bytes for IPv4 and 1280 for IPv6; a
/// little more is harmless).
const MAX_MESSAGE: usize = 2048;

/// `SOL_RAW` option that blocks ICMP types (a bit mask, bit set = blocked).
const ICMP_FILTER: libc::c_int = 1;
/// `IPPROTO_ICMPV6` option that selects ICMPv6 types (eight 32-bit words, bit set = blocked).
const ICMP6_FILTER: libc::c_int = 1;

/// Counters of the watcher.
#[derive(Debug, Default)]
pub struct IcmpWatchCounters {
    /// ICMP errors read from the raw sockets.
    pub received: AtomicU64,
    /// Errors the engine relayed to a client.
    pub relayed: AtomicU64,
    /// Errors the engine dropped with a reason (counted in the engine too).
    pub dropped: AtomicU64,
    /// Failed reads or writes.
    pub io_errors: AtomicU64,
}

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum IcmpWatchError {
    /// A socket, option or eventfd call failed.
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

fn last(operation: &'static str) -> IcmpWatchError {
    IcmpWatchError::Io {
        operation,
        source: io::Error::last_os_error(),
    }
}

/// The running watcher thread; stopped (and joined) by [`IcmpWatcher::stop`] or on drop.
#[derive(Debug)]
pub struct IcmpWatcher {
    stop_fd: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<IcmpWatchCounters>,
}

/// Which families to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Families {
    /// Watch ICMP (IPv4 tunnels).
    pub v4: bool,
    /// Watch ICMPv6 (IPv6 tunnels).
    pub v6: bool,
}

impl IcmpWatcher {
    /// Opens the raw sockets of `families` (in the caller's network namespace) and starts the
    /// thread, which writes the engine's answers to `tun`.
    pub fn start(
        engine: Arc<Engine>,
        tun: TunQueue,
        families: Families,
        clock: Clock,
    ) -> Result<IcmpWatcher, IcmpWatchError> {
        let v4 = families.v4.then(open_v4).transpose()?;
        let v6 = families.v6.then(open_v6).transpose()?;
        // SAFETY: plain eventfd(2) call; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(last("create stop eventfd"));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let stop_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let counters = Arc::new(IcmpWatchCounters::default());
        let (stop, c) = (stop_fd.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("ulvs-icmp".to_owned())
            .spawn(move || run(&engine, v4.as_ref(), v6.as_ref(), &tun, &stop, clock, &c))
            .map_err(|source| IcmpWatchError::Io {
                operation: "spawn thread ulvs-icmp",
                source,
            })?;
        Ok(IcmpWatcher {
            stop_fd,
            thread: Some(thread),
            counters,
        })
    }

    /// The watcher's counters.
    pub fn counters(&self) -> &IcmpWatchCounters {
        &self.counters
    }

    /// Stops the thread and waits for it. Returns `false` if it panicked.
    pub fn stop(&mut self) -> bool {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to the eventfd, as eventfd(2) requires.
        unsafe {
            libc::write(
                self.stop_fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        self.thread.take().is_none_or(|h| h.join().is_ok())
    }
}

impl Drop for IcmpWatcher {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

fn raw_socket(domain: libc::c_int, proto: libc::c_int) -> Result<OwnedFd, IcmpWatchError> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            proto,
        )
    };
    if fd < 0 {
        return Err(last("open raw ICMP socket"));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_opt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
    operation: &'static str,
) -> Result<(), IcmpWatchError> {
    // SAFETY: the pointer and length describe `v`.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last(operation));
    }
    Ok(())
}

fn open_v4() -> Result<OwnedFd, IcmpWatchError> {
    let fd = raw_socket(libc::AF_INET, libc::IPPROTO_ICMP)?;
    // Everything but type 3 (destination unreachable) and 11 (time exceeded) is blocked.
    let blocked: u32 = !((1 << 3) | (1 << 11));
    set_opt(&fd, libc::SOL_RAW, ICMP_FILTER, &blocked, "set ICMP_FILTER")?;
    Ok(fd)
}

fn open_v6() -> Result<OwnedFd, IcmpWatchError> {
    let fd = raw_socket(libc::AF_INET6, libc::IPPROTO_ICMPV6)?;
    // Bit set = blocked; types 1 (unreachable), 2 (packet too big), 3 (time exceeded) pass.
    let mut filter = [u32::MAX; 8];
    filter[0] &= !((1 << 1) | (1 << 2) | (1 << 3));
    set_opt(
        &fd,
        libc::IPPROTO_ICMPV6,
        ICMP6_FILTER,
        &filter,
        "set ICMP6_FILTER",
    )?;
    Ok(fd)
}

fn run(
    engine: &Engine,
    v4: Option<&OwnedFd>,
    v6: Option<&OwnedFd>,
    tun: &TunQueue,
    stop: &OwnedFd,
    clock: Clock,
    counters: &IcmpWatchCounters,
) {
    let mut buf = vec![0u8; HEADROOM + MAX_MESSAGE];
    let hdr_len = if tun.has_vnet_hdr() {
        crate::vnet::VNET_HDR_LEN
    } else {
        0
    };
    let raw = |fd: Option<&OwnedFd>| fd.map(|f| f.as_raw_fd());
    let mut fds = [
        poll_in(Some(stop.as_raw_fd())),
        poll_in(raw(v4)),
        poll_in(raw(v6)),
    ];
    loop {
        if let Err(err) = poll_ready(&mut fds, -1) {
            tracing::error!(error = %err, "poll on the raw ICMP sockets failed; watcher stops");
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        for (i, fd, is_v6) in [(1, v4, false), (2, v6, true)] {
            let Some(fd) = fd else { continue };
            if fds[i].revents == 0 {
                continue;
            }
            // Bounded: a burst is read up to 64 messages before the stop flag is looked at.
            for _ in 0..64 {
                // SAFETY: the pointer and length describe the buffer past the headroom.
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        buf[HEADROOM..].as_mut_ptr().cast(),
                        MAX_MESSAGE,
                        0,
                    )
                };
                if n < 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::WouldBlock {
                        counters.io_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                let n = n as usize;
                // IPv4 raw sockets deliver the IP header; ICMPv6 ones only the message.
                let skip = if is_v6 {
                    0
                } else {
                    match buf.get(HEADROOM) {
                        Some(b) if n >= 20 => usize::from(b & 0x0f) * 4,
                        _ => continue,
                    }
                };
                if skip > n {
                    continue;
                }
                counters.received.fetch_add(1, Ordering::Relaxed);
                let mut pkt = PacketBuf::new(&mut buf, HEADROOM + skip, n - skip);
                match engine.process_local_icmp(clock.now(), &mut pkt, is_v6) {
                    Verdict::Reply => {
                        let (start, len) = (pkt.headroom(), pkt.len());
                        if send_tun(tun, &mut buf, start, len, hdr_len, VnetHdr::default()) {
                            counters.relayed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counters.io_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Verdict::Drop(reason) => {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::trace!(reason = reason.name(), "ICMP error dropped");
                    }
                    _ => {}
                }
            }
        }
    }
}
