//! The planner: `plan(desired, observed) -> Plan`, a pure function of two values, and the
//! plan's Terraform-like rendering.
//!
//! A plan holds every decision: which objects are created, edited in place or destroyed, and the
//! global generation it was computed against. Applying it (see `client.rs`) only translates it
//! into one `Apply` batch with that generation as `expected_generation`, so a plan computed
//! against a configuration that has changed since is refused by the daemon.
//!
//! Rules: an object's identity is its key (protocol, address, port for a service; address and
//! port for a real server); any other difference is an edit in place, never a delete and add, so
//! live connections survive a weight or scheduler change. Only services carrying the owner
//! label with the agent's name are managed; others are counted and left alone, and a desired
//! service whose key is taken by an unmanaged one is a conflict.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::desired::Desired;
use crate::model::{Observed, RealServerSpec, ServiceKey, ServiceSpec, Timeouts};

/// The plan format version written to plan files.
pub const PLAN_FORMAT: u32 = 2;

/// What happens to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Created.
    Create,
    /// Edited in place.
    Update,
    /// Destroyed.
    Delete,
    /// Left as is (a service whose real servers change).
    Keep,
}

/// The change of one real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServerPlan {
    /// What happens.
    pub op: Op,
    /// Live settings (none for a create).
    pub before: Option<RealServerSpec>,
    /// Desired settings (none for a delete).
    pub after: Option<RealServerSpec>,
    /// Why the desired settings differ from the file, if they do.
    pub note: Option<String>,
}

impl RealServerPlan {
    /// The real server's `address:port`.
    pub fn addr(&self) -> SocketAddr {
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .map(RealServerSpec::addr)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// The change of one service and its real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlan {
    /// Its name in the configuration (none for a live service being destroyed).
    pub name: Option<String>,
    /// Its key.
    pub key: ServiceKey,
    /// What happens to the service's own settings.
    pub op: Op,
    /// Live settings (none for a create).
    pub before: Option<ServiceSpec>,
    /// Desired settings (none for a delete).
    pub after: Option<ServiceSpec>,
    /// Real-server changes (for a delete: every real server it has, as deletes).
    pub real_servers: Vec<RealServerPlan>,
}

/// A timeouts change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutsPlan {
    /// Live.
    pub before: Option<Timeouts>,
    /// Desired.
    pub after: Timeouts,
}

/// A complete plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_FORMAT`].
    pub format: u32,
    /// The owner label's key.
    pub owner_label: String,
    /// The agent's name.
    pub owner: String,
    /// The global generation the plan was computed against (sent as `expected_generation`).
    pub observed_generation: u64,
    /// The daemon run that generation belongs to (`GetInfo.instance_id`); a plan is refused by
    /// another run, whose generations count from 0 again.
    #[serde(default)]
    pub observed_instance: String,
    /// Services with changes, in configuration order, then destroyed ones by key.
    pub services: Vec<ServicePlan>,
    /// A timeouts change, if any.
    pub timeouts: Option<TimeoutsPlan>,
    /// Live services not managed by this agent, left unchanged.
    pub unmanaged: Vec<ServiceKey>,
}

/// How many objects a plan adds, changes and destroys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Services and real servers created.
    pub add: usize,
    /// Services, real servers and timeouts edited.
    pub change: usize,
    /// Services and real servers destroyed.
    pub destroy: usize,
}

/// A plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A desired service's key is taken by a live service this agent does not own.
    #[error(
        "service \"{name}\" ({key}) exists but is not managed by this agent ({owner_label}={found}); \
         remove it or give it the label {owner_label}={owner} to let this agent manage it"
    )]
    NotOwned {
        /// The desired service's name.
        name: String,
        /// Its key.
        key: ServiceKey,
        /// The owner label key.
        owner_label: String,
        /// The agent's name.
        owner: String,
        /// The live service's owner label value, or `<none>`.
        found: String,
    },
}

/// Plans the changes that take `observed` to `desired`. Pure.
pub fn plan(desired: &Desired, observed: &Observed) -> Result<Plan, PlanError> {
    let owned = |spec: &ServiceSpec| spec.labels.get(&desired.owner_label) == Some(&desired.owner);
    let mut live: BTreeMap<ServiceKey, &crate::model::ObservedService> = BTreeMap::new();
    let mut unmanaged = Vec::new();
    for s in &observed.services {
        if owned(&s.spec) {
            live.insert(s.spec.key, s);
        } else {
            unmanaged.push(s.spec.key);
        }
    }
    unmanaged.sort();

    let mut services = Vec::new();
    let mut wanted = BTreeSet::new();
    for d in &desired.services {
        let key = d.spec.key;
        wanted.insert(key);
        if unmanaged.contains(&key) {
            let found = observed
                .services
                .iter()
                .find(|s| s.spec.key == key)
                .and_then(|s| s.spec.labels.get(&desired.owner_label).cloned())
                .unwrap_or_else(|| "<none>".to_owned());
            return Err(PlanError::NotOwned {
                name: d.name.clone(),
                key,
                owner_label: desired.owner_label.clone(),
                owner: desired.owner.clone(),
                found,
            });
        }
        match live.get(&key) {
            None => services.push(ServicePlan {
                name: Some(d.name.clone()),
                key,
                op: Op::Create,
                before: None,
                after: Some(d.spec.clone()),
                real_servers: d
                    .real_servers
                    .iter()
                    .map(|r| RealServerPlan {
                        op: Op::Create,
                        before: None,
                        after: Some(r.spec.clone()),
                        note: r.note.clone(),
                    })
                    .collect(),
            }),
            Some(obs) => {
                let op = if obs.spec == d.spec {
                    Op::Keep
                } else {
                    Op::Update
                };
                let mut rs_plans = Vec::new();
                let by_addr: BTreeMap<SocketAddr, &RealServerSpec> =
                    obs.real_servers.iter().map(|r| (r.addr(), r)).collect();
                let mut kept = BTreeSet::new();
                for r in &d.real_servers {
                    let addr = r.spec.addr();
                    kept.insert(addr);
                    match by_addr.get(&addr) {
                        None => rs_plans.push(RealServerPlan {
                            op: Op::Create,
                            before: None,
                            after: Some(r.spec.clone()),
                            note: r.note.clone(),
                        }),
                        Some(cur) if **cur != r.spec => rs_plans.push(RealServerPlan {
                            op: Op::Update,
                            before: Some((*cur).clone()),
                            after: Some(r.spec.clone()),
                            note: r.note.clone(),
                        }),
                        Some(_) => {}
                    }
                }
                for (addr, cur) in &by_addr {
                    if !kept.contains(addr) {
                        rs_plans.push(RealServerPlan {
                            op: Op::Delete,
                            before: Some((*cur).clone()),
                            after: None,
                            note: None,
                        });
                    }
                }
                if op == Op::Update || !rs_plans.is_empty() {
                    services.push(ServicePlan {
                        name: Some(d.name.clone()),
                        key,
                        op,
                        before: Some(obs.spec.clone()),
                        after: Some(d.spec.clone()),
                        real_servers: rs_plans,
                    });
                }
            }
        }
    }
    for (key, obs) in &live {
        if !wanted.contains(key) {
            let mut rs: Vec<&RealServerSpec> = obs.real_servers.iter().collect();
            rs.sort_by_key(|r| r.addr());
            services.push(ServicePlan {
                name: None,
                key: *key,
                op: Op::Delete,
                before: Some(obs.spec.clone()),
                after: None,
                real_servers: rs
                    .into_iter()
                    .map(|r| RealServerPlan {
                        op: Op::Delete,
                        before: Some(r.clone()),
                        after: None,
                        note: None,
                    })
                    .collect(),
            });
        }
    }
    let timeouts = desired.timeouts.and_then(|want| {
        (observed.timeouts != Some(want)).then_some(TimeoutsPlan {
            before: observed.timeouts,
            after: want,
        })
    });
    Ok(Plan {
        format: PLAN_FORMAT,
        owner_label: desired.owner_label.clone(),
        owner: desired.owner.clone(),
        observed_generation: observed.generation,
        observed_instance: observed.instance_id.clone(),
        services,
        timeouts,
        unmanaged,
    })
}

impl Plan {
    /// Counts of objects added, changed and destroyed.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for svc in &self.services {
            match svc.op {
                Op::Create => s.add += 1,
                Op::Update => s.change += 1,
                Op::Delete => s.destroy += 1,
                Op::Keep => {}
            }
            for r in &svc.real_servers {
                match r.op {
                    Op::Create => s.add += 1,
                    Op::Update => s.change += 1,
                    Op::Delete => s.destroy += 1,
                    Op::Keep => {}
                }
            }
        }
        if self.timeouts.is_some() {
            s.change += 1;
        }
        s
    }

    /// Whether applying the plan would change anything.
    pub fn has_changes(&self) -> bool {
        self.summary() != Summary::default()
    }

    /// The summary line, as Terraform prints it.
    pub fn summary_line(&self) -> String {
        let s = self.summary();
        if s == Summary::default() {
            "No changes. The live state matches the configuration.".to_owned()
        } else {
            format!(
                "Plan: {} to add, {} to change, {} to destroy.",
                s.add, s.change, s.destroy
            )
        }
    }

    /// The whole plan as text: one block per changed object, the unmanaged note and the
    /// summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.has_changes() {
            out.push_str(
                "ulvs-agent will perform the following actions \
                 (+ create, ~ update in place, - destroy):\n",
            );
        }
        for svc in &self.services {
            out.push('\n');
            render_service(&mut out, svc);
        }
        if let Some(t) = &self.timeouts {
            out.push('\n');
            render_timeouts(&mut out, t);
        }
        if self.has_changes() {
            out.push('\n');
        }
        if !self.unmanaged.is_empty() {
            let n = self.unmanaged.len();
            let _ = writeln!(
                out,
                "{n} {} not managed by this agent, left unchanged.",
                if n == 1 { "service" } else { "services" }
            );
        }
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }
}

fn sign(op: Op) -> char {
    match op {
        Op::Create => '+',
        Op::Update | Op::Keep => '~',
        Op::Delete => '-',
    }
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

/// The attributes a service shows, as (name, value) in a fixed order; defaults are left out.
fn service_attrs(s: &ServiceSpec) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("protocol", q(s.key.protocol.name())),
        ("address", q(&s.key.address.to_string())),
        ("port", s.key.port.to_string()),
        ("scheduler", q(&s.scheduler)),
    ];
    if !s.scheduler_flags.is_empty() {
        let flags: Vec<String> = s.scheduler_flags.iter().map(|f| q(f)).collect();
        v.push(("scheduler_flags", format!("[{}]", flags.join(", "))));
    }
    if s.persistence_timeout != 0 {
        v.push(("persistence_timeout", s.persistence_timeout.to_string()));
        v.push((
            "persistence_prefix_len",
            s.persistence_prefix_len.to_string(),
        ));
    }
    if s.one_packet {
        v.push(("one_packet", "true".to_owned()));
    }
    if !s.local_addresses.is_empty() {
        let a: Vec<String> = s
            .local_addresses
            .iter()
            .map(|a| q(&a.to_string()))
            .collect();
        v.push(("local_addresses", format!("[{}]", a.join(", "))));
    }
    if s.max_new_connections_per_second != 0 {
        v.push((
            "max_new_connections_per_second",
            s.max_new_connections_per_second.to_string(),
        ));
    }
    if !s.labels.is_empty() {
        let l: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{} = {}", q(k), q(v)))
            .collect();
        v.push(("labels", format!("{{ {} }}", l.join(", "))));
    }
    v
}

fn rs_attrs(r: &RealServerSpec) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("forward", q(r.forward.name())),
        ("weight", r.weight.to_string()),
    ];
    if r.upper_threshold != 0 {
        v.push(("upper_threshold", r.upper_threshold.to_string()));
    }
    if r.lower_threshold != 0 {
        v.push(("lower_threshold", r.lower_threshold.to_string()));
    }
    if r.forward == crate::model::Forward::Tunnel {
        v.push(("tunnel_type", q(r.tunnel_type.name())));
        if r.tunnel_port != 0 {
            v.push(("tunnel_port", r.tunnel_port.to_string()));
        }
        v.push(("tunnel_checksum", q(r.tunnel_checksum.name())));
    }
    v
}

/// Lines for an attribute list: all with `sign` for a create/delete; only the differences
/// (with `old -> new`) for an update.
fn attr_lines(
    out: &mut String,
    indent: &str,
    op: Op,
    before: Option<Vec<(&'static str, String)>>,
    after: Option<Vec<(&'static str, String)>>,
) {
    let rows: Vec<(char, &'static str, String)> = match (op, before, after) {
        (Op::Create, _, Some(a)) => a.into_iter().map(|(k, v)| ('+', k, v)).collect(),
        (Op::Delete, Some(b), _) => b.into_iter().map(|(k, v)| ('-', k, v)).collect(),
        (_, Some(b), Some(a)) => {
            let mut rows = Vec::new();
            let mut names: Vec<&'static str> = a.iter().map(|(k, _)| *k).collect();
            for (k, _) in &b {
                if !names.contains(k) {
                    names.push(k);
                }
            }
            for k in names {
                let old = b.iter().find(|(n, _)| *n == k).map(|(_, v)| v);
                let new = a.iter().find(|(n, _)| *n == k).map(|(_, v)| v);
                match (old, new) {
                    (Some(o), Some(n)) if o != n => rows.push(('~', k, format!("{o} -> {n}"))),
                    (None, Some(n)) => rows.push(('+', k, n.clone())),
                    (Some(o), None) => rows.push(('-', k, format!("{o} -> null"))),
                    _ => {}
                }
            }
            rows
        }
        _ => Vec::new(),
    };
    let width = rows.iter().map(|(_, k, _)| k.len()).max().unwrap_or(0);
    for (s, k, v) in rows {
        let _ = writeln!(out, "{indent}{s} {k:<width$} = {v}");
    }
}

fn render_service(out: &mut String, svc: &ServicePlan) {
    let title = match &svc.name {
        Some(n) => format!("service.{n}"),
        None => "service".to_owned(),
    };
    let what = match svc.op {
        Op::Create => "will be created",
        Op::Update => "will be updated in place",
        Op::Keep => "has real servers to change",
        Op::Delete => "will be destroyed",
    };
    let _ = writeln!(out, "  # {title} ({}) {what}", svc.key);
    let label = svc.name.clone().unwrap_or_else(|| format!("{}", svc.key));
    let _ = writeln!(out, "  {} service {} {{", sign(svc.op), q(&label));
    attr_lines(
        out,
        "      ",
        svc.op,
        svc.before.as_ref().map(service_attrs),
        svc.after.as_ref().map(service_attrs),
    );
    for r in &svc.real_servers {
        let _ = writeln!(
            out,
            "      {} real_server {} {{",
            sign(r.op),
            q(&r.addr().to_string())
        );
        attr_lines(
            out,
            "          ",
            r.op,
            r.before.as_ref().map(rs_attrs),
            r.after.as_ref().map(rs_attrs),
        );
        if let Some(note) = &r.note {
            let _ = writeln!(out, "            # {note}");
        }
        out.push_str("        }\n");
    }
    out.push_str("    }\n");
}

fn render_timeouts(out: &mut String, t: &TimeoutsPlan) {
    let rows = |t: &Timeouts| {
        vec![
            ("tcp", t.tcp.to_string()),
            ("tcp_fin", t.tcp_fin.to_string()),
            ("udp", t.udp.to_string()),
        ]
    };
    out.push_str("  # timeouts will be updated in place\n  ~ timeouts {\n");
    match &t.before {
        Some(b) => attr_lines(
            out,
            "      ",
            Op::Update,
            Some(rows(b)),
            Some(rows(&t.after)),
        ),
        None => attr_lines(out, "      ", Op::Create, None, Some(rows(&t.after))),
    }
    out.push_str("    }\n");
}

impl Plan {
    /// One line per action, for logs: `~ service.web real_server 198.18.1.11:8080: weight 1 -> 0
    /// (drained: health check failing)`.
    pub fn actions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for svc in &self.services {
            let title = match &svc.name {
                Some(n) => format!("service.{n} ({})", svc.key),
                None => format!("service ({})", svc.key),
            };
            if svc.op != Op::Keep {
                let detail = changes_text(
                    svc.before.as_ref().map(service_attrs),
                    svc.after.as_ref().map(service_attrs),
                    svc.op,
                );
                out.push(format!("{} {title}{detail}", sign(svc.op)));
            }
            if svc.op == Op::Delete {
                continue;
            }
            for r in &svc.real_servers {
                let detail = changes_text(
                    r.before.as_ref().map(rs_attrs),
                    r.after.as_ref().map(rs_attrs),
                    r.op,
                );
                let note = r.note.as_ref().map_or(String::new(), |n| format!(" ({n})"));
                out.push(format!(
                    "{} {title} real_server {}{detail}{note}",
                    sign(r.op),
                    r.addr()
                ));
            }
        }
        if let Some(t) = &self.timeouts {
            out.push(format!(
                "~ timeouts: tcp {} tcp_fin {} udp {}",
                t.after.tcp, t.after.tcp_fin, t.after.udp
            ));
        }
        out
    }
}

fn changes_text(
    before: Option<Vec<(&'static str, String)>>,
    after: Option<Vec<(&'static str, String)>>,
    op: Op,
) -> String {
    let (Some(b), Some(a), Op::Update) = (before, after, op) else {
        return String::new();
    };
    let parts: Vec<String> = a
        .iter()
        .filter_map(|(k, v)| {
            let old = b.iter().find(|(n, _)| n == k).map(|(_, o)| o);
            match old {
                Some(o) if o == v => None,
                Some(o) => Some(format!("{k} {o} -> {v}")),
                None => Some(format!("{k} -> {v}")),
            }
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
}
