//! A client outside Rust drives the API: Python with `grpcio`, stubs generated from `proto/` at
//! test time, against the real control service (engine backend) on a unix socket. It adds a
//! service and real servers (one call each, then a batch) and reads them back.
//!
//! The Python environment is a venv under cargo's target tmp dir, made once with
//! `pip install grpcio grpcio-tools` (PyPI) and reused by later runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use tokio::sync::oneshot;
use ulvs_control::{ControlService, EngineBackend, bind_unix};
use ulvs_engine::{Engine, EngineOptions, ForwardMethod};

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A venv with grpcio and grpcio-tools; created (and cached) under the target tmp dir.
fn python_with_grpc() -> Result<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-grpc-venv");
    let python = venv.join("bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import grpc, grpc_tools.protoc"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ready {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("python3 -m venv (python3 with the venv module is needed)")?;
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "grpcio",
            "grpcio-tools",
        ]))
        .context("pip install grpcio grpcio-tools")?;
    }
    Ok(python)
}

const SCRIPT: &str = r#"
import sys
import grpc
from ulvs.v1 import ulvs_pb2 as pb, ulvs_pb2_grpc as rpc

# grpc-core's default :authority for a unix socket is the socket path, which is not a valid
# HTTP/2 authority (the server resets the stream); name the authority as grpcurl does.
channel = grpc.insecure_channel("unix:" + sys.argv[1],
                                options=[("grpc.default_authority", "localhost")])
stub = rpc.UlvsStub(channel)
key = pb.ServiceKey(protocol=pb.PROTOCOL_TCP, address="198.18.0.10", port=80)
stub.AddService(pb.AddServiceRequest(service=pb.ServiceSpec(
    key=key, scheduler="wrr", labels={"owner": "python"})))
for addr, weight in (("198.18.1.1", 3), ("198.18.1.2", 1)):
    stub.AddRealServer(pb.AddRealServerRequest(service=key, real_server=pb.RealServerSpec(
        address=addr, port=8080, forward=pb.FORWARD_METHOD_MASQ, weight=weight)))

# A batch: a UDP service with one real server, all or none.
ukey = pb.ServiceKey(protocol=pb.PROTOCOL_UDP, address="198.18.0.10", port=53)
applied = stub.Apply(pb.ApplyRequest(changes=[
    pb.Change(add_service=pb.AddServiceRequest(service=pb.ServiceSpec(key=ukey, scheduler="rr"))),
    pb.Change(add_real_server=pb.AddRealServerRequest(service=ukey, real_server=pb.RealServerSpec(
        address="198.18.1.5", port=53, forward=pb.FORWARD_METHOD_MASQ, weight=1))),
]))

# Errors carry the gRPC code and the field.
try:
    stub.AddRealServer(pb.AddRealServerRequest(service=key, real_server=pb.RealServerSpec(
        address="198.18.1.9", port=70000, forward=pb.FORWARD_METHOD_MASQ)))
    print("bad port accepted")
    sys.exit(1)
except grpc.RpcError as e:
    print("error", e.code().name, e.details())

listed = stub.ListServices(pb.ListServicesRequest(label_selector={"owner": "python"}))
print("generation", applied.generation, listed.generation)
for s in listed.services:
    print("service", pb.Protocol.Name(s.spec.key.protocol), s.spec.key.address, s.spec.key.port,
          s.spec.scheduler, s.spec.labels["owner"], s.generation)
    for r in s.real_servers:
        print("real_server", r.spec.address, r.spec.port,
              pb.ForwardMethod.Name(r.spec.forward), r.spec.weight)
print("all", len(stub.ListServices(pb.ListServicesRequest()).services))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_adds_and_reads_back() -> Result<()> {
    let python = tokio::task::spawn_blocking(python_with_grpc).await??;

    // Stubs from the proto, at test time.
    let dir = tempfile::tempdir()?;
    let proto_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs)?;
    run(Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto_root)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg(proto_root.join("ulvs/v1/ulvs.proto")))
    .context("generate Python stubs")?;

    let engine = Arc::new(Engine::new(EngineOptions::default()));
    let service = ControlService::new(EngineBackend::new(engine, 4096));
    let socket = dir.path().join("ulvsd.sock");
    let bound = bind_unix(&socket)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(service.clone(), async {
        let _ = stopped.await;
    }));

    let script = dir.path().join("client.py");
    std::fs::write(&script, SCRIPT)?;
    let out = {
        let (python, script, socket, stubs) = (
            python.clone(),
            script.clone(),
            socket.clone(),
            stubs.clone(),
        );
        tokio::task::spawn_blocking(move || {
            run(Command::new(python)
                .arg(script)
                .arg(socket)
                .env("PYTHONPATH", stubs))
        })
        .await??
    };
    let _ = stop.send(());
    server.await??;

    assert_eq!(
        out,
        concat!(
            "error INVALID_ARGUMENT real_server.port: 70000 is out of range (0-65535)\n",
            "generation 4 4\n",
            "service PROTOCOL_TCP 198.18.0.10 80 wrr python 3\n",
            "real_server 198.18.1.1 8080 FORWARD_METHOD_MASQ 3\n",
            "real_server 198.18.1.2 8080 FORWARD_METHOD_MASQ 1\n",
            "all 2\n",
        ),
        "python client output"
    );
    // And the engine configuration is what the Python client asked for.
    let config = service.config().await;
    assert_eq!(config.services.len(), 2);
    let tcp = &config.services[0];
    assert_eq!(tcp.dests.len(), 2);
    assert!(tcp.dests.iter().all(|d| d.forward == ForwardMethod::Masq));
    Ok(())
}
