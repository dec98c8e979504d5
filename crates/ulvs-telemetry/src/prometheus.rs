//! The Prometheus text exposition format (version 0.0.4) of the instrument registry, and the
//! scrape server (`GET /metrics`).
//!
//! Names follow the OpenTelemetry-to-Prometheus rules: dots become underscores, the unit is a
//! suffix (`By` → `_bytes`, `By/s` → `_bytes_per_second`, `{x}/s` → `_per_second`; annotations
//! alone and `1` add nothing) unless the name ends with it already, and counters end in
//! `_total`. So `ulvs.service.packets` is `ulvs_service_packets_total`.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

use crate::Metrics;
use crate::registry::{HistogramObservation, HistogramSpec, InstrumentSpec, Kind, Observation};

/// The content type of the text format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn unit_suffix(unit: &str) -> &'static str {
    match unit {
        "By" => "bytes",
        "By/s" => "bytes_per_second",
        "s" => "seconds",
        u if u.starts_with('{') && u.ends_with("}/s") => "per_second",
        _ => "",
    }
}

/// The Prometheus metric name of an instrument.
pub fn metric_name(spec: &InstrumentSpec) -> String {
    let mut name = spec.name.replace('.', "_");
    let suffix = unit_suffix(spec.unit);
    if !suffix.is_empty() && !name.ends_with(suffix) {
        name.push('_');
        name.push_str(suffix);
    }
    if spec.kind == Kind::Counter {
        name.push_str("_total");
    }
    name
}

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Renders observations in the text format.
pub fn render(observations: &[Observation]) -> String {
    let mut out = String::new();
    for o in observations {
        let name = metric_name(o.spec);
        let kind = match o.spec.kind {
            Kind::Counter => "counter",
            Kind::UpDownCounter | Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}", o.spec.description);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for p in &o.points {
            out.push_str(&name);
            if !p.attributes.is_empty() {
                out.push('{');
                for (i, (k, v)) in o.spec.attributes.iter().zip(&p.attributes).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", p.value);
        }
    }
    out
}

/// The Prometheus base name of a histogram (`ulvs.control.duration` `s` →
/// `ulvs_control_duration_seconds`); its series are `_bucket`, `_sum` and `_count`.
pub fn histogram_name(spec: &HistogramSpec) -> String {
    let mut name = spec.name.replace('.', "_");
    let suffix = unit_suffix(spec.unit);
    if !suffix.is_empty() && !name.ends_with(suffix) {
        name.push('_');
        name.push_str(suffix);
    }
    name
}

/// `k="v",...` of a series (without braces), escaped.
fn labels(keys: &[&str], values: &[String]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in keys.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    out
}

/// Renders histograms in the text format: cumulative `_bucket` series with `le` (the last
/// `+Inf`), `_sum` and `_count`.
pub fn render_histograms(observations: &[HistogramObservation]) -> String {
    let mut out = String::new();
    for o in observations {
        let name = histogram_name(o.spec);
        let _ = writeln!(out, "# HELP {name} {}", o.spec.description);
        let _ = writeln!(out, "# TYPE {name} histogram");
        for p in &o.points {
            let l = labels(o.spec.attributes, &p.attributes);
            let sep = if l.is_empty() { "" } else { "," };
            let mut cumulative = 0;
            for (i, c) in p.bucket_counts.iter().enumerate() {
                cumulative += c;
                let le = o
                    .spec
                    .bounds
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), f64::to_string);
                let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_sum{{{l}}} {}", p.sum);
            let _ = writeln!(out, "{name}_count{{{l}}} {}", p.count);
        }
    }
    out
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. Every scrape reads the
/// engine afresh.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = Arc::clone(&metrics);
            async move {
                let mut body = render(&m.observe_now());
                body.push_str(&render_histograms(&m.observe_histograms()));
                ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], body)
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Point, instrument};

    #[test]
    fn names_follow_the_otel_to_prometheus_rules() {
        let n = |s| metric_name(instrument(s).unwrap());
        assert_eq!(n("ulvs.service.packets"), "ulvs_service_packets_total");
        assert_eq!(n("ulvs.service.bytes"), "ulvs_service_bytes_total");
        assert_eq!(
            n("ulvs.service.byte.rate"),
            "ulvs_service_byte_rate_bytes_per_second"
        );
        assert_eq!(
            n("ulvs.service.packet.rate"),
            "ulvs_service_packet_rate_per_second"
        );
        assert_eq!(n("ulvs.conntrack.entries"), "ulvs_conntrack_entries");
        assert_eq!(n("ulvs.packet.drops"), "ulvs_packet_drops_total");
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let spec = &crate::registry::HISTOGRAMS[crate::registry::CONTROL_DURATION];
        let mut p = crate::registry::HistogramPoint::new(spec, vec!["Apply".into(), "ok".into()]);
        p.record(spec, 0.0002);
        p.record(spec, 0.002);
        let text = render_histograms(&[HistogramObservation {
            spec,
            points: vec![p],
        }]);
        let l = "method=\"Apply\",result=\"ok\"";
        for want in [
            "# TYPE ulvs_control_duration_seconds histogram".to_owned(),
            format!("ulvs_control_duration_seconds_bucket{{{l},le=\"0.0005\"}} 1"),
            format!("ulvs_control_duration_seconds_bucket{{{l},le=\"0.001\"}} 1"),
            format!("ulvs_control_duration_seconds_bucket{{{l},le=\"0.0025\"}} 2"),
            format!("ulvs_control_duration_seconds_bucket{{{l},le=\"+Inf\"}} 2"),
            format!("ulvs_control_duration_seconds_sum{{{l}}} 0.0022"),
            format!("ulvs_control_duration_seconds_count{{{l}}} 2"),
        ] {
            assert!(text.lines().any(|x| x == want), "{want}\n{text}");
        }
    }

    #[test]
    fn renders_help_type_and_escaped_labels() {
        let spec = instrument("ulvs.service.packets").unwrap();
        let text = render(&[Observation {
            spec,
            points: vec![Point {
                attributes: vec!["TCP \"x\"\\".into(), "in".into()],
                value: 7,
            }],
        }]);
        assert_eq!(
            text,
            format!(
                "# HELP ulvs_service_packets_total {}\n# TYPE ulvs_service_packets_total counter\n\
                 ulvs_service_packets_total{{service=\"TCP \\\"x\\\"\\\\\",direction=\"in\"}} 7\n",
                spec.description
            )
        );
    }
}
