//! The decision order of SPEC §Decision order as one function, shared by
//! the proxy, the forward-auth endpoint and `scopegate explain`.
//!
//! Pure: depends on the core modules only; takes the time as an argument.

use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::config::{QuotaKey, QuotaPolicy};
use crate::dpop;
use crate::policy::Denied;
use crate::quota::Verdict;
use crate::reject::Refusal;
use crate::route::{Auth, Lookup, Route, Rule, normalize_with};
use crate::state::State;
use crate::token::extract::Found;
use crate::token::{self, Claims, TokenError};
use crate::upstream::headers::is_method_override;

/// The question: may this request pass?
#[derive(Debug, Clone, Copy)]
pub struct Question<'r> {
    pub method: &'r Method,
    /// The path as received (origin-form, no query, no fragment).
    pub path: &'r str,
    pub query: Option<&'r str>,
    pub headers: &'r HeaderMap,
    /// The host the request was for (absolute-form authority, `Host` or
    /// `:authority`; the convention's on forward-auth), for `host:` routes.
    pub host: Option<&'r str>,
    /// The client's address for `ip`-keyed quotas (the peer, or the
    /// rightmost untrusted `X-Forwarded-For` address behind trusted
    /// proxies). `None`: not a live request (`explain`): quotas are not
    /// consumed.
    pub client_ip: Option<std::net::IpAddr>,
    /// Method-override headers are decided like `_method` (forward-auth:
    /// the ingress forwards the client's request, headers included). The
    /// proxy removes them instead, so they decide nothing there.
    pub header_overrides: bool,
    /// What a sender-constrained token is bound to: the URI as the client
    /// used it, its TLS client certificate.
    pub binding: Binding<'r>,
}

/// The request as the client sent it, for DPoP's `htu` and RFC 8705.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binding<'r> {
    /// `http` or `https`, as the client used it (`X-Forwarded-Proto` from
    /// trusted proxies; the listener's TLS otherwise).
    pub scheme: &'r str,
    /// The authority the client addressed (`X-Forwarded-Host` from trusted
    /// proxies; `Host` otherwise).
    pub host: Option<&'r str>,
    /// The `x5t#S256` of the client's certificate, if it presented one.
    pub certificate: Option<&'r str>,
}

/// The answer, with what was learnt on the way (for logs and forwarding).
#[derive(Debug)]
pub struct Decision<'s> {
    /// The normalized path: what is matched and what is forwarded.
    pub path: Option<String>,
    pub route: Option<&'s Route>,
    /// The token's claims once it verified, even when the policy then
    /// refused it (the access log names who was refused).
    pub verified: Option<Arc<Claims>>,
    /// Where an allowed request goes: the request's own method's rule's
    /// upstream (an index into `config.upstreams`).
    pub upstream: Option<usize>,
    /// The quota an allowed request was counted against, for its
    /// `RateLimit` headers.
    pub quota: Option<QuotaNote<'s>>,
    /// `mode: shadow`: the refusal (401 or 403) that was reported instead
    /// of enforced; the verdict is then the verified token, or none.
    pub shadowed: Option<Refusal>,
    /// The request's rule is in shadow mode (counted as `would="allow"`
    /// when nothing was refused).
    pub shadow_mode: bool,
    /// `Ok(None)`: allowed without a token (`auth: none`).
    pub verdict: Result<Option<Arc<Claims>>, Refusal>,
}

impl Decision<'_> {
    pub fn is_allowed(&self) -> bool {
        self.verdict.is_ok()
    }
}

/// What an allowed request's quota says, for its response headers.
#[derive(Debug, Clone, Copy)]
pub struct QuotaNote<'s> {
    pub policy: &'s QuotaPolicy,
    pub remaining: u64,
    pub reset: u64,
}

/// Decides a request under one state, at time `now` (Unix seconds).
/// Asynchronous only because an unknown `kid` may wait for a key refetch.
pub async fn decide<'s>(state: &'s State, q: &Question<'_>, now: i64) -> Decision<'s> {
    let mut decision = Decision {
        path: None,
        route: None,
        verified: None,
        upstream: None,
        quota: None,
        shadowed: None,
        shadow_mode: false,
        verdict: Err(Refusal::NotFound),
    };
    let config = &state.config;

    // 2. Normalize the path.
    let path = match normalize_with(q.path, config.routes.path_rules().semicolons) {
        Ok(path) => path,
        Err(e) => {
            decision.verdict = Err(Refusal::BadPath(e));
            return decision;
        }
    };

    // 3. Match the route, under the request's method and under every
    // method it asks the upstream to use instead (SPEC §4.2).
    let overrides = method_overrides(q);
    // The request's own rule, then any override's (no allocation unless a
    // request asks for an override).
    let mut own: Option<&Rule> = None;
    let mut overridden: Vec<&Rule> = Vec::new();
    for method in std::iter::once(Ok(q.method.clone())).chain(overrides) {
        let method = match method {
            Ok(method) => method,
            Err(refusal) => {
                decision.path = Some(path);
                decision.verdict = Err(refusal);
                return decision;
            }
        };
        match config.routes.lookup_on(q.host, &method, &path) {
            Lookup::Matched { route, rule } => {
                decision.route = Some(route);
                if own.is_none() {
                    decision.upstream = rule.upstream;
                    own = Some(rule);
                } else {
                    overridden.push(rule);
                }
            }
            Lookup::NotFound => {
                decision.path = Some(path);
                return decision;
            }
            Lookup::MethodNotAllowed { route } => {
                decision.path = Some(path);
                decision.route = Some(route);
                decision.verdict = Err(Refusal::MethodNotAllowed {
                    allow: route.allow.clone(),
                });
                return decision;
            }
        }
    }
    let Some(own) = own else {
        decision.path = Some(path);
        return decision;
    };
    let rules = || std::iter::once(own).chain(overridden.iter().copied());
    decision.shadow_mode = own.shadow;
    decision.path = Some(path);

    // 4. `auth: none` forwards without looking at tokens (an `ip` quota
    // still counts).
    if rules().all(|rule| rule.auth == Auth::None) {
        decision.verdict = match quota(state, own, None, q).await {
            Ok(note) => {
                decision.quota = note;
                Ok(None)
            }
            Err(refusal) => Err(refusal),
        };
        return decision;
    }

    // 5-6. The token, verified.
    let (claims, found) = match verify(state, q, now).await {
        Ok(verified) => verified,
        Err(refusal) => {
            decision.verdict = Err(refusal);
            shadow(&mut decision);
            return decision;
        }
    };
    decision.verified = Some(claims.clone());

    // 6b. A route that accepts only some issuers refuses the others' tokens
    // like any token it cannot use (401), before scopes are looked at.
    if !rules()
        .filter(|rule| rule.auth == Auth::Required)
        .all(|rule| rule.policy.accepts_issuer(&claims))
    {
        decision.verdict = Err(Refusal::InvalidToken(TokenError::IssuerNotAccepted));
        shadow(&mut decision);
        return decision;
    }

    // 6c. A sender-constrained token is used by its holder: a DPoP proof
    // for this request, the certificate it is bound to.
    let dpop = own.dpop.as_ref();
    let path = decision.path.as_deref().unwrap_or("/");
    if let Err(refusal) = bound(state, q, path, &claims, found, dpop, now).await {
        decision.verdict = Err(refusal);
        shadow(&mut decision);
        return decision;
    }

    // 7. The policy of every rule the request falls under (one, or more
    // with a method override).
    let request = crate::policy::Request {
        path: decision.path.as_deref().unwrap_or("/"),
        headers: q.headers,
    };
    decision.verdict = rules()
        .filter(|rule| rule.auth == Auth::Required)
        .try_for_each(|rule| {
            rule.policy
                .check(&claims, &request)
                .map_err(|denied| match denied {
                    Denied::HeaderNotOnce => Refusal::BadRequest(
                        "a header this route compares with a claim is missing or repeated",
                    ),
                    denied => Refusal::InsufficientScope {
                        scope: rule.policy.challenge_scope().clone(),
                        denied,
                    },
                })
        })
        .map(|()| Some(claims.clone()));
    if decision.verdict.is_err() {
        shadow(&mut decision);
        return decision;
    }

    // 8. The quota of the request's own rule: after the policy, so that a
    // caller without the scope gets 403, not 429, and refusals consume
    // nothing.
    match quota(state, own, Some(&claims), q).await {
        Ok(note) => decision.quota = note,
        Err(refusal) => decision.verdict = Err(refusal),
    }
    shadow(&mut decision);
    decision
}

/// `mode: shadow` (SPEC §4.7): a 401 or 403 is reported instead of
/// enforced, and the request goes on with the verified token, if any.
/// Malformed requests (400), 404, 405, 429 and 503 are answered as always.
fn shadow(decision: &mut Decision<'_>) {
    if !decision.shadow_mode {
        return;
    }
    let shadowable = matches!(
        &decision.verdict,
        Err(Refusal::NoToken
            | Refusal::InvalidToken(_)
            | Refusal::InsufficientScope { .. }
            | Refusal::Dpop { .. }
            | Refusal::MissingQuotaKey)
    );
    if shadowable {
        let verified = decision.verified.clone();
        if let Err(refusal) = std::mem::replace(&mut decision.verdict, Ok(verified)) {
            decision.shadowed = Some(refusal);
        }
    }
}

/// Takes one request from the rule's quota, if it has one.
async fn quota<'s>(
    state: &'s State,
    rule: &Rule,
    claims: Option<&Claims>,
    q: &Question<'_>,
) -> Result<Option<QuotaNote<'s>>, Refusal> {
    let (Some(index), Some(ip)) = (rule.rate_limit, q.client_ip) else {
        return Ok(None);
    };
    let Some(policy) = state.config.quotas.policies.get(index) else {
        return Ok(None);
    };
    // Keys of the two kinds can never meet.
    let key = match &policy.key {
        QuotaKey::Ip => format!("ip:{ip}"),
        QuotaKey::Claim(name) => match claims.and_then(|c| c.get(name)) {
            Some(serde_json::Value::String(s)) => format!("claim:{s}"),
            Some(serde_json::Value::Number(n)) => format!("claim:{n}"),
            _ if policy.missing_ip => format!("ip:{ip}"),
            _ => return Err(Refusal::MissingQuotaKey),
        },
    };
    match state.limiter.take(policy, &key).await {
        Ok(Verdict::Allowed { remaining, reset }) => Ok(Some(QuotaNote {
            policy,
            remaining,
            reset,
        })),
        Ok(Verdict::Limited { retry_after, reset }) => Err(Refusal::RateLimited {
            policy: policy.name.clone(),
            burst: policy.burst,
            window: policy.window_secs(),
            retry_after,
            reset,
        }),
        Err(crate::quota::Unavailable) => Err(Refusal::QuotaUnavailable),
    }
}

/// The query parameter a method override is read from (names form-decoded).
const OVERRIDE_QUERY: &str = "_method";

/// The methods a request asks its upstream to use instead of its own: a
/// `_method` query parameter (Rails, Laravel, Symfony, Express
/// method-override), and on forward-auth the override headers. Each is
/// decided as well as the request's own method.
fn method_overrides(q: &Question<'_>) -> Vec<Result<http::Method, Refusal>> {
    let mut found = Vec::new();
    let bad = |why| Err(Refusal::BadRequest(why));
    let mut in_query = 0;
    for pair in q.query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(key).as_deref() != Some(OVERRIDE_QUERY) {
            continue;
        }
        in_query += 1;
        if in_query > 1 {
            return vec![bad("more than one _method parameter")];
        }
        found.push(match form_decode(value) {
            Some(value) => override_method(&value),
            None => bad("the _method parameter is not a method"),
        });
    }
    if q.header_overrides {
        for (name, value) in q.headers {
            let name_text = name.as_str();
            let overrides = if name_text.contains('_') {
                is_method_override(&name_text.replace('_', "-"))
            } else {
                is_method_override(name_text)
            };
            if !overrides {
                continue;
            }
            if q.headers.get_all(name).iter().nth(1).is_some() {
                return vec![bad("a method-override header is repeated")];
            }
            found.push(match value.to_str() {
                Ok(value) => override_method(value.trim()),
                Err(_) => bad("a method-override header is not a method"),
            });
        }
    }
    found
}

/// An override's value, upper-cased as the frameworks read it.
fn override_method(value: &str) -> Result<http::Method, Refusal> {
    http::Method::from_bytes(value.to_ascii_uppercase().as_bytes())
        .map_err(|_| Refusal::BadRequest("a method override is not a method"))
}

/// `application/x-www-form-urlencoded` decoding of one name or value
/// (`+` is a space); `None` for bad escapes or bytes that are not UTF-8.
fn form_decode(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !text.contains(['%', '+']) {
        return Some(text.into());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Into::into)
}

/// Steps 5 and 6: find the token and verify it.
async fn verify<'q>(
    state: &State,
    q: &Question<'q>,
    now: i64,
) -> Result<(Arc<Claims>, Found<'q, Arc<Claims>>), Refusal> {
    let config = &state.config;
    let cache = state.cache.as_ref();
    // The cache is asked as the token is extracted: a token verified
    // earlier is not checked byte by byte again, nor looked up twice.
    let mut found = token::extract::find(&config.token_sources, q.headers, q.query, |token| {
        cache.and_then(|c| c.get(token, now))
    })
    .map_err(Refusal::BadCredential)?
    .ok_or(Refusal::NoToken)?;
    let claims = match found.known.take() {
        Some(claims) => claims,
        None => config
            .verifier
            .verify(found.text().map_err(Refusal::BadCredential)?, now, cache)
            .await
            .map_err(|e| match e {
                TokenError::KeysUnavailable => Refusal::KeysUnavailable,
                TokenError::IntrospectionUnavailable => Refusal::IntrospectionUnavailable,
                e => Refusal::InvalidToken(e),
            })?,
    };
    Ok((claims, found))
}

/// Step 6c (SPEC §4.8): a token bound to a certificate (`cnf.x5t#S256`)
/// needs that certificate on the connection; one bound to a key
/// (`cnf.jkt`) needs the `DPoP` scheme and a proof by that key for this
/// request, used once. The route's `dpop` settings, else the issuer's.
async fn bound(
    state: &State,
    q: &Question<'_>,
    path: &str,
    claims: &Claims,
    found: Found<'_, Arc<Claims>>,
    route: Option<&dpop::Settings>,
    now: i64,
) -> Result<(), Refusal> {
    static DEFAULT: std::sync::LazyLock<dpop::Settings> =
        std::sync::LazyLock::new(dpop::Settings::default);
    let issuer = claims
        .issuer()
        .and_then(|name| state.config.verifier.issuer(name));
    let settings = route.or(issuer.map(|i| &i.dpop)).unwrap_or(&DEFAULT);
    let skew = issuer.map_or(0, |i| i.clock_skew);
    let cnf = claims.confirmation();
    let member = |name: &str| cnf.and_then(|c| c.get(name)).and_then(|v| v.as_str());
    if let Some(x5t) = member("x5t#S256")
        && q.binding.certificate != Some(x5t)
    {
        return Err(Refusal::InvalidToken(TokenError::CertificateMismatch));
    }
    let jkt = member("jkt");
    let refuse = |proof: bool, description: &'static str| Refusal::Dpop {
        proof,
        description,
        algs: dpop::algs(settings).into(),
    };
    match (found.dpop, settings.mode) {
        (_, dpop::Mode::Off) if jkt.is_some() || found.dpop => {
            return Err(refuse(false, "DPoP is not accepted here"));
        }
        (false, _) if jkt.is_some() => {
            return Err(refuse(
                false,
                "a DPoP-bound token must be sent with the DPoP scheme and a proof",
            ));
        }
        (false, dpop::Mode::Required) => {
            return Err(refuse(false, "a DPoP-bound token and proof are required"));
        }
        (false, _) => return Ok(()),
        (true, _) => {}
    }
    let mut proofs = q.headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => return Err(refuse(true, "a DPoP proof is required")),
        (Some(_), Some(_)) => return Err(Refusal::BadRequest("more than one DPoP header")),
        (Some(proof), None) => proof
            .to_str()
            .map_err(|_| refuse(true, "the DPoP proof is not a compact JWS"))?,
    };
    let htu = q
        .binding
        .host
        .and_then(|host| dpop::request_htu(q.binding.scheme, host, path))
        .ok_or_else(|| refuse(true, "the request's URI is unknown"))?;
    let expected = dpop::Expected {
        method: q.method,
        htu: &htu,
        token: found.text().map_err(Refusal::BadCredential)?,
        semicolons: state.config.routes.path_rules().semicolons,
    };
    let proven =
        dpop::verify(proof, &expected, settings, skew, now).map_err(|why| refuse(true, why))?;
    if jkt.is_some_and(|jkt| jkt != proven.jkt) {
        return Err(refuse(
            true,
            "the DPoP proof is not signed by the token's key",
        ));
    }
    let window =
        std::time::Duration::from_secs(u64::try_from(settings.max_age + skew).unwrap_or(60));
    match state
        .replay
        .first_seen(&proven.jkt, &proven.jti, window)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(refuse(true, "the DPoP proof was already used")),
        Err(_) => Err(Refusal::ReplayCacheUnavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question<'r>(query: Option<&'r str>, headers: &'r HeaderMap, fa: bool) -> Question<'r> {
        Question {
            method: &Method::POST,
            path: "/",
            query,
            headers,
            host: None,
            client_ip: None,
            header_overrides: fa,
            binding: Binding::default(),
        }
    }

    fn methods(q: &Question<'_>) -> Vec<Result<String, Refusal>> {
        method_overrides(q)
            .into_iter()
            .map(|m| m.map(|m| m.to_string()))
            .collect()
    }

    #[test]
    fn method_overrides_from_query_and_forward_auth_headers() {
        let none = HeaderMap::new();
        assert!(methods(&question(None, &none, false)).is_empty());
        assert!(methods(&question(Some("a=1&method=x"), &none, false)).is_empty());
        for query in [
            "_method=delete",
            "a=1&_method=DELETE",
            "%5Fmethod=Delete",
            "_method=%64elete",
        ] {
            assert_eq!(
                methods(&question(Some(query), &none, false)),
                [Ok("DELETE".to_owned())],
                "{query}"
            );
        }
        assert!(matches!(
            methods(&question(Some("_method=GET&_method=DELETE"), &none, false)).as_slice(),
            [Err(Refusal::BadRequest(_))]
        ));
        let mut h = HeaderMap::new();
        h.insert("x-http-method-override", "delete".parse().expect("value"));
        h.insert("x_method_override", "PUT".parse().expect("value"));
        assert!(
            methods(&question(None, &h, false)).is_empty(),
            "proxy: removed, not decided"
        );
        let mut both = methods(&question(None, &h, true));
        both.sort_by_key(|m| format!("{m:?}"));
        assert_eq!(both, [Ok("DELETE".to_owned()), Ok("PUT".to_owned())]);
    }
}
