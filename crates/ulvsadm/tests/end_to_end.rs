//! End to end: the real control service (engine-only backend) on a temporary unix socket, driven
//! by the built `ulvsadm` binary through add / list / edit / delete.

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use ulvs_testkit::{Daemon, engine_backend};

const TITLE: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

/// Runs ulvsadm with no input and requires success; returns stdout.
fn ok(socket: &Path, args: &str) -> Result<String> {
    common::ok(socket, args, "")
}

/// Runs ulvsadm with no input and requires failure with `code`; returns stderr.
fn fails(socket: &Path, args: &str, code: i32) -> Result<String> {
    common::fails(socket, args, "", code)
}

fn listing(body: &str) -> String {
    format!("IP Virtual Server version 1.2.1 (size=4096)\n{TITLE}{body}")
}

#[test]
fn add_list_edit_delete_through_the_binary() -> Result<()> {
    let d = Daemon::unix(engine_backend())?;
    let s = d.socket();

    assert_eq!(ok(s, "-L -n")?, listing(""));

    ok(s, "-A -t 198.18.0.1:80 -s rr")?;
    ok(s, "-a -t 198.18.0.1:80 -r 198.18.1.10:8080 -m -w 2")?;
    ok(s, "-a -t 198.18.0.1:80 -r 198.18.1.2 -m")?;
    ok(s, "-A -u 198.18.0.1:53")?;
    ok(s, "-a -u 198.18.0.1:53 -r 198.18.1.5 -m -w 0")?;
    assert_eq!(
        ok(s, "-L -n")?,
        listing(concat!(
            "TCP  198.18.0.1:80 rr\n",
            "  -> 198.18.1.2:80                Masq    1      0          0         \n",
            "  -> 198.18.1.10:8080             Masq    2      0          0         \n",
            "UDP  198.18.0.1:53 wlc\n",
            "  -> 198.18.1.5:53                Masq    0      0          0         \n",
        ))
    );

    // Duplicates are refused by the daemon: one readable line, exit 1, nothing changed.
    let err = fails(s, "-A -t 198.18.0.1:80 -s wrr", 1)?;
    assert!(
        err.starts_with("ulvsadm: AddService: ") && err.contains("already exists"),
        "{err:?}"
    );
    assert_eq!(err.lines().count(), 1, "{err:?}");

    ok(s, "-E -t 198.18.0.1:80 -s wrr")?;
    ok(s, "-e -t 198.18.0.1:80 -r 198.18.1.10:8080 -m -w 5")?;
    ok(s, "-d -t 198.18.0.1:80 -r 198.18.1.2")?;
    assert_eq!(
        ok(s, "-L -n -t 198.18.0.1:80")?,
        format!(
            "{TITLE}{}",
            concat!(
                "TCP  198.18.0.1:80 wrr\n",
                "  -> 198.18.1.10:8080             Masq    5      0          0         \n",
            )
        )
    );

    let json: serde_json::Value = serde_json::from_str(&ok(s, "-L -o json")?)?;
    let services = json["services"].as_array().context("services")?;
    assert_eq!(services.len(), 2);
    assert_eq!(services[0]["spec"]["scheduler"], "wrr");
    assert_eq!(services[0]["real_servers"][0]["spec"]["weight"], 5);

    ok(s, "-D -u 198.18.0.1:53")?;
    let err = fails(s, "-D -u 198.18.0.1:53", 1)?;
    assert!(err.starts_with("ulvsadm: DeleteService: "), "{err:?}");
    let err = fails(s, "-L -n -u 198.18.0.1:53", 1)?;
    assert_eq!(err, "ulvsadm: No such service: UDP 198.18.0.1:53\n");

    ok(s, "-C")?;
    assert_eq!(ok(s, "-L -n")?, listing(""));

    // Usage errors never reach the daemon.
    let err = fails(s, "-A -t 198.18.0.1:80 -n", 2)?;
    assert_eq!(
        err,
        "ulvsadm: Illegal 'numeric' option with the 'add-service' command\n"
    );
    Ok(())
}

#[test]
fn a_missing_daemon_is_reported_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("absent.sock");
    let err = fails(&socket, "-L -n", 1)?;
    let want = format!("ulvsadm: cannot connect to ulvsd at {}: ", socket.display());
    assert!(err.starts_with(&want), "{err:?}");
    assert_eq!(err.lines().count(), 1, "{err:?}");

    // ULVS_SOCKET is used when --socket is absent.
    let out = Command::new(env!("CARGO_BIN_EXE_ulvsadm"))
        .args(["-L", "-n"])
        .env("ULVS_SOCKET", &socket)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)?.starts_with(&want));
    Ok(())
}

#[test]
fn help_and_version_need_no_daemon() -> Result<()> {
    let missing = Path::new("/nonexistent/ulvsd.sock");
    let help = ok(missing, "--help")?;
    assert!(help.contains("-A, --add-service"), "{help}");
    assert!(help.contains("--socket <PATH>"), "{help}");
    assert!(ok(missing, "-v")?.starts_with("ulvsadm "));
    let err = fails(missing, "-n -L", 2)?;
    assert!(err.ends_with("Try `ulvsadm -h' or 'ulvsadm --help' for more information.\n"));
    Ok(())
}
