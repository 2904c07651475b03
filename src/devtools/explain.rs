//! `scopegate explain METHOD PATH [--token JWT]`: what the running gateway
//! would do with a request, without sending it. The answer comes from the
//! same [`crate::decision::decide`] as the proxy's; the token is verified
//! the same way (remote keys are fetched first).
//!
//! Adapter: depends on the composition root (key fetchers) and the core.

use std::fmt::Write as _;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method};

use crate::app::Runtime;
use crate::config::Config;
use crate::decision::{Question, decide};
use crate::route::{Auth, Route};
use crate::token::Source;

/// The explanation and whether the request would be allowed.
#[derive(Debug)]
pub struct Explained {
    pub text: String,
    pub allowed: bool,
}

fn describe_rule(route: &Route, method: &Method) -> String {
    let Some(rule) = route.rules.iter().find(|r| r.methods.contains(method)) else {
        return format!("{}  (allows {})", route.template, route.allow);
    };
    let mut needs = Vec::new();
    if rule.auth == Auth::None {
        needs.push("no token (auth: none)".to_owned());
    } else {
        needs.push("a valid token".to_owned());
    }
    if !rule.policy.scopes().is_empty() {
        needs.push(format!(
            "all of scopes [{}]",
            rule.policy.scopes().join(" ")
        ));
    }
    if !rule.policy.any_scope().is_empty() {
        needs.push(format!(
            "one of scopes [{}]",
            rule.policy.any_scope().join(" ")
        ));
    }
    if !rule.policy.issuers().is_empty() {
        needs.push(format!("issued by [{}]", rule.policy.issuers().join(" ")));
    }
    for c in rule.policy.claims() {
        needs.push(c.describe());
    }
    format!(
        "{}  [{}]  needs {}",
        route.template,
        rule.methods.names().join(", "),
        needs.join(", ")
    )
}

/// Puts the token where the config looks first.
fn place_token(
    sources: &[Source],
    token: &str,
    headers: &mut HeaderMap,
    query: &mut Option<String>,
) {
    let value = |v: String| HeaderValue::from_str(&v).ok();
    match sources.first() {
        Some(Source::Cookie(name)) => {
            if let Some(v) = value(format!("{name}={token}")) {
                headers.insert(http::header::COOKIE, v);
            }
        }
        Some(Source::Query(name)) => {
            let pair = format!("{name}={token}");
            *query = Some(match query.take() {
                Some(q) if !q.is_empty() => format!("{q}&{pair}"),
                _ => pair,
            });
        }
        _ => {
            if let Some(v) = value(format!("Bearer {token}")) {
                headers.insert(http::header::AUTHORIZATION, v);
            }
        }
    }
}

/// Explains one request under `config`.
pub async fn explain(config: Config, method: &str, target: &str, token: Option<&str>) -> Explained {
    let mut out = String::new();
    let line = |out: &mut String, label: &str, text: &str| {
        let _ = writeln!(out, "{label:<12}{text}");
    };
    let method = match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            line(
                &mut out,
                "decision:",
                &format!("DENY 400: {method:?} is not an HTTP method"),
            );
            return Explained {
                text: out,
                allowed: false,
            };
        }
    };
    let runtime = Runtime::new(config);
    if token.is_some() {
        // Remote keys: wait for the fetch, as a request would.
        runtime.wait_for_keys(Duration::from_secs(10)).await;
    }
    let state = runtime.shared.load();
    line(&mut out, "request:", &format!("{method} {target}"));
    let Ok(target) = target.parse::<PathAndQuery>() else {
        line(
            &mut out,
            "decision:",
            "DENY 400 invalid_request: not a valid request target",
        );
        return Explained {
            text: out,
            allowed: false,
        };
    };
    let mut headers = HeaderMap::new();
    let mut query = target.query().map(str::to_owned);
    if let Some(token) = token {
        place_token(&state.config.token_sources, token, &mut headers, &mut query);
    }
    let question = Question {
        binding: crate::decision::Binding {
            scheme: "http",
            host: None,
            certificate: None,
        },
        method: &method,
        path: target.path(),
        query: query.as_deref(),
        headers: &headers,
        host: None,
        client_ip: None,
        header_overrides: false,
    };
    let now = crate::now();
    let decision = decide(&state, &question, now).await;

    match &decision.path {
        Some(path) => line(&mut out, "normalized:", path),
        None => line(&mut out, "normalized:", "(refused before matching)"),
    }
    match decision.route {
        Some(route) => line(&mut out, "route:", &describe_rule(route, &method)),
        None if decision.path.is_some() => line(&mut out, "route:", "none matches this path"),
        None => {}
    }
    if let Some(token) = token {
        match state.config.verifier.verify(token, now, None).await {
            Ok(claims) => {
                let exp = claims.expires_at() - now;
                line(
                    &mut out,
                    "token:",
                    &format!(
                        "valid, subject {}, expires in {exp} s",
                        claims.subject().unwrap_or("-")
                    ),
                );
                line(&mut out, "scopes:", &claims.scopes().join(" "));
                let rule = decision
                    .route
                    .and_then(|r| r.rules.iter().find(|rule| rule.methods.contains(&method)));
                if let Some(rule) = rule {
                    let missing: Vec<&str> = rule
                        .policy
                        .scopes()
                        .iter()
                        .filter(|s| !claims.has_scope(s))
                        .map(String::as_str)
                        .collect();
                    if !missing.is_empty() {
                        line(&mut out, "missing:", &missing.join(" "));
                    }
                    let any = rule.policy.any_scope();
                    if !any.is_empty() && !any.iter().any(|s| claims.has_scope(s)) {
                        line(&mut out, "missing:", &format!("one of {}", any.join(" ")));
                    }
                    for c in rule.policy.claims() {
                        let value = claims
                            .get(&c.claim)
                            .map_or("(absent)".to_owned(), |v| v.to_string());
                        line(
                            &mut out,
                            "claim:",
                            &format!("{} = {value}", c.claim.as_str()),
                        );
                    }
                }
            }
            Err(e) => line(&mut out, "token:", &format!("refused: {}", e.describe())),
        }
    }
    let allowed = decision.is_allowed();
    if let Some(upstream) = decision
        .upstream
        .and_then(|i| state.config.upstreams.get(i))
    {
        let credential = match &upstream.credential {
            None => "the caller's own headers",
            Some(crate::config::Credential::Header { .. }) => "a static credential header",
            Some(crate::config::Credential::ClientCredentials { .. }) => {
                "the gateway's client-credentials token"
            }
        };
        line(
            &mut out,
            "upstream:",
            &format!(
                "{} ({}://{}{}), with {credential}",
                upstream.name, upstream.scheme, upstream.authority, upstream.path_prefix
            ),
        );
    }
    if decision.shadow_mode {
        line(
            &mut out,
            "mode:",
            "shadow (a 401 or 403 is reported, and the request forwarded)",
        );
    }
    let verdict = match (&decision.verdict, &decision.shadowed) {
        (Ok(_), Some(would)) => format!(
            "ALLOW (shadow): forwarded; enforced, it would be {} {}: {}",
            would.status().as_u16(),
            would.code(),
            would.description()
        ),
        (Ok(_), None) => "ALLOW: forwarded to the upstream".to_owned(),
        (Err(refusal), _) => format!(
            "DENY {} {}: {}",
            refusal.status().as_u16(),
            refusal.code(),
            refusal.description()
        ),
    };
    line(&mut out, "decision:", &verdict);
    Explained { text: out, allowed }
}
