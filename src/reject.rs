//! The one place where a refusal becomes a response: status, JSON body
//! `{"error","error_description"}`, RFC 6750 `WWW-Authenticate`, `Allow`,
//! `Retry-After`. Nothing here ever sees the token.
//!
//! Pure: depends on `http`, `serde_json` and the error enums of the core.

use std::sync::Arc;

use http::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::Body;
use crate::policy::Denied;
use crate::route::PathError;
use crate::token::{ExtractError, TokenError};

/// Every way the gateway says no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The path failed normalization (400).
    BadPath(PathError),
    /// The request is malformed at the HTTP level (400, connection closed).
    Malformed(&'static str),
    /// A well-framed request whose question is ambiguous or invalid: a
    /// repeated `_method`, a forward-auth question without its headers (400).
    BadRequest(&'static str),
    NotFound,
    MethodNotAllowed {
        allow: String,
    },
    /// No token where one is required (401, challenge without error code).
    NoToken,
    /// Ambiguous or malformed credentials (400 `invalid_request`).
    BadCredential(ExtractError),
    InvalidToken(TokenError),
    InsufficientScope {
        scope: Arc<str>,
        denied: Denied,
    },
    /// The issuer's keys are not loaded yet (503 + `Retry-After`).
    KeysUnavailable,
    /// A forward-auth question from a peer outside `trusted_sources` (403).
    UntrustedSource,
    PayloadTooLarge,
    /// The client sent no body chunk for `limits.body_timeout` (408).
    BodyTimeout,
    /// The request head is larger than `limits.max_request_header_bytes` (431).
    HeadersTooLarge,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// No valid token toward the upstream yet (503, `Retry-After` seconds).
    CredentialUnavailable {
        retry_after: u64,
    },
    /// The upstream refused the gateway's own credential (502).
    UpstreamUnauthorized,
    /// Over the route's quota (429 with `Retry-After` and the draft's
    /// `RateLimit-Policy` / `RateLimit` headers).
    RateLimited {
        policy: Arc<str>,
        burst: u32,
        window: u64,
        retry_after: u64,
        reset: u64,
    },
    /// The quota store failed with `on_error: deny` (503).
    QuotaUnavailable,
    /// The introspection endpoint is down or slow (503 + `Retry-After`).
    IntrospectionUnavailable,
    /// The token lacks the claim the route's quota is keyed on (403).
    MissingQuotaKey,
    /// A DPoP failure (RFC 9449 §7.1): 401 with a `DPoP` challenge naming
    /// the accepted algorithms.
    Dpop {
        /// `invalid_dpop_proof` (the proof) or `invalid_token` (the token
        /// cannot be used this way).
        proof: bool,
        description: &'static str,
        algs: Arc<str>,
    },
    /// The DPoP replay cache could not answer (Redis down with
    /// `on_error: deny`): 503.
    ReplayCacheUnavailable,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadPath(_)
            | Refusal::Malformed(_)
            | Refusal::BadRequest(_)
            | Refusal::BadCredential(_) => StatusCode::BAD_REQUEST,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::NoToken | Refusal::InvalidToken(_) | Refusal::Dpop { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Refusal::ReplayCacheUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::InsufficientScope { .. } | Refusal::UntrustedSource => StatusCode::FORBIDDEN,
            Refusal::KeysUnavailable | Refusal::CredentialUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::UpstreamUnauthorized => StatusCode::BAD_GATEWAY,
            Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::QuotaUnavailable | Refusal::IntrospectionUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::MissingQuotaKey => StatusCode::FORBIDDEN,
            Refusal::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `error` member of the body (RFC 6750 codes where they apply).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadPath(_)
            | Refusal::Malformed(_)
            | Refusal::BadRequest(_)
            | Refusal::BadCredential(_) => "invalid_request",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed { .. } => "method_not_allowed",
            Refusal::NoToken => "unauthorized",
            Refusal::InvalidToken(_) => "invalid_token",
            Refusal::Dpop { proof: true, .. } => "invalid_dpop_proof",
            Refusal::Dpop { proof: false, .. } => "invalid_token",
            Refusal::ReplayCacheUnavailable => "temporarily_unavailable",
            Refusal::InsufficientScope { .. } => "insufficient_scope",
            Refusal::KeysUnavailable | Refusal::CredentialUnavailable { .. } => {
                "temporarily_unavailable"
            }
            Refusal::UpstreamUnauthorized => "upstream_unauthorized",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::QuotaUnavailable | Refusal::IntrospectionUnavailable => {
                "temporarily_unavailable"
            }
            Refusal::MissingQuotaKey => "insufficient_claims",
            Refusal::UntrustedSource => "forbidden",
            Refusal::PayloadTooLarge => "payload_too_large",
            Refusal::BodyTimeout => "request_timeout",
            Refusal::HeadersTooLarge => "request_header_fields_too_large",
            Refusal::UpstreamUnavailable => "bad_gateway",
            Refusal::UpstreamTimeout => "gateway_timeout",
        }
    }

    pub fn description(&self) -> &str {
        match self {
            Refusal::BadPath(e) => e.describe(),
            Refusal::Malformed(why) | Refusal::BadRequest(why) => why,
            Refusal::NotFound => "no route matches this path",
            Refusal::MethodNotAllowed { .. } => "the route does not allow this method",
            Refusal::NoToken => "a bearer token is required",
            Refusal::BadCredential(e) => e.describe(),
            Refusal::InvalidToken(e) => e.describe(),
            Refusal::InsufficientScope { denied, .. } => denied.describe(),
            Refusal::Dpop { description, .. } => description,
            Refusal::ReplayCacheUnavailable => "the DPoP replay cache is unavailable",
            Refusal::KeysUnavailable => TokenError::KeysUnavailable.describe(),
            Refusal::CredentialUnavailable { .. } => {
                "the gateway has no valid credential for the upstream yet"
            }
            Refusal::UpstreamUnauthorized => "the upstream refused the gateway's credential",
            Refusal::RateLimited { .. } => "rate limit exceeded",
            Refusal::QuotaUnavailable => "the quota store is unavailable",
            Refusal::IntrospectionUnavailable => TokenError::IntrospectionUnavailable.describe(),
            Refusal::MissingQuotaKey => "the token lacks the claim this route's quota is keyed on",
            Refusal::UntrustedSource => "not a trusted forward-auth source",
            Refusal::PayloadTooLarge => "request body too large",
            Refusal::BodyTimeout => "the request body stalled",
            Refusal::HeadersTooLarge => "request head too large",
            Refusal::UpstreamUnavailable => "the upstream is unavailable",
            Refusal::UpstreamTimeout => "the upstream did not answer in time",
        }
    }

    /// The RFC 6750 challenge, for refusals that have one.
    fn challenge(&self, c: &Challenge) -> Option<String> {
        if let Refusal::Dpop { algs, .. } = self {
            return Some(format!(
                r#"DPoP algs="{algs}", error="{}", error_description="{}""#,
                self.code(),
                self.description()
            ));
        }
        let mut out = format!(r#"Bearer realm="{}""#, c.realm);
        // RFC 9728 §5.1: tell clients where to learn how to get a token.
        if let (Some(url), Refusal::NoToken | Refusal::InvalidToken(_)) =
            (&c.resource_metadata, self)
        {
            out.push_str(&format!(r#", resource_metadata="{url}""#));
        }
        let (code, scope) = match self {
            Refusal::NoToken => return Some(out),
            Refusal::BadCredential(_) => ("invalid_request", None),
            Refusal::InvalidToken(_) => ("invalid_token", None),
            // Only a scope failure names the scopes to ask for: after a
            // claim failure the caller may already hold them all.
            Refusal::InsufficientScope { scope, denied } => (
                "insufficient_scope",
                Some(scope).filter(|s| !s.is_empty() && denied.is_scope()),
            ),
            _ => return None,
        };
        out.push_str(&format!(
            r#", error="{code}", error_description="{}""#,
            self.description()
        ));
        if let Some(scope) = scope {
            out.push_str(&format!(r#", scope="{scope}""#));
        }
        Some(out)
    }
}

/// draft-ietf-httpapi-ratelimit-headers-09: `RateLimit-Policy:
/// "NAME";q=BURST;w=SECONDS` and `RateLimit: "NAME";r=REMAINING;t=SECONDS`,
/// replacing any the upstream sent. Policy names are validated tokens.
pub fn rate_limit_headers(
    headers: &mut http::HeaderMap,
    policy: &str,
    burst: u32,
    window: u64,
    remaining: u64,
    reset: u64,
) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{policy}\";q={burst};w={window}")) {
        headers.insert(RATELIMIT_POLICY, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{policy}\";r={remaining};t={reset}")) {
        headers.insert(RATELIMIT, v);
    }
}

const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// What every challenge says about this gateway, fixed at config load.
#[derive(Debug, Clone, Default)]
pub struct Challenge {
    pub realm: String,
    /// The RFC 9728 metadata URL, when `resource_metadata` is configured.
    pub resource_metadata: Option<String>,
}

/// Turns a refusal into the response the client gets.
pub fn respond(refusal: &Refusal, challenge: &Challenge) -> Response<Body> {
    let (status, headers, body) = parts(refusal, challenge);
    let mut response = Response::new(crate::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The refusal's status, headers and JSON body: what [`respond`] sends,
/// and what the gRPC listener puts in a `denied_response`.
pub fn parts(refusal: &Refusal, challenge: &Challenge) -> (StatusCode, http::HeaderMap, String) {
    let body = serde_json::json!({
        "error": refusal.code(),
        "error_description": refusal.description(),
    })
    .to_string();
    let mut map = http::HeaderMap::new();
    let headers = &mut map;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The realm and descriptions are validated ASCII, scopes NQCHAR.
    if let Some(challenge) = refusal.challenge(challenge)
        && let Ok(value) = HeaderValue::from_str(&challenge)
    {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    match refusal {
        Refusal::MethodNotAllowed { allow } => {
            if let Ok(value) = HeaderValue::from_str(allow) {
                headers.insert(ALLOW, value);
            }
        }
        Refusal::KeysUnavailable => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        Refusal::CredentialUnavailable { retry_after } => {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        Refusal::RateLimited {
            policy,
            burst,
            window,
            retry_after,
            reset,
        } => {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            rate_limit_headers(headers, policy, *burst, *window, 0, *reset);
        }
        Refusal::QuotaUnavailable => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Refusal::IntrospectionUnavailable | Refusal::ReplayCacheUnavailable => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        }
        // After a framing error the rest of the connection cannot be
        // trusted; after a stalled body it is not worth keeping.
        Refusal::Malformed(_) | Refusal::BodyTimeout => {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    (refusal.status(), map, body)
}
