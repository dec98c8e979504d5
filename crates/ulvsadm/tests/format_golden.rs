//! Golden tests: fixed `ulvs.v1` data to the exact text of ipvsadm's `-L` layouts, and JSON.

use std::collections::HashMap;

use ulvs_proto::v1 as pb;
use ulvsadm::format::{self, ListStyle};
use ulvsadm::names::{NameTables, StaticNames};

fn key(protocol: pb::Protocol, address: &str, port: u32) -> Option<pb::ServiceKey> {
    Some(pb::ServiceKey {
        protocol: protocol as i32,
        address: address.into(),
        port,
    })
}

fn rs(
    address: &str,
    port: u32,
    forward: pb::ForwardMethod,
    weight: u32,
    active: u32,
    inactive: u32,
) -> pb::RealServer {
    pb::RealServer {
        spec: Some(pb::RealServerSpec {
            address: address.into(),
            port,
            forward: forward as i32,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
            ..Default::default()
        }),
        active_connections: active,
        inactive_connections: inactive,
        persistent_connections: 0,
        stats: None,
        ..Default::default()
    }
}

fn svc(
    k: Option<pb::ServiceKey>,
    scheduler: &str,
    flags: &[&str],
    persistence: (u32, u32),
    one_packet: bool,
    real_servers: Vec<pb::RealServer>,
) -> pb::Service {
    pb::Service {
        spec: Some(pb::ServiceSpec {
            key: k,
            scheduler: scheduler.into(),
            scheduler_flags: flags.iter().map(|f| f.to_string()).collect(),
            persistence_timeout: persistence.0,
            persistence_prefix_len: persistence.1,
            one_packet,
            labels: HashMap::new(),
            ..Default::default()
        }),
        real_servers,
        stats: None,
        ..Default::default()
    }
}

/// Deliberately out of order, to check the sort.
fn table() -> Vec<pb::Service> {
    use pb::ForwardMethod::*;
    use pb::Protocol::*;
    vec![
        svc(
            key(Tcp, "fd00:1b5::1", 443),
            "mh",
            &["mh-port"],
            (360, 64),
            false,
            vec![
                rs("fd00:1b5::a", 8443, Fullnat, 65535, u32::MAX, 7),
                rs("198.18.1.7", 443, Tunnel, 2, 0, 0),
            ],
        ),
        svc(
            key(Udp, "198.18.0.1", 53),
            "sh",
            &["sh-port", "sh-fallback"],
            (300, 24),
            true,
            vec![rs("198.18.1.5", 53, Route, 1, 0, 0)],
        ),
        svc(
            key(Tcp, "198.18.0.1", 80),
            "rr",
            &[],
            (0, 0),
            false,
            vec![
                rs("198.18.1.10", 8080, Masq, 0, 1, 40),
                rs("198.18.1.2", 80, Masq, 1, 3, 12),
            ],
        ),
        // 10.20.0.1 and 198.18.0.1 differ by more than 2^31: libipvs would sort them backwards.
        svc(
            key(Tcp, "10.20.0.1", 8080),
            "wlc",
            &[],
            (0, 0),
            false,
            vec![],
        ),
    ]
}

fn info() -> pb::GetInfoResponse {
    pb::GetInfoResponse {
        version: "0.1.0".into(),
        ipvs_version: "1.2.1".into(),
        connection_table_size: 4096,
        devices: vec!["ulvs0".into()],
        ..Default::default()
    }
}

const NUMERIC: ListStyle = ListStyle {
    numeric: true,
    sort: true,
};

#[test]
fn list_numeric_matches_ipvsadm_byte_for_byte() {
    let text = format::list_text(Some(&info()), &table(), NUMERIC, &StaticNames::default());
    let expected = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        "TCP  10.20.0.1:8080 wlc\n",
        "TCP  198.18.0.1:80 rr\n",
        "  -> 198.18.1.2:80                Masq    1      3          12        \n",
        "  -> 198.18.1.10:8080             Masq    0      1          40        \n",
        "UDP  198.18.0.1:53 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0 ops\n",
        "  -> 198.18.1.5:53                Route   1      0          0         \n",
        "TCP  [fd00:1b5::1]:443 mh (mh-port) persistent 360 mask 64\n",
        "  -> 198.18.1.7:443               Tunnel  2      0          0         \n",
        "  -> [fd00:1b5::a]:8443           FullNat 65535  4294967295 7         \n",
    );
    assert_eq!(text, expected);
}

#[test]
fn empty_table_prints_header_and_titles() {
    let text = format::list_text(Some(&info()), &[], NUMERIC, &StaticNames::default());
    assert_eq!(
        text,
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );
}

#[test]
fn nosort_keeps_the_daemon_order() {
    let style = ListStyle {
        numeric: true,
        sort: false,
    };
    let text = format::list_text(None, &table(), style, &StaticNames::default());
    let service_lines: Vec<&str> = text
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with("  ->"))
        .collect();
    assert_eq!(
        service_lines,
        [
            "TCP  [fd00:1b5::1]:443 mh (mh-port) persistent 360 mask 64",
            "UDP  198.18.0.1:53 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0 ops",
            "TCP  198.18.0.1:80 rr",
            "TCP  10.20.0.1:8080 wlc",
        ]
    );
    assert!(text.contains("  -> [fd00:1b5::a]:8443           FullNat"));
}

#[test]
fn generic_flags_default_mask_and_one_packet_without_persistence() {
    let s = svc(
        key(pb::Protocol::Udp, "198.18.0.9", 5353),
        "wrr",
        &["flag-3", "flag-1"],
        (0, 24),
        true,
        vec![],
    );
    let spec = s.spec.unwrap();
    // The mask is shown only with persistence, and /32 is never shown.
    assert_eq!(
        format::service_line(&spec, true, &StaticNames::default()),
        "UDP  198.18.0.9:5353 wrr (flag-1,flag-3) ops"
    );
    let mut p = spec.clone();
    p.persistence_timeout = 60;
    p.persistence_prefix_len = 32;
    p.one_packet = false;
    p.scheduler_flags.clear();
    assert_eq!(
        format::service_line(&p, true, &StaticNames::default()),
        "UDP  198.18.0.9:5353 wrr persistent 60"
    );
}

const SERVICES: &str = "http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\nhttp-alt 8080/tcp\n";
const HOSTS: &str = "\
198.18.0.1 vip.example
198.18.1.2 a-very-long-real-server-host-name.example
198.18.1.10 rs10.example
fd00:1b5::1 vip6.example
10.20.0.1 an-extremely-long-virtual-service-host-name.example
";

#[test]
fn list_with_names_uses_services_and_hosts_and_cuts_like_ipvsadm() {
    let names = StaticNames(NameTables::parse(SERVICES, HOSTS));
    let style = ListStyle {
        numeric: false,
        sort: true,
    };
    let text = format::list_text(Some(&info()), &table(), style, &names);
    let expected = concat!(
        "IP Virtual Server version 1.2.1 (size=4096)\n",
        "Prot LocalAddress:Port Scheduler Flags\n",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        // "%-4s %s" cut to 33 bytes for IPv4.
        "TCP  an-extremely-long-virtual-se wlc\n",
        "TCP  vip.example:http rr\n",
        // The IPv4 real-server name is cut to 28 bytes.
        "  -> a-very-long-real-server-host Masq    1      3          12        \n",
        "  -> rs10.example:http-alt        Masq    0      1          40        \n",
        "UDP  vip.example:domain sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0 ops\n",
        "  -> 198.18.1.5:domain            Route   1      0          0         \n",
        // IPv6 names are bracketed and never cut; ports use the service's protocol.
        "TCP  [vip6.example]:https mh (mh-port) persistent 360 mask 64\n",
        "  -> 198.18.1.7:https             Tunnel  2      0          0         \n",
        "  -> [fd00:1b5::a]:8443           FullNat 65535  4294967295 7         \n",
    );
    assert_eq!(text, expected);
}

#[test]
fn json_carries_the_list_services_data_in_text_order() {
    let text = format::list_json(&table(), true);
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let services = v["services"].as_array().expect("services array");
    assert_eq!(services.len(), 4);
    assert_eq!(services[0]["spec"]["key"]["address"], "10.20.0.1");
    let udp = &services[2];
    assert_eq!(udp["spec"]["key"]["protocol"], "PROTOCOL_UDP");
    assert_eq!(udp["spec"]["key"]["port"], 53);
    assert_eq!(udp["spec"]["scheduler"], "sh");
    assert_eq!(
        udp["spec"]["scheduler_flags"],
        serde_json::json!(["sh-port", "sh-fallback"])
    );
    assert_eq!(udp["spec"]["persistence_timeout"], 300);
    assert_eq!(udp["spec"]["persistence_prefix_len"], 24);
    assert_eq!(udp["spec"]["one_packet"], true);
    let v6 = &services[3];
    let rs = v6["real_servers"].as_array().expect("real_servers");
    assert_eq!(rs[0]["spec"]["address"], "198.18.1.7");
    assert_eq!(rs[1]["spec"]["forward"], "FORWARD_METHOD_FULLNAT");
    assert_eq!(rs[1]["active_connections"], u64::from(u32::MAX));
    assert_eq!(rs[1]["stats"]["connections"], 0);
    assert!(text.ends_with("}\n"));
}
