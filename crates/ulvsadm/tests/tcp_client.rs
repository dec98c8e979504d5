//! ulvsadm over TCP: the built binary drives the real control service through its TLS listener
//! (`--server`, `--tls-ca`, `--tls-cert`, `--tls-key`, `--token-file`), and is refused without
//! the token, without a client certificate, or when the daemon's certificate is from another
//! CA. Certificates are generated at test time (rcgen); the listener is on 127.0.0.1 only.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use ulvs_testkit::{Daemon, Pki, engine_backend};

const TOKEN: &str = "ulvsadm-test-token-42";

/// The control service on a TLS listener that wants a client certificate from `pki` and the
/// token, stopped on drop; and, in its directory, the files ulvsadm needs.
fn start(pki: &Pki) -> Result<Daemon> {
    let d = Daemon::tcp(engine_backend(), pki.tcp_options(Some(TOKEN))?)?;
    let client = pki.client_leaf("ulvsadm")?;
    let other = Pki::new("another CA")?;
    for (name, text) in [
        ("ca.pem", pki.ca_pem.as_str()),
        ("other-ca.pem", other.ca_pem.as_str()),
        ("client.pem", client.cert_pem.as_str()),
        ("client.key", client.key_pem.as_str()),
        ("token", &format!("{TOKEN}\n")),
        ("wrong-token", "not-the-token\n"),
    ] {
        std::fs::write(d.dir().join(name), text).with_context(|| format!("write {name}"))?;
    }
    Ok(d)
}

fn url(d: &Daemon) -> String {
    format!("https://{}", d.addr())
}

/// Runs ulvsadm with `connection` options and then `args`.
fn ulvsadm(connection: &[String], args: &str) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_ulvsadm"))
        .args(connection)
        .args(args.split_whitespace())
        .env_remove("ULVS_SOCKET")
        .output()
        .with_context(|| format!("run ulvsadm {args}"))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `--server` and the given TLS/token options, each `(flag, file)`.
fn opts(d: &Daemon, url: &str, files: &[(&str, &str)]) -> Vec<String> {
    let mut v = vec!["--server".to_string(), url.to_string()];
    for (flag, file) in files {
        v.push((*flag).to_string());
        v.push(path_text(&d.dir().join(file)));
    }
    v
}

fn path_text(p: &Path) -> String {
    p.display().to_string()
}

const FULL: &[(&str, &str)] = &[
    ("--tls-ca", "ca.pem"),
    ("--tls-cert", "client.pem"),
    ("--tls-key", "client.key"),
    ("--token-file", "token"),
];

#[test]
fn ulvsadm_drives_the_daemon_over_tls_with_a_client_certificate_and_token() -> Result<()> {
    let pki = Pki::new("ulvs test CA")?;
    let d = start(&pki)?;
    let full = opts(&d, &url(&d), FULL);
    for args in [
        "-A -t 198.18.1.1:80 -s rr",
        "-a -t 198.18.1.1:80 -r 198.19.0.11:8080 -m -w 3 -x 100 -y 50",
    ] {
        let out = ulvsadm(&full, args)?;
        ensure!(out.status.success(), "{args}: {}", text(&out.stderr));
        ensure!(out.stdout.is_empty(), "{args}: {}", text(&out.stdout));
    }
    let out = ulvsadm(&full, "-L -n")?;
    ensure!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    ensure!(
        listing.ends_with(
            "Prot LocalAddress:Port Scheduler Flags\n\
             \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  198.18.1.1:80 rr\n\
             \x20 -> 198.19.0.11:8080             Masq    3      0          0         \n"
        ),
        "{listing}"
    );
    let out = ulvsadm(&full, "-L -n --thresholds -t 198.18.1.1:80")?;
    ensure!(
        text(&out.stdout)
            == "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n\
                \x20 -> RemoteAddress:Port\n\
                TCP  198.18.1.1:80 rr\n\
                \x20 -> 198.19.0.11:8080             100        50         0          0         \n",
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The name in the URL is checked against the certificate too.
    let by_name = opts(&d, &format!("https://localhost:{}", d.addr().port()), FULL);
    let out = ulvsadm(&by_name, "-L --timeout -o json")?;
    ensure!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(json["timeouts"]["tcp"].as_u64().is_some(), "{json}");
    let out = ulvsadm(&full, "-S -n")?;
    ensure!(
        text(&out.stdout)
            == "-A -t 198.18.1.1:80 -s rr\n\
                -a -t 198.18.1.1:80 -r 198.19.0.11:8080 -m -w 3 -x 100 -y 50\n",
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(())
}

/// Exit status 1, nothing on stdout, and `want` in the message.
fn refused(out: &Output, want: &str) -> Result<()> {
    let err = text(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "status {:?}: {err}",
        out.status
    );
    ensure!(out.stdout.is_empty(), "{}", text(&out.stdout));
    ensure!(err.starts_with("ulvsadm: "), "{err}");
    ensure!(err.contains(want), "wanted {want:?} in {err:?}");
    Ok(())
}

#[test]
fn ulvsadm_is_refused_without_token_certificate_or_the_right_ca() -> Result<()> {
    let pki = Pki::new("ulvs test CA")?;
    let d = start(&pki)?;
    let url = url(&d);
    let with = |files: &[(&str, &str)]| opts(&d, &url, files);

    // No token, or the wrong one: the API refuses the call.
    let no_token = with(&[
        ("--tls-ca", "ca.pem"),
        ("--tls-cert", "client.pem"),
        ("--tls-key", "client.key"),
    ]);
    refused(
        &ulvsadm(&no_token, "-L -n")?,
        "ListServices: a bearer token is required",
    )?;
    let wrong_token = with(&[
        ("--tls-ca", "ca.pem"),
        ("--tls-cert", "client.pem"),
        ("--tls-key", "client.key"),
        ("--token-file", "wrong-token"),
    ]);
    refused(
        &ulvsadm(&wrong_token, "-A -t 198.18.1.1:80")?,
        "AddService: the bearer token is not valid",
    )?;

    // No client certificate: the TLS handshake fails (at connect or at the first call).
    let no_cert = with(&[("--tls-ca", "ca.pem"), ("--token-file", "token")]);
    refused(&ulvsadm(&no_cert, "-L -n")?, "")?;

    // The daemon's certificate is not from the CA ulvsadm trusts.
    let other_ca = with(&[
        ("--tls-ca", "other-ca.pem"),
        ("--tls-cert", "client.pem"),
        ("--tls-key", "client.key"),
        ("--token-file", "token"),
    ]);
    refused(
        &ulvsadm(&other_ca, "-L -n")?,
        &format!("cannot connect to ulvsd at {url}"),
    )?;

    // A missing file is named.
    let missing = with(&[("--tls-ca", "nope.pem")]);
    refused(&ulvsadm(&missing, "-L")?, "--tls-ca ")?;

    // Nothing was changed by the refused calls.
    let out = ulvsadm(&with(FULL), "-S -n")?;
    ensure!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    Ok(())
}
