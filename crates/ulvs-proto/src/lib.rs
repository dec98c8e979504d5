//! Generated prost/tonic code for the ulvs.v1 control API, and a unix-socket client helper.
//!
//! The code under `src/gen/` is generated from `proto/ulvs/v1/ulvs.proto` by
//! `cargo xtask codegen` and checked in; `tests/fresh.rs` (and `cargo xtask codegen --check`)
//! fail when it drifts from the proto. Callers alias the package:
//!
//! ```
//! use ulvs_proto::v1 as pb;
//! let key = pb::ServiceKey { protocol: pb::Protocol::Tcp as i32, address: "198.18.0.10".into(), port: 80 };
//! # let _ = key;
//! ```
//!
//! Only this crate names prost types; other crates convert at their edge.

pub mod trace;

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The `ulvs.v1` package: messages, the `Ulvs` client (`ulvs_client::UlvsClient`) and server
/// (`ulvs_server::{Ulvs, UlvsServer}`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rustdoc::all
)]
pub mod v1 {
    include!("gen/ulvs.v1.rs");
}

/// The encoded `FileDescriptorSet` of `ulvs.v1` (with source info), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/ulvs_v1_descriptor.bin");

/// The fully qualified gRPC service name, `"ulvs.v1.Ulvs"` (as used by gRPC health checks).
pub const SERVICE_NAME: &str = "ulvs.v1.Ulvs";

/// A gRPC channel to a server listening on the unix socket at `path`.
///
/// The connection is made eagerly: this fails if nothing listens on `path`. Use it for clients
/// of other services on the same server (health, reflection).
pub async fn connect_unix_channel(
    path: impl AsRef<Path>,
) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.as_ref().to_path_buf();
    // The URI is only used for the :authority header; the connector ignores it.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// A `ulvs.v1.Ulvs` client connected to the daemon's unix socket at `path`.
pub async fn connect_unix(
    path: impl AsRef<Path>,
) -> Result<v1::ulvs_client::UlvsClient<Channel>, tonic::transport::Error> {
    Ok(v1::ulvs_client::UlvsClient::new(
        connect_unix_channel(path).await?,
    ))
}
