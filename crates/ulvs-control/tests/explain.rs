//! The Explain RPC and persistence templates in ListConnections, through the service's gRPC
//! trait over an `EngineBackend` with a real engine.

use std::sync::Arc;

use anyhow::Result;
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use ulvs_control::{ControlService, EngineBackend};
use ulvs_engine::{Engine, EngineOptions, Verdict};
use ulvs_proto::v1 as pb;
use ulvs_proto::v1::ulvs_server::Ulvs;
use ulvs_testkit::{process, syn};

fn key(port: u32) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: pb::Protocol::Tcp as i32,
        address: "198.18.0.10".into(),
        port,
    }
}

async fn setup() -> Result<(Arc<Engine>, ControlService<EngineBackend>)> {
    let engine = Arc::new(Engine::new(EngineOptions {
        max_connections: 1024,
        ..EngineOptions::default()
    }));
    let svc = ControlService::new(EngineBackend::new(engine.clone(), 1024));
    svc.add_service(Request::new(pb::AddServiceRequest {
        service: Some(pb::ServiceSpec {
            key: Some(key(80)),
            scheduler: "rr".into(),
            persistence_timeout: 300,
            persistence_prefix_len: 24,
            ..Default::default()
        }),
    }))
    .await?;
    for (addr, w) in [("198.18.1.1", 1), ("198.18.1.2", 1), ("198.18.1.3", 0)] {
        svc.add_real_server(Request::new(pb::AddRealServerRequest {
            service: Some(key(80)),
            real_server: Some(pb::RealServerSpec {
                address: addr.into(),
                port: 8080,
                forward: pb::ForwardMethod::Masq as i32,
                weight: w,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await?;
    }
    Ok((engine, svc))
}

async fn explain(
    svc: &ControlService<EngineBackend>,
    client: &str,
    port: u32,
) -> Result<pb::ExplainResponse, tonic::Status> {
    svc.explain(Request::new(pb::ExplainRequest {
        service: Some(key(80)),
        client_address: client.into(),
        client_port: port,
    }))
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn explain_schedules_then_reports_the_template() -> Result<()> {
    let (engine, svc) = setup().await?;
    let x = explain(&svc, "198.18.2.1", 40000).await?;
    assert_eq!(x.outcome, pb::explain_response::Outcome::Scheduled as i32);
    assert_eq!(
        (x.real_server_address.as_str(), x.real_server_port),
        ("198.18.1.1", 8080)
    );
    assert_eq!(x.scheduler, "rr");
    assert!(
        x.reasons.iter().any(|r| r.contains("quiescent")),
        "{:?}",
        x.reasons
    );

    // Real traffic creates the template explain predicted.
    let v = process(
        &engine,
        1,
        &syn([198, 18, 2, 1], 40000, [198, 18, 0, 10], 80),
    );
    assert_eq!(v, Verdict::Forward);

    // Another host of the same /24 now hits the template.
    let x = explain(&svc, "198.18.2.77", 1).await?;
    assert_eq!(x.outcome, pb::explain_response::Outcome::Persistence as i32);
    assert_eq!(x.real_server_address, "198.18.1.1");

    let mut stream = svc
        .list_connections(Request::new(pb::ListConnectionsRequest {
            include_templates: true,
            ..Default::default()
        }))
        .await?
        .into_inner();
    let mut all = Vec::new();
    while let Some(batch) = stream.next().await {
        all.extend(batch?.connections);
    }
    let templates: Vec<_> = all.iter().filter(|c| c.template).collect();
    assert_eq!(templates.len(), 1, "{all:?}");
    assert_eq!(templates[0].client_address, "198.18.2.0");
    assert_eq!(templates[0].state, "NONE");
    assert_eq!(all.len(), 2);

    // The ListServices counters show the template as a persistent connection.
    let services = svc
        .list_services(Request::new(pb::ListServicesRequest::default()))
        .await?
        .into_inner()
        .services;
    let persistent: Vec<u32> = services[0]
        .real_servers
        .iter()
        .map(|r| r.persistent_connections)
        .collect();
    assert_eq!(persistent, vec![1, 0, 0]);
    Ok(())
}

#[tokio::test]
async fn explain_refuses_bad_questions() -> Result<()> {
    let (_engine, svc) = setup().await?;
    let e = explain(&svc, "not-an-ip", 1).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("client_address"), "{e:?}");
    let e = explain(&svc, "198.18.2.1", 70000).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = svc
        .explain(Request::new(pb::ExplainRequest {
            service: Some(key(81)),
            client_address: "198.18.2.1".into(),
            client_port: 1,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = explain(&svc, "fd00:1b5::1", 1).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    Ok(())
}
