//! `rate_limits:` — quotas keyed on the verified caller (SPEC §4.5): named
//! policies (a claim or the client address, a rate, a burst), referenced by
//! routes, kept per process or shared through Redis.
//!
//! Pure: depends on `serde` and [`crate::token`] (claim names); reads the
//! Redis URL from the environment when the config says so.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::raw::Dur;
use super::{ConfigError, Ctx};
use crate::token::ClaimName;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    /// `local` (default: per process) or `redis` (shared by every replica).
    #[serde(default)]
    pub store: RawStore,
    #[schemars(with = "Option<RawRedis>")]
    pub redis: Option<Spanned<RawRedis>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawQuotaPolicy>")]
    pub policies: BTreeMap<String, Spanned<RawQuotaPolicy>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawStore {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:port/db` or `rediss://…` (TLS).
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// An environment variable holding the whole URL (with its password).
    #[schemars(with = "Option<String>")]
    pub url_env: Option<Spanned<String>>,
    /// The longest wait for Redis; a slower call is an error (`on_error`).
    #[serde(default = "RawRedis::default_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub on_error: OnError,
}

impl RawRedis {
    fn default_timeout() -> Dur {
        Dur(Duration::from_millis(50))
    }
}

/// What a quota decision does when Redis fails or is slow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Per-process buckets, full at first (replicas × quota may pass).
    #[default]
    Local,
    /// Let the request through.
    Allow,
    /// 503 `temporarily_unavailable` with `Retry-After`.
    Deny,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawQuotaPolicy {
    /// A claim (`client_id`, `azp`, `sub`, a dotted path) or `ip`.
    #[schemars(with = "String")]
    pub key: Spanned<String>,
    /// `N/s`, `N/m` or `N/h`.
    #[schemars(with = "String")]
    pub rate: Spanned<String>,
    /// The most requests one key may make at once (default: the
    /// per-second rate, at least 1).
    pub burst: Option<u32>,
    /// `ip`: a token without the key claim is limited by address instead
    /// of refused (403).
    #[schemars(with = "Option<String>")]
    pub missing: Option<Spanned<String>>,
}

/// What a bucket is keyed on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QuotaKey {
    /// The client's address (the rightmost untrusted `X-Forwarded-For`
    /// address behind trusted proxies).
    Ip,
    Claim(ClaimName),
}

/// One validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaPolicy {
    pub name: Arc<str>,
    pub key: QuotaKey,
    /// The emission interval: one request per this many microseconds.
    pub interval_us: u64,
    pub burst: u32,
    /// A token without the key claim falls back to the address.
    pub missing_ip: bool,
}

impl QuotaPolicy {
    /// `RateLimit-Policy: "NAME";q=BURST;w=SECONDS`, with `w` the time a
    /// spent burst takes to refill.
    pub fn window_secs(&self) -> u64 {
        (u64::from(self.burst) * self.interval_us)
            .div_ceil(1_000_000)
            .max(1)
    }
}

/// Where buckets live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Store {
    Local,
    Redis {
        /// The connection URL (may hold a password: never printed).
        url: super::Secret,
        timeout: Duration,
        on_error: OnError,
    },
}

/// The validated `rate_limits:` block.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    pub store: Option<Store>,
    pub policies: Vec<QuotaPolicy>,
}

/// `N/s`, `N/m`, `N/h` → (requests, seconds).
fn parse_rate(text: &str) -> Option<(u64, u64)> {
    let (n, unit) = text.split_once('/')?;
    let n = u64::from_str(n.trim()).ok().filter(|n| *n > 0)?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    Some((n, secs))
}

pub(super) fn build(
    ctx: &Ctx<'_>,
    raw: Option<Spanned<RawRateLimits>>,
) -> Result<Quotas, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Quotas::default());
    };
    let at = raw.referenced;
    let raw = raw.value;
    let store = match (raw.store, raw.redis) {
        (RawStore::Local, None) => Store::Local,
        (RawStore::Local, Some(r)) => {
            return Err(ctx.err(
                r.referenced,
                "rate_limits.redis",
                "applies only with store: redis",
            ));
        }
        (RawStore::Redis, None) => {
            return Err(ctx.err(
                at,
                "rate_limits.redis",
                "store: redis needs a redis: block with url or url_env",
            ));
        }
        (RawStore::Redis, Some(r)) => {
            let r_at = r.referenced;
            let r = r.value;
            let url = match (r.url, r.url_env) {
                (Some(url), None) => url.value,
                (None, Some(env)) => match std::env::var(&env.value) {
                    Ok(url) => url,
                    Err(_) if ctx.offline => {
                        ctx.warn(env.referenced, "rate_limits.redis.url_env", format!("environment variable {} is not set here: `scopegate run` would refuse to start", env.value));
                        "redis://127.0.0.1/".to_owned()
                    }
                    Err(_) => {
                        return Err(ctx.err(
                            env.referenced,
                            "rate_limits.redis.url_env",
                            format!("environment variable {} is not set", env.value),
                        ));
                    }
                },
                _ => {
                    return Err(ctx.err(
                        r_at,
                        "rate_limits.redis",
                        "needs exactly one of url or url_env",
                    ));
                }
            };
            // Parsed (not connected) here, so that a bad URL is a config error.
            if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                || redis::Client::open(url.as_str()).is_err()
            {
                return Err(ctx.err(r_at, "rate_limits.redis", "the URL must be a valid redis:// or rediss:// URL (Redis Cluster and Sentinel are not supported)"));
            }
            if r.timeout.0.is_zero() {
                return Err(ctx.err(r_at, "rate_limits.redis.timeout", "must be greater than 0"));
            }
            Store::Redis {
                url: super::upstream::Secret::new(url),
                timeout: r.timeout.0,
                on_error: r.on_error,
            }
        }
    };
    let mut policies = Vec::new();
    for (name, p) in raw.policies {
        let field = format!("rate_limits.policies.{name}");
        // The name goes into RateLimit headers as a quoted string.
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ctx.err(
                p.referenced,
                field,
                "a policy name is letters, digits, '-' and '_'",
            ));
        }
        let p_at = p.referenced;
        let p = p.value;
        let (n, secs) = parse_rate(&p.rate.value).ok_or_else(|| {
            ctx.err(
                p.rate.referenced,
                format!("{field}.rate"),
                format!(
                    "{:?} is not a rate like 100/s, 30/m or 1000/h",
                    p.rate.value
                ),
            )
        })?;
        let interval_us = secs * 1_000_000 / n;
        if interval_us == 0 {
            return Err(ctx.err(
                p.rate.referenced,
                format!("{field}.rate"),
                "more than a million a second",
            ));
        }
        let burst = p
            .burst
            .unwrap_or_else(|| u32::try_from(n / secs).unwrap_or(u32::MAX).max(1));
        if burst == 0 {
            return Err(ctx.err(p_at, format!("{field}.burst"), "must be at least 1"));
        }
        let key = match p.key.value.as_str() {
            "" => {
                return Err(ctx.err(
                    p.key.referenced,
                    format!("{field}.key"),
                    "must name a claim or ip",
                ));
            }
            "ip" => QuotaKey::Ip,
            claim => QuotaKey::Claim(ClaimName::new(claim)),
        };
        let missing_ip = match &p.missing {
            None => false,
            Some(m) if m.value == "ip" && key != QuotaKey::Ip => true,
            Some(m) => {
                return Err(ctx.err(
                    m.referenced,
                    format!("{field}.missing"),
                    "the only fallback is ip, for a claim-keyed policy",
                ));
            }
        };
        policies.push(QuotaPolicy {
            name: name.into(),
            key,
            interval_us,
            burst,
            missing_ip,
        });
    }
    Ok(Quotas {
        store: Some(store),
        policies,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100/s"), Some((100, 1)));
        assert_eq!(parse_rate("30/m"), Some((30, 60)));
        assert_eq!(parse_rate("1000/h"), Some((1000, 3600)));
        for bad in ["0/s", "10/d", "ten/s", "10", "/s", "-1/s", "1.5/s"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }
}
