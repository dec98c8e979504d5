//! The `Explain` RPC: checks the question, asks the backend which real server a new connection
//! from the client would get, and converts the answer. Creates no state anywhere.

use std::net::SocketAddr;

use ulvs_engine::{
    Config, ExplainError, ExplainOutcome, Explanation, ForwardMethod, Protocol, TemplateEntry,
};
use ulvs_proto::v1 as pb;

use crate::validate;
use crate::{Backend, ControlError};

/// Answers an `ExplainRequest` with `backend`'s engine, at the engine's own idea of now (the
/// latest reaper tick), so templates and connections are judged as the packet path would.
pub(crate) fn explain<B: Backend>(
    backend: &B,
    req: &pb::ExplainRequest,
) -> Result<pb::ExplainResponse, ControlError> {
    let key = validate::service_key(req.service.as_ref(), "service")?;
    let ip = validate::ip_addr(&req.client_address, "client_address")?;
    let port = validate::port(req.client_port, "client_port")?;
    let client = SocketAddr::new(ip, port);
    let engine = backend
        .conntrack()
        .ok_or_else(|| ControlError::Unsupported {
            field: String::new(),
            message: "this daemon has no engine to ask".to_owned(),
        })?;
    let x = engine
        .explain(engine.clock(), key.protocol, key.addr, client)
        .map_err(|e| match e {
            ExplainError::NoService(k) => {
                ControlError::NotFound(format!("service {k} does not exist"))
            }
            e @ ExplainError::FamilyMismatch { .. } => {
                ControlError::invalid("client_address", e.to_string())
            }
        })?;
    Ok(to_pb(&x))
}

/// The engine's answer as the wire message.
pub(crate) fn to_pb(x: &Explanation) -> pb::ExplainResponse {
    let outcome = match x.outcome {
        ExplainOutcome::ExistingConnection => pb::explain_response::Outcome::ExistingConnection,
        ExplainOutcome::Persistence => pb::explain_response::Outcome::Persistence,
        ExplainOutcome::Scheduled => pb::explain_response::Outcome::Scheduled,
        ExplainOutcome::NoDestination => pb::explain_response::Outcome::NoDestination,
    };
    pb::ExplainResponse {
        outcome: outcome as i32,
        real_server_address: x
            .real_server
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        real_server_port: x.real_server.map_or(0, |a| u32::from(a.port())),
        scheduler: x.scheduler.name().to_owned(),
        reasons: x.reasons.clone(),
    }
}

/// A persistence template as a `Connection` with `template: true` (state `NONE`, client port 0,
/// the client address masked to the service's persistence prefix), as `ipvsadm -L -c` shows
/// templates.
pub(crate) fn template_to_pb(config: &Config, t: &TemplateEntry) -> pb::Connection {
    let forward = config
        .services
        .iter()
        .filter(|s| s.key.protocol == t.protocol && s.key.addr == t.virtual_addr)
        .flat_map(|s| &s.dests)
        .find(|d| d.addr == t.real_server)
        .map_or(ForwardMethod::Masq, |d| d.forward);
    pb::Connection {
        protocol: match t.protocol {
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
        } as i32,
        client_address: t.client.to_string(),
        client_port: 0,
        virtual_address: t.virtual_addr.ip().to_string(),
        virtual_port: u32::from(t.virtual_addr.port()),
        real_server_address: t.real_server.ip().to_string(),
        real_server_port: u32::from(t.real_server.port()),
        forward: match forward {
            ForwardMethod::Masq => pb::ForwardMethod::Masq,
            ForwardMethod::Route => pb::ForwardMethod::Route,
            ForwardMethod::Tunnel => pb::ForwardMethod::Tunnel,
            ForwardMethod::FullNat => pb::ForwardMethod::Fullnat,
        } as i32,
        state: "NONE".to_owned(),
        expires_in_ms: t.expires_in_ms,
        template: true,
        ..Default::default()
    }
}
