//! Configuration: read `gateway.yaml`, parse it into [`raw`] structs (unknown
//! keys refused), then validate and compile it into a typed [`Config`]:
//! durations, the route table, issuers with their keys, identity headers.
//! Every error names the file, line, column and field.
//!
//! Pure core: depends on `serde-saphyr`, [`crate::route`], [`crate::policy`],
//! [`crate::token`] and [`crate::jwks::keys`]. It reads files and environment
//! variables named by the config, but opens no sockets.

pub mod forward_auth;
pub mod paths;
pub mod raw;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::uri::{Authority, Scheme, Uri};
use serde_saphyr::{Location, Spanned};

use crate::jwks::{KeySet, kind_for};
use crate::policy::{ClaimCheck, ClaimRule, Policy};
use crate::route::{self, Methods, Template};
use crate::token::{ClaimName, Issuer, KeyCell, Source, Verifier};
use raw::{RawConfig, RawIssuer, RawRoute};

/// Configs larger than this are refused before parsing.
const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

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

/// Where the upstream is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Prepended to every forwarded path; empty or `/base` (no trailing `/`).
    pub path_prefix: String,
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response headers arrive.
    pub request_timeout: Duration,
    /// Keep the client's `Host` (true) or send the upstream's authority.
    pub preserve_host: bool,
    /// The upstream's authority as a `Host` value, made once.
    pub host: http::HeaderValue,
    /// Client TLS: the roots of an https upstream (trusts nothing for http).
    pub tls: Arc<rustls::ClientConfig>,
}

pub use forward_auth::{Convention, ForwardAuth};

/// Limits on what a client may send.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_header_bytes: usize,
    pub max_request_body_bytes: u64,
    pub header_read_timeout: Duration,
    /// A connection with no request in progress and no byte moved for this
    /// long is closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
}

/// What an identity header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityValue {
    /// The token's scopes, space-separated.
    Scopes,
    Claim(ClaimName),
}

/// What the upstream is told about the caller.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub strip_authorization: bool,
    pub headers: Vec<(HeaderName, IdentityValue)>,
}

/// Where a remote key set is found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemoteSource {
    /// A JWKS document at this URL.
    Jwks(String),
    /// OIDC discovery at `{issuer without trailing /}/.well-known/openid-configuration`.
    Discovery,
}

/// How to keep one issuer's remote keys fresh. Two equal specs in two
/// configs share their keys across a reload (no refetch on every edit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteSpec {
    pub issuer: String,
    pub source: RemoteSource,
    /// Upper bound between refreshes (`Cache-Control: max-age` may shorten it, not below a minute).
    pub refresh: Duration,
    /// How long the last good keys serve while fetches fail.
    pub max_stale: Duration,
}

/// RFC 9728 protected-resource metadata, rendered once at load time.
#[derive(Debug, Clone)]
pub struct ResourceMetadata {
    /// Where the data plane serves it (`/.well-known/oauth-protected-resource[/path]`).
    pub path: String,
    /// The JSON document.
    pub body: String,
}

/// A remote key set and the cell its keys go into.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub spec: RemoteSpec,
    pub keys: Arc<KeyCell>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`, `/routes`; keep it on loopback.
    pub admin_listen: Option<SocketAddr>,
    /// TLS on `listen` (certificates are read again on every reload).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where allowed requests go; `None` when only forward-auth is served
    /// (then the proxy listener is not started).
    pub upstream: Option<Upstream>,
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
    pub verifier: Verifier,
    pub remote_jwks: Vec<RemoteJwks>,
    pub token_sources: Vec<Source>,
    /// Verified tokens remembered (0: no cache).
    pub token_cache_size: usize,
    pub identity: Identity,
    pub routes: route::Table,
    /// A hash of the config text and of every file it made the gateway
    /// read: a reload with the same fingerprint changes nothing.
    pub fingerprint: u64,
    /// Structural problems that do not stop the gateway (see `scopegate check`).
    pub warnings: Vec<ConfigError>,
}

/// Builds errors that point into one file, and fingerprints what it reads.
struct Ctx<'a> {
    file: &'a Path,
    dir: PathBuf,
    hasher: std::cell::RefCell<std::collections::hash_map::DefaultHasher>,
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
    if raw.upstream.is_none() && raw.forward_auth.is_none() {
        return Err(ctx.err(
            doc,
            "upstream",
            "missing: where should allowed requests go? (or configure forward_auth)",
        ));
    }
    let upstream = raw.upstream.map(|u| build_upstream(ctx, u)).transpose()?;
    let forward_auth = raw
        .forward_auth
        .map(|f| forward_auth::build(ctx, f))
        .transpose()?;
    let limits = build_limits(ctx, raw.limits)?;

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

    let mut issuers = Vec::new();
    let mut remote_jwks = Vec::new();
    let mut issuer_at = Vec::new();
    for (i, spanned) in raw.issuers.into_iter().enumerate() {
        let field = format!("issuers[{i}]");
        issuer_at.push((field.clone(), spanned.referenced));
        let (issuer, remote) = build_issuer(ctx, &field, spanned)?;
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

    let identity = build_identity(ctx, raw.identity)?;

    let mut routes = route::Table::new(raw.paths.build());
    let mut needs_tokens = false;
    for (i, spanned) in raw.routes.into_iter().enumerate() {
        let field = format!("routes[{i}]");
        if let Some(why) = unmatchable(&spanned.value.path.value) {
            ctx.warn(
                spanned.value.path.referenced,
                format!("{field}.path"),
                format!("can never match: {why}"),
            );
        }
        let (template, rule) = build_route(ctx, &field, spanned.value)?;
        needs_tokens |= rule.auth == route::Auth::Required;
        let at = spanned.referenced;
        routes
            .insert(template, rule)
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
            Some(
                crate::tls::server_config(&cert, &key)
                    .map_err(|e| ctx.err(t.cert_file.referenced, "tls", e.to_string()))?,
            )
        }
    };
    let cors = raw.cors.map(|c| build_cors(ctx, c)).transpose()?;
    let resource_metadata = raw
        .resource_metadata
        .map(|m| build_resource_metadata(ctx, m, &routes, &token_sources))
        .transpose()?;

    Ok(Config {
        path: ctx.file.to_owned(),
        listen: raw.listen,
        admin_listen: raw.admin_listen,
        tls,
        forward_auth,
        upstream,
        trusted_proxies: raw.trusted_proxies,
        limits,
        challenge: crate::reject::Challenge {
            realm,
            resource_metadata: resource_metadata.as_ref().map(|(url, _)| url.clone()),
        },
        cors,
        resource_metadata: resource_metadata.map(|(_, m)| m),
        workers: raw.workers,
        verifier: Verifier::new(issuers, raw.tokens.max_bytes),
        remote_jwks,
        token_sources,
        token_cache_size: raw.tokens.cache_size,
        identity,
        routes,
        fingerprint: std::hash::Hasher::finish(&*ctx.hasher.borrow()),
        warnings: ctx.warnings.take(),
    })
}

/// Why no request could ever reach a template: characters that a request
/// path cannot carry (they end the path, or HTTP parsers refuse them).
fn unmatchable(template: &str) -> Option<String> {
    if template.contains('?') {
        return Some("'?' starts the query string, which is never part of the matched path".into());
    }
    let bad = template
        .chars()
        .find(|c| matches!(c, ' ' | '"' | '<' | '>' | '^' | '`' | '|'));
    bad.map(|c| format!("{c:?} is not allowed in a request path (clients send it percent-encoded)"))
}

fn build_cors(ctx: &Ctx<'_>, raw: Spanned<raw::RawCors>) -> Result<crate::cors::Cors, ConfigError> {
    let at = raw.referenced;
    let raw = raw.value;
    let origins = raw.allowed_origins.value;
    if origins.is_empty() {
        return Err(ctx.err(
            raw.allowed_origins.referenced,
            "cors.allowed_origins",
            "lists no origin",
        ));
    }
    for origin in &origins {
        let valid = origin == "*"
            || origin.parse::<Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some()
                    && origin.matches('/').count() == 2
            });
        if !valid {
            return Err(ctx.err(
                raw.allowed_origins.referenced,
                "cors.allowed_origins",
                format!("{origin:?} is not an origin like https://app.example.com (scheme and host, no path) or \"*\""),
            ));
        }
    }
    for header in &raw.allowed_headers.value {
        if HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(ctx.err(
                raw.allowed_headers.referenced,
                "cors.allowed_headers",
                format!("{header:?} is not a header name"),
            ));
        }
    }
    let credentials = raw.allow_credentials;
    if credentials.value && origins.iter().any(|o| o == "*") {
        return Err(ctx.err(
            credentials.referenced,
            "cors.allow_credentials",
            "cannot be used with \"*\": list the origins that may send credentials",
        ));
    }
    let methods = raw.allowed_methods.into_iter().map(|m| m.0).collect();
    crate::cors::Cors::new(
        origins,
        methods,
        raw.allowed_headers.value,
        raw.max_age.0,
        credentials.value,
    )
    .ok_or_else(|| ctx.err(at, "cors", "cannot be turned into CORS headers"))
}

/// Returns the metadata URL (for challenges) and the document.
fn build_resource_metadata(
    ctx: &Ctx<'_>,
    raw: Spanned<raw::RawResourceMetadata>,
    routes: &route::Table,
    sources: &[Source],
) -> Result<(String, ResourceMetadata), ConfigError> {
    let raw = raw.value;
    let at = raw.resource.referenced;
    let resource = raw.resource.value;
    let uri: Uri = resource
        .parse()
        .map_err(|_| ctx.err(at, "resource_metadata.resource", "not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(ctx.err(
            at,
            "resource_metadata.resource",
            "must be an absolute https:// URL",
        ));
    };
    if uri.query().is_some() || resource.contains('#') {
        return Err(ctx.err(
            at,
            "resource_metadata.resource",
            "must not have a query or fragment (RFC 9728 §1.2)",
        ));
    }
    // RFC 9728 §3.1: the well-known segment goes between host and path.
    let suffix = uri.path().trim_end_matches('/');
    let path = format!("/.well-known/oauth-protected-resource{suffix}");
    let url = format!("{scheme}://{authority}{path}");
    let mut scopes: Vec<&str> = routes
        .routes()
        .iter()
        .flat_map(|r| &r.rules)
        .flat_map(|rule| rule.policy.scopes().iter().chain(rule.policy.any_scope()))
        .map(String::as_str)
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    let mut methods = vec!["header"];
    if sources.iter().any(|s| matches!(s, Source::Query(_))) {
        methods.push("query");
    }
    let mut doc = serde_json::json!({
        "resource": resource,
        "authorization_servers": raw.authorization_servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": methods,
    });
    if let Some(name) = raw.resource_name {
        doc["resource_name"] = name.into();
    }
    Ok((
        url,
        ResourceMetadata {
            path,
            body: doc.to_string(),
        },
    ))
}

fn build_upstream(ctx: &Ctx<'_>, raw: Spanned<raw::RawUpstream>) -> Result<Upstream, ConfigError> {
    let raw = raw.value;
    let at = raw.url.referenced;
    let bad = |m: &str| ctx.err(at, "upstream.url", m.to_owned());
    let uri: Uri = raw
        .url
        .value
        .parse()
        .map_err(|_| bad("not a URL like http://127.0.0.1:3000"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| bad("needs a scheme: http://"))?;
    let ca = match &raw.ca_file {
        Some(f) => Some(ctx.read(f.referenced, "upstream.ca_file", &f.value)?),
        None => None,
    };
    let roots = match (scheme.as_str(), &ca) {
        ("https", Some(pem)) => crate::tls::Roots::Pem(pem),
        ("https", None) => crate::tls::Roots::System,
        ("http", None) => crate::tls::Roots::None,
        ("http", Some(_)) => {
            return Err(ctx.err(
                at,
                "upstream.ca_file",
                "only applies to an https:// upstream",
            ));
        }
        _ => return Err(bad("must be http:// or https://")),
    };
    let tls_at = raw.ca_file.as_ref().map_or(at, |f| f.referenced);
    let tls = crate::tls::client_config(roots)
        .map_err(|e| ctx.err(tls_at, "upstream.ca_file", e.to_string()))?;
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| bad("needs a host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query string"));
    }
    let prefix = uri.path().trim_end_matches('/');
    if !prefix.is_empty() && route::normalize(prefix).as_deref() != Ok(prefix) {
        return Err(bad("the path prefix must be a normalized path like /base"));
    }
    for (name, d) in [
        ("connect_timeout", raw.connect_timeout),
        ("request_timeout", raw.request_timeout),
    ] {
        if d.0.is_zero() {
            return Err(ctx.err(
                Location::UNKNOWN,
                format!("upstream.{name}"),
                "must be greater than 0",
            ));
        }
    }
    let host = http::HeaderValue::from_str(authority.as_str())
        .map_err(|_| bad("the host is not a valid Host header"))?;
    Ok(Upstream {
        scheme,
        authority,
        path_prefix: prefix.to_owned(),
        connect_timeout: raw.connect_timeout.0,
        request_timeout: raw.request_timeout.0,
        preserve_host: raw.preserve_host,
        host,
        tls,
    })
}

fn build_limits(ctx: &Ctx<'_>, raw: raw::RawLimits) -> Result<Limits, ConfigError> {
    // hyper's HTTP/1 parser cannot work with a buffer under 8 KiB.
    let header = raw.max_request_header_bytes;
    if header.value < 8192 {
        return Err(ctx.err(
            header.referenced,
            "limits.max_request_header_bytes",
            "must be at least 8192",
        ));
    }
    if raw.max_connections.value == 0 {
        return Err(ctx.err(
            raw.max_connections.referenced,
            "limits.max_connections",
            "must be greater than 0",
        ));
    }
    if raw.header_read_timeout.0.is_zero() {
        return Err(ctx.err(
            Location::UNKNOWN,
            "limits.header_read_timeout",
            "must be greater than 0",
        ));
    }
    Ok(Limits {
        max_request_header_bytes: header.value,
        max_request_body_bytes: raw.max_request_body_bytes,
        header_read_timeout: raw.header_read_timeout.0,
        idle_timeout: raw.idle_timeout.0,
        max_connections: raw.max_connections.value,
        drain_timeout: raw.drain_timeout.0,
    })
}

fn build_issuer(
    ctx: &Ctx<'_>,
    field: &str,
    spanned: Spanned<RawIssuer>,
) -> Result<(Issuer, Option<RemoteJwks>), ConfigError> {
    let at = spanned.referenced;
    let raw = spanned.value;
    let name = raw.issuer.value;
    if name.is_empty() {
        return Err(ctx.err(
            raw.issuer.referenced,
            format!("{field}.issuer"),
            "must not be empty",
        ));
    }
    let audiences = raw.audiences.value;
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(ctx.err(
            raw.audiences.referenced,
            format!("{field}.audiences"),
            "must list at least one non-empty audience",
        ));
    }
    let algorithms: Vec<_> = raw.algorithms.value.iter().map(|a| a.0).collect();
    let alg_at = raw.algorithms.referenced;
    if algorithms.is_empty() {
        return Err(ctx.err(
            alg_at,
            format!("{field}.algorithms"),
            "must list at least one algorithm",
        ));
    }
    let hmac = algorithms
        .iter()
        .filter(|a| kind_for(**a) == Some(crate::jwks::KeyKind::Hmac))
        .count();

    // (name, position, value) of every key source given.
    let mut given: Vec<(&str, Location, &str)> = Vec::new();
    for (name, source) in [
        ("jwks_uri", &raw.jwks_uri),
        ("jwks_file", &raw.jwks_file),
        ("public_key_file", &raw.public_key_file),
        ("hs256_secret_env", &raw.hs256_secret_env),
    ] {
        if let Some(v) = source {
            given.push((name, v.referenced, v.value.as_str()));
        }
    }
    if let Some(d) = raw.discovery.as_ref().filter(|d| d.value) {
        given.push(("discovery", d.referenced, ""));
    }
    let (kind, key_at, value) = match given.as_slice() {
        [] => {
            return Err(ctx.err(
                at,
                field,
                "needs exactly one key source: jwks_uri, discovery, jwks_file, public_key_file or hs256_secret_env",
            ));
        }
        [one] => *one,
        [first, (other, other_at, _), ..] => {
            return Err(ctx.err(
                *other_at,
                format!("{field}.{other}"),
                format!(
                    "only one key source per issuer ({} is already set)",
                    first.0
                ),
            ));
        }
    };
    let key_field = format!("{field}.{kind}");
    if kind == "hs256_secret_env" {
        if hmac != algorithms.len() {
            return Err(ctx.err(
                alg_at,
                format!("{field}.algorithms"),
                "a shared secret verifies only HS256, HS384 and HS512",
            ));
        }
    } else if hmac > 0 {
        return Err(ctx.err(
            alg_at,
            format!("{field}.algorithms"),
            "HS256/384/512 need hs256_secret_env (a public key source cannot verify them)",
        ));
    }
    for (name, d) in [
        ("jwks_refresh", raw.jwks_refresh),
        ("jwks_max_stale", raw.jwks_max_stale),
    ] {
        if d.0 < Duration::from_secs(1) {
            return Err(ctx.err(at, format!("{field}.{name}"), "must be at least 1s"));
        }
    }

    let keys = Arc::new(KeyCell::default());
    let remote_source = match kind {
        "jwks_uri" => {
            let uri: Uri = value
                .parse()
                .map_err(|_| ctx.err(key_at, &key_field, "not a URL"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(ctx.err(key_at, &key_field, "must be an http:// or https:// URL"));
            }
            Some(RemoteSource::Jwks(value.to_owned()))
        }
        "discovery" => {
            let uri: Uri = name
                .parse()
                .map_err(|_| ctx.err(key_at, &key_field, "the issuer is not a URL"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(ctx.err(
                    key_at,
                    &key_field,
                    "discovery needs an http:// or https:// issuer",
                ));
            }
            Some(RemoteSource::Discovery)
        }
        "jwks_file" => {
            let bytes = ctx.read(key_at, &key_field, value)?;
            let set = KeySet::from_jwks(&bytes)
                .map_err(|e| ctx.err(key_at, &key_field, e.to_string()))?;
            keys.store(set);
            None
        }
        "public_key_file" => {
            let bytes = ctx.read(key_at, &key_field, value)?;
            let set =
                KeySet::from_pem(&bytes).map_err(|e| ctx.err(key_at, &key_field, e.to_string()))?;
            let key_kind = set.keys()[0].kind;
            if let Some(alg) = algorithms.iter().find(|a| kind_for(**a) != Some(key_kind)) {
                return Err(ctx.err(
                    alg_at,
                    format!("{field}.algorithms"),
                    format!("{alg:?} cannot be verified with this {key_kind:?} key"),
                ));
            }
            keys.store(set);
            None
        }
        _ => {
            match std::env::var(value) {
                Ok(secret) => {
                    let set = KeySet::from_secret(secret.as_bytes(), &algorithms)
                        .map_err(|e| ctx.err(key_at, &key_field, format!("{value}: {e}")))?;
                    keys.store(set);
                }
                Err(_) if ctx.offline => ctx.warn(
                    key_at,
                    &key_field,
                    format!("environment variable {value} is not set here: `scopegate run` would refuse to start"),
                ),
                Err(_) => return Err(ctx.err(key_at, &key_field, format!("environment variable {value} is not set"))),
            }
            None
        }
    };
    let remote = remote_source.map(|source| RemoteJwks {
        spec: RemoteSpec {
            issuer: name.clone(),
            source,
            refresh: raw.jwks_refresh.0,
            max_stale: raw.jwks_max_stale.0,
        },
        keys: keys.clone(),
    });

    let scope_claims = raw.scope_claims.value;
    if scope_claims.is_empty() || scope_claims.iter().any(String::is_empty) {
        return Err(ctx.err(
            raw.scope_claims.referenced,
            format!("{field}.scope_claims"),
            "must list at least one claim name",
        ));
    }
    let issuer = Issuer {
        name,
        audiences,
        algorithms,
        clock_skew: secs_i64(raw.clock_skew.0),
        max_token_age: raw.max_token_age.map(|d| secs_i64(d.0)),
        require_typ: raw.require_typ.as_deref().map(crate::token::canonical_typ),
        scope_claims: scope_claims.iter().map(|c| ClaimName::new(c)).collect(),
        keys,
    };
    Ok((issuer, remote))
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Headers a token must never be able to set.
fn reserved_header(name: &HeaderName) -> bool {
    use http::header::*;
    [
        HOST,
        AUTHORIZATION,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        CONNECTION,
        TE,
        TRAILER,
        UPGRADE,
        COOKIE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
        || name.as_str().starts_with("x-forwarded-")
}

fn build_identity(ctx: &Ctx<'_>, raw: raw::RawIdentity) -> Result<Identity, ConfigError> {
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        let field = format!("identity.headers.{name}");
        let at = value.referenced;
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ctx.err(at, &field, "not a valid header name"))?;
        if reserved_header(&header) {
            return Err(ctx.err(at, &field, "this header cannot carry identity"));
        }
        if value.value.is_empty() {
            return Err(ctx.err(at, &field, "needs a claim name or \"scopes\""));
        }
        let v = if value.value == "scopes" {
            IdentityValue::Scopes
        } else {
            IdentityValue::Claim(ClaimName::new(&value.value))
        };
        headers.push((header, v));
    }
    Ok(Identity {
        strip_authorization: raw.strip_authorization,
        headers,
    })
}

/// RFC 6750 §3: scope tokens are NQCHAR, without spaces.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn is_scalar(v: &serde_json::Value) -> bool {
    matches!(
        v,
        serde_json::Value::String(_) | serde_json::Value::Number(_) | serde_json::Value::Bool(_)
    )
}

fn build_route(
    ctx: &Ctx<'_>,
    field: &str,
    raw: RawRoute,
) -> Result<(Template, route::Rule), ConfigError> {
    let template = Template::parse(&raw.path.value)
        .map_err(|e| ctx.err(raw.path.referenced, format!("{field}.path"), e.to_string()))?;
    let methods = match &raw.methods {
        None => Methods::ALL,
        Some(list) if list.value.is_empty() => {
            return Err(ctx.err(
                list.referenced,
                format!("{field}.methods"),
                "is empty: leave it out to allow every method",
            ));
        }
        Some(list) => Methods::from_list(list.value.iter().map(|m| &m.0)).map_err(|m| {
            ctx.err(
                list.referenced,
                format!("{field}.methods"),
                format!("{m} cannot be routed"),
            )
        })?,
    };
    let check_scopes = |name: &str, list: &[Spanned<String>]| {
        for s in list {
            if !valid_scope(&s.value) {
                return Err(ctx.err(
                    s.referenced,
                    format!("{field}.{name}"),
                    format!(
                        "{:?} is not a valid scope (no spaces, quotes or backslashes)",
                        s.value
                    ),
                ));
            }
        }
        Ok(list.iter().map(|s| s.value.clone()).collect::<Vec<_>>())
    };
    let scopes = check_scopes("scopes", &raw.scopes)?;
    let any_scope = check_scopes("any_scope", &raw.any_scope)?;
    let mut claims = Vec::new();
    for (i, rule) in raw.claims.into_iter().enumerate() {
        let at = rule.referenced;
        let cf = format!("{field}.claims[{i}]");
        let rule = rule.value;
        if rule.claim.is_empty() {
            return Err(ctx.err(at, format!("{cf}.claim"), "must name a claim"));
        }
        let check = match (rule.equals, rule.includes) {
            (Some(v), None) if is_scalar(&v) => ClaimCheck::Equals(v),
            (Some(_), None) => {
                return Err(ctx.err(
                    at,
                    format!("{cf}.equals"),
                    "must be a string, number or boolean",
                ));
            }
            (None, Some(list)) if !list.is_empty() && list.iter().all(is_scalar) => {
                ClaimCheck::Includes(list)
            }
            (None, Some(_)) => {
                return Err(ctx.err(
                    at,
                    format!("{cf}.includes"),
                    "must list one or more strings, numbers or booleans",
                ));
            }
            _ => return Err(ctx.err(at, &cf, "needs exactly one of equals or includes")),
        };
        claims.push(ClaimRule {
            claim: ClaimName::new(&rule.claim),
            check,
        });
    }
    let auth = match raw.auth {
        raw::RawAuth::None => {
            if !scopes.is_empty() || !any_scope.is_empty() || !claims.is_empty() {
                return Err(ctx.err(
                    raw.path.referenced,
                    format!("{field}.auth"),
                    "auth: none cannot have scopes, any_scope or claims",
                ));
            }
            route::Auth::None
        }
        raw::RawAuth::Required => route::Auth::Required,
    };
    Ok((
        template,
        route::Rule {
            methods,
            auth,
            policy: Policy::new(scopes, any_scope, claims),
        },
    ))
}
