//! HTTPS health checks against a real in-process TLS server (tokio-rustls) with rcgen
//! certificates: the check is decoded from HCL (so `ca_file` is read as `validate` reads it)
//! and run with `health::check_once`. No root needed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use ulvs_agent::config::{HealthCheckSpec, Syntax, parse_str};
use ulvs_agent::health::check_once;
use ulvs_testkit::{ExtendedKeyUsagePurpose, Pki};

/// A server certificate for `names` (DNS names or IP addresses) from `ca`: (cert PEM, key PEM).
fn leaf(ca: &Pki, names: &[&str]) -> Result<(String, String)> {
    let leaf = ca.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)?;
    Ok((leaf.cert_pem, leaf.key_pem))
}

/// Serves HTTPS on 127.0.0.1 until the test's runtime ends: `/healthz` is 200, `/host` is 200
/// only with `Host: www.example`, `/hang` never answers, anything else is 404.
async fn serve(cert_pem: &str, key_pem: &str) -> Result<SocketAddr> {
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes())?];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut chunk = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("");
                let host = req
                    .lines()
                    .find_map(|l| l.strip_prefix("Host: "))
                    .unwrap_or("");
                let status = match path {
                    "/hang" => {
                        // Hold the connection open without answering.
                        std::future::pending::<()>().await;
                        return;
                    }
                    "/healthz" => "200 OK",
                    "/host" if host == "www.example" => "200 OK",
                    "/host" => "421 Misdirected Request",
                    _ => "404 Not Found",
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// The health check of a one-server service whose `health_check` block has `attrs`, decoded
/// from a file in `dir` (relative `ca_file` names resolve against it).
fn check(dir: &Path, attrs: &str) -> Result<HealthCheckSpec> {
    let text = format!(
        "service \"s\" {{\n  address = \"198.18.100.1\"\n  port = 443\n  health_check {{\n    type = \"https\"\n    timeout = \"500ms\"\n    interval = \"1s\"\n{attrs}\n  }}\n  real_server {{\n    address = \"198.18.1.1\"\n  }}\n}}\n"
    );
    let file = dir.join("agent.hcl");
    let cfg = parse_str(
        &file.display().to_string(),
        &text,
        Syntax::Hcl,
        &Default::default(),
    )
    .map_err(|d| anyhow!("{d:?}"))?;
    cfg.services[0].real_servers[0]
        .health_check
        .clone()
        .context("no health check decoded")
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    std::fs::write(dir.join(name), text).with_context(|| format!("write {name}"))
}

#[tokio::test]
async fn trusted_ca_right_status_is_healthy_and_a_wrong_status_fails() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Pki::new("health CA")?;
    let (cert, key) = leaf(&ca, &["127.0.0.1"])?;
    let addr = serve(&cert, &key).await?;
    write(dir.path(), "ca.pem", &ca.ca_pem)?;

    let ok = check(dir.path(), "path = \"/healthz\"\nca_file = \"ca.pem\"")?;
    assert_eq!(check_once(&ok, addr).await, Ok(()));

    let wrong = check(dir.path(), "path = \"/missing\"\nca_file = \"ca.pem\"")?;
    let err = check_once(&wrong, addr).await.unwrap_err();
    assert!(err.contains("status 404, expected 200"), "{err}");

    let expect_404 = check(
        dir.path(),
        "path = \"/missing\"\nexpect_status = 404\nca_file = \"ca.pem\"",
    )?;
    assert_eq!(check_once(&expect_404, addr).await, Ok(()));

    // The Host header is sent as configured.
    let host = check(
        dir.path(),
        "path = \"/host\"\nhost = \"www.example\"\nca_file = \"ca.pem\"",
    )?;
    assert_eq!(check_once(&host, addr).await, Ok(()));
    let no_host = check(dir.path(), "path = \"/host\"\nca_file = \"ca.pem\"")?;
    let err = check_once(&no_host, addr).await.unwrap_err();
    assert!(err.contains("status 421"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_certificate_from_a_foreign_ca_fails() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Pki::new("health CA")?;
    let other = Pki::new("someone else")?;
    let (cert, key) = leaf(&ca, &["127.0.0.1"])?;
    let addr = serve(&cert, &key).await?;
    write(dir.path(), "other.pem", &other.ca_pem)?;
    let spec = check(dir.path(), "path = \"/healthz\"\nca_file = \"other.pem\"")?;
    let err = check_once(&spec, addr).await.unwrap_err();
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(err.contains("certificate"), "{err}");
    Ok(())
}

#[tokio::test]
async fn server_name_selects_the_certificate_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Pki::new("health CA")?;
    let (cert, key) = leaf(&ca, &["health.example"])?;
    let addr = serve(&cert, &key).await?;
    write(dir.path(), "ca.pem", &ca.ca_pem)?;
    // By default the certificate must be valid for the real server's address: it is not.
    let by_address = check(dir.path(), "path = \"/healthz\"\nca_file = \"ca.pem\"")?;
    let err = check_once(&by_address, addr).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let by_name = check(
        dir.path(),
        "path = \"/healthz\"\nca_file = \"ca.pem\"\nserver_name = \"health.example\"",
    )?;
    assert_eq!(check_once(&by_name, addr).await, Ok(()));
    Ok(())
}

#[tokio::test]
async fn no_answer_in_time_fails_within_the_timeout() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Pki::new("health CA")?;
    let (cert, key) = leaf(&ca, &["127.0.0.1"])?;
    let addr = serve(&cert, &key).await?;
    write(dir.path(), "ca.pem", &ca.ca_pem)?;

    // The handshake completes but the answer never comes.
    let hang = check(dir.path(), "path = \"/hang\"\nca_file = \"ca.pem\"")?;
    let started = Instant::now();
    let err = check_once(&hang, addr).await.unwrap_err();
    assert!(err.contains("no answer within 500ms"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A listener that accepts TCP but never speaks TLS: the handshake is bounded too.
    let silent = TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?;
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let ok = check(dir.path(), "path = \"/healthz\"\nca_file = \"ca.pem\"")?;
    let started = Instant::now();
    let err = check_once(&ok, silent_addr).await.unwrap_err();
    assert!(err.contains("no answer within 500ms"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    held.abort();
    Ok(())
}

#[tokio::test]
async fn insecure_skip_verify_accepts_a_self_signed_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let self_signed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let addr = serve(
        &self_signed.cert.pem(),
        &self_signed.signing_key.serialize_pem(),
    )
    .await?;
    let insecure = check(
        dir.path(),
        "path = \"/healthz\"\ninsecure_skip_verify = true",
    )?;
    assert_eq!(check_once(&insecure, addr).await, Ok(()));
    // Still an HTTP check: a wrong status fails.
    let wrong = check(
        dir.path(),
        "path = \"/missing\"\ninsecure_skip_verify = true",
    )?;
    assert!(check_once(&wrong, addr).await.is_err());
    // Verified (against the system's CA bundle, or none), the self-signed certificate fails.
    let verified = check(dir.path(), "path = \"/healthz\"")?;
    assert!(check_once(&verified, addr).await.is_err());
    Ok(())
}
