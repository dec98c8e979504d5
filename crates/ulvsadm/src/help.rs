//! The `--help` and `--version` texts (`--help` is rendered from [`cli::command`]).

use crate::cli;

/// `ulvsadm --version`.
pub fn version() -> String {
    format!(
        "ulvsadm {} (ipvsadm-compatible client for ulvsd, IPVS v1.2.1 formats)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `ulvsadm --help`: the version line, then clap's help of [`cli::command`].
pub fn usage() -> String {
    let mut s = version();
    s.push_str(&cli::command().render_help().to_string());
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
