//! [`Metrics`]: where observations come from (the engine, the applied configuration, the
//! control counts), read by both exporters.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ulvs_engine::{Config, Engine};

use crate::registry::{self, ControlCounts, Input, Observation};

/// How long one reading of the engine serves the OTLP callbacks of one collection.
const CACHE_FOR: Duration = Duration::from_millis(250);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The configuration last made live, for the instruments that read weights and thresholds.
/// The daemon's backend sets it after each successful apply.
#[derive(Debug, Default)]
pub struct AppliedConfig(Mutex<Arc<Config>>);

impl AppliedConfig {
    /// Records `cfg` as the configuration in effect.
    pub fn set(&self, cfg: &Config) {
        *lock(&self.0) = Arc::new(cfg.clone());
    }

    /// The configuration in effect.
    pub fn get(&self) -> Arc<Config> {
        Arc::clone(&lock(&self.0))
    }
}

#[derive(Debug)]
struct Source {
    engine: Arc<Engine>,
    config: Arc<AppliedConfig>,
}

/// The shared source of every observation. Cheap to read; safe from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    source: Mutex<Option<Source>>,
    control: Mutex<ControlCounts>,
    cache: Mutex<Option<(Instant, Arc<Vec<Observation>>)>>,
}

/// The `result` attribute of a control operation: `ok`, or the gRPC status code in snake case
/// (`invalid_argument`, `not_found`, ...).
pub fn result_label(code: tonic::Code) -> String {
    if code == tonic::Code::Ok {
        return "ok".to_owned();
    }
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl Metrics {
    /// An empty source: no engine yet (engine instruments have no data points).
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// Reads the engine's counters from now on; `config` says which weights are in effect.
    pub fn attach(&self, engine: Arc<Engine>, config: Arc<AppliedConfig>) {
        *lock(&self.source) = Some(Source { engine, config });
        *lock(&self.cache) = None;
    }

    /// Counts one control operation.
    pub fn record_control(&self, method: &str, result: &str) {
        *lock(&self.control)
            .entry((method.to_owned(), result.to_owned()))
            .or_default() += 1;
    }

    /// Every instrument's data points, read now.
    pub fn observe_now(&self) -> Arc<Vec<Observation>> {
        let control = lock(&self.control).clone();
        let source = lock(&self.source);
        let obs = match source.as_ref() {
            Some(s) => {
                let stats = s.engine.stats();
                let config = s.config.get();
                registry::observe(&Input {
                    stats: &stats,
                    config: &config,
                    templates: s.engine.template_count(),
                    control: &control,
                })
            }
            None => {
                let stats = ulvs_engine::StatsSnapshot {
                    services: Vec::new(),
                    drops: Vec::new(),
                    connections: 0,
                    max_connections: 0,
                    evicted_connections: 0,
                };
                let mut obs = registry::observe(&Input {
                    stats: &stats,
                    config: &Config::default(),
                    templates: 0,
                    control: &control,
                });
                // Without an engine only the control counts are real.
                for o in &mut obs {
                    if o.spec.name != "ulvs.control.operations" {
                        o.points.clear();
                    }
                }
                obs
            }
        };
        let obs = Arc::new(obs);
        *lock(&self.cache) = Some((Instant::now(), Arc::clone(&obs)));
        obs
    }

    /// Every instrument's data points, read at most 250 ms ago (so that the callbacks
    /// of one collection read the engine once).
    pub fn observe_cached(&self) -> Arc<Vec<Observation>> {
        if let Some((at, obs)) = lock(&self.cache).as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Arc::clone(obs);
        }
        self.observe_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_labels_are_snake_case() {
        assert_eq!(result_label(tonic::Code::Ok), "ok");
        assert_eq!(
            result_label(tonic::Code::InvalidArgument),
            "invalid_argument"
        );
        assert_eq!(result_label(tonic::Code::NotFound), "not_found");
    }

    #[test]
    fn without_an_engine_only_control_counts_show() {
        let m = Metrics::new();
        m.record_control("AddService", "ok");
        m.record_control("AddService", "ok");
        let obs = m.observe_now();
        for o in obs.iter() {
            if o.spec.name == "ulvs.control.operations" {
                assert_eq!(o.points.len(), 1);
                assert_eq!(o.points[0].value, 2);
            } else {
                assert!(o.points.is_empty(), "{}", o.spec.name);
            }
        }
    }
}
