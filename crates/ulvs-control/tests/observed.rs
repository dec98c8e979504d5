//! The request observer over a real control socket: every request is reported once, when its
//! response ends, with its final status: unary calls and refusals at once, a finished
//! `ListConnections` stream as `Ok` after its last message, a `Watch` stream not while it is
//! open but as `Cancelled` once the client drops it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic::Code;
use tonic::codegen::http::HeaderMap;
use ulvs_control::{EngineBackend, RequestObserver};
use ulvs_engine::{Engine, EngineOptions};
use ulvs_proto::v1 as pb;
use ulvs_testkit::Server;

/// Records every finished request.
#[derive(Debug, Default)]
struct Recorder {
    started: Mutex<Vec<String>>,
    finished: Mutex<Vec<(String, Code, Duration)>>,
}

impl RequestObserver for Recorder {
    fn start(&self, method: &str, _headers: &HeaderMap) -> tracing::Span {
        self.started.lock().unwrap().push(method.to_owned());
        tracing::Span::none()
    }

    fn finish(&self, method: &str, code: Code, elapsed: Duration) {
        self.finished
            .lock()
            .unwrap()
            .push((method.to_owned(), code, elapsed));
    }
}

impl Recorder {
    fn of(&self, method: &str) -> Vec<Code> {
        self.finished
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _, _)| m == method)
            .map(|(_, c, _)| *c)
            .collect()
    }

    async fn wait_for(&self, method: &str, want: &[Code]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.of(method);
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{method}: finished {got:?}, expected {want:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn spec(port: u32) -> pb::ServiceSpec {
    pb::ServiceSpec {
        key: Some(pb::ServiceKey {
            protocol: pb::Protocol::Tcp as i32,
            address: "198.18.0.10".into(),
            port,
        }),
        scheduler: "rr".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn requests_are_reported_when_their_response_ends() -> Result<()> {
    let engine = Arc::new(Engine::new(EngineOptions::default()));
    let recorder = Arc::new(Recorder::default());
    let server = Server::unix_observed(EngineBackend::new(engine, 4096), recorder.clone()).await?;
    let mut c = server.client().await?;

    c.add_service(pb::AddServiceRequest {
        service: Some(spec(80)),
    })
    .await?;
    let refused = c
        .add_service(pb::AddServiceRequest {
            service: Some(spec(80)),
        })
        .await
        .expect_err("a duplicate is refused");
    assert_eq!(refused.code(), Code::AlreadyExists);
    recorder
        .wait_for("AddService", &[Code::Ok, Code::AlreadyExists])
        .await?;

    // A stream read to its end: one report, Ok.
    let mut conns = c
        .list_connections(pb::ListConnectionsRequest::default())
        .await?
        .into_inner();
    while conns.message().await?.is_some() {}
    recorder.wait_for("ListConnections", &[Code::Ok]).await?;

    // An open Watch is not finished; dropping it is a cancellation.
    let mut watch = c
        .watch(pb::WatchRequest {
            include_initial: true,
        })
        .await?
        .into_inner();
    watch.message().await?.context("the initial event")?;
    // Another request completes meanwhile, and the watch is still not reported.
    c.list_services(pb::ListServicesRequest::default()).await?;
    recorder.wait_for("ListServices", &[Code::Ok]).await?;
    assert!(
        recorder.of("Watch").is_empty(),
        "an open watch was reported"
    );
    drop(watch);
    recorder.wait_for("Watch", &[Code::Cancelled]).await?;

    // Every started request finished exactly once.
    let started = recorder.started.lock().unwrap().len();
    assert_eq!(started, recorder.finished.lock().unwrap().len());
    server.stop().await
}
