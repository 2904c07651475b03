//! `issuers[].introspection` — RFC 7662 token introspection for opaque
//! access tokens (SPEC §4.4): the endpoint, the gateway's client
//! authentication, and the answer cache's bounds.
//!
//! Pure: depends on `serde`; reads the secret named by the config.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::raw::Dur;
use super::upstream::{AuthMethod, Secret};
use super::{ConfigError, Ctx};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// The introspection endpoint; default: `introspection_endpoint` from
    /// the issuer's OIDC discovery document.
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<Spanned<String>>,
    #[schemars(with = "String")]
    pub client_id: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub client_secret_env: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub client_secret_file: Option<Spanned<String>>,
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// Bounds each call.
    #[serde(default = "RawIntrospection::default_timeout")]
    pub timeout: Dur,
    /// Upper bound on caching an active answer (never past its `exp`).
    #[serde(default = "RawIntrospection::default_cache_ttl")]
    pub cache_ttl: Dur,
    /// How long an `active: false` answer is remembered; 0s: not at all.
    #[serde(default = "RawIntrospection::default_negative_ttl")]
    pub negative_cache_ttl: Dur,
    /// Answers remembered at most (LRU).
    #[serde(default = "RawIntrospection::default_entries")]
    pub cache_entries: usize,
    /// An active answer must carry an allowed `aud`.
    #[serde(default = "RawIntrospection::default_true")]
    pub require_aud: bool,
    /// With several introspecting issuers: the prefix of this issuer's
    /// opaque tokens.
    pub token_prefix: Option<String>,
    /// Introspect JWTs too (revocation): a JWT must verify locally and be
    /// active.
    #[serde(default)]
    pub always: bool,
}

impl RawIntrospection {
    fn default_timeout() -> Dur {
        Dur(Duration::from_secs(5))
    }
    fn default_cache_ttl() -> Dur {
        Dur(Duration::from_secs(60))
    }
    fn default_negative_ttl() -> Dur {
        Dur(Duration::from_secs(5))
    }
    fn default_entries() -> usize {
        10_000
    }
    fn default_true() -> bool {
        true
    }
}

/// Where the endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Url(String),
    /// `introspection_endpoint` from the issuer's discovery document.
    Discover,
}

/// One issuer's introspection, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Introspection {
    pub endpoint: Endpoint,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_method: AuthMethod,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub negative_cache_ttl: Duration,
    pub cache_entries: usize,
    pub require_aud: bool,
    pub token_prefix: Option<String>,
    pub always: bool,
}

pub(super) fn build(
    ctx: &Ctx<'_>,
    field: &str,
    raw: Spanned<RawIntrospection>,
) -> Result<Introspection, ConfigError> {
    let at = raw.referenced;
    let raw = raw.value;
    let field = format!("{field}.introspection");
    let endpoint = match raw.endpoint {
        None => Endpoint::Discover,
        Some(e) => {
            let ok = e.value.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            });
            if !ok {
                return Err(ctx.err(
                    e.referenced,
                    format!("{field}.endpoint"),
                    "must be an http(s) URL",
                ));
            }
            Endpoint::Url(e.value)
        }
    };
    if raw.client_id.value.is_empty() {
        return Err(ctx.err(
            raw.client_id.referenced,
            format!("{field}.client_id"),
            "must not be empty",
        ));
    }
    let client_secret = super::upstream::secret(
        ctx,
        &field,
        "client_secret",
        at,
        raw.client_secret_env.as_ref(),
        raw.client_secret_file.as_ref(),
    )?;
    if raw.timeout.0.is_zero() || raw.cache_entries == 0 {
        return Err(ctx.err(
            at,
            &field,
            "timeout and cache_entries must be greater than 0",
        ));
    }
    if raw.token_prefix.as_deref() == Some("") {
        return Err(ctx.err(at, format!("{field}.token_prefix"), "must not be empty"));
    }
    Ok(Introspection {
        endpoint,
        client_id: raw.client_id.value,
        client_secret,
        auth_method: raw.auth_method,
        timeout: raw.timeout.0,
        cache_ttl: raw.cache_ttl.0,
        negative_cache_ttl: raw.negative_cache_ttl.0,
        cache_entries: raw.cache_entries,
        require_aud: raw.require_aud,
        token_prefix: raw.token_prefix,
        always: raw.always,
    })
}
