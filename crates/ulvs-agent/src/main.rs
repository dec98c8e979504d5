//! `ulvs-agent`: validate, plan, apply, destroy, show and watch a desired-state file against
//! ulvsd. Exit codes: 0 success, 1 error, 2 changes present (`plan --detailed-exitcode`).
//!
//! Tracing: every command runs in a `ulvs-agent COMMAND` span (a child of `$TRACEPARENT` when
//! set) with a span per step (`read_desired_state`, `observe_live_state`, `plan`, `dry_run`,
//! `apply_batch`); `watch` makes a `reconcile` trace per pass and a `health_transition` span per
//! health change. With `--otlp-endpoint` they are exported over OTLP/gRPC, and every request to
//! ulvsd carries the current span as W3C `traceparent`, so the daemon's spans join the trace.

mod watch;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tracing::Instrument as _;
use ulvs_agent::client::{self, Client, DEFAULT_SOCKET, SOCKET_ENV};
use ulvs_agent::config::{self, Config, ConfigError};
use ulvs_agent::desired::{Desired, HealthView};
use ulvs_agent::model::Observed;
use ulvs_agent::plan::{PLAN_FORMAT, Plan};

/// The default configuration file.
const DEFAULT_CONFIG: &str = "/etc/ulvs/agent.hcl";

#[derive(Debug, Parser)]
#[command(
    name = "ulvs-agent",
    version,
    about = "Declarative agent for ulvsd: desired state in HCL, plan/apply, health checks, drift repair"
)]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The desired-state file (HCL, or JSON if it ends in .json).
    #[arg(short = 'c', long = "config", global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Set a variable: NAME=VALUE (repeatable).
    #[arg(long = "var", global = true, value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// The agent's name (the owner label's value); overrides `agent { name }`.
    #[arg(long, global = true)]
    name: Option<String>,
    /// Export traces over OTLP/gRPC to this endpoint (e.g. http://127.0.0.1:4317). The batch
    /// delay follows `OTEL_BSP_SCHEDULE_DELAY` (ms); pending spans are flushed at exit.
    #[arg(long, global = true, value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the file: syntax, fields, addresses, duplicates. Contacts no daemon.
    Validate,
    /// Show what apply would change.
    Plan {
        /// Exit 2 when there are changes, 0 when there are none.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Save the plan (JSON) to apply it later with `apply FILE`.
        #[arg(long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Make the live state match the file (or apply a saved plan).
    Apply {
        /// Do not ask for confirmation.
        #[arg(long)]
        auto_approve: bool,
        /// A plan saved with `plan -out FILE`; refused if the live state changed since.
        plan_file: Option<PathBuf>,
    },
    /// Remove every service this agent manages.
    Destroy {
        /// Do not ask for confirmation.
        #[arg(long)]
        auto_approve: bool,
    },
    /// Print the live state of the services this agent manages, as HCL.
    Show,
    /// Keep reconciling: re-read the file on change, run health checks, repair drift.
    Watch {
        /// Reconcile interval (overrides `agent { reconcile_interval }`), e.g. "500ms", "10s".
        #[arg(long, value_parser = parse_interval)]
        interval: Option<Duration>,
        /// How often to look at the file for changes.
        #[arg(long, value_parser = parse_interval, default_value = "1s")]
        file_poll: Duration,
    },
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("invalid duration {s:?} (examples: 500ms, 2s, 1m)"))
}

/// Terraform spells flags with one dash (`-out`, `-auto-approve`); accept those too.
fn terraform_style_args() -> Vec<String> {
    const ONE_DASH: &[&str] = &["out", "auto-approve", "detailed-exitcode", "var", "config"];
    std::env::args()
        .map(|a| {
            let body = a.strip_prefix('-').filter(|b| !b.starts_with('-'));
            match body {
                Some(b) if ONE_DASH.contains(&b.split('=').next().unwrap_or("")) => {
                    format!("-{a}")
                }
                _ => a,
            }
        })
        .collect()
}

impl Command {
    /// The subcommand's name, for span names.
    fn name(&self) -> &'static str {
        match self {
            Command::Validate => "validate",
            Command::Plan { .. } => "plan",
            Command::Apply { .. } => "apply",
            Command::Destroy { .. } => "destroy",
            Command::Show => "show",
            Command::Watch { .. } => "watch",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(terraform_style_args());
    let watch = matches!(cli.command, Command::Watch { .. });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ulvs-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Logs: RUST_LOG, else warnings (info while watching). Spans are exported independently
    // of the log level.
    let log_filter = match std::env::var_os("RUST_LOG") {
        Some(_) => None,
        None => Some(if watch { "info" } else { "warn" }.to_owned()),
    };
    let telemetry = {
        let _rt = runtime.enter();
        ulvs_telemetry::Telemetry::init_traces(&ulvs_telemetry::TelemetryConfig {
            service_name: "ulvs-agent".to_owned(),
            otlp_endpoint: cli.otlp_endpoint.clone(),
            log_format: ulvs_telemetry::LogFormat::Text,
            log_filter,
        })
    };
    let telemetry = match telemetry {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ulvs-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if watch {
        // A long-running loop: every reconcile pass is a trace of its own.
        runtime.block_on(run(cli))
    } else {
        let span = tracing::info_span!(
            "command",
            otel.name = %format_args!("ulvs-agent {}", cli.command.name()),
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            exit_code = tracing::field::Empty,
        );
        ulvs_telemetry::adopt_env_parent(&span);
        let r = runtime.block_on(run(cli).instrument(span.clone()));
        match &r {
            Ok(code) => {
                span.record("exit_code", code);
            }
            Err(e) => client::record_error(&span, &format_args!("{e:#}")),
        }
        r
    };
    // Every span is closed now: flush them while the runtime still drives the exporter.
    telemetry.shutdown();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cli_vars(cli: &Cli) -> Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for v in &cli.vars {
        let (k, val) = v
            .split_once('=')
            .with_context(|| format!("--var {v:?}: expected NAME=VALUE"))?;
        vars.insert(k.to_owned(), val.to_owned());
    }
    Ok(vars)
}

/// Loads the configuration, applying `--name`, in a `read_desired_state` span.
fn load(cli: &Cli) -> Result<Config> {
    let span = tracing::info_span!(
        "read_desired_state",
        config = %cli.config.display(),
        services = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    let r = span.in_scope(|| load_inner(cli));
    match &r {
        Ok(cfg) => {
            span.record("services", cfg.services.len());
        }
        Err(e) => client::record_error(&span, &format_args!("{e:#}")),
    }
    r
}

fn load_inner(cli: &Cli) -> Result<Config> {
    let vars = cli_vars(cli)?;
    let mut cfg = match config::load_file(&cli.config, &vars) {
        Ok(c) => c,
        // The diagnostics are the whole message: print them as they are.
        Err(ConfigError::Invalid(d)) => {
            bail!(
                "{}\n{} error(s) in {}; nothing was changed",
                ConfigError::Invalid(d.clone()),
                d.len(),
                cli.config.display()
            )
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(n) = &cli.name {
        cfg.agent.name = n.clone();
    }
    Ok(cfg)
}

async fn connect(cli: &Cli) -> Result<Client> {
    Ok(client::connect(&cli.socket).await?)
}

async fn make_plan(client: &mut Client, desired: &Desired) -> Result<(Plan, Observed)> {
    let observed = client::observe(client, desired.timeouts.is_some()).await?;
    let plan = plan_step(desired, &observed)?;
    Ok((plan, observed))
}

/// The planner, in a `plan` span.
fn plan_step(desired: &Desired, observed: &Observed) -> Result<Plan> {
    let span = tracing::info_span!(
        "plan",
        generation = observed.generation,
        add = tracing::field::Empty,
        change = tracing::field::Empty,
        destroy = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    let r = span.in_scope(|| ulvs_agent::plan(desired, observed));
    match &r {
        Ok(p) => {
            let s = p.summary();
            span.record("add", s.add);
            span.record("change", s.change);
            span.record("destroy", s.destroy);
        }
        Err(e) => client::record_error(&span, e),
    }
    Ok(r?)
}

async fn run(cli: Cli) -> Result<u8> {
    match &cli.command {
        Command::Validate => {
            let cfg = load(&cli)?;
            let n_rs: usize = cfg.services.iter().map(|s| s.real_servers.len()).sum();
            println!(
                "Success! The configuration is valid ({} services, {n_rs} real servers).",
                cfg.services.len()
            );
            Ok(0)
        }
        Command::Plan {
            detailed_exitcode,
            out,
        } => {
            let cfg = load(&cli)?;
            let desired = Desired::from_config(&cfg, &HealthView::new());
            let mut c = connect(&cli).await?;
            let (plan, _) = make_plan(&mut c, &desired).await?;
            if plan.has_changes() {
                // Let the daemon check the batch as well (it changes nothing).
                client::execute(&mut c, &plan, true)
                    .await
                    .context("the daemon refuses this plan")?;
            }
            print!("{}", plan.render());
            if let Some(path) = out {
                save_plan(path, &plan)?;
                println!(
                    "\nSaved the plan to {}. To perform exactly these actions, run:\n    ulvs-agent apply {}",
                    path.display(),
                    path.display()
                );
            }
            Ok(if *detailed_exitcode && plan.has_changes() {
                2
            } else {
                0
            })
        }
        Command::Apply {
            auto_approve,
            plan_file,
        } => {
            let (plan, mut c) = match plan_file {
                Some(path) => {
                    let span = tracing::info_span!(
                        "read_desired_state",
                        plan_file = %path.display(),
                        otel.status_code = tracing::field::Empty,
                        otel.status_description = tracing::field::Empty,
                    );
                    let plan = span.in_scope(|| read_plan(path));
                    if let Err(e) = &plan {
                        client::record_error(&span, &format_args!("{e:#}"));
                    }
                    let plan = plan?;
                    (plan, connect(&cli).await?)
                }
                None => {
                    let cfg = load(&cli)?;
                    let desired = Desired::from_config(&cfg, &HealthView::new());
                    let mut c = connect(&cli).await?;
                    let (plan, _) = make_plan(&mut c, &desired).await?;
                    (plan, c)
                }
            };
            execute_confirmed(&mut c, &plan, *auto_approve, "apply").await
        }
        Command::Destroy { auto_approve } => {
            let cfg = load(&cli)?;
            let desired = Desired::empty(&cfg.agent.owner_label, &cfg.agent.name);
            let mut c = connect(&cli).await?;
            let (plan, _) = make_plan(&mut c, &desired).await?;
            execute_confirmed(&mut c, &plan, *auto_approve, "destroy").await
        }
        Command::Show => {
            let cfg = load(&cli)?;
            let mut c = connect(&cli).await?;
            let observed = client::observe(&mut c, cfg.timeouts.is_some()).await?;
            print!("{}", render_show(&cfg, &observed));
            Ok(0)
        }
        Command::Watch {
            interval,
            file_poll,
        } => {
            let vars = cli_vars(&cli)?;
            let opts = watch::Options {
                config: cli.config.clone(),
                vars,
                socket: cli.socket.clone(),
                name: cli.name.clone(),
                interval: *interval,
                file_poll: *file_poll,
            };
            watch::run(opts).await?;
            Ok(0)
        }
    }
}

async fn execute_confirmed(
    c: &mut Client,
    plan: &Plan,
    auto_approve: bool,
    what: &str,
) -> Result<u8> {
    print!("{}", plan.render());
    if !plan.has_changes() {
        return Ok(0);
    }
    if !auto_approve && !confirm(what)? {
        println!("\n{what} cancelled; nothing was changed.");
        return Ok(1);
    }
    let generation = client::execute(c, plan, false).await?;
    let s = plan.summary();
    println!(
        "\n{} complete! Resources: {} added, {} changed, {} destroyed (generation {generation}).",
        if what == "destroy" {
            "Destroy"
        } else {
            "Apply"
        },
        s.add,
        s.change,
        s.destroy
    );
    Ok(0)
}

fn confirm(what: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "refusing to {what} without --auto-approve: standard input is not a terminal; nothing was changed"
        );
    }
    print!("\nDo you want to perform these actions? [y/N] ");
    std::io::stdout().flush().context("write the prompt")?;
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("read the answer")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

fn save_plan(path: &Path, plan: &Plan) -> Result<()> {
    let json = serde_json::to_string_pretty(plan).context("encode the plan")?;
    std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))
}

fn read_plan(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let plan: Plan = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a ulvs-agent plan file", path.display()))?;
    if plan.format != PLAN_FORMAT {
        bail!(
            "{}: plan format {} is not supported (this agent writes {PLAN_FORMAT})",
            path.display(),
            plan.format
        );
    }
    Ok(plan)
}

/// The owned live services as HCL that `validate` accepts (names from the file where the key
/// matches).
fn render_show(cfg: &Config, observed: &Observed) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# live state of services owned by {}={} (generation {})",
        cfg.agent.owner_label, cfg.agent.name, observed.generation
    );
    let mut unmanaged = 0;
    for (i, s) in observed.services.iter().enumerate() {
        if s.spec.labels.get(&cfg.agent.owner_label) != Some(&cfg.agent.name) {
            unmanaged += 1;
            continue;
        }
        let name = cfg
            .services
            .iter()
            .find(|c| c.spec.key == s.spec.key)
            .map_or_else(|| format!("service_{}", i + 1), |c| c.name.clone());
        let k = &s.spec.key;
        let _ = writeln!(out, "\nservice {name:?} {{");
        let _ = writeln!(out, "  protocol  = {:?}", k.protocol.name());
        let _ = writeln!(out, "  address   = {:?}", k.address.to_string());
        let _ = writeln!(out, "  port      = {}", k.port);
        let _ = writeln!(out, "  scheduler = {:?}", s.spec.scheduler);
        if !s.spec.scheduler_flags.is_empty() {
            let f: Vec<String> = s
                .spec
                .scheduler_flags
                .iter()
                .map(|f| format!("{f:?}"))
                .collect();
            let _ = writeln!(out, "  scheduler_flags = [{}]", f.join(", "));
        }
        if s.spec.one_packet {
            let _ = writeln!(out, "  one_packet = true");
        }
        if s.spec.max_new_connections_per_second != 0 {
            let _ = writeln!(
                out,
                "  max_new_connections_per_second = {}",
                s.spec.max_new_connections_per_second
            );
        }
        let labels: Vec<String> = s
            .spec
            .labels
            .iter()
            .filter(|(k, _)| **k != cfg.agent.owner_label)
            .map(|(k, v)| format!("{k:?} = {v:?}"))
            .collect();
        if !labels.is_empty() {
            let _ = writeln!(out, "  labels = {{ {} }}", labels.join(", "));
        }
        if s.spec.persistence_timeout != 0 {
            let _ = writeln!(
                out,
                "  persistence {{\n    timeout    = {}\n    prefix_len = {}\n  }}",
                s.spec.persistence_timeout, s.spec.persistence_prefix_len
            );
        }
        for r in &s.real_servers {
            let _ = writeln!(out, "  real_server {{");
            let _ = writeln!(out, "    address = {:?}", r.address.to_string());
            let _ = writeln!(out, "    port    = {}", r.port);
            let _ = writeln!(out, "    forward = {:?}", r.forward.name());
            let _ = writeln!(out, "    weight  = {}", r.weight);
            if r.upper_threshold != 0 {
                let _ = writeln!(out, "    upper_threshold = {}", r.upper_threshold);
            }
            if r.lower_threshold != 0 {
                let _ = writeln!(out, "    lower_threshold = {}", r.lower_threshold);
            }
            if r.forward == ulvs_agent::model::Forward::Tunnel {
                let _ = write!(
                    out,
                    "    tunnel {{\n      type     = {:?}\n      checksum = {:?}\n",
                    r.tunnel_type.name(),
                    r.tunnel_checksum.name()
                );
                if r.tunnel_port != 0 {
                    let _ = writeln!(out, "      port     = {}", r.tunnel_port);
                }
                let _ = writeln!(out, "    }}");
            }
            let _ = writeln!(out, "  }}");
        }
        let _ = writeln!(out, "}}");
    }
    if let Some(t) = &observed.timeouts {
        let _ = writeln!(
            out,
            "\ntimeouts {{\n  tcp     = {}\n  tcp_fin = {}\n  udp     = {}\n}}",
            t.tcp, t.tcp_fin, t.udp
        );
    }
    if unmanaged > 0 {
        let _ = writeln!(
            out,
            "\n# {unmanaged} {} not managed by this agent (not shown)",
            if unmanaged == 1 {
                "service"
            } else {
                "services"
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command line of `deploy/systemd/ulvs-agent.service` parses with the agent's CLI,
    /// and the unit validates before it watches.
    #[test]
    fn the_systemd_unit_matches_the_cli() {
        let unit = include_str!("../../../deploy/systemd/ulvs-agent.service");
        let mut commands = Vec::new();
        for key in ["ExecStartPre=", "ExecStart="] {
            for line in unit.lines().filter_map(|l| l.strip_prefix(key)) {
                let argv: Vec<&str> = line.split_whitespace().collect();
                assert!(argv[0].ends_with("/ulvs-agent"), "{argv:?}");
                match Cli::try_parse_from(&argv) {
                    Ok(cli) => commands.push(cli.command),
                    Err(e) => panic!("{key}{line} does not parse: {e}"),
                }
            }
        }
        assert!(
            matches!(
                commands.as_slice(),
                [Command::Validate, Command::Watch { .. }]
            ),
            "{commands:?}"
        );
    }
}
