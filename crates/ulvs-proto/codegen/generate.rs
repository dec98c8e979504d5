//! The one definition of how `crates/ulvs-proto/src/gen/` is generated from `proto/`.
//!
//! Shared by `cargo xtask codegen` and the freshness test in `crates/ulvs-proto/tests/`, which
//! both include this file with `#[path]`, so the two can never disagree about the settings.

use std::io;
use std::path::{Path, PathBuf};

/// The proto files compiled, relative to the include root `proto/`.
pub const PROTOS: &[&str] = &["ulvs/v1/ulvs.proto"];

/// Name of the encoded `FileDescriptorSet` written next to the generated code.
pub const DESCRIPTOR_FILE: &str = "ulvs_v1_descriptor.bin";

/// Every file the generator writes into the output directory.
pub const OUTPUTS: &[&str] = &["ulvs.v1.rs", DESCRIPTOR_FILE];

/// The workspace root, found from the `ulvs-proto` crate directory.
pub fn workspace_root(proto_crate_dir: &Path) -> PathBuf {
    proto_crate_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| proto_crate_dir.to_path_buf())
}

/// Generates the prost messages, the tonic client and server, and the file descriptor set
/// for every file in [`PROTOS`] under `root/proto`, into `out_dir` (which must exist).
///
/// protoc comes from the `protoc-bin-vendored` crate, so nothing needs to be installed.
pub fn generate(root: &Path, out_dir: &Path) -> io::Result<()> {
    let protoc =
        protoc_bin_vendored::protoc_bin_path().map_err(|e| io::Error::other(e.to_string()))?;
    let include = root.join("proto");
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| include.join(p)).collect();

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .file_descriptor_set_path(out_dir.join(DESCRIPTOR_FILE))
        .compile_with_config(config, &protos, &[include])
}
