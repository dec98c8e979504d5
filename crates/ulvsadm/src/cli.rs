//! The clap declaration of every ulvsadm option: names, short letters, value names and help.
//!
//! [`command`] is the single source of truth for the option table. It renders `--help`, the
//! shell completions (`--completions bash|zsh|fish`) and the man page (`--man`,
//! `deploy/man/ulvsadm.8`); the ipvsadm-compatible tokenizer in [`parse`](crate::parse) derives
//! its table from it (long and short names, and whether an option takes no value, one value or
//! an optional value). clap does not tokenize: ipvsadm's grammar (command first, clustered short
//! options, `-p`'s optional timeout, `-o` meaning `--output` after `-L`, its exact messages and
//! its table of legal command/option combinations) is applied by the tokenizer.
//!
//! How the tokenizer reads an argument's declaration:
//! - `num_args(0)`: a flag; `num_args(1)`: a value, taken from the next word even if it starts
//!   with `-`; `num_args(0..=1)`: an optional value, taken from the next word only if it does not
//!   start with `-`.
//! - `num_args(3)` (only `--set`): a flag whose values are the words left over after all options,
//!   as popt does for ipvsadm.
//! - Hidden arguments are ipvsadm options ulvsadm recognises but does not implement; they are
//!   refused with a clear message and left out of the help, completions and man page (which
//!   are rendered from the documented options only).

use clap::{Arg, ArgAction, Command};

/// Help heading of the commands.
const COMMANDS: &str = "Commands";
/// Help heading of the service address options.
const SERVICE: &str = "Virtual service";
/// Help heading of the virtual service options.
const SERVICE_OPTS: &str = "Virtual service options";
/// Help heading of the real server options.
const SERVER_OPTS: &str = "Real server options";
/// Help heading of the listing options.
const LIST_OPTS: &str = "List options";
/// Help heading of ulvsadm's own options.
const ULVS_OPTS: &str = "ulvs options";

fn flag(id: &'static str, short: Option<char>, heading: &'static str, help: &'static str) -> Arg {
    let arg = Arg::new(id)
        .long(id)
        .action(ArgAction::SetTrue)
        .num_args(0)
        .help(help)
        .help_heading(heading);
    match short {
        Some(c) => arg.short(c),
        None => arg,
    }
}

fn value(
    id: &'static str,
    short: Option<char>,
    value_name: &'static str,
    heading: &'static str,
    help: &'static str,
) -> Arg {
    let arg = Arg::new(id)
        .long(id)
        .action(ArgAction::Set)
        .num_args(1)
        .value_name(value_name)
        .allow_hyphen_values(true)
        .help(help)
        .help_heading(heading);
    match short {
        Some(c) => arg.short(c),
        None => arg,
    }
}

/// An ipvsadm option ulvsadm does not implement: recognised, refused, not shown.
fn unsupported(
    id: &'static str,
    short: Option<char>,
    takes_value: bool,
    heading: &'static str,
) -> Arg {
    let arg = if takes_value {
        value(id, short, "VALUE", heading, "not supported")
    } else {
        flag(id, short, heading, "not supported")
    };
    arg.hide(true)
}

const USAGE: &str = "\
ulvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags] [--ops]
       ulvsadm -D virtual-service
       ulvsadm -C
       ulvsadm -a|e virtual-service -r server-address [-g|-i|-m|--fullnat] [-w weight] [-x upper] [-y lower] [--tun-type ipip|gue|gre [--tun-port port] [--tun-nocsum|--tun-csum|--tun-remcsum]]
       ulvsadm -d virtual-service -r server-address
       ulvsadm -L|l [virtual-service] [-n] [--nosort] [-o text|json] [--stats|--rate|--thresholds|--persistent-conn|--tun-info] [--exact]
       ulvsadm -L|l -c|--timeout [-n] [-o text|json]
       ulvsadm -Z [virtual-service]
       ulvsadm --set tcp tcpfin udp
       ulvsadm -S [-n] [--nosort]
       ulvsadm -R
       ulvsadm --explain virtual-service --client address:port [-o text|json]
       ulvsadm -P|Q virtual-service -z local-address
       ulvsadm -G virtual-service
       ulvsadm -h|--help | -v|--version | --man | --completions bash|zsh|fish";

const AFTER_HELP: &str = "\
The command must come first; short options may be grouped (-Ln, -At 198.18.0.1:80).
Without arguments, ulvsadm lists the table (like -L). After -L, -o means --output; with the
other commands it means --ops, as in ipvsadm (and --output after --explain).

service-address is host[:port] or [ipv6]:port; the port is a number or an /etc/services name,
0 only if persistent. A real server without a port gets the service port; -g and -i servers
always use the service port. Without -n, ports are shown by their /etc/services names and
addresses by their /etc/hosts names; ulvsadm never asks DNS while listing.

By default ulvsadm talks to ulvsd on its unix socket ($ULVS_SOCKET, else /run/ulvs/ulvsd.sock).
With --server it connects over TCP with TLS (ulvsd --listen): --tls-ca names the CA that
signed ulvsd's certificate, --tls-cert/--tls-key the client certificate when ulvsd asks for
one, and --token-file a file whose first line is the bearer token.

Exit status: 0 on success, 1 if ulvsd is unreachable or refuses the request, 2 for a usage
error (as ipvsadm).";

/// The whole ulvsadm command line, as clap sees it (see the module doc for how the tokenizer
/// reads it), including the hidden ipvsadm options that ulvsadm refuses as unsupported.
pub fn command() -> Command {
    documented().args([
        unsupported("start-daemon", None, true, COMMANDS),
        unsupported("stop-daemon", None, true, COMMANDS),
        unsupported("sctp-service", None, true, SERVICE),
        unsupported("fwmark-service", Some('f'), true, SERVICE),
        unsupported("pe", None, true, SERVICE_OPTS),
        unsupported("daemon", None, false, LIST_OPTS),
        unsupported("mcast-interface", None, true, LIST_OPTS),
        unsupported("syncid", None, true, LIST_OPTS),
        unsupported("mcast-group", None, true, LIST_OPTS),
        unsupported("mcast-port", None, true, LIST_OPTS),
        unsupported("mcast-ttl", None, true, LIST_OPTS),
        unsupported("sync-maxlen", None, true, LIST_OPTS),
        unsupported("ipv6", Some('6'), false, LIST_OPTS),
    ])
}

/// The options ulvsadm implements: what the help, the man page and the completions show.
fn documented() -> Command {
    Command::new("ulvsadm")
        .version(env!("CARGO_PKG_VERSION"))
        .about("ipvsadm-compatible administration of the ulvs userspace virtual server")
        .long_about(
            "ulvsadm sets up, maintains and inspects the virtual server table of ulvsd, the \
             userspace Linux Virtual Server, with ipvsadm's command line and output formats. \
             Restore (-R) applies a whole rule file atomically, save (-S) keeps thresholds, and \
             every listing has a JSON form (-o json).",
        )
        .override_usage(USAGE)
        .after_help(AFTER_HELP)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args([
            // Commands.
            flag(
                "add-service",
                Some('A'),
                COMMANDS,
                "add a virtual service with options",
            ),
            flag(
                "edit-service",
                Some('E'),
                COMMANDS,
                "edit a virtual service with options (unset options get their defaults)",
            ),
            flag(
                "delete-service",
                Some('D'),
                COMMANDS,
                "delete a virtual service",
            ),
            flag("clear", Some('C'), COMMANDS, "clear the whole table"),
            flag(
                "add-server",
                Some('a'),
                COMMANDS,
                "add a real server with options",
            ),
            flag(
                "edit-server",
                Some('e'),
                COMMANDS,
                "edit a real server with options (unset options get their defaults)",
            ),
            flag("delete-server", Some('d'), COMMANDS, "delete a real server"),
            flag("list", Some('L'), COMMANDS, "list the table").visible_short_alias('l'),
            flag(
                "save",
                Some('S'),
                COMMANDS,
                "save the table as rules (with thresholds) on standard output",
            ),
            flag(
                "restore",
                Some('R'),
                COMMANDS,
                "apply rules from standard input, all of them or none",
            ),
            flag(
                "zero",
                Some('Z'),
                COMMANDS,
                "zero the counters of a service or of all services",
            ),
            Arg::new("set")
                .long("set")
                .action(ArgAction::Set)
                .num_args(3)
                .value_names(["TCP", "TCPFIN", "UDP"])
                .help("set the connection timeouts in seconds (0 keeps a value)")
                .help_heading(COMMANDS),
            flag(
                "explain",
                None,
                COMMANDS,
                "which real server a new connection from --client would get, and why (existing \
                 connection, persistence template, or the scheduler's reasoning); changes nothing",
            ),
            flag(
                "add-laddr",
                Some('P'),
                COMMANDS,
                "add a FULLNAT local address (-z) to a service (DPVS)",
            ),
            flag(
                "del-laddr",
                Some('Q'),
                COMMANDS,
                "remove a FULLNAT local address (-z) from a service (DPVS)",
            ),
            flag(
                "get-laddr",
                Some('G'),
                COMMANDS,
                "list a service's FULLNAT local addresses (DPVS)",
            ),
            flag("help", Some('h'), COMMANDS, "display this help message"),
            flag("version", Some('v'), COMMANDS, "display the version"),
            // Service address.
            value(
                "tcp-service",
                Some('t'),
                "service-address",
                SERVICE,
                "a TCP virtual service, host[:port] or [ipv6]:port",
            ),
            value(
                "udp-service",
                Some('u'),
                "service-address",
                SERVICE,
                "a UDP virtual service, host[:port] or [ipv6]:port",
            ),
            // Service options.
            value(
                "scheduler",
                Some('s'),
                "scheduler",
                SERVICE_OPTS,
                "rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos (default wlc)",
            ),
            Arg::new("persistent")
                .long("persistent")
                .short('p')
                .action(ArgAction::Set)
                .num_args(0..=1)
                .value_name("timeout")
                .help("persistent service (timeout 1..2678400 s, default 300)")
                .help_heading(SERVICE_OPTS),
            value(
                "netmask",
                Some('M'),
                "netmask",
                SERVICE_OPTS,
                "persistence granularity mask (IPv4: dotted, IPv6: prefix length)",
            ),
            value(
                "sched-flags",
                Some('b'),
                "flags",
                SERVICE_OPTS,
                "scheduler flags, comma-separated: flag-1, flag-2, flag-3, sh-fallback, sh-port \
                 (sh), mh-fallback, mh-port (mh)",
            ),
            flag(
                "ops",
                Some('o'),
                SERVICE_OPTS,
                "one-packet scheduling (UDP only; with -A/-E)",
            ),
            // Real server options.
            value(
                "real-server",
                Some('r'),
                "server-address",
                SERVER_OPTS,
                "the real server, host[:port] (the port defaults to the service port)",
            ),
            flag(
                "gatewaying",
                Some('g'),
                SERVER_OPTS,
                "gatewaying (direct routing) (default)",
            ),
            flag(
                "ipip",
                Some('i'),
                SERVER_OPTS,
                "ipip encapsulation (tunneling)",
            ),
            flag("masquerading", Some('m'), SERVER_OPTS, "masquerading (NAT)"),
            flag(
                "fullnat",
                None,
                SERVER_OPTS,
                "full NAT (destination and source rewritten)",
            ),
            value(
                "weight",
                Some('w'),
                "weight",
                SERVER_OPTS,
                "capacity of the real server (0..65535, default 1)",
            ),
            value(
                "u-threshold",
                Some('x'),
                "uthreshold",
                SERVER_OPTS,
                "upper threshold of connections (0 = none)",
            ),
            value(
                "l-threshold",
                Some('y'),
                "lthreshold",
                SERVER_OPTS,
                "lower threshold of connections (0 = none)",
            ),
            value(
                "tun-type",
                None,
                "type",
                SERVER_OPTS,
                "tunnel type of a -i server: ipip (default), gue or gre",
            ),
            value(
                "tun-port",
                None,
                "port",
                SERVER_OPTS,
                "destination UDP port of a gue tunnel",
            ),
            flag(
                "tun-nocsum",
                None,
                SERVER_OPTS,
                "no checksum in gue/gre tunnel headers (default)",
            ),
            flag(
                "tun-csum",
                None,
                SERVER_OPTS,
                "checksum in gue/gre tunnel headers",
            ),
            flag(
                "tun-remcsum",
                None,
                SERVER_OPTS,
                "remote checksum offload in gue tunnel headers",
            ),
            // List options.
            flag(
                "numeric",
                Some('n'),
                LIST_OPTS,
                "numeric output of addresses and ports",
            ),
            flag(
                "nosort",
                None,
                LIST_OPTS,
                "do not sort services and real servers",
            ),
            flag(
                "sort",
                None,
                LIST_OPTS,
                "does nothing, for backwards compatibility",
            ),
            flag(
                "connection",
                Some('c'),
                LIST_OPTS,
                "list the current connections",
            ),
            flag(
                "timeout",
                None,
                LIST_OPTS,
                "list the timeouts (tcp tcpfin udp)",
            ),
            flag("stats", None, LIST_OPTS, "list statistics"),
            flag("rate", None, LIST_OPTS, "list rates"),
            flag(
                "thresholds",
                None,
                LIST_OPTS,
                "list the real servers' thresholds",
            ),
            flag(
                "persistent-conn",
                None,
                LIST_OPTS,
                "list the real servers' persistent connections",
            ),
            flag(
                "tun-info",
                None,
                LIST_OPTS,
                "list the real servers' tunnel settings",
            ),
            flag(
                "exact",
                Some('X'),
                LIST_OPTS,
                "expand numbers (display exact values)",
            ),
            value(
                "output",
                None,
                "text|json",
                LIST_OPTS,
                "output format of -L and --explain (-o after them); json has the API's field names",
            ),
            // ulvs options.
            value(
                "client",
                None,
                "address:port",
                ULVS_OPTS,
                "with --explain: the client asking (the service's family)",
            ),
            value(
                "laddr",
                Some('z'),
                "address",
                ULVS_OPTS,
                "with -P/-Q: a FULLNAT local address (the service's family); --fullnat real \
                 servers see connections come from the service's local addresses. -E keeps \
                 them; -S saves them as -P lines that -R restores",
            ),
            value(
                "socket",
                None,
                "PATH",
                ULVS_OPTS,
                "ulvsd's control socket (default $ULVS_SOCKET, else /run/ulvs/ulvsd.sock)",
            ),
            value(
                "server",
                None,
                "https://HOST:PORT",
                ULVS_OPTS,
                "connect to ulvsd's TCP listener (TLS) instead of the unix socket",
            ),
            value(
                "tls-ca",
                None,
                "FILE",
                ULVS_OPTS,
                "CA certificates (PEM) that ulvsd's certificate must chain to (with --server)",
            ),
            value(
                "tls-cert",
                None,
                "FILE",
                ULVS_OPTS,
                "client certificate chain (PEM) for mutual TLS (with --server and --tls-key)",
            ),
            value(
                "tls-key",
                None,
                "FILE",
                ULVS_OPTS,
                "client private key (PEM) for mutual TLS (with --server and --tls-cert)",
            ),
            value(
                "token-file",
                None,
                "FILE",
                ULVS_OPTS,
                "send the file's first line as `authorization: Bearer` (with --server)",
            ),
            value(
                "completions",
                None,
                "SHELL",
                ULVS_OPTS,
                "print the completion script for SHELL",
            )
            .value_parser(["bash", "zsh", "fish", "elvish", "powershell"]),
            flag("man", None, ULVS_OPTS, "print the man page (roff)"),
        ])
}

/// The man page, `ulvsadm(8)`, in roff.
pub fn man_page() -> String {
    let mut out = Vec::new();
    clap_mangen::Man::new(documented())
        .section("8")
        .manual("System Administration")
        .source(format!("ulvs {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .expect("rendering into a Vec cannot fail");
    String::from_utf8_lossy(&out).into_owned()
}

/// A completion script for `shell` (one of `--completions`' possible values).
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut documented(), "ulvsadm", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
