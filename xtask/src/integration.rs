//! `cargo xtask integration`: the namespace integration tests.

use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("xtask integration: not written yet")
}
