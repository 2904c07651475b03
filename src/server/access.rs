//! The access log and request metrics, shared by every listener.
//!
//! Adapter: depends on tracing and [`crate::telemetry`].

use std::time::{Duration, Instant};

use http::Method;

use crate::reject::Refusal;
use crate::telemetry::Metrics;

/// What the access log says about a request.
pub(crate) struct Outcome<'a> {
    /// `proxy`, `forward_auth` or `grpc`.
    pub listener: &'static str,
    pub path: Option<&'a str>,
    pub route: Option<&'a std::sync::Arc<str>>,
    pub refused: Option<&'a Refusal>,
    /// The verified token's subject, allowed or refused.
    pub subject: Option<&'a str>,
    /// In shadow mode: what was not enforced (`None` for an allowed
    /// request of a shadow route, which still counts as `would="allow"`).
    pub shadow: Option<Option<&'a Refusal>>,
    /// The request's SERVER span (`tracing:`), ended here.
    pub span: Option<&'a opentelemetry::Context>,
}

/// Counts the request and logs it; `status` is what the client (or, on
/// gRPC, Envoy's `denied_response`) was answered.
pub(crate) fn record(
    metrics: &Metrics,
    method: &Method,
    outcome: &Outcome<'_>,
    status: u16,
    started: Instant,
) {
    let decision = outcome.refused.map_or("allow", Refusal::code);
    if let Some(would) = outcome.shadow {
        let route = outcome.route.map_or("none", |r| &**r);
        metrics.shadow(route, would.map(|r| r.status().as_u16()));
    }
    // Read afresh: a refusal is decided within the poll that read it.
    let took = crate::clock::fresh().saturating_duration_since(started);
    metrics.request(outcome.route, decision, status, took);
    log(method, outcome, status, took);
    if let Some(cx) = outcome.span {
        end_span(cx, method, outcome, decision, status);
    }
}

/// Names the SERVER span after its route (`HTTP GET /items/{id}`), says
/// what was decided, and ends it. Route templates and refusal codes only:
/// never a query, a header or a token.
fn end_span(
    cx: &opentelemetry::Context,
    method: &Method,
    outcome: &Outcome<'_>,
    decision: &'static str,
    status: u16,
) {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::TraceContextExt as _;
    let span = cx.span();
    match outcome.route {
        Some(route) => {
            span.update_name(format!("HTTP {method} {route}"));
            span.set_attribute(KeyValue::new("http.route", route.to_string()));
        }
        None => span.update_name(format!("HTTP {method}")),
    }
    if let Some(path) = outcome.path {
        span.set_attribute(KeyValue::new("url.path", path.to_owned()));
    }
    let decision = match outcome.shadow {
        Some(Some(would)) if outcome.refused.is_none() => shadow_label(would.status().as_u16()),
        _ => decision,
    };
    span.set_attribute(KeyValue::new("scopegate.decision", decision));
    span.set_attribute(KeyValue::new("scopegate.listener", outcome.listener));
    crate::telemetry::trace::finish(cx, Ok(status));
}

/// `shadow:401` or `shadow:403`: what an enforced route would have answered.
fn shadow_label(status: u16) -> &'static str {
    if status == 401 {
        "shadow:401"
    } else {
        "shadow:403"
    }
}

/// One structured line per request. Never the token, never a query string.
fn log(method: &Method, outcome: &Outcome<'_>, status: u16, took: Duration) {
    tracing::info!(
        target: "scopegate::access",
        listener = outcome.listener,
        method = %method,
        path = outcome.path.unwrap_or("-"),
        route = outcome.route.map_or("-", |r| &**r),
        decision = match (outcome.refused, outcome.shadow) {
            (Some(_), _) => "deny",
            (None, Some(Some(would))) => shadow_label(would.status().as_u16()),
            _ => "allow",
        },
        reason = outcome.refused.or(outcome.shadow.flatten()).map_or("-", Refusal::code),
        description = outcome.refused.or(outcome.shadow.flatten()).map_or("-", Refusal::description),
        status,
        duration_ms = took.as_secs_f64() * 1000.0,
        subject = outcome.subject.unwrap_or("-"),
        trace_id = outcome.span.map(crate::telemetry::trace::trace_id).as_deref().unwrap_or("-"),
        "request"
    );
}
