//! `-S` (save) and `-R` (restore): the table as ipvsadm rules, and rules back into one batch.
//!
//! Save prints ipvsadm 1.31's rule format (`-A -t addr:port -s sched[ -p t[ -M mask]][ -o][ -b
//! flags]` and `-a -t addr:port -r addr:port -m -w weight`) in its sort order, with one ulvs
//! addition: real-server thresholds (` -x N -y N`), which ipvsadm does not save. Restore reads
//! the same lines (a leading `ipvsadm` or `ulvsadm` word is optional, `#` starts a comment),
//! parses each with the normal grammar and turns the whole input into one `Apply` batch, so the
//! daemon applies all of it or none (ipvsadm applies line by line and stops half way).
//! FULLNAT local addresses are saved as DPVS's `-P <service> -z <addr>` after their service's
//! `-A` line; restore adds each to the `-A`/`-E` of that service earlier in the same input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ulvs_proto::v1 as pb;

use crate::client::{key_to_pb, real_server_to_pb, spec_to_pb};
use crate::format::{self, Addr};
use crate::model::Protocol;
use crate::names::Resolver;
use crate::parse::{self, Command, ParseError, SaveOptions};

/// `-S`: every service and real server as ipvsadm rules, one per line.
pub fn save_text(services: &[pb::Service], opts: SaveOptions, names: &dyn Resolver) -> String {
    let mut out = String::new();
    for svc in format::ordered_services(services, opts.sort) {
        let default_spec = pb::ServiceSpec::default();
        let spec = svc.spec.as_ref().unwrap_or(&default_spec);
        let Some(service) = service_option(spec, opts.numeric, names) else {
            continue;
        };
        out.push_str(&service_rule(spec, &service));
        out.push('\n');
        for laddr in &spec.local_addresses {
            out.push_str(&format!("-P {service} -z {laddr}\n"));
        }
        let proto = spec.key.as_ref().and_then(|k| format::protocol(k.protocol));
        for rs in format::ordered_real_servers(&svc.real_servers, opts.sort) {
            out.push_str(&real_server_rule(rs, &service, proto, opts.numeric, names));
            out.push('\n');
        }
    }
    out
}

/// `-t addr:port` / `-u addr:port`, or `None` for a key this CLI cannot express.
fn service_option(spec: &pb::ServiceSpec, numeric: bool, names: &dyn Resolver) -> Option<String> {
    let key = spec.key.as_ref()?;
    let proto = format::protocol(key.protocol)?;
    let flag = match proto {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    };
    let a = format::addr(&key.address);
    Some(format!(
        "{flag} {}",
        format::addr_port_name(&a, key.port, Some(proto), numeric, names)
    ))
}

/// `-A <service> -s <sched>[ -p <t>[ -M <mask>]][ -o][ -b <flags>]`.
fn service_rule(spec: &pb::ServiceSpec, service: &str) -> String {
    let mut line = format!("-A {service} -s {}", spec.scheduler);
    if spec.persistence_timeout != 0 {
        line.push_str(&format!(" -p {}", spec.persistence_timeout));
        let len = spec.persistence_prefix_len;
        let a = spec
            .key
            .as_ref()
            .map(|k| format::addr(&k.address))
            .unwrap_or(Addr::Raw(String::new()));
        match a {
            Addr::Ip(IpAddr::V4(_)) if len != 0 && len < 32 => {
                line.push_str(&format!(" -M {}", Ipv4Addr::from(u32::MAX << (32 - len))));
            }
            Addr::Ip(IpAddr::V6(_)) if len != 0 && len != 128 => {
                line.push_str(&format!(" -M {len}"));
            }
            _ => {}
        }
    }
    if spec.one_packet {
        line.push_str(" -o");
    }
    let flags = format::sched_flags_text(&spec.scheduler, &spec.scheduler_flags);
    if !flags.is_empty() {
        line.push_str(&format!(" -b {flags}"));
    }
    line
}

/// `-a <service> -r <addr:port> <-g|-i|-m|--fullnat> -w <weight>[ -x <u>][ -y <l>]`.
fn real_server_rule(
    rs: &pb::RealServer,
    service: &str,
    proto: Option<Protocol>,
    numeric: bool,
    names: &dyn Resolver,
) -> String {
    let default_spec = pb::RealServerSpec::default();
    let spec = rs.spec.as_ref().unwrap_or(&default_spec);
    let a = format::addr(&spec.address);
    let forward = match pb::ForwardMethod::try_from(spec.forward) {
        Ok(pb::ForwardMethod::Masq) => "-m",
        Ok(pb::ForwardMethod::Tunnel) => "-i",
        Ok(pb::ForwardMethod::Fullnat) => "--fullnat",
        _ => "-g",
    };
    let mut line = format!(
        "-a {service} -r {} {forward} -w {}",
        format::addr_port_name(&a, spec.port, proto, numeric, names),
        spec.weight
    );
    line.push_str(&format::tunnel_rule_options(spec));
    if spec.upper_threshold != 0 {
        line.push_str(&format!(" -x {}", spec.upper_threshold));
    }
    if spec.lower_threshold != 0 {
        line.push_str(&format!(" -y {}", spec.lower_threshold));
    }
    line
}

/// A line of `-R` input that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub error: ParseError,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

impl std::error::Error for RestoreError {}

/// `-R`: the rules in `input` as one batch of changes, in order. Blank lines and comments are
/// skipped; a line that does not parse, or is not a table change (`-A -E -D -a -e -d -C`), is
/// an error naming its line.
pub fn restore_changes(input: &str, names: &dyn Resolver) -> Result<Vec<pb::Change>, RestoreError> {
    use pb::change::Change as C;
    let mut changes = Vec::new();
    for (i, raw) in input.lines().enumerate() {
        let at = |error| RestoreError { line: i + 1, error };
        let text = raw.split_once('#').map_or(raw, |(before, _)| before);
        let mut words: Vec<&str> = text.split_whitespace().collect();
        if matches!(words.first(), Some(&"ipvsadm" | &"ulvsadm")) {
            words.remove(0);
        }
        if words.is_empty() {
            continue;
        }
        let inv = parse::parse_args(&words, names).map_err(at)?;
        let change = match inv.command {
            Command::AddService(spec) => C::AddService(pb::AddServiceRequest {
                service: Some(spec_to_pb(&spec)),
            }),
            // An edit without labels keeps the service's labels (the daemon's rule).
            Command::EditService(spec) => C::EditService(pb::EditServiceRequest {
                service: Some(spec_to_pb(&spec)),
                expected_generation: 0,
            }),
            Command::DeleteService(key) => C::DeleteService(pb::DeleteServiceRequest {
                key: Some(key_to_pb(&key)),
                expected_generation: 0,
            }),
            Command::AddServer(key, rs) => C::AddRealServer(pb::AddRealServerRequest {
                service: Some(key_to_pb(&key)),
                real_server: Some(real_server_to_pb(&rs)),
                expected_generation: 0,
            }),
            Command::EditServer(key, rs) => C::EditRealServer(pb::EditRealServerRequest {
                service: Some(key_to_pb(&key)),
                real_server: Some(real_server_to_pb(&rs)),
                expected_generation: 0,
            }),
            Command::DeleteServer {
                service,
                addr,
                port,
            } => C::DeleteRealServer(pb::DeleteRealServerRequest {
                service: Some(key_to_pb(&service)),
                address: addr.to_string(),
                port: port.into(),
                expected_generation: 0,
            }),
            Command::Clear => C::Clear(pb::ClearRequest {}),
            Command::AddLocalAddress(key, addr) => {
                let want = key_to_pb(&key);
                let spec =
                    changes
                        .iter_mut()
                        .rev()
                        .find_map(|c: &mut pb::Change| match &mut c.change {
                            Some(C::AddService(pb::AddServiceRequest { service: Some(s) }))
                            | Some(C::EditService(pb::EditServiceRequest {
                                service: Some(s),
                                ..
                            })) if s.key.as_ref() == Some(&want) => Some(s),
                            _ => None,
                        });
                let Some(spec) = spec else {
                    return Err(at(ParseError::Invalid(format!(
                        "-P needs the -A or -E of {key} earlier in the input"
                    ))));
                };
                let text = addr.to_string();
                if !spec.local_addresses.contains(&text) {
                    spec.local_addresses.push(text);
                }
                continue;
            }
            other => {
                return Err(at(ParseError::Invalid(format!(
                    "only table changes (-A -E -D -a -e -d -C) can be restored, not {}",
                    command_word(&other)
                ))));
            }
        };
        changes.push(pb::Change {
            change: Some(change),
        });
    }
    Ok(changes)
}

fn command_word(cmd: &Command) -> &'static str {
    match cmd {
        Command::List(_) => "-L",
        Command::Save(_) => "-S",
        Command::Restore => "-R",
        Command::Help => "-h",
        Command::Version => "-v",
        _ => "this command",
    }
}
