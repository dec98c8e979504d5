//! W3C trace context (`traceparent`) carried in gRPC metadata, so a control request's trace
//! carries its caller's trace id.
//!
//! Clients (ulvsadm, the agent) put a [`TraceParent`] on each request with
//! [`TraceParent::inject`]; the daemon reads it with [`TraceParent::from_headers`] and makes it
//! the parent of the request's span. Only the `traceparent` header is handled (no
//! `tracestate`). Dependency-free on purpose: a client does not need an OpenTelemetry SDK to
//! take part in a trace.

use std::fmt;
use std::hash::{BuildHasher, RandomState};

use tonic::metadata::{MetadataMap, MetadataValue};

/// The metadata key, `traceparent`.
pub const TRACEPARENT: &str = "traceparent";

/// The environment variable a CLI reads its parent trace context from, `TRACEPARENT`.
pub const TRACEPARENT_ENV: &str = "TRACEPARENT";

/// A W3C `traceparent`: trace id, parent span id and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (not all zero).
    pub trace_id: [u8; 16],
    /// The id of the calling span (not all zero).
    pub span_id: [u8; 8],
    /// Whether the caller records the trace (flag bit 0).
    pub sampled: bool,
}

fn random_u64(salt: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((t, std::process::id(), salt))
}

fn nonzero_span_id(salt: u64) -> [u8; 8] {
    let mut id = random_u64(salt).to_be_bytes();
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceParent {
    /// A new trace: random trace and span ids, sampled.
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&random_u64(1).to_be_bytes());
        trace_id[8..].copy_from_slice(&random_u64(2).to_be_bytes());
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        TraceParent {
            trace_id,
            span_id: nonzero_span_id(3),
            sampled: true,
        }
    }

    /// A child span of this one: the same trace id, a new span id.
    pub fn child(&self) -> Self {
        TraceParent {
            span_id: nonzero_span_id(u64::from_be_bytes(self.span_id)),
            ..*self
        }
    }

    /// A span of a command-line tool: a child of `$TRACEPARENT` when it is set and valid,
    /// else the root of a new trace.
    pub fn from_env() -> Self {
        std::env::var(TRACEPARENT_ENV)
            .ok()
            .and_then(|v| Self::parse(&v))
            .map_or_else(Self::new_root, |p| p.child())
    }

    /// Parses `version-traceid-spanid-flags` (lowercase hex). Version `ff` and all-zero ids are
    /// invalid; versions above `00` are read by their first four fields, as the spec asks.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let mut parts = s.split('-');
        let version = hex_decode::<1>(parts.next()?)?[0];
        let trace_id = hex_decode::<16>(parts.next()?)?;
        let span_id = hex_decode::<8>(parts.next()?)?;
        let flags = hex_decode::<1>(parts.next()?)?[0];
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        self.trace_id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Puts this context on a request's metadata (replacing any `traceparent` there).
    pub fn inject(&self, metadata: &mut MetadataMap) {
        if let Ok(v) = MetadataValue::try_from(self.to_string()) {
            metadata.insert(TRACEPARENT, v);
        }
    }

    /// The context on a request's metadata, if there is a valid one.
    pub fn extract(metadata: &MetadataMap) -> Option<Self> {
        Self::parse(metadata.get(TRACEPARENT)?.to_str().ok()?)
    }

    /// The context in raw HTTP/2 request headers (as a server-side tower layer sees them).
    pub fn from_headers(headers: &tonic::codegen::http::HeaderMap) -> Option<Self> {
        Self::parse(headers.get(TRACEPARENT)?.to_str().ok()?)
    }
}

/// As a client interceptor, a `TraceParent` puts itself on every request:
/// `UlvsClient::with_interceptor(channel, TraceParent::from_env())`.
impl tonic::service::Interceptor for TraceParent {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.inject(req.metadata_mut());
        Ok(req)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.span_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", u8::from(self.sampled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parse_and_format_round_trip() {
        let p = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(p.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(p.sampled);
        assert_eq!(p.to_string(), EXAMPLE);
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A future version may append fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(!TraceParent::parse(future).unwrap().sampled);
    }

    #[test]
    fn children_keep_the_trace_and_metadata_carries_it() {
        let root = TraceParent::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        let mut md = MetadataMap::new();
        child.inject(&mut md);
        assert_eq!(TraceParent::extract(&md), Some(child));
    }
}
