//! The TCP listener: TLS with a client certificate and a bearer token works; plain text, a
//! client without a certificate, one with a certificate from another CA, and calls without the
//! token are refused. Certificates are generated at test time (rcgen) and the server listens on
//! 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use ulvs_control::{EngineBackend, ServeError, TcpOptions, bind_tcp};
use ulvs_engine::{Engine, EngineOptions};
use ulvs_proto::v1 as pb;
use ulvs_proto::v1::ulvs_client::UlvsClient;
use ulvs_testkit::{ExtendedKeyUsagePurpose, Leaf, Pki, Server};

const TOKEN: &str = "test-token-0123456789";

/// The control service over an engine on a TLS listener that wants a client certificate from
/// `pki`, and `token` if given.
async fn start(pki: &Pki, token: Option<&str>) -> Result<Server> {
    let engine = Arc::new(Engine::new(EngineOptions::default()));
    Server::tcp(EngineBackend::new(engine, 4096), pki.tcp_options(token)?).await
}

async fn tls_channel(addr: SocketAddr, ca: &str, client: Option<&Leaf>) -> Result<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(leaf) = client {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?)
}

fn list_request(token: Option<&str>) -> tonic::Request<pb::ListServicesRequest> {
    let mut req = tonic::Request::new(pb::ListServicesRequest::default());
    if let Some(t) = token {
        let value: MetadataValue<_> = format!("Bearer {t}").parse().expect("ascii");
        req.metadata_mut().insert("authorization", value);
    }
    req
}

#[tokio::test]
async fn mtls_and_token_are_required() -> Result<()> {
    let pki = Pki::new("ulvs test CA")?;
    let server = start(&pki, Some(TOKEN)).await?;
    let client_cert = pki.leaf(&["ulvsadm"], ExtendedKeyUsagePurpose::ClientAuth)?;

    // TLS, client certificate and token: the API answers, writes included.
    let mut c = UlvsClient::new(tls_channel(server.addr(), &pki.ca_pem, Some(&client_cert)).await?);
    let mut add = tonic::Request::new(pb::AddServiceRequest {
        service: Some(pb::ServiceSpec {
            key: Some(pb::ServiceKey {
                protocol: pb::Protocol::Tcp as i32,
                address: "198.18.0.1".into(),
                port: 80,
            }),
            scheduler: "rr".into(),
            ..Default::default()
        }),
    });
    add.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    c.add_service(add).await.context("authorised AddService")?;
    let listed = c
        .list_services(list_request(Some(TOKEN)))
        .await?
        .into_inner();
    assert_eq!(listed.services.len(), 1);

    // Same connection, no token or a wrong one: UNAUTHENTICATED.
    let err = c
        .list_services(list_request(None))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .list_services(list_request(Some("test-token-0123456788")))
        .await
        .expect_err("wrong token");
    assert_eq!(err.code(), Code::Unauthenticated);

    // Health stays open (no token) for probes, over the same mTLS connection.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tls_channel(server.addr(), &pki.ca_pem, Some(&client_cert)).await?,
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: ulvs_proto::SERVICE_NAME.into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Plain text: no gRPC conversation at all.
    let plain = Endpoint::from_shared(format!("http://{}", server.addr()))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10));
    match plain.connect().await {
        Err(_) => {}
        Ok(ch) => {
            let err = UlvsClient::new(ch)
                .list_services(list_request(Some(TOKEN)))
                .await
                .expect_err("plain text must be refused");
            assert_ne!(err.code(), Code::Ok);
        }
    }

    // TLS without a client certificate, or with one from another CA: the handshake fails.
    for (what, leaf) in [
        ("no client certificate", None),
        (
            "a certificate from another CA",
            Some(Pki::new("other CA")?.leaf(&["intruder"], ExtendedKeyUsagePurpose::ClientAuth)?),
        ),
    ] {
        match tls_channel(server.addr(), &pki.ca_pem, leaf.as_ref()).await {
            Err(_) => {}
            Ok(ch) => {
                let err = UlvsClient::new(ch)
                    .list_services(list_request(Some(TOKEN)))
                    .await
                    .expect_err(what);
                // The server's TLS alert, as the client's transport error.
                let text = format!("{err:?}").to_lowercase();
                assert!(text.contains("alert"), "{what}: {err:?}");
            }
        }
    }

    server.stop().await
}

#[tokio::test]
async fn broken_tls_material_refuses_to_start() -> Result<()> {
    let err = bind_tcp(
        "127.0.0.1:0".parse()?,
        TcpOptions {
            cert_pem: b"not a certificate".to_vec(),
            key_pem: b"not a key".to_vec(),
            client_ca_pem: None,
            token: None,
        },
    )
    .await
    .expect_err("garbage PEM must be refused at bind time");
    assert!(matches!(err, ServeError::Transport(_)), "{err:?}");
    Ok(())
}
