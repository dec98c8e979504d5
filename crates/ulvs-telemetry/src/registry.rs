//! The instrument registry: every metric ulvs exports, its OpenTelemetry name, unit, kind and
//! description, and the function that reads its data points from the engine's counters.
//!
//! Both exporters render this one table: the OpenTelemetry observable instruments (OTLP) call
//! [`observe`] from their callbacks, and the Prometheus endpoint renders the same observations
//! in the text format. Names and units follow the OpenTelemetry semantic conventions: dotted
//! lowercase names under `ulvs.`, UCUM units (`By`, `s`) or annotations (`{packet}`), monotonic
//! totals as counters, current levels as up-down counters or gauges.
//!
//! Reading the engine's snapshot destructures every field of it (no `..`), so a counter added
//! to [`StatsSnapshot`], [`Counters`], [`Rates`] or [`DestStats`] fails the build here until it
//! is exported (or explicitly ignored).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ulvs_engine::{
    Config, Counters, DestConfig, DestStats, DropReason, Rates, ServiceKey, ServiceStats,
    StatsSnapshot,
};

/// How an instrument's values behave, which picks the OpenTelemetry instrument type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic total (observable counter; Prometheus `counter`, `_total`).
    Counter,
    /// A level that goes up and down and can be summed (observable up-down counter).
    UpDownCounter,
    /// A sampled value that is not summed across attributes (observable gauge).
    Gauge,
}

/// One exported instrument.
#[derive(Debug)]
pub struct InstrumentSpec {
    /// OpenTelemetry name, e.g. `ulvs.service.packets`.
    pub name: &'static str,
    /// Unit: UCUM (`By`, `By/s`, `1`) or an annotation (`{packet}`).
    pub unit: &'static str,
    /// Kind of instrument.
    pub kind: Kind,
    /// One-line description.
    pub description: &'static str,
    /// The attribute keys every data point carries, in order.
    pub attributes: &'static [&'static str],
    read: fn(&Input<'_>, &mut Vec<Point>),
}

/// One data point: attribute values (in [`InstrumentSpec::attributes`] order) and a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Attribute values, one per key of the instrument.
    pub attributes: Vec<String>,
    /// The value.
    pub value: u64,
}

/// The data points of one instrument at one collection.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The instrument.
    pub spec: &'static InstrumentSpec,
    /// Its data points.
    pub points: Vec<Point>,
}

/// Counts of control operations, by (method, result).
pub type ControlCounts = BTreeMap<(String, String), u64>;

/// Everything the instruments read, taken at one moment.
#[derive(Debug)]
pub struct Input<'a> {
    /// The engine's counters.
    pub stats: &'a StatsSnapshot,
    /// The configuration in effect (weights and thresholds of real servers).
    pub config: &'a Config,
    /// Live persistence templates.
    pub templates: usize,
    /// Control operations by method and result.
    pub control: &'a ControlCounts,
}

/// Attribute value of a service: its protocol and address as ipvsadm lists them
/// (`TCP 198.18.100.1:80`).
pub fn service_label(key: &ServiceKey) -> String {
    key.to_string()
}

/// Attribute value of a real server: its address and port.
pub fn real_server_label(addr: &SocketAddr) -> String {
    addr.to_string()
}

/// Every field of a [`Counters`], named; exhaustive so a new counter must be placed.
fn counters(c: &Counters) -> (u64, [(u64, u64); 2]) {
    let Counters {
        conns,
        in_pkts,
        out_pkts,
        in_bytes,
        out_bytes,
    } = *c;
    (conns, [(in_pkts, out_pkts), (in_bytes, out_bytes)])
}

/// Every field of a [`Rates`], named; exhaustive so a new rate must be placed.
fn rates(r: &Rates) -> (u64, [(u64, u64); 2]) {
    let Rates {
        cps,
        in_pps,
        out_pps,
        in_bps,
        out_bps,
    } = *r;
    (cps, [(in_pps, out_pps), (in_bps, out_bps)])
}

const PACKETS: usize = 0;
const BYTES: usize = 1;

fn svc_points(
    input: &Input<'_>,
    out: &mut Vec<Point>,
    f: impl Fn(&ServiceStats) -> Vec<(Vec<String>, u64)>,
) {
    for s in &input.stats.services {
        let label = service_label(&s.key);
        for (mut attrs, value) in f(s) {
            attrs.insert(0, label.clone());
            out.push(Point {
                attributes: attrs,
                value,
            });
        }
    }
}

fn dest_points(
    input: &Input<'_>,
    out: &mut Vec<Point>,
    f: impl Fn(&DestStats, Option<&DestConfig>) -> Vec<(Vec<String>, u64)>,
) {
    for s in &input.stats.services {
        let svc = service_label(&s.key);
        let cfg = input.config.service(&s.key);
        for d in &s.dests {
            let dcfg = cfg.and_then(|c| c.dests.iter().find(|x| x.addr == d.addr));
            let rs = real_server_label(&d.addr);
            for (mut attrs, value) in f(d, dcfg) {
                attrs.insert(0, rs.clone());
                attrs.insert(0, svc.clone());
                out.push(Point {
                    attributes: attrs,
                    value,
                });
            }
        }
    }
}

fn directional((i, o): (u64, u64)) -> Vec<(Vec<String>, u64)> {
    vec![(vec!["in".into()], i), (vec!["out".into()], o)]
}

fn plain(v: u64) -> Vec<(Vec<String>, u64)> {
    vec![(Vec::new(), v)]
}

/// The state of a real server for `ulvs.real_server.state`: `quiescent` at weight 0,
/// `overloaded` at or over its upper connection threshold, else `available`.
pub fn real_server_state(d: &DestStats, cfg: Option<&DestConfig>) -> &'static str {
    let total = u64::from(d.active_conns) + u64::from(d.inactive_conns);
    match cfg {
        Some(c) if c.weight == 0 => "quiescent",
        Some(c) if c.upper_threshold != 0 && total >= u64::from(c.upper_threshold) => "overloaded",
        _ => "available",
    }
}

/// The values `ulvs.real_server.state` takes.
pub const REAL_SERVER_STATES: [&str; 3] = ["available", "quiescent", "overloaded"];

const SVC: &[&str] = &["service"];
const SVC_DIR: &[&str] = &["service", "direction"];
const SVC_STATE: &[&str] = &["service", "state"];
const RS: &[&str] = &["service", "real_server"];
const RS_DIR: &[&str] = &["service", "real_server", "direction"];
const RS_STATE: &[&str] = &["service", "real_server", "state"];

/// Every instrument ulvs exports.
pub static INSTRUMENTS: &[InstrumentSpec] = &[
    InstrumentSpec {
        name: "ulvs.service.connections",
        unit: "{connection}",
        kind: Kind::Counter,
        description: "Connections scheduled by the virtual service.",
        attributes: SVC,
        read: |i, out| svc_points(i, out, |s| plain(counters(&s.counters).0)),
    },
    InstrumentSpec {
        name: "ulvs.service.packets",
        unit: "{packet}",
        kind: Kind::Counter,
        description: "Packets of the virtual service, from clients (in) and to clients (out).",
        attributes: SVC_DIR,
        read: |i, out| svc_points(i, out, |s| directional(counters(&s.counters).1[PACKETS])),
    },
    InstrumentSpec {
        name: "ulvs.service.bytes",
        unit: "By",
        kind: Kind::Counter,
        description: "Bytes (IP packet lengths) of the virtual service, in and out.",
        attributes: SVC_DIR,
        read: |i, out| svc_points(i, out, |s| directional(counters(&s.counters).1[BYTES])),
    },
    InstrumentSpec {
        name: "ulvs.service.connection.rate",
        unit: "{connection}/s",
        kind: Kind::Gauge,
        description: "Estimated new connections per second of the virtual service.",
        attributes: SVC,
        read: |i, out| svc_points(i, out, |s| plain(rates(&s.rates).0)),
    },
    InstrumentSpec {
        name: "ulvs.service.packet.rate",
        unit: "{packet}/s",
        kind: Kind::Gauge,
        description: "Estimated packets per second of the virtual service, in and out.",
        attributes: SVC_DIR,
        read: |i, out| svc_points(i, out, |s| directional(rates(&s.rates).1[PACKETS])),
    },
    InstrumentSpec {
        name: "ulvs.service.byte.rate",
        unit: "By/s",
        kind: Kind::Gauge,
        description: "Estimated bytes per second of the virtual service, in and out.",
        attributes: SVC_DIR,
        read: |i, out| svc_points(i, out, |s| directional(rates(&s.rates).1[BYTES])),
    },
    InstrumentSpec {
        name: "ulvs.service.connection.count",
        unit: "{connection}",
        kind: Kind::UpDownCounter,
        description: "Open connections of the virtual service (its real servers' sum), by state.",
        attributes: SVC_STATE,
        read: |i, out| {
            svc_points(i, out, |s| {
                let active = s.dests.iter().map(|d| u64::from(d.active_conns)).sum();
                let inactive = s.dests.iter().map(|d| u64::from(d.inactive_conns)).sum();
                vec![
                    (vec!["active".into()], active),
                    (vec!["inactive".into()], inactive),
                ]
            })
        },
    },
    InstrumentSpec {
        name: "ulvs.real_server.connections",
        unit: "{connection}",
        kind: Kind::Counter,
        description: "Connections scheduled to the real server.",
        attributes: RS,
        read: |i, out| dest_points(i, out, |d, _| plain(counters(&d.counters).0)),
    },
    InstrumentSpec {
        name: "ulvs.real_server.packets",
        unit: "{packet}",
        kind: Kind::Counter,
        description: "Packets of the real server's connections, in and out.",
        attributes: RS_DIR,
        read: |i, out| dest_points(i, out, |d, _| directional(counters(&d.counters).1[PACKETS])),
    },
    InstrumentSpec {
        name: "ulvs.real_server.bytes",
        unit: "By",
        kind: Kind::Counter,
        description: "Bytes of the real server's connections, in and out.",
        attributes: RS_DIR,
        read: |i, out| dest_points(i, out, |d, _| directional(counters(&d.counters).1[BYTES])),
    },
    InstrumentSpec {
        name: "ulvs.real_server.connection.rate",
        unit: "{connection}/s",
        kind: Kind::Gauge,
        description: "Estimated new connections per second to the real server.",
        attributes: RS,
        read: |i, out| dest_points(i, out, |d, _| plain(rates(&d.rates).0)),
    },
    InstrumentSpec {
        name: "ulvs.real_server.packet.rate",
        unit: "{packet}/s",
        kind: Kind::Gauge,
        description: "Estimated packets per second of the real server, in and out.",
        attributes: RS_DIR,
        read: |i, out| dest_points(i, out, |d, _| directional(rates(&d.rates).1[PACKETS])),
    },
    InstrumentSpec {
        name: "ulvs.real_server.byte.rate",
        unit: "By/s",
        kind: Kind::Gauge,
        description: "Estimated bytes per second of the real server, in and out.",
        attributes: RS_DIR,
        read: |i, out| dest_points(i, out, |d, _| directional(rates(&d.rates).1[BYTES])),
    },
    InstrumentSpec {
        name: "ulvs.real_server.connection.count",
        unit: "{connection}",
        kind: Kind::UpDownCounter,
        description: "Open connections of the real server by state (active = TCP established, \
                      inactive = other, persistent = persistence templates).",
        attributes: RS_STATE,
        read: |i, out| {
            dest_points(i, out, |d, _| {
                let DestStats {
                    addr: _,
                    counters: _,
                    rates: _,
                    active_conns,
                    inactive_conns,
                    persistent_conns,
                } = *d;
                vec![
                    (vec!["active".into()], u64::from(active_conns)),
                    (vec!["inactive".into()], u64::from(inactive_conns)),
                    (vec!["persistent".into()], u64::from(persistent_conns)),
                ]
            })
        },
    },
    InstrumentSpec {
        name: "ulvs.real_server.weight",
        unit: "1",
        kind: Kind::Gauge,
        description: "Configured scheduling weight of the real server (0 = quiescent).",
        attributes: RS,
        read: |i, out| dest_points(i, out, |_, c| plain(c.map_or(0, |c| u64::from(c.weight)))),
    },
    InstrumentSpec {
        name: "ulvs.real_server.state",
        unit: "1",
        kind: Kind::Gauge,
        description: "1 for the real server's current state (available, quiescent: weight 0, \
                      overloaded: at its upper threshold), 0 for the others.",
        attributes: RS_STATE,
        read: |i, out| {
            dest_points(i, out, |d, c| {
                let now = real_server_state(d, c);
                REAL_SERVER_STATES
                    .iter()
                    .map(|s| (vec![(*s).to_owned()], u64::from(*s == now)))
                    .collect()
            })
        },
    },
    InstrumentSpec {
        name: "ulvs.conntrack.entries",
        unit: "{connection}",
        kind: Kind::UpDownCounter,
        description: "Live entries in the connection table.",
        attributes: &[],
        read: |i, out| out.extend(snapshot_points(i.stats).entries),
    },
    InstrumentSpec {
        name: "ulvs.conntrack.capacity",
        unit: "{connection}",
        kind: Kind::UpDownCounter,
        description: "Size limit of the connection table.",
        attributes: &[],
        read: |i, out| out.extend(snapshot_points(i.stats).capacity),
    },
    InstrumentSpec {
        name: "ulvs.conntrack.evictions",
        unit: "{connection}",
        kind: Kind::Counter,
        description: "Half-open or closing entries evicted to make room in a full table.",
        attributes: &[],
        read: |i, out| out.extend(snapshot_points(i.stats).evicted),
    },
    InstrumentSpec {
        name: "ulvs.conntrack.templates",
        unit: "{template}",
        kind: Kind::UpDownCounter,
        description: "Live persistence templates.",
        attributes: &[],
        read: |i, out| {
            out.push(Point {
                attributes: Vec::new(),
                value: i.templates as u64,
            })
        },
    },
    InstrumentSpec {
        name: "ulvs.packet.drops",
        unit: "{packet}",
        kind: Kind::Counter,
        description: "Packets dropped by the engine, by reason.",
        attributes: &["reason"],
        read: |i, out| out.extend(snapshot_points(i.stats).drops),
    },
    InstrumentSpec {
        name: "ulvs.control.operations",
        unit: "{operation}",
        kind: Kind::Counter,
        description: "Control API requests, by method and result (ok or the gRPC status code).",
        attributes: &["method", "result"],
        read: |i, out| {
            out.extend(i.control.iter().map(|((m, r), v)| Point {
                attributes: vec![m.clone(), r.clone()],
                value: *v,
            }))
        },
    },
];

/// A histogram instrument: values the daemon records as they happen (nothing reads the
/// engine), exported as an OpenTelemetry histogram and a Prometheus `histogram`.
#[derive(Debug)]
pub struct HistogramSpec {
    /// OpenTelemetry name, e.g. `ulvs.control.duration`.
    pub name: &'static str,
    /// Unit (UCUM), e.g. `s`.
    pub unit: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// The attribute keys every data point carries, in order.
    pub attributes: &'static [&'static str],
    /// Upper bounds of the buckets (inclusive), ascending; a last bucket takes the rest.
    pub bounds: &'static [f64],
}

/// Every histogram ulvs exports.
pub static HISTOGRAMS: &[HistogramSpec] = &[HistogramSpec {
    name: "ulvs.control.duration",
    unit: "s",
    description: "Duration of control API requests, from the request to the end of its response \
                  (the whole stream for ListConnections and Watch), by method and result.",
    attributes: &["method", "result"],
    bounds: &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ],
}];

/// Index of `ulvs.control.duration` in [`HISTOGRAMS`].
pub const CONTROL_DURATION: usize = 0;

/// The data of one histogram series.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramPoint {
    /// Attribute values, one per key of the instrument.
    pub attributes: Vec<String>,
    /// Values per bucket (not cumulative): one per bound, and the last for the rest.
    pub bucket_counts: Vec<u64>,
    /// Sum of the values.
    pub sum: f64,
    /// Number of values.
    pub count: u64,
}

impl HistogramPoint {
    /// An empty series of `spec`.
    pub fn new(spec: &HistogramSpec, attributes: Vec<String>) -> Self {
        HistogramPoint {
            attributes,
            bucket_counts: vec![0; spec.bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds `value` (its bucket is the first whose bound is at least `value`).
    pub fn record(&mut self, spec: &HistogramSpec, value: f64) {
        let i = spec
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(spec.bounds.len());
        if let Some(c) = self.bucket_counts.get_mut(i) {
            *c += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// The series of one histogram at one collection.
#[derive(Debug, Clone)]
pub struct HistogramObservation {
    /// The instrument.
    pub spec: &'static HistogramSpec,
    /// Its series.
    pub points: Vec<HistogramPoint>,
}

/// The table-wide points of a snapshot, from an exhaustive destructuring of it.
struct TablePoints {
    entries: Option<Point>,
    capacity: Option<Point>,
    evicted: Option<Point>,
    drops: Vec<Point>,
}

fn snapshot_points(s: &StatsSnapshot) -> TablePoints {
    let StatsSnapshot {
        services: _, // per-service instruments read these
        drops,
        connections,
        max_connections,
        evicted_connections,
    } = s;
    let one = |v: u64| {
        Some(Point {
            attributes: Vec::new(),
            value: v,
        })
    };
    TablePoints {
        entries: one(*connections as u64),
        capacity: one(*max_connections as u64),
        evicted: one(*evicted_connections),
        drops: drops
            .iter()
            .map(|(r, v)| Point {
                attributes: vec![drop_reason_label(*r).to_owned()],
                value: *v,
            })
            .collect(),
    }
}

/// Attribute value of a drop reason.
pub fn drop_reason_label(r: DropReason) -> &'static str {
    r.name()
}

/// Reads every instrument, in [`INSTRUMENTS`] order.
pub fn observe(input: &Input<'_>) -> Vec<Observation> {
    INSTRUMENTS
        .iter()
        .map(|spec| {
            let mut points = Vec::new();
            (spec.read)(input, &mut points);
            Observation { spec, points }
        })
        .collect()
}

/// The instrument named `name`.
pub fn instrument(name: &str) -> Option<&'static InstrumentSpec> {
    INSTRUMENTS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_values_land_in_the_first_bucket_that_holds_them() {
        let spec = &HISTOGRAMS[CONTROL_DURATION];
        let mut p = HistogramPoint::new(spec, vec!["AddService".into(), "ok".into()]);
        for v in [0.0001, 0.0005, 0.0006, 100.0] {
            p.record(spec, v);
        }
        assert_eq!(p.count, 4);
        assert_eq!(p.bucket_counts[0], 2, "at or under the first bound");
        assert_eq!(p.bucket_counts[1], 1);
        assert_eq!(p.bucket_counts[spec.bounds.len()], 1, "over the last bound");
        assert!(spec.bounds.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn names_are_unique_and_dotted_lowercase() {
        let mut seen = std::collections::HashSet::new();
        for s in HISTOGRAMS {
            assert!(seen.insert(s.name), "duplicate {}", s.name);
        }
        for s in INSTRUMENTS {
            assert!(seen.insert(s.name), "duplicate {}", s.name);
            assert!(s.name.starts_with("ulvs."), "{}", s.name);
            assert!(
                s.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'),
                "{}",
                s.name
            );
            assert!(!s.unit.is_empty() && !s.description.is_empty());
        }
    }

    #[test]
    fn every_point_has_one_value_per_attribute_key() {
        let stats = StatsSnapshot {
            services: Vec::new(),
            drops: DropReason::ALL.iter().map(|r| (*r, 1)).collect(),
            connections: 3,
            max_connections: 10,
            evicted_connections: 0,
        };
        let control = ControlCounts::from([(("AddService".into(), "ok".into()), 2)]);
        let obs = observe(&Input {
            stats: &stats,
            config: &Config::default(),
            templates: 0,
            control: &control,
        });
        for o in &obs {
            for p in &o.points {
                assert_eq!(
                    p.attributes.len(),
                    o.spec.attributes.len(),
                    "{}",
                    o.spec.name
                );
            }
        }
        let drops = &obs
            .iter()
            .find(|o| o.spec.name == "ulvs.packet.drops")
            .unwrap();
        assert_eq!(drops.points.len(), DropReason::ALL.len());
    }
}
