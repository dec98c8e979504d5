//! Real server for the namespace rigs: answers each TCP connection and UDP datagram with its name.
//!
//! TCP: on accept, writes `<name> <client ip:port>\n`, then echoes what the client sends (at most
//! `ECHO_LIMIT` bytes, idle connections closed after `IDLE`). UDP: answers every datagram with
//! `<name> <client ip:port>`. Prints `ready` on stdout once both sockets are bound. Exits by itself
//! after `--max-seconds`, so a leftover can never run forever; concurrent connections are capped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

const ECHO_LIMIT: usize = 64 * 1024;
const IDLE: Duration = Duration::from_secs(10);
const MAX_CONCURRENT: usize = 512;

#[derive(Debug, Parser)]
#[command(about = "ulvs rig real server: answers with its name over TCP and UDP")]
struct Args {
    /// Name written in every answer.
    #[arg(long)]
    name: String,
    /// TCP listen address.
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// UDP listen address.
    #[arg(long)]
    udp: Option<SocketAddr>,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
}

fn serve_tcp(name: &str, mut stream: TcpStream, peer: SocketAddr) -> Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    stream.write_all(format!("{name} {peer}\n").as_bytes())?;
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < ECHO_LIMIT {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n])?;
        total += n;
    }
    Ok(())
}

fn run_tcp(name: Arc<str>, listener: TcpListener) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONCURRENT {
            active.fetch_sub(1, Ordering::SeqCst);
            continue; // dropping the stream closes it
        }
        let name = Arc::clone(&name);
        let active = Arc::clone(&active);
        std::thread::spawn(move || {
            if let Err(e) = serve_tcp(&name, stream, peer) {
                eprintln!("{name}: tcp {peer}: {e:#}");
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn run_udp(name: Arc<str>, sock: UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((_, peer)) => {
                if let Err(e) = sock.send_to(format!("{name} {peer}").as_bytes(), peer) {
                    eprintln!("{name}: udp reply to {peer}: {e}");
                }
            }
            Err(e) => eprintln!("{name}: udp recv: {e}"),
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let name: Arc<str> = Arc::from(args.name.as_str());
    anyhow::ensure!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        "--name must be one non-empty word"
    );
    anyhow::ensure!(
        args.tcp.is_some() || args.udp.is_some(),
        "give --tcp and/or --udp"
    );
    if let Some(addr) = args.tcp {
        let listener = TcpListener::bind(addr).with_context(|| format!("bind TCP {addr}"))?;
        let name = Arc::clone(&name);
        std::thread::spawn(move || run_tcp(name, listener));
    }
    if let Some(addr) = args.udp {
        let sock = UdpSocket::bind(addr).with_context(|| format!("bind UDP {addr}"))?;
        let name = Arc::clone(&name);
        std::thread::spawn(move || run_udp(name, sock));
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    std::thread::sleep(Duration::from_secs(args.max_seconds));
    eprintln!(
        "{name}: --max-seconds {} reached, exiting",
        args.max_seconds
    );
    Ok(())
}
