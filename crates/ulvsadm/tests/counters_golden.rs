//! Golden tests: fixed `ulvs.v1` data to the exact text of ipvsadm's `-L --stats`, `--rate`
//! (`--exact`), `-c` and `--timeout` layouts.

use ulvs_proto::v1 as pb;
use ulvsadm::counters;
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
