//! Golden files for `-S` / `-R` / `-L -n`: the built `ulvsadm` binary against the real control
//! service on a temporary unix socket. `-S | -R` round-trips exactly, `-R` is all or none.
//!
//! Two backends: the engine (`EngineBackend`, what ulvsd runs today) for configurations it
//! implements, and `ConfigBackend`, which accepts every configuration that passes the engine's
//! whole-configuration validation (`Config::validate`), for features that the dataplane does not
//! forward yet (persistence, sh/mh flags, IPv6, direct routing) but whose rules the CLI must
//! already save and restore in ipvsadm's format.

mod common;

use std::sync::Mutex;

use anyhow::{Context, Result, ensure};
use common::{fails, ok};
use ulvs_control::{Backend, BackendError, BackendInfo};
use ulvs_engine::{Config, ConfigError, Engine, EngineOptions, StatsSnapshot};
use ulvs_testkit::{Daemon, engine_backend};

/// Stores whatever passes `Config::validate`; reports the counters of an idle, unconfigured
/// engine (no traffic).
#[derive(Debug)]
struct ConfigBackend {
    live: Mutex<Config>,
    idle: Engine,
}

impl ConfigBackend {
    fn new() -> Self {
        ConfigBackend {
            live: Mutex::default(),
            idle: Engine::new(EngineOptions::default()),
        }
    }
}

impl Backend for ConfigBackend {
    async fn apply(&self, _old: &Config, new: &Config) -> Result<(), BackendError> {
        *self.live.lock().expect("lock") = new.clone();
        Ok(())
    }

    fn check(&self, new: &Config) -> Result<(), ConfigError> {
        new.validate()
    }

    fn stats(&self) -> StatsSnapshot {
        self.idle.stats()
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            connection_table_size: 4096,
            devices: Vec::new(),
            queues: 0,
        }
    }
}

const HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)\n";
const TITLE: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

/// One golden case: rules in `-S -n` form (sorted) and the expected `-L -n` body.
struct Golden {
    name: &'static str,
    rules: &'static str,
    list: &'static str,
}

/// NAT configurations the engine forwards today.
const ENGINE_CASES: &[Golden] = &[
    Golden {
        name: "empty",
        rules: "",
        list: "",
    },
    Golden {
        name: "two services, weights and thresholds",
        rules: concat!(
            "-A -t 198.18.0.1:80 -s rr\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.2:80 -m -w 1\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.10:8080 -m -w 2 -x 100 -y 20\n",
            "-A -t 198.18.0.2:443 -s wlc\n",
            "-a -t 198.18.0.2:443 -r 198.18.1.3:8443 -m -w 0 -x 50\n",
            "-A -u 198.18.0.1:53 -s wrr\n",
            "-a -u 198.18.0.1:53 -r 198.18.1.5:53 -m -w 3\n",
        ),
        list: concat!(
            "TCP  198.18.0.1:80 rr\n",
            "  -> 198.18.1.2:80                Masq    1      0          0         \n",
            "  -> 198.18.1.10:8080             Masq    2      0          0         \n",
            "TCP  198.18.0.2:443 wlc\n",
            "  -> 198.18.1.3:8443              Masq    0      0          0         \n",
            "UDP  198.18.0.1:53 wrr\n",
            "  -> 198.18.1.5:53                Masq    3      0          0         \n",
        ),
    },
    Golden {
        name: "tunnel types and checksum options, IPv6 real server of an IPv4 service",
        rules: concat!(
            "-A -t 198.18.0.1:80 -s rr\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.2:80 -i -w 1 --tun-type ipip\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.4:80 -i -w 2 --tun-type gue --tun-port 6081 --tun-remcsum -x 9\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.5:80 -i -w 1 --tun-type gre --tun-csum\n",
            "-a -t 198.18.0.1:80 -r [fd00:1b5::a0]:80 -i -w 1 --tun-type gre --tun-nocsum\n",
        ),
        list: concat!(
            "TCP  198.18.0.1:80 rr\n",
            "  -> 198.18.1.2:80                Tunnel  1      0          0         \n",
            "  -> 198.18.1.3:80                Tunnel  1      0          0         \n",
            "  -> 198.18.1.4:80                Tunnel  2      0          0         \n",
            "  -> 198.18.1.5:80                Tunnel  1      0          0         \n",
            "  -> [fd00:1b5::a0]:80            Tunnel  1      0          0         \n",
        ),
    },
    Golden {
        name: "FULLNAT services with local addresses (-P), IPv4 and IPv6",
        rules: concat!(
            "-A -t 198.18.0.1:80 -s rr\n",
            "-P -t 198.18.0.1:80 -z 198.18.2.1\n",
            "-P -t 198.18.0.1:80 -z 198.18.2.2\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.2:8080 --fullnat -w 1\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.3:8080 -m -w 2\n",
            "-A -u [fd00:1b5::80]:53 -s wlc\n",
            "-P -u [fd00:1b5::80]:53 -z fd00:1b5:2::1\n",
            "-a -u [fd00:1b5::80]:53 -r [fd00:1b5:1::2]:53 --fullnat -w 1\n",
        ),
        list: concat!(
            "TCP  198.18.0.1:80 rr\n",
            "  -> 198.18.1.2:8080              FullNat 1      0          0         \n",
            "  -> 198.18.1.3:8080              Masq    2      0          0         \n",
            "UDP  [fd00:1b5::80]:53 wlc\n",
            "  -> [fd00:1b5:1::2]:53           FullNat 1      0          0         \n",
        ),
    },
];

/// Configurations with features ipvsadm saves that the dataplane does not forward yet.
const CONFIG_CASES: &[Golden] = &[Golden {
    name: "persistence, masks, flags, ops, IPv6, forwarding methods",
    rules: concat!(
        "-A -t 198.18.0.1:0 -s lc -p 360\n",
        "-a -t 198.18.0.1:0 -r 198.18.1.1:0 -g -w 1\n",
        "-A -t 198.18.0.1:80 -s rr\n",
        "-a -t 198.18.0.1:80 -r 198.18.1.1:80 -i -w 1 --tun-type ipip\n",
        "-a -t 198.18.0.1:80 -r 198.18.1.2:80 -g -w 4\n",
        "-a -t 198.18.0.1:80 -r 198.18.1.3:9000 -m -w 1 -x 10 -y 5\n",
        "-A -u 198.18.0.1:53 -s sh -p 300 -M 255.255.255.0 -o -b sh-fallback,sh-port\n",
        "-a -u 198.18.0.1:53 -r 198.18.1.5:53 -m -w 1\n",
        "-A -t [fd00:1b5::80]:80 -s mh -p 60 -M 64 -b mh-port\n",
        "-a -t [fd00:1b5::80]:80 -r [fd00:1b5::a0]:8080 -m -w 3\n",
    ),
    list: concat!(
        "TCP  198.18.0.1:0 lc persistent 360\n",
        "  -> 198.18.1.1:0                 Route   1      0          0         \n",
        "TCP  198.18.0.1:80 rr\n",
        "  -> 198.18.1.1:80                Tunnel  1      0          0         \n",
        "  -> 198.18.1.2:80                Route   4      0          0         \n",
        "  -> 198.18.1.3:9000              Masq    1      0          0         \n",
        "UDP  198.18.0.1:53 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0 ops\n",
        "  -> 198.18.1.5:53                Masq    1      0          0         \n",
        "TCP  [fd00:1b5::80]:80 mh (mh-port) persistent 60 mask 64\n",
        "  -> [fd00:1b5::a0]:8080          Masq    3      0          0         \n",
    ),
}];

fn check_golden<B: Backend>(d: &Daemon<B>, case: &Golden) -> Result<()> {
    let s = d.socket();
    ok(s, "-C", "")?;
    ok(s, "-R", case.rules).with_context(|| case.name)?;
    let saved = ok(s, "-S -n", "")?;
    ensure!(
        saved == case.rules,
        "{}: -S -n\n--- got\n{saved}--- want\n{}",
        case.name,
        case.rules
    );
    let listed = ok(s, "-L -n", "")?;
    let want = format!("{HEADER}{TITLE}{}", case.list);
    ensure!(
        listed == want,
        "{}: -L -n\n--- got\n{listed}--- want\n{want}",
        case.name
    );
    // -S | -R into a cleared table gives the same -S again, byte for byte.
    ok(s, "-C", "")?;
    ok(s, "-R", &saved)?;
    ensure!(ok(s, "-S -n", "")? == saved, "{}: round trip", case.name);
    Ok(())
}

#[test]
fn golden_engine_configurations() -> Result<()> {
    let d = Daemon::unix(engine_backend())?;
    for case in ENGINE_CASES {
        check_golden(&d, case)?;
    }
    Ok(())
}

#[test]
fn golden_saved_features() -> Result<()> {
    let d = Daemon::unix(ConfigBackend::new())?;
    for case in CONFIG_CASES {
        check_golden(&d, case)?;
    }
    Ok(())
}

#[test]
fn restore_accepts_ipvsadm_input_forms_and_sorts_on_save() -> Result<()> {
    let d = Daemon::unix(engine_backend())?;
    let s = d.socket();
    let input = concat!(
        "# saved by hand\n",
        "\n",
        "ipvsadm -A -u 198.18.0.1:53 -s rr   # comment after a rule\n",
        "-A -t 198.18.0.1:80 -s wrr\n",
        "  -a -t 198.18.0.1:80 -r 198.18.1.10:8080 -m -w 2\n",
        "ulvsadm -a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m\n",
        "-e -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 5\n",
    );
    ok(s, "-R", input)?;
    assert_eq!(
        ok(s, "-S -n", "")?,
        concat!(
            "-A -t 198.18.0.1:80 -s wrr\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 5\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.10:8080 -m -w 2\n",
            "-A -u 198.18.0.1:53 -s rr\n",
        )
    );
    // --nosort keeps the daemon's (insertion) order.
    assert_eq!(
        ok(s, "-S -n --nosort", "")?,
        concat!(
            "-A -u 198.18.0.1:53 -s rr\n",
            "-A -t 198.18.0.1:80 -s wrr\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.10:8080 -m -w 2\n",
            "-a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 5\n",
        )
    );
    Ok(())
}

#[test]
fn restore_is_all_or_none() -> Result<()> {
    let d = Daemon::unix(engine_backend())?;
    let s = d.socket();
    let base = "-A -t 198.18.0.1:80 -s rr\n-a -t 198.18.0.1:80 -r 198.18.1.1:80 -m -w 1\n";
    ok(s, "-R", base)?;

    // A line that does not parse: nothing is sent, exit 2, the line is named.
    let err = fails(
        s,
        "-R",
        "-A -t 198.18.0.2:80 -s rr\n-a -t 198.18.0.2:80 -r 198.18.1.1:80 -m -w 70000\n",
        2,
    )?;
    assert_eq!(err, "ulvsadm: line 2: illegal weight specified\n");
    let err = fails(s, "-R", "-L -n\n", 2)?;
    assert!(
        err.starts_with("ulvsadm: line 1: only table changes"),
        "{err:?}"
    );

    // A line the daemon refuses (the service exists): the earlier lines are not applied either.
    let err = fails(
        s,
        "-R",
        "-A -t 198.18.0.2:80 -s rr\n-a -t 198.18.0.2:80 -r 198.18.1.1:80 -m\n-A -t 198.18.0.1:80\n",
        1,
    )?;
    assert!(
        err.starts_with("ulvsadm: Apply: changes[2].add_service: ") && err.contains("exists"),
        "{err:?}"
    );
    // A setting the engine cannot do yet is refused the same way, naming the change.
    let err = fails(
        s,
        "-R",
        "-A -t 198.18.0.3:80 -s rr\n-a -t 198.18.0.3:80 -r 198.18.1.1:80 --fullnat\n",
        1,
    )?;
    assert!(
        err.starts_with("ulvsadm: Apply: changes[1].add_real_server.real_server.forward: "),
        "{err:?}"
    );
    assert_eq!(ok(s, "-S -n", "")?, base, "nothing of the refused batches");
    Ok(())
}

#[test]
fn save_and_restore_options_follow_ipvsadm_legality() -> Result<()> {
    let d = Daemon::unix(engine_backend())?;
    let s = d.socket();
    let err = fails(s, "-S -t 198.18.0.1:80", "", 2)?;
    assert_eq!(
        err,
        "ulvsadm: Illegal 'service-address' option with the 'save' command\n"
    );
    let err = fails(s, "-R -n", "", 2)?;
    assert_eq!(
        err,
        "ulvsadm: Illegal 'numeric' option with the 'restore' command\n"
    );
    Ok(())
}

#[test]
fn tun_info_column_shows_type_port_and_checksum() -> Result<()> {
    let d = Daemon::unix(engine_backend())?;
    let s = d.socket();
    let case = ENGINE_CASES
        .iter()
        .find(|c| c.rules.contains("--tun-type"))
        .context("tunnel case")?;
    ok(s, "-R", case.rules)?;
    let listed = ok(s, "-L -n --tun-info", "")?;
    let want = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
        "TCP  198.18.0.1:80 rr\n",
        "  -> 198.18.1.2:80                Tunnel  ipip          1      0          0         \n",
        "  -> 198.18.1.3:80                Tunnel  gue:6080:-c   1      0          0         \n",
        "  -> 198.18.1.4:80                Tunnel  gue:6081:r+c  2      0          0         \n",
        "  -> 198.18.1.5:80                Tunnel  gre:+c        1      0          0         \n",
        "  -> [fd00:1b5::a0]:80            Tunnel  gre:-c        1      0          0         \n",
    );
    ensure!(
        listed == want,
        "-L -n --tun-info\n--- got\n{listed}--- want\n{want}"
    );
    // --stats wins over --tun-info, as in ipvsadm.
    let stats = ok(s, "-L -n --stats --tun-info", "")?;
    ensure!(
        stats.contains("InPkts") && !stats.contains("TunnelInfo"),
        "{stats}"
    );
    let json = ok(s, "-L -n -o json", "")?;
    ensure!(
        json.contains("\"tunnel_type\": \"TUNNEL_TYPE_GUE\"")
            && json.contains("\"tunnel_port\": 6081")
            && json.contains("\"tunnel_checksum\": \"TUNNEL_CHECKSUM_REMCSUM\""),
        "{json}"
    );
    Ok(())
}

#[test]
fn local_addresses_are_added_listed_kept_by_edit_and_removed() -> Result<()> {
    let d = Daemon::unix(engine_backend())?;
    let s = d.socket();
    ok(s, "-A -t 198.18.0.1:80 -s rr", "")?;
    ok(s, "-P -t 198.18.0.1:80 -z 198.18.2.1", "")?;
    ok(s, "--add-laddr -t 198.18.0.1:80 --laddr 198.18.2.2", "")?;
    ok(s, "-a -t 198.18.0.1:80 -r 198.18.1.2:8080 --fullnat", "")?;
    let got = ok(s, "-G -t 198.18.0.1:80", "")?;
    let want = "TCP 198.18.0.1:80\n  -> laddr 198.18.2.1\n  -> laddr 198.18.2.2\n";
    ensure!(got == want, "-G\n--- got\n{got}--- want\n{want}");
    // -E replaces the ipvsadm settings but keeps the local addresses.
    ok(s, "-E -t 198.18.0.1:80 -s wrr", "")?;
    ensure!(
        ok(s, "-G -t 198.18.0.1:80", "")? == want,
        "-E kept the local addresses"
    );
    ensure!(
        ok(s, "-L -n", "")?.contains("TCP  198.18.0.1:80 wrr\n"),
        "-E changed the scheduler"
    );
    // Adding one twice, removing one that is not there, the wrong family, no service: refused.
    let err = fails(s, "-P -t 198.18.0.1:80 -z 198.18.2.1", "", 1)?;
    ensure!(err.contains("already exists"), "{err}");
    let err = fails(s, "-Q -t 198.18.0.1:80 -z 198.18.2.9", "", 1)?;
    ensure!(err.contains("no local address"), "{err}");
    fails(s, "-P -t 198.18.0.1:80 -z fd00:1b5::1", "", 2)?;
    fails(s, "-P -t 198.18.0.1:80", "", 2)?;
    let err = fails(s, "-G -t 198.18.0.9:80", "", 1)?;
    ensure!(err.contains("No such service"), "{err}");
    ok(s, "-Q -t 198.18.0.1:80 -z 198.18.2.1", "")?;
    let got = ok(s, "--get-laddr -t 198.18.0.1:80", "")?;
    ensure!(got == "TCP 198.18.0.1:80\n  -> laddr 198.18.2.2\n", "{got}");
    // -R needs the service's -A earlier in the same input for a -P.
    let err = fails(s, "-R", "-P -t 198.18.0.1:80 -z 198.18.2.3\n", 2)?;
    ensure!(err.contains("earlier in the input"), "{err}");
    Ok(())
}
