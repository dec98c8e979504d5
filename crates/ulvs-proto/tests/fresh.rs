//! Fails when the checked-in code under `src/gen/` drifts from `proto/`.
//!
//! Regenerates into a temporary directory with the same generator `cargo xtask codegen` uses
//! and compares byte for byte. Fix a failure with `cargo xtask codegen` and commit the result.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

#[path = "../codegen/generate.rs"]
#[allow(dead_code)]
mod generate;

#[test]
fn generated_code_matches_proto() -> Result<()> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = generate::workspace_root(crate_dir);
    let tmp = tempfile::tempdir().context("create a temporary directory")?;
    generate::generate(&root, tmp.path()).context("generate code from proto/")?;

    for name in generate::OUTPUTS {
        let fresh =
            fs::read(tmp.path().join(name)).with_context(|| format!("read fresh {name}"))?;
        let checked_in = fs::read(crate_dir.join("src/gen").join(name))
            .with_context(|| format!("read checked-in src/gen/{name}"))?;
        assert!(
            fresh == checked_in,
            "src/gen/{name} is stale: run `cargo xtask codegen` and commit the result"
        );
    }
    Ok(())
}

#[test]
fn descriptor_set_names_the_service() {
    // The reflection service serves FILE_DESCRIPTOR_SET; it must describe ulvs.v1.Ulvs.
    let fds = ulvs_proto::FILE_DESCRIPTOR_SET;
    let needle = b"ulvs/v1/ulvs.proto";
    assert!(fds.windows(needle.len()).any(|w| w == needle));
    assert_eq!(ulvs_proto::SERVICE_NAME, "ulvs.v1.Ulvs");
    assert_eq!(
        <ulvs_proto::v1::ulvs_server::UlvsServer<()> as tonic::server::NamedService>::NAME,
        ulvs_proto::SERVICE_NAME
    );
}
