//! The connection-table RPCs end to end over a unix socket against a real engine: timeouts,
//! conntrack settings, ListConnections in batches, GetStats, ZeroCounters, rates in
//! ListServices.

use std::sync::Arc;

use anyhow::{Context, Result};
use tonic::Code;
use tonic::transport::Channel;
use ulvs_control::EngineBackend;
use ulvs_engine::{Engine, EngineOptions, Timestamp, Verdict};
use ulvs_proto::v1 as pb;
use ulvs_proto::v1::ulvs_client::UlvsClient;
use ulvs_testkit::{Server, process};

const TABLE: usize = 5000;

/// The control service over a real engine with room for [`TABLE`] connections, on a temp-dir
/// socket.
async fn start() -> Result<Server> {
    let engine = Arc::new(Engine::new(EngineOptions {
        max_connections: TABLE,
        ..EngineOptions::default()
    }));
    Server::unix(EngineBackend::new(engine, 4096)).await
}

fn key(port: u32) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: pb::Protocol::Tcp as i32,
        address: "198.18.1.1".into(),
        port,
    }
}

async fn add_service(c: &mut UlvsClient<Channel>) -> Result<()> {
    c.add_service(pb::AddServiceRequest {
        service: Some(pb::ServiceSpec {
            key: Some(key(80)),
            scheduler: "rr".into(),
            ..Default::default()
        }),
    })
    .await
    .context("AddService")?;
    c.add_real_server(pb::AddRealServerRequest {
        service: Some(key(80)),
        real_server: Some(pb::RealServerSpec {
            address: "198.19.0.11".into(),
            port: 8080,
            forward: pb::ForwardMethod::Masq as i32,
            weight: 1,
            ..Default::default()
        }),
        expected_generation: 0,
    })
    .await
    .context("AddRealServer")?;
    Ok(())
}

fn tcp(sport: u16, syn: bool) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ipv4([198, 18, 0, 10], [198, 18, 1, 1], 64)
        .tcp(sport, 80, 1, 65535);
    b = if syn { b.syn() } else { b.ack(1) };
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("build");
    out
}

#[tokio::test]
async fn timeouts_and_settings() -> Result<()> {
    let d = start().await?;
    let mut c = d.client().await?;
    let t = c
        .get_timeouts(pb::GetTimeoutsRequest {})
        .await?
        .into_inner()
        .timeouts
        .unwrap();
    assert_eq!((t.tcp, t.tcp_fin, t.udp), (900, 120, 300));
    // 0 keeps a value, as ipvsadm --set.
    let t = c
        .set_timeouts(pb::SetTimeoutsRequest {
            timeouts: Some(pb::Timeouts {
                tcp: 3600,
                tcp_fin: 0,
                udp: 60,
            }),
        })
        .await?
        .into_inner()
        .timeouts
        .unwrap();
    assert_eq!((t.tcp, t.tcp_fin, t.udp), (3600, 120, 60));
    assert_eq!(d.engine().timeouts().udp_ms, 60_000);

    let s = c
        .get_conntrack_settings(pb::GetConntrackSettingsRequest {})
        .await?
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        s,
        pb::ConntrackSettings {
            max_connections: TABLE as u64,
            expire_nodest_conn: true,
            expire_quiescent_template: true,
            conn_reuse_reschedule: true,
        }
    );
    let s = c
        .set_conntrack_settings(pb::SetConntrackSettingsRequest {
            settings: Some(pb::ConntrackSettings {
                expire_nodest_conn: false,
                conn_reuse_reschedule: true,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .settings
        .unwrap();
    assert!(!s.expire_nodest_conn && !s.expire_quiescent_template && s.conn_reuse_reschedule);
    assert!(!d.engine().conntrack_settings().expire_nodest_conn);
    let err = c
        .set_conntrack_settings(pb::SetConntrackSettingsRequest {
            settings: Some(pb::ConntrackSettings {
                max_connections: 7,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("settings.max_connections"),
        "{err:?}"
    );
    drop(c);
    d.stop().await
}

#[tokio::test]
async fn connections_stats_zero_and_rates() -> Result<()> {
    let d = start().await?;
    let mut c = d.client().await?;
    add_service(&mut c).await?;
    // The estimator's first tick: the baseline.
    d.engine().estimate(Timestamp(0));
    let n = 1500u16;
    for p in 0..n {
        assert_eq!(
            process(d.engine(), 1_000, &tcp(10_000 + p, true)),
            Verdict::Forward
        );
    }
    assert_eq!(
        process(d.engine(), 1_000, &tcp(10_000, false)),
        Verdict::Forward
    );
    d.engine().expire(Timestamp(1_000));

    let mut stream = c
        .list_connections(pb::ListConnectionsRequest::default())
        .await?
        .into_inner();
    let mut batches = Vec::new();
    while let Some(m) = stream.message().await? {
        batches.push(m.connections);
    }
    assert!(batches.len() >= 2, "streamed in batches");
    assert!(batches.iter().all(|b| b.len() <= 1024));
    let all: Vec<_> = batches.into_iter().flatten().collect();
    assert_eq!(all.len(), usize::from(n));
    let est = all.iter().find(|x| x.client_port == 10_000).unwrap();
    assert_eq!(est.state, "ESTABLISHED");
    assert_eq!(est.expires_in_ms, 900_000);
    assert_eq!((est.in_packets, est.out_packets), (2, 0));
    assert_eq!(est.real_server_address, "198.19.0.11");
    assert_eq!(est.forward, pb::ForwardMethod::Masq as i32);
    assert_eq!(
        all.iter().filter(|x| x.state == "SYN_RECV").count(),
        usize::from(n) - 1
    );
    // A filter on another service lists nothing.
    let mut stream = c
        .list_connections(pb::ListConnectionsRequest {
            service: Some(key(81)),
            include_templates: false,
        })
        .await?
        .into_inner();
    assert!(stream.message().await?.is_none());

    let s = c.get_stats(pb::GetStatsRequest {}).await?.into_inner();
    assert_eq!(s.connections, u64::from(n));
    assert_eq!(s.max_connections, TABLE as u64);
    let t = s.totals.unwrap();
    assert_eq!(
        (t.connections, t.in_packets),
        (u64::from(n), u64::from(n) + 1)
    );
    assert!(
        s.drops
            .iter()
            .any(|x| x.reason == "table_full" && x.packets == 0)
    );

    // Rates after estimator ticks: 1501 packets in the first 2 s, then nothing.
    d.engine().estimate(Timestamp(2_000));
    let svc = c
        .list_services(pb::ListServicesRequest::default())
        .await?
        .into_inner()
        .services
        .remove(0);
    let r = svc.rates.unwrap();
    // (1501 / 2 s) / 4 = 187.6 -> 188; (1500 / 2) / 4 = 187.5 -> 188.
    assert_eq!(
        (r.in_packets_per_second, r.connections_per_second),
        (188, 188)
    );
    assert_eq!(
        svc.real_servers[0].rates.unwrap().in_packets_per_second,
        188
    );

    c.zero_counters(pb::ZeroCountersRequest { service: None })
        .await?;
    let s = c.get_stats(pb::GetStatsRequest {}).await?.into_inner();
    assert_eq!(s.totals.unwrap(), pb::Stats::default());
    assert_eq!(s.rates.unwrap(), pb::Rates::default());
    assert_eq!(s.connections, u64::from(n), "zeroing keeps connections");
    let err = c
        .zero_counters(pb::ZeroCountersRequest {
            service: Some(key(81)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    drop(c);
    d.stop().await
}
