//! Batches, generations, label selectors, Watch and GetInfo, driven through the `ulvs.v1.Ulvs`
//! trait of a real `ControlService` over an `EngineBackend` (no socket needed).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use ulvs_control::{ControlService, EngineBackend};
use ulvs_engine::{Engine, EngineOptions, Verdict};
use ulvs_proto::v1 as pb;
use ulvs_proto::v1::ulvs_server::Ulvs;
use ulvs_testkit::{masq, process, syn, tcp_key as key};

type Svc = ControlService<EngineBackend>;

fn service() -> (Svc, Arc<Engine>) {
    let engine = Arc::new(Engine::new(EngineOptions {
        max_connections: 1024,
        ..EngineOptions::default()
    }));
    (
        ControlService::new(EngineBackend::new(engine.clone(), 1024)),
        engine,
    )
}

fn spec(address: &str, port: u32, labels: &[(&str, &str)]) -> pb::ServiceSpec {
    pb::ServiceSpec {
        key: Some(key(address, port)),
        scheduler: "rr".into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

fn add_svc(s: pb::ServiceSpec) -> pb::Change {
    pb::Change {
        change: Some(pb::change::Change::AddService(pb::AddServiceRequest {
            service: Some(s),
        })),
    }
}

fn add_rs(svc: pb::ServiceKey, rs: pb::RealServerSpec) -> pb::Change {
    pb::Change {
        change: Some(pb::change::Change::AddRealServer(
            pb::AddRealServerRequest {
                service: Some(svc),
                real_server: Some(rs),
                expected_generation: 0,
            },
        )),
    }
}

fn apply(changes: Vec<pb::Change>) -> Request<pb::ApplyRequest> {
    Request::new(pb::ApplyRequest {
        changes,
        ..Default::default()
    })
}

async fn list(s: &Svc) -> Result<pb::ListServicesResponse> {
    Ok(
        s.list_services(Request::new(pb::ListServicesRequest::default()))
            .await
            .context("ListServices")?
            .into_inner(),
    )
}

/// A configuration with one service and one real server, made by one batch.
async fn seeded() -> Result<(Svc, Arc<Engine>)> {
    let (s, engine) = service();
    let generation = s
        .apply(apply(vec![
            add_svc(spec("198.18.0.10", 80, &[("owner", "agent")])),
            add_rs(key("198.18.0.10", 80), masq("198.18.1.1", 8080, 1)),
        ]))
        .await?
        .into_inner()
        .generation;
    assert_eq!(generation, 1, "one batch is one generation");
    Ok((s, engine))
}

#[tokio::test]
async fn batch_with_one_invalid_item_changes_nothing() -> Result<()> {
    let (s, engine) = seeded().await?;
    let before = list(&s).await?;
    let live_before = s.config().await;

    // Item 2 is malformed: refused before anything is applied, naming the item and field.
    let err = s
        .apply(apply(vec![
            add_svc(spec("198.18.0.11", 80, &[])),
            add_rs(key("198.18.0.11", 80), masq("198.18.1.2", 8080, 1)),
            add_rs(key("198.18.0.11", 80), masq("198.18.1.3", 70000, 1)),
        ]))
        .await
        .expect_err("a batch with a bad port must fail");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "changes[2].add_real_server.real_server.port: 70000 is out of range (0-65535)"
    );

    // Item 2 is well-formed but conflicts with item 0 (duplicate): the earlier items are
    // rolled back too.
    let err = s
        .apply(apply(vec![
            add_svc(spec("198.18.0.11", 80, &[])),
            pb::Change {
                change: Some(pb::change::Change::DeleteService(
                    pb::DeleteServiceRequest {
                        key: Some(key("198.18.0.10", 80)),
                        expected_generation: 0,
                    },
                )),
            },
            add_svc(spec("198.18.0.11", 80, &[])),
        ]))
        .await
        .expect_err("a duplicate inside a batch must fail");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message().starts_with("changes[2].add_service: "),
        "{err:?}"
    );

    // An empty change is refused.
    let err = s
        .apply(apply(vec![pb::Change { change: None }]))
        .await
        .expect_err("empty change");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("changes[0]: "), "{err:?}");

    let after = list(&s).await?;
    assert_eq!(after, before, "nothing changed, generation included");
    assert_eq!(s.config().await, live_before);
    assert_eq!(
        engine.stats().services.len(),
        1,
        "the engine has the old config"
    );
    Ok(())
}

#[tokio::test]
async fn dry_run_checks_and_changes_nothing() -> Result<()> {
    let (s, _engine) = seeded().await?;
    let before = list(&s).await?;
    let mut req = apply(vec![add_svc(spec("198.18.0.11", 80, &[]))]);
    req.get_mut().dry_run = true;
    let resp = s.apply(req).await?.into_inner();
    assert_eq!(resp.generation, before.generation);
    assert_eq!(list(&s).await?, before);

    let mut req = apply(vec![add_svc(spec("198.18.0.10", 80, &[]))]);
    req.get_mut().dry_run = true;
    let err = s.apply(req).await.expect_err("dry run still checks");
    assert_eq!(err.code(), Code::AlreadyExists);
    Ok(())
}

#[tokio::test]
async fn stale_generation_is_refused() -> Result<()> {
    let (s, _engine) = seeded().await?;
    let read = list(&s).await?;
    let svc_gen = read.services[0].generation;
    assert_eq!(svc_gen, 1);

    // A write naming the generation it read goes through and bumps it.
    s.edit_real_server(Request::new(pb::EditRealServerRequest {
        service: Some(key("198.18.0.10", 80)),
        real_server: Some(masq("198.18.1.1", 8080, 5)),
        expected_generation: svc_gen,
    }))
    .await?;
    let now = list(&s).await?;
    assert_eq!(now.generation, 2);
    assert_eq!(now.services[0].generation, 2);

    // A second writer with the old read is refused, naming the field.
    let err = s
        .edit_service(Request::new(pb::EditServiceRequest {
            service: Some(spec("198.18.0.10", 80, &[])),
            expected_generation: svc_gen,
        }))
        .await
        .expect_err("stale service generation");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "expected_generation: service TCP 198.18.0.10:80 is at generation 2, not 1"
    );
    for (what, result) in [
        (
            "delete service",
            s.delete_service(Request::new(pb::DeleteServiceRequest {
                key: Some(key("198.18.0.10", 80)),
                expected_generation: svc_gen,
            }))
            .await
            .map(drop),
        ),
        (
            "add real server",
            s.add_real_server(Request::new(pb::AddRealServerRequest {
                service: Some(key("198.18.0.10", 80)),
                real_server: Some(masq("198.18.1.9", 80, 1)),
                expected_generation: svc_gen,
            }))
            .await
            .map(drop),
        ),
        (
            "delete real server",
            s.delete_real_server(Request::new(pb::DeleteRealServerRequest {
                service: Some(key("198.18.0.10", 80)),
                address: "198.18.1.1".into(),
                port: 8080,
                expected_generation: svc_gen,
            }))
            .await
            .map(drop),
        ),
    ] {
        let err = result.expect_err(what);
        assert_eq!(err.code(), Code::FailedPrecondition, "{what}");
        assert!(
            err.message().starts_with("expected_generation: "),
            "{what}: {err:?}"
        );
    }

    // The batch's own expected_generation is the configuration's.
    let mut req = apply(vec![add_svc(spec("198.18.0.11", 80, &[]))]);
    req.get_mut().expected_generation = 1;
    let err = s
        .apply(req)
        .await
        .expect_err("stale configuration generation");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "expected_generation: the configuration is at generation 2, not 1"
    );

    // A stale item inside a batch names the item.
    let err = s
        .apply(apply(vec![
            add_svc(spec("198.18.0.11", 80, &[])),
            pb::Change {
                change: Some(pb::change::Change::EditService(pb::EditServiceRequest {
                    service: Some(spec("198.18.0.10", 80, &[])),
                    expected_generation: 1,
                })),
            },
        ]))
        .await
        .expect_err("stale item");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .starts_with("changes[1].edit_service.expected_generation: "),
        "{err:?}"
    );

    assert_eq!(list(&s).await?, now, "refusals changed nothing");
    Ok(())
}

#[tokio::test]
async fn generations_move_per_service() -> Result<()> {
    let (s, _engine) = seeded().await?;
    s.add_service(Request::new(pb::AddServiceRequest {
        service: Some(spec("198.18.0.11", 80, &[("owner", "ops")])),
    }))
    .await?;
    s.add_real_server(Request::new(pb::AddRealServerRequest {
        service: Some(key("198.18.0.11", 80)),
        real_server: Some(masq("198.18.1.5", 80, 1)),
        expected_generation: 2,
    }))
    .await?;
    let l = list(&s).await?;
    assert_eq!(l.generation, 3);
    let gens: Vec<u64> = l.services.iter().map(|s| s.generation).collect();
    assert_eq!(gens, vec![1, 3], "only the changed service moves");

    // Label selector.
    let sel = |pairs: &[(&str, &str)]| {
        Request::new(pb::ListServicesRequest {
            label_selector: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
    };
    let only_agent = s
        .list_services(sel(&[("owner", "agent")]))
        .await?
        .into_inner();
    assert_eq!(only_agent.services.len(), 1);
    assert_eq!(
        only_agent.services[0].spec.as_ref().unwrap().labels["owner"],
        "agent"
    );
    assert_eq!(only_agent.generation, 3);
    assert!(
        s.list_services(sel(&[("owner", "nobody")]))
            .await?
            .into_inner()
            .services
            .is_empty()
    );

    // Delete and re-add: the generation does not restart, so an old read stays stale.
    s.delete_service(Request::new(pb::DeleteServiceRequest {
        key: Some(key("198.18.0.11", 80)),
        expected_generation: 3,
    }))
    .await?;
    s.add_service(Request::new(pb::AddServiceRequest {
        service: Some(spec("198.18.0.11", 80, &[])),
    }))
    .await?;
    let l = list(&s).await?;
    assert_eq!(l.services[1].generation, 5);

    // Clear is one generation.
    s.clear(Request::new(pb::ClearRequest {})).await?;
    let l = list(&s).await?;
    assert!(l.services.is_empty());
    assert_eq!(l.generation, 6);
    Ok(())
}

async fn next_event(stream: &mut <Svc as Ulvs>::WatchStream) -> Result<pb::watch_event::Event> {
    let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .context("no watch event within 10 s")?
        .context("watch stream ended")?;
    item?.event.context("event without a body")
}

#[tokio::test]
async fn watch_streams_initial_state_and_changes() -> Result<()> {
    use pb::watch_event::Event;
    let (s, _engine) = seeded().await?;
    let mut stream = s
        .watch(Request::new(pb::WatchRequest {
            include_initial: true,
        }))
        .await?
        .into_inner();
    match next_event(&mut stream).await? {
        Event::ServiceAdded(svc) => {
            assert_eq!(svc.generation, 1);
            assert_eq!(svc.real_servers.len(), 1);
        }
        other => anyhow::bail!("expected the initial service, got {other:?}"),
    }

    s.apply(apply(vec![
        add_svc(spec("198.18.0.11", 80, &[])),
        add_rs(key("198.18.0.11", 80), masq("198.18.1.2", 8080, 1)),
    ]))
    .await?;
    s.delete_real_server(Request::new(pb::DeleteRealServerRequest {
        service: Some(key("198.18.0.10", 80)),
        address: "198.18.1.1".into(),
        port: 8080,
        expected_generation: 0,
    }))
    .await?;
    match next_event(&mut stream).await? {
        Event::ServiceAdded(svc) => {
            assert_eq!(svc.spec.unwrap().key.unwrap(), key("198.18.0.11", 80));
            assert_eq!(svc.generation, 2);
        }
        other => anyhow::bail!("expected ServiceAdded, got {other:?}"),
    }
    match next_event(&mut stream).await? {
        Event::RealServerAdded(e) => {
            assert_eq!(e.real_server.unwrap().spec.unwrap().address, "198.18.1.2");
        }
        other => anyhow::bail!("expected RealServerAdded, got {other:?}"),
    }
    match next_event(&mut stream).await? {
        Event::RealServerDeleted(e) => {
            assert_eq!(e.service.unwrap(), key("198.18.0.10", 80));
            assert_eq!(e.real_server.unwrap().spec.unwrap().port, 8080);
        }
        other => anyhow::bail!("expected RealServerDeleted, got {other:?}"),
    }

    // A refused write sends nothing: the next event is the clear.
    let _ = s
        .add_service(Request::new(pb::AddServiceRequest {
            service: Some(spec("198.18.0.10", 80, &[])),
        }))
        .await
        .expect_err("duplicate");
    s.clear(Request::new(pb::ClearRequest {})).await?;
    assert!(matches!(next_event(&mut stream).await?, Event::Cleared(_)));
    Ok(())
}

#[tokio::test]
async fn watch_reports_real_server_overload() -> Result<()> {
    use pb::watch_event::Event;
    let (s, engine) = service();
    s.add_service(Request::new(pb::AddServiceRequest {
        service: Some(spec("198.18.0.10", 80, &[])),
    }))
    .await?;
    s.add_real_server(Request::new(pb::AddRealServerRequest {
        service: Some(key("198.18.0.10", 80)),
        real_server: Some(pb::RealServerSpec {
            upper_threshold: 1,
            ..masq("198.18.1.1", 8080, 1)
        }),
        expected_generation: 0,
    }))
    .await?;
    let state = |l: &pb::ListServicesResponse| l.services[0].real_servers[0].state;
    assert_eq!(
        state(&list(&s).await?),
        pb::RealServerState::Available as i32
    );
    let mut stream = s
        .watch(Request::new(pb::WatchRequest::default()))
        .await?
        .into_inner();
    // Watch took the first state sample before returning: the change below is reported.
    let verdict = process(
        &engine,
        1,
        &syn([198, 18, 2, 1], 40000, [198, 18, 0, 10], 80),
    );
    assert_eq!(verdict, Verdict::Forward);

    match next_event(&mut stream).await? {
        Event::RealServerStateChanged(e) => {
            let rs = e.real_server.unwrap();
            assert_eq!(rs.state, pb::RealServerState::Overloaded as i32);
            assert_eq!(rs.inactive_connections + rs.active_connections, 1);
        }
        other => anyhow::bail!("expected RealServerStateChanged, got {other:?}"),
    }
    assert_eq!(
        state(&list(&s).await?),
        pb::RealServerState::Overloaded as i32
    );
    Ok(())
}

#[tokio::test]
async fn get_info_reports_uptime_and_queues() -> Result<()> {
    let (s, _engine) = service();
    let info = s
        .get_info(Request::new(pb::GetInfoRequest {}))
        .await?
        .into_inner();
    assert_eq!(info.ipvs_version, "1.2.1");
    assert_eq!(info.connection_table_size, 1024);
    assert_eq!(info.queues, 0, "an engine-only backend has no queues");
    assert!(info.uptime_seconds < 60);
    Ok(())
}

fn set_timeouts(timeouts: Option<pb::Timeouts>) -> pb::Change {
    pb::Change {
        change: Some(pb::change::Change::SetTimeouts(pb::SetTimeoutsRequest {
            timeouts,
        })),
    }
}

async fn timeouts(s: &Svc) -> Result<pb::Timeouts> {
    s.get_timeouts(Request::new(pb::GetTimeoutsRequest {}))
        .await
        .context("GetTimeouts")?
        .into_inner()
        .timeouts
        .context("no timeouts")
}

#[tokio::test]
async fn batch_timeouts_commit_with_the_batch_or_not_at_all() -> Result<()> {
    let (s, _engine) = seeded().await?;
    let before = list(&s).await?;
    let t0 = timeouts(&s).await?;
    let want = pb::Timeouts {
        tcp: t0.tcp + 100,
        tcp_fin: 0,
        udp: t0.udp + 7,
    };

    // A later item fails: the timeouts item before it does not take effect either.
    let err = s
        .apply(apply(vec![
            set_timeouts(Some(want)),
            add_svc(spec("198.18.0.10", 80, &[])),
        ]))
        .await
        .expect_err("duplicate service");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message().starts_with("changes[1].add_service: "),
        "{err:?}"
    );
    assert_eq!(timeouts(&s).await?, t0);

    // Validated as SetTimeouts is: the timeouts must be there.
    let err = s
        .apply(apply(vec![set_timeouts(None)]))
        .await
        .expect_err("missing timeouts");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "changes[0].set_timeouts.timeouts: missing");

    // A dry run checks and sets nothing.
    let mut req = apply(vec![
        add_svc(spec("198.18.0.11", 80, &[])),
        set_timeouts(Some(want)),
    ]);
    req.get_mut().dry_run = true;
    assert_eq!(
        s.apply(req).await?.into_inner().generation,
        before.generation
    );
    assert_eq!(timeouts(&s).await?, t0);
    assert_eq!(list(&s).await?, before);

    // Committed: the service and the timeouts together, one generation; 0 keeps tcp_fin.
    let generation = s
        .apply(apply(vec![
            add_svc(spec("198.18.0.11", 80, &[])),
            set_timeouts(Some(want)),
        ]))
        .await?
        .into_inner()
        .generation;
    assert_eq!(generation, before.generation + 1);
    assert_eq!(
        timeouts(&s).await?,
        pb::Timeouts {
            tcp: want.tcp,
            tcp_fin: t0.tcp_fin,
            udp: want.udp,
        }
    );
    assert_eq!(list(&s).await?.services.len(), 2);
    Ok(())
}

#[tokio::test]
async fn get_info_instance_id_is_stable_per_service_and_differs_between_services() -> Result<()> {
    let info = |s: Svc| async move {
        Ok::<_, anyhow::Error>(
            s.get_info(Request::new(pb::GetInfoRequest {}))
                .await?
                .into_inner()
                .instance_id,
        )
    };
    let (a, _) = service();
    let (b, _) = service();
    let id = info(a.clone()).await?;
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(info(a).await?, id, "one service keeps its id");
    assert_ne!(
        info(b).await?,
        id,
        "a new service (daemon start) has another"
    );
    Ok(())
}
