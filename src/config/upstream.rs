//! `upstream:` and `upstreams:` — where allowed requests go, how to talk to
//! them, and the gateway's own credential toward each (SPEC §4.3).
//!
//! Pure: depends on `http`, `rustls` (client roots) and [`crate::route`];
//! reads secret files and environment variables named by the config.

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};
use http::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::raw::Dur;
use super::{ConfigError, Ctx, raw};
use crate::route;

/// The name the default `upstream:` goes by in metrics and `/routes`.
pub const DEFAULT_NAME: &str = "default";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    /// An OAuth 2.0 client-credentials grant (RFC 6749 §4.4).
    #[schemars(with = "Option<RawClientCredentials>")]
    pub client_credentials: Option<Spanned<RawClientCredentials>>,
    /// A static credential: one header, its value from the environment or a file.
    #[schemars(with = "Option<RawStaticHeader>")]
    pub header: Option<Spanned<RawStaticHeader>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientCredentials {
    /// The token endpoint; or `issuer:` to find it by OIDC discovery.
    #[schemars(with = "Option<String>")]
    pub token_url: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub issuer: Option<Spanned<String>>,
    #[schemars(with = "String")]
    pub client_id: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub client_secret_env: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub client_secret_file: Option<Spanned<String>>,
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// Auth0's `audience` parameter.
    #[schemars(with = "Option<String>")]
    pub audience: Option<Spanned<String>>,
    /// RFC 8707's `resource` parameter.
    #[schemars(with = "Option<String>")]
    pub resource: Option<Spanned<String>>,
    /// Space-separated scopes to ask for.
    pub scope: Option<String>,
    /// Renew this long before expiry (or at 80% of the lifetime, whichever
    /// comes first; never before 50%).
    #[serde(default = "RawClientCredentials::default_refresh_before")]
    pub refresh_before: Dur,
}

impl RawClientCredentials {
    fn default_refresh_before() -> Dur {
        Dur(Duration::from_secs(60))
    }
}

/// How the gateway authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStaticHeader {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub value_env: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub value_file: Option<Spanned<String>>,
}

/// A secret read from the environment or a file: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the token endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenEndpoint {
    Url(String),
    /// `token_endpoint` from `{issuer}/.well-known/openid-configuration`.
    Discover {
        issuer: String,
    },
}

/// A client-credentials grant, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCredentials {
    pub endpoint: TokenEndpoint,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_method: AuthMethod,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub refresh_before: Duration,
}

impl ClientCredentials {
    /// Everything but the secret: a secret rotated by a reload keeps the
    /// current token until the new secret has fetched one.
    pub fn same_grant(&self, other: &ClientCredentials) -> bool {
        ClientCredentials {
            client_secret: other.client_secret.clone(),
            ..self.clone()
        } == *other
    }
}

/// Where an injected credential goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inject {
    /// `Authorization: Bearer <token>`, replacing the caller's.
    Authorization,
    /// This header carries the bare token; client copies are removed.
    Header(HeaderName),
}

/// The gateway's own credential toward an upstream.
#[derive(Debug, Clone)]
pub enum Credential {
    ClientCredentials {
        grant: ClientCredentials,
        inject: Inject,
    },
    /// A static header (its value marked sensitive).
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
}

impl Credential {
    /// The header the credential is sent in.
    pub fn header(&self) -> &HeaderName {
        match self {
            Credential::ClientCredentials {
                inject: Inject::Authorization,
                ..
            } => &http::header::AUTHORIZATION,
            Credential::ClientCredentials {
                inject: Inject::Header(name),
                ..
            }
            | Credential::Header { name, .. } => name,
        }
    }
}

/// Where an upstream is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `default` for `upstream:`, else its key in `upstreams:`.
    pub name: Arc<str>,
    /// The gateway's own credential toward it, if any.
    pub credential: Option<Credential>,
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

/// Validates one upstream; `field` is `upstream` or `upstreams.NAME`.
pub(super) fn build(
    ctx: &Ctx<'_>,
    name: &str,
    field: &str,
    raw: Spanned<raw::RawUpstream>,
) -> Result<Upstream, ConfigError> {
    let raw = raw.value;
    let at = raw.url.referenced;
    let url_field = format!("{field}.url");
    let bad = |m: &str| ctx.err(at, &url_field, m.to_owned());
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
        Some(f) => Some(ctx.read(f.referenced, &format!("{field}.ca_file"), &f.value)?),
        None => None,
    };
    let roots = match (scheme.as_str(), &ca) {
        ("https", Some(pem)) => crate::tls::Roots::Pem(pem),
        ("https", None) => crate::tls::Roots::System,
        ("http", None) => crate::tls::Roots::None,
        ("http", Some(_)) => {
            return Err(ctx.err(
                at,
                format!("{field}.ca_file"),
                "only applies to an https:// upstream",
            ));
        }
        _ => return Err(bad("must be http:// or https://")),
    };
    let tls_at = raw.ca_file.as_ref().map_or(at, |f| f.referenced);
    let tls = crate::tls::client_config(roots)
        .map_err(|e| ctx.err(tls_at, format!("{field}.ca_file"), e.to_string()))?;
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
    for (timeout, d) in [
        ("connect_timeout", raw.connect_timeout),
        ("request_timeout", raw.request_timeout),
    ] {
        if d.0.is_zero() {
            return Err(ctx.err(
                Location::UNKNOWN,
                format!("{field}.{timeout}"),
                "must be greater than 0",
            ));
        }
    }
    let host = http::HeaderValue::from_str(authority.as_str())
        .map_err(|_| bad("the host is not a valid Host header"))?;
    let credential = credential(ctx, field, raw.credentials, raw.inject_as)?;
    Ok(Upstream {
        name: name.into(),
        credential,
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

/// A secret from `*_env` or `*_file` (one trailing newline dropped); in
/// `scopegate check`, an unset variable is a warning and an empty secret
/// stands in.
pub(super) fn secret(
    ctx: &Ctx<'_>,
    field: &str,
    what: &str,
    at: Location,
    env: Option<&Spanned<String>>,
    file: Option<&Spanned<String>>,
) -> Result<Secret, ConfigError> {
    let value = match (env, file) {
        (Some(env), None) => match std::env::var(&env.value) {
            Ok(v) => v,
            Err(_) if ctx.offline => {
                ctx.warn(
                    env.referenced,
                    format!("{field}.{what}_env"),
                    format!("environment variable {} is not set here: `scopegate run` would refuse to start", env.value),
                );
                String::new()
            }
            Err(_) => {
                return Err(ctx.err(
                    env.referenced,
                    format!("{field}.{what}_env"),
                    format!("environment variable {} is not set", env.value),
                ));
            }
        },
        (None, Some(file)) => {
            let f = format!("{field}.{what}_file");
            let bytes = ctx.read(file.referenced, &f, &file.value)?;
            let mut text = String::from_utf8(bytes)
                .map_err(|_| ctx.err(file.referenced, &f, "is not UTF-8 text"))?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            text
        }
        _ => {
            return Err(ctx.err(
                at,
                field,
                format!("needs exactly one of {what}_env or {what}_file"),
            ));
        }
    };
    if !ctx.offline && value.is_empty() {
        return Err(ctx.err(at, field, format!("the {what} is empty")));
    }
    Ok(Secret(value))
}

fn http_url(value: &str) -> bool {
    value
        .parse::<Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

fn credential(
    ctx: &Ctx<'_>,
    field: &str,
    raw: Option<Spanned<RawCredentials>>,
    inject_as: Option<Spanned<String>>,
) -> Result<Option<Credential>, ConfigError> {
    let inject = match &inject_as {
        None => Inject::Authorization,
        Some(i) if i.value == "authorization" => Inject::Authorization,
        Some(i) => {
            let name = i
                .value
                .strip_prefix("header:")
                .and_then(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .filter(|n| !super::identity::reserved_header(n));
            match name {
                Some(name) => Inject::Header(name),
                None => {
                    return Err(ctx.err(
                        i.referenced,
                        format!("{field}.inject_as"),
                        "must be authorization or header:NAME (a header that may carry a credential)",
                    ));
                }
            }
        }
    };
    let Some(raw) = raw else {
        if let Some(i) = inject_as {
            return Err(ctx.err(
                i.referenced,
                format!("{field}.inject_as"),
                "there is no credential to inject (set credentials.client_credentials)",
            ));
        }
        return Ok(None);
    };
    let at = raw.referenced;
    let field = format!("{field}.credentials");
    match (raw.value.client_credentials, raw.value.header) {
        (Some(cc), None) => {
            let cc_at = cc.referenced;
            let cc = cc.value;
            let f = format!("{field}.client_credentials");
            let endpoint = match (&cc.token_url, &cc.issuer) {
                (Some(url), None) if http_url(&url.value) => TokenEndpoint::Url(url.value.clone()),
                (None, Some(issuer)) if http_url(&issuer.value) => TokenEndpoint::Discover {
                    issuer: issuer.value.clone(),
                },
                (Some(v), None) | (None, Some(v)) => {
                    return Err(ctx.err(
                        v.referenced,
                        &f,
                        "token_url and issuer must be http(s) URLs",
                    ));
                }
                _ => {
                    return Err(ctx.err(
                        cc_at,
                        &f,
                        "needs exactly one of token_url or issuer (token_endpoint found by OIDC discovery)",
                    ));
                }
            };
            if cc.audience.is_some() && cc.resource.is_some() {
                return Err(ctx.err(
                    cc_at,
                    &f,
                    "at most one of audience (Auth0) or resource (RFC 8707)",
                ));
            }
            if cc.client_id.value.is_empty() {
                return Err(ctx.err(
                    cc.client_id.referenced,
                    format!("{f}.client_id"),
                    "must not be empty",
                ));
            }
            let client_secret = secret(
                ctx,
                &f,
                "client_secret",
                cc_at,
                cc.client_secret_env.as_ref(),
                cc.client_secret_file.as_ref(),
            )?;
            Ok(Some(Credential::ClientCredentials {
                grant: ClientCredentials {
                    endpoint,
                    client_id: cc.client_id.value,
                    client_secret,
                    auth_method: cc.auth_method,
                    audience: cc.audience.map(|a| a.value),
                    resource: cc.resource.map(|r| r.value),
                    scope: cc.scope,
                    refresh_before: cc.refresh_before.0,
                },
                inject,
            }))
        }
        (None, Some(header)) => {
            if let Some(i) = inject_as {
                return Err(ctx.err(
                    i.referenced,
                    format!("{field}.inject_as"),
                    "applies to client_credentials; a static header names its own header",
                ));
            }
            let h_at = header.referenced;
            let header = header.value;
            let f = format!("{field}.header");
            let name = HeaderName::from_bytes(header.name.value.as_bytes())
                .ok()
                .filter(|n| {
                    !super::identity::reserved_header(n) || *n == http::header::AUTHORIZATION
                })
                .ok_or_else(|| {
                    ctx.err(
                        header.name.referenced,
                        format!("{f}.name"),
                        "not a header that may carry a credential",
                    )
                })?;
            let value = secret(
                ctx,
                &f,
                "value",
                h_at,
                header.value_env.as_ref(),
                header.value_file.as_ref(),
            )?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| ctx.err(h_at, &f, "the value cannot be sent in a header"))?;
            value.set_sensitive(true);
            Ok(Some(Credential::Header { name, value }))
        }
        _ => Err(ctx.err(
            at,
            field,
            "needs exactly one of client_credentials or header",
        )),
    }
}
