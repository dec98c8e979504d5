//! Observability end to end (needs root): the real `ulvsd` in a director namespace exports its
//! counters over OTLP to an in-process collector (a tonic server implementing the OTLP metrics
//! and trace services) and serves them on a Prometheus endpoint; both are checked against the
//! control API after real traffic, and a control request's trace is checked to carry the
//! caller's trace id.
//!
//! The real `ulvs-agent` exports its own spans to the same collector: its `apply` (a child of
//! `$TRACEPARENT`, as a CI job would set it) shows each step as a span, and ulvsd's server span
//! of the `Apply` request is a child of the agent's `apply_batch` span in the same trace.
//!
//! The Prometheus values are compared with `ulvsadm -L -n --stats --exact` and with the
//! `ListServices` counters over gRPC (which also carry the active/inactive counts).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use integration::topology::vip_tcp;
use integration::{BIN_DIR_ENV, Bins, NatRig, require_root, run_cmd, wait_until};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use ulvs_proto::trace::TraceParent;
use ulvs_proto::v1 as pb;

const DEADLINE: Duration = Duration::from_secs(20);
const CONNECTIONS: usize = 24;
const METRICS_ADDR: &str = "127.0.0.1:9464";

/// What the in-process collector received.
#[derive(Debug, Default)]
struct Received {
    /// Latest value of each (metric name, sorted attributes).
    points: BTreeMap<(String, Vec<(String, String)>), i64>,
    /// Latest count of each histogram series.
    histograms: BTreeMap<(String, Vec<(String, String)>), u64>,
    spans: Vec<Span>,
    /// The `service.name` of the process that sent each span, by span id.
    senders: BTreeMap<Vec<u8>, String>,
}

/// The `service.name` attribute of a resource.
fn service_name(r: Option<&Resource>) -> String {
    r.and_then(|r| {
        attrs(&r.attributes)
            .into_iter()
            .find(|(k, _)| k == "service.name")
    })
    .map(|(_, v)| v)
    .unwrap_or_default()
}

#[derive(Debug, Clone, Default)]
struct Collector(Arc<Mutex<Received>>);

fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = kvs
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect();
    out.sort();
    out
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut rx = self.0.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let dps = match m.data {
                        Some(metric::Data::Sum(s)) => s.data_points,
                        Some(metric::Data::Gauge(g)) => g.data_points,
                        Some(metric::Data::Histogram(h)) => {
                            for dp in h.data_points {
                                rx.histograms
                                    .insert((m.name.clone(), attrs(&dp.attributes)), dp.count);
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    for dp in dps {
                        let v = match dp.value {
                            Some(number_data_point::Value::AsInt(i)) => i,
                            Some(number_data_point::Value::AsDouble(d)) => d as i64,
                            None => continue,
                        };
                        rx.points.insert((m.name.clone(), attrs(&dp.attributes)), v);
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut rx = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let sender = service_name(rs.resource.as_ref());
            for ss in rs.scope_spans {
                for span in ss.spans {
                    rx.senders.insert(span.span_id.clone(), sender.clone());
                    rx.spans.push(span);
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn point(&self, name: &str, want: &[(&str, &str)]) -> Option<i64> {
        let mut want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        want.sort();
        self.0
            .lock()
            .unwrap()
            .points
            .get(&(name.to_owned(), want))
            .copied()
    }

    fn spans_of(&self, trace_id: &[u8]) -> Vec<Span> {
        let rx = self.0.lock().unwrap();
        rx.spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// The span named `name` sent by `sender` in trace `trace_id`.
    fn span(&self, trace_id: &[u8], sender: &str, name: &str) -> Option<Span> {
        let rx = self.0.lock().unwrap();
        rx.spans
            .iter()
            .find(|s| {
                s.trace_id == trace_id
                    && s.name == name
                    && rx.senders.get(&s.span_id).map(String::as_str) == Some(sender)
            })
            .cloned()
    }

    /// Every span `sender` sent.
    fn spans_from(&self, sender: &str) -> Vec<Span> {
        let rx = self.0.lock().unwrap();
        rx.spans
            .iter()
            .filter(|s| rx.senders.get(&s.span_id).map(String::as_str) == Some(sender))
            .cloned()
            .collect()
    }

    /// Starts serving the OTLP metrics and trace services on `listener` (non-blocking).
    fn serve(
        &self,
        rt: &tokio::runtime::Runtime,
        listener: std::net::TcpListener,
    ) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
        let _rt = rt.enter();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(
            tokio::net::TcpListener::from_std(listener)?,
        );
        Ok(rt.spawn(
            tonic::transport::Server::builder()
                .add_service(MetricsServiceServer::new(self.clone()))
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(incoming),
        ))
    }
}

/// A collector listening on the director's loopback; returns its OTLP endpoint URL.
fn director_collector(
    rig: &NatRig,
    rt: &tokio::runtime::Runtime,
    collector: &Collector,
) -> Result<(
    String,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
)> {
    rig.director.link_up("lo")?;
    let listener = rig
        .director
        .run(|| std::net::TcpListener::bind("127.0.0.1:0"))?
        .context("bind the collector in the director namespace")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let task = collector.serve(rt, listener)?;
    Ok((format!("http://127.0.0.1:{port}"), task))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// A rig with a `rr` TCP service over its real servers, configured with the real `ulvsadm`.
fn configure(rig: &NatRig) -> Result<String> {
    let vip = vip_tcp().to_string();
    rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"])?;
    for rs in &rig.servers {
        rig.ulvsadm(&["-a", "-t", &vip, "-r", &rs.tcp(), "-m", "-w", "1"])?;
    }
    Ok(vip)
}

/// The services as `ListServices` reports them.
fn list_services(rt: &tokio::runtime::Runtime, rig: &NatRig) -> Result<Vec<pb::Service>> {
    rt.block_on(async {
        let mut c = ulvs_proto::connect_unix(rig.socket()).await?;
        let r = c.list_services(pb::ListServicesRequest::default()).await?;
        anyhow::Ok(r.into_inner().services)
    })
}

#[test]
fn otlp_export_carries_real_counters_and_the_callers_trace_id() -> Result<()> {
    require_root()?;
    let mut rig = NatRig::new(Bins::from_env()?, 2)?;
    let rt = runtime()?;
    let collector = Collector::default();
    let (endpoint, collector_task) = director_collector(&rig, &rt, &collector)?;
    rig.start_ulvsd_with_env(
        &["--otlp-endpoint", &endpoint],
        &[
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )?;
    let vip = configure(&rig)?;

    // Real traffic; every probe is one scheduled connection.
    let replies = rig.tcp_probes(vip_tcp(), CONNECTIONS, Duration::from_secs(30))?;
    ensure!(replies.len() == CONNECTIONS, "{} replies", replies.len());
    let service = format!("TCP {vip}");
    let n = i64::try_from(CONNECTIONS)?;
    wait_until("OTLP to carry the connections", DEADLINE, || {
        Ok(collector.point("ulvs.service.connections", &[("service", &service)]) == Some(n))
    })
    .with_context(|| format!("{:#?}", collector.0.lock().unwrap().points))?;
    let listed = list_services(&rt, &rig)?;
    let stats = listed[0].stats.context("service stats")?;
    wait_until("OTLP packets to match ListServices", DEADLINE, || {
        let in_pkts = collector.point(
            "ulvs.service.packets",
            &[("service", &service), ("direction", "in")],
        );
        let in_bytes = collector.point(
            "ulvs.service.bytes",
            &[("service", &service), ("direction", "in")],
        );
        Ok(
            in_pkts.is_some_and(|v| v as u64 >= stats.in_packets && v > n)
                && in_bytes.is_some_and(|v| v as u64 >= stats.in_bytes),
        )
    })?;
    let mut per_server = 0;
    for rs in &rig.servers {
        per_server += collector
            .point(
                "ulvs.real_server.connections",
                &[("service", &service), ("real_server", &rs.tcp())],
            )
            .with_context(|| format!("no connections point for {}", rs.tcp()))?;
    }
    ensure!(per_server == n, "real servers sum to {per_server}, not {n}");
    ensure!(
        collector.point("ulvs.conntrack.capacity", &[]) == Some(1 << 20),
        "conntrack capacity"
    );
    wait_until("control operations in OTLP", DEADLINE, || {
        Ok(collector.point(
            "ulvs.control.operations",
            &[("method", "AddRealServer"), ("result", "ok")],
        ) == Some(i64::try_from(rig.servers.len())?))
    })?;

    wait_until("control durations in OTLP", DEADLINE, || {
        let key = (
            "ulvs.control.duration".to_owned(),
            vec![
                ("method".to_owned(), "AddRealServer".to_owned()),
                ("result".to_owned(), "ok".to_owned()),
            ],
        );
        Ok(collector.0.lock().unwrap().histograms.get(&key).copied()
            == Some(u64::try_from(rig.servers.len())?))
    })
    .with_context(|| format!("{:#?}", collector.0.lock().unwrap().histograms))?;

    // A request with a known trace context: the daemon's spans join that trace.
    let caller = TraceParent::parse("00-5a1b2c3d4e5f60718293a4b5c6d7e8f9-1122334455667788-01")
        .context("caller traceparent")?;
    rt.block_on(async {
        let mut c = ulvs_proto::connect_unix(rig.socket()).await?;
        let mut req = tonic::Request::new(pb::GetInfoRequest {});
        caller.inject(req.metadata_mut());
        c.get_info(req).await?;
        anyhow::Ok(())
    })?;
    wait_until("the GetInfo spans in the caller's trace", DEADLINE, || {
        Ok(collector.spans_of(&caller.trace_id).len() >= 2)
    })?;
    let spans = collector.spans_of(&caller.trace_id);
    let server = spans
        .iter()
        .find(|s| s.name == "ulvs.v1.Ulvs/GetInfo")
        .with_context(|| format!("no ulvs.v1.Ulvs/GetInfo span: {spans:#?}"))?;
    ensure!(
        server.parent_span_id == caller.span_id,
        "the server span's parent is not the caller's span: {server:?}"
    );
    ensure!(
        spans
            .iter()
            .any(|s| s.name == "control" && s.parent_span_id == server.span_id),
        "no control span under the server span: {spans:#?}"
    );

    // ulvsadm joins the trace in $TRACEPARENT with a span of its own.
    let parent = TraceParent::new_root();
    let mut cmd = Command::new(&Bins::from_env()?.ulvsadm);
    cmd.env("ULVS_SOCKET", rig.socket())
        .env("TRACEPARENT", parent.to_string())
        .args(["-L", "-n"]);
    run_cmd(&mut cmd)?;
    wait_until(
        "ulvsadm's ListServices in its caller's trace",
        DEADLINE,
        || {
            Ok(collector.spans_of(&parent.trace_id).iter().any(|s| {
                s.name == "ulvs.v1.Ulvs/ListServices" && s.parent_span_id != parent.span_id
            }))
        },
    )?;

    rig.stop_ulvsd(Duration::from_secs(10))?;
    collector_task.abort();
    Ok(())
}

fn agent_bin() -> Result<PathBuf> {
    let dir = std::env::var_os(BIN_DIR_ENV)
        .context("ULVS_BIN_DIR is not set (run `cargo xtask integration`)")?;
    let p = PathBuf::from(dir).join("ulvs-agent");
    ensure!(
        p.is_file(),
        "{} not found (cargo build -p ulvs-agent)",
        p.display()
    );
    Ok(p)
}

/// A desired state: the rr TCP service over the rig's real servers with `weight`.
fn agent_config(rig: &NatRig, weight: u32) -> String {
    let mut out = format!(
        "service \"web\" {{\n  address = \"{}\"\n  port = {}\n  scheduler = \"rr\"\n  forward = \"masq\"\n",
        vip_tcp().ip(),
        vip_tcp().port()
    );
    for rs in &rig.servers {
        out.push_str(&format!(
            "  real_server {{\n    address = \"{}\"\n    port = 8080\n    weight = {weight}\n  }}\n",
            rs.addr
        ));
    }
    out.push_str("}\n");
    out
}

/// Runs the real agent in the director namespace (where the collector listens).
fn run_agent(rig: &NatRig, env: &[(&str, String)], args: &[&str]) -> Result<String> {
    let mut cmd = rig.director.command(agent_bin()?);
    cmd.arg("--socket")
        .arg(rig.socket())
        .arg("-c")
        .arg(rig.dir().join("agent.hcl"))
        .args(args)
        .env_remove("TRACEPARENT")
        .env_remove("OTEL_BSP_SCHEDULE_DELAY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(&mut cmd)
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_agents_trace_carries_its_steps_and_the_daemons_apply() -> Result<()> {
    require_root()?;
    let mut rig = NatRig::new(Bins::from_env()?, 2)?;
    let rt = runtime()?;
    let collector = Collector::default();
    let (endpoint, collector_task) = director_collector(&rig, &rt, &collector)?;
    rig.start_ulvsd_with_env(
        &["--otlp-endpoint", &endpoint],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )?;
    std::fs::write(rig.dir().join("agent.hcl"), agent_config(&rig, 1))?;

    // `apply` under a CI job's trace. The agent keeps the default 5 s batch delay: its spans
    // arrive only because it flushes them at exit.
    let ci = TraceParent::new_root();
    let out = run_agent(
        &rig,
        &[("TRACEPARENT", ci.to_string())],
        &["--otlp-endpoint", &endpoint, "apply", "--auto-approve"],
    )?;
    ensure!(out.contains("Apply complete!"), "{out}");
    let agent_spans = collector.spans_from("ulvs-agent");
    let root = collector
        .span(&ci.trace_id, "ulvs-agent", "ulvs-agent apply")
        .with_context(|| format!("no `ulvs-agent apply` span in the CI trace: {agent_spans:#?}"))?;
    ensure!(
        root.parent_span_id == ci.span_id,
        "the agent's root span is not a child of $TRACEPARENT: {root:?}"
    );
    let step = |name: &str| {
        collector
            .span(&ci.trace_id, "ulvs-agent", name)
            .with_context(|| {
                format!(
                    "no agent span {name}: {:#?}",
                    collector.spans_from("ulvs-agent")
                )
            })
    };
    for name in [
        "read_desired_state",
        "observe_live_state",
        "plan",
        "apply_batch",
    ] {
        let s = step(name)?;
        ensure!(
            s.parent_span_id == root.span_id,
            "{name} is not a step of the apply: {s:?}"
        );
    }
    let batch = step("apply_batch")?;
    let observe = step("observe_live_state")?;
    // ulvsd's server spans join the agent's trace under the step that made the request.
    wait_until("ulvsd's Apply span in the agent's trace", DEADLINE, || {
        Ok(collector
            .span(&ci.trace_id, "ulvsd", "ulvs.v1.Ulvs/Apply")
            .is_some())
    })
    .with_context(|| format!("{:#?}", collector.spans_of(&ci.trace_id)))?;
    let apply = collector
        .span(&ci.trace_id, "ulvsd", "ulvs.v1.Ulvs/Apply")
        .context("Apply span")?;
    ensure!(
        apply.trace_id == batch.trace_id && apply.parent_span_id == batch.span_id,
        "ulvsd's Apply span (trace {}, parent {}) is not a child of the agent's apply_batch \
         (trace {}, span {})",
        hex(&apply.trace_id),
        hex(&apply.parent_span_id),
        hex(&batch.trace_id),
        hex(&batch.span_id)
    );
    wait_until(
        "ulvsd's ListServices span under observe_live_state",
        DEADLINE,
        || {
            Ok(collector.spans_of(&ci.trace_id).iter().any(|s| {
                s.name == "ulvs.v1.Ulvs/ListServices" && s.parent_span_id == observe.span_id
            }))
        },
    )?;

    // `plan` of a change: the daemon's dry run of the batch is a child of the agent's dry_run.
    std::fs::write(rig.dir().join("agent.hcl"), agent_config(&rig, 3))?;
    let out = run_agent(&rig, &[], &["--otlp-endpoint", &endpoint, "plan"])?;
    ensure!(out.contains("to change"), "{out}");
    let plan_root = collector
        .spans_from("ulvs-agent")
        .into_iter()
        .find(|s| s.name == "ulvs-agent plan")
        .context("no `ulvs-agent plan` span")?;
    ensure!(plan_root.parent_span_id.is_empty(), "{plan_root:?}");
    let dry_run = collector
        .span(&plan_root.trace_id, "ulvs-agent", "dry_run")
        .context("no dry_run span in the plan's trace")?;
    wait_until(
        "ulvsd's dry-run Apply under the agent's dry_run",
        DEADLINE,
        || {
            Ok(collector
                .spans_of(&plan_root.trace_id)
                .iter()
                .any(|s| s.name == "ulvs.v1.Ulvs/Apply" && s.parent_span_id == dry_run.span_id))
        },
    )?;

    // Without an OTLP endpoint the agent still passes $TRACEPARENT on (as a span of its own).
    let job = TraceParent::new_root();
    run_agent(&rig, &[("TRACEPARENT", job.to_string())], &["show"])?;
    wait_until("ulvsd's ListServices in the job's trace", DEADLINE, || {
        Ok(collector
            .spans_of(&job.trace_id)
            .iter()
            .any(|s| s.name == "ulvs.v1.Ulvs/ListServices" && s.parent_span_id != job.span_id))
    })?;

    rig.stop_ulvsd(Duration::from_secs(10))?;
    collector_task.abort();
    Ok(())
}

/// `GET /metrics` from inside the director namespace; returns the body.
fn scrape(rig: &NatRig) -> Result<String> {
    rig.director.run(|| -> Result<String> {
        let mut s = TcpStream::connect(METRICS_ADDR).context("connect to the metrics endpoint")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: ulvsd\r\nConnection: close\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (head, body) = resp.split_once("\r\n\r\n").context("no HTTP header end")?;
        ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
        ensure!(head.contains("text/plain; version=0.0.4"), "{head}");
        Ok(body.to_owned())
    })?
}

/// The samples of a text-format body, `name{labels}` → value.
fn samples(body: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line.rsplit_once(' ').context("sample without a value")?;
        if k.contains("_sum{") {
            // Histogram sums are seconds, not counts.
            let _: f64 = v.parse().with_context(|| line.to_owned())?;
            continue;
        }
        out.insert(k.to_owned(), v.parse().with_context(|| line.to_owned())?);
    }
    Ok(out)
}

fn get(samples: &BTreeMap<String, u64>, key: &str) -> Result<u64> {
    match samples.get(key) {
        Some(v) => Ok(*v),
        None => bail!("no sample {key}"),
    }
}

#[test]
fn prometheus_scrape_matches_the_list_services_counters() -> Result<()> {
    require_root()?;
    let mut rig = NatRig::new(Bins::from_env()?, 2)?;
    rig.director.link_up("lo")?;
    rig.start_ulvsd_with_env(&["--metrics-listen", METRICS_ADDR], &[])?;
    let vip = configure(&rig)?;
    // A refused request is counted with its status code.
    ensure!(rig.ulvsadm(&["-A", "-t", &vip, "-s", "rr"]).is_err());
    let replies = rig.tcp_probes(vip_tcp(), CONNECTIONS, Duration::from_secs(30))?;
    ensure!(replies.len() == CONNECTIONS, "{} replies", replies.len());

    // Wait for the last FINs and ACKs: two scrapes in a row agree.
    let mut last = String::new();
    wait_until("the counters to settle", DEADLINE, || {
        let body = scrape(&rig)?;
        let same = body == last;
        last = body;
        Ok(same)
    })?;
    let rt = runtime()?;
    let listed = list_services(&rt, &rig)?;
    let m = samples(&scrape(&rig)?)?;
    ensure!(listed.len() == 1, "{listed:?}");
    let svc = &listed[0];
    let s = svc.stats.context("service stats")?;
    let label = format!("service=\"TCP {vip}\"");
    let checks = [
        (
            format!("ulvs_service_connections_total{{{label}}}"),
            s.connections,
        ),
        (
            format!("ulvs_service_packets_total{{{label},direction=\"in\"}}"),
            s.in_packets,
        ),
        (
            format!("ulvs_service_packets_total{{{label},direction=\"out\"}}"),
            s.out_packets,
        ),
        (
            format!("ulvs_service_bytes_total{{{label},direction=\"in\"}}"),
            s.in_bytes,
        ),
        (
            format!("ulvs_service_bytes_total{{{label},direction=\"out\"}}"),
            s.out_bytes,
        ),
    ];
    ensure!(s.connections == CONNECTIONS as u64, "{s:?}");
    for (key, want) in checks {
        ensure!(
            get(&m, &key)? == want,
            "{key}: scrape {} vs ListServices {want}",
            get(&m, &key)?
        );
    }
    for rs in &svc.real_servers {
        let spec = rs.spec.as_ref().context("real server spec")?;
        let l = format!("{label},real_server=\"{}:{}\"", spec.address, spec.port);
        let st = rs.stats.context("real server stats")?;
        let checks = [
            (
                format!("ulvs_real_server_connections_total{{{l}}}"),
                st.connections,
            ),
            (
                format!("ulvs_real_server_packets_total{{{l},direction=\"in\"}}"),
                st.in_packets,
            ),
            (
                format!("ulvs_real_server_bytes_total{{{l},direction=\"out\"}}"),
                st.out_bytes,
            ),
            (
                format!("ulvs_real_server_connection_count{{{l},state=\"active\"}}"),
                u64::from(rs.active_connections),
            ),
            (
                format!("ulvs_real_server_connection_count{{{l},state=\"inactive\"}}"),
                u64::from(rs.inactive_connections),
            ),
            (format!("ulvs_real_server_weight{{{l}}}"), 1),
            (
                format!("ulvs_real_server_state{{{l},state=\"available\"}}"),
                1,
            ),
        ];
        for (key, want) in checks {
            ensure!(
                get(&m, &key)? == want,
                "{key}: scrape {} vs ListServices {want}",
                get(&m, &key)?
            );
        }
    }
    // `ulvsadm -L -n --stats --exact`: Conns InPkts OutPkts InBytes OutBytes per row.
    let table = rig.ulvsadm(&["-L", "-n", "--stats", "--exact"])?;
    let mut rows = 0;
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let key = match f.first() {
            Some(&"TCP") if f.len() == 7 => label.clone(),
            Some(&"->") if f.len() == 7 => format!("{label},real_server=\"{}\"", f[1]),
            _ => continue,
        };
        rows += 1;
        let prefix = if f[0] == "TCP" {
            "service"
        } else {
            "real_server"
        };
        let cols = [
            format!("ulvs_{prefix}_connections_total{{{key}}}"),
            format!("ulvs_{prefix}_packets_total{{{key},direction=\"in\"}}"),
            format!("ulvs_{prefix}_packets_total{{{key},direction=\"out\"}}"),
            format!("ulvs_{prefix}_bytes_total{{{key},direction=\"in\"}}"),
            format!("ulvs_{prefix}_bytes_total{{{key},direction=\"out\"}}"),
        ];
        for (col, field) in cols.iter().zip(&f[2..]) {
            let want: u64 = field.parse().with_context(|| format!("{line:?}"))?;
            ensure!(
                get(&m, col)? == want,
                "{col}: scrape {} vs ulvsadm {want}\n{table}",
                get(&m, col)?
            );
        }
    }
    ensure!(rows == 1 + rig.servers.len(), "rows of --stats:\n{table}");
    ensure!(get(&m, "ulvs_conntrack_capacity")? == 1 << 20);
    ensure!(
        get(
            &m,
            "ulvs_control_operations_total{method=\"AddService\",result=\"ok\"}"
        )? == 1
    );
    ensure!(
        get(
            &m,
            "ulvs_control_operations_total{method=\"AddService\",result=\"already_exists\"}"
        )? == 1
    );
    // Timed too: the refusal and the success, each in its own series, every bucket count
    // cumulative up to +Inf.
    for result in ["ok", "already_exists"] {
        let l = format!("method=\"AddService\",result=\"{result}\"");
        ensure!(get(&m, &format!("ulvs_control_duration_seconds_count{{{l}}}"))? == 1);
        ensure!(
            get(
                &m,
                &format!("ulvs_control_duration_seconds_bucket{{{l},le=\"+Inf\"}}")
            )? == 1
        );
    }
    // A stream (ListConnections, through `ulvsadm -L -c`) is counted with its final result
    // once it has ended.
    rig.ulvsadm(&["-L", "-c", "-n"])?;
    wait_until("ListConnections counted", DEADLINE, || {
        let m = samples(&scrape(&rig)?)?;
        let l = "method=\"ListConnections\",result=\"ok\"";
        Ok(
            m.get(&format!("ulvs_control_operations_total{{{l}}}")) == Some(&1)
                && m.get(&format!("ulvs_control_duration_seconds_count{{{l}}}")) == Some(&1),
        )
    })?;
    // Quiescing a real server shows in its state.
    let rs0 = rig.servers[0].tcp();
    rig.ulvsadm(&["-e", "-t", &vip, "-r", &rs0, "-m", "-w", "0"])?;
    let m = samples(&scrape(&rig)?)?;
    let l = format!("{label},real_server=\"{rs0}\"");
    ensure!(
        get(
            &m,
            &format!("ulvs_real_server_state{{{l},state=\"quiescent\"}}")
        )? == 1
    );
    ensure!(get(&m, &format!("ulvs_real_server_weight{{{l}}}"))? == 0);
    Ok(())
}
