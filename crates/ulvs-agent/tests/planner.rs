//! Snapshot tests of the planner's rendered output: create, update, delete, no-op, ownership,
//! drain and sorry-server cases. Fixtures live in `tests/snapshots/*.txt`; run with
//! `UPDATE_SNAPSHOTS=1` to rewrite them after an intended change (and review the diff).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ulvs_agent::config::{Config, Syntax, parse_str};
use ulvs_agent::desired::{Desired, HealthView};
use ulvs_agent::model::{Observed, ObservedService, Timeouts};
use ulvs_agent::plan::{Plan, plan};

const BASE: &str = r#"
agent {
  name = "edge-1"
}
variable "vip" {
  default = "198.18.100.1"
}
service "web" {
  address   = var.vip
  port      = 80
  scheduler = "wrr"
  forward   = "masq"
  labels    = { team = "web" }
  real_server "a" {
    address = "198.18.1.11"
    port    = 8080
    weight  = 2
  }
  real_server "b" {
    address = "198.18.1.12"
    port    = 8080
  }
  sorry_server {
    address = "198.18.1.99"
    port    = 8080
  }
}
service "dns" {
  protocol = "udp"
  address  = var.vip
  port     = 53
  scheduler = "sh"
  scheduler_flags = ["sh-port"]
  forward  = "masq"
  real_server {
    address = "198.18.1.11"
    port    = 5353
  }
}
"#;

fn config(text: &str) -> Config {
    parse_str("test.hcl", text, Syntax::Hcl, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("test config invalid: {e:?}"))
}

/// What the daemon would report after applying `d` exactly.
fn observed_from(d: &Desired, generation: u64) -> Observed {
    Observed {
        generation,
        instance_id: "test-instance".to_owned(),
        services: d
            .services
            .iter()
            .map(|s| ObservedService {
                spec: s.spec.clone(),
                real_servers: s.real_servers.iter().map(|r| r.spec.clone()).collect(),
            })
            .collect(),
        timeouts: None,
    }
}

fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !path.exists() {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).expect("read snapshot");
    assert!(
        expected == actual,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 to accept)\n--- expected ---\n{expected}\n--- actual ---\n{actual}"
    );
}

fn render(p: &Plan) -> String {
    p.render()
}

#[test]
fn create_from_empty() {
    let d = Desired::from_config(&config(BASE), &HealthView::new());
    let p = plan(&d, &Observed::default()).unwrap();
    assert_eq!(
        p.summary_line(),
        "Plan: 5 to add, 0 to change, 0 to destroy."
    );
    snapshot("create", &render(&p));
}

#[test]
fn no_op_when_live_matches() {
    let d = Desired::from_config(&config(BASE), &HealthView::new());
    let p = plan(&d, &observed_from(&d, 7)).unwrap();
    assert!(!p.has_changes());
    assert_eq!(p.observed_generation, 7);
    assert_eq!(p.observed_instance, "test-instance");
    snapshot("noop", &render(&p));
}

#[test]
fn weight_and_scheduler_changes_are_edits() {
    let old = Desired::from_config(&config(BASE), &HealthView::new());
    let new_text = BASE
        .replace("weight  = 2", "weight  = 5")
        .replace("scheduler = \"wrr\"", "scheduler = \"rr\"")
        .replace(
            "  real_server \"b\" {\n    address = \"198.18.1.12\"\n    port    = 8080\n  }\n",
            "  real_server \"c\" {\n    address = \"198.18.1.13\"\n    port    = 8080\n  }\n",
        );
    let d = Desired::from_config(&config(&new_text), &HealthView::new());
    let p = plan(&d, &observed_from(&old, 3)).unwrap();
    // The service and real server a are edited in place, c added, b destroyed: no service
    // is deleted and re-added.
    assert_eq!(
        p.summary_line(),
        "Plan: 1 to add, 2 to change, 1 to destroy."
    );
    snapshot("update", &render(&p));
}

#[test]
fn removed_services_are_destroyed() {
    let old = Desired::from_config(&config(BASE), &HealthView::new());
    let only_web = &BASE[..BASE.find("service \"dns\"").unwrap()];
    let d = Desired::from_config(&config(only_web), &HealthView::new());
    let p = plan(&d, &observed_from(&old, 3)).unwrap();
    assert_eq!(
        p.summary_line(),
        "Plan: 0 to add, 0 to change, 2 to destroy."
    );
    snapshot("delete", &render(&p));
}

#[test]
fn unmanaged_services_are_left_alone() {
    let cfg = config(BASE);
    let d = Desired::from_config(&cfg, &HealthView::new());
    let mut live = observed_from(&d, 9);
    // A service created by hand (no owner label) and one owned by another agent.
    let mut manual = live.services[0].clone();
    manual.spec.key.port = 8443;
    manual.spec.labels.clear();
    let mut other = live.services[0].clone();
    other.spec.key.port = 9000;
    other
        .spec
        .labels
        .insert("ulvs.io/owner".into(), "edge-2".into());
    live.services.push(manual);
    live.services.push(other);
    let p = plan(&d, &live).unwrap();
    assert!(!p.has_changes());
    snapshot("ownership_unmanaged", &render(&p));

    // Destroy plans only the owned ones.
    let empty = Desired::empty("ulvs.io/owner", "edge-1");
    let p = plan(&empty, &live).unwrap();
    assert_eq!(
        p.summary_line(),
        "Plan: 0 to add, 0 to change, 5 to destroy."
    );
    snapshot("ownership_destroy", &render(&p));
}

#[test]
fn a_desired_key_taken_by_an_unmanaged_service_is_a_conflict() {
    let d = Desired::from_config(&config(BASE), &HealthView::new());
    let mut live = observed_from(&d, 2);
    live.services[1].spec.labels.clear();
    let err = plan(&d, &live).unwrap_err();
    snapshot("ownership_conflict", &format!("{err}\n"));
}

#[test]
fn a_failed_server_is_drained_and_restored() {
    let cfg = config(BASE);
    let healthy = Desired::from_config(&cfg, &HealthView::new());
    let key = cfg.services[0].spec.key;
    let a: SocketAddr = "198.18.1.11:8080".parse().unwrap();
    let health: HealthView = [((key, a), false)].into_iter().collect();
    let drained = Desired::from_config(&cfg, &health);
    let p = plan(&drained, &observed_from(&healthy, 4)).unwrap();
    assert_eq!(
        p.summary_line(),
        "Plan: 0 to add, 1 to change, 0 to destroy."
    );
    snapshot("drain", &render(&p));
    let back = plan(&healthy, &observed_from(&drained, 5)).unwrap();
    assert_eq!(
        back.summary_line(),
        "Plan: 0 to add, 1 to change, 0 to destroy."
    );
    snapshot("restore", &render(&back));
}

#[test]
fn below_quorum_the_sorry_server_takes_over() {
    let cfg = config(BASE);
    let healthy = Desired::from_config(&cfg, &HealthView::new());
    let key = cfg.services[0].spec.key;
    let health: HealthView = ["198.18.1.11:8080", "198.18.1.12:8080"]
        .iter()
        .map(|a| ((key, a.parse().unwrap()), false))
        .collect();
    let d = Desired::from_config(&cfg, &health);
    let p = plan(&d, &observed_from(&healthy, 4)).unwrap();
    assert_eq!(
        p.summary_line(),
        "Plan: 1 to add, 2 to change, 0 to destroy."
    );
    snapshot("sorry", &render(&p));
}

#[test]
fn timeouts_are_planned_when_managed() {
    let text = format!("{BASE}\ntimeouts {{\n  tcp = 900\n  tcp_fin = 120\n  udp = 300\n}}\n");
    let d = Desired::from_config(&config(&text), &HealthView::new());
    let mut live = observed_from(&d, 1);
    live.timeouts = Some(Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 60,
    });
    let p = plan(&d, &live).unwrap();
    assert_eq!(
        p.summary_line(),
        "Plan: 0 to add, 1 to change, 0 to destroy."
    );
    snapshot("timeouts", &render(&p));
}

#[test]
fn plans_round_trip_through_json() {
    let d = Desired::from_config(&config(BASE), &HealthView::new());
    let p = plan(&d, &Observed::default()).unwrap();
    let json = serde_json::to_string(&p).unwrap();
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}
