//! Parser tests: every command form ulvsadm accepts, and every error, against ipvsadm's rules.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ulvsadm::model::{Forward, Protocol, RealServerSpec, ServiceKey, ServiceSpec};
use ulvsadm::names::{NameTables, StaticNames};
use ulvsadm::parse::{
    Command, Invocation, ListOptions, OutputFormat, ParseError, inet_aton, parse_args,
};

fn names() -> StaticNames {
    StaticNames(NameTables::parse(
        "http 80/tcp www\ndomain 53/udp\n",
        "198.18.0.1 vip.example vip\n",
    ))
}

fn parse(line: &str) -> Result<Invocation, ParseError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    parse_args(&words, &names())
}

fn cmd(line: &str) -> Command {
    match parse(line) {
        Ok(inv) => inv.command,
        Err(e) => panic!("{line:?} failed: {e}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(protocol: Protocol, addr: &str, port: u16) -> ServiceKey {
    ServiceKey {
        protocol,
        addr: ip(addr),
        port,
    }
}

fn tcp80() -> ServiceKey {
    key(Protocol::Tcp, "198.18.0.1", 80)
}

fn spec(key: ServiceKey) -> ServiceSpec {
    ServiceSpec {
        key,
        scheduler: "wlc".into(),
        sched_flags: vec![],
        persistence_timeout: None,
        persistence_prefix_len: None,
        one_packet: false,
    }
}

fn server(addr: &str, port: u16, forward: Forward) -> RealServerSpec {
    RealServerSpec {
        addr: ip(addr),
        port,
        forward,
        weight: 1,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel: Default::default(),
    }
}

// --- services -------------------------------------------------------------------------------

#[test]
fn add_service_defaults_to_wlc() {
    assert_eq!(
        cmd("-A -t 198.18.0.1:80"),
        Command::AddService(spec(tcp80()))
    );
}

#[test]
fn add_service_spellings_are_equivalent() {
    let want = Command::AddService(ServiceSpec {
        scheduler: "rr".into(),
        ..spec(tcp80())
    });
    for line in [
        "-A -t 198.18.0.1:80 -s rr",
        "-At 198.18.0.1:80 -srr",
        "-At198.18.0.1:80 -s rr",
        "--add-service --tcp-service 198.18.0.1:80 --scheduler rr",
        "--add-service --tcp-service=198.18.0.1:80 --scheduler=rr",
        "-A -s rr -t 198.18.0.1:80",
        "-A -t vip:www -s rr",
        "-A -t 198.18.0.1:80 --sort -s rr",
    ] {
        assert_eq!(cmd(line), want, "{line}");
    }
}

#[test]
fn add_service_with_every_option() {
    assert_eq!(
        cmd("-A -u [fd00:1b5::1]:53 -s sh -b sh-fallback,sh-port -p 300 -M 64 -o"),
        Command::AddService(ServiceSpec {
            key: key(Protocol::Udp, "fd00:1b5::1", 53),
            scheduler: "sh".into(),
            sched_flags: vec!["sh-fallback".into(), "sh-port".into()],
            persistence_timeout: Some(300),
            persistence_prefix_len: Some(64),
            one_packet: true,
        })
    );
    assert_eq!(
        cmd("-A -u 198.18.0.1:domain --ops -p 60 -M 255.255.255.0 -b flag-2"),
        Command::AddService(ServiceSpec {
            key: key(Protocol::Udp, "198.18.0.1", 53),
            sched_flags: vec!["flag-2".into()],
            persistence_timeout: Some(60),
            persistence_prefix_len: Some(24),
            one_packet: true,
            ..spec(key(Protocol::Udp, "198.18.0.1", 53))
        })
    );
}

#[test]
fn persistent_timeout_is_optional() {
    let persistent = |timeout, port| {
        Command::AddService(ServiceSpec {
            persistence_timeout: Some(timeout),
            ..spec(key(Protocol::Tcp, "198.18.0.1", port))
        })
    };
    // A bare -p is 300 s; it does not swallow a following option.
    assert_eq!(cmd("-A -t 198.18.0.1:0 -p"), persistent(300, 0));
    assert_eq!(cmd("-A -t 198.18.0.1 -p"), persistent(300, 0));
    assert_eq!(cmd("-A -p -t 198.18.0.1:80"), persistent(300, 80));
    assert_eq!(cmd("-A -t 198.18.0.1:80 -p 600"), persistent(600, 80));
    assert_eq!(cmd("-A -t 198.18.0.1:80 -p600"), persistent(600, 80));
    assert_eq!(
        cmd("-A -t 198.18.0.1:80 --persistent=2678400"),
        persistent(2678400, 80)
    );
}

#[test]
fn edit_and_delete_service() {
    assert_eq!(
        cmd("-E -t 198.18.0.1:80 -s wrr"),
        Command::EditService(ServiceSpec {
            scheduler: "wrr".into(),
            ..spec(tcp80())
        })
    );
    assert_eq!(
        cmd("--edit-service -t 198.18.0.1:80"),
        Command::EditService(spec(tcp80()))
    );
    assert_eq!(cmd("-D -t 198.18.0.1:80"), Command::DeleteService(tcp80()));
    assert_eq!(
        cmd("--delete-service -u [fd00:1b5::1]:53"),
        Command::DeleteService(key(Protocol::Udp, "fd00:1b5::1", 53))
    );
    // A bare IPv6 address has no port, as in ipvsadm.
    assert_eq!(
        cmd("-D -t fd00:1b5::1:80"),
        Command::DeleteService(key(Protocol::Tcp, "fd00:1b5::1:80", 0))
    );
    assert_eq!(cmd("-C"), Command::Clear);
    assert_eq!(cmd("--clear"), Command::Clear);
}

// --- real servers ---------------------------------------------------------------------------

#[test]
fn add_server_port_defaults_to_service_port() {
    assert_eq!(
        cmd("-a -t 198.18.0.1:80 -r 198.18.1.1 -m"),
        Command::AddServer(tcp80(), server("198.18.1.1", 80, Forward::Masq))
    );
    // -r before -t still gets the service port.
    assert_eq!(
        cmd("-a -r 198.18.1.1 -t 198.18.0.1:80 -m"),
        Command::AddServer(tcp80(), server("198.18.1.1", 80, Forward::Masq))
    );
}

#[test]
fn add_server_with_every_option() {
    assert_eq!(
        cmd("-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -m -w 3 -x 100 -y 50"),
        Command::AddServer(
            tcp80(),
            RealServerSpec {
                weight: 3,
                upper_threshold: 100,
                lower_threshold: 50,
                ..server("198.18.1.1", 8080, Forward::Masq)
            }
        )
    );
    assert_eq!(
        cmd(
            "--add-server --tcp-service=198.18.0.1:80 --real-server=198.18.1.1:8080 --masquerading --weight=0"
        ),
        Command::AddServer(
            tcp80(),
            RealServerSpec {
                weight: 0,
                ..server("198.18.1.1", 8080, Forward::Masq)
            }
        )
    );
    assert_eq!(
        cmd("-a -t 198.18.0.1:80 -r 198.18.1.1:8080 --fullnat"),
        Command::AddServer(tcp80(), server("198.18.1.1", 8080, Forward::FullNat))
    );
}

#[test]
fn route_and_tunnel_servers_use_the_service_port() {
    // Direct routing is the default forwarding method.
    assert_eq!(
        cmd("-a -t 198.18.0.1:80 -r 198.18.1.1:8080"),
        Command::AddServer(tcp80(), server("198.18.1.1", 80, Forward::Route))
    );
    assert_eq!(
        cmd("-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -g"),
        Command::AddServer(tcp80(), server("198.18.1.1", 80, Forward::Route))
    );
    assert_eq!(
        cmd("-a -t 198.18.0.1:80 -r 198.18.1.1:8080 --ipip"),
        Command::AddServer(tcp80(), server("198.18.1.1", 80, Forward::Tunnel))
    );
}

#[test]
fn tunnel_servers_may_use_the_other_family() {
    assert_eq!(
        cmd("-a -t [fd00:1b5::1]:443 -r 198.18.1.7 -i"),
        Command::AddServer(
            key(Protocol::Tcp, "fd00:1b5::1", 443),
            server("198.18.1.7", 443, Forward::Tunnel)
        )
    );
    assert_eq!(
        cmd("-a -t [fd00:1b5::1]:443 -r [fd00:1b5::a]:8443 -m"),
        Command::AddServer(
            key(Protocol::Tcp, "fd00:1b5::1", 443),
            server("fd00:1b5::a", 8443, Forward::Masq)
        )
    );
}

#[test]
fn edit_and_delete_server() {
    // Like ipvsadm, -e sends every setting: unspecified ones get their defaults.
    assert_eq!(
        cmd("-e -t 198.18.0.1:80 -r 198.18.1.1:8080 -w 5"),
        Command::EditServer(
            tcp80(),
            RealServerSpec {
                weight: 5,
                ..server("198.18.1.1", 80, Forward::Route)
            }
        )
    );
    assert_eq!(
        cmd("-d -t 198.18.0.1:80 -r 198.18.1.1"),
        Command::DeleteServer {
            service: tcp80(),
            addr: ip("198.18.1.1"),
            port: 80
        }
    );
    assert_eq!(
        cmd("--delete-server -t 198.18.0.1:80 -r 198.18.1.1:8080"),
        Command::DeleteServer {
            service: tcp80(),
            addr: ip("198.18.1.1"),
            port: 8080
        }
    );
}

// --- list -----------------------------------------------------------------------------------

#[test]
fn list_forms() {
    let numeric = ListOptions {
        numeric: true,
        ..ListOptions::default()
    };
    for line in ["-L -n", "-Ln", "-l -n", "-ln", "--list --numeric"] {
        assert_eq!(cmd(line), Command::List(numeric.clone()), "{line}");
    }
    assert_eq!(cmd("-L"), Command::List(ListOptions::default()));
    assert_eq!(cmd(""), Command::List(ListOptions::default()));
    assert_eq!(
        cmd("-L -n -t 198.18.0.1:80 --nosort"),
        Command::List(ListOptions {
            numeric: true,
            service: Some(tcp80()),
            sort: false,
            ..ListOptions::default()
        })
    );
    for line in [
        "-L -o json",
        "-Lo json",
        "-L --output json",
        "-L --output=json",
        "-Lnojson",
    ] {
        let want_numeric = line == "-Lnojson";
        assert_eq!(
            cmd(line),
            Command::List(ListOptions {
                numeric: want_numeric,
                output: OutputFormat::Json,
                ..ListOptions::default()
            }),
            "{line}"
        );
    }
    assert_eq!(cmd("-L -o text"), Command::List(ListOptions::default()));
}

#[test]
fn socket_help_and_version() {
    let inv = parse("--socket /tmp/u.sock -L -n").unwrap();
    assert_eq!(inv.socket, Some(PathBuf::from("/tmp/u.sock")));
    let inv = parse("-C --socket=/tmp/v.sock").unwrap();
    assert_eq!(
        (inv.command, inv.socket),
        (Command::Clear, Some(PathBuf::from("/tmp/v.sock")))
    );
    assert_eq!(
        parse("--socket /x").unwrap().command,
        Command::List(ListOptions::default())
    );
    for line in ["-h", "--help", "-A -t 198.18.0.1:80 --help"] {
        assert_eq!(cmd(line), Command::Help, "{line}");
    }
    assert_eq!(cmd("-v"), Command::Version);
    assert_eq!(cmd("--version"), Command::Version);
}

#[test]
fn inet_aton_forms() {
    assert_eq!(inet_aton("198.18.0.1"), Some(Ipv4Addr::new(198, 18, 0, 1)));
    assert_eq!(inet_aton("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
    assert_eq!(inet_aton("10.1.2"), Some(Ipv4Addr::new(10, 1, 0, 2)));
    assert_eq!(inet_aton("0x7f.0.0.01"), Some(Ipv4Addr::new(127, 0, 0, 1)));
    assert_eq!(inet_aton("010.0.0.1"), Some(Ipv4Addr::new(8, 0, 0, 1)));
    assert_eq!(inet_aton("3323068417"), Some(Ipv4Addr::new(198, 18, 0, 1)));
    for bad in [
        "256.0.0.1",
        "1.2.3.4.5",
        "1..2",
        "",
        "1.2.3.",
        "09.1.1.1",
        "a.b.c.d",
        "1.256.3",
    ] {
        assert_eq!(inet_aton(bad), None, "{bad}");
    }
}

// --- errors ---------------------------------------------------------------------------------

#[test]
fn the_first_option_must_be_a_command() {
    let e = parse("-n -L").unwrap_err();
    assert!(matches!(e, ParseError::NoCommand(_)));
    assert!(e.wants_try_help());
    assert_eq!(
        e.to_string(),
        "the first option must be a command (-A, -E, -D, -a, -e, -d, -C, -L, -S or -R), not '-n'"
    );
    assert!(matches!(parse("list"), Err(ParseError::NoCommand(_))));
    assert!(matches!(
        parse("-t 198.18.0.1:80 -A"),
        Err(ParseError::NoCommand(_))
    ));
}

#[test]
fn syntax_errors() {
    for (line, msg) in [
        ("-L --bogus", "--bogus: unknown option"),
        ("-Lq", "-q: unknown option"),
        ("-A -t", "-t: missing argument"),
        (
            "-A -t 198.18.0.1:80 --scheduler",
            "--scheduler: missing argument",
        ),
        ("--list=yes", "--list: option does not take an argument"),
    ] {
        let e = parse(line).unwrap_err();
        assert!(matches!(e, ParseError::Syntax(_)), "{line}: {e:?}");
        assert!(e.wants_try_help());
        assert_eq!(e.to_string(), msg, "{line}");
    }
}

#[test]
fn ipvsadm_errors() {
    for (line, msg) in [
        ("-A -L", "multiple commands specified"),
        (
            "-A -t 198.18.0.1:80 -s rr -s wrr",
            "multiple 'scheduler' options specified",
        ),
        (
            "-A -t 198.18.0.1:80 -u 198.18.0.1:53",
            "multiple 'service-address' options specified",
        ),
        (
            "-a -t 198.18.0.1:80 -r 198.18.1.1 -m -g",
            "multiple 'forwarding-method' options specified",
        ),
        (
            "-A -t 198.18.0.1:80 -n",
            "Illegal 'numeric' option with the 'add-service' command",
        ),
        (
            "-A -t 198.18.0.1:80 -r 198.18.1.1",
            "Illegal 'real-server' option with the 'add-service' command",
        ),
        (
            "-E -t 198.18.0.1:80 -w 2",
            "Illegal 'weight' option with the 'edit-service' command",
        ),
        (
            "-D -t 198.18.0.1:80 -s rr",
            "Illegal 'scheduler' option with the 'delete-service' command",
        ),
        ("-C -n", "Illegal 'numeric' option with the 'flush' command"),
        (
            "-L -s rr",
            "Illegal 'scheduler' option with the 'list' command",
        ),
        ("-L --ops", "Illegal 'ops' option with the 'list' command"),
        (
            "-A -t 198.18.0.1:80 --output json",
            "Illegal 'output' option with the 'add-service' command",
        ),
        (
            "-a -t 198.18.0.1:80 -r 198.18.1.1 -s rr",
            "Illegal 'scheduler' option with the 'add-server' command",
        ),
        (
            "-d -t 198.18.0.1:80 -r 198.18.1.1 -m",
            "Illegal 'forwarding-method' option with the 'delete-server' command",
        ),
        (
            "-e -t 198.18.0.1:80 -r 198.18.1.1 -p",
            "Illegal 'persistent' option with the 'edit-server' command",
        ),
        (
            "-A",
            "You need to supply the 'service-address' option for the 'add-service' command",
        ),
        (
            "-D -s rr",
            "You need to supply the 'service-address' option for the 'delete-service' command",
        ),
        (
            "-a -t 198.18.0.1:80 -m",
            "You need to supply the 'real-server' option for the 'add-server' command",
        ),
        (
            "-d -r 198.18.1.1",
            "You need to supply the 'service-address' option for the 'delete-server' command",
        ),
        (
            "-A -t 198.18.0.1:99999",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t 80",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t [fd00:1b5::1]",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t [198.18.0.1]:80",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t 198.18.0.1:nosuch",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -u 198.18.0.1:www",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t no.such.host.invalid:80",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t 198.18.0.1:",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-a -t 198.18.0.1:80 -r 198.18.1.1:x -m",
            "illegal real server address[:port] specified",
        ),
        (
            "-a -t 198.18.0.1:80 -r 198.18.1.1 -w 65536",
            "illegal weight specified",
        ),
        (
            "-a -t 198.18.0.1:80 -r 198.18.1.1 -w -1",
            "illegal weight specified",
        ),
        (
            "-a -t 198.18.0.1:80 -r 198.18.1.1 -x many",
            "illegal u_threshold specified",
        ),
        (
            "-a -t 198.18.0.1:80 -r 198.18.1.1 -y 2147483648",
            "illegal l_threshold specified",
        ),
        (
            "-A -t 198.18.0.1:80 -p 0",
            "invalid timeout value `0' specified",
        ),
        (
            "-A -t 198.18.0.1:80 -p 2678401",
            "invalid timeout value `2678401' specified",
        ),
        // -p takes a following word that does not start with '-', as popt does.
        (
            "-A -t 198.18.0.1:80 -p rr",
            "invalid timeout value `rr' specified",
        ),
        (
            "-A -t 198.18.0.1:0",
            "Zero port specified for non-persistent service",
        ),
        (
            "-E -t 198.18.0.1",
            "Zero port specified for non-persistent service",
        ),
        (
            "-A -t 198.18.0.1:80 -o",
            "One-Packet Scheduling is only for UDP virtual services",
        ),
        (
            "-a -t 198.18.0.1:80 -r fd00:1b5::a -m",
            "Different address family is allowed only for tunneling servers",
        ),
        (
            "-e -t [fd00:1b5::1]:80 -r 198.18.1.1",
            "Different address family is allowed only for tunneling servers",
        ),
        (
            "-A -t 198.18.0.1:80 -b bogus",
            "invalid scheduler flag `bogus'",
        ),
        (
            "-A -t 198.18.0.1:80 -b sh-port",
            "incompatible scheduler flag `sh-port'",
        ),
        (
            "-A -t 198.18.0.1:80 -s sh -b mh-port",
            "incompatible scheduler flag `mh-port'",
        ),
        (
            "-A -t 198.18.0.1:80 -p -M 255.0.255.0",
            "illegal virtual server persistent mask specified",
        ),
        (
            "-A -t 198.18.0.1:80 -p -M 24",
            "illegal virtual server persistent mask specified",
        ),
        (
            "-A -t [fd00:1b5::1]:80 -p -M 129",
            "illegal ipv6 netmask specified",
        ),
        (
            "-A -t [fd00:1b5::1]:80 -p -M 0",
            "illegal ipv6 netmask specified",
        ),
        ("-A -t 198.18.0.1:80 extra", "unexpected argument extra"),
        ("-L -- -n", "unexpected argument -n"),
        (
            "-L -o xml",
            "illegal output format `xml' specified (text or json)",
        ),
    ] {
        let e = parse(line).unwrap_err();
        assert!(matches!(e, ParseError::Invalid(_)), "{line}: {e:?}");
        assert!(!e.wants_try_help());
        assert_eq!(e.to_string(), msg, "{line}");
    }
}

#[test]
fn ipvsadm_features_not_implemented_yet_are_named() {
    for (line, msg) in [
        (
            "--start-daemon master",
            "the 'start-daemon' command is not supported by ulvsadm yet",
        ),
        (
            "-L --daemon",
            "option '--daemon' is not supported by ulvsadm yet",
        ),
        ("-A -f 1", "option '-f' is not supported by ulvsadm yet"),
    ] {
        let e = parse(line).unwrap_err();
        assert!(matches!(e, ParseError::Unsupported(_)), "{line}: {e:?}");
        assert_eq!(e.to_string(), msg, "{line}");
    }
}

#[test]
fn tunnel_options() {
    use ulvsadm::model::{TunnelCsum, TunnelKind, TunnelSpec};
    assert_eq!(
        cmd("-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type gue --tun-port 6080 --tun-csum"),
        Command::AddServer(
            tcp80(),
            RealServerSpec {
                tunnel: TunnelSpec {
                    kind: TunnelKind::Gue,
                    port: 6080,
                    csum: TunnelCsum::Csum,
                },
                ..server("198.18.1.1", 80, Forward::Tunnel)
            }
        )
    );
    assert_eq!(
        cmd("-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type gre --tun-nocsum"),
        Command::AddServer(
            tcp80(),
            RealServerSpec {
                tunnel: TunnelSpec {
                    kind: TunnelKind::Gre,
                    port: 0,
                    csum: TunnelCsum::None,
                },
                ..server("198.18.1.1", 80, Forward::Tunnel)
            }
        )
    );
    for bad in [
        "-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type gue",
        "-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type ipip --tun-csum",
        "-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type gre --tun-remcsum",
        "-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-port 6080",
        "-a -t 198.18.0.1:80 -r 198.18.1.1 -g --tun-type gre",
        "-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type vxlan",
        "-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-csum --tun-nocsum",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

// --- connection table: -Z, --set, -L --stats/--rate/--exact/-c/--timeout ---------------------

#[test]
fn zero_set_and_list_views() {
    use ulvsadm::parse::ListView;
    assert_eq!(cmd("-Z"), Command::Zero(None));
    assert_eq!(cmd("--zero -t 198.18.0.1:80"), Command::Zero(Some(tcp80())));
    assert_eq!(
        cmd("--set 900 120 300"),
        Command::SetTimeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );
    assert_eq!(
        cmd("--set 0 0 60"),
        Command::SetTimeouts {
            tcp: 0,
            tcp_fin: 0,
            udp: 60
        }
    );
    let view = |line: &str| match cmd(line) {
        Command::List(o) => (o.view, o.exact, o.numeric, o.service.is_some()),
        other => panic!("{line}: {other:?}"),
    };
    assert_eq!(view("-L -n --stats"), (ListView::Stats, false, true, false));
    assert_eq!(
        view("-L --rate --exact"),
        (ListView::Rate, true, false, false)
    );
    assert_eq!(
        view("-L -X --stats -t 198.18.0.1:80"),
        (ListView::Stats, true, false, true)
    );
    assert_eq!(view("-Lnc"), (ListView::Connections, false, true, false));
    assert_eq!(
        view("-L --connection"),
        (ListView::Connections, false, false, false)
    );
    assert_eq!(
        view("-L --timeout"),
        (ListView::Timeout, false, false, false)
    );
    assert_eq!(
        view("-L --stats --rate"),
        (ListView::Rate, false, false, false)
    );
}

#[test]
fn zero_set_and_list_view_errors() {
    for (line, msg) in [
        (
            "--set 900 120",
            "--set needs three timeout values: tcp tcpfin udp",
        ),
        (
            "--set 900 120 300 1",
            "--set needs three timeout values: tcp tcpfin udp",
        ),
        ("--set 900 x 300", "invalid timeout value `x' specified"),
        (
            "--set 900 120 2678401",
            "invalid timeout value `2678401' specified",
        ),
        (
            "--set 1 2 3 -n",
            "Illegal 'numeric' option with the 'set' command",
        ),
        ("-Z -n", "Illegal 'numeric' option with the 'zero' command"),
        (
            "-Z -t 198.18.0.1:80 -s rr",
            "Illegal 'scheduler' option with the 'zero' command",
        ),
        (
            "-L -c --timeout",
            "The option 'timeout' conflicts with the 'connection' option in the 'list' command",
        ),
        (
            "-L -c -t 198.18.0.1:80",
            "The option 'connection' conflicts with the 'service-address' option in the 'list' command",
        ),
        (
            "-A -t 198.18.0.1:80 --stats",
            "Illegal 'stats' option with the 'add-service' command",
        ),
    ] {
        let e = parse(line).unwrap_err();
        assert!(matches!(e, ParseError::Invalid(_)), "{line}: {e:?}");
        assert_eq!(e.to_string(), msg, "{line}");
    }
}

#[test]
fn man_and_completions_need_no_command() {
    assert_eq!(cmd("--man"), Command::Man);
    assert_eq!(
        cmd("--completions zsh"),
        Command::Completions(clap_complete::Shell::Zsh)
    );
    assert_eq!(
        cmd("--completions=fish"),
        Command::Completions(clap_complete::Shell::Fish)
    );
    assert!(parse("--completions").is_err());
}

#[test]
fn server_and_its_tls_options() {
    let inv = parse(
        "-L -n --server https://lb.example:9090 --tls-ca /etc/ulvs/ca.pem --tls-cert c.pem \
         --tls-key k.pem --token-file /etc/ulvs/token",
    )
    .unwrap();
    let remote = inv.remote.expect("remote");
    assert_eq!(remote.url, "https://lb.example:9090");
    assert_eq!(remote.tls_ca, PathBuf::from("/etc/ulvs/ca.pem"));
    assert_eq!(
        remote.client_identity,
        Some((PathBuf::from("c.pem"), PathBuf::from("k.pem")))
    );
    assert_eq!(remote.token_file, Some(PathBuf::from("/etc/ulvs/token")));
    assert_eq!(inv.socket, None);
    // Without a client certificate or token.
    let inv = parse("--server=https://[fd00:1b5::1]:9090 --tls-ca=ca.pem -C").unwrap();
    assert_eq!(inv.command, Command::Clear);
    let remote = inv.remote.expect("remote");
    assert_eq!((remote.client_identity, remote.token_file), (None, None));
    assert_eq!(parse("-L").unwrap().remote, None);

    for (line, msg) in [
        (
            "-L --server http://lb:9090 --tls-ca ca.pem",
            "--server needs an https:// URL (ulvsd serves TCP with TLS only), not `http://lb:9090'",
        ),
        (
            "-L --server https:// --tls-ca ca.pem",
            "--server `https://' has no host",
        ),
        (
            "-L --server https://lb:9090",
            "--server needs --tls-ca (the CA certificates that ulvsd's certificate chains to)",
        ),
        (
            "-L --server https://lb:9090 --tls-ca ca.pem --tls-cert c.pem",
            "--tls-cert and --tls-key go together",
        ),
        (
            "-L --tls-ca ca.pem",
            "--tls-ca, --tls-cert, --tls-key and --token-file need --server",
        ),
        (
            "-L --token-file t",
            "--tls-ca, --tls-cert, --tls-key and --token-file need --server",
        ),
        (
            "-L --socket /s --server https://lb:9090 --tls-ca ca.pem",
            "--socket and --server cannot be used together",
        ),
    ] {
        let e = parse(line).expect_err(line);
        assert!(matches!(e, ParseError::Invalid(_)), "{line}: {e:?}");
        assert_eq!(e.to_string(), msg, "{line}");
    }
}

#[test]
fn thresholds_and_persistent_conn_views() {
    use ulvsadm::parse::ListView;
    let view = |line: &str| match cmd(line) {
        Command::List(o) => o.view,
        other => panic!("{line}: {other:?}"),
    };
    assert_eq!(view("-L --thresholds"), ListView::Thresholds);
    assert_eq!(view("-Ln --persistent-conn"), ListView::PersistentConn);
    assert_eq!(
        view("-L --thresholds --persistent-conn"),
        ListView::Thresholds
    );
    // ipvsadm's precedence: stats and rate before thresholds.
    assert_eq!(view("-L --stats --thresholds"), ListView::Stats);
    assert_eq!(view("-L --rate --persistent-conn"), ListView::Rate);
    assert_eq!(
        cmd("-L -t 198.18.0.1:80 --thresholds -o json"),
        Command::List(ListOptions {
            service: Some(key(Protocol::Tcp, "198.18.0.1", 80)),
            output: OutputFormat::Json,
            view: ListView::Thresholds,
            ..ListOptions::default()
        })
    );
    for (line, msg) in [
        (
            "-A -t 198.18.0.1:80 --thresholds",
            "Illegal 'thresholds' option with the 'add-service' command",
        ),
        (
            "-S --persistent-conn",
            "Illegal 'persistent-conn' option with the 'save' command",
        ),
        (
            "-L --thresholds --thresholds",
            "multiple 'thresholds' options specified",
        ),
    ] {
        assert_eq!(parse(line).expect_err(line).to_string(), msg, "{line}");
    }
    let e = parse("-Lc --persistent-conn").expect_err("pe columns");
    assert!(matches!(e, ParseError::Unsupported(_)), "{e:?}");
}

#[test]
fn local_address_commands() {
    assert_eq!(
        cmd("-P -t 198.18.0.1:80 -z 198.18.2.1"),
        Command::AddLocalAddress(tcp80(), ip("198.18.2.1"))
    );
    assert_eq!(
        cmd("--del-laddr --tcp-service 198.18.0.1:80 --laddr=198.18.2.1"),
        Command::DeleteLocalAddress(tcp80(), ip("198.18.2.1"))
    );
    assert_eq!(
        cmd("-G -t 198.18.0.1:80"),
        Command::GetLocalAddresses(tcp80())
    );
    assert_eq!(
        cmd("-P -u [fd00:1b5::80]:53 -z fd00:1b5:2::1"),
        Command::AddLocalAddress(key(Protocol::Udp, "fd00:1b5::80", 53), ip("fd00:1b5:2::1"))
    );
    for bad in [
        "-P -t 198.18.0.1:80",
        "-Q -z 198.18.2.1",
        "-P -t 198.18.0.1:80 -z nonsense",
        "-P -t 198.18.0.1:80 -z fd00:1b5::1",
        "-G -t 198.18.0.1:80 -z 198.18.2.1",
        "-A -t 198.18.0.1:80 -z 198.18.2.1",
    ] {
        assert!(
            matches!(parse(bad), Err(ParseError::Invalid(_))),
            "{bad:?} should be refused: {:?}",
            parse(bad)
        );
    }
}
