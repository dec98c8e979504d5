//! The TUN queue-steering program (needs root): attached to a real multi-queue TUN in a
//! namespace of its own, it puts each packet on the queue its flow hash names.

use std::net::{Ipv4Addr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use integration::netns::Netns;
use integration::require_root;
use ulvs_dataplane::steer::{Steering, fallback_hash};
use ulvs_dataplane::{TunConfig, TunDevice, TunQueue};

const TUN: &str = "ulvss0";
const DATAGRAMS: u16 = 64;
const FIRST_PORT: u16 = 4000;

/// A namespace with a two-queue TUN (198.18.7.1/24, no offload) steered by `steering`, the
/// device (which lives as long as it does) and its queues.
fn steered_tun(role: &str, steering: Steering) -> Result<(Netns, TunDevice, Vec<TunQueue>)> {
    let ns = Netns::new(role)?;
    let tun = ns.run(|| {
        TunDevice::open(&TunConfig {
            name: TUN.to_owned(),
            queues: 2,
            offload: false,
            ..TunConfig::default()
        })
    })??;
    tun.steer(steering).context("attach the steering program")?;
    ns.ip(&["addr", "add", "198.18.7.1/24", "dev", TUN])?;
    let queues = tun.clone_queues()?;
    Ok((ns, tun, queues))
}

/// Waits up to 100 ms for one of `queues` to have a packet.
fn wait_readable(queues: &[TunQueue]) -> Result<()> {
    let mut fds: Vec<libc::pollfd> = queues
        .iter()
        .map(|q| libc::pollfd {
            fd: q.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of pollfd structs for the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
    ensure!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Reads both queues until `want` IPv4 UDP datagrams to a port in `ports` have arrived (other
/// packets are skipped), bounded to 5 s; returns each with the index of its queue.
fn datagrams(queues: &[TunQueue], ports: Range<u16>, want: usize) -> Result<Vec<(usize, Vec<u8>)>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < want {
        ensure!(
            Instant::now() < deadline,
            "only {} of {want} datagrams reached the TUN's queues",
            got.len()
        );
        wait_readable(queues)?;
        for (q, queue) in queues.iter().enumerate() {
            while let Ok(n) = queue.recv(&mut buf) {
                let pkt = &buf[..n];
                let ours = n >= 28
                    && pkt[0] == 0x45
                    && pkt[9] == 17
                    && ports.contains(&u16::from_be_bytes([pkt[22], pkt[23]]));
                if ours {
                    got.push((q, pkt.to_vec()));
                }
            }
        }
    }
    Ok(got)
}

/// Datagrams from unconnected sockets carry no flow hash, so the program mixes their addresses
/// and ports ([`fallback_hash`]); the kernel's own selection would put about half of them
/// elsewhere.
#[test]
fn each_packet_lands_on_the_queue_of_its_flow_hash() -> Result<()> {
    require_root()?;
    let (ns, _tun, queues) = steered_tun("steer", Steering::Flow)?;

    ns.run(|| -> Result<()> {
        for i in 0..DATAGRAMS {
            let sock = UdpSocket::bind((Ipv4Addr::new(198, 18, 7, 1), 0))?;
            let dst = Ipv4Addr::new(198, 18, 7, 2 + u8::try_from(i / 8)?);
            sock.send_to(b"steer", (dst, FIRST_PORT + i))?;
        }
        Ok(())
    })??;

    let mut seen = [0usize; 2];
    for (q, pkt) in datagrams(
        &queues,
        FIRST_PORT..FIRST_PORT + DATAGRAMS,
        usize::from(DATAGRAMS),
    )? {
        let hash = fallback_hash(&pkt).context("a whole datagram")?;
        let want = usize::try_from(hash % 2)?;
        ensure!(
            q == want,
            "datagram to port {} came on queue {q}, its hash {hash:#x} names queue {want}",
            u16::from_be_bytes([pkt[22], pkt[23]])
        );
        seen[q] += 1;
    }
    ensure!(
        seen[0] > 0 && seen[1] > 0,
        "one queue took every datagram: {seen:?}"
    );
    Ok(())
}

/// With the CPU program, a datagram sent from a thread pinned to CPU `c` is routed into the
/// TUN on that CPU and lands on queue `c % 2`.
#[test]
fn with_cpu_steering_each_packet_lands_on_the_queue_of_its_cpu() -> Result<()> {
    require_root()?;
    let cpus = std::thread::available_parallelism()?.get();
    ensure!(cpus >= 2, "needs two CPUs, has {cpus}");
    let (ns, _tun, queues) = steered_tun("steercpu", Steering::Cpu)?;
    for cpu in 0..2usize {
        // Eight flows per CPU: the kernel's own selection would spread them over both queues.
        let first = FIRST_PORT + 8 * u16::try_from(cpu)?;
        ns.run(|| -> Result<()> {
            // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity
            // only touch it and the calling thread (which ends with this closure).
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                ensure!(
                    rc == 0,
                    "pin to CPU {cpu}: {}",
                    std::io::Error::last_os_error()
                );
            }
            for port in first..first + 8 {
                let sock = UdpSocket::bind((Ipv4Addr::new(198, 18, 7, 1), 0))?;
                sock.send_to(b"steer", (Ipv4Addr::new(198, 18, 7, 2), port))?;
            }
            Ok(())
        })??;
        let mut per_queue = [0usize; 2];
        for (q, _) in datagrams(&queues, first..first + 8, 8)? {
            per_queue[q] += 1;
        }
        let mut want = [0usize; 2];
        want[cpu % 2] = 8;
        ensure!(
            per_queue == want,
            "datagrams sent on CPU {cpu} per queue: {per_queue:?}, expected {want:?}"
        );
    }
    Ok(())
}
