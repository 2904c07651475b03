//! Configuration: read `gateway.yaml`, parse it into [`raw`] structs (unknown
//! keys refused), then validate and compile it into a typed [`Config`]:
//! durations, the route table, issuers with their keys, identity headers.
//! Every error names the file, line, column and field.
//!
//! This file reads the document and assembles the sections; each section
//! is validated in its own module: `upstream`, [`forward_auth`], `limits`,
//! [`paths`], `issuers`, `identity`, `routes` and `surface` (CORS, RFC 9728
//! metadata).
//!
//! Pure core: depends on `serde-saphyr`, [`crate::route`], [`crate::policy`],
//! [`crate::token`] and [`crate::jwks::keys`]. It reads files and environment
//! variables named by the config, but opens no sockets.

pub mod dpop;
pub mod forward_auth;
mod identity;
pub mod introspection;
mod issuers;
mod limits;
pub mod paths;
pub mod quotas;
pub mod raw;
mod routes;
mod surface;
pub mod tracing;
pub mod upstream;

use serde_saphyr::Location;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::route;
use crate::token::{Issuer, Source, Verifier};
use raw::RawConfig;

/// Configs larger than this are refused before parsing.
const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;
/// Event loops: each is a thread with sockets of its own; past this, a
/// typo rather than a machine.
const MAX_WORKERS: usize = 1024;
/// `events_per_busy_turn` when unset: short busy turns, for the tail
/// (README, Performance, "Issue 17, sixteenth sitting" has why 14).
pub const DEFAULT_EVENTS_PER_BUSY_TURN: usize = 14;
/// What a turn takes after a wait (Tokio's default): a busy turn takes
/// no more.
const MAX_EVENTS_PER_BUSY_TURN: usize = 1024;

/// A config error: `FILE:LINE:COLUMN: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub field: String,
    pub message: String,
}

/// Control characters from the file (a YAML key may hold a newline) are
/// escaped, so that an error stays one line and cannot forge log lines.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line.max(1),
            self.column.max(1),
            one_line(&self.field),
            one_line(&self.message)
        )
    }
}

impl std::error::Error for ConfigError {}

pub use forward_auth::{Convention, ForwardAuth};
pub use identity::{Identity, IdentityValue};
pub use introspection::Introspection;
pub use issuers::{RemoteJwks, RemoteSource, RemoteSpec};
pub use limits::Limits;
pub use quotas::{OnError, QuotaKey, QuotaPolicy, Quotas, Store as QuotaStore};
pub use surface::ResourceMetadata;
pub use tracing::Tracing;
pub use upstream::{
    AuthMethod, ClientCredentials, Credential, Inject, Secret, TokenEndpoint, Upstream,
};

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`, `/routes`; keep it on loopback.
    pub admin_listen: Option<SocketAddr>,
    /// TLS on `listen` (certificates are read again on every reload).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where allowed requests go: `upstream:` (named `default`) first when
    /// set, then `upstreams:` by name; empty when only forward-auth is
    /// served (then the proxy listener is not started).
    pub upstreams: Vec<Upstream>,
    /// Quota policies (routes refer to them by index) and their store.
    pub quotas: Quotas,
    pub forward_auth: Option<ForwardAuth>,
    pub trusted_proxies: Vec<raw::Cidr>,
    pub limits: Limits,
    /// What every challenge says (realm, RFC 9728 metadata URL).
    pub challenge: crate::reject::Challenge,
    pub cors: Option<crate::cors::Cors>,
    /// RFC 9728 metadata, served by the data plane.
    pub resource_metadata: Option<ResourceMetadata>,
    /// Runtime worker threads; 0 means one per core.
    pub workers: usize,
    /// Ready sockets each worker's event loop takes from the kernel in a
    /// turn that does not wait, with tasks still queued (1 to 1,024).
    pub events_per_busy_turn: usize,
    pub verifier: Verifier,
    pub remote_jwks: Vec<RemoteJwks>,
    /// Introspecting issuers, by name.
    pub introspections: Vec<(String, Introspection)>,
    pub token_sources: Vec<Source>,
    /// Verified tokens remembered (0: no cache).
    pub token_cache_size: usize,
    pub identity: Identity,
    /// `tracing:`; `None`: trace headers are neither read nor written.
    pub tracing: Option<Tracing>,
    pub routes: route::Table,
    /// A hash of the config text and of every file it made the gateway
    /// read: a reload with the same fingerprint changes nothing.
    pub fingerprint: u64,
    /// The files it made the gateway read (keys, TLS): a change to one of
    /// them is a reason to reload, like a change to the config itself.
    pub files: Vec<PathBuf>,
    /// Structural problems that do not stop the gateway (see `scopegate check`).
    pub warnings: Vec<ConfigError>,
}

/// Builds errors that point into one file, and fingerprints what it reads.
struct Ctx<'a> {
    file: &'a Path,
    dir: PathBuf,
    hasher: std::cell::RefCell<std::collections::hash_map::DefaultHasher>,
    /// Every file the config made the gateway read.
    files: std::cell::RefCell<Vec<PathBuf>>,
    /// `scopegate check`: secrets may be missing where the check runs.
    offline: bool,
    warnings: std::cell::RefCell<Vec<ConfigError>>,
}

impl Ctx<'_> {
    fn warn(&self, at: Location, field: impl Into<String>, message: impl Into<String>) {
        let warning = self.err(at, field, message);
        self.warnings.borrow_mut().push(warning);
    }

    fn err(
        &self,
        at: Location,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: at.line(),
            column: at.column(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn read(&self, at: Location, field: &str, rel: &str) -> Result<Vec<u8>, ConfigError> {
        use std::hash::Hash as _;
        let path = self.dir.join(rel);
        let bytes = std::fs::read(&path)
            .map_err(|e| self.err(at, field, format!("cannot read {}: {e}", path.display())))?;
        bytes.hash(&mut *self.hasher.borrow_mut());
        self.files.borrow_mut().push(path);
        Ok(bytes)
    }
}

/// The JSON Schema of `gateway.yaml`, generated from the very structs the
/// parser reads (for editors: `# yaml-language-server: $schema=...`).
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawConfig);
    schema.insert("title".into(), "scopegate gateway.yaml".into());
    schema.insert(
        "description".into(),
        "Configuration of the scopegate authorization gateway. Generated by `scopegate schema`."
            .into(),
    );
    schema.to_value()
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse_with(path, &read_config(path)?, false)
}

fn read_config(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: 1,
        column: 1,
        field: "(file)".into(),
        message: format!("cannot read: {e}"),
    })
}

/// `scopegate check`: like [`load`], but an unset secret variable is a
/// warning (the check may run where secrets are not), not an error.
pub fn check(path: &Path) -> Result<Config, ConfigError> {
    parse_with(path, &read_config(path)?, true)
}

/// Validates config text; `path` names it in errors and anchors relative paths.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    parse_with(path, bytes, false)
}

fn parse_with(path: &Path, bytes: &[u8], offline: bool) -> Result<Config, ConfigError> {
    let dir = path.parent().map(Path::to_owned).unwrap_or_default();
    let ctx = Ctx {
        file: path,
        dir,
        hasher: Default::default(),
        files: Default::default(),
        offline,
        warnings: Default::default(),
    };
    std::hash::Hash::hash(bytes, &mut *ctx.hasher.borrow_mut());
    let start = Location::UNKNOWN;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ctx.err(
            start,
            "(file)",
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
            + 1;
        ConfigError {
            line,
            ..ctx.err(start, "(file)", "not UTF-8 text")
        }
    })?;
    if text.trim().is_empty() {
        return Err(ctx.err(start, "(file)", "the file is empty"));
    }
    let raw = parse_yaml(&ctx, text)?;
    build(&ctx, raw)
}

fn parse_yaml(ctx: &Ctx<'_>, text: &str) -> Result<RawConfig, ConfigError> {
    let mut field = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
            field = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let at = e.location().unwrap_or(Location::UNKNOWN);
        let field = clean_field(&field);
        let message = clean_message(&e.without_snippet().to_string());
        ctx.err(at, field, message)
    })
}

/// A route built from the config, with where it was written.
type Built = (
    String,
    Location,
    route::Template,
    Option<String>,
    route::Rule,
);

/// `routes_from_openapi`: one rule per operation of the document, except
/// where an explicit route has the same template (without a host) and a
/// method in common: the explicit rule replaces the generated one.
fn openapi_routes(
    ctx: &Ctx<'_>,
    file: &serde_saphyr::Spanned<String>,
    known: &routes::Known<'_>,
    explicit: &[Built],
) -> Result<Vec<Built>, ConfigError> {
    let field = "routes_from_openapi";
    let bytes = ctx.read(file.referenced, field, &file.value)?;
    let path = ctx.dir.join(&file.value);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ctx.err(file.referenced, field, "the document is not UTF-8 text"))?;
    let doc = crate::openapi::convert(text, None).map_err(|e| ConfigError {
        file: path.clone(),
        line: e.line,
        column: e.column,
        field: field.into(),
        message: e.message,
    })?;
    let name = path
        .file_name()
        .map_or_else(|| file.value.clone(), |n| n.to_string_lossy().into_owned());
    let mut out = Vec::new();
    for op in doc.operations {
        let method: http::Method = op
            .method
            .parse()
            .map_err(|_| ctx.err(file.referenced, field, format!("bad method {}", op.method)))?;
        let (scopes, any_scope, auth) = match op.access {
            crate::openapi::Access::None => (Vec::new(), Vec::new(), raw::RawAuth::None),
            crate::openapi::Access::Required { scopes, any_scope } => {
                (scopes, any_scope, raw::RawAuth::Required)
            }
        };
        let unspanned = raw::unspanned::<String>;
        let route = raw::RawRoute {
            path: unspanned(op.path.clone()),
            upstream: None,
            host: None,
            rate_limit: None,
            mode: None,
            methods: Some(raw::unspanned(vec![raw::Method(method.clone())])),
            auth,
            scopes: scopes.into_iter().map(unspanned).collect(),
            any_scope: any_scope.into_iter().map(unspanned).collect(),
            claims: Vec::new(),
            issuers: None,
            dpop: None,
        };
        let op_field = format!("{field} ({} {})", op.method, op.path);
        let (template, host, mut rule) =
            routes::build(ctx, &op_field, route, known).map_err(|e| ConfigError {
                file: path.clone(),
                line: op.line,
                column: 1,
                ..e
            })?;
        let replaced = explicit.iter().any(|(_, _, t, h, r)| {
            h.is_none() && *t == template && r.methods.overlaps(rule.methods)
        });
        if replaced {
            continue;
        }
        let id = op
            .operation_id
            .map(|id| format!(" ({id})"))
            .unwrap_or_default();
        rule.origin = format!("{name}:{}{id}", op.line).into();
        out.push((op_field, file.referenced, template, host, rule));
    }
    Ok(out)
}

/// `routes[0].value.path.value` (the `value`s are `Spanned` wrappers) reads
/// as `routes[0].path`.
fn clean_field(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.') {
        match part {
            "" | "?" | "value" => {}
            // `methods.value[0]`: the index belongs to `methods`.
            p if p.starts_with("value[") => out.push_str(&p["value".len()..]),
            p => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(p);
            }
        }
    }
    if out.is_empty() {
        "(document)".into()
    } else {
        out
    }
}

/// serde-saphyr appends the position (we print it in front) and, for
/// duplicate keys, advice about its own API; neither helps a user.
fn clean_message(message: &str) -> String {
    let mut m = message;
    if let Some(i) = m.rfind(" at line ") {
        m = &m[..i];
    }
    if let Some(i) = m.find(", set DuplicateKeyPolicy") {
        m = &m[..i];
    }
    match m {
        "unexpected end of input" => return "the document is empty".into(),
        "expected sequence start" => return "expected a list".into(),
        "expected mapping start" => return "expected a mapping (key: value lines)".into(),
        _ => {}
    }
    m.to_owned()
}

fn build(ctx: &Ctx<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
    let doc = Location::UNKNOWN;
    if raw.upstream.is_none() && raw.upstreams.is_empty() && raw.forward_auth.is_none() {
        return Err(ctx.err(
            doc,
            "upstream",
            "missing: where should allowed requests go? (or configure forward_auth)",
        ));
    }
    let mut upstreams = Vec::new();
    let has_default = raw.upstream.is_some();
    if let Some(u) = raw.upstream {
        upstreams.push(upstream::build(ctx, upstream::DEFAULT_NAME, "upstream", u)?);
    }
    for (name, u) in raw.upstreams {
        let field = format!("upstreams.{name}");
        if name.is_empty()
            || name == upstream::DEFAULT_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ctx.err(
                u.referenced,
                field,
                "a name of letters, digits, '-' and '_' (and not \"default\", which is `upstream:`)",
            ));
        }
        upstreams.push(upstream::build(ctx, &name, &field, u)?);
    }
    let forward_auth = raw
        .forward_auth
        .map(|f| forward_auth::build(ctx, f))
        .transpose()?;
    let limits = limits::build(ctx, raw.limits)?;

    let realm = raw.realm.value;
    if realm.is_empty()
        || realm
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || b.is_ascii_control() || !b.is_ascii())
    {
        return Err(ctx.err(
            raw.realm.referenced,
            "realm",
            "must be non-empty printable ASCII without '\"' or '\\'",
        ));
    }

    if raw.workers.value > MAX_WORKERS {
        return Err(ctx.err(
            raw.workers.referenced,
            "workers",
            format!("must be at most {MAX_WORKERS} (0: one per core)"),
        ));
    }
    if !(1..=MAX_EVENTS_PER_BUSY_TURN).contains(&raw.events_per_busy_turn.value) {
        return Err(ctx.err(
            raw.events_per_busy_turn.referenced,
            "events_per_busy_turn",
            format!("must be from 1 to {MAX_EVENTS_PER_BUSY_TURN}"),
        ));
    }

    let mut issuers = Vec::new();
    let mut remote_jwks = Vec::new();
    let mut introspections: Vec<(String, Introspection)> = Vec::new();
    let mut issuer_at = Vec::new();
    for (i, spanned) in raw.issuers.into_iter().enumerate() {
        let field = format!("issuers[{i}]");
        issuer_at.push((field.clone(), spanned.referenced));
        let (issuer, remote, introspection) = issuers::build(ctx, &field, spanned)?;
        if let Some(i) = introspection {
            introspections.push((issuer.name.clone(), i));
        }
        if issuers
            .iter()
            .any(|other: &Issuer| other.name == issuer.name)
        {
            return Err(ctx.err(
                Location::UNKNOWN,
                format!("{field}.issuer"),
                format!("issuer {:?} is listed twice", issuer.name),
            ));
        }
        remote_jwks.extend(remote);
        issuers.push(issuer);
    }

    // SPEC §4.4: an opaque token goes to the one introspecting issuer, or
    // to the one whose token_prefix it carries.
    if introspections.len() > 1 {
        let mut prefixes: Vec<Option<&str>> = introspections
            .iter()
            .map(|(_, i)| i.token_prefix.as_deref())
            .collect();
        prefixes.sort_unstable();
        let distinct = prefixes.windows(2).all(|w| w[0] != w[1]);
        if prefixes.contains(&None) || !distinct {
            return Err(ctx.err(
                doc,
                "issuers",
                "several issuers introspect: each needs a distinct introspection.token_prefix",
            ));
        }
    }
    if raw.tokens.max_bytes == 0 {
        return Err(ctx.err(doc, "tokens.max_bytes", "must be greater than 0"));
    }
    let token_sources: Vec<Source> = raw.tokens.from.value.into_iter().map(|s| s.0).collect();
    if token_sources.is_empty() {
        return Err(ctx.err(raw.tokens.from.referenced, "tokens.from", "lists no source"));
    }
    for (i, s) in token_sources.iter().enumerate() {
        if token_sources[..i].contains(s) {
            return Err(ctx.err(
                raw.tokens.from.referenced,
                "tokens.from",
                "lists a source twice",
            ));
        }
    }

    let identity = identity::build(ctx, raw.identity)?;

    let quotas = quotas::build(ctx, raw.rate_limits)?;
    let mut routes = route::Table::new(raw.paths.build());
    let mut needs_tokens = false;
    let known = routes::Known {
        upstreams: &upstreams,
        has_default,
        quotas: &quotas,
        default_mode: raw.mode,
        issuers: issuers.iter().map(|i: &Issuer| i.name.clone()).collect(),
    };
    let config_name = ctx
        .file
        .file_name()
        .map_or_else(|| "gateway.yaml".into(), |n| n.to_string_lossy());
    let mut explicit = Vec::with_capacity(raw.routes.len());
    for (i, spanned) in raw.routes.into_iter().enumerate() {
        let field = format!("routes[{i}]");
        if let Some(why) = routes::unmatchable(&spanned.value.path.value) {
            ctx.warn(
                spanned.value.path.referenced,
                format!("{field}.path"),
                format!("can never match: {why}"),
            );
        }
        let at = spanned.referenced;
        let (template, host, mut rule) = routes::build(ctx, &field, spanned.value, &known)?;
        rule.origin = format!("{config_name}:{}", at.line().max(1)).into();
        explicit.push((field, at, template, host, rule));
    }
    let generated = match &raw.routes_from_openapi {
        None => Vec::new(),
        Some(file) => openapi_routes(ctx, file, &known, &explicit)?,
    };
    for (field, at, template, host, rule) in explicit.into_iter().chain(generated) {
        needs_tokens |= rule.auth == route::Auth::Required;
        routes
            .insert_for(host, template, rule)
            .map_err(|e| ctx.err(at, format!("{field}.path"), e.to_string()))?;
    }
    if routes.routes().is_empty() {
        return Err(ctx.err(doc, "routes", "no routes: nothing would ever be forwarded"));
    }
    if needs_tokens && issuers.is_empty() {
        return Err(ctx.err(
            doc,
            "issuers",
            "routes require a token but no issuer is configured",
        ));
    }
    if !needs_tokens {
        for (field, at) in &issuer_at {
            ctx.warn(
                *at,
                field,
                "no route requires a token: this issuer is never used",
            );
        }
    }

    let tls = match raw.tls {
        None => None,
        Some(t) => {
            let t = t.value;
            let cert = ctx.read(t.cert_file.referenced, "tls.cert_file", &t.cert_file.value)?;
            let key = ctx.read(t.key_file.referenced, "tls.key_file", &t.key_file.value)?;
            let client_cas = match &t.client_ca_file {
                None => None,
                Some(f) => Some(ctx.read(f.referenced, "tls.client_ca_file", &f.value)?),
            };
            Some(
                crate::tls::server_config_with_clients(&cert, &key, client_cas.as_deref())
                    .map_err(|e| ctx.err(t.cert_file.referenced, "tls", e.to_string()))?,
            )
        }
    };
    let cors = raw.cors.map(|c| surface::build_cors(ctx, c)).transpose()?;
    let resource_metadata = raw
        .resource_metadata
        .map(|m| surface::build_resource_metadata(ctx, m, &routes, &token_sources))
        .transpose()?;
    let tracing = raw.tracing.map(|t| tracing::build(ctx, t)).transpose()?;

    Ok(Config {
        path: ctx.file.to_owned(),
        listen: raw.listen,
        admin_listen: raw.admin_listen,
        tls,
        forward_auth,
        upstreams,
        quotas,
        trusted_proxies: raw.trusted_proxies,
        limits,
        challenge: crate::reject::Challenge {
            realm,
            resource_metadata: resource_metadata.as_ref().map(|(url, _)| url.clone()),
        },
        cors,
        resource_metadata: resource_metadata.map(|(_, m)| m),
        workers: raw.workers.value,
        events_per_busy_turn: raw.events_per_busy_turn.value,
        verifier: Verifier::new(issuers, raw.tokens.max_bytes),
        remote_jwks,
        introspections,
        token_sources,
        token_cache_size: raw.tokens.cache_size,
        identity,
        tracing,
        routes,
        fingerprint: std::hash::Hasher::finish(&*ctx.hasher.borrow()),
        files: ctx.files.take(),
        warnings: ctx.warnings.take(),
    })
}
