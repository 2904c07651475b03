//! The forward-auth listener (SPEC §Forward-auth endpoint, §4.1): every
//! request is a question, "may this request pass?", asked by an ingress
//! controller that then proxies the request itself. The question's method
//! and URI come from the headers of the ONE convention the config names —
//! nginx `auth_request` (`X-Original-URI`), ingress-nginx (`X-Original-URL`),
//! Traefik and Caddy (`X-Forwarded-Uri`), each with its method header — or,
//! for Envoy, from the request itself less `path_prefix`. Every ingress
//! passes the client's own headers through, so the other conventions'
//! headers are never read, and a missing or repeated one is a 400, never a
//! fallback to the subrequest's own `GET`. The answer comes from the same
//! [`crate::decision::decide`] as the proxy's, and refusals are the same
//! responses. These headers mean nothing on the proxy listener.
//!
//! Adapter: depends on hyper and the core.

use std::sync::Arc;

use super::ClientBody;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};

use super::access::{self, Outcome};
use super::{Handler, Peer};
use crate::Body;
use crate::config::Convention;
use crate::decision::Question;
use crate::reject::{Refusal, respond};
use crate::state::Shared;
use crate::telemetry::Metrics;
use crate::token::Claims;

const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The original request, as the convention tells it.
struct Original {
    method: Method,
    target: PathAndQuery,
    /// For `host:` routes: the `X-Original-URL` authority (ingress-nginx),
    /// `X-Forwarded-Host` (traefik, caddy), `Host` (nginx, envoy).
    host: Option<String>,
}

/// A header sent exactly once, as text.
fn one_value<'h>(headers: &'h http::HeaderMap, name: &http::HeaderName) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

/// The scheme the client used, as the ingress says in
/// `X-Forwarded-Proto` (the listener answers trusted sources only).
fn forwarded_scheme(headers: &http::HeaderMap) -> &'static str {
    match one_value(headers, &http::HeaderName::from_static("x-forwarded-proto")) {
        Some(p) if p.trim().eq_ignore_ascii_case("https") => "https",
        _ => "http",
    }
}

/// What the forward-auth listener shares.
#[derive(Debug)]
pub struct ForwardAuth {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
}

impl Handler for ForwardAuth {
    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn serves_tls(&self) -> bool {
        false
    }

    fn handle(
        &self,
        peer: Peer,
        req: Request<ClientBody>,
    ) -> impl std::future::Future<Output = crate::reply::Reply> + Send {
        let answer = self.answer(peer, req);
        async move { answer.await.into() }
    }
}

/// One header's value; a repeated one is ambiguous, hence refused.
fn single<'r>(headers: &'r HeaderMap, name: &HeaderName) -> Result<Option<&'r str>, &'static str> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("a forward-auth header is repeated");
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| "a forward-auth header is not ASCII")
}

/// The method and target of the original request, by `convention`.
fn original(
    req: &Request<ClientBody>,
    convention: Convention,
    path_prefix: &str,
) -> Result<Original, &'static str> {
    let h = req.headers();
    let header_host = |name: &HeaderName| -> Result<Option<String>, &'static str> {
        Ok(single(h, name)?.map(str::to_owned))
    };
    let bad_uri = "the original URI is not a valid request target";
    let required = |name: &HeaderName, missing: &'static str| single(h, name)?.ok_or(missing);
    let (method, target, host) = match convention {
        Convention::Envoy => {
            let target = req.uri().path_and_query().ok_or(bad_uri)?;
            let path = strip_prefix(target.path(), path_prefix)
                .ok_or("the question is outside forward_auth.path_prefix")?;
            let target = match target.query() {
                Some(q) => format!("{path}?{q}").parse(),
                None => path.parse(),
            };
            return Ok(Original {
                method: req.method().clone(),
                target: target.map_err(|_| bad_uri)?,
                host: header_host(&http::header::HOST)?,
            });
        }
        Convention::Nginx => (
            required(&X_ORIGINAL_METHOD, "X-Original-Method is missing")?,
            required(&X_ORIGINAL_URI, "X-Original-URI is missing")?
                .parse::<PathAndQuery>()
                .map_err(|_| bad_uri)?,
            header_host(&http::header::HOST)?,
        ),
        Convention::IngressNginx => {
            let url: Uri = required(&X_ORIGINAL_URL, "X-Original-URL is missing")?
                .parse()
                .map_err(|_| bad_uri)?;
            if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
                return Err("X-Original-URL is not an absolute http(s) URL");
            }
            (
                required(&X_ORIGINAL_METHOD, "X-Original-Method is missing")?,
                url.path_and_query().cloned().ok_or(bad_uri)?,
                url.authority().map(|a| a.as_str().to_owned()),
            )
        }
        Convention::Traefik | Convention::Caddy => (
            required(&X_FORWARDED_METHOD, "X-Forwarded-Method is missing")?,
            required(&X_FORWARDED_URI, "X-Forwarded-Uri is missing")?
                .parse::<PathAndQuery>()
                .map_err(|_| bad_uri)?,
            header_host(&X_FORWARDED_HOST)?,
        ),
    };
    // RFC 9110 §9.1: a method is a token, compared case-sensitively.
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| "the original method is not a method")?;
    Ok(Original {
        method,
        target,
        host,
    })
}

/// The path less `prefix` (whole segments of the raw path); `None` when
/// the path is outside it.
fn strip_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix.is_empty() {
        return Some(path);
    }
    match path.strip_prefix(prefix)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// The identity headers of an allowed answer. Every configured header is
/// present (empty when the token lacks the claim, or on `auth: none`), so
/// that an ingress copying them overwrites whatever the client sent.
fn identity_headers(identity: &crate::config::Identity, claims: Option<&Claims>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    crate::upstream::headers::set_identity(&mut headers, identity, claims);
    for (name, _) in &identity.headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), HeaderValue::from_static(""));
        }
    }
    headers
}

impl ForwardAuth {
    async fn answer(&self, peer: Peer, req: Request<ClientBody>) -> Response<Body> {
        let started = crate::clock::now();
        let state = self.shared.load();
        let challenge = state.challenge();
        let mut outcome_path = None;
        let mut route = None;
        let mut subject = None;
        let mut shadow = None;
        let mut span = None;
        let result: Result<HeaderMap, Refusal> = async {
            let Some(forward_auth) = &state.config.forward_auth else {
                // Removed by a reload while the listener runs.
                return Err(Refusal::NotFound);
            };
            if !forward_auth
                .trusted_sources
                .iter()
                .any(|net| net.contains(peer.addr.ip()))
            {
                return Err(Refusal::UntrustedSource);
            }
            if super::head_size(&req) > state.config.limits.max_request_header_bytes {
                return Err(Refusal::HeadersTooLarge);
            }
            let original = original(&req, forward_auth.convention, &forward_auth.path_prefix)
                .map_err(Refusal::BadRequest)?;
            // The client's certificate, as the ingress passed it.
            let certificate = forward_auth
                .client_cert_header
                .as_ref()
                .and_then(|name| one_value(req.headers(), name))
                .and_then(crate::tls::forwarded_certificate_thumbprint);
            let question = Question {
                method: &original.method,
                path: original.target.path(),
                query: original.target.query(),
                headers: req.headers(),
                host: original.host.as_deref(),
                client_ip: Some(crate::upstream::headers::client_ip(
                    req.headers(),
                    peer.addr.ip(),
                    &state.config.trusted_proxies,
                )),
                header_overrides: true,
                binding: crate::decision::Binding {
                    scheme: forwarded_scheme(req.headers()),
                    host: original.host.as_deref(),
                    certificate: certificate.as_deref(),
                },
            };
            span = super::server_span(&state, peer.addr.ip(), req.headers(), &original.method);
            let decision = super::decide(&state, &question, span.as_ref()).await;
            outcome_path = decision.path;
            route = decision.route.map(|r| &r.label);
            shadow = (decision.shadow_mode && decision.verdict.is_ok())
                .then(|| decision.shadowed.clone());
            subject = decision
                .verified
                .as_deref()
                .and_then(Claims::subject)
                .map(str::to_owned);
            let claims = decision.verdict?;
            let quota = decision.quota;
            let mut headers = identity_headers(&state.config.identity, claims.as_deref());
            if let Some(quota) = quota {
                super::proxy::quota_headers(&mut headers, &quota);
            }
            Ok(headers)
        }
        .await;
        let (response, refused) = match result {
            Ok(headers) => {
                let mut response = Response::new(crate::full(""));
                *response.headers_mut() = headers;
                (response, None)
            }
            Err(refusal) => (respond(&refusal, challenge), Some(refusal)),
        };
        let method = req.method().clone();
        let outcome = Outcome {
            listener: "forward_auth",
            path: outcome_path.as_deref(),
            route,
            refused: refused.as_ref(),
            subject: subject.as_deref(),
            shadow: shadow.as_ref().map(Option::as_ref),
            span: span.as_ref(),
        };
        access::record(
            &self.metrics,
            &method,
            &outcome,
            response.status().as_u16(),
            started,
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::strip_prefix;

    #[test]
    fn path_prefix_matches_whole_segments() {
        assert_eq!(strip_prefix("/api/x", ""), Some("/api/x"));
        assert_eq!(strip_prefix("/authz/api/x", "/authz"), Some("/api/x"));
        assert_eq!(strip_prefix("/authz", "/authz"), Some("/"));
        assert_eq!(strip_prefix("/authzz/api", "/authz"), None);
        assert_eq!(strip_prefix("/api/x", "/authz"), None);
    }
}
