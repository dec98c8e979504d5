//! The desired-state file: HCL (or JSON) parsed with positions, variables and locals evaluated,
//! then decoded and validated into a [`Config`], with every error located at file:line:column.
//!
//! Both syntaxes go through `hcl-edit`, which keeps the byte span of every block, attribute and
//! expression: HCL is parsed as a body; JSON is first checked by `serde_json` (for its syntax
//! errors) and then parsed as one HCL object expression (JSON is a subset of HCL's expression
//! syntax), whose keys are mapped onto blocks by the schema. Expressions are evaluated with
//! `hcl-rs` in a context holding `var.*` and `local.*`, so `"${var.vip}"` interpolation works in
//! both. Nothing here does any I/O except [`load_file`] reading the file and the decoder reading
//! the `ca_file` of `https` health checks (so that `validate` reports a missing or bad one).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use hcl::Value;
use hcl::edit::Span;
use hcl::eval::{Context, Evaluate};
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::model::{
    Forward, Protocol, RealServerSpec, SCHEDULERS, ServiceKey, ServiceSpec, Timeouts,
    TunnelChecksum, TunnelType,
};

/// The owner label key used unless `agent { owner_label = ... }` says otherwise.
pub const DEFAULT_OWNER_LABEL: &str = "ulvs.io/owner";
/// The agent name (owner label value) used unless the file or `--name` says otherwise.
pub const DEFAULT_AGENT_NAME: &str = "ulvs-agent";
/// How often `watch` reconciles unless the file or `--interval` says otherwise.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(10);

/// One error in a configuration file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file has errors; each is located.
    #[error("{}", render_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render_diagnostics(d: &[Diagnostic]) -> String {
    let mut s = String::new();
    for (i, one) in d.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&one.to_string());
    }
    s
}

/// Which syntax a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// HCL (native syntax).
    Hcl,
    /// JSON.
    Json,
}

impl Syntax {
    /// JSON for `*.json`, HCL otherwise.
    pub fn for_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Syntax::Json,
            _ => Syntax::Hcl,
        }
    }
}

/// Settings of the agent itself (`agent { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// The agent's name: the owner label's value on every service it manages.
    pub name: String,
    /// The owner label's key.
    pub owner_label: String,
    /// How often `watch` reconciles.
    pub reconcile_interval: Duration,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// A TCP connect succeeds.
    Tcp,
    /// An HTTP/1.1 GET answers with the expected status.
    Http {
        /// Request path.
        path: String,
        /// Expected status code.
        expect_status: u16,
        /// Host header (the real server's address if unset).
        host: Option<String>,
    },
    /// An HTTP/1.1 GET over TLS answers with the expected status.
    Https {
        /// Request path.
        path: String,
        /// Expected status code.
        expect_status: u16,
        /// Host header (the real server's address if unset).
        host: Option<String>,
        /// How the server's certificate is checked.
        tls: TlsCheck,
    },
    /// A UDP request gets a reply (containing `expect`, if set).
    Udp {
        /// Payload sent.
        send: Vec<u8>,
        /// Bytes the reply must contain.
        expect: Option<Vec<u8>>,
    },
    /// A command exits with status 0 (`ULVS_RS_ADDRESS` / `ULVS_RS_PORT` in its environment).
    Exec {
        /// Program and arguments.
        command: Vec<String>,
    },
}

/// The TLS settings of an `https` health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsCheck {
    /// The certificates (DER) trusted to sign the server's certificate, read from `ca_file`
    /// when the file is loaded; empty means the system's CA bundle.
    pub ca_certs: Vec<Vec<u8>>,
    /// The file `ca_certs` came from, as resolved (relative to the configuration file).
    pub ca_file: Option<String>,
    /// The name the certificate must be valid for, also sent as SNI; the real server's IP
    /// address if unset.
    pub server_name: Option<String>,
    /// Accept any certificate (self-signed, expired, for another name). The handshake still
    /// proves the server holds the certificate's key, but not who the server is: insecure.
    pub insecure_skip_verify: bool,
}

/// A health check of one real server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheckSpec {
    /// What the check does.
    pub kind: CheckKind,
    /// Port to check (the real server's port if unset).
    pub port: Option<u16>,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive successes that make a failed server healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy server failed.
    pub fall: u32,
}

/// A real server in the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServerConfig {
    /// Its name (the block label), if any.
    pub name: Option<String>,
    /// Its settings with the desired weight.
    pub spec: RealServerSpec,
    /// Its health check (its own, else the service's), if any.
    pub health_check: Option<HealthCheckSpec>,
}

/// A virtual service in the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Its name (the block label).
    pub name: String,
    /// Its settings (labels without the owner label; the planner adds it).
    pub spec: ServiceSpec,
    /// Its real servers, in file order.
    pub real_servers: Vec<RealServerConfig>,
    /// Fewer healthy real servers than this and the service is below quorum (see the crate docs).
    pub quorum: u32,
    /// Added as a real server while the service is below quorum.
    pub sorry_server: Option<RealServerSpec>,
}

/// The whole desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Agent settings.
    pub agent: AgentSettings,
    /// Connection-table timeouts, if managed.
    pub timeouts: Option<Timeouts>,
    /// Services, in file order.
    pub services: Vec<ServiceConfig>,
}

/// Reads and decodes the file at `path` (JSON for `*.json`, else HCL). `vars` sets variables
/// (as `--var NAME=VALUE`), overriding their defaults.
pub fn load_file(path: &Path, vars: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_str(
        &path.display().to_string(),
        &text,
        Syntax::for_path(path),
        vars,
    )
    .map_err(ConfigError::Invalid)
}

/// Decodes `text` (named `file` in errors). Every error found is returned, located.
pub fn parse_str(
    file: &str,
    text: &str,
    syntax: Syntax,
    vars: &BTreeMap<String, String>,
) -> Result<Config, Vec<Diagnostic>> {
    let src = Src { file, text };
    let body = match syntax {
        Syntax::Hcl => raw_from_hcl(&src)?,
        Syntax::Json => raw_from_json(&src)?,
    };
    let mut d = Decoder {
        src,
        diags: Vec::new(),
        vars: hcl::Map::new(),
        locals: hcl::Map::new(),
    };
    let config = d.decode_top(&body, vars);
    if d.diags.is_empty()
        && let Some(c) = config
    {
        return Ok(c);
    }
    let mut diags = d.diags;
    diags.sort_by_key(|x| (x.line, x.column));
    diags.dedup();
    Err(diags)
}

// ---- source positions ----------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Src<'a> {
    file: &'a str,
    text: &'a str,
}

impl Src<'_> {
    fn diag(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let d = self.diag(offset, "");
        (d.line, d.column)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn start(span: Option<Range<usize>>) -> usize {
    span.map_or(0, |r| r.start)
}

// ---- a syntax-neutral tree with positions --------------------------------------------------

#[derive(Debug)]
struct RawAttr {
    name: String,
    at: usize,
    value_at: usize,
    expr: hcl::Expression,
}

#[derive(Debug)]
struct RawBlock {
    ident: String,
    labels: Vec<String>,
    at: usize,
    body: RawBody,
}

#[derive(Debug, Default)]
struct RawBody {
    attrs: Vec<RawAttr>,
    blocks: Vec<RawBlock>,
}

fn raw_from_hcl(src: &Src<'_>) -> Result<RawBody, Vec<Diagnostic>> {
    let body = hcl::edit::parser::parse_body(src.text).map_err(|e| {
        let loc = e.location();
        vec![Diagnostic {
            file: src.file.to_owned(),
            line: loc.line(),
            column: loc.column(),
            message: format!("syntax error: {}", e.message()),
        }]
    })?;
    let mut diags = Vec::new();
    let raw = hcl_body(src, &body, &mut diags);
    if diags.is_empty() {
        Ok(raw)
    } else {
        Err(diags)
    }
}

fn hcl_body(
    src: &Src<'_>,
    body: &hcl::edit::structure::Body,
    diags: &mut Vec<Diagnostic>,
) -> RawBody {
    let mut raw = RawBody::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for s in body.iter() {
        if let Some(a) = s.as_attribute() {
            let name = a.key.value().as_str().to_owned();
            let at = start(a.key.span());
            if let Some(prev) = seen.insert(name.clone(), at) {
                let (l, _) = src.line_col(prev);
                diags.push(src.diag(
                    at,
                    format!("duplicate attribute \"{name}\" (first set on line {l})"),
                ));
            }
            raw.attrs.push(RawAttr {
                name,
                at,
                value_at: start(a.value.span()),
                expr: a.value.clone().into(),
            });
        } else if let Some(b) = s.as_block() {
            raw.blocks.push(RawBlock {
                ident: b.ident.value().as_str().to_owned(),
                labels: b.labels.iter().map(|l| l.as_str().to_owned()).collect(),
                at: start(b.ident.span()),
                body: hcl_body(src, &b.body, diags),
            });
        }
    }
    raw
}

/// How many labels a block type takes under `parent` ("" is the top level), or `None` if
/// `ident` is not a block there.
fn block_labels(parent: &str, ident: &str) -> Option<usize> {
    Some(match (parent, ident) {
        ("", "variable" | "service") => 1,
        ("", "locals" | "agent" | "timeouts") => 0,
        ("service", "real_server") => 1,
        ("service", "health_check" | "sorry_server" | "persistence") => 0,
        ("real_server", "health_check" | "tunnel") => 0,
        _ => return None,
    })
}

fn raw_from_json(src: &Src<'_>) -> Result<RawBody, Vec<Diagnostic>> {
    if let Err(e) = serde_json::from_str::<serde_json::Value>(src.text) {
        return Err(vec![Diagnostic {
            file: src.file.to_owned(),
            line: e.line(),
            column: e.column(),
            message: format!("JSON syntax error: {e}"),
        }]);
    }
    let expr = hcl::edit::parser::parse_expr(src.text.trim_end()).map_err(|e| {
        let loc = e.location();
        vec![Diagnostic {
            file: src.file.to_owned(),
            line: loc.line(),
            column: loc.column(),
            message: format!("unsupported JSON: {}", e.message()),
        }]
    })?;
    let mut diags = Vec::new();
    let body = match &expr {
        hcl::edit::expr::Expression::Object(o) => json_body(src, "", o, &mut diags),
        other => {
            diags.push(src.diag(start(other.span()), "the top level must be a JSON object"));
            RawBody::default()
        }
    };
    if diags.is_empty() {
        Ok(body)
    } else {
        Err(diags)
    }
}

fn object_key(k: &hcl::edit::expr::ObjectKey) -> (String, usize) {
    use hcl::edit::expr::ObjectKey;
    match k {
        ObjectKey::Ident(i) => (i.value().as_str().to_owned(), start(i.span())),
        ObjectKey::Expression(e) => (
            e.as_str().map(str::to_owned).unwrap_or_default(),
            start(e.span()),
        ),
    }
}

fn json_body(
    src: &Src<'_>,
    parent: &str,
    obj: &hcl::edit::expr::Object,
    diags: &mut Vec<Diagnostic>,
) -> RawBody {
    use hcl::edit::expr::Expression as E;
    let mut raw = RawBody::default();
    for (k, v) in obj.iter() {
        let (name, at) = object_key(k);
        let expr = v.expr();
        match block_labels(parent, &name) {
            None => raw.attrs.push(RawAttr {
                name,
                at,
                value_at: start(expr.span()),
                expr: expr.clone().into(),
            }),
            Some(n_labels) => {
                // A block: {label: body} for labelled blocks, a body or an array of bodies.
                let mut push = |labels: Vec<String>, at: usize, e: &E| match e {
                    E::Object(o) => raw.blocks.push(RawBlock {
                        ident: name.clone(),
                        labels,
                        at,
                        body: json_body(src, &name, o, diags),
                    }),
                    E::Array(a) => {
                        for item in a.iter() {
                            if let E::Object(o) = item {
                                raw.blocks.push(RawBlock {
                                    ident: name.clone(),
                                    labels: labels.clone(),
                                    at: start(item.span()),
                                    body: json_body(src, &name, o, diags),
                                });
                            } else {
                                diags.push(src.diag(
                                    start(item.span()),
                                    format!("a \"{name}\" block must be a JSON object"),
                                ));
                            }
                        }
                    }
                    other => diags.push(src.diag(
                        start(other.span()),
                        format!("a \"{name}\" block must be a JSON object"),
                    )),
                };
                if n_labels == 0 {
                    push(Vec::new(), at, expr);
                } else if let E::Object(o) = expr {
                    for (lk, lv) in o.iter() {
                        let (label, lat) = object_key(lk);
                        push(vec![label], lat, lv.expr());
                    }
                } else if name == "real_server" {
                    // Unnamed real servers: an array of bodies (or one body).
                    push(Vec::new(), at, expr);
                } else {
                    diags.push(src.diag(
                        start(expr.span()),
                        format!("\"{name}\" must be an object of named blocks"),
                    ));
                }
            }
        }
    }
    raw
}

// ---- decoding ------------------------------------------------------------------------------

struct Decoder<'a> {
    src: Src<'a>,
    diags: Vec<Diagnostic>,
    vars: hcl::Map<String, Value>,
    locals: hcl::Map<String, Value>,
}

/// Tracks which attributes and blocks of a body were read, so unknown ones are reported.
struct Fields<'b> {
    body: &'b RawBody,
    what: String,
    used_attrs: Vec<bool>,
    used_blocks: Vec<bool>,
}

impl<'b> Fields<'b> {
    fn new(body: &'b RawBody, what: impl Into<String>) -> Self {
        Self {
            body,
            what: what.into(),
            used_attrs: vec![false; body.attrs.len()],
            used_blocks: vec![false; body.blocks.len()],
        }
    }

    fn attr(&mut self, name: &str) -> Option<&'b RawAttr> {
        let i = self.body.attrs.iter().position(|a| a.name == name)?;
        self.used_attrs[i] = true;
        Some(&self.body.attrs[i])
    }

    fn blocks(&mut self, ident: &str) -> Vec<&'b RawBlock> {
        let mut out = Vec::new();
        for (i, b) in self.body.blocks.iter().enumerate() {
            if b.ident == ident {
                self.used_blocks[i] = true;
                out.push(b);
            }
        }
        out
    }

    fn finish(self, d: &mut Decoder<'_>) {
        for (a, used) in self.body.attrs.iter().zip(&self.used_attrs) {
            if !used {
                d.err(
                    a.at,
                    format!("unknown attribute \"{}\" in {}", a.name, self.what),
                );
            }
        }
        for (b, used) in self.body.blocks.iter().zip(&self.used_blocks) {
            if !used {
                d.err(
                    b.at,
                    format!("unknown block \"{}\" in {}", b.ident, self.what),
                );
            }
        }
    }
}

/// One evaluated value with the position of its expression.
struct Val {
    v: Value,
    at: usize,
}

impl Decoder<'_> {
    fn err(&mut self, at: usize, msg: impl Into<String>) {
        let d = self.src.diag(at, msg);
        self.diags.push(d);
    }

    fn ctx(&self) -> Context<'static> {
        let mut ctx = Context::new();
        ctx.declare_var("var", Value::Object(self.vars.clone()));
        ctx.declare_var("local", Value::Object(self.locals.clone()));
        ctx
    }

    fn eval(&mut self, a: &RawAttr) -> Option<Val> {
        match a.expr.evaluate(&self.ctx()) {
            Ok(v) => Some(Val { v, at: a.value_at }),
            Err(e) => {
                let msg = e.kind().to_string();
                self.err(a.value_at, format!("{}: {msg}", a.name));
                None
            }
        }
    }

    fn get(&mut self, f: &mut Fields<'_>, name: &str) -> Option<Val> {
        let a = f.attr(name)?;
        let v = self.eval(a)?;
        if v.v.is_null() { None } else { Some(v) }
    }

    fn required(&mut self, f: &mut Fields<'_>, name: &str, at: usize) -> Option<Val> {
        if f.body.attrs.iter().any(|a| a.name == name) {
            self.get(f, name)
        } else {
            let what = f.what.clone();
            self.err(at, format!("{what} needs the attribute \"{name}\""));
            None
        }
    }

    fn string(&mut self, v: &Val, name: &str) -> Option<String> {
        match &v.v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.err(
                    v.at,
                    format!("{name}: expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn uint(&mut self, v: &Val, name: &str, max: u64) -> Option<u64> {
        let n = match &v.v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n <= max => Some(n),
            Some(n) => {
                self.err(v.at, format!("{name}: {n} is out of range (0-{max})"));
                None
            }
            None => {
                self.err(
                    v.at,
                    format!(
                        "{name}: expected a whole number, found {}",
                        value_text(&v.v)
                    ),
                );
                None
            }
        }
    }

    fn u32_attr(&mut self, f: &mut Fields<'_>, name: &str, default: u32) -> u32 {
        self.get(f, name)
            .and_then(|v| self.uint(&v, name, u64::from(u32::MAX)))
            .map_or(default, |n| n as u32)
    }

    fn bool_attr(&mut self, f: &mut Fields<'_>, name: &str) -> bool {
        match self.get(f, name) {
            None => false,
            Some(Val {
                v: Value::Bool(b), ..
            }) => b,
            Some(Val {
                v: Value::String(s),
                at,
            }) => match s.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    self.err(at, format!("{name}: expected true or false, found {s:?}"));
                    false
                }
            },
            Some(v) => {
                self.err(
                    v.at,
                    format!("{name}: expected true or false, found {}", value_text(&v.v)),
                );
                false
            }
        }
    }

    fn ip(&mut self, v: &Val, name: &str) -> Option<IpAddr> {
        let s = self.string(v, name)?;
        match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(v.at, format!("{name}: invalid IP address {s:?}"));
                None
            }
        }
    }

    fn duration(&mut self, v: &Val, name: &str) -> Option<Duration> {
        let parsed = match &v.v {
            Value::Number(n) => n.as_f64().and_then(secs),
            Value::String(s) => parse_duration(s),
            _ => None,
        };
        match parsed {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                self.err(
                    v.at,
                    format!(
                        "{name}: expected a positive duration such as \"200ms\", \"5s\" or 2, found {}",
                        value_text(&v.v)
                    ),
                );
                None
            }
        }
    }

    fn string_list(&mut self, v: &Val, name: &str) -> Option<Vec<String>> {
        let Value::Array(items) = &v.v else {
            self.err(
                v.at,
                format!("{name}: expected a list, found {}", type_name(&v.v)),
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            out.push(self.string(
                &Val {
                    v: item.clone(),
                    at: v.at,
                },
                name,
            )?);
        }
        Some(out)
    }

    fn decode_top(
        &mut self,
        body: &RawBody,
        cli_vars: &BTreeMap<String, String>,
    ) -> Option<Config> {
        let mut f = Fields::new(body, "the configuration");
        self.decode_variables(&mut f, cli_vars);
        self.decode_locals(&mut f);

        let mut agent = AgentSettings {
            name: DEFAULT_AGENT_NAME.to_owned(),
            owner_label: DEFAULT_OWNER_LABEL.to_owned(),
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
        };
        let agents = f.blocks("agent");
        for extra in agents.iter().skip(1) {
            self.err(extra.at, "only one \"agent\" block is allowed");
        }
        if let Some(b) = agents.first() {
            let mut af = Fields::new(&b.body, "the agent block");
            if let Some(v) = self.get(&mut af, "name")
                && let Some(s) = self.string(&v, "name")
            {
                if s.is_empty() {
                    self.err(v.at, "name: must not be empty");
                }
                agent.name = s;
            }
            if let Some(v) = self.get(&mut af, "owner_label")
                && let Some(s) = self.string(&v, "owner_label")
            {
                if s.is_empty() {
                    self.err(v.at, "owner_label: must not be empty");
                }
                agent.owner_label = s;
            }
            if let Some(v) = self.get(&mut af, "reconcile_interval")
                && let Some(d) = self.duration(&v, "reconcile_interval")
            {
                agent.reconcile_interval = d;
            }
            af.finish(self);
        }

        let mut timeouts = None;
        let tblocks = f.blocks("timeouts");
        for extra in tblocks.iter().skip(1) {
            self.err(extra.at, "only one \"timeouts\" block is allowed");
        }
        if let Some(b) = tblocks.first() {
            let mut tf = Fields::new(&b.body, "the timeouts block");
            let mut get = |d: &mut Self, name: &str| -> u32 {
                match d.required(&mut tf, name, b.at) {
                    Some(v) => d.duration_secs(&v, name).unwrap_or_default(),
                    None => 0,
                }
            };
            let t = Timeouts {
                tcp: get(self, "tcp"),
                tcp_fin: get(self, "tcp_fin"),
                udp: get(self, "udp"),
            };
            tf.finish(self);
            timeouts = Some(t);
        }

        let mut services: Vec<ServiceConfig> = Vec::new();
        let mut by_key: HashMap<ServiceKey, usize> = HashMap::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for b in f.blocks("service") {
            let Some(svc) = self.decode_service(b) else {
                continue;
            };
            if let Some(prev) = by_name.insert(svc.name.clone(), b.at) {
                let (l, _) = self.src.line_col(prev);
                self.err(
                    b.at,
                    format!(
                        "duplicate service name \"{}\" (first defined on line {l})",
                        svc.name
                    ),
                );
                continue;
            }
            if let Some(prev) = by_key.insert(svc.spec.key, b.at) {
                let (l, _) = self.src.line_col(prev);
                self.err(
                    b.at,
                    format!(
                        "duplicate service {} (already defined on line {l})",
                        svc.spec.key
                    ),
                );
                continue;
            }
            services.push(svc);
        }
        f.finish(self);
        Some(Config {
            agent,
            timeouts,
            services,
        })
    }

    fn duration_secs(&mut self, v: &Val, name: &str) -> Option<u32> {
        let d = self.duration(v, name)?;
        if d.subsec_nanos() != 0 || d.as_secs() > u64::from(u32::MAX) {
            self.err(v.at, format!("{name}: must be a whole number of seconds"));
            return None;
        }
        Some(d.as_secs() as u32)
    }

    fn decode_variables(&mut self, f: &mut Fields<'_>, cli: &BTreeMap<String, String>) {
        let blocks = f.blocks("variable");
        let mut declared = BTreeSet::new();
        for b in &blocks {
            let Some(name) = self.one_label(b) else {
                continue;
            };
            if !declared.insert(name.clone()) {
                self.err(b.at, format!("duplicate variable \"{name}\""));
                continue;
            }
            let mut vf = Fields::new(&b.body, format!("variable \"{name}\""));
            // `type` and `description` are documentation; `type` is not evaluated.
            let _ = vf.attr("type");
            let _ = vf.attr("description");
            let default = match vf.attr("default") {
                // Defaults may not refer to other variables (as in Terraform).
                Some(a) => match a.expr.evaluate(&Context::new()) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.err(a.value_at, format!("default: {e}"));
                        None
                    }
                },
                None => None,
            };
            vf.finish(self);
            let env = std::env::var(format!("ULVS_VAR_{name}")).ok();
            let value = cli
                .get(&name)
                .cloned()
                .or(env)
                .map(Value::String)
                .or(default);
            match value {
                Some(v) => {
                    self.vars.insert(name, v);
                }
                None => self.err(
                    b.at,
                    format!(
                        "variable \"{name}\" has no default and no value (set it with --var {name}=VALUE)"
                    ),
                ),
            }
        }
        for name in cli.keys() {
            if !declared.contains(name) {
                let at = 0;
                self.err(
                    at,
                    format!("--var {name}: no variable \"{name}\" is declared in this file"),
                );
            }
        }
    }

    fn decode_locals(&mut self, f: &mut Fields<'_>) {
        let mut pending: Vec<&RawAttr> = Vec::new();
        for b in f.blocks("locals") {
            if !b.labels.is_empty() {
                self.err(b.at, "a locals block takes no label");
            }
            if let Some(blk) = b.body.blocks.first() {
                self.err(blk.at, "a locals block holds attributes only");
            }
            for a in &b.body.attrs {
                if pending.iter().any(|p| p.name == a.name) {
                    self.err(a.at, format!("duplicate local \"{}\"", a.name));
                    continue;
                }
                pending.push(a);
            }
        }
        // Locals may refer to each other in any order: evaluate until no progress.
        loop {
            let before = pending.len();
            let ctx = self.ctx();
            let mut rest = Vec::new();
            for a in pending {
                match a.expr.evaluate(&ctx) {
                    Ok(v) => {
                        self.locals.insert(a.name.clone(), v);
                    }
                    Err(_) => rest.push(a),
                }
            }
            pending = rest;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        for a in pending {
            if let Err(e) = a.expr.evaluate(&self.ctx()) {
                let msg = e.kind().to_string();
                self.err(
                    a.value_at,
                    format!("local \"{}\": {msg} (or a cycle between locals)", a.name),
                );
            }
        }
    }

    fn one_label(&mut self, b: &RawBlock) -> Option<String> {
        if b.labels.len() != 1 || b.labels[0].is_empty() {
            self.err(
                b.at,
                format!("a \"{}\" block needs exactly one name label", b.ident),
            );
            return None;
        }
        Some(b.labels[0].clone())
    }

    fn decode_service(&mut self, b: &RawBlock) -> Option<ServiceConfig> {
        let name = self.one_label(b)?;
        let mut f = Fields::new(&b.body, format!("service \"{name}\""));
        let errors_before = self.diags.len();

        let protocol = match self.get(&mut f, "protocol") {
            None => Protocol::Tcp,
            Some(v) => match self.string(&v, "protocol").as_deref() {
                Some("tcp") => Protocol::Tcp,
                Some("udp") => Protocol::Udp,
                Some(other) => {
                    self.err(
                        v.at,
                        format!("protocol: unknown protocol {other:?} (tcp or udp)"),
                    );
                    Protocol::Tcp
                }
                None => Protocol::Tcp,
            },
        };
        let address = self
            .required(&mut f, "address", b.at)
            .and_then(|v| self.ip(&v, "address"));
        let port_val = self.required(&mut f, "port", b.at);
        let port = port_val
            .as_ref()
            .and_then(|v| self.uint(v, "port", 65535))
            .map(|p| p as u16);

        let scheduler_val = self.get(&mut f, "scheduler");
        let scheduler = match &scheduler_val {
            None => "wlc".to_owned(),
            Some(v) => {
                let s = self.string(v, "scheduler").unwrap_or_default();
                if !SCHEDULERS.contains(&s.as_str()) {
                    self.err(
                        v.at,
                        format!(
                            "scheduler: unknown scheduler {s:?} (one of {})",
                            SCHEDULERS.join(", ")
                        ),
                    );
                }
                s
            }
        };
        let mut flags = BTreeSet::new();
        if let Some(v) = self.get(&mut f, "scheduler_flags") {
            for flag in self.string_list(&v, "scheduler_flags").unwrap_or_default() {
                match canonical_flag(&flag, &scheduler) {
                    Ok(c) => {
                        flags.insert(c);
                    }
                    Err(msg) => self.err(v.at, format!("scheduler_flags: {msg}")),
                }
            }
        }

        let mut persistence_timeout = 0;
        let mut persistence_prefix_len = 0;
        let pblocks = f.blocks("persistence");
        for extra in pblocks.iter().skip(1) {
            self.err(extra.at, "only one \"persistence\" block is allowed");
        }
        if let Some(pb) = pblocks.first() {
            let mut pf = Fields::new(&pb.body, "the persistence block");
            if let Some(v) = self.required(&mut pf, "timeout", pb.at) {
                persistence_timeout = self.duration_secs(&v, "timeout").unwrap_or(0);
            }
            let max = if address.is_some_and(|a| a.is_ipv6()) {
                128
            } else {
                32
            };
            persistence_prefix_len = max as u32;
            if let Some(v) = self.get(&mut pf, "prefix_len") {
                match self.uint(&v, "prefix_len", max) {
                    Some(0) => self.err(v.at, format!("prefix_len: must be 1-{max}")),
                    Some(n) => persistence_prefix_len = n as u32,
                    None => {}
                }
            }
            pf.finish(self);
        }
        if port == Some(0)
            && persistence_timeout == 0
            && let Some(v) = &port_val
        {
            self.err(
                v.at,
                "port: 0 is only allowed for a persistent service (add a persistence block)",
            );
        }
        let one_packet_at = f
            .body
            .attrs
            .iter()
            .find(|a| a.name == "one_packet")
            .map(|a| a.value_at);
        let one_packet = self.bool_attr(&mut f, "one_packet");
        if one_packet && protocol != Protocol::Udp {
            self.err(
                one_packet_at.unwrap_or(b.at),
                "one_packet: only for UDP services",
            );
        }
        let mut labels = BTreeMap::new();
        if let Some(v) = self.get(&mut f, "labels") {
            match &v.v {
                Value::Object(m) => {
                    for (k, val) in m {
                        if k.is_empty() {
                            self.err(v.at, "labels: a label key is empty");
                        }
                        let s = self
                            .string(
                                &Val {
                                    v: val.clone(),
                                    at: v.at,
                                },
                                "labels",
                            )
                            .unwrap_or_default();
                        labels.insert(k.clone(), s);
                    }
                }
                other => self.err(
                    v.at,
                    format!("labels: expected an object, found {}", type_name(other)),
                ),
            }
        }
        let mut local_addresses = Vec::new();
        let local_val = self.get(&mut f, "local_addresses");
        if let Some(v) = &local_val {
            for s in self.string_list(v, "local_addresses").unwrap_or_default() {
                match s.parse::<IpAddr>() {
                    Ok(ip) if address.is_some_and(|a| a.is_ipv4() != ip.is_ipv4()) => self.err(
                        v.at,
                        format!("local_addresses: {ip} is not of the service's address family"),
                    ),
                    Ok(ip) => local_addresses.push(ip),
                    Err(_) => self.err(v.at, format!("local_addresses: invalid IP address {s:?}")),
                }
            }
        }
        local_addresses.sort();
        local_addresses.dedup();
        let max_new = self.u32_attr(&mut f, "max_new_connections_per_second", 0);
        let forward = match self.get(&mut f, "forward") {
            None => Forward::Route,
            Some(v) => self.forward(&v).unwrap_or(Forward::Route),
        };
        let quorum = self.u32_attr(&mut f, "quorum", 1);

        let check_blocks = f.blocks("health_check");
        for extra in check_blocks.iter().skip(1) {
            self.err(extra.at, "only one \"health_check\" block is allowed");
        }
        let service_check = check_blocks.first().and_then(|c| self.decode_check(c));

        let (Some(address), Some(port)) = (address, port) else {
            // Without a key nothing else can be checked meaningfully.
            let _ = f.blocks("real_server");
            let _ = f.blocks("sorry_server");
            f.finish(self);
            return None;
        };
        let key = ServiceKey {
            protocol,
            address,
            port,
        };

        let mut real_servers: Vec<RealServerConfig> = Vec::new();
        let mut seen: HashMap<std::net::SocketAddr, usize> = HashMap::new();
        for rb in f.blocks("real_server") {
            let Some(rs) = self.decode_real_server(rb, &key, forward, service_check.as_ref())
            else {
                continue;
            };
            if let Some(prev) = seen.insert(rs.spec.addr(), rb.at) {
                let (l, _) = self.src.line_col(prev);
                self.err(
                    rb.at,
                    format!(
                        "duplicate real server {} in service \"{name}\" (already defined on line {l})",
                        rs.spec.addr()
                    ),
                );
                continue;
            }
            real_servers.push(rs);
        }
        let sorry_blocks = f.blocks("sorry_server");
        for extra in sorry_blocks.iter().skip(1) {
            self.err(extra.at, "only one \"sorry_server\" block is allowed");
        }
        let sorry_server = sorry_blocks.first().and_then(|sb| {
            let rs = self.decode_real_server(sb, &key, forward, None)?;
            if seen.contains_key(&rs.spec.addr()) {
                self.err(
                    sb.at,
                    format!(
                        "sorry_server {} is also a real server of this service",
                        rs.spec.addr()
                    ),
                );
            }
            Some(rs.spec)
        });
        if !local_addresses.is_empty()
            && !real_servers
                .iter()
                .any(|r| r.spec.forward == Forward::Fullnat)
            && let Some(v) = &local_val
        {
            self.err(
                v.at,
                "local_addresses: only for services with fullnat real servers",
            );
        }
        f.finish(self);
        if self.diags.len() > errors_before {
            return None;
        }
        let spec = ServiceSpec {
            key,
            scheduler,
            scheduler_flags: flags,
            persistence_timeout,
            persistence_prefix_len,
            one_packet,
            labels,
            local_addresses,
            max_new_connections_per_second: max_new,
        };
        Some(ServiceConfig {
            name,
            spec,
            real_servers,
            quorum,
            sorry_server,
        })
    }

    fn forward(&mut self, v: &Val) -> Option<Forward> {
        let s = self.string(v, "forward")?;
        let f = Forward::parse(&s);
        if f.is_none() {
            self.err(
                v.at,
                format!(
                    "forward: unknown forwarding method {s:?} (masq, route, tunnel or fullnat)"
                ),
            );
        }
        f
    }

    fn decode_real_server(
        &mut self,
        b: &RawBlock,
        service: &ServiceKey,
        default_forward: Forward,
        service_check: Option<&HealthCheckSpec>,
    ) -> Option<RealServerConfig> {
        let is_sorry = b.ident == "sorry_server";
        if b.labels.len() > 1 || (is_sorry && !b.labels.is_empty()) {
            self.err(b.at, format!("too many labels on a \"{}\" block", b.ident));
        }
        let name = b.labels.first().cloned();
        let what = match &name {
            Some(n) => format!("{} \"{n}\"", b.ident),
            None => format!("a {} block", b.ident),
        };
        let mut f = Fields::new(&b.body, what);
        let before = self.diags.len();
        let address = self
            .required(&mut f, "address", b.at)
            .and_then(|v| self.ip(&v, "address"));
        let forward = match self.get(&mut f, "forward") {
            None => default_forward,
            Some(v) => self.forward(&v).unwrap_or(default_forward),
        };
        let mut port = service.port;
        if let Some(v) = self.get(&mut f, "port")
            && let Some(p) = self.uint(&v, "port", 65535)
        {
            let p = p as u16;
            if forward.keeps_port() && p != 0 && p != service.port {
                self.err(
                    v.at,
                    format!(
                        "port: {} real servers use the service's port ({}), not {p}",
                        forward.name(),
                        service.port
                    ),
                );
            } else if p != 0 {
                port = p;
            }
        }
        if let Some(a) = address
            && a.is_ipv4() != service.address.is_ipv4()
            && forward != Forward::Tunnel
        {
            self.err(
                    b.at,
                    format!(
                        "real server {a} is not of the service's address family (only tunnel real servers may be)"
                    ),
                );
        }
        let weight = self.u32_attr(&mut f, "weight", 1);
        if weight > i32::MAX as u32 {
            self.err(b.at, "weight: out of range");
        }
        let upper = self.u32_attr(&mut f, "upper_threshold", 0);
        let lower = self.u32_attr(&mut f, "lower_threshold", 0);
        let mut spec = RealServerSpec::new(address.unwrap_or(service.address), port, forward);
        spec.weight = weight;
        spec.upper_threshold = upper;
        spec.lower_threshold = lower;

        let tunnels = f.blocks("tunnel");
        if let Some(tb) = tunnels.first() {
            if is_sorry {
                self.err(tb.at, "unknown block \"tunnel\" in a sorry_server block");
            } else if forward != Forward::Tunnel {
                self.err(tb.at, "a tunnel block is only for forward = \"tunnel\"");
            }
            let mut tf = Fields::new(&tb.body, "the tunnel block");
            if let Some(v) = self.get(&mut tf, "type") {
                match self.string(&v, "type").as_deref() {
                    Some("ipip") => spec.tunnel_type = TunnelType::Ipip,
                    Some("gue") => spec.tunnel_type = TunnelType::Gue,
                    Some("gre") => spec.tunnel_type = TunnelType::Gre,
                    Some(o) => self.err(
                        v.at,
                        format!("type: unknown tunnel type {o:?} (ipip, gue or gre)"),
                    ),
                    None => {}
                }
            }
            let port_v = self.get(&mut tf, "port");
            if let Some(v) = &port_v {
                spec.tunnel_port = self.uint(v, "port", 65535).unwrap_or(0) as u16;
            }
            let ck_val = self.get(&mut tf, "checksum");
            let ck = ck_val.as_ref().map(|v| v.at);
            if let Some(v) = &ck_val {
                match self.string(v, "checksum").as_deref() {
                    Some("none") => spec.tunnel_checksum = TunnelChecksum::None,
                    Some("csum") => spec.tunnel_checksum = TunnelChecksum::Csum,
                    Some("remcsum") => spec.tunnel_checksum = TunnelChecksum::Remcsum,
                    Some(o) => self.err(
                        v.at,
                        format!("checksum: unknown tunnel checksum {o:?} (none, csum or remcsum)"),
                    ),
                    None => {}
                }
            }
            match spec.tunnel_type {
                TunnelType::Gue if spec.tunnel_port == 0 => {
                    self.err(tb.at, "a GUE tunnel needs a port");
                }
                TunnelType::Ipip | TunnelType::Gre if spec.tunnel_port != 0 => {
                    let at = port_v.map_or(tb.at, |v| v.at);
                    self.err(at, "port: only GUE tunnels have a port");
                }
                _ => {}
            }
            if spec.tunnel_type == TunnelType::Ipip && spec.tunnel_checksum != TunnelChecksum::None
            {
                self.err(
                    ck.unwrap_or(tb.at),
                    "checksum: IPIP tunnels have no checksum",
                );
            }
            if spec.tunnel_type == TunnelType::Gre
                && spec.tunnel_checksum == TunnelChecksum::Remcsum
            {
                self.err(
                    ck.unwrap_or(tb.at),
                    "checksum: remote checksum offload is only for GUE tunnels",
                );
            }
            tf.finish(self);
        }
        let mut health_check = service_check.cloned();
        if !is_sorry {
            let checks = f.blocks("health_check");
            if let Some(cb) = checks.first() {
                health_check = self.decode_check(cb);
            }
        }
        f.finish(self);
        if self.diags.len() > before || address.is_none() {
            return None;
        }
        Some(RealServerConfig {
            name,
            spec,
            health_check,
        })
    }

    fn decode_check(&mut self, b: &RawBlock) -> Option<HealthCheckSpec> {
        let mut f = Fields::new(&b.body, "the health_check block");
        let before = self.diags.len();
        let ty_val = self.required(&mut f, "type", b.at);
        let ty = ty_val.as_ref().and_then(|v| self.string(v, "type"));
        let interval = self
            .get(&mut f, "interval")
            .and_then(|v| self.duration(&v, "interval"))
            .unwrap_or(Duration::from_secs(5));
        let timeout = self
            .get(&mut f, "timeout")
            .and_then(|v| self.duration(&v, "timeout"))
            .unwrap_or(Duration::from_secs(2).min(interval));
        let rise = self.u32_attr(&mut f, "rise", 2).max(1);
        let fall = self.u32_attr(&mut f, "fall", 3).max(1);
        let port = self
            .get(&mut f, "port")
            .and_then(|v| self.uint(&v, "port", 65535))
            .map(|p| p as u16);
        let kind = match ty.as_deref() {
            Some("tcp") => Some(CheckKind::Tcp),
            Some(t @ ("http" | "https")) => {
                let path = match self.get(&mut f, "path") {
                    Some(v) => self.string(&v, "path").unwrap_or_else(|| "/".into()),
                    None => "/".into(),
                };
                if !path.starts_with('/') {
                    self.err(b.at, format!("path: {path:?} must start with /"));
                }
                if path.chars().any(char::is_whitespace) {
                    self.err(b.at, format!("path: {path:?} must not contain white space"));
                }
                let expect_status = self
                    .get(&mut f, "expect_status")
                    .and_then(|v| self.uint(&v, "expect_status", 999))
                    .map_or(200, |s| s as u16);
                let host = self
                    .get(&mut f, "host")
                    .and_then(|v| self.string(&v, "host"));
                if let Some(h) = &host
                    && (h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control()))
                {
                    self.err(b.at, format!("host: {h:?} is not a valid Host header"));
                }
                if t == "http" {
                    Some(CheckKind::Http {
                        path,
                        expect_status,
                        host,
                    })
                } else {
                    let tls = self.decode_tls(&mut f, b.at);
                    Some(CheckKind::Https {
                        path,
                        expect_status,
                        host,
                        tls,
                    })
                }
            }
            Some("udp") => {
                let send = self
                    .get(&mut f, "send")
                    .and_then(|v| self.string(&v, "send"))
                    .unwrap_or_default()
                    .into_bytes();
                let expect = self
                    .get(&mut f, "expect")
                    .and_then(|v| self.string(&v, "expect"))
                    .map(String::into_bytes);
                Some(CheckKind::Udp { send, expect })
            }
            Some("exec") => {
                let command = self
                    .required(&mut f, "command", b.at)
                    .and_then(|v| {
                        let c = self.string_list(&v, "command")?;
                        if c.is_empty() {
                            self.err(v.at, "command: must name a program");
                            return None;
                        }
                        Some(c)
                    })
                    .unwrap_or_default();
                Some(CheckKind::Exec { command })
            }
            Some(other) => {
                if let Some(v) = &ty_val {
                    self.err(
                        v.at,
                        format!(
                            "type: unknown health check type {other:?} (tcp, http, https, udp or exec)"
                        ),
                    );
                }
                None
            }
            None => None,
        };
        if timeout > interval {
            self.err(b.at, "timeout: must not be longer than the interval");
        }
        f.finish(self);
        if self.diags.len() > before {
            return None;
        }
        Some(HealthCheckSpec {
            kind: kind?,
            port,
            interval,
            timeout,
            rise,
            fall,
        })
    }
}

impl Decoder<'_> {
    /// The TLS attributes of an `https` check: `ca_file` (read and parsed here, relative to the
    /// configuration file), `server_name`, `insecure_skip_verify`.
    fn decode_tls(&mut self, f: &mut Fields<'_>, block_at: usize) -> TlsCheck {
        let insecure_skip_verify = self.bool_attr(f, "insecure_skip_verify");
        let server_name = self.get(f, "server_name").and_then(|v| {
            let name = self.string(&v, "server_name")?;
            if ServerName::try_from(name.as_str()).is_err() {
                self.err(
                    v.at,
                    format!("server_name: {name:?} is neither a DNS name nor an IP address"),
                );
                return None;
            }
            Some(name)
        });
        let mut tls = TlsCheck {
            ca_certs: Vec::new(),
            ca_file: None,
            server_name,
            insecure_skip_verify,
        };
        let Some(v) = self.get(f, "ca_file") else {
            return tls;
        };
        let Some(name) = self.string(&v, "ca_file") else {
            return tls;
        };
        if insecure_skip_verify {
            self.err(
                block_at,
                "ca_file and insecure_skip_verify exclude each other (insecure_skip_verify trusts any certificate)",
            );
            return tls;
        }
        let path = match Path::new(self.src.file).parent() {
            Some(dir) if Path::new(&name).is_relative() => dir.join(&name),
            _ => Path::new(&name).to_path_buf(),
        };
        let shown = path.display().to_string();
        match read_ca_file(&path) {
            Ok(certs) => tls.ca_certs = certs,
            Err(why) => self.err(v.at, format!("ca_file: {shown}: {why}")),
        }
        tls.ca_file = Some(shown);
        tls
    }
}

/// The certificates of a PEM file, each checked to be one rustls accepts as a trust anchor.
fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&pem) {
        let cert = item.map_err(|e| format!("not a PEM file: {e}"))?;
        let mut store = RootCertStore::empty();
        store
            .add(cert.clone())
            .map_err(|e| format!("certificate {} is not usable: {e}", certs.len() + 1))?;
        certs.push(cert.as_ref().to_vec());
    }
    if certs.is_empty() {
        return Err("holds no certificate (\"-----BEGIN CERTIFICATE-----\")".to_owned());
    }
    Ok(certs)
}

fn canonical_flag(flag: &str, scheduler: &str) -> Result<String, String> {
    let c = match (flag, scheduler) {
        ("flag-1" | "sh-fallback", "sh") => "sh-fallback",
        ("flag-2" | "sh-port", "sh") => "sh-port",
        ("flag-1" | "mh-fallback", "mh") => "mh-fallback",
        ("flag-2" | "mh-port", "mh") => "mh-port",
        ("flag-3", _) => "flag-3",
        ("flag-1", _) => "flag-1",
        ("flag-2", _) => "flag-2",
        ("sh-fallback" | "sh-port", _) => return Err(format!("{flag:?} needs scheduler sh")),
        ("mh-fallback" | "mh-port", _) => return Err(format!("{flag:?} needs scheduler mh")),
        _ => return Err(format!("unknown scheduler flag {flag:?}")),
    };
    Ok(c.to_owned())
}

fn secs(f: f64) -> Option<Duration> {
    (f.is_finite() && (0.0..1e9).contains(&f)).then(|| Duration::from_secs_f64(f))
}

/// Parses `"200ms"`, `"5s"`, `"1.5s"`, `"2m"`, `"1h"` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    secs(n * scale)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => type_name(other).to_owned(),
    }
}
