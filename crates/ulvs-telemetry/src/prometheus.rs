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
use crate::registry::{InstrumentSpec, Kind, Observation};

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
                (
                    [(CONTENT_TYPE, CONTENT_TYPE_TEXT)],
                    render(&m.observe_now()),
                )
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
