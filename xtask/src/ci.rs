//! `cargo xtask ci`: the exact sequence CI runs.

use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("xtask ci: not written yet")
}
