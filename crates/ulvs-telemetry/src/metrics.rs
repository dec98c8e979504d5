//! [`Metrics`]: where observations come from (the engine, the applied configuration, the
//! control counts), read by both exporters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use ulvs_engine::{Config, Engine};

use crate::registry::{
    self, CONTROL_DURATION, ControlCounts, HISTOGRAMS, HistogramObservation, HistogramPoint, Input,
    Observation,
};

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
    /// `ulvs.control.duration` by (method, result), for the Prometheus endpoint.
    durations: Mutex<BTreeMap<(String, String), HistogramPoint>>,
    /// `ulvs.control.duration` on the OTLP meter, once one is set up.
    otel_duration: OnceLock<opentelemetry::metrics::Histogram<f64>>,
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

    /// Counts one finished control request (`ulvs.control.operations`) and records its
    /// duration (`ulvs.control.duration`), by method and result.
    pub fn record_request(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        let result = result_label(code);
        self.record_control(method, &result);
        let spec = &HISTOGRAMS[CONTROL_DURATION];
        let secs = elapsed.as_secs_f64();
        if let Some(h) = self.otel_duration.get() {
            h.record(
                secs,
                &[
                    KeyValue::new("method", method.to_owned()),
                    KeyValue::new("result", result.clone()),
                ],
            );
        }
        lock(&self.durations)
            .entry((method.to_owned(), result.clone()))
            .or_insert_with(|| HistogramPoint::new(spec, vec![method.to_owned(), result]))
            .record(spec, secs);
    }

    /// Records `ulvs.control.duration` on `histogram` (the OTLP meter's) from now on.
    pub(crate) fn set_otel_duration(&self, histogram: opentelemetry::metrics::Histogram<f64>) {
        let _ = self.otel_duration.set(histogram);
    }

    /// Every histogram's series, in [`HISTOGRAMS`] order.
    pub fn observe_histograms(&self) -> Vec<HistogramObservation> {
        let durations = lock(&self.durations).values().cloned().collect();
        vec![HistogramObservation {
            spec: &HISTOGRAMS[CONTROL_DURATION],
            points: durations,
        }]
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
    fn a_request_is_counted_and_timed() {
        let m = Metrics::new();
        m.record_request("ListConnections", tonic::Code::Ok, Duration::from_millis(3));
        m.record_request(
            "ListConnections",
            tonic::Code::Cancelled,
            Duration::from_secs(20),
        );
        let h = m.observe_histograms();
        assert_eq!(h[0].points.len(), 2);
        let ok = h[0]
            .points
            .iter()
            .find(|p| p.attributes[1] == "ok")
            .unwrap();
        assert_eq!(ok.count, 1);
        assert!((ok.sum - 0.003).abs() < 1e-9);
        let obs = m.observe_now();
        let ops = obs
            .iter()
            .find(|o| o.spec.name == "ulvs.control.operations")
            .unwrap();
        assert_eq!(ops.points.len(), 2);
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
