//! `cargo xtask codegen`: regenerate the checked-in gRPC code from proto/.
//!
//! `cargo xtask codegen` writes `crates/ulvs-proto/src/gen/`; `cargo xtask codegen --check`
//! regenerates into a temporary directory and fails if the checked-in files differ. The
//! generator settings live in `crates/ulvs-proto/codegen/generate.rs`, shared with the crate's
//! freshness test.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

#[path = "../../crates/ulvs-proto/codegen/generate.rs"]
#[allow(dead_code)]
mod generate;

pub fn run(check: bool) -> Result<()> {
    let root = workspace_root();
    let gen_dir = root.join("crates/ulvs-proto/src/gen");
    let tmp = tempfile::tempdir().context("create a temporary directory")?;
    generate::generate(&root, tmp.path()).context("generate code from proto/")?;

    if check {
        let stale: Vec<&str> = generate::OUTPUTS
            .iter()
            .copied()
            .filter(|name| !same_file(&tmp.path().join(name), &gen_dir.join(name)))
            .collect();
        if !stale.is_empty() {
            bail!(
                "generated code is stale ({}); run `cargo xtask codegen` and commit {}",
                stale.join(", "),
                gen_dir.display()
            );
        }
        println!("codegen: {} is up to date", gen_dir.display());
    } else {
        fs::create_dir_all(&gen_dir).with_context(|| format!("create {}", gen_dir.display()))?;
        for name in generate::OUTPUTS {
            let (from, to) = (tmp.path().join(name), gen_dir.join(name));
            fs::copy(&from, &to)
                .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        }
        println!("codegen: wrote {}", gen_dir.display());
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((fs::read(a), fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

fn workspace_root() -> PathBuf {
    // xtask lives in <root>/xtask.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
