//! Worker threads: one blocking thread per TUN queue that runs packets through the engine, an
//! expiry thread that reaps the connection table, and the coarse clock they share.
//!
//! Each worker owns one reusable buffer with [`HEADROOM`] bytes in front of the packet; the
//! packet path allocates nothing and logs nothing above debug. Workers `poll()` their queue
//! together with a stop `eventfd`, so [`Workers::stop`] returns as soon as the threads notice.
//!
//! On a queue with a `virtio_net_hdr` (offload on), the header is read into the 10 bytes just
//! in front of the packet, turned into the engine's [`ulvs_engine::Offload`], and written back
//! in front of the rewritten packet (moved with it if the engine moved the packet start, with
//! `NEEDS_CSUM` cleared if the engine finished the checksum), so a forwarded packet goes out
//! with one `write` and no copy. A GSO super-packet is one engine call and one write; the
//! kernel segments it after us. When the engine refuses a super-packet because the real
//! server's method cannot carry it ([`DropReason::GsoNotSplit`]: direct routing, tunnels), the
//! worker cuts it into segments ([`ulvs_engine::offload::segment`]) in a second buffer and
//! submits each one. Replies carry no offload metadata; frames for the TAP carry the packet's
//! when the TAP has a `virtio_net_hdr` ([`TapQueue::has_vnet_hdr`]).
//!
//! When the TUN takes USO super-packets ([`TunQueue::can_write_uso`]), forwarded UDP datagrams
//! of one flow and size that a worker reads in one burst are merged into one super-packet
//! ([`UdpCoalescer`]) and written with one `write`, and so are frames of one flow for the same
//! direct-routing real server when the TAP has a `virtio_net_hdr`; the pending super-packet is
//! written before any other packet to the same device and whenever the queue runs empty, so
//! nothing waits beyond the burst.
//! Setting `ULVS_NO_UDP_COALESCE` in ulvsd's environment turns this off (for measurements).
//!
//! With [`WorkerOptions::pin`], worker `i` is pinned to the `i`-th CPU the process may run on
//! (modulo their number).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ulvs_engine::{DropReason, Engine, L4Csum, Offload, PacketBuf, Timestamp, Verdict};

use crate::tap::TapQueue;
use crate::tun::TunQueue;
use crate::vnet::{F_NEEDS_CSUM, Offer, UdpCoalescer, VNET_HDR_LEN, VnetHdr};

/// Bytes reserved in front of each packet for encapsulation headers.
pub const HEADROOM: usize = 128;
/// Largest packet a worker reads (a TUN without offload never hands more than the MTU; with
/// offload a GSO super-packet is at most 64 KiB).
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
    /// GSO super-packets read (counted in `rx_packets` too).
    pub rx_gso: AtomicU64,
    /// Super-packets the worker split into segments for the engine.
    pub split_gso: AtomicU64,
    /// USO super-packets written that merged several UDP datagrams (each datagram also counts
    /// in `tx_packets`).
    pub tx_uso: AtomicU64,
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
    /// GSO super-packets read.
    pub rx_gso: u64,
    /// Super-packets split into segments.
    pub split_gso: u64,
    /// USO super-packets written that merged several UDP datagrams.
    pub tx_uso: u64,
}

impl QueueCounters {
    fn snapshot(&self) -> QueueStats {
        QueueStats {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            read_errors: self.read_errors.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            rx_gso: self.rx_gso.load(Ordering::Relaxed),
            split_gso: self.split_gso.load(Ordering::Relaxed),
            tx_uso: self.tx_uso.load(Ordering::Relaxed),
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

/// How the workers run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Pin TUN worker `i` to the `i`-th CPU of the process's affinity mask (modulo their
    /// number).
    pub pin: bool,
}

impl Workers {
    /// Starts one worker per queue and the expiry thread.
    pub fn start(
        engine: Arc<Engine>,
        queues: Vec<TunQueue>,
        clock: Clock,
    ) -> Result<Workers, WorkerError> {
        Self::start_with_tap(engine, queues, None, clock, &WorkerOptions::default())
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
        opts: &WorkerOptions,
    ) -> Result<Workers, WorkerError> {
        let cpus = if opts.pin { allowed_cpus() } else { Vec::new() };
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
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        pin_current_thread(cpu);
                    }
                    run_queue(&engine, &queue, tap.as_deref(), &stop, clock, &c)
                });
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
    // Segments of a super-packet the engine asked to have split.
    let mut seg = vec![0u8; HEADROOM + MAX_PACKET];
    // Merges forwarded UDP datagrams into USO super-packets, when the TUN takes them.
    // `ULVS_NO_UDP_COALESCE` (any value) turns it off, to measure what it brings.
    let coalesce = queue.can_write_uso() && std::env::var_os("ULVS_NO_UDP_COALESCE").is_none();
    // Frames for direct-routing real servers merge too when the TAP takes offload metadata (a
    // kernel that takes USO on the TUN knows the GSO type on the TAP as well).
    let mut merge = Merge {
        tun: coalesce.then(UdpCoalescer::default),
        tap: (coalesce && tap.is_some_and(TapQueue::has_vnet_hdr)).then(UdpCoalescer::for_frames),
    };
    let mut fds = [
        poll_in(Some(queue.as_raw_fd())),
        poll_in(Some(stop.as_raw_fd())),
    ];
    loop {
        if let Err(err) = poll_ready(&mut fds, -1) {
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
        drain_queue(
            engine, queue, tap, now, &mut buf, &mut seg, &mut merge, counters,
        );
        merge.flush(queue, tap, counters);
    }
}

/// Reads and handles up to [`BATCH`] packets from `queue`, until it runs empty.
#[allow(clippy::too_many_arguments)]
fn drain_queue(
    engine: &Engine,
    queue: &TunQueue,
    tap: Option<&TapQueue>,
    now: Timestamp,
    buf: &mut [u8],
    seg: &mut [u8],
    merge: &mut Merge,
    counters: &QueueCounters,
) {
    let hdr_len = vnet_len(queue);
    for _ in 0..BATCH {
        let n = match queue.recv(&mut buf[HEADROOM - hdr_len..]) {
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
        let vnet = if hdr_len == 0 {
            VnetHdr::default()
        } else {
            match VnetHdr::parse(&buf[HEADROOM - hdr_len..HEADROOM]) {
                Some(h) if n >= hdr_len => h,
                _ => {
                    counters.read_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        };
        let offload = vnet.offload();
        if offload.is_gso() {
            counters.rx_gso.fetch_add(1, Ordering::Relaxed);
        }
        let len = n - hdr_len;
        let mut pkt = PacketBuf::with_offload(buf, HEADROOM, len, offload);
        let verdict = engine.process(now, &mut pkt);
        let out = Out::of(&pkt);
        if verdict == Verdict::Drop(DropReason::GsoNotSplit) {
            counters.split_gso.fetch_add(1, Ordering::Relaxed);
            let whole = &buf[HEADROOM..HEADROOM + len];
            let gso = usize::from(offload.gso_size);
            for i in 0.. {
                let seg_len =
                    match ulvs_engine::offload::segment(whole, gso, i, &mut seg[HEADROOM..]) {
                        Ok(Some(l)) => l,
                        Ok(None) => break,
                        Err(_) => {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    };
                let mut pkt = PacketBuf::new(seg, HEADROOM, seg_len);
                let verdict = engine.process(now, &mut pkt);
                let out = Out::of(&pkt);
                emit(
                    verdict,
                    queue,
                    tap,
                    seg,
                    out,
                    hdr_len,
                    VnetHdr::default(),
                    merge,
                    counters,
                );
            }
            continue;
        }
        emit(
            verdict, queue, tap, buf, out, hdr_len, vnet, merge, counters,
        );
    }
}

/// A worker's UDP merging: one [`UdpCoalescer`] for what goes to the TUN and, when the TAP of
/// direct routing takes offload metadata, one for its frames.
struct Merge {
    tun: Option<UdpCoalescer>,
    tap: Option<UdpCoalescer>,
}

impl Merge {
    /// Writes whatever is pending on either device.
    fn flush(&mut self, queue: &TunQueue, tap: Option<&TapQueue>, counters: &QueueCounters) {
        if let Some(co) = self.tun.as_mut() {
            flush_coalesced(co, Dest::Tun(queue), counters);
        }
        if let (Some(co), Some(tap)) = (self.tap.as_mut(), tap) {
            flush_coalesced(co, Dest::Tap(tap), counters);
        }
    }
}

/// Where a coalescer writes.
#[derive(Clone, Copy)]
enum Dest<'a> {
    Tun(&'a TunQueue),
    Tap(&'a TapQueue),
}

impl Dest<'_> {
    /// Writes `b` (a `virtio_net_hdr`, then the packet or frame); whether all of it went.
    fn write(self, b: &[u8]) -> bool {
        match self {
            Dest::Tun(q) => matches!(q.send(b), Ok(w) if w == b.len()),
            Dest::Tap(t) => matches!(t.send_prefixed(b), Ok(w) if w == b.len()),
        }
    }
}

/// Offers `pkt` (with offload metadata `h`) to `co`; true when it was taken (it is counted when
/// the super-packet is written). Otherwise whatever was pending has been written first, so the
/// caller writes `pkt` on its own next, in order.
fn merged(
    co: Option<&mut UdpCoalescer>,
    dest: Dest<'_>,
    pkt: &[u8],
    h: VnetHdr,
    counters: &QueueCounters,
) -> bool {
    let Some(co) = co else {
        return false;
    };
    let mut offer = co.offer(pkt, h);
    if offer == Offer::FlushFirst {
        flush_coalesced(co, dest, counters);
        offer = co.offer(pkt, h);
    }
    match offer {
        Offer::Taken => true,
        Offer::FlushFirst | Offer::Refused => {
            flush_coalesced(co, dest, counters);
            false
        }
    }
}

/// Writes the pending USO super-packet (or lone datagram), counting each datagram.
fn flush_coalesced(co: &mut UdpCoalescer, dest: Dest<'_>, counters: &QueueCounters) {
    if let Some((n, ok)) = co.flush(|b| dest.write(b)) {
        let n = n as u64;
        if ok {
            counters.tx_packets.fetch_add(n, Ordering::Relaxed);
            if n > 1 {
                counters.tx_uso.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            counters.write_errors.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Where the engine left a packet in its buffer, and what it says about its checksum.
#[derive(Debug, Clone, Copy)]
struct Out {
    start: usize,
    len: usize,
    offload: Offload,
}

impl Out {
    fn of(pkt: &PacketBuf<'_>) -> Out {
        Out {
            start: pkt.headroom(),
            len: pkt.len(),
            offload: pkt.offload(),
        }
    }
}

/// Acts on a verdict for the packet at `out` in `buf`, counting the outcome.
#[allow(clippy::too_many_arguments)]
fn emit(
    verdict: Verdict,
    queue: &TunQueue,
    tap: Option<&TapQueue>,
    buf: &mut [u8],
    out: Out,
    hdr_len: usize,
    vnet: VnetHdr,
    merge: &mut Merge,
    counters: &QueueCounters,
) {
    // The packet's offload metadata as it leaves: without the partial checksum when the
    // engine finished it, offsets moved by whatever the engine put in front (tunnel headers, an
    // Ethernet header).
    let out_hdr = || {
        let mut h = vnet;
        if out.offload.csum == L4Csum::Complete && h.needs_csum() {
            h.flags &= !F_NEEDS_CSUM;
            h.csum_start = 0;
            h.csum_offset = 0;
        }
        h.moved(out.start as isize - HEADROOM as isize)
    };
    let ok = match verdict {
        Verdict::Forward | Verdict::Pass => {
            let Some(h) = out_hdr() else {
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let pkt = &buf[out.start..out.start + out.len];
            if merged(merge.tun.as_mut(), Dest::Tun(queue), pkt, h, counters) {
                return;
            }
            send_tun(queue, buf, out.start, out.len, hdr_len, h)
        }
        // A new packet built by the engine: complete checksums, no offload metadata.
        Verdict::Reply => {
            if let Some(co) = merge.tun.as_mut() {
                flush_coalesced(co, Dest::Tun(queue), counters);
            }
            send_tun(queue, buf, out.start, out.len, hdr_len, VnetHdr::default())
        }
        // Direct routing: a super-packet or partial checksum reaches here only when the TAP
        // takes the metadata (the engine splits and finishes otherwise).
        Verdict::ForwardFrame => match (tap, out_hdr()) {
            (Some(tap), Some(h)) => {
                let frame = &buf[out.start..out.start + out.len];
                if merged(merge.tap.as_mut(), Dest::Tap(tap), frame, h, counters) {
                    return;
                }
                matches!(tap.send_offload(h, frame), Ok(w) if w == frame.len())
            }
            _ => false,
        },
        Verdict::Drop(reason) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(reason = reason.name(), "packet dropped");
            return;
        }
    };
    if ok {
        counters.tx_packets.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.write_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes the packet at `buf[start..start + len]` to a TUN queue, with `vnet` in the `hdr_len`
/// bytes in front of it when the queue has a `virtio_net_hdr` (`hdr_len` is 0 or
/// [`VNET_HDR_LEN`]). Returns whether the whole packet was written.
pub(crate) fn send_tun(
    queue: &TunQueue,
    buf: &mut [u8],
    start: usize,
    len: usize,
    hdr_len: usize,
    vnet: VnetHdr,
) -> bool {
    let Some(at) = start.checked_sub(hdr_len) else {
        return false;
    };
    if hdr_len > 0 {
        buf[at..start].copy_from_slice(&vnet.to_bytes());
    }
    let frame = &buf[at..start + len];
    matches!(queue.send(frame), Ok(w) if w == frame.len())
}

/// Length of the `virtio_net_hdr` in front of packets on `queue` (0 without offload).
fn vnet_len(queue: &TunQueue) -> usize {
    if queue.has_vnet_hdr() {
        VNET_HDR_LEN
    } else {
        0
    }
}

/// The CPUs this process may run on (empty if the mask cannot be read).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// A `poll(2)` entry waiting for input on `fd`; `None` gives an entry poll ignores (fd -1).
pub(crate) fn poll_in(fd: Option<RawFd>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Clears the entries' `revents` and waits until one of them is ready or `timeout_ms` passes
/// (-1: no limit), retrying when a signal interrupts the wait.
pub(crate) fn poll_ready(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<()> {
    loop {
        for f in fds.iter_mut() {
            f.revents = 0;
        }
        // SAFETY: `fds` is a valid slice of pollfd structs (negative fds are ignored).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Pins the calling thread to `cpu`; a failure is logged and the thread runs unpinned.
fn pin_current_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: callers pass a CPU from `allowed_cpus`, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the pointer and size describe `set`; 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        tracing::warn!(cpu, error = %err, "could not pin worker thread");
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
    let tun_hdr = vnet_len(tun);
    let mut fds = [
        poll_in(Some(tap.as_raw_fd())),
        poll_in(Some(stop.as_raw_fd())),
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
        let wait = next_requests.saturating_sub(clock.now().0).max(1) as libc::c_int;
        if let Err(err) = poll_ready(&mut fds, wait) {
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
                Verdict::Forward => {
                    // A TUN with offload expects a (here empty) virtio_net_hdr in front.
                    let (start, len) = (pkt.headroom(), pkt.len());
                    if send_tun(tun, &mut buf, start, len, tun_hdr, VnetHdr::default()) {
                        counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
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
    fn the_process_may_run_somewhere() {
        assert!(!allowed_cpus().is_empty());
    }

    #[test]
    fn clock_is_monotonic_and_starts_near_zero() {
        let c = Clock::start();
        let a = c.now();
        let b = c.now();
        assert!(a <= b);
        assert!(a.0 < 1000);
    }
}
