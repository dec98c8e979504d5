//! `cargo xtask codegen`: regenerate the checked-in gRPC code from proto/.

use anyhow::Result;

pub fn run(check: bool) -> Result<()> {
    let _ = check;
    anyhow::bail!("xtask codegen: not written yet")
}
