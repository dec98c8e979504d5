//! Golden tests: fixed `ulvs.v1` data to the exact text of ipvsadm's `-L --stats`, `--rate`
//! (`--exact`), `--thresholds`, `--persistent-conn`, `-c` and `--timeout` layouts, and to the
//! JSON of every listing (`-o json`).

use ulvs_proto::v1 as pb;
use ulvsadm::counters::{self, ServerColumns};
use ulvsadm::format;
use ulvsadm::format::ListStyle;
use ulvsadm::names::StaticNames;

const NUMERIC: ListStyle = ListStyle {
    numeric: true,
    sort: true,
};

fn stats(c: u64, ip: u64, op: u64, ib: u64, ob: u64) -> Option<pb::Stats> {
    Some(pb::Stats {
        connections: c,
        in_packets: ip,
        out_packets: op,
        in_bytes: ib,
        out_bytes: ob,
    })
}

fn rates(c: u64, ip: u64, op: u64, ib: u64, ob: u64) -> Option<pb::Rates> {
    Some(pb::Rates {
        connections_per_second: c,
        in_packets_per_second: ip,
        out_packets_per_second: op,
        in_bytes_per_second: ib,
        out_bytes_per_second: ob,
    })
}

fn service(
    address: &str,
    port: u32,
    s: Option<pb::Stats>,
    r: Option<pb::Rates>,
    rs: Vec<pb::RealServer>,
) -> pb::Service {
    pb::Service {
        spec: Some(pb::ServiceSpec {
            key: Some(pb::ServiceKey {
                protocol: pb::Protocol::Tcp as i32,
                address: address.into(),
                port,
            }),
            scheduler: "rr".into(),
            ..Default::default()
        }),
        real_servers: rs,
        stats: s,
        rates: r,
        ..Default::default()
    }
}

fn rs(address: &str, port: u32, s: Option<pb::Stats>, r: Option<pb::Rates>) -> pb::RealServer {
    pb::RealServer {
        spec: Some(pb::RealServerSpec {
            address: address.into(),
            port,
            forward: pb::ForwardMethod::Masq as i32,
            weight: 1,
            ..Default::default()
        }),
        stats: s,
        rates: r,
        ..Default::default()
    }
}

fn info() -> pb::GetInfoResponse {
    pb::GetInfoResponse {
        ipvs_version: "1.2.1".into(),
        connection_table_size: 4096,
        ..Default::default()
    }
}

#[test]
fn stats_matches_the_reference_example() {
    let s = stats(15, 120, 98, 9200, 150000);
    let table = [service(
        "207.175.44.110",
        80,
        s,
        None,
        vec![rs("192.168.10.1", 80, s, None)],
    )];
    let text =
        counters::counters_text(None, &table, NUMERIC, false, false, &StaticNames::default());
    assert_eq!(
        text,
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
         \x20 -> RemoteAddress:Port\n\
         TCP  207.175.44.110:80                  15      120       98     9200   150000\n\
         \x20 -> 192.168.10.1:80                    15      120       98     9200   150000\n"
    );
}

#[test]
fn stats_shortens_large_numbers_unless_exact() {
    let big = stats(
        99_999_999,
        100_000_000,
        1_234_567_890,
        123_456_789_012,
        123_456_789_012_345,
    );
    let table = [service("198.18.1.1", 80, big, None, vec![])];
    let names = StaticNames::default();
    let text = counters::counters_text(Some(&info()), &table, NUMERIC, false, false, &names);
    assert_eq!(
        text,
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
         \x20 -> RemoteAddress:Port\n\
         TCP  198.18.1.1:80                99999999  100000K    1234M     123G     123T\n"
    );
    let text = counters::counters_text(None, &table, NUMERIC, false, true, &names);
    assert_eq!(
        text.lines().nth(2).unwrap(),
        "TCP  198.18.1.1:80                99999999 100000000 1234567890 123456789012 123456789012345"
    );
}

#[test]
fn rate_layout() {
    let table = [service(
        "198.18.1.1",
        80,
        None,
        rates(12, 340, 290, 45_000, 1_234_567_890),
        vec![rs(
            "198.19.0.11",
            8080,
            None,
            rates(6, 170, 145, 22_500, 617_283_945),
        )],
    )];
    let text = counters::counters_text(None, &table, NUMERIC, true, false, &StaticNames::default());
    assert_eq!(
        text,
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n\
         \x20 -> RemoteAddress:Port\n\
         TCP  198.18.1.1:80                      12      340      290    45000    1234M\n\
         \x20 -> 198.19.0.11:8080                    6      170      145    22500  617283K\n"
    );
}

#[test]
fn connection_entries() {
    let conn = |proto: pb::Protocol, state: &str, ms: u64, cport: u32| pb::Connection {
        protocol: proto as i32,
        client_address: "198.18.0.10".into(),
        client_port: cport,
        virtual_address: "198.18.1.1".into(),
        virtual_port: 80,
        real_server_address: "198.19.0.11".into(),
        real_server_port: 8080,
        state: state.into(),
        expires_in_ms: ms,
        ..Default::default()
    };
    let text = counters::connections_text(
        &[
            conn(pb::Protocol::Tcp, "ESTABLISHED", 899_500, 40000),
            conn(pb::Protocol::Tcp, "SYN_RECV", 59_000, 40001),
            conn(pb::Protocol::Udp, "UDP", 5_000, 5353),
        ],
        true,
        &StaticNames::default(),
    );
    assert_eq!(
        text,
        "IPVS connection entries\n\
         pro expire state       source             virtual            destination\n\
         TCP 14:59  ESTABLISHED 198.18.0.10:40000  198.18.1.1:80      198.19.0.11:8080\n\
         TCP 00:59  SYN_RECV    198.18.0.10:40001  198.18.1.1:80      198.19.0.11:8080\n\
         UDP 00:05  UDP         198.18.0.10:5353   198.18.1.1:80      198.19.0.11:8080\n"
    );
}

#[test]
fn timeout_line() {
    let t = pb::Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    assert_eq!(
        counters::timeout_text(&t),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
}

/// A persistent service (persistence shows on the plain service line) with two real servers
/// that have thresholds, weights and connections.
fn threshold_table() -> Vec<pb::Service> {
    let server =
        |address: &str, weight, upper, lower, active, inactive, persistent| pb::RealServer {
            spec: Some(pb::RealServerSpec {
                address: address.into(),
                port: 8080,
                forward: pb::ForwardMethod::Masq as i32,
                weight,
                upper_threshold: upper,
                lower_threshold: lower,
                ..Default::default()
            }),
            active_connections: active,
            inactive_connections: inactive,
            persistent_connections: persistent,
            ..Default::default()
        };
    let mut svc = service(
        "198.18.1.1",
        80,
        None,
        None,
        // Unsorted on purpose: the listing sorts real servers.
        vec![
            server("198.19.0.12", 1, 0, 0, 0, 12, 0),
            server("198.19.0.11", 3, 100, 50, 7, 3, 2),
        ],
    );
    if let Some(spec) = svc.spec.as_mut() {
        spec.persistence_timeout = 300;
    }
    vec![svc]
}

#[test]
fn thresholds_layout() {
    let text = counters::server_columns_text(
        Some(&info()),
        &threshold_table(),
        NUMERIC,
        ServerColumns::Thresholds,
        &StaticNames::default(),
    );
    assert_eq!(
        text,
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n\
         \x20 -> RemoteAddress:Port\n\
         TCP  198.18.1.1:80 rr persistent 300\n\
         \x20 -> 198.19.0.11:8080             100        50         7          3         \n\
         \x20 -> 198.19.0.12:8080             0          0          0          12        \n"
    );
}

#[test]
fn persistent_conn_layout() {
    let text = counters::server_columns_text(
        None,
        &threshold_table(),
        NUMERIC,
        ServerColumns::PersistentConn,
        &StaticNames::default(),
    );
    assert_eq!(
        text,
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n\
         \x20 -> RemoteAddress:Port\n\
         TCP  198.18.1.1:80 rr persistent 300\n\
         \x20 -> 198.19.0.11:8080             3         2           7          3         \n\
         \x20 -> 198.19.0.12:8080             1         0           0          12        \n"
    );
}

#[test]
fn service_json_carries_stats_rates_thresholds_and_persistent_connections() {
    let mut table = threshold_table();
    table[0].stats = stats(15, 120, 98, 9200, 150000);
    table[0].rates = rates(12, 340, 290, 45_000, 1_234_567_890);
    let v: serde_json::Value =
        serde_json::from_str(&format::list_json(&table, true)).expect("valid JSON");
    let svc = &v["services"][0];
    assert_eq!(svc["stats"]["connections"], 15);
    assert_eq!(svc["stats"]["out_bytes"], 150000);
    assert_eq!(svc["rates"]["connections_per_second"], 12);
    assert_eq!(svc["rates"]["out_bytes_per_second"], 1_234_567_890u64);
    assert_eq!(svc["spec"]["persistence_timeout"], 300);
    let first = &svc["real_servers"][0];
    assert_eq!(first["spec"]["address"], "198.19.0.11");
    assert_eq!(first["spec"]["upper_threshold"], 100);
    assert_eq!(first["spec"]["lower_threshold"], 50);
    assert_eq!(first["spec"]["weight"], 3);
    assert_eq!(first["persistent_connections"], 2);
    assert_eq!(first["active_connections"], 7);
    assert_eq!(first["rates"]["in_packets_per_second"], 0);
}

#[test]
fn connections_and_timeouts_as_json() {
    let conn = pb::Connection {
        protocol: pb::Protocol::Tcp as i32,
        client_address: "198.18.0.10".into(),
        client_port: 40000,
        virtual_address: "198.18.1.1".into(),
        virtual_port: 80,
        real_server_address: "198.19.0.11".into(),
        real_server_port: 8080,
        forward: pb::ForwardMethod::Masq as i32,
        state: "ESTABLISHED".into(),
        expires_in_ms: 899_500,
        ..Default::default()
    };
    let v: serde_json::Value =
        serde_json::from_str(&counters::connections_json(&[conn])).expect("valid JSON");
    assert_eq!(
        v,
        serde_json::json!({"connections": [{
            "protocol": "PROTOCOL_TCP",
            "client_address": "198.18.0.10",
            "client_port": 40000,
            "virtual_address": "198.18.1.1",
            "virtual_port": 80,
            "local_address": "",
            "local_port": 0,
            "real_server_address": "198.19.0.11",
            "real_server_port": 8080,
            "forward": "FORWARD_METHOD_MASQ",
            "state": "ESTABLISHED",
            "expires_in_ms": 899500,
            "template": false,
        }]})
    );
    let t = pb::Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    assert_eq!(
        counters::timeout_json(&t),
        "{\n  \"timeouts\": {\n    \"tcp\": 900,\n    \"tcp_fin\": 120,\n    \"udp\": 300\n  }\n}\n"
    );
}
