//! Worker threads: one blocking thread per TUN queue that runs packets through the engine, an
//! expiry thread that reaps the connection table, and the coarse clock they share.
//!
//! Each worker owns one reusable buffer with [`HEADROOM`] bytes in front of the packet; the
//! packet path allocates nothing and logs nothing above debug. Workers `poll()` their queue
//! together with a stop `eventfd`, so [`Workers::stop`] returns as soon as the threads notice.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ulvs_engine::{Engine, PacketBuf, Timestamp, Verdict};

use crate::tap::TapQueue;
use crate::tun::TunQueue;

/// Bytes reserved in front of each packet for encapsulation headers.
pub const HEADROOM: usize = 128;
/// Largest packet a worker reads (a TUN without offload never hands more than the MTU; the
/// room for 64 KiB keeps offload super-packets possible later).
pub const MAX_PACKET: usize = 65535;
/// How often the expiry thread reaps the connection table.
pub const EXPIRE_INTERVAL: Duration = Duration::from_millis(100);
/// Packets a worker handles before it looks at the stop flag again.
const BATCH: usize = 256;

/// Milliseconds since the daemon started, as the engine's [`Timestamp`].
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.origin.elapsed().as_millis() as u64)
    }
}

/// Counters of one worker (one queue), readable while it runs.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Packets read from the queue.
    pub rx_packets: AtomicU64,
    /// Packets written back (Forward and Pass verdicts).
    pub tx_packets: AtomicU64,
    /// Packets the engine dropped.
    pub dropped: AtomicU64,
    /// Reads that failed with an error other than "would block".
    pub read_errors: AtomicU64,
    /// Writes that failed or were short.
    pub write_errors: AtomicU64,
}

/// A snapshot of [`QueueCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Packets read from the queue.
    pub rx_packets: u64,
    /// Packets written back.
    pub tx_packets: u64,
    /// Packets the engine dropped.
    pub dropped: u64,
    /// Failed reads.
    pub read_errors: u64,
    /// Failed writes.
    pub write_errors: u64,
}

impl QueueCounters {
    fn snapshot(&self) -> QueueStats {
        QueueStats {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            read_errors: self.read_errors.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }
}

/// Why the workers could not be started or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Creating the stop eventfd failed.
    #[error("create stop eventfd: {0}")]
    EventFd(io::Error),
    /// Spawning a thread failed.
    #[error("spawn thread {name}: {source}")]
    Spawn {
        /// Thread name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// A thread panicked.
    #[error("thread {0} panicked")]
    Panicked(String),
}

/// The running worker and expiry threads.
#[derive(Debug)]
pub struct Workers {
    stop_fd: Arc<OwnedFd>,
    expiry_stop: Option<mpsc::Sender<()>>,
    threads: Vec<(String, JoinHandle<()>)>,
    counters: Vec<Arc<QueueCounters>>,
}

impl Workers {
    /// Starts one worker per queue and the expiry thread.
    pub fn start(
        engine: Arc<Engine>,
        queues: Vec<TunQueue>,
        clock: Clock,
    ) -> Result<Workers, WorkerError> {
        Self::start_with_tap(engine, queues, None, clock)
    }

    /// Starts one worker per TUN queue, the expiry thread and, with `tap`, a worker for the
    /// TAP device of direct routing: `tap` is the TAP descriptor and a TUN descriptor of its
    /// own (for client packets that go to NAT or tunnel real servers). The TUN workers write
    /// frames for direct-routing real servers to the TAP. The TAP worker also sends the
    /// engine's ARP/NDP requests every [`EXPIRE_INTERVAL`]. Its counters come last in
    /// [`Workers::queue_stats`].
    pub fn start_with_tap(
        engine: Arc<Engine>,
        queues: Vec<TunQueue>,
        tap: Option<(TapQueue, TunQueue)>,
        clock: Clock,
    ) -> Result<Workers, WorkerError> {
        let (tap, tap_tun) = match tap {
            Some((t, q)) => (Some(Arc::new(t)), Some(q)),
            None => (None, None),
        };
        // SAFETY: plain eventfd(2) call; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(WorkerError::EventFd(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let stop_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let (expiry_tx, expiry_rx) = mpsc::channel::<()>();
        let mut workers = Workers {
            stop_fd,
            expiry_stop: Some(expiry_tx),
            threads: Vec::new(),
            counters: Vec::new(),
        };
        for (i, queue) in queues.into_iter().enumerate() {
            let name = format!("ulvs-q{i}");
            let counters = Arc::new(QueueCounters::default());
            let (engine, stop, c) = (engine.clone(), workers.stop_fd.clone(), counters.clone());
            let tap = tap.clone();
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || run_queue(&engine, &queue, tap.as_deref(), &stop, clock, &c));
            match spawned {
                Ok(h) => {
                    workers.threads.push((name, h));
                    workers.counters.push(counters);
                }
                Err(source) => {
                    let _ = workers.stop();
                    return Err(WorkerError::Spawn { name, source });
                }
            }
        }
        if let (Some(tap), Some(tun)) = (tap, tap_tun) {
            let name = "ulvs-tap".to_owned();
            let counters = Arc::new(QueueCounters::default());
            let (engine, stop, c) = (engine.clone(), workers.stop_fd.clone(), counters.clone());
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || run_tap(&engine, &tap, &tun, &stop, clock, &c));
            match spawned {
                Ok(h) => {
                    workers.threads.push((name, h));
                    workers.counters.push(counters);
                }
                Err(source) => {
                    let _ = workers.stop();
                    return Err(WorkerError::Spawn { name, source });
                }
            }
        }
        let name = "ulvs-expire".to_owned();
        let spawned = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || run_expiry(&engine, &expiry_rx, clock));
        match spawned {
            Ok(h) => workers.threads.push((name, h)),
            Err(source) => {
                let _ = workers.stop();
                return Err(WorkerError::Spawn { name, source });
            }
        }
        Ok(workers)
    }

    /// Counters of each queue, in queue order.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        self.counters.iter().map(|c| c.snapshot()).collect()
    }

    /// Signals every thread to stop and waits for them. Returns an error naming a thread that
    /// panicked, if any.
    pub fn stop(&mut self) -> Result<(), WorkerError> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to the eventfd, as eventfd(2) requires.
        unsafe {
            libc::write(
                self.stop_fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        self.expiry_stop.take();
        let mut result = Ok(());
        for (name, handle) in self.threads.drain(..) {
            if handle.join().is_err() && result.is_ok() {
                result = Err(WorkerError::Panicked(name));
            }
        }
        result
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            let _ = self.stop();
        }
    }
}

/// Writes `data` to a device, counting the outcome.
fn send_counted(res: io::Result<usize>, len: usize, counters: &QueueCounters) {
    match res {
        Ok(w) if w == len => {
            counters.tx_packets.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) | Err(_) => {
            counters.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn run_queue(
    engine: &Engine,
    queue: &TunQueue,
    tap: Option<&TapQueue>,
    stop: &OwnedFd,
    clock: Clock,
    counters: &QueueCounters,
) {
    let mut buf = vec![0u8; HEADROOM + MAX_PACKET];
    let mut fds = [
        libc::pollfd {
            fd: queue.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        for f in &mut fds {
            f.revents = 0;
        }
        // SAFETY: `fds` is a valid array of two pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %err, "poll on TUN queue failed; worker stops");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            tracing::error!("TUN queue reported an error condition; worker stops");
            return;
        }
        // One clock read per batch, not per packet.
        let now = clock.now();
        for _ in 0..BATCH {
            let n = match queue.recv(&mut buf[HEADROOM..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    counters.read_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "TUN read failed");
                    break;
                }
            };
            counters.rx_packets.fetch_add(1, Ordering::Relaxed);
            let mut pkt = PacketBuf::new(&mut buf, HEADROOM, n);
            match engine.process(now, &mut pkt) {
                Verdict::Forward | Verdict::Pass | Verdict::Reply => {
                    send_counted(queue.send(pkt.data()), pkt.len(), counters);
                }
                Verdict::ForwardFrame => match tap {
                    Some(tap) => send_counted(tap.send(pkt.data()), pkt.len(), counters),
                    None => {
                        counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Verdict::Drop(reason) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(reason = reason.name(), "packet dropped");
                }
            }
        }
    }
}

/// The TAP worker: frames through [`Engine::process_frame`], IP results to the TUN, frames
/// back to the TAP, and the engine's neighbour requests on a timer.
fn run_tap(
    engine: &Engine,
    tap: &TapQueue,
    tun: &TunQueue,
    stop: &OwnedFd,
    clock: Clock,
    counters: &QueueCounters,
) {
    let mut buf = vec![0u8; HEADROOM + MAX_PACKET];
    let mut fds = [
        libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let interval = EXPIRE_INTERVAL.as_millis() as u64;
    let mut next_requests = 0u64;
    loop {
        let now = clock.now();
        if now.0 >= next_requests {
            for frame in engine.neighbour_requests(now) {
                send_counted(tap.send(&frame), frame.len(), counters);
            }
            next_requests = now.0 + interval;
        }
        for f in &mut fds {
            f.revents = 0;
        }
        let wait = next_requests.saturating_sub(clock.now().0).max(1) as libc::c_int;
        // SAFETY: `fds` is a valid array of two pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %err, "poll on TAP failed; worker stops");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            tracing::error!("TAP reported an error condition; worker stops");
            return;
        }
        if fds[0].revents == 0 {
            continue;
        }
        let now = clock.now();
        for _ in 0..BATCH {
            let n = match tap.recv(&mut buf[HEADROOM..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    counters.read_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "TAP read failed");
                    break;
                }
            };
            counters.rx_packets.fetch_add(1, Ordering::Relaxed);
            let mut pkt = PacketBuf::new(&mut buf, HEADROOM, n);
            match engine.process_frame(now, &mut pkt) {
                Verdict::Forward => send_counted(tun.send(pkt.data()), pkt.len(), counters),
                Verdict::ForwardFrame | Verdict::Reply => {
                    send_counted(tap.send(pkt.data()), pkt.len(), counters);
                }
                Verdict::Pass => {}
                Verdict::Drop(reason) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(reason = reason.name(), "frame dropped");
                }
            }
        }
    }
}

/// How often the rate estimator ticks (as IPVS's estimator).
const ESTIMATE_INTERVAL_MS: u64 = 2_000;

fn run_expiry(engine: &Engine, stop: &mpsc::Receiver<()>, clock: Clock) {
    let mut last_estimate = clock.now();
    engine.estimate(last_estimate);
    loop {
        match stop.recv_timeout(EXPIRE_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = clock.now();
                if now.0.saturating_sub(last_estimate.0) >= ESTIMATE_INTERVAL_MS {
                    engine.estimate(now);
                    last_estimate = now;
                }
                let removed = engine.expire(now);
                if removed > 0 {
                    tracing::trace!(removed, "expired connections");
                }
            }
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_starts_near_zero() {
        let c = Clock::start();
        let a = c.now();
        let b = c.now();
        assert!(a <= b);
        assert!(a.0 < 1000);
    }
}
