//! `ulvs-agent watch`: the reconcile loop. Re-reads the file when its content changes, keeps
//! the health checks in step with it, and reconciles on every interval and on every health
//! change, so drift (a daemon restart, a manual `ulvsadm` edit) is repaired. Every action is
//! logged.
//!
//! Traces: each pass is a `reconcile` span (its own trace, or a child of `$TRACEPARENT`) with
//! the client's `observe_live_state` and `apply_batch` spans under it; a change of health is
//! a `health_transition` span whose child is the reconcile it triggers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{Instrument as _, error, info, warn};
use ulvs_agent::client::{self, Client, ClientError};
use ulvs_agent::config::{self, Config};
use ulvs_agent::desired::{Desired, HealthView};
use ulvs_agent::health::HealthChecker;

/// What `watch` needs from the command line.
#[derive(Debug)]
pub struct Options {
    pub config: PathBuf,
    pub vars: BTreeMap<String, String>,
    pub socket: PathBuf,
    pub name: Option<String>,
    pub interval: Option<Duration>,
    pub file_poll: Duration,
}

/// What identifies a version of the file: modification time, length and a hash of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Option<SystemTime>, u64, u64);

fn fingerprint(path: &std::path::Path) -> Option<Fingerprint> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(path).ok()?;
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(Fingerprint(meta.modified().ok(), meta.len(), h.finish()))
}

fn load(opts: &Options) -> Result<Config, config::ConfigError> {
    let mut cfg = config::load_file(&opts.config, &opts.vars)?;
    if let Some(n) = &opts.name {
        cfg.agent.name = n.clone();
    }
    Ok(cfg)
}

struct Reconciler {
    socket: PathBuf,
    client: Option<Client>,
    daemon_down: bool,
}

impl Reconciler {
    async fn client(&mut self) -> Result<&mut Client, ClientError> {
        if self.client.is_none() {
            self.client = Some(client::connect(&self.socket).await?);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// One reconcile pass, in a `reconcile` span whose parent is `parent` (a health
    /// transition) or `$TRACEPARENT` or none.
    async fn reconcile(
        &mut self,
        cfg: &Config,
        health: &HealthChecker,
        trigger: &'static str,
        parent: Option<&tracing::Span>,
    ) {
        let span = match parent {
            Some(p) => tracing::info_span!(parent: p, "reconcile", trigger),
            None => {
                let s = tracing::info_span!("reconcile", trigger);
                ulvs_telemetry::adopt_env_parent(&s);
                s
            }
        };
        self.reconcile_inner(cfg, health).instrument(span).await;
    }

    /// Retried a few times when the live state moves under it.
    async fn reconcile_inner(&mut self, cfg: &Config, health: &HealthChecker) {
        for _attempt in 0..3 {
            match self.pass(cfg, health).await {
                Ok(()) => {
                    if self.daemon_down {
                        info!(socket = %self.socket.display(), "ulvsd reachable again");
                        self.daemon_down = false;
                    }
                    return;
                }
                Err(ClientError::Stale { .. }) => {
                    info!("live state changed while applying; planning again");
                }
                Err(e @ (ClientError::Connect { .. } | ClientError::Rpc { .. })) => {
                    self.client = None;
                    if !self.daemon_down {
                        warn!(error = %e, "cannot reconcile: ulvsd unavailable; retrying every interval");
                        self.daemon_down = true;
                    }
                    return;
                }
                Err(e) => {
                    error!(error = %e, "reconcile failed");
                    return;
                }
            }
        }
    }

    async fn pass(&mut self, cfg: &Config, health: &HealthChecker) -> Result<(), ClientError> {
        let desired = Desired::from_config(cfg, &health.view());
        let c = self.client().await?;
        let observed = client::observe(c, desired.timeouts.is_some()).await?;
        let plan = match crate::plan_step(&desired, &observed) {
            Ok(p) => p,
            Err(e) => {
                error!(error = %e, "cannot plan");
                return Ok(());
            }
        };
        if !plan.has_changes() {
            return Ok(());
        }
        let generation = client::execute(c, &plan, false).await?;
        for action in plan.actions() {
            info!(%action, "applied");
        }
        info!(generation, summary = %plan.summary_line(), "reconciled");
        Ok(())
    }
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(opts: Options) -> Result<()> {
    let mut cfg = load(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut seen = fingerprint(&opts.config);
    let interval_of = |cfg: &Config| opts.interval.unwrap_or(cfg.agent.reconcile_interval);
    let mut health = HealthChecker::new();
    health.sync(&cfg);
    let changed = health.changed();
    info!(
        config = %opts.config.display(),
        owner = %format!("{}={}", cfg.agent.owner_label, cfg.agent.name),
        services = cfg.services.len(),
        health_checks = health.len(),
        interval = ?interval_of(&cfg),
        "watching"
    );
    let mut rec = Reconciler {
        socket: opts.socket.clone(),
        client: None,
        daemon_down: false,
    };
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut tick = tokio::time::interval(interval_of(&cfg));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(opts.file_poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_health = health.view();
    loop {
        let trigger = tokio::select! {
            _ = tick.tick() => "interval",
            _ = changed.notified() => "health",
            _ = poll.tick() => {
                let now = fingerprint(&opts.config);
                if now == seen {
                    continue;
                }
                seen = now;
                match load(&opts) {
                    Ok(new) if new == cfg => continue,
                    Ok(new) => {
                        info!(config = %opts.config.display(), services = new.services.len(), "configuration changed; reloaded");
                        let old_interval = interval_of(&cfg);
                        cfg = new;
                        health.sync(&cfg);
                        if interval_of(&cfg) != old_interval {
                            tick = tokio::time::interval(interval_of(&cfg));
                            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                    }
                    Err(e) => {
                        error!(config = %opts.config.display(), "configuration invalid; keeping the previous one:\n{e}");
                        continue;
                    }
                }
                "config"
            }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); return Ok(()); }
            _ = sigint.recv() => { info!("SIGINT: stopping"); return Ok(()); }
        };
        let now = health.view();
        let transitions = health_transitions(&last_health, &now);
        last_health = now;
        if transitions.is_empty() {
            rec.reconcile(&cfg, &health, trigger, None).await;
        } else {
            let span = tracing::info_span!(
                "health_transition",
                changes = transitions.len(),
                transitions = %transitions.join("; "),
            );
            ulvs_telemetry::adopt_env_parent(&span);
            rec.reconcile(&cfg, &health, "health", Some(&span)).await;
        }
    }
}

/// The real servers whose health differs between `before` and `after`, described as
/// `tcp 198.18.1.1:80 198.19.0.11:8080 failed`. A server that appears is compared with
/// healthy (checks start healthy); one that disappears is not a transition.
fn health_transitions(before: &HealthView, after: &HealthView) -> Vec<String> {
    after
        .iter()
        .filter(|(k, now)| before.get(k).copied().unwrap_or(true) != **now)
        .map(|((svc, rs), now)| format!("{svc} {rs} {}", if *now { "healthy" } else { "failed" }))
        .collect()
}
