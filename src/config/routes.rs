//! `routes:` — templates, methods and the policy of each rule.
//!
//! Pure: depends on [`crate::route`] and [`crate::policy`].

use serde_saphyr::Spanned;

use super::raw::{self, RawRoute};
use super::{ConfigError, Ctx};
use crate::policy::{ClaimCheck, ClaimRule, Policy};
use crate::route::{self, Methods, Template};
use crate::token::ClaimName;

/// Why no request could ever reach a template: characters that a request
/// path cannot carry (they end the path, or HTTP parsers refuse them).
pub(super) fn unmatchable(template: &str) -> Option<String> {
    if template.contains('?') {
        return Some("'?' starts the query string, which is never part of the matched path".into());
    }
    let bad = template
        .chars()
        .find(|c| matches!(c, ' ' | '"' | '<' | '>' | '^' | '`' | '|'));
    bad.map(|c| format!("{c:?} is not allowed in a request path (clients send it percent-encoded)"))
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

/// What a route may refer to: the rest of the config.
pub(super) struct Known<'a> {
    pub upstreams: &'a [super::Upstream],
    /// `upstream:` is set (it is `upstreams[0]`).
    pub has_default: bool,
    pub quotas: &'a super::Quotas,
    pub default_mode: raw::RawMode,
    /// The configured `issuer` values.
    pub issuers: Vec<String>,
}

/// A route: its template, the host it is bound to, its rule.
pub(super) fn build(
    ctx: &Ctx<'_>,
    field: &str,
    raw: RawRoute,
    known: &Known<'_>,
) -> Result<(Template, Option<String>, route::Rule), ConfigError> {
    let Known {
        upstreams,
        has_default,
        quotas,
        default_mode,
        ..
    } = *known;
    let shadow = raw.mode.unwrap_or(default_mode) == raw::RawMode::Shadow;
    let rate_limit = match &raw.rate_limit {
        None => None,
        Some(name) => {
            let index = quotas
                .policies
                .iter()
                .position(|p| *p.name == *name.value)
                .ok_or_else(|| {
                    ctx.err(
                        name.referenced,
                        format!("{field}.rate_limit"),
                        format!("no policy named {:?} in rate_limits.policies", name.value),
                    )
                })?;
            // A claim-keyed quota on a route that reads no token would key
            // every caller on nothing.
            if raw.auth == raw::RawAuth::None && quotas.policies[index].key != super::QuotaKey::Ip {
                return Err(ctx.err(
                    name.referenced,
                    format!("{field}.rate_limit"),
                    "a claim-keyed policy needs a token: this route has auth: none (key the policy on ip)",
                ));
            }
            Some(index)
        }
    };
    let template = Template::parse(&raw.path.value)
        .map_err(|e| ctx.err(raw.path.referenced, format!("{field}.path"), e.to_string()))?;
    let upstream = match &raw.upstream {
        Some(name) => Some(
            upstreams
                .iter()
                .position(|u| *u.name == *name.value)
                .filter(|_| name.value != super::upstream::DEFAULT_NAME || has_default)
                .ok_or_else(|| {
                    let known: Vec<&str> = upstreams.iter().map(|u| &*u.name).collect();
                    ctx.err(
                        name.referenced,
                        format!("{field}.upstream"),
                        format!(
                            "no upstream named {:?} (upstreams: {})",
                            name.value,
                            known.join(", ")
                        ),
                    )
                })?,
        ),
        // The default upstream, `upstream:`, is first when set.
        None if has_default => Some(0),
        None if upstreams.is_empty() => None,
        None => {
            return Err(ctx.err(
                raw.path.referenced,
                format!("{field}.upstream"),
                "missing: there is no default `upstream:`, so every route names one of `upstreams:`",
            ));
        }
    };
    let host = match &raw.host {
        None => None,
        Some(h) => {
            let valid = !h.value.is_empty()
                && h.value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
            if !valid {
                return Err(ctx.err(
                    h.referenced,
                    format!("{field}.host"),
                    "must be a host name like api.example.com (no port, no scheme)",
                ));
            }
            Some(h.value.to_ascii_lowercase())
        }
    };
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
        let check = match (
            rule.equals,
            rule.includes,
            rule.equals_param,
            rule.equals_header,
        ) {
            (None, None, Some(name), None) => {
                let segment = template
                    .as_str()
                    .strip_prefix('/')
                    .and_then(|t| t.split('/').position(|seg| seg == format!("{{{name}}}")));
                let Some(segment) = segment else {
                    return Err(ctx.err(
                        at,
                        format!("{cf}.equals_param"),
                        format!(
                            "{name:?} is not a parameter of {:?} (write {{{name}}} in the path; a catch-all cannot be compared)",
                            template.as_str()
                        ),
                    ));
                };
                ClaimCheck::EqualsParam { name, segment }
            }
            (None, None, None, Some(name)) => {
                let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ctx.err(
                        at,
                        format!("{cf}.equals_header"),
                        format!("{name:?} is not a header name"),
                    )
                })?;
                ClaimCheck::EqualsHeader(name)
            }
            (Some(v), None, None, None) if is_scalar(&v) => ClaimCheck::Equals(v),
            (Some(_), None, None, None) => {
                return Err(ctx.err(
                    at,
                    format!("{cf}.equals"),
                    "must be a string, number or boolean",
                ));
            }
            (None, Some(list), None, None) if !list.is_empty() && list.iter().all(is_scalar) => {
                ClaimCheck::Includes(list)
            }
            (None, Some(_), None, None) => {
                return Err(ctx.err(
                    at,
                    format!("{cf}.includes"),
                    "must list one or more strings, numbers or booleans",
                ));
            }
            _ => {
                return Err(ctx.err(
                    at,
                    &cf,
                    "needs exactly one of equals, includes, equals_param or equals_header",
                ));
            }
        };
        claims.push(ClaimRule {
            claim: ClaimName::new(&rule.claim),
            check,
        });
    }
    let issuers = match raw.issuers {
        None => Vec::new(),
        Some(list) => {
            if list.value.is_empty() {
                return Err(ctx.err(
                    list.referenced,
                    format!("{field}.issuers"),
                    "is empty: leave it out to accept every issuer",
                ));
            }
            if let Some(unknown) = list.value.iter().find(|i| !known.issuers.contains(i)) {
                return Err(ctx.err(
                    list.referenced,
                    format!("{field}.issuers"),
                    format!(
                        "{unknown:?} is not a configured issuer (issuers: {})",
                        known.issuers.join(", ")
                    ),
                ));
            }
            list.value
        }
    };
    let dpop = match raw.dpop {
        None => None,
        Some(d) => Some(super::dpop::build(ctx, field, d.referenced, d.value)?),
    };
    let auth = match raw.auth {
        raw::RawAuth::None => {
            if !scopes.is_empty()
                || !any_scope.is_empty()
                || !claims.is_empty()
                || !issuers.is_empty()
            {
                return Err(ctx.err(
                    raw.path.referenced,
                    format!("{field}.auth"),
                    "auth: none cannot have scopes, any_scope, claims or issuers",
                ));
            }
            route::Auth::None
        }
        raw::RawAuth::Required => route::Auth::Required,
    };
    Ok((
        template,
        host,
        route::Rule {
            methods,
            auth,
            policy: Policy::new(scopes, any_scope, claims).with_issuers(issuers),
            upstream,
            rate_limit,
            shadow,
            origin: "".into(),
            dpop,
        },
    ))
}
