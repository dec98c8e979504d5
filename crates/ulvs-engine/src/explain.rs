//! `Engine::explain`: which real server a new connection from a client would get, and why,
//! computed against the live configuration and tables without creating or changing any state.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use crate::config::{Protocol, SchedulerKind, ServiceKey};
use crate::conntrack::Tuple;
use crate::persist::{self, Choice};
use crate::sched::{Ctx, Flow};
use crate::wire::TcpFlags;
use crate::{Engine, Timestamp};

/// What a new connection from the client would meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExplainOutcome {
    /// A live connection with this very tuple exists; its packets keep going to its real server.
    ExistingConnection,
    /// A persistence template for the client names the real server.
    Persistence,
    /// The scheduler would pick the real server.
    Scheduled,
    /// No real server can take the connection (all quiescent or overloaded): it would be
    /// dropped ([`crate::DropReason::NoDestination`]).
    NoDestination,
}

/// The answer of [`Engine::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The service the packet matches (a port-0 service when no exact one exists).
    pub service: ServiceKey,
    /// Its scheduler.
    pub scheduler: SchedulerKind,
    /// What would happen.
    pub outcome: ExplainOutcome,
    /// The real server (address and the port packets would be sent to); `None` for
    /// [`ExplainOutcome::NoDestination`].
    pub real_server: Option<SocketAddr>,
    /// The reasoning, one step per line.
    pub reasons: Vec<String>,
}

/// Why a question could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// No virtual service matches the protocol, address and port.
    #[error("no virtual service {0}")]
    NoService(ServiceKey),
    /// The client's address family differs from the service's.
    #[error("client {client} is not of the address family of service {service}")]
    FamilyMismatch {
        /// The service asked about.
        service: ServiceKey,
        /// The client.
        client: SocketAddr,
    },
}

impl Engine {
    /// Which real server a new connection from `client` to `vaddr` over `protocol` would get at
    /// `now`, and why: an existing connection with that tuple, a persistence template, or the
    /// scheduler's pick (with its reasoning and the state of every real server it looked at).
    ///
    /// Pure: no connection, template or scheduler state is created or changed (rr/wrr cursors
    /// are not advanced, lblc/lblcr tables not written, no random number is drawn: twos reports
    /// the next draw).
    pub fn explain(
        &self,
        now: Timestamp,
        protocol: Protocol,
        vaddr: SocketAddr,
        client: SocketAddr,
    ) -> Result<Explanation, ExplainError> {
        let asked = ServiceKey {
            protocol,
            addr: vaddr,
        };
        if vaddr.is_ipv4() != client.is_ipv4() {
            return Err(ExplainError::FamilyMismatch {
                service: asked,
                client,
            });
        }
        let snap = self.config.load();
        let svc = snap
            .get(protocol, vaddr)
            .ok_or(ExplainError::NoService(asked))?;
        let mut reasons = Vec::new();
        let mut head = format!("service {} scheduler {}", svc.key, svc.kind);
        if let Some(p) = svc.persistence {
            head.push_str(&format!(
                " persistent {} s mask /{}",
                p.timeout_secs, p.prefix_len
            ));
        }
        if svc.one_packet {
            head.push_str(" one-packet");
        }
        if svc.key.addr != vaddr {
            head.push_str(&format!(" (the port-0 service of {})", vaddr.ip()));
        }
        reasons.push(head);

        let tuple = Tuple {
            proto: protocol,
            src: client.ip(),
            sport: client.port(),
            dst: vaddr.ip(),
            dport: vaddr.port(),
        };
        if let Some(c) = self.conns.peek(&tuple, now) {
            let rs = SocketAddr::new(c.reply.src, c.reply.sport);
            let state = c.state_name();
            let reuse =
                protocol == Protocol::Tcp && self.conns.reschedules(&c, TcpFlags(TcpFlags::SYN));
            if !reuse {
                reasons.push(format!(
                    "a live connection {client} -> {vaddr} exists (state {state}): its packets go to {rs}"
                ));
                return Ok(Explanation {
                    service: svc.key,
                    scheduler: svc.kind,
                    outcome: ExplainOutcome::ExistingConnection,
                    real_server: Some(rs),
                    reasons,
                });
            }
            reasons.push(format!(
                "a connection {client} -> {vaddr} to {rs} exists (state {state}), but a new SYN would replace it and be scheduled"
            ));
        }

        for d in &svc.dests {
            let st = &d.state;
            let (u, l) = (st.upper.load(Relaxed), st.lower.load(Relaxed));
            let mut line = format!(
                "real server {} weight {} active {} inactive {} persistent {}",
                d.addr,
                d.weight,
                st.active(),
                st.inactive(),
                st.persistent.load(Relaxed)
            );
            if u != 0 {
                line.push_str(&format!(" thresholds upper {u} lower {l}"));
            }
            line.push_str(match (d.weight, st.is_overloaded()) {
                (0, _) => ": quiescent (weight 0), takes no new connections",
                (_, true) => ": overloaded (upper threshold reached), takes no new connections",
                _ => ": available",
            });
            reasons.push(line);
        }

        let flow = Flow {
            src: client.ip(),
            src_port: client.port(),
            dst: vaddr.ip(),
        };
        let mut trace = Vec::new();
        let choice = {
            let mut ctx = Ctx::explain(now, &self.rng, &mut trace);
            persist::choose(
                &self.templates,
                self.conns.settings().expire_quiescent_template,
                svc,
                &flow,
                &mut ctx,
            )
        };
        reasons.append(&mut trace);
        let Some(choice) = choice else {
            reasons.push("no real server is available: the connection would be dropped".to_owned());
            return Ok(Explanation {
                service: svc.key,
                scheduler: svc.kind,
                outcome: ExplainOutcome::NoDestination,
                real_server: None,
                reasons,
            });
        };
        let d = &svc.dests[choice.index()];
        let port = match d.addr.port() {
            0 => vaddr.port(),
            p => p,
        };
        let outcome = match choice {
            Choice::Template(..) => ExplainOutcome::Persistence,
            Choice::Scheduled(..) => ExplainOutcome::Scheduled,
        };
        Ok(Explanation {
            service: svc.key,
            scheduler: svc.kind,
            outcome,
            real_server: Some(SocketAddr::new(d.addr.ip(), port)),
            reasons,
        })
    }
}
