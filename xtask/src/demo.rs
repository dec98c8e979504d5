//! `cargo xtask demo`: a demo rig with real traffic.

use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("xtask demo: not written yet")
}
