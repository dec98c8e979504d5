//! The control service end to end: a real tonic client over a unix socket in a temp dir,
//! talking to `ControlService` over an `EngineBackend` (a real engine, no kernel routes).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tonic::Code;
use tonic::transport::Channel;
use ulvs_control::{EngineBackend, ServeError, bind_unix};
use ulvs_engine::{Engine, EngineOptions, Verdict};
use ulvs_proto::v1 as pb;
use ulvs_proto::v1::ulvs_client::UlvsClient;
use ulvs_testkit::{Server, masq, process, syn, tcp_key as key};

const TABLE_SIZE: u32 = 4096;

/// The control service over a real engine, on a temp-dir socket whose parent directory does
/// not exist yet (the server creates it); [`Server::stop`] also checks the socket is removed.
async fn start() -> Result<Server> {
    let engine = Arc::new(Engine::new(EngineOptions {
        max_connections: TABLE_SIZE as usize,
        ..EngineOptions::default()
    }));
    Server::unix_at(EngineBackend::new(engine, TABLE_SIZE), "run/ulvs/ulvs.sock").await
}

fn svc_spec(address: &str, port: u32, scheduler: &str) -> pb::ServiceSpec {
    pb::ServiceSpec {
        key: Some(key(address, port)),
        scheduler: scheduler.into(),
        ..Default::default()
    }
}

async fn list(c: &mut UlvsClient<Channel>) -> Result<Vec<pb::Service>> {
    Ok(c.list_services(pb::ListServicesRequest {
        ..Default::default()
    })
    .await
    .context("ListServices")?
    .into_inner()
    .services)
}

fn spec_of(s: &pb::Service) -> &pb::ServiceSpec {
    s.spec.as_ref().expect("service spec")
}

fn rs_specs(s: &pb::Service) -> Vec<pb::RealServerSpec> {
    s.real_servers
        .iter()
        .map(|r| r.spec.clone().expect("real server spec"))
        .collect()
}

#[tokio::test]
async fn add_edit_delete_and_read_back() -> Result<()> {
    let d = start().await?;
    let mut c = d.client().await?;

    let info = c.get_info(pb::GetInfoRequest {}).await?.into_inner();
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.ipvs_version, "1.2.1");
    assert_eq!(info.connection_table_size, TABLE_SIZE);
    assert!(info.devices.is_empty());

    let mut spec = svc_spec("198.18.0.10", 80, "rr");
    spec.labels.insert("owner".into(), "agent-1".into());
    c.add_service(pb::AddServiceRequest {
        service: Some(spec),
    })
    .await?;
    // Empty scheduler means wlc.
    c.add_service(pb::AddServiceRequest {
        service: Some(svc_spec("198.18.0.11", 443, "")),
    })
    .await?;
    for (addr, w) in [("198.18.1.1", 1), ("198.18.1.2", 2)] {
        c.add_real_server(pb::AddRealServerRequest {
            service: Some(key("198.18.0.10", 80)),
            real_server: Some(masq(addr, 8080, w)),
            ..Default::default()
        })
        .await?;
    }
    // Port 0 on a real server means the service's port.
    c.add_real_server(pb::AddRealServerRequest {
        service: Some(key("198.18.0.11", 443)),
        real_server: Some(masq("198.18.1.3", 0, 1)),
        ..Default::default()
    })
    .await?;

    let services = list(&mut c).await?;
    assert_eq!(services.len(), 2);
    let web = &services[0];
    assert_eq!(spec_of(web).key, Some(key("198.18.0.10", 80)));
    assert_eq!(spec_of(web).scheduler, "rr");
    assert_eq!(
        spec_of(web).labels.get("owner").map(String::as_str),
        Some("agent-1")
    );
    assert_eq!(
        rs_specs(web),
        vec![masq("198.18.1.1", 8080, 1), masq("198.18.1.2", 8080, 2)]
    );
    assert_eq!(spec_of(&services[1]).scheduler, "wlc");
    assert!(spec_of(&services[1]).labels.is_empty());
    assert_eq!(rs_specs(&services[1]), vec![masq("198.18.1.3", 443, 1)]);

    // -E: new scheduler; no labels given keeps the labels; real servers are kept.
    c.edit_service(pb::EditServiceRequest {
        service: Some(svc_spec("198.18.0.10", 80, "wrr")),
        ..Default::default()
    })
    .await?;
    // -e: new weight and thresholds.
    let edited = pb::RealServerSpec {
        upper_threshold: 100,
        lower_threshold: 50,
        ..masq("198.18.1.2", 8080, 5)
    };
    c.edit_real_server(pb::EditRealServerRequest {
        service: Some(key("198.18.0.10", 80)),
        real_server: Some(edited.clone()),
        ..Default::default()
    })
    .await?;
    let services = list(&mut c).await?;
    let web = &services[0];
    assert_eq!(spec_of(web).scheduler, "wrr");
    assert_eq!(
        spec_of(web).labels.get("owner").map(String::as_str),
        Some("agent-1")
    );
    assert_eq!(
        rs_specs(web),
        vec![masq("198.18.1.1", 8080, 1), edited.clone()]
    );

    // -d, -D.
    c.delete_real_server(pb::DeleteRealServerRequest {
        service: Some(key("198.18.0.10", 80)),
        address: "198.18.1.1".into(),
        port: 8080,
        ..Default::default()
    })
    .await?;
    c.delete_service(pb::DeleteServiceRequest {
        key: Some(key("198.18.0.11", 443)),
        ..Default::default()
    })
    .await?;
    let services = list(&mut c).await?;
    assert_eq!(services.len(), 1);
    assert_eq!(rs_specs(&services[0]), vec![edited]);

    // -C.
    c.clear(pb::ClearRequest {}).await?;
    assert!(list(&mut c).await?.is_empty());
    d.stop().await
}

#[tokio::test]
async fn list_services_merges_engine_counters() -> Result<()> {
    let d = start().await?;
    let mut c = d.client().await?;
    c.add_service(pb::AddServiceRequest {
        service: Some(svc_spec("198.18.0.10", 80, "rr")),
    })
    .await?;
    c.add_real_server(pb::AddRealServerRequest {
        service: Some(key("198.18.0.10", 80)),
        real_server: Some(masq("198.18.1.1", 8080, 1)),
        ..Default::default()
    })
    .await?;

    // One new connection through the engine the control service configured.
    let pkt = syn([198, 18, 2, 1], 40000, [198, 18, 0, 10], 80);
    let len = pkt.len();
    let verdict = process(d.engine(), 1, &pkt);
    assert_eq!(verdict, Verdict::Forward);

    let services = list(&mut c).await?;
    let stats = services[0].stats.expect("service stats");
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.in_packets, 1);
    assert_eq!(stats.in_bytes, len as u64);
    assert_eq!(stats.out_packets, 0);
    let rs = &services[0].real_servers[0];
    let rs_stats = rs.stats.expect("real server stats");
    assert_eq!(rs_stats.connections, 1);
    assert_eq!(rs_stats.in_packets, 1);
    assert_eq!(rs.active_connections + rs.inactive_connections, 1);
    assert_eq!(rs.persistent_connections, 0);
    d.stop().await
}

/// One bad request: what it is, and the code and text it must get back.
struct Bad {
    what: &'static str,
    code: Code,
    says: &'static str,
}

fn bad(what: &'static str, code: Code, says: &'static str) -> Bad {
    Bad { what, code, says }
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() -> Result<()> {
    let d = start().await?;
    let mut c = d.client().await?;
    c.add_service(pb::AddServiceRequest {
        service: Some(svc_spec("198.18.0.10", 80, "rr")),
    })
    .await?;
    c.add_real_server(pb::AddRealServerRequest {
        service: Some(key("198.18.0.10", 80)),
        real_server: Some(masq("198.18.1.1", 8080, 1)),
        ..Default::default()
    })
    .await?;
    let before = list(&mut c).await?;

    let add_svc = |spec: pb::ServiceSpec| pb::AddServiceRequest {
        service: Some(spec),
    };
    let add_rs = |svc: pb::ServiceKey, rs: pb::RealServerSpec| pb::AddRealServerRequest {
        service: Some(svc),
        real_server: Some(rs),
        ..Default::default()
    };
    let unspecified_protocol = pb::ServiceSpec {
        key: Some(pb::ServiceKey {
            protocol: pb::Protocol::Unspecified as i32,
            ..key("198.18.0.12", 80)
        }),
        ..Default::default()
    };

    let cases: Vec<(Bad, Result<(), tonic::Status>)> = vec![
        (
            bad(
                "bad service address",
                Code::InvalidArgument,
                "service.key.address: invalid IP address \"1.2.3\"",
            ),
            c.add_service(add_svc(svc_spec("1.2.3", 80, "rr")))
                .await
                .map(drop),
        ),
        (
            bad(
                "service port out of range",
                Code::InvalidArgument,
                "service.key.port: 70000 is out of range",
            ),
            c.add_service(add_svc(svc_spec("198.18.0.12", 70000, "rr")))
                .await
                .map(drop),
        ),
        (
            bad(
                "unknown scheduler",
                Code::InvalidArgument,
                "service.scheduler: unknown scheduler \"fastest\"",
            ),
            c.add_service(add_svc(svc_spec("198.18.0.12", 80, "fastest")))
                .await
                .map(drop),
        ),
        (
            bad(
                "unspecified protocol",
                Code::InvalidArgument,
                "service.key.protocol: ",
            ),
            c.add_service(add_svc(unspecified_protocol)).await.map(drop),
        ),
        (
            bad(
                "missing service message",
                Code::InvalidArgument,
                "service: ",
            ),
            c.add_service(pb::AddServiceRequest { service: None })
                .await
                .map(drop),
        ),
        (
            bad(
                "duplicate service",
                Code::AlreadyExists,
                "198.18.0.10:80 already exists",
            ),
            c.add_service(add_svc(svc_spec("198.18.0.10", 80, "wlc")))
                .await
                .map(drop),
        ),
        (
            bad(
                "edit of a missing service",
                Code::NotFound,
                "198.18.0.99:80",
            ),
            c.edit_service(pb::EditServiceRequest {
                service: Some(svc_spec("198.18.0.99", 80, "rr")),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            bad(
                "delete of a missing service",
                Code::NotFound,
                "198.18.0.99:80",
            ),
            c.delete_service(pb::DeleteServiceRequest {
                key: Some(key("198.18.0.99", 80)),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            bad(
                "delete with a bad key",
                Code::InvalidArgument,
                "key.address: invalid IP address",
            ),
            c.delete_service(pb::DeleteServiceRequest {
                key: Some(key("198.18.0.999", 80)),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            bad(
                "real server port out of range",
                Code::InvalidArgument,
                "real_server.port: 70000 is out of range",
            ),
            c.add_real_server(add_rs(key("198.18.0.10", 80), masq("198.18.1.2", 70000, 1)))
                .await
                .map(drop),
        ),
        (
            bad(
                "bad real server address",
                Code::InvalidArgument,
                "real_server.address: invalid IP address \"198.18.1\"",
            ),
            c.add_real_server(add_rs(key("198.18.0.10", 80), masq("198.18.1", 8080, 1)))
                .await
                .map(drop),
        ),
        (
            bad(
                "real server of another family",
                Code::InvalidArgument,
                "real_server.address: ",
            ),
            c.add_real_server(add_rs(key("198.18.0.10", 80), masq("fd00:1b5::1", 8080, 1)))
                .await
                .map(drop),
        ),
        (
            bad(
                "weight out of range",
                Code::InvalidArgument,
                "real_server.weight: ",
            ),
            c.add_real_server(add_rs(
                key("198.18.0.10", 80),
                masq("198.18.1.2", 8080, 70000),
            ))
            .await
            .map(drop),
        ),
        (
            bad(
                "unknown forwarding method",
                Code::InvalidArgument,
                "real_server.forward: ",
            ),
            c.add_real_server(add_rs(
                key("198.18.0.10", 80),
                pb::RealServerSpec {
                    forward: 9,
                    ..masq("198.18.1.2", 8080, 1)
                },
            ))
            .await
            .map(drop),
        ),
        (
            bad(
                "duplicate real server",
                Code::AlreadyExists,
                "198.18.1.1:8080",
            ),
            c.add_real_server(add_rs(key("198.18.0.10", 80), masq("198.18.1.1", 8080, 3)))
                .await
                .map(drop),
        ),
        (
            bad(
                "real server of a missing service",
                Code::NotFound,
                "198.18.0.99:80",
            ),
            c.add_real_server(add_rs(key("198.18.0.99", 80), masq("198.18.1.2", 8080, 1)))
                .await
                .map(drop),
        ),
        (
            bad(
                "edit of a missing real server",
                Code::NotFound,
                "198.18.1.9:8080",
            ),
            c.edit_real_server(pb::EditRealServerRequest {
                service: Some(key("198.18.0.10", 80)),
                real_server: Some(masq("198.18.1.9", 8080, 1)),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            bad(
                "delete of a missing real server",
                Code::NotFound,
                "198.18.1.9:8080",
            ),
            c.delete_real_server(pb::DeleteRealServerRequest {
                service: Some(key("198.18.0.10", 80)),
                address: "198.18.1.9".into(),
                port: 8080,
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            bad(
                "delete with a port out of range",
                Code::InvalidArgument,
                "port: 70000 is out of range",
            ),
            c.delete_real_server(pb::DeleteRealServerRequest {
                service: Some(key("198.18.0.10", 80)),
                address: "198.18.1.1".into(),
                port: 70000,
                ..Default::default()
            })
            .await
            .map(drop),
        ),
    ];

    for (bad, got) in cases {
        let status = match got {
            Ok(()) => anyhow::bail!("{}: accepted, expected {:?}", bad.what, bad.code),
            Err(s) => s,
        };
        assert_eq!(status.code(), bad.code, "{}: {status:?}", bad.what);
        assert!(
            status.message().contains(bad.says),
            "{}: message {:?} does not contain {:?}",
            bad.what,
            status.message(),
            bad.says
        );
        assert_eq!(list(&mut c).await?, before, "{}: state changed", bad.what);
    }
    d.stop().await
}

#[tokio::test]
async fn engine_refusals_name_the_field() -> Result<()> {
    let d = start().await?;
    let mut c = d.client().await?;
    c.add_service(pb::AddServiceRequest {
        service: Some(svc_spec("198.18.0.10", 80, "rr")),
    })
    .await?;
    let before = list(&mut c).await?;

    // Forward unspecified means direct routing (ipvsadm -g). The engine either does it (and
    // the listing says ROUTE) or refuses it, naming the field; it never panics.
    let got = c
        .add_real_server(pb::AddRealServerRequest {
            service: Some(key("198.18.0.10", 80)),
            real_server: Some(pb::RealServerSpec {
                forward: pb::ForwardMethod::Unspecified as i32,
                ..masq("198.18.1.1", 8080, 1)
            }),
            ..Default::default()
        })
        .await;
    match got {
        Ok(_) => {
            let after = list(&mut c).await?;
            let rs = rs_specs(&after[0]);
            assert_eq!(rs.len(), 1);
            assert_eq!(rs[0].forward, pb::ForwardMethod::Route as i32);
            // Direct routing cannot change the port: the service's port is used.
            assert_eq!(rs[0].port, 80);
            c.clear(pb::ClearRequest {}).await?;
        }
        Err(status) => {
            assert!(
                matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::InvalidArgument
                ),
                "{status:?}"
            );
            assert!(
                status.message().starts_with("real_server.forward: "),
                "{status:?}"
            );
            assert_eq!(list(&mut c).await?, before);
        }
    }

    // A scheduler IPVS has but an engine may not implement yet: same contract.
    let before = list(&mut c).await?;
    let got = c
        .add_service(pb::AddServiceRequest {
            service: Some(svc_spec("198.18.0.20", 80, "mh")),
        })
        .await;
    if let Err(status) = got {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().starts_with("service.scheduler: "),
            "{status:?}"
        );
        assert_eq!(list(&mut c).await?, before);
    }
    d.stop().await
}

#[tokio::test]
async fn socket_is_private_and_single_owner() -> Result<()> {
    let d = start().await?;
    let mode = std::fs::metadata(d.socket())?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    // A second daemon on the same socket refuses to start and leaves the first one alone.
    match bind_unix(d.socket()) {
        Err(ServeError::AlreadyRunning(p)) => assert_eq!(p, d.socket()),
        other => anyhow::bail!("second bind: {other:?}"),
    }
    let mut c = d.client().await?;
    c.get_info(pb::GetInfoRequest {}).await?;
    d.stop().await
}

#[tokio::test]
async fn stale_socket_is_replaced_and_other_files_are_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("ulvs.sock");
    // A socket file nobody listens on, as a crashed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket)?);
    assert!(socket.exists());
    let bound = bind_unix(&socket).context("bind over a stale socket")?;
    assert_eq!(bound.path(), socket);
    drop(bound);
    assert!(
        !socket.exists(),
        "dropping the bound socket removes its file"
    );

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me")?;
    assert!(matches!(bind_unix(&file), Err(ServeError::NotASocket(_))));
    assert_eq!(std::fs::read(&file)?, b"keep me");
    Ok(())
}

async fn channel(socket: &Path) -> Result<Channel> {
    ulvs_proto::connect_unix_channel(socket)
        .await
        .context("connect")
}

#[tokio::test]
async fn health_and_reflection_answer() -> Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let d = start().await?;

    let mut health = HealthClient::new(channel(d.socket()).await?);
    for name in ["", "ulvs.v1.Ulvs"] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: name.into(),
            })
            .await?
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "service {name:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel(d.socket()).await?);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("ulvs.v1.Ulvs".into()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await?
        .into_inner();

    let first = responses.message().await?.context("list response")?;
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        anyhow::bail!("unexpected reflection answer {first:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"ulvs.v1.Ulvs"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let second = responses.message().await?.context("file response")?;
    let Some(MessageResponse::FileDescriptorResponse(files)) = second.message_response else {
        anyhow::bail!("unexpected reflection answer {second:?}");
    };
    let needle = b"ulvs/v1/ulvs.proto";
    assert!(
        files
            .file_descriptor_proto
            .iter()
            .any(|f| f.windows(needle.len()).any(|w| w == needle))
    );
    drop(responses);
    d.stop().await
}
