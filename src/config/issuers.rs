//! `issuers:` — trusted token issuers with their key sources, algorithms
//! and claim rules; remote key sets to keep fresh.
//!
//! Pure: depends on [`crate::jwks::keys`] and [`crate::token`]; reads key
//! files and environment variables, opens no sockets.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Uri;
use serde_saphyr::{Location, Spanned};

use super::raw::RawIssuer;
use super::{ConfigError, Ctx};
use crate::jwks::{KeySet, kind_for};
use crate::token::{ClaimName, IntrospectionRule, Issuer, KeyCell};

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

/// A remote key set and the cell its keys go into.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub spec: RemoteSpec,
    pub keys: Arc<KeyCell>,
}

/// An issuer, its remote key set if any, and its introspection if any.
pub(super) type Built = (Issuer, Option<RemoteJwks>, Option<super::Introspection>);

pub(super) fn build(
    ctx: &Ctx<'_>,
    field: &str,
    spanned: Spanned<RawIssuer>,
) -> Result<Built, ConfigError> {
    let at = spanned.referenced;
    let mut raw = spanned.value;
    let introspection = raw
        .introspection
        .take()
        .map(|i| super::introspection::build(ctx, field, i))
        .transpose()?;
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
        // Introspection alone: every token is introspected; ready at once.
        [] if introspection.is_some() => ("introspection", at, ""),
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
        "introspection" => {
            keys.store(KeySet::default());
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
    let dpop = match raw.dpop {
        None => crate::dpop::Settings::default(),
        Some(d) => super::dpop::build(ctx, field, d.referenced, d.value)?,
    };
    let issuer = Issuer {
        name,
        audiences,
        algorithms,
        clock_skew: secs_i64(raw.clock_skew.0),
        max_token_age: raw.max_token_age.map(|d| secs_i64(d.0)),
        require_typ: raw.require_typ.as_deref().map(crate::token::canonical_typ),
        scope_claims: scope_claims.iter().map(|c| ClaimName::new(c)).collect(),
        keys,
        introspection: introspection.as_ref().map(|i| IntrospectionRule {
            token_prefix: i.token_prefix.clone(),
            always: i.always,
            require_aud: i.require_aud,
            cache_ttl: secs_i64(i.cache_ttl),
            introspector: Default::default(),
        }),
        dpop,
    };
    Ok((issuer, remote, introspection))
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
