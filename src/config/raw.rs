//! The shape of `gateway.yaml` as written: serde structs that refuse unknown
//! keys, with scalar types (durations, addresses, methods, algorithms,
//! CIDRs) parsed on the spot so that their errors carry a position.
//!
//! Pure: depends on `serde`, `serde-saphyr` (spans) and `http`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, de};
use serde_saphyr::Spanned;

/// A duration written as `500ms`, `30s`, `5m`, `2h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s, 5m, 2h or 1d"))?;
        let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs);
        let d = match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => secs(1),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            _ => None,
        };
        d.map(Dur)
            .ok_or_else(|| format!("{s:?} is not a duration like 500ms, 30s, 5m, 2h or 1d"))
    }
}

/// Deserializes a string through `FromStr`, keeping its error message.
macro_rules! from_str_de {
    ($ty:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

from_str_de!(Dur, "a duration string like 30s");

/// A string schema for a scalar parsed with `FromStr`.
macro_rules! string_schema {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

string_schema!(Dur, "Duration", {
    "type": "string",
    "pattern": "^[0-9]+(ms|s|m|h|d)$",
    "description": "A duration: 500ms, 30s, 5m, 2h or 1d."
});

/// An HTTP method as written in `methods:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(pub http::Method);

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let upper = s.to_ascii_uppercase();
        if upper != s {
            return Err(format!(
                "methods are upper case: write {upper} instead of {s}"
            ));
        }
        if s == "CONNECT" {
            return Err("CONNECT is never routed".into());
        }
        let known = crate::route::KNOWN_METHODS.iter().find(|m| m.as_str() == s);
        known.cloned().map(Method).ok_or_else(|| {
            format!(
                "unknown method {s:?} (one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE)"
            )
        })
    }
}

from_str_de!(Method, "an HTTP method like GET");
string_schema!(Method, "Method", {
    "type": "string",
    "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
});

/// A JWS algorithm name from the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alg(pub jsonwebtoken::Algorithm);

impl FromStr for Alg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("none") {
            return Err("alg none is never accepted".into());
        }
        crate::jwks::parse_alg(s).map(Alg).ok_or_else(|| {
            format!("unknown algorithm {s:?} (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA, HS256/384/512)")
        })
    }
}

from_str_de!(Alg, "a JWS algorithm like RS256");
string_schema!(Alg, "Algorithm", {
    "type": "string",
    "enum": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512"]
});

/// An address range: `10.0.0.0/8`, `::1/128`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address or CIDR range like 10.0.0.0/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

from_str_de!(Cidr, "a CIDR range like 10.0.0.0/8");
string_schema!(Cidr, "Cidr", {
    "type": "string",
    "pattern": "^[0-9a-fA-F:.]+(/[0-9]{1,3})?$",
    "description": "An address or CIDR range: 10.0.0.0/8, ::1."
});

/// A token source: `header`, `cookie:NAME` or `query:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource(pub crate::token::Source);

impl FromStr for TokenSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use crate::token::Source;
        let named = |n: &str| {
            if n.is_empty() || n.contains([';', '=', '&', ' ', ',']) {
                Err(format!(
                    "{s:?}: the name after ':' must be a plain cookie or parameter name"
                ))
            } else {
                Ok(n.to_owned())
            }
        };
        Ok(TokenSource(match s.split_once(':') {
            None if s == "header" => Source::Header,
            Some(("cookie", name)) => Source::Cookie(named(name)?),
            Some(("query", name)) => Source::Query(named(name)?),
            _ => {
                return Err(format!(
                    "unknown token source {s:?} (header, \"cookie:NAME\" or \"query:NAME\")"
                ));
            }
        }))
    }
}

from_str_de!(TokenSource, "header, cookie:NAME or query:NAME");
string_schema!(TokenSource, "TokenSource", {
    "type": "string",
    "pattern": "^(header|cookie:[^;=&, ]+|query:[^;=&, ]+)$"
});

/// A default value, which has no position in the file.
pub(super) fn unspanned<T>(value: T) -> Spanned<T> {
    let here = serde_saphyr::Location::UNKNOWN;
    Spanned {
        value,
        referenced: here,
        defined: here,
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_workers() -> Spanned<usize> {
    unspanned(0)
}
fn default_events_per_busy_turn() -> Spanned<usize> {
    unspanned(super::DEFAULT_EVENTS_PER_BUSY_TURN)
}
fn default_realm() -> Spanned<String> {
    unspanned("api".into())
}
fn default_true() -> bool {
    true
}
fn secs(n: u64) -> Dur {
    Dur(Duration::from_secs(n))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    #[schemars(with = "Option<RawTls>")]
    pub tls: Option<Spanned<RawTls>>,
    #[schemars(with = "Option<RawUpstream>")]
    pub upstream: Option<Spanned<RawUpstream>>,
    /// Named upstreams, chosen by a route's `upstream:`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawUpstream>")]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[schemars(with = "Option<super::forward_auth::RawForwardAuth>")]
    pub forward_auth: Option<Spanned<super::forward_auth::RawForwardAuth>>,
    #[serde(default)]
    pub paths: super::paths::RawPaths,
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default = "default_realm")]
    #[schemars(with = "String")]
    pub realm: Spanned<String>,
    #[serde(default = "default_workers")]
    #[schemars(with = "usize")]
    pub workers: Spanned<usize>,
    /// Ready sockets an event loop with requests still queued takes from
    /// the kernel per turn, 1 to 1024 (a loop that waited takes up to
    /// 1024): fewer shorten the tail.
    #[serde(default = "default_events_per_busy_turn")]
    #[schemars(with = "usize")]
    pub events_per_busy_turn: Spanned<usize>,
    #[serde(default)]
    #[schemars(with = "Vec<RawIssuer>")]
    pub issuers: Vec<Spanned<RawIssuer>>,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    #[schemars(with = "Vec<RawRoute>")]
    pub routes: Vec<Spanned<RawRoute>>,
    #[schemars(with = "Option<RawCors>")]
    pub cors: Option<Spanned<RawCors>>,
    #[schemars(with = "Option<RawResourceMetadata>")]
    pub resource_metadata: Option<Spanned<RawResourceMetadata>>,
    /// Quotas keyed on the verified caller.
    #[schemars(with = "Option<super::quotas::RawRateLimits>")]
    pub rate_limits: Option<Spanned<super::quotas::RawRateLimits>>,
    /// `enforce` (default) or `shadow`: refusals (401, 403) are logged and
    /// counted, and the request forwarded as if allowed.
    #[serde(default)]
    pub mode: RawMode,
    /// W3C trace context and OTLP export.
    pub tracing: Option<super::tracing::RawTracing>,
    /// An OpenAPI 3.0/3.1 document whose security requirements become
    /// routes; explicit `routes:` win for the same template and method.
    #[schemars(with = "Option<String>")]
    pub routes_from_openapi: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Exact origins like `https://app.example.com`, or `*`.
    #[schemars(with = "Vec<String>")]
    pub allowed_origins: Spanned<Vec<String>>,
    #[serde(default = "RawCors::default_methods")]
    pub allowed_methods: Vec<Method>,
    #[serde(default = "RawCors::default_headers")]
    #[schemars(with = "Vec<String>")]
    pub allowed_headers: Spanned<Vec<String>>,
    #[serde(default = "RawCors::default_max_age")]
    pub max_age: Dur,
    /// `Access-Control-Allow-Credentials: true` for explicitly listed
    /// origins (never with `*`); otherwise the upstream's is removed.
    #[serde(default = "RawCors::default_credentials")]
    #[schemars(with = "bool")]
    pub allow_credentials: Spanned<bool>,
}

impl RawCors {
    fn default_methods() -> Vec<Method> {
        [
            http::Method::GET,
            http::Method::HEAD,
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ]
        .into_iter()
        .map(Method)
        .collect()
    }
    fn default_headers() -> Spanned<Vec<String>> {
        unspanned(vec!["Authorization".into(), "Content-Type".into()])
    }
    fn default_max_age() -> Dur {
        secs(600)
    }
    fn default_credentials() -> Spanned<bool> {
        unspanned(false)
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResourceMetadata {
    /// The protected resource's identifier (an https URL).
    #[schemars(with = "String")]
    pub resource: Spanned<String>,
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    pub resource_name: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[schemars(with = "String")]
    pub cert_file: Spanned<String>,
    #[schemars(with = "String")]
    pub key_file: Spanned<String>,
    /// PEM CAs whose client certificates are requested (not required):
    /// what certificate-bound tokens (`cnf.x5t#S256`) are checked against.
    #[schemars(with = "Option<String>")]
    pub client_ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// CA bundle for an https upstream (default: the system's roots).
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Spanned<String>>,
    #[serde(default = "RawUpstream::default_connect")]
    pub connect_timeout: Dur,
    #[serde(default = "RawUpstream::default_request")]
    pub request_timeout: Dur,
    #[serde(default = "default_true")]
    pub preserve_host: bool,
    /// The gateway's own credential toward this upstream.
    #[schemars(with = "Option<super::upstream::RawCredentials>")]
    pub credentials: Option<Spanned<super::upstream::RawCredentials>>,
    /// Where a client-credentials token goes: `authorization` (default:
    /// `Bearer`, replacing the caller's) or `header:NAME` (the bare token).
    #[schemars(with = "Option<String>")]
    pub inject_as: Option<Spanned<String>>,
}

impl RawUpstream {
    fn default_connect() -> Dur {
        secs(2)
    }
    fn default_request() -> Dur {
        secs(30)
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    #[schemars(with = "usize")]
    pub max_request_header_bytes: Spanned<usize>,
    pub max_request_body_bytes: u64,
    pub header_read_timeout: Dur,
    pub idle_timeout: Dur,
    /// The longest wait for the next request-body chunk (408).
    pub body_timeout: Dur,
    /// WebSocket tunnels are closed after this long; 0s: no limit.
    pub tunnel_max_lifetime: Dur,
    #[schemars(with = "usize")]
    pub max_connections: Spanned<usize>,
    pub drain_timeout: Dur,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_request_header_bytes: unspanned(16_384),
            max_request_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: secs(10),
            idle_timeout: secs(60),
            body_timeout: secs(30),
            tunnel_max_lifetime: secs(0),
            max_connections: unspanned(10_000),
            drain_timeout: secs(30),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    #[schemars(with = "String")]
    pub issuer: Spanned<String>,
    #[schemars(with = "Vec<String>")]
    pub audiences: Spanned<Vec<String>>,
    #[schemars(with = "Option<String>")]
    pub jwks_uri: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub jwks_file: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub public_key_file: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub hs256_secret_env: Option<Spanned<String>>,
    /// `true`: find the JWKS through OIDC discovery.
    #[schemars(with = "Option<bool>")]
    pub discovery: Option<Spanned<bool>>,
    #[serde(default = "RawIssuer::default_refresh")]
    pub jwks_refresh: Dur,
    #[serde(default = "RawIssuer::default_max_stale")]
    pub jwks_max_stale: Dur,
    #[serde(default = "RawIssuer::default_algorithms")]
    #[schemars(with = "Vec<Alg>")]
    pub algorithms: Spanned<Vec<Alg>>,
    #[serde(default = "RawIssuer::default_skew")]
    pub clock_skew: Dur,
    pub max_token_age: Option<Dur>,
    pub require_typ: Option<String>,
    #[serde(default = "RawIssuer::default_scope_claims")]
    #[schemars(with = "Vec<String>")]
    pub scope_claims: Spanned<Vec<String>>,
    /// RFC 7662 token introspection, for opaque tokens (and all tokens
    /// with `always: true`).
    #[schemars(with = "Option<super::introspection::RawIntrospection>")]
    pub introspection: Option<Spanned<super::introspection::RawIntrospection>>,
    /// DPoP (RFC 9449) for this issuer's tokens.
    #[schemars(with = "Option<super::dpop::RawDpop>")]
    pub dpop: Option<Spanned<super::dpop::RawDpop>>,
}

impl RawIssuer {
    fn default_algorithms() -> Spanned<Vec<Alg>> {
        unspanned(vec![Alg(jsonwebtoken::Algorithm::RS256)])
    }
    fn default_skew() -> Dur {
        secs(30)
    }
    fn default_refresh() -> Dur {
        secs(300)
    }
    fn default_max_stale() -> Dur {
        secs(86_400)
    }
    fn default_scope_claims() -> Spanned<Vec<String>> {
        unspanned(vec!["scope".into(), "scp".into(), "permissions".into()])
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokens {
    #[schemars(with = "Vec<TokenSource>")]
    pub from: Spanned<Vec<TokenSource>>,
    pub max_bytes: usize,
    /// Verified tokens remembered; 0 turns the cache off.
    pub cache_size: usize,
}

impl Default for RawTokens {
    fn default() -> Self {
        RawTokens {
            from: unspanned(vec![TokenSource(crate::token::Source::Header)]),
            max_bytes: 8192,
            cache_size: 100_000,
        }
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdentity {
    pub strip_authorization: bool,
    #[schemars(with = "BTreeMap<String, String>")]
    pub headers: BTreeMap<String, Spanned<String>>,
}

/// Whether refusals are enforced or only reported (SPEC §4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawAuth {
    None,
    #[default]
    Required,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// A name from `upstreams:`; default: `upstream:`.
    #[schemars(with = "Option<String>")]
    pub upstream: Option<Spanned<String>>,
    /// Only requests for this host (case-insensitive, port ignored).
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    /// A policy from `rate_limits.policies`.
    #[schemars(with = "Option<String>")]
    pub rate_limit: Option<Spanned<String>>,
    /// Overrides the top-level `mode` for this route.
    pub mode: Option<RawMode>,
    #[schemars(with = "Option<Vec<Method>>")]
    pub methods: Option<Spanned<Vec<Method>>>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub scopes: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub any_scope: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<RawClaimRule>")]
    pub claims: Vec<Spanned<RawClaimRule>>,
    /// Only tokens of these issuers (`issuers[].issuer` values).
    #[schemars(with = "Option<Vec<String>>")]
    pub issuers: Option<Spanned<Vec<String>>>,
    /// Overrides the token's issuer's `dpop` on this route.
    #[schemars(with = "Option<super::dpop::RawDpop>")]
    pub dpop: Option<Spanned<super::dpop::RawDpop>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClaimRule {
    pub claim: String,
    pub equals: Option<serde_json::Value>,
    pub includes: Option<Vec<serde_json::Value>>,
    /// Equal to this path parameter of the route's template.
    pub equals_param: Option<String>,
    /// Equal to this request header (sent exactly once, else 400).
    pub equals_header: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("500ms".parse(), Ok(Dur(Duration::from_millis(500))));
        assert_eq!("30s".parse(), Ok(secs(30)));
        assert_eq!("5m".parse(), Ok(secs(300)));
        assert_eq!("24h".parse(), Ok(secs(86_400)));
        assert_eq!("1d".parse(), Ok(secs(86_400)));
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "30 s",
            "1w",
            "99999999999999999999d",
        ] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cidrs() {
        let net: Cidr = "10.0.0.0/8".parse().expect("valid");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let one: Cidr = "::1".parse().expect("valid");
        assert!(one.contains("::1".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "::1/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }
}
