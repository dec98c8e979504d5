//! Property tests of the API: random command sequences (single writes and batches, valid and
//! not) applied through the `ulvs.v1.Ulvs` trait never panic, and after every step the listing
//! equals a simple model that applies only the accepted changes; random bytes decoded as
//! requests and validated never panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use prost::Message;
use tonic::Request;
use ulvs_control::{ControlService, EngineBackend, validate};
use ulvs_engine::{Engine, EngineOptions};
use ulvs_proto::v1 as pb;
use ulvs_proto::v1::ulvs_server::Ulvs;

/// The model: service port -> (scheduler, real-server last octet -> weight).
type Model = BTreeMap<u32, (String, BTreeMap<u8, u32>)>;

#[derive(Debug, Clone)]
enum Op {
    AddService(u32, &'static str),
    EditService(u32, &'static str),
    DeleteService(u32),
    AddServer(u32, u8, u32),
    EditServer(u32, u8, u32),
    DeleteServer(u32, u8),
    Clear,
}

fn key(port: u32) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: pb::Protocol::Tcp as i32,
        address: "198.18.0.1".into(),
        port,
    }
}

fn rs(octet: u8, weight: u32) -> pb::RealServerSpec {
    pb::RealServerSpec {
        address: format!("198.18.1.{octet}"),
        port: 8080,
        forward: pb::ForwardMethod::Masq as i32,
        weight,
        ..Default::default()
    }
}

fn spec(port: u32, sched: &str) -> pb::ServiceSpec {
    pb::ServiceSpec {
        key: Some(key(port)),
        scheduler: sched.into(),
        ..Default::default()
    }
}

fn to_change(op: &Op) -> pb::Change {
    use pb::change::Change as C;
    let c = match op.clone() {
        Op::AddService(p, s) => C::AddService(pb::AddServiceRequest {
            service: Some(spec(p, s)),
        }),
        Op::EditService(p, s) => C::EditService(pb::EditServiceRequest {
            service: Some(spec(p, s)),
            expected_generation: 0,
        }),
        Op::DeleteService(p) => C::DeleteService(pb::DeleteServiceRequest {
            key: Some(key(p)),
            expected_generation: 0,
        }),
        Op::AddServer(p, o, w) => C::AddRealServer(pb::AddRealServerRequest {
            service: Some(key(p)),
            real_server: Some(rs(o, w)),
            expected_generation: 0,
        }),
        Op::EditServer(p, o, w) => C::EditRealServer(pb::EditRealServerRequest {
            service: Some(key(p)),
            real_server: Some(rs(o, w)),
            expected_generation: 0,
        }),
        Op::DeleteServer(p, o) => C::DeleteRealServer(pb::DeleteRealServerRequest {
            service: Some(key(p)),
            address: format!("198.18.1.{o}"),
            port: 8080,
            expected_generation: 0,
        }),
        Op::Clear => C::Clear(pb::ClearRequest {}),
    };
    pb::Change { change: Some(c) }
}

/// Applies `op` to the model; `false` if the daemon must refuse it.
fn model_apply(m: &mut Model, op: &Op) -> bool {
    let valid_sched = |s: &str| s != "nope";
    match op {
        Op::AddService(p, s) => {
            if *p == 0 || *p > 65535 || !valid_sched(s) || m.contains_key(p) {
                return false;
            }
            m.insert(*p, ((*s).to_owned(), BTreeMap::new()));
        }
        Op::EditService(p, s) => match m.get_mut(p) {
            Some(svc) if valid_sched(s) => svc.0 = (*s).to_owned(),
            _ => return false,
        },
        Op::DeleteService(p) => return m.remove(p).is_some(),
        Op::AddServer(p, o, w) => match m.get_mut(p) {
            Some(svc) if *w <= 65535 && !svc.1.contains_key(o) => {
                svc.1.insert(*o, *w);
            }
            _ => return false,
        },
        Op::EditServer(p, o, w) => match m.get_mut(p).and_then(|svc| svc.1.get_mut(o)) {
            Some(slot) if *w <= 65535 => *slot = *w,
            _ => return false,
        },
        Op::DeleteServer(p, o) => {
            return m.get_mut(p).is_some_and(|svc| svc.1.remove(o).is_some());
        }
        Op::Clear => m.clear(),
    }
    true
}

fn op() -> impl Strategy<Value = Op> {
    // Few ports and addresses, so that operations collide often; port 0 and 70000 are invalid.
    let port = prop_oneof![8 => 1u32..4, 1 => Just(0u32), 1 => Just(70000u32)];
    let sched = prop_oneof![Just("rr"), Just("wrr"), Just("wlc"), Just("nope")];
    let octet = 1u8..4;
    let weight = prop_oneof![9 => 0u32..5, 1 => Just(70000u32)];
    prop_oneof![
        (port.clone(), sched.clone()).prop_map(|(p, s)| Op::AddService(p, s)),
        (port.clone(), sched).prop_map(|(p, s)| Op::EditService(p, s)),
        port.clone().prop_map(Op::DeleteService),
        (port.clone(), octet.clone(), weight.clone()).prop_map(|(p, o, w)| Op::AddServer(p, o, w)),
        (port.clone(), octet.clone(), weight).prop_map(|(p, o, w)| Op::EditServer(p, o, w)),
        (port, octet).prop_map(|(p, o)| Op::DeleteServer(p, o)),
        Just(Op::Clear),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    One(Op),
    Batch(Vec<Op>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => op().prop_map(Step::One),
        1 => prop::collection::vec(op(), 1..6).prop_map(Step::Batch),
    ]
}

fn listed_model(resp: &pb::ListServicesResponse) -> Model {
    resp.services
        .iter()
        .map(|s| {
            let sp = s.spec.clone().unwrap_or_default();
            let servers = s
                .real_servers
                .iter()
                .map(|r| {
                    let r = r.spec.clone().unwrap_or_default();
                    let octet: u8 = r.address.rsplit('.').next().unwrap().parse().unwrap();
                    (octet, r.weight)
                })
                .collect();
            (sp.key.unwrap_or_default().port, (sp.scheduler, servers))
        })
        .collect()
}

async fn send(s: &ControlService<EngineBackend>, op: &Op) -> bool {
    let change = to_change(op);
    use pb::change::Change as C;
    match change.change.expect("set") {
        C::AddService(r) => s.add_service(Request::new(r)).await.is_ok(),
        C::EditService(r) => s.edit_service(Request::new(r)).await.is_ok(),
        C::DeleteService(r) => s.delete_service(Request::new(r)).await.is_ok(),
        C::AddRealServer(r) => s.add_real_server(Request::new(r)).await.is_ok(),
        C::EditRealServer(r) => s.edit_real_server(Request::new(r)).await.is_ok(),
        C::DeleteRealServer(r) => s.delete_real_server(Request::new(r)).await.is_ok(),
        C::Clear(r) => s.clear(Request::new(r)).await.is_ok(),
        C::SetTimeouts(r) => s.set_timeouts(Request::new(r)).await.is_ok(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_match_the_model(steps in prop::collection::vec(step(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let engine = Arc::new(Engine::new(EngineOptions::default()));
            let s = ControlService::new(EngineBackend::new(engine.clone(), 1024));
            let mut model = Model::new();
            let mut generation = 0;
            for step in &steps {
                let accepted = match step {
                    Step::One(op) => {
                        let want = model_apply(&mut model.clone(), op);
                        let got = send(&s, op).await;
                        prop_assert_eq!(got, want, "{:?}", op);
                        if got { model_apply(&mut model, op); }
                        got
                    }
                    Step::Batch(ops) => {
                        let mut next = model.clone();
                        let want = ops.iter().all(|op| model_apply(&mut next, op));
                        let got = s
                            .apply(Request::new(pb::ApplyRequest {
                                changes: ops.iter().map(to_change).collect(),
                                ..Default::default()
                            }))
                            .await
                            .is_ok();
                        prop_assert_eq!(got, want, "{:?}", ops);
                        if got { model = next; }
                        got
                    }
                };
                if accepted { generation += 1; }
                let listed = s
                    .list_services(Request::new(pb::ListServicesRequest::default()))
                    .await
                    .unwrap()
                    .into_inner();
                prop_assert_eq!(listed.generation, generation);
                prop_assert_eq!(listed_model(&listed), model.clone(), "after {:?}", step);
                prop_assert_eq!(engine.stats().services.len(), model.len());
            }
            Ok(())
        })?;
    }

    #[test]
    fn random_bytes_decode_and_validate_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = pb::ApplyRequest::decode(bytes.as_slice()) {
            let _ = validate::changes(&req);
        }
        if let Ok(req) = pb::AddRealServerRequest::decode(bytes.as_slice()) {
            let _ = validate::add_real_server(&req);
        }
        if let Ok(req) = pb::AddServiceRequest::decode(bytes.as_slice()) {
            let _ = validate::add_service(&req);
        }
    }
}
