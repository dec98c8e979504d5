//! `ulvsadm --explain -t|-u VIP:PORT --client ADDR:PORT`: which real server a new connection
//! from the client would get, and why, as text (default) or JSON (`--output json`).

use ulvs_proto::v1 as pb;

use crate::parse::{ExplainOptions, OutputFormat};

fn outcome_text(o: i32) -> &'static str {
    use pb::explain_response::Outcome;
    match Outcome::try_from(o) {
        Ok(Outcome::ExistingConnection) => "existing connection",
        Ok(Outcome::Persistence) => "persistence template",
        Ok(Outcome::Scheduled) => "scheduled",
        Ok(Outcome::NoDestination) => "no destination (dropped)",
        _ => "unknown",
    }
}

fn outcome_name(o: i32) -> &'static str {
    use pb::explain_response::Outcome;
    match Outcome::try_from(o) {
        Ok(Outcome::ExistingConnection) => "existing_connection",
        Ok(Outcome::Persistence) => "persistence",
        Ok(Outcome::Scheduled) => "scheduled",
        Ok(Outcome::NoDestination) => "no_destination",
        _ => "unspecified",
    }
}

fn addr_port(addr: &str, port: u32) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// The answer as printed.
///
/// ```text
/// TCP  198.18.100.1:80 client 198.18.0.2:40000 -> 198.18.1.11:8080 (scheduled, rr)
///   service TCP 198.18.100.1:80 scheduler rr
///   real server 198.18.1.11:8080 weight 1 active 0 inactive 0 persistent 0: available
///   rr: next after the list head is 198.18.1.11:8080
/// ```
pub fn render(opts: &ExplainOptions, r: &pb::ExplainResponse) -> String {
    let client = addr_port(&opts.client_addr.to_string(), opts.client_port.into());
    match opts.output {
        OutputFormat::Json => {
            let v = serde_json::json!({
                "service": opts.service.to_string(),
                "client": client,
                "outcome": outcome_name(r.outcome),
                "real_server": if r.real_server_address.is_empty() {
                    serde_json::Value::Null
                } else {
                    addr_port(&r.real_server_address, r.real_server_port).into()
                },
                "scheduler": r.scheduler,
                "reasons": r.reasons,
            });
            format!("{v:#}\n")
        }
        OutputFormat::Text => {
            let target = if r.real_server_address.is_empty() {
                "no real server".to_owned()
            } else {
                addr_port(&r.real_server_address, r.real_server_port)
            };
            let mut out = format!(
                "{} client {client} -> {target} ({}, {})\n",
                opts.service,
                outcome_text(r.outcome),
                r.scheduler
            );
            for reason in &r.reasons {
                out.push_str("  ");
                out.push_str(reason);
                out.push('\n');
            }
            out
        }
    }
}
