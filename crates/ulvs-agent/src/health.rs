//! Health checks of real servers (TCP connect, HTTP and HTTPS GET, UDP request/response, exec)
//! with rise/fall hysteresis, one tokio task per checked real server.
//!
//! The result is a [`HealthView`] the planner takes as input: the checks never change the
//! daemon themselves. Every state change is logged and wakes the reconciler through a
//! [`Notify`]. Servers start healthy (as in keepalived): a dead server is drained after `fall`
//! failed checks, a recovered one restored after `rise` successful ones.
//!
//! HTTPS checks use rustls (the `ring` provider, TLS 1.2 and 1.3): the server's certificate must
//! chain to the check's `ca_file` (or the system's CA bundle) and be valid for `server_name` (or
//! the real server's IP address), unless `insecure_skip_verify` is set. The TLS client
//! configuration is built once per check task, not per check; the check's timeout bounds the
//! connect, the handshake and the answer together.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{CheckKind, Config, HealthCheckSpec, TlsCheck};
use crate::desired::HealthView;
use crate::model::ServiceKey;

/// Where the system's CA bundle is looked for (after `SSL_CERT_FILE`) when an `https` check
/// names no `ca_file`: Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Runs one check of `spec` against `target` (bounded by `spec.timeout`); `Err` says why it
/// failed.
pub async fn check_once(spec: &HealthCheckSpec, target: SocketAddr) -> Result<(), String> {
    let tls = tls_client(&spec.kind)?;
    check_with(spec, tls.as_ref(), target).await
}

/// [`check_once`] with the TLS client configuration already built (see [`tls_client`]).
async fn check_with(
    spec: &HealthCheckSpec,
    tls: Option<&Arc<ClientConfig>>,
    target: SocketAddr,
) -> Result<(), String> {
    match tokio::time::timeout(spec.timeout, run_check(&spec.kind, tls, target)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", spec.timeout)),
    }
}

async fn run_check(
    kind: &CheckKind,
    tls: Option<&Arc<ClientConfig>>,
    target: SocketAddr,
) -> Result<(), String> {
    match kind {
        CheckKind::Tcp => TcpStream::connect(target)
            .await
            .map(drop)
            .map_err(|e| format!("tcp connect to {target}: {e}")),
        CheckKind::Http {
            path,
            expect_status,
            host,
        } => {
            let s = TcpStream::connect(target)
                .await
                .map_err(|e| format!("http connect to {target}: {e}"))?;
            http_exchange(s, "http", target, path, *expect_status, host.as_deref()).await
        }
        CheckKind::Https {
            path,
            expect_status,
            host,
            tls: settings,
        } => {
            let config = tls.ok_or_else(|| "https: no TLS client configuration".to_owned())?;
            let s = tls_connect(target, settings, config).await?;
            http_exchange(s, "https", target, path, *expect_status, host.as_deref()).await
        }
        CheckKind::Udp { send, expect } => udp_check(target, send, expect.as_deref()).await,
        CheckKind::Exec { command } => exec_check(command, target).await,
    }
}

/// The TLS client configuration of an `https` check (`None` for the other kinds): trust the
/// check's CA certificates, else the system bundle; or, with `insecure_skip_verify`, anything.
pub fn tls_client(kind: &CheckKind) -> Result<Option<Arc<ClientConfig>>, String> {
    let CheckKind::Https { tls, .. } = kind else {
        return Ok(None);
    };
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("https: TLS setup: {e}"))?;
    let config = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(trust_anchors(tls)?)
            .with_no_client_auth()
    };
    Ok(Some(Arc::new(config)))
}

fn trust_anchors(tls: &TlsCheck) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if !tls.ca_certs.is_empty() {
        for der in &tls.ca_certs {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("https: a certificate of the ca_file is not usable: {e}"))?;
        }
        return Ok(roots);
    }
    let from_env = std::env::var_os("SSL_CERT_FILE");
    let candidates = from_env
        .iter()
        .map(Path::new)
        .chain(SYSTEM_CA_BUNDLES.iter().map(Path::new));
    for path in candidates {
        let Ok(pem) = std::fs::read(path) else {
            continue;
        };
        let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
        let (added, _unusable) = roots.add_parsable_certificates(certs);
        if added > 0 {
            return Ok(roots);
        }
    }
    Err(format!(
        "https: no ca_file given and no system CA bundle found (SSL_CERT_FILE, {})",
        SYSTEM_CA_BUNDLES.join(", ")
    ))
}

/// TCP connect and TLS handshake; the certificate must be valid for the check's
/// `server_name`, or for the real server's IP address.
async fn tls_connect(
    target: SocketAddr,
    settings: &TlsCheck,
    config: &Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = match &settings.server_name {
        Some(n) => {
            ServerName::try_from(n.clone()).map_err(|e| format!("https: server_name {n:?}: {e}"))?
        }
        None => ServerName::IpAddress(target.ip().into()),
    };
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("https connect to {target}: {e}"))?;
    TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("https {target}: TLS handshake: {e}"))
}

/// Accepts any server certificate, but still checks the handshake signature against it (so
/// the server holds the certificate's key). `insecure_skip_verify` only.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends a GET for `path` on `s` and compares the answer's status with `expect`.
async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    scheme: &str,
    target: SocketAddr,
    path: &str,
    expect: u16,
    host: Option<&str>,
) -> Result<(), String> {
    let host = host.map_or_else(|| target.to_string(), str::to_owned);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ulvs-agent\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{scheme} write to {target}: {e}"))?;
    s.flush()
        .await
        .map_err(|e| format!("{scheme} write to {target}: {e}"))?;
    // The status line is all we need: read until its end (or 1 KiB).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("{scheme} read from {target}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("{scheme} {target}: no status line in the answer"));
    };
    if !version.starts_with("HTTP/") {
        return Err(format!("{scheme} {target}: not an HTTP answer: {line:?}"));
    }
    match code.parse::<u16>() {
        Ok(c) if c == expect => Ok(()),
        Ok(c) => Err(format!(
            "{scheme} {target}{path}: status {c}, expected {expect}"
        )),
        Err(_) => Err(format!("{scheme} {target}: bad status line {line:?}")),
    }
}

async fn udp_check(target: SocketAddr, send: &[u8], expect: Option<&[u8]>) -> Result<(), String> {
    let local: SocketAddr = match target.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("udp bind: {e}"))?;
    // Connected, so an ICMP port unreachable fails the receive at once.
    sock.connect(target)
        .await
        .map_err(|e| format!("udp connect to {target}: {e}"))?;
    sock.send(send)
        .await
        .map_err(|e| format!("udp send to {target}: {e}"))?;
    let mut buf = vec![0u8; 2048];
    let n = sock
        .recv(&mut buf)
        .await
        .map_err(|e| format!("udp receive from {target}: {e}"))?;
    match expect {
        Some(want)
            if !buf[..n].windows(want.len().max(1)).any(|w| w == want) && !want.is_empty() =>
        {
            Err(format!(
                "udp {target}: reply {:?} does not contain {:?}",
                String::from_utf8_lossy(&buf[..n]),
                String::from_utf8_lossy(want)
            ))
        }
        _ => Ok(()),
    }
}

async fn exec_check(command: &[String], target: SocketAddr) -> Result<(), String> {
    let (prog, args) = command
        .split_first()
        .ok_or_else(|| "exec: empty command".to_owned())?;
    let status = tokio::process::Command::new(prog)
        .args(args)
        .env("ULVS_RS_ADDRESS", target.ip().to_string())
        .env("ULVS_RS_PORT", target.port().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // A check that times out is dropped, and its process killed.
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("exec {prog}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exec {prog}: {status}"))
    }
}

/// Identifies a checked real server.
pub type CheckTarget = (ServiceKey, SocketAddr);

/// The running health checks of a configuration.
#[derive(Debug)]
pub struct HealthChecker {
    tasks: HashMap<CheckTarget, (HealthCheckSpec, JoinHandle<()>)>,
    state: Arc<Mutex<HealthView>>,
    changed: Arc<Notify>,
}

impl Default for HealthChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthChecker {
    /// No checks yet.
    pub fn new() -> Self {
        Self {
            tasks: HashMap::new(),
            state: Arc::new(Mutex::new(HealthView::new())),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Notified whenever a real server changes between healthy and failed.
    pub fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
    }

    /// The current health of every checked real server.
    pub fn view(&self) -> HealthView {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Number of running checks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no check runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Starts, keeps or stops checks so that exactly the real servers of `config` with a
    /// health check are checked. A check whose settings are unchanged keeps its state. Must be
    /// called inside a tokio runtime.
    pub fn sync(&mut self, config: &Config) {
        let mut want: HashMap<CheckTarget, HealthCheckSpec> = HashMap::new();
        for svc in &config.services {
            for rs in &svc.real_servers {
                if let Some(hc) = &rs.health_check {
                    want.insert((svc.spec.key, rs.spec.addr()), hc.clone());
                }
            }
        }
        let stale: Vec<CheckTarget> = self
            .tasks
            .iter()
            .filter(|(k, (spec, _))| want.get(*k) != Some(spec))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some((_, task)) = self.tasks.remove(&k) {
                task.abort();
            }
            if let Ok(mut s) = self.state.lock() {
                s.remove(&k);
            }
        }
        for (k, spec) in want {
            if self.tasks.contains_key(&k) {
                continue;
            }
            let task = tokio::spawn(check_loop(
                k,
                spec.clone(),
                Arc::clone(&self.state),
                Arc::clone(&self.changed),
            ));
            self.tasks.insert(k, (spec, task));
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for (_, (_, task)) in self.tasks.drain() {
            task.abort();
        }
    }
}

async fn check_loop(
    target: CheckTarget,
    spec: HealthCheckSpec,
    state: Arc<Mutex<HealthView>>,
    changed: Arc<Notify>,
) {
    let (service, rs) = target;
    let addr = SocketAddr::new(rs.ip(), spec.port.unwrap_or(rs.port()));
    let mut healthy = true;
    let (mut oks, mut fails) = (0u32, 0u32);
    // Built once: an unusable TLS setup fails every check, with its reason.
    let tls = tls_client(&spec.kind);
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = match &tls {
            Ok(tls) => check_with(&spec, tls.as_ref(), addr).await,
            Err(why) => Err(why.clone()),
        };
        match outcome {
            Ok(()) => {
                fails = 0;
                oks = oks.saturating_add(1);
                if !healthy && oks >= spec.rise {
                    healthy = true;
                    if let Ok(mut s) = state.lock() {
                        s.insert(target, true);
                    }
                    tracing::info!(service = %service, real_server = %rs, checks = oks, "health check passing: real server is healthy again");
                    changed.notify_one();
                }
            }
            Err(why) => {
                oks = 0;
                fails = fails.saturating_add(1);
                if healthy && fails >= spec.fall {
                    healthy = false;
                    if let Ok(mut s) = state.lock() {
                        s.insert(target, false);
                    }
                    tracing::warn!(service = %service, real_server = %rs, failures = fails, reason = %why, "health check failing: real server is down");
                    changed.notify_one();
                } else if healthy {
                    tracing::debug!(service = %service, real_server = %rs, failures = fails, reason = %why, "health check failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, UdpSocket};

    use super::check_once;
    use crate::config::{CheckKind, HealthCheckSpec};

    fn spec(kind: CheckKind) -> HealthCheckSpec {
        HealthCheckSpec {
            kind,
            port: None,
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
        }
    }

    /// A port nothing listens on: bind, note the port, close.
    async fn closed_port() -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn tcp_check_follows_the_listener() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(check_once(&spec(CheckKind::Tcp), addr).await, Ok(()));
        let dead = closed_port().await;
        assert!(check_once(&spec(CheckKind::Tcp), dead).await.is_err());
    }

    #[tokio::test]
    async fn http_check_compares_the_status() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /healthz ") {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let http = |path: &str, expect_status| {
            spec(CheckKind::Http {
                path: path.to_owned(),
                expect_status,
                host: None,
            })
        };
        assert_eq!(check_once(&http("/healthz", 200), addr).await, Ok(()));
        let err = check_once(&http("/missing", 200), addr).await.unwrap_err();
        assert!(err.contains("status 404, expected 200"), "{err}");
        assert_eq!(check_once(&http("/missing", 404), addr).await, Ok(()));
    }

    #[tokio::test]
    async fn udp_check_needs_the_expected_reply() {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let reply = if &buf[..n] == b"ping" {
                    &b"pong"[..]
                } else {
                    &b"what"[..]
                };
                let _ = s.send_to(reply, from).await;
            }
        });
        let udp = |send: &str, expect: &str| {
            spec(CheckKind::Udp {
                send: send.as_bytes().to_vec(),
                expect: Some(expect.as_bytes().to_vec()),
            })
        };
        assert_eq!(check_once(&udp("ping", "pong"), addr).await, Ok(()));
        assert!(check_once(&udp("hello", "pong"), addr).await.is_err());
    }

    #[tokio::test]
    async fn exec_check_uses_the_exit_status_and_the_timeout() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let exec = |cmd: &[&str]| {
            spec(CheckKind::Exec {
                command: cmd.iter().map(|s| (*s).to_owned()).collect(),
            })
        };
        assert_eq!(
            check_once(&exec(&["sh", "-c", "test \"$ULVS_RS_PORT\" = 9"]), addr).await,
            Ok(())
        );
        assert!(
            check_once(&exec(&["sh", "-c", "exit 3"]), addr)
                .await
                .is_err()
        );
        let err = check_once(&exec(&["sleep", "5"]), addr).await.unwrap_err();
        assert!(err.contains("no answer within"), "{err}");
    }
}
