//! ipvsadm's command line grammar: argument words in, a [`Command`] out.
//!
//! This follows ipvsadm 1.31 (popt based), checked against its source:
//! - The first option must be a command (`-A`, `-E`, `-D`, `-a`, `-e`, `-d`, `-C`, `-L`/`-l`);
//!   short options cluster (`-Ln`, `-At 198.18.0.1:80`), long options take `--opt value` or
//!   `--opt=value`, a required argument takes the next word even if it starts with `-`, and
//!   `-p`'s optional timeout takes the next word only if it does not start with `-`.
//! - Giving an option twice is an error, as is an option that the command does not allow; both
//!   use ipvsadm's table of legal command/option combinations and its messages.
//! - Defaults are ipvsadm's: scheduler `wlc`, weight 1, direct routing, persistence 300 s (the man page's value); a real
//!   server without a port gets the service port, and `-g` / `-i` servers always get the service
//!   port.
//!
//! Deliberate differences, all for input ipvsadm would misread: a `-r` or `-M` given before the
//! service option is interpreted with the service's protocol and family (ipvsadm uses whatever
//! it has parsed so far); `[1.2.3.4]:80` is an error rather than a silently dropped port; a
//! non-contiguous `-M` mask is an error because the API carries a prefix length.
//!
//! ulvs additions: `--socket PATH` (anywhere), `-o`/`--output text|json` with `-L` (with other
//! commands `-o` keeps its ipvsadm meaning `--ops`), and `--fullnat` as a forwarding method.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::cli;
use crate::client::Remote;

use crate::model::{
    DEFAULT_PERSISTENCE_TIMEOUT, DEFAULT_SCHEDULER, Forward, MAX_TIMEOUT, Protocol, RealServerSpec,
    ServiceKey, ServiceSpec, TunnelCsum, TunnelKind, TunnelSpec,
};
use crate::names::Resolver;

pub use crate::counters::ListView;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-A`: add a virtual service.
    AddService(ServiceSpec),
    /// `-E`: replace a virtual service's settings (unspecified settings get their defaults).
    EditService(ServiceSpec),
    /// `-D`: delete a virtual service.
    DeleteService(ServiceKey),
    /// `-a`: add a real server.
    AddServer(ServiceKey, RealServerSpec),
    /// `-e`: replace a real server's settings (unspecified settings get their defaults).
    EditServer(ServiceKey, RealServerSpec),
    /// `-d`: delete a real server.
    DeleteServer {
        /// The virtual service.
        service: ServiceKey,
        /// Real server address.
        addr: IpAddr,
        /// Real server port.
        port: u16,
    },
    /// `-C`: delete every virtual service.
    Clear,
    /// `-L` / `-l`, or no arguments at all.
    List(ListOptions),
    /// `-S`: print the table as ipvsadm rules (plus thresholds, which ipvsadm drops).
    Save(SaveOptions),
    /// `-R`: read rules from standard input and apply them all at once, or none.
    Restore,
    /// `-Z`: zero the counters of one service, or of all.
    Zero(Option<ServiceKey>),
    /// `--set tcp tcpfin udp`: connection timeouts in seconds; 0 keeps a value.
    SetTimeouts {
        /// TCP ESTABLISHED.
        tcp: u32,
        /// TCP FIN_WAIT.
        tcp_fin: u32,
        /// UDP.
        udp: u32,
    },
    /// `--explain`: which real server a new connection from a client would get, and why.
    Explain(ExplainOptions),
    /// `-P -t|-u service -z addr`: add a FULLNAT local address to a service (DPVS).
    AddLocalAddress(ServiceKey, IpAddr),
    /// `-Q -t|-u service -z addr`: remove a FULLNAT local address from a service (DPVS).
    DeleteLocalAddress(ServiceKey, IpAddr),
    /// `-G -t|-u service`: list a service's FULLNAT local addresses (DPVS).
    GetLocalAddresses(ServiceKey),
    /// `-h` / `--help`.
    Help,
    /// `-v` / `--version`.
    Version,
    /// `--man`: print the man page.
    Man,
    /// `--completions SHELL`: print a completion script.
    Completions(clap_complete::Shell),
}

/// How to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// `-n`: print numbers, not names.
    pub numeric: bool,
    /// `-t`/`-u`: list only this service (no version header, as ipvsadm).
    pub service: Option<ServiceKey>,
    /// `-o`/`--output`.
    pub output: OutputFormat,
    /// False with `--nosort`.
    pub sort: bool,
    /// `--stats`, `--rate`, `-c`, `--timeout`, or the plain table.
    pub view: ListView,
    /// `--exact`: whole numbers in `--stats` and `--rate`.
    pub exact: bool,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            numeric: false,
            service: None,
            output: OutputFormat::Text,
            sort: true,
            view: ListView::Table,
            exact: false,
        }
    }
}

/// What `--explain` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainOptions {
    /// The virtual service (`-t`/`-u`).
    pub service: ServiceKey,
    /// `--client` address.
    pub client_addr: IpAddr,
    /// `--client` port.
    pub client_port: u16,
    /// `--output`.
    pub output: OutputFormat,
}

/// How to save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// `-n`: print numbers, not names.
    pub numeric: bool,
    /// False with `--nosort`.
    pub sort: bool,
}

/// Output format of `-L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// ipvsadm's text layout.
    #[default]
    Text,
    /// The ListServices data as JSON.
    Json,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The command.
    pub command: Command,
    /// `--socket PATH`, if given.
    pub socket: Option<PathBuf>,
    /// `--server URL` and its TLS options, if given.
    pub remote: Option<Remote>,
}

/// A command line that ipvsadm would reject. Every variant exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The first option is not a command; followed by ipvsadm's "Try ... -h" hint.
    NoCommand(String),
    /// An unknown option, a missing or unwanted argument (popt's errors).
    Syntax(String),
    /// A value or combination ipvsadm refuses, with ipvsadm's message.
    Invalid(String),
    /// An ipvsadm command or option that ulvsadm does not implement yet.
    Unsupported(String),
}

impl ParseError {
    /// Whether to print ipvsadm's "Try `ulvsadm -h'..." line after the message.
    pub fn wants_try_help(&self) -> bool {
        matches!(self, ParseError::NoCommand(_) | ParseError::Syntax(_))
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NoCommand(m)
            | ParseError::Syntax(m)
            | ParseError::Invalid(m)
            | ParseError::Unsupported(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ParseError {}

fn invalid(msg: impl Into<String>) -> ParseError {
    ParseError::Invalid(msg.into())
}

/// The hint ipvsadm prints after a syntax error.
pub const TRY_HELP: &str = "Try `ulvsadm -h' or 'ulvsadm --help' for more information.";

// ---------------------------------------------------------------------------------------------
// Option table

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgKind {
    None,
    Required,
    Optional,
}

/// What an option word means to the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Cmd(Cmd),
    UnsupportedCmd(&'static str),
    Help,
    Version,
    Opt(Opt),
    /// `-o` before knowing the command: `--output` for `-L`, `--ops` otherwise.
    ShortO,
    UnsupportedOpt,
    Sort,
    Socket,
    Tcp,
    Udp,
    Masq,
    Gatewaying,
    Ipip,
    FullNat,
    /// `--tun-nocsum`, `--tun-csum`, `--tun-remcsum`.
    TunCsum(TunnelCsum),
    /// `--server` and its TLS options.
    Remote(RemoteOpt),
    /// `--completions SHELL`.
    Completions,
    /// `--man`.
    Man,
}

/// The options of a TCP connection to ulvsd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemoteOpt {
    Server,
    TlsCa,
    TlsCert,
    TlsKey,
    TokenFile,
}

/// One option of the tokenizer's table, derived from [`cli::command`].
#[derive(Debug)]
struct Spec {
    long: String,
    shorts: Vec<char>,
    arg: ArgKind,
    key: Key,
}

use ArgKind::Required as ReqArg;

/// What each option of [`cli::command`] means to the parser, by clap id (the long name).
static KEYS: &[(&str, Key)] = &[
    ("add-service", Key::Cmd(Cmd::Add)),
    ("edit-service", Key::Cmd(Cmd::Edit)),
    ("delete-service", Key::Cmd(Cmd::Del)),
    ("clear", Key::Cmd(Cmd::Flush)),
    ("list", Key::Cmd(Cmd::List)),
    ("zero", Key::Cmd(Cmd::Zero)),
    ("add-server", Key::Cmd(Cmd::AddDest)),
    ("edit-server", Key::Cmd(Cmd::EditDest)),
    ("delete-server", Key::Cmd(Cmd::DelDest)),
    ("set", Key::Cmd(Cmd::SetTimeout)),
    ("help", Key::Help),
    ("version", Key::Version),
    ("restore", Key::Cmd(Cmd::Restore)),
    ("save", Key::Cmd(Cmd::Save)),
    ("start-daemon", Key::UnsupportedCmd("start-daemon")),
    ("stop-daemon", Key::UnsupportedCmd("stop-daemon")),
    ("tcp-service", Key::Tcp),
    ("udp-service", Key::Udp),
    ("sctp-service", Key::UnsupportedOpt),
    ("fwmark-service", Key::UnsupportedOpt),
    ("scheduler", Key::Opt(Opt::Scheduler)),
    ("persistent", Key::Opt(Opt::Persistent)),
    ("netmask", Key::Opt(Opt::Netmask)),
    ("real-server", Key::Opt(Opt::Server)),
    ("masquerading", Key::Masq),
    ("ipip", Key::Ipip),
    ("gatewaying", Key::Gatewaying),
    ("fullnat", Key::FullNat),
    ("weight", Key::Opt(Opt::Weight)),
    ("u-threshold", Key::Opt(Opt::UThreshold)),
    ("l-threshold", Key::Opt(Opt::LThreshold)),
    ("numeric", Key::Opt(Opt::Numeric)),
    ("connection", Key::Opt(Opt::Connection)),
    ("mcast-interface", Key::UnsupportedOpt),
    ("syncid", Key::UnsupportedOpt),
    ("timeout", Key::Opt(Opt::Timeout)),
    ("daemon", Key::UnsupportedOpt),
    ("stats", Key::Opt(Opt::Stats)),
    ("rate", Key::Opt(Opt::Rate)),
    ("thresholds", Key::Opt(Opt::Thresholds)),
    ("persistent-conn", Key::Opt(Opt::PersistentConn)),
    ("nosort", Key::Opt(Opt::NoSort)),
    ("sort", Key::Sort),
    ("exact", Key::Opt(Opt::Exact)),
    ("ipv6", Key::UnsupportedOpt),
    ("ops", Key::ShortO),
    ("pe", Key::UnsupportedOpt),
    ("sched-flags", Key::Opt(Opt::SchedFlags)),
    ("mcast-group", Key::UnsupportedOpt),
    ("mcast-port", Key::UnsupportedOpt),
    ("mcast-ttl", Key::UnsupportedOpt),
    ("sync-maxlen", Key::UnsupportedOpt),
    ("tun-info", Key::Opt(Opt::TunInfo)),
    ("tun-type", Key::Opt(Opt::TunType)),
    ("tun-port", Key::Opt(Opt::TunPort)),
    ("tun-nocsum", Key::TunCsum(TunnelCsum::None)),
    ("tun-csum", Key::TunCsum(TunnelCsum::Csum)),
    ("tun-remcsum", Key::TunCsum(TunnelCsum::Remcsum)),
    ("output", Key::Opt(Opt::Output)),
    ("socket", Key::Socket),
    ("server", Key::Remote(RemoteOpt::Server)),
    ("tls-ca", Key::Remote(RemoteOpt::TlsCa)),
    ("tls-cert", Key::Remote(RemoteOpt::TlsCert)),
    ("tls-key", Key::Remote(RemoteOpt::TlsKey)),
    ("token-file", Key::Remote(RemoteOpt::TokenFile)),
    ("explain", Key::Cmd(Cmd::Explain)),
    ("client", Key::Opt(Opt::Client)),
    ("add-laddr", Key::Cmd(Cmd::AddLaddr)),
    ("del-laddr", Key::Cmd(Cmd::DelLaddr)),
    ("get-laddr", Key::Cmd(Cmd::GetLaddr)),
    ("laddr", Key::Opt(Opt::Laddr)),
    ("completions", Key::Completions),
    ("man", Key::Man),
];

/// How the tokenizer treats an argument of [`cli::command`] (see the `cli` module doc).
fn arg_kind(arg: &clap::Arg) -> ArgKind {
    let range = arg.get_num_args().unwrap_or_default();
    match (range.min_values(), range.max_values()) {
        (0, 1) => ArgKind::Optional,
        (1, 1) => ArgKind::Required,
        // No value, or `--set`'s three values, which are the leftover words.
        _ => ArgKind::None,
    }
}

/// The tokenizer's option table: every argument of [`cli::command`] with its [`Key`].
fn specs() -> &'static [Spec] {
    static SPECS: OnceLock<Vec<Spec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let mut cmd = cli::command();
        cmd.build();
        cmd.get_arguments()
            .filter_map(|a| {
                let id = a.get_id().as_str();
                // Every argument has a key (the `option_table_matches_clap` test checks it).
                let key = KEYS.iter().find(|(k, _)| *k == id)?.1;
                Some(Spec {
                    long: a.get_long()?.to_string(),
                    shorts: a.get_short_and_visible_aliases().unwrap_or_default(),
                    arg: arg_kind(a),
                    key,
                })
            })
            .collect()
    })
}

/// The clap ids that the parser knows and the ids of [`cli::command`]'s arguments, for the
/// test that checks they are the same set; also whether each clap argument is hidden exactly
/// when the parser refuses it as unsupported.
#[doc(hidden)]
pub fn option_table_check() -> Result<(), String> {
    let mut cmd = cli::command();
    cmd.build();
    let clap_ids: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
    for id in &clap_ids {
        if !KEYS.iter().any(|(k, _)| k == id) {
            return Err(format!("clap argument `{id}' has no parser key"));
        }
    }
    for (k, key) in KEYS {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id().as_str() == *k) else {
            return Err(format!("parser key `{k}' is not a clap argument"));
        };
        if arg.get_long() != Some(*k) {
            return Err(format!("clap argument `{k}' has another long name"));
        }
        let unsupported = matches!(key, Key::UnsupportedOpt | Key::UnsupportedCmd(_));
        if arg.is_hide_set() != unsupported {
            return Err(format!(
                "`{k}': hidden in clap is {}, unsupported in the parser is {unsupported}",
                arg.is_hide_set()
            ));
        }
    }
    if specs().len() != clap_ids.len() {
        return Err("an argument without a long name".to_string());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Commands, options and ipvsadm's table of legal combinations

/// ipvsadm's commands that ulvsadm implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Save,
    Restore,
    Zero,
    SetTimeout,
    /// ulvs addition: which real server would a client get, and why.
    Explain,
    /// DPVS `-P`: add a FULLNAT local address.
    AddLaddr,
    /// DPVS `-Q`: remove a FULLNAT local address.
    DelLaddr,
    /// DPVS `-G`: list FULLNAT local addresses.
    GetLaddr,
}

impl Cmd {
    /// ipvsadm's name for the command, used in its messages.
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Save => "save",
            Cmd::Restore => "restore",
            Cmd::Zero => "zero",
            Cmd::SetTimeout => "set",
            Cmd::Explain => "explain",
            Cmd::AddLaddr => "add-laddr",
            Cmd::DelLaddr => "del-laddr",
            Cmd::GetLaddr => "get-laddr",
        }
    }
}

/// The options of ipvsadm's legality table that ulvsadm implements, in its column order
/// (which decides which message wins when several apply), plus `output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Numeric,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    NoSort,
    Ops,
    SchedFlags,
    Output,
    TunType,
    TunPort,
    TunCsum,
    Connection,
    Timeout,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    Exact,
    TunInfo,
    Client,
    Laddr,
}

const ALL_OPTS: [Opt; 27] = [
    Opt::Numeric,
    Opt::Service,
    Opt::Scheduler,
    Opt::Persistent,
    Opt::Netmask,
    Opt::Server,
    Opt::Forward,
    Opt::Weight,
    Opt::UThreshold,
    Opt::LThreshold,
    Opt::NoSort,
    Opt::Ops,
    Opt::SchedFlags,
    Opt::Output,
    Opt::TunType,
    Opt::TunPort,
    Opt::TunCsum,
    Opt::Connection,
    Opt::Timeout,
    Opt::Stats,
    Opt::Rate,
    Opt::Thresholds,
    Opt::PersistentConn,
    Opt::Exact,
    Opt::TunInfo,
    Opt::Client,
    Opt::Laddr,
];

impl Opt {
    /// ipvsadm's name for the option, used in its messages.
    fn name(self) -> &'static str {
        match self {
            Opt::Numeric => "numeric",
            Opt::Service => "service-address",
            Opt::Scheduler => "scheduler",
            Opt::Persistent => "persistent",
            Opt::Netmask => "netmask",
            Opt::Server => "real-server",
            Opt::Forward => "forwarding-method",
            Opt::Weight => "weight",
            Opt::UThreshold => "u-threshold",
            Opt::LThreshold => "l-threshold",
            Opt::NoSort => "nosort",
            Opt::Ops => "ops",
            Opt::SchedFlags => "sched-flags",
            Opt::Output => "output",
            Opt::TunType => "tun-type",
            Opt::Client => "client",
            Opt::TunPort => "tun-port",
            Opt::TunCsum => "tun-nocsum/tun-csum/tun-remcsum",
            Opt::Connection => "connection",
            Opt::Timeout => "timeout",
            Opt::Stats => "stats",
            Opt::Rate => "rate",
            Opt::Thresholds => "thresholds",
            Opt::PersistentConn => "persistent-conn",
            Opt::Exact => "exact",
            Opt::TunInfo => "tun-info",
            Opt::Laddr => "laddr",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Legal {
    /// `+`: compulsory.
    Required,
    /// `x`: illegal.
    Illegal,
    /// `1`: at most one of the options marked so.
    Exclusive,
    /// ` `: optional.
    Optional,
}

/// ipvsadm's `commands_v_options` table, restricted to the options above.
fn legality(cmd: Cmd, opt: Opt) -> Legal {
    use Legal::*;
    match cmd {
        Cmd::Add | Cmd::Edit => match opt {
            Opt::Service => Required,
            Opt::Scheduler | Opt::Persistent | Opt::Netmask | Opt::Ops | Opt::SchedFlags => {
                Optional
            }
            _ => Illegal,
        },
        Cmd::Del => match opt {
            Opt::Service => Required,
            _ => Illegal,
        },
        Cmd::Flush | Cmd::Restore | Cmd::SetTimeout => Illegal,
        Cmd::Zero => match opt {
            Opt::Service => Optional,
            _ => Illegal,
        },
        Cmd::Save => match opt {
            Opt::Numeric | Opt::NoSort => Optional,
            _ => Illegal,
        },
        Cmd::List => match opt {
            Opt::Numeric
            | Opt::NoSort
            | Opt::Output
            | Opt::Stats
            | Opt::Rate
            | Opt::Thresholds
            | Opt::PersistentConn
            | Opt::Exact
            | Opt::TunInfo => Optional,
            Opt::Service | Opt::Connection | Opt::Timeout => Exclusive,
            _ => Illegal,
        },
        Cmd::AddDest | Cmd::EditDest => match opt {
            Opt::Service | Opt::Server => Required,
            Opt::Forward
            | Opt::Weight
            | Opt::UThreshold
            | Opt::LThreshold
            | Opt::TunType
            | Opt::TunPort
            | Opt::TunCsum => Optional,
            _ => Illegal,
        },
        Cmd::Explain => match opt {
            Opt::Service | Opt::Client => Required,
            Opt::Numeric | Opt::Output => Optional,
            _ => Illegal,
        },
        Cmd::DelDest => match opt {
            Opt::Service | Opt::Server => Required,
            _ => Illegal,
        },
        Cmd::AddLaddr | Cmd::DelLaddr => match opt {
            Opt::Service | Opt::Laddr => Required,
            _ => Illegal,
        },
        Cmd::GetLaddr => match opt {
            Opt::Service => Required,
            Opt::Numeric => Optional,
            _ => Illegal,
        },
    }
}

/// ipvsadm's `generic_opt_check`.
fn check_combination(cmd: Cmd, given: u32) -> Result<(), ParseError> {
    let mut exclusive: Option<Opt> = None;
    for opt in ALL_OPTS {
        let present = given & opt.bit() != 0;
        match (legality(cmd, opt), present) {
            (Legal::Required, false) => {
                return Err(invalid(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    opt.name(),
                    cmd.name()
                )));
            }
            (Legal::Illegal, true) => {
                return Err(invalid(format!(
                    "Illegal '{}' option with the '{}' command",
                    opt.name(),
                    cmd.name()
                )));
            }
            (Legal::Exclusive, true) => {
                if let Some(first) = exclusive {
                    return Err(invalid(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        opt.name(),
                        first.name(),
                        cmd.name()
                    )));
                }
                exclusive = Some(opt);
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Value parsers

/// ipvsadm's `string_to_number`: a whole decimal number (optional sign) within `min..=max`.
fn number_in(s: &str, min: i64, max: i64) -> Option<i64> {
    let n: i64 = s.parse().ok()?;
    (min..=max).contains(&n).then_some(n)
}

/// Parses one part of an `inet_aton` address: decimal, `0` octal or `0x` hex.
fn aton_part(s: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The classic `inet_aton` forms: `a.b.c.d`, `a.b.c`, `a.b`, `a`, each part decimal, octal or
/// hex, the last part filling the remaining bytes.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u64> = s.split('.').map(aton_part).collect::<Option<_>>()?;
    let (head, last) = parts.split_last().map(|(l, h)| (h, *l))?;
    if parts.len() > 4 || head.iter().any(|&p| p > 0xff) {
        return None;
    }
    let last_bits = 8 * (4 - head.len() as u32);
    if last_bits < 64 && last >= 1u64 << last_bits {
        return None;
    }
    let mut v: u64 = 0;
    for &p in head {
        v = (v << 8) | p;
    }
    v = (v << last_bits) | last;
    Some(Ipv4Addr::from(v as u32))
}

/// An address (and maybe a port) as ipvsadm's `parse_service` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AddrPort {
    addr: IpAddr,
    port: Option<u16>,
}

/// ipvsadm's `parse_service`: `host[:port]`, `[ipv6]:port` or a bare IPv6 address. The port may
/// be a number or a service name for `proto`.
fn parse_addr_port(s: &str, proto: Protocol, names: &dyn Resolver) -> Option<AddrPort> {
    if s.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let port = |p: &str| -> Option<u16> {
        match number_in(p, 0, 65535) {
            Some(n) => Some(n as u16),
            None => names.port_by_name(p, proto),
        }
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let p = after.strip_prefix(':')?;
        let addr: Ipv6Addr = inside.parse().ok()?;
        return Some(AddrPort {
            addr: IpAddr::V6(addr),
            port: Some(port(p)?),
        });
    }
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Some(AddrPort {
            addr: IpAddr::V6(a),
            port: None,
        });
    }
    let (host, p) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let addr = inet_aton(host).or_else(|| names.host_v4(host))?;
    Some(AddrPort {
        addr: IpAddr::V4(addr),
        port: match p {
            Some(p) => Some(port(p)?),
            None => None,
        },
    })
}

/// A contiguous IPv4 netmask as a prefix length.
fn mask_prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// ipvsadm's `parse_sched_flags`: comma-separated names, checked against the scheduler.
fn parse_sched_flags(sched: &str, arg: &str) -> Result<Vec<String>, ParseError> {
    let mut flags = Vec::new();
    let words: Vec<&str> = arg.split(',').filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return Err(invalid(format!("invalid scheduler flag `{arg}'")));
    }
    for flag in words {
        let needs = match flag {
            "flag-1" | "flag-2" | "flag-3" => None,
            "sh-fallback" | "sh-port" => Some("sh"),
            "mh-fallback" | "mh-port" => Some("mh"),
            _ => return Err(invalid(format!("invalid scheduler flag `{flag}'"))),
        };
        if needs.is_some_and(|s| s != sched) {
            return Err(invalid(format!("incompatible scheduler flag `{flag}'")));
        }
        if !flags.iter().any(|f| f == flag) {
            flags.push(flag.to_string());
        }
    }
    Ok(flags)
}

// ---------------------------------------------------------------------------------------------
// The parser

/// `--server` and its options as given.
#[derive(Default)]
struct RemoteWords {
    server: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

impl RemoteWords {
    /// Checks the combination; `socket` is whether `--socket` was given.
    fn finish(self, socket: bool) -> Result<Option<Remote>, ParseError> {
        let Some(url) = self.server else {
            if self.tls_ca.is_some()
                || self.tls_cert.is_some()
                || self.tls_key.is_some()
                || self.token_file.is_some()
            {
                return Err(invalid(
                    "--tls-ca, --tls-cert, --tls-key and --token-file need --server",
                ));
            }
            return Ok(None);
        };
        if socket {
            return Err(invalid("--socket and --server cannot be used together"));
        }
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            invalid(format!(
                "--server needs an https:// URL (ulvsd serves TCP with TLS only), not `{url}'"
            ))
        })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid(format!("--server `{url}' has no host")));
        }
        let Some(ca) = self.tls_ca else {
            return Err(invalid(
                "--server needs --tls-ca (the CA certificates that ulvsd's certificate chains to)",
            ));
        };
        let client_identity = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(invalid("--tls-cert and --tls-key go together")),
        };
        Ok(Some(Remote {
            url,
            tls_ca: ca,
            client_identity,
            token_file: self.token_file,
        }))
    }
}

#[derive(Default)]
struct State {
    cmd: Option<Cmd>,
    given: u32,
    socket: Option<PathBuf>,
    remote: RemoteWords,
    help: bool,
    version: bool,
    man: bool,
    completions: Option<String>,
    service: Option<(Protocol, AddrPort)>,
    scheduler: Option<String>,
    persistent: Option<u32>,
    netmask: Option<String>,
    server: Option<String>,
    forward: Option<Forward>,
    weight: Option<u32>,
    u_threshold: Option<u32>,
    l_threshold: Option<u32>,
    ops: bool,
    sched_flags: Option<String>,
    output: Option<OutputFormat>,
    client: Option<String>,
    laddr: Option<String>,
    tunnel: TunnelSpec,
}

impl State {
    /// ipvsadm's `set_option`: each option at most once.
    fn set(&mut self, opt: Opt) -> Result<(), ParseError> {
        if self.given & opt.bit() != 0 {
            return Err(invalid(format!(
                "multiple '{}' options specified",
                opt.name()
            )));
        }
        self.given |= opt.bit();
        Ok(())
    }

    /// Handles one option occurrence; `word` is how the user spelled it, for messages.
    fn handle(
        &mut self,
        key: Key,
        value: Option<&str>,
        word: &str,
        names: &dyn Resolver,
    ) -> Result<(), ParseError> {
        let value_or_empty = value.unwrap_or("");
        match key {
            Key::Help => self.help = true,
            Key::Version => self.version = true,
            Key::Socket => self.socket = Some(PathBuf::from(value_or_empty)),
            Key::Man => self.man = true,
            Key::Completions => self.completions = Some(value_or_empty.to_string()),
            Key::Remote(r) => {
                let v = Some(value_or_empty.to_string());
                match r {
                    RemoteOpt::Server => self.remote.server = v,
                    RemoteOpt::TlsCa => self.remote.tls_ca = v.map(PathBuf::from),
                    RemoteOpt::TlsCert => self.remote.tls_cert = v.map(PathBuf::from),
                    RemoteOpt::TlsKey => self.remote.tls_key = v.map(PathBuf::from),
                    RemoteOpt::TokenFile => self.remote.token_file = v.map(PathBuf::from),
                }
            }
            _ if self.cmd.is_none() => match key {
                Key::Cmd(c) => self.cmd = Some(c),
                Key::UnsupportedCmd(name) => {
                    return Err(ParseError::Unsupported(format!(
                        "the '{name}' command is not supported by ulvsadm yet"
                    )));
                }
                _ => {
                    return Err(ParseError::NoCommand(format!(
                        "the first option must be a command (-A, -E, -D, -a, -e, -d, -C, -L, -S or \
                         -R), not '{word}'"
                    )));
                }
            },
            Key::Cmd(_) | Key::UnsupportedCmd(_) => {
                return Err(invalid("multiple commands specified"));
            }
            Key::UnsupportedOpt => {
                return Err(ParseError::Unsupported(format!(
                    "option '{word}' is not supported by ulvsadm yet"
                )));
            }
            Key::Sort => {}
            Key::ShortO => {
                // Only reached for `--ops` and for `-o` with a command other than -L.
                self.set(Opt::Ops)?;
                self.ops = true;
            }
            Key::Tcp | Key::Udp => {
                self.set(Opt::Service)?;
                let proto = if key == Key::Tcp {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                let ap = parse_addr_port(value_or_empty, proto, names)
                    .ok_or_else(|| invalid("illegal virtual server address[:port] specified"))?;
                self.service = Some((proto, ap));
            }
            Key::TunCsum(c) => {
                self.set(Opt::TunCsum)?;
                self.tunnel.csum = c;
            }
            Key::Masq | Key::Gatewaying | Key::Ipip | Key::FullNat => {
                self.set(Opt::Forward)?;
                self.forward = Some(match key {
                    Key::Masq => Forward::Masq,
                    Key::Gatewaying => Forward::Route,
                    Key::Ipip => Forward::Tunnel,
                    _ => Forward::FullNat,
                });
            }
            Key::Opt(opt) => {
                self.set(opt)?;
                match opt {
                    Opt::Numeric => {}
                    Opt::NoSort => {}
                    Opt::Scheduler => self.scheduler = Some(value_or_empty.to_string()),
                    Opt::Persistent => {
                        self.persistent = Some(match value {
                            None => DEFAULT_PERSISTENCE_TIMEOUT,
                            Some(v) => number_in(v, 1, MAX_TIMEOUT.into()).ok_or_else(|| {
                                invalid(format!("invalid timeout value `{v}' specified"))
                            })? as u32,
                        })
                    }
                    Opt::Netmask => self.netmask = Some(value_or_empty.to_string()),
                    Opt::Server => self.server = Some(value_or_empty.to_string()),
                    // Set through Key::TunCsum.
                    Opt::TunCsum => {}
                    Opt::TunType => {
                        self.tunnel.kind = match value_or_empty {
                            "ipip" => TunnelKind::Ipip,
                            "gue" => TunnelKind::Gue,
                            "gre" => TunnelKind::Gre,
                            v => return Err(invalid(format!("illegal tunnel type `{v}'"))),
                        }
                    }
                    Opt::TunPort => {
                        self.tunnel.port = number_in(value_or_empty, 1, 65535)
                            .ok_or_else(|| invalid("illegal tunnel port specified"))?
                            as u16
                    }
                    Opt::Weight => {
                        self.weight = Some(
                            number_in(value_or_empty, 0, 65535)
                                .ok_or_else(|| invalid("illegal weight specified"))?
                                as u32,
                        )
                    }
                    Opt::UThreshold => {
                        self.u_threshold = Some(
                            number_in(value_or_empty, 0, i32::MAX.into())
                                .ok_or_else(|| invalid("illegal u_threshold specified"))?
                                as u32,
                        )
                    }
                    Opt::LThreshold => {
                        self.l_threshold = Some(
                            number_in(value_or_empty, 0, i32::MAX.into())
                                .ok_or_else(|| invalid("illegal l_threshold specified"))?
                                as u32,
                        )
                    }
                    Opt::SchedFlags => self.sched_flags = Some(value_or_empty.to_string()),
                    Opt::Client => self.client = Some(value_or_empty.to_string()),
                    Opt::Laddr => self.laddr = Some(value_or_empty.to_string()),
                    Opt::Output => {
                        self.output = Some(match value_or_empty {
                            "text" => OutputFormat::Text,
                            "json" => OutputFormat::Json,
                            other => {
                                return Err(invalid(format!(
                                    "illegal output format `{other}' specified (text or json)"
                                )));
                            }
                        })
                    }
                    Opt::Service
                    | Opt::Forward
                    | Opt::Ops
                    | Opt::Connection
                    | Opt::Timeout
                    | Opt::Stats
                    | Opt::Rate
                    | Opt::Thresholds
                    | Opt::PersistentConn
                    | Opt::Exact
                    | Opt::TunInfo => {}
                }
            }
        }
        Ok(())
    }
}

fn find_long(name: &str) -> Option<&'static Spec> {
    specs().iter().find(|s| s.long == name)
}

fn find_short(c: char, cmd: Option<Cmd>) -> Option<(ArgKind, Key)> {
    if c == 'o' && matches!(cmd, Some(Cmd::List | Cmd::Explain)) {
        return Some((ReqArg, Key::Opt(Opt::Output)));
    }
    specs()
        .iter()
        .find(|s| s.shorts.contains(&c))
        .map(|s| (s.arg, s.key))
}

/// Parses the arguments after the program name.
pub fn parse_args<S: AsRef<str>>(
    args: &[S],
    names: &dyn Resolver,
) -> Result<Invocation, ParseError> {
    let mut st = State::default();
    let mut leftovers: Vec<String> = Vec::new();
    let mut positional_only = false;
    let mut i = 0;
    while i < args.len() {
        let word = args[i].as_ref();
        i += 1;
        if positional_only || word == "-" || !word.starts_with('-') {
            leftovers.push(word.to_string());
            continue;
        }
        if word == "--" {
            positional_only = true;
            continue;
        }
        if let Some(body) = word.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let spec = find_long(name)
                .ok_or_else(|| ParseError::Syntax(format!("--{name}: unknown option")))?;
            let value = match spec.arg {
                ArgKind::None => {
                    if inline.is_some() {
                        return Err(ParseError::Syntax(format!(
                            "--{name}: option does not take an argument"
                        )));
                    }
                    None
                }
                ArgKind::Required => match inline {
                    Some(v) => Some(v.to_string()),
                    None => {
                        let v = args.get(i).ok_or_else(|| {
                            ParseError::Syntax(format!("--{name}: missing argument"))
                        })?;
                        i += 1;
                        Some(v.as_ref().to_string())
                    }
                },
                ArgKind::Optional => match inline {
                    Some(v) => Some(v.to_string()),
                    None => match args.get(i).map(AsRef::as_ref) {
                        Some(v) if !v.starts_with('-') => {
                            i += 1;
                            Some(v.to_string())
                        }
                        _ => None,
                    },
                },
            };
            st.handle(spec.key, value.as_deref(), &format!("--{name}"), names)?;
            continue;
        }
        // A cluster of short options.
        let cluster = &word[1..];
        for (pos, c) in cluster.char_indices() {
            let (arg, key) = find_short(c, st.cmd)
                .ok_or_else(|| ParseError::Syntax(format!("-{c}: unknown option")))?;
            let rest = &cluster[pos + c.len_utf8()..];
            let flag = format!("-{c}");
            if arg == ArgKind::None {
                st.handle(key, None, &flag, names)?;
                continue;
            }
            let value = if !rest.is_empty() {
                Some(rest.to_string())
            } else if arg == ArgKind::Required {
                let v = args
                    .get(i)
                    .ok_or_else(|| ParseError::Syntax(format!("{flag}: missing argument")))?;
                i += 1;
                Some(v.as_ref().to_string())
            } else {
                match args.get(i).map(AsRef::as_ref) {
                    Some(v) if !v.starts_with('-') => {
                        i += 1;
                        Some(v.to_string())
                    }
                    _ => None,
                }
            };
            st.handle(key, value.as_deref(), &flag, names)?;
            break;
        }
    }
    finish(st, leftovers, names)
}

fn finish(
    st: State,
    leftovers: Vec<String>,
    names: &dyn Resolver,
) -> Result<Invocation, ParseError> {
    let socket = st.socket.clone();
    if st.help {
        return Ok(local(Command::Help));
    }
    if st.version {
        return Ok(local(Command::Version));
    }
    if st.man {
        return Ok(local(Command::Man));
    }
    if let Some(shell) = &st.completions {
        let shell = shell.parse::<clap_complete::Shell>().map_err(|_| {
            invalid(format!(
                "unknown shell `{shell}' for --completions (bash, zsh, fish, elvish or powershell)"
            ))
        })?;
        return Ok(local(Command::Completions(shell)));
    }
    let mut st = st;
    let remote = std::mem::take(&mut st.remote).finish(socket.is_some())?;
    let done = |command| {
        Ok(Invocation {
            command,
            socket: socket.clone(),
            remote: remote.clone(),
        })
    };
    let Some(cmd) = st.cmd else {
        if let Some(word) = leftovers.first() {
            return Err(ParseError::NoCommand(format!(
                "expected a command (-A, -E, -D, -a, -e, -d, -C, -L, -S or -R), not '{word}'"
            )));
        }
        // No command at all: ipvsadm lists the table.
        return done(Command::List(ListOptions::default()));
    };
    if cmd == Cmd::SetTimeout {
        check_combination(cmd, st.given)?;
        // ipvsadm's parse_timeout: three numbers, each 0 (keep) ..= 31 days.
        let [tcp, tcp_fin, udp] = leftovers.as_slice() else {
            return Err(invalid("--set needs three timeout values: tcp tcpfin udp"));
        };
        let t = |v: &String| {
            number_in(v, 0, MAX_TIMEOUT.into())
                .map(|n| n as u32)
                .ok_or_else(|| invalid(format!("invalid timeout value `{v}' specified")))
        };
        return done(Command::SetTimeouts {
            tcp: t(tcp)?,
            tcp_fin: t(tcp_fin)?,
            udp: t(udp)?,
        });
    }
    if let Some(word) = leftovers.first() {
        return Err(invalid(format!("unexpected argument {word}")));
    }
    let scheduler = match st.scheduler.as_deref() {
        None | Some("") => DEFAULT_SCHEDULER.to_string(),
        Some(s) => s.to_string(),
    };
    let sched_flags = match st.sched_flags.as_deref() {
        None | Some("") => Vec::new(),
        Some(arg) => parse_sched_flags(&scheduler, arg)?,
    };
    check_combination(cmd, st.given)?;

    let key = st.service.map(|(protocol, ap)| ServiceKey {
        protocol,
        addr: ap.addr,
        port: ap.port.unwrap_or(0),
    });
    let need_key = || key.clone().ok_or_else(|| invalid("missing service"));

    let command = match cmd {
        Cmd::Add | Cmd::Edit => {
            let key = need_key()?;
            let persistence_prefix_len = match &st.netmask {
                None => None,
                Some(m) => Some(parse_netmask(m, key.addr)?),
            };
            if key.port == 0 && st.persistent.is_none() {
                return Err(invalid("Zero port specified for non-persistent service"));
            }
            if st.ops && key.protocol != Protocol::Udp {
                return Err(invalid(
                    "One-Packet Scheduling is only for UDP virtual services",
                ));
            }
            let spec = ServiceSpec {
                key,
                scheduler,
                sched_flags,
                persistence_timeout: st.persistent,
                persistence_prefix_len,
                one_packet: st.ops,
            };
            if cmd == Cmd::Add {
                Command::AddService(spec)
            } else {
                Command::EditService(spec)
            }
        }
        Cmd::Del => Command::DeleteService(need_key()?),
        Cmd::AddLaddr | Cmd::DelLaddr => {
            let key = need_key()?;
            let text = st.laddr.as_deref().unwrap_or("");
            let addr: IpAddr = text
                .parse()
                .map_err(|_| invalid(format!("illegal local address `{text}' specified")))?;
            if addr.is_ipv4() != key.addr.is_ipv4() {
                return Err(invalid(
                    "local address and virtual service must be of the same address family",
                ));
            }
            if cmd == Cmd::AddLaddr {
                Command::AddLocalAddress(key, addr)
            } else {
                Command::DeleteLocalAddress(key, addr)
            }
        }
        Cmd::GetLaddr => Command::GetLocalAddresses(need_key()?),
        Cmd::Flush => Command::Clear,
        Cmd::Save => Command::Save(SaveOptions {
            numeric: st.given & Opt::Numeric.bit() != 0,
            sort: st.given & Opt::NoSort.bit() == 0,
        }),
        Cmd::Restore => Command::Restore,
        Cmd::Zero => Command::Zero(key),
        // Handled above, with its three values.
        Cmd::SetTimeout => return Err(invalid("--set needs three timeout values: tcp tcpfin udp")),
        Cmd::List => {
            let has = |o: Opt| st.given & o.bit() != 0;
            if has(Opt::Connection) && has(Opt::PersistentConn) {
                return Err(ParseError::Unsupported(
                    "-c with --persistent-conn (persistence engine columns) is not supported by \
                     ulvsadm"
                        .to_string(),
                ));
            }
            // As ipvsadm: the rate view wins over stats, both over thresholds, all three over
            // persistent connections.
            let view = if has(Opt::Connection) {
                ListView::Connections
            } else if has(Opt::Timeout) {
                ListView::Timeout
            } else if has(Opt::Rate) {
                ListView::Rate
            } else if has(Opt::Stats) {
                ListView::Stats
            } else if has(Opt::Thresholds) {
                ListView::Thresholds
            } else if has(Opt::PersistentConn) {
                ListView::PersistentConn
            } else if has(Opt::TunInfo) {
                ListView::TunInfo
            } else {
                ListView::Table
            };
            Command::List(ListOptions {
                numeric: has(Opt::Numeric),
                service: key,
                output: st.output.unwrap_or_default(),
                sort: !has(Opt::NoSort),
                view,
                exact: has(Opt::Exact),
            })
        }
        Cmd::Explain => {
            let service = need_key()?;
            let raw = st.client.as_deref().unwrap_or("");
            let ap = parse_addr_port(raw, service.protocol, names)
                .filter(|ap| ap.port.is_some() && ap.addr.is_ipv4() == service.addr.is_ipv4())
                .ok_or_else(|| {
                    invalid(format!(
                        "illegal client address:port `{raw}' specified (the service's family, \
                         with a port)"
                    ))
                })?;
            Command::Explain(ExplainOptions {
                service,
                client_addr: ap.addr,
                client_port: ap.port.unwrap_or(0),
                output: st.output.unwrap_or_default(),
            })
        }
        Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
            let key = need_key()?;
            let raw = st.server.as_deref().unwrap_or("");
            let ap = parse_addr_port(raw, key.protocol, names)
                .ok_or_else(|| invalid("illegal real server address[:port] specified"))?;
            let mut port = ap.port.unwrap_or(key.port);
            if cmd == Cmd::DelDest {
                Command::DeleteServer {
                    service: key,
                    addr: ap.addr,
                    port,
                }
            } else {
                let forward = st.forward.unwrap_or(Forward::Route);
                if matches!(forward, Forward::Route | Forward::Tunnel) {
                    port = key.port;
                }
                if ap.addr.is_ipv4() != key.addr.is_ipv4() && forward != Forward::Tunnel {
                    return Err(invalid(
                        "Different address family is allowed only for tunneling servers",
                    ));
                }
                let tun_given =
                    st.given & (Opt::TunType.bit() | Opt::TunPort.bit() | Opt::TunCsum.bit()) != 0;
                if tun_given && forward != Forward::Tunnel {
                    return Err(invalid(
                        "tunnel options (--tun-*) are only for tunnelling servers (-i)",
                    ));
                }
                let t = st.tunnel;
                match t.kind {
                    TunnelKind::Gue if t.port == 0 => {
                        return Err(invalid("a GUE tunnel needs --tun-port"));
                    }
                    TunnelKind::Ipip | TunnelKind::Gre if t.port != 0 => {
                        return Err(invalid("--tun-port is only for --tun-type gue"));
                    }
                    TunnelKind::Ipip if st.given & Opt::TunCsum.bit() != 0 => {
                        return Err(invalid("checksum options are only for gue and gre tunnels"));
                    }
                    TunnelKind::Gre if t.csum == TunnelCsum::Remcsum => {
                        return Err(invalid("--tun-remcsum is only for --tun-type gue"));
                    }
                    _ => {}
                }
                let rs = RealServerSpec {
                    addr: ap.addr,
                    port,
                    forward,
                    weight: st.weight.unwrap_or(1),
                    upper_threshold: st.u_threshold.unwrap_or(0),
                    lower_threshold: st.l_threshold.unwrap_or(0),
                    tunnel: t,
                };
                if cmd == Cmd::AddDest {
                    Command::AddServer(key, rs)
                } else {
                    Command::EditServer(key, rs)
                }
            }
        }
    };
    done(command)
}

/// A command that needs no daemon.
fn local(command: Command) -> Invocation {
    Invocation {
        command,
        socket: None,
        remote: None,
    }
}

/// `-M`: a dotted IPv4 mask for an IPv4 service, a prefix length 1..=128 for an IPv6 one.
fn parse_netmask(m: &str, service_addr: IpAddr) -> Result<u8, ParseError> {
    match service_addr {
        IpAddr::V4(_) => {
            let len = inet_aton(m)
                .and_then(mask_prefix_len)
                .ok_or_else(|| invalid("illegal virtual server persistent mask specified"))?;
            if len == 0 {
                // The API's 0 means "default"; a 0.0.0.0 mask cannot be expressed.
                return Err(invalid(
                    "illegal virtual server persistent mask specified (0.0.0.0 is not supported)",
                ));
            }
            Ok(len)
        }
        IpAddr::V6(_) => number_in(m, 1, 128)
            .map(|n| n as u8)
            .ok_or_else(|| invalid("illegal ipv6 netmask specified")),
    }
}
