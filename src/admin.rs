//! The admin listener: `/healthz` (the process is alive), `/readyz` (a
//! latch per key source: ready once every issuer's key source has had keys),
//! `/metrics` (Prometheus text format), `/routes` (the effective route
//! table as JSON). It has its own accept loop, so a data plane at its
//! connection limit does not starve it.
//!
//! Adapter: depends on hyper, tokio, [`crate::state`] and [`crate::telemetry`];
//! the composition root hands it an [`Admin`] handle.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::route::Auth;
use crate::state::Shared;
use crate::telemetry::Metrics;
use crate::{Body, full};

/// What the admin endpoints read: the current state and the metrics.
#[derive(Debug, Clone)]
pub struct Admin {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
}

impl Admin {
    /// `Ok` when ready, else the issuers whose key source has never had
    /// keys. Readiness is a latch per key source: once a source has had
    /// keys it stays ready, so that an IdP outage (which every replica
    /// shares) does not take all replicas out of the load balancer at
    /// once (requests for an issuer without keys answer 503 themselves);
    /// a source a reload brings in is not ready until its first fetch.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let state = self.shared.load();
        let mut waiting: Vec<String> = state
            .config
            .verifier
            .issuers()
            .filter(|i| !i.keys.has_had_keys())
            .map(|i| i.name.clone())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        waiting.sort();
        Err(waiting)
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The route table as JSON.
fn routes(admin: &Admin) -> Value {
    let state = admin.shared.load();
    let mut out = Vec::new();
    for route in state.config.routes.routes() {
        for rule in &route.rules {
            let upstream = rule
                .upstream
                .and_then(|i| state.config.upstreams.get(i))
                .map(|u| &*u.name);
            out.push(json!({
                "path": route.template.as_str(),
                "host": route.host,
                "mode": if rule.shadow { "shadow" } else { "enforce" },
                "upstream": upstream,
                "methods": rule.methods.names(),
                "auth": if rule.auth == Auth::None { "none" } else { "required" },
                "scopes": rule.policy.scopes(),
                "any_scope": rule.policy.any_scope(),
                "claims": rule.policy.claims().iter().map(|c| c.claim.as_str()).collect::<Vec<_>>(),
                "issuers": rule.policy.issuers(),
                "from": &*rule.origin,
            }));
        }
    }
    Value::Array(out)
}

fn handle(admin: &Admin, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method_not_allowed"}),
        );
    }
    match req.uri().path() {
        "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => match admin.readiness() {
            Ok(()) => json_response(StatusCode::OK, &json!({"ready": true})),
            Err(waiting) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "waiting_for_keys": waiting}),
            ),
        },
        "/metrics" => {
            let mut response = Response::new(full(admin.metrics.encode()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/routes" => json_response(StatusCode::OK, &routes(admin)),
        // Shadow mode: what would break if enforced, per route, since start.
        "/shadow" => json_response(StatusCode::OK, &admin.metrics.shadow_report()),
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
    }
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handle(&admin, &req)) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
