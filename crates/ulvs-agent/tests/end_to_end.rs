//! End to end without root: the real control service (engine-only backend) on a temporary unix
//! socket, driven by the built `ulvs-agent` binary: apply, idempotence, drift repair by apply,
//! stale saved plans, bad files, ownership, destroy and the TTY rule.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};
use ulvs_proto::v1 as pb;
use ulvs_testkit::engine_backend;

/// The shared test daemon (engine backend, unix socket, stopped on drop), with the calls these
/// tests make.
struct Daemon(ulvs_testkit::Daemon);

impl std::ops::Deref for Daemon {
    type Target = ulvs_testkit::Daemon;

    fn deref(&self) -> &ulvs_testkit::Daemon {
        &self.0
    }
}

impl Daemon {
    fn start() -> Result<Daemon> {
        Ok(Daemon(ulvs_testkit::Daemon::unix(engine_backend())?))
    }

    /// Stops the control service and starts a new one (a fresh engine and configuration, a
    /// new instance id) on the same socket: a daemon restart.
    fn restart(&mut self) -> Result<()> {
        self.0.restart(engine_backend())
    }

    fn info(&self) -> Result<pb::GetInfoResponse> {
        self.block_on(async {
            let mut c = ulvs_proto::connect_unix(self.socket()).await?;
            Ok(c.get_info(pb::GetInfoRequest {}).await?.into_inner())
        })
    }

    fn list(&self) -> Result<pb::ListServicesResponse> {
        self.block_on(async {
            let mut c = ulvs_proto::connect_unix(self.socket()).await?;
            Ok(c.list_services(pb::ListServicesRequest::default())
                .await?
                .into_inner())
        })
    }

    fn timeouts(&self) -> Result<pb::Timeouts> {
        self.block_on(async {
            let mut c = ulvs_proto::connect_unix(self.socket()).await?;
            c.get_timeouts(pb::GetTimeoutsRequest {})
                .await?
                .into_inner()
                .timeouts
                .context("no timeouts")
        })
    }

    fn apply(&self, changes: Vec<pb::change::Change>) -> Result<()> {
        self.block_on(async {
            let mut c = ulvs_proto::connect_unix(self.socket()).await?;
            c.apply(pb::ApplyRequest {
                changes: changes
                    .into_iter()
                    .map(|c| pb::Change { change: Some(c) })
                    .collect(),
                ..Default::default()
            })
            .await?;
            Ok(())
        })
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.dir().join(name);
        std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
        Ok(p)
    }

    fn agent(&self, config: &Path, args: &[&str]) -> Result<Output> {
        Command::new(env!("CARGO_BIN_EXE_ulvs-agent"))
            .arg("--socket")
            .arg(self.socket())
            .arg("-c")
            .arg(config)
            .args(args)
            .env_remove("ULVS_SOCKET")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run ulvs-agent {args:?}"))
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const CONFIG: &str = r#"
agent {
  name = "test"
}
timeouts {
  tcp     = 600
  tcp_fin = 60
  udp     = 120
}
service "web" {
  address   = "198.18.100.1"
  port      = 80
  scheduler = "wrr"
  forward   = "masq"
  real_server "a" {
    address = "198.18.1.11"
    port    = 8080
    weight  = 2
  }
  real_server "b" {
    address = "198.18.1.12"
    port    = 8080
  }
}
service "dns" {
  protocol = "udp"
  address  = "198.18.100.1"
  port     = 53
  forward  = "masq"
  real_server {
    address = "198.18.1.11"
    port    = 5353
  }
}
"#;

fn key(proto: pb::Protocol, port: u32) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: proto as i32,
        address: "198.18.100.1".into(),
        port,
    }
}

fn weights(list: &pb::ListServicesResponse, port: u32) -> Vec<(String, u32)> {
    list.services
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|s| s.key.as_ref()).map(|k| k.port) == Some(port))
        .flat_map(|s| s.real_servers.iter())
        .filter_map(|r| r.spec.as_ref())
        .map(|r| (format!("{}:{}", r.address, r.port), r.weight))
        .collect()
}

#[test]
fn apply_is_idempotent_and_repairs_drift() -> Result<()> {
    let d = Daemon::start()?;
    let cfg = d.write("agent.hcl", CONFIG)?;

    let out = d.agent(&cfg, &["apply", "--auto-approve"])?;
    ensure!(out.status.success(), "apply failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.contains("Plan: 5 to add, 1 to change, 0 to destroy."),
        "{}",
        text(&out)
    );
    ensure!(stdout.contains("Apply complete!"), "{}", text(&out));

    let list = d.list()?;
    ensure!(list.services.len() == 2, "{list:?}");
    // Services and timeouts went in one batch: one generation.
    ensure!(list.generation == 1, "{list:?}");
    let t = d.timeouts()?;
    ensure!((t.tcp, t.tcp_fin, t.udp) == (600, 60, 120), "{t:?}");
    ensure!(
        weights(&list, 80)
            == [
                ("198.18.1.11:8080".to_owned(), 2),
                ("198.18.1.12:8080".to_owned(), 1)
            ],
        "{list:?}"
    );
    let web = list
        .services
        .iter()
        .find(|s| s.spec.as_ref().unwrap().key.as_ref().unwrap().port == 80)
        .unwrap();
    ensure!(
        web.spec
            .as_ref()
            .unwrap()
            .labels
            .get("ulvs.io/owner")
            .map(String::as_str)
            == Some("test")
    );

    // A second plan has nothing to do.
    let out = d.agent(&cfg, &["plan", "-detailed-exitcode"])?;
    ensure!(out.status.code() == Some(0), "second plan: {}", text(&out));
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("No changes."),
        "{}",
        text(&out)
    );

    // Drift by hand: a weight changed and a real server removed; plan sees it, apply repairs it
    // with edits (no service is deleted).
    d.apply(vec![
        pb::change::Change::EditRealServer(pb::EditRealServerRequest {
            service: Some(key(pb::Protocol::Tcp, 80)),
            real_server: Some(pb::RealServerSpec {
                address: "198.18.1.11".into(),
                port: 8080,
                forward: pb::ForwardMethod::Masq as i32,
                weight: 7,
                ..Default::default()
            }),
            expected_generation: 0,
        }),
        pb::change::Change::DeleteRealServer(pb::DeleteRealServerRequest {
            service: Some(key(pb::Protocol::Udp, 53)),
            address: "198.18.1.11".into(),
            port: 5353,
            expected_generation: 0,
        }),
    ])?;
    let out = d.agent(&cfg, &["plan", "--detailed-exitcode"])?;
    ensure!(out.status.code() == Some(2), "drift plan: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(stdout.contains("~ weight = 7 -> 2"), "{}", text(&out));
    ensure!(
        stdout.contains("Plan: 1 to add, 1 to change, 0 to destroy."),
        "{}",
        text(&out)
    );
    let out = d.agent(&cfg, &["apply", "-auto-approve"])?;
    ensure!(out.status.success(), "{}", text(&out));
    ensure!(weights(&d.list()?, 80)[0].1 == 2);
    ensure!(weights(&d.list()?, 53).len() == 1);
    Ok(())
}

#[test]
fn a_saved_plan_is_refused_after_a_daemon_restart() -> Result<()> {
    let mut d = Daemon::start()?;
    let cfg = d.write("agent.hcl", CONFIG)?;
    let out = d.agent(&cfg, &["apply", "--auto-approve"])?;
    ensure!(out.status.success(), "{}", text(&out));
    ensure!(d.list()?.generation == 1);
    let first = d.info()?.instance_id;

    // A weight change, planned against generation 1 of this daemon run.
    let cfg = d.write("agent.hcl", &CONFIG.replace("weight  = 2", "weight  = 3"))?;
    let plan_file = d.dir().join("plan.json");
    let out = d.agent(&cfg, &["plan", "-out", plan_file.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", text(&out));

    // The daemon restarts (empty, generation 0) and one write brings it to generation 1
    // again: the generation matches by accident, the instance does not.
    d.restart()?;
    let second = d.info()?.instance_id;
    ensure!(
        second != first && second.len() == 32,
        "{first} then {second}"
    );
    d.apply(vec![pb::change::Change::AddService(
        pb::AddServiceRequest {
            service: Some(pb::ServiceSpec {
                key: Some(key(pb::Protocol::Tcp, 443)),
                ..Default::default()
            }),
        },
    )])?;
    let before = d.list()?;
    ensure!(before.generation == 1, "{before:?}");
    refused_then_replanned(
        &d,
        &cfg,
        &plan_file,
        "ulvsd restarted since this plan was made",
    )
}

#[test]
fn a_stale_saved_plan_is_refused() -> Result<()> {
    let d = Daemon::start()?;
    let cfg = d.write("agent.hcl", CONFIG)?;
    let plan_file = d.dir().join("plan.json");
    let out = d.agent(&cfg, &["plan", "-out", plan_file.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", text(&out));
    // Someone changes the live state after the plan was made.
    d.apply(vec![pb::change::Change::AddService(
        pb::AddServiceRequest {
            service: Some(pb::ServiceSpec {
                key: Some(key(pb::Protocol::Tcp, 443)),
                ..Default::default()
            }),
        },
    )])?;
    refused_then_replanned(&d, &cfg, &plan_file, "changed since this plan was made")
}

/// Applying the saved plan at `plan_file` fails saying `why` and changes nothing; planned
/// again, the same file applies and the three services of `CONFIG` are live.
fn refused_then_replanned(d: &Daemon, cfg: &Path, plan_file: &Path, why: &str) -> Result<()> {
    let before = d.list()?;
    let apply = ["apply", "--auto-approve", plan_file.to_str().unwrap()];
    let out = d.agent(cfg, &apply)?;
    ensure!(
        !out.status.success(),
        "refused plan applied: {}",
        text(&out)
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains(why),
        "{}",
        text(&out)
    );
    ensure!(d.list()? == before, "a refused plan changed something");

    // Planned again, it applies.
    let out = d.agent(cfg, &["plan", "-out", plan_file.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", text(&out));
    let out = d.agent(cfg, &apply)?;
    ensure!(out.status.success(), "{}", text(&out));
    ensure!(d.list()?.services.len() == 3);
    Ok(())
}

#[test]
fn bad_files_change_nothing() -> Result<()> {
    let d = Daemon::start()?;
    let good = d.write("agent.hcl", CONFIG)?;
    let out = d.agent(&good, &["apply", "--auto-approve"])?;
    ensure!(out.status.success(), "{}", text(&out));
    let before = d.list()?;
    let cases = [
        (
            "syntax.hcl",
            CONFIG.replace("port      = 80", "port      = 80 +"),
            "syntax error",
        ),
        (
            "unknown.hcl",
            CONFIG.replace("scheduler = \"wrr\"", "schedular = \"wrr\""),
            "unknown attribute \"schedular\"",
        ),
        (
            "address.hcl",
            CONFIG.replace("198.18.1.12", "198.18.1.300"),
            "invalid IP address \"198.18.1.300\"",
        ),
        (
            "dup.hcl",
            CONFIG
                .replace("port     = 53", "port     = 80")
                .replace("\"udp\"", "\"tcp\""),
            "duplicate service tcp 198.18.100.1:80",
        ),
    ];
    for (name, body, needle) in cases {
        let f = d.write(name, &body)?;
        let out = d.agent(&f, &["apply", "--auto-approve"])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.code() == Some(1), "{name}: {}", text(&out));
        ensure!(err.contains(needle), "{name}: {}", text(&out));
        ensure!(
            err.contains(&format!("{name}:")),
            "{name}: no file:line:col: {}",
            text(&out)
        );
        ensure!(
            err.contains("nothing was changed"),
            "{name}: {}",
            text(&out)
        );
        let out = d.agent(&f, &["validate"])?;
        ensure!(
            out.status.code() == Some(1),
            "{name} validate: {}",
            text(&out)
        );
        ensure!(d.list()? == before, "{name} changed the live state");
    }
    Ok(())
}

#[test]
fn only_owned_services_are_touched() -> Result<()> {
    let d = Daemon::start()?;
    // A service made by hand, before the agent runs.
    d.apply(vec![pb::change::Change::AddService(
        pb::AddServiceRequest {
            service: Some(pb::ServiceSpec {
                key: Some(key(pb::Protocol::Tcp, 8443)),
                scheduler: "rr".into(),
                ..Default::default()
            }),
        },
    )])?;
    let cfg = d.write("agent.hcl", CONFIG)?;
    let out = d.agent(&cfg, &["apply", "--auto-approve"])?;
    ensure!(out.status.success(), "{}", text(&out));
    ensure!(
        String::from_utf8_lossy(&out.stdout)
            .contains("1 service not managed by this agent, left unchanged."),
        "{}",
        text(&out)
    );
    ensure!(d.list()?.services.len() == 3);

    // Without --auto-approve and without a terminal, apply and destroy refuse.
    let out = d.agent(&cfg, &["destroy"])?;
    ensure!(out.status.code() == Some(1), "{}", text(&out));
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("--auto-approve"),
        "{}",
        text(&out)
    );
    ensure!(d.list()?.services.len() == 3);

    let out = d.agent(&cfg, &["destroy", "--auto-approve"])?;
    ensure!(out.status.success(), "{}", text(&out));
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("Plan: 0 to add, 0 to change, 5 to destroy."),
        "{}",
        text(&out)
    );
    let left = d.list()?;
    ensure!(left.services.len() == 1, "{left:?}");
    ensure!(
        left.services[0]
            .spec
            .as_ref()
            .unwrap()
            .key
            .as_ref()
            .unwrap()
            .port
            == 8443
    );

    // `show` prints the owned state as HCL that validates.
    let out = d.agent(&cfg, &["apply", "--auto-approve"])?;
    ensure!(out.status.success(), "{}", text(&out));
    let out = d.agent(&cfg, &["show"])?;
    ensure!(out.status.success(), "{}", text(&out));
    let shown = d.write("shown.hcl", &String::from_utf8_lossy(&out.stdout))?;
    let out = d.agent(&shown, &["validate"])?;
    ensure!(
        out.status.success(),
        "show output does not validate: {}",
        text(&out)
    );
    Ok(())
}
