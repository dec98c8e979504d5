//! ulvsadm: an ipvsadm-compatible command-line client for ulvsd, speaking `ulvs.v1` gRPC over
//! a unix socket, or over TCP with TLS (`--server`).
//!
//! # Layout
//! - [`cli`]: the clap declaration of every option; `--help`, `--man` and `--completions` are
//!   rendered from it and the parser's option table is derived from it.
//! - [`parse`]: ipvsadm's grammar, argument words to a [`parse::Command`]; no I/O except
//!   optional name lookups through a [`names::Resolver`].
//! - [`format`](mod@format): pure functions from `ulvs.v1` messages to ipvsadm's `-L` text and to JSON.
//! - [`counters`]: the same for `-L --stats`, `--rate` (`--exact`), `-c` and `--timeout`.
//! - [`client`]: socket discovery, connection, one RPC sequence per command, error messages.
//! - [`names`]: `/etc/services` and `/etc/hosts` lookups (never DNS while listing).
//! - [`rules`]: `-S` (ipvsadm's rule format, plus thresholds) and `-R` (rules to one batch).
//! - [`explain`](mod@explain): `--explain`'s answer as text or JSON.
//! - [`model`]: the CLI's own service / real-server types; only `client` and `rules` build
//!   proto messages.
//!
//! # Behaviour contract
//! - Usage errors print `ulvsadm: <ipvsadm's message>` on stderr and exit 2.
//! - `-R` reads all of standard input first; a bad line prints `ulvsadm: line N: <message>` and
//!   exits 2 with nothing applied; then the whole input is one `Apply` batch.
//! - Daemon errors print `ulvsadm: <Rpc>: <message>` and exit 1; an unreachable daemon prints
//!   `ulvsadm: cannot connect to ulvsd at <path or URL>: <reason>` and exits 1.

pub mod cli;
pub mod client;
pub mod counters;
pub mod explain;
pub mod format;
pub mod help;
pub mod model;
pub mod names;
pub mod parse;
pub mod rules;

use std::io::Write;

use crate::names::SystemNames;
use crate::parse::{Command, TRY_HELP};

/// Runs ulvsadm with `args` (without the program name) and returns the exit status.
pub fn run<S: AsRef<str>>(args: &[S]) -> u8 {
    let names = SystemNames::new();
    let inv = match parse::parse_args(args, &names) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("ulvsadm: {e}");
            if e.wants_try_help() {
                eprintln!("{TRY_HELP}");
            }
            return 2;
        }
    };
    let text = match &inv.command {
        Command::Help => help::usage(),
        Command::Version => help::version(),
        Command::Man => cli::man_page(),
        Command::Completions(shell) => cli::completions(*shell),
        cmd => {
            let restore = if matches!(cmd, Command::Restore) {
                let mut input = String::new();
                if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
                    eprintln!("ulvsadm: cannot read the rules from standard input: {e}");
                    return 1;
                }
                match rules::restore_changes(&input, &names) {
                    Ok(changes) => Some(changes),
                    Err(e) => {
                        eprintln!("ulvsadm: {e}");
                        return 2;
                    }
                }
            } else {
                None
            };
            let target = match &inv.remote {
                Some(remote) => client::Target::Tcp(remote.clone()),
                None => client::Target::Unix(client::socket_path(
                    inv.socket.as_deref(),
                    std::env::var_os(client::SOCKET_ENV),
                )),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ulvsadm: cannot start the async runtime: {e}");
                    return 1;
                }
            };
            let result = runtime.block_on(async {
                let mut c = client::connect_target(&target).await?;
                match restore {
                    Some(changes) => client::apply(&mut c, changes).await,
                    None => client::execute(&mut c, cmd, &names).await,
                }
            });
            match result {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("ulvsadm: {e}");
                    return 1;
                }
            }
        }
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A closed pipe (ulvsadm -L | head) is not worth a message.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("ulvsadm: cannot write output: {e}");
        }
        return 1;
    }
    0
}
