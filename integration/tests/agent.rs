//! ulvs-agent end to end (needs root): the real agent against a real `ulvsd` in the NAT rig.
//! `apply` reaches the expected live state (checked with `ulvsadm -L -n`) and a second apply
//! plans nothing; a bad file changes nothing; in `watch`, a killed real server is drained
//! within fall x interval + 1 s after which no new connection fails, is restored when it comes
//! back, and a restarted `ulvsd` or a manual `ulvsadm` edit is repaired.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use integration::topology::{VIP, vip_tcp, vip_udp};
use integration::{BIN_DIR_ENV, Bins, NatRig, Spawned, require_root, wait_until};

const INTERVAL_MS: u64 = 200;
const RISE: u64 = 2;
const FALL: u64 = 2;

fn agent_bin() -> Result<PathBuf> {
    let dir = std::env::var_os(BIN_DIR_ENV)
        .context("ULVS_BIN_DIR is not set (run `cargo xtask integration`)")?;
    let p = Path::new(&dir).join("ulvs-agent");
    ensure!(
        p.is_file(),
        "{} not found (cargo build -p ulvs-agent)",
        p.display()
    );
    Ok(p)
}

fn rig(n: usize) -> Result<NatRig> {
    require_root()?;
    NatRig::with_ulvsd(Bins::from_env()?, n)
}

/// The desired state for the rig: TCP wrr over both real servers (weights 2 and 1), UDP rr,
/// TCP health checks every 200 ms.
fn config(rig: &NatRig, tcp_weights: [u32; 2]) -> String {
    let rs = &rig.servers;
    format!(
        r#"
agent {{
  name = "it"
}}
variable "vip" {{
  default = "{VIP}"
}}
service "web" {{
  address   = var.vip
  port      = 80
  scheduler = "wrr"
  forward   = "masq"
  health_check {{
    type     = "tcp"
    interval = "{INTERVAL_MS}ms"
    timeout  = "150ms"
    rise     = {RISE}
    fall     = {FALL}
  }}
  real_server "rs1" {{
    address = "{a}"
    port    = 8080
    weight  = {w1}
  }}
  real_server "rs2" {{
    address = "{b}"
    port    = 8080
    weight  = {w2}
  }}
}}
service "dns" {{
  protocol  = "udp"
  address   = var.vip
  port      = 53
  scheduler = "rr"
  forward   = "masq"
  real_server {{
    address = "{a}"
    port    = 5353
  }}
  real_server {{
    address = "{b}"
    port    = 5353
  }}
}}
"#,
        a = rs[0].addr,
        b = rs[1].addr,
        w1 = tcp_weights[0],
        w2 = tcp_weights[1],
    )
}

fn agent(rig: &NatRig, config: &Path, args: &[&str]) -> Result<Output> {
    Command::new(agent_bin()?)
        .arg("--socket")
        .arg(rig.socket())
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("run ulvs-agent")
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The (forward, weight) of `rs` under the service line starting with `service` in
/// `ulvsadm -L -n` output.
fn entry(listing: &str, service: &str, rs: &str) -> Option<(String, u32)> {
    let mut inside = false;
    for line in listing.lines() {
        let t = line.trim_start();
        if !t.starts_with("->") {
            inside = t.starts_with(service);
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if inside && f.len() >= 4 && f[1] == rs {
            return Some((f[2].to_owned(), f[3].parse().ok()?));
        }
    }
    None
}

/// `ulvsadm -L -n` without the connection counters: the configuration only.
fn config_listing(rig: &NatRig) -> Result<String> {
    let l = rig.ulvsadm(&["-L", "-n"])?;
    Ok(l.lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with("->") && !t.starts_with("-> RemoteAddress") {
                t.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

fn weight(rig: &NatRig, rs: &str) -> Result<Option<u32>> {
    let l = rig.ulvsadm(&["-L", "-n"])?;
    Ok(entry(&l, &format!("TCP  {}", vip_tcp()), rs).map(|(_, w)| w))
}

#[test]
fn apply_reaches_the_live_state_and_a_second_apply_changes_nothing() -> Result<()> {
    let rig = rig(2)?;
    let cfg = rig.dir().join("agent.hcl");
    std::fs::write(&cfg, config(&rig, [2, 1]))?;

    let out = agent(&rig, &cfg, &["apply", "--auto-approve"])?;
    ensure!(out.status.success(), "apply: {}", show(&out));
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("Plan: 6 to add, 0 to change, 0 to destroy."),
        "{}",
        show(&out)
    );
    let listing = rig.ulvsadm(&["-L", "-n"])?;
    let shape = config_listing(&rig)?;
    let tcp = format!("TCP  {} wrr", vip_tcp());
    let udp = format!("UDP  {} rr", vip_udp());
    ensure!(
        listing.contains(&tcp) && listing.contains(&udp),
        "{listing}"
    );
    let svc = format!("TCP  {}", vip_tcp());
    ensure!(
        entry(&listing, &svc, &rig.servers[0].tcp()) == Some(("Masq".into(), 2)),
        "{listing}"
    );
    ensure!(
        entry(&listing, &svc, &rig.servers[1].tcp()) == Some(("Masq".into(), 1)),
        "{listing}"
    );
    let usvc = format!("UDP  {}", vip_udp());
    for rs in &rig.servers {
        ensure!(
            entry(&listing, &usvc, &rs.udp()) == Some(("Masq".into(), 1)),
            "{listing}"
        );
    }
    // Real traffic goes through.
    let replies = rig.tcp_probes(vip_tcp(), 6, Duration::from_secs(20))?;
    ensure!(replies.iter().any(|r| r.server == "rs1") && replies.iter().any(|r| r.server == "rs2"));

    // A second apply plans nothing and changes nothing.
    let out = agent(&rig, &cfg, &["apply", "--auto-approve"])?;
    ensure!(out.status.success(), "{}", show(&out));
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("No changes."),
        "{}",
        show(&out)
    );
    let out = agent(&rig, &cfg, &["plan", "-detailed-exitcode"])?;
    ensure!(out.status.code() == Some(0), "{}", show(&out));
    ensure!(config_listing(&rig)? == shape);

    // A bad file changes nothing, and says where it is wrong.
    let bad = rig.dir().join("bad.hcl");
    std::fs::write(
        &bad,
        config(&rig, [2, 1]).replace("port      = 80", "port      = 80\n  colour = \"red\""),
    )?;
    let out = agent(&rig, &bad, &["apply", "--auto-approve"])?;
    ensure!(out.status.code() == Some(1), "{}", show(&out));
    ensure!(
        String::from_utf8_lossy(&out.stderr)
            .contains("bad.hcl:11:3: error: unknown attribute \"colour\""),
        "{}",
        show(&out)
    );
    ensure!(config_listing(&rig)? == shape);
    Ok(())
}

#[test]
fn watch_drains_restores_and_repairs_drift() -> Result<()> {
    let mut rig = rig(2)?;
    let cfg = rig.dir().join("agent.hcl");
    std::fs::write(&cfg, config(&rig, [1, 1]))?;
    let rs1 = rig.servers[0].tcp();
    let rs2 = rig.servers[1].tcp();

    // The agent runs in the director namespace, so its health checks reach the real servers.
    let mut cmd = rig.director.command(agent_bin()?);
    cmd.arg("--socket")
        .arg(rig.socket())
        .arg("-c")
        .arg(&cfg)
        .args(["watch", "--interval", "300ms", "--file-poll", "200ms"])
        .env("RUST_LOG", "info");
    let mut agent = Spawned::start("ulvs-agent", cmd, rig.dir())?;
    let logs = |a: &Spawned, rig: &NatRig| format!("{}\n{}", a.logs(), rig.diagnostics());

    let res = (|| -> Result<()> {
        wait_until(
            "the agent to apply the configuration",
            Duration::from_secs(10),
            || {
                agent.check_running()?;
                Ok(weight(&rig, &rs1)? == Some(1) && weight(&rig, &rs2)? == Some(1))
            },
        )?;

        // Kill rs1: drained (weight 0) within fall x interval + 1 s.
        let bound = Duration::from_millis(FALL * INTERVAL_MS) + Duration::from_secs(1);
        let t0 = Instant::now();
        rig.stop_server(0)?;
        wait_until("rs1 to be drained", bound, || {
            Ok(weight(&rig, &rs1)? == Some(0))
        })?;
        let drained_after = t0.elapsed();
        ensure!(drained_after <= bound, "drained after {drained_after:?}");
        eprintln!("rs1 drained {drained_after:?} after it was killed (bound {bound:?})");
        // From now on no new connection fails: they all go to rs2.
        let replies = rig.tcp_probes(vip_tcp(), 20, Duration::from_secs(20))?;
        ensure!(replies.iter().all(|r| r.server == "rs2"), "{replies:?}");

        // Restart it: restored to its weight within rise x interval + 1 s.
        let bound = Duration::from_millis(RISE * INTERVAL_MS) + Duration::from_secs(1);
        rig.start_server(0)?;
        let t0 = Instant::now();
        wait_until("rs1 to be restored", bound, || {
            Ok(weight(&rig, &rs1)? == Some(1))
        })?;
        eprintln!("rs1 restored {:?} after it came back", t0.elapsed());
        let replies = rig.tcp_probes(vip_tcp(), 8, Duration::from_secs(20))?;
        ensure!(replies.iter().any(|r| r.server == "rs1"), "{replies:?}");

        // Restart ulvsd: the agent restores the full configuration within 2 s.
        let before = config_listing(&rig)?;
        rig.stop_ulvsd(Duration::from_secs(10))?;
        rig.start_ulvsd()?;
        let t0 = Instant::now();
        wait_until(
            "the agent to restore the configuration",
            Duration::from_secs(2),
            || Ok(config_listing(&rig)? == before),
        )?;
        eprintln!(
            "configuration restored {:?} after ulvsd was back",
            t0.elapsed()
        );
        rig.tcp_probes(vip_tcp(), 4, Duration::from_secs(20))?;
        rig.udp_probes(vip_udp(), 4, Duration::from_secs(20))?;

        // A manual change is drift too.
        rig.ulvsadm(&[
            "-e",
            "-t",
            &vip_tcp().to_string(),
            "-r",
            &rs2,
            "-m",
            "-w",
            "5",
        ])?;
        wait_until(
            "the agent to repair a manual edit",
            Duration::from_secs(2),
            || Ok(weight(&rig, &rs2)? == Some(1)),
        )?;

        // A changed file is picked up: rs2's weight becomes 3.
        std::fs::write(&cfg, config(&rig, [1, 3]))?;
        wait_until(
            "the agent to apply the edited file",
            Duration::from_secs(3),
            || Ok(weight(&rig, &rs2)? == Some(3)),
        )?;
        agent.check_running()?;
        Ok(())
    })();
    if let Err(e) = res {
        return Err(e.context(logs(&agent, &rig)));
    }
    let status = agent.terminate(Duration::from_secs(5))?;
    ensure!(
        status.success(),
        "agent exited with {status}: {}",
        agent.logs()
    );
    let log = agent.stderr();
    ensure!(
        log.contains("health check failing") && log.contains("applied"),
        "{log}"
    );
    Ok(())
}
