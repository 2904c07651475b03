//! Tracing (issue 18, SPEC §4.7) against a real provider (oidc-provider:
//! discovery, JWKS, token endpoint, introspection) and an OTLP/HTTP
//! receiver that decodes what the gateway exports with the protobuf types
//! of `opentelemetry-proto`: span names and kinds, parent ids, the
//! `traceparent` the upstream received, trusted and untrusted callers, a
//! reload turning tracing off, and no credential in any attribute.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::json;
use tokio::net::TcpListener;

use crate::support::idp::{self, Idp};
use crate::support::{Gateway, Upstream, bearer, get, spawn_server};

const APP_SECRET: &str = "app-secret-0123456789abcdef";
const GW_SECRET: &str = "gw-secret-0123456789abcdef";

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    /// 1 internal, 2 server, 3 client (OTLP's SpanKind).
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Vec<(String, String)>,
    service: String,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    /// (content-type, x-otlp-key) of every export.
    exports: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    async fn start() -> (Receiver, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = Receiver::default();
        let r = receiver.clone();
        spawn_server(listener, move |req: Request<hyper::body::Incoming>| {
            let r = r.clone();
            async move {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                let seen = (header("content-type"), header("x-otlp-key"));
                let path = req.uri().path().to_owned();
                let body = req.into_body().collect().await.expect("body").to_bytes();
                if path == "/v1/traces" {
                    let export =
                        ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                    r.exports.lock().expect("lock").push(seen);
                    r.record(export);
                }
                Response::new(
                    Full::new(Bytes::new())
                        .map_err(|e: Infallible| match e {})
                        .boxed(),
                )
            }
        });
        (receiver, addr)
    }

    fn record(&self, export: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("lock");
        for resource in export.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| value(kv.value.as_ref()))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for s in scope.spans {
                    spans.push(Span {
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attributes: s
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
                            .collect(),
                        service: service.clone(),
                    });
                }
            }
        }
    }

    /// Waits (at most 10 s) for a span named `name` in trace `trace_id`
    /// (any trace when empty).
    async fn wait_for(&self, name: &str, trace_id: &str) -> Span {
        for _ in 0..200 {
            if let Some(span) = self.find(name, trace_id) {
                return span;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no span {name:?} in trace {trace_id:?}; got {:#?}",
            self.spans.lock().expect("lock")
        );
    }

    fn find(&self, name: &str, trace_id: &str) -> Option<Span> {
        self.spans
            .lock()
            .expect("lock")
            .iter()
            .find(|s| s.name == name && (trace_id.is_empty() || s.trace_id == trace_id))
            .cloned()
    }

    fn all(&self) -> Vec<Span> {
        self.spans.lock().expect("lock").clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// `traceparent` → (trace id, parent id, flags).
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn config(provider: &Idp, upstream: &Upstream, trusted: &str, tracing: &str) -> String {
    format!(
        r#"trusted_proxies: ["{trusted}"]
upstream:
  url: "http://{upstream}"
  credentials:
    client_credentials:
      token_url: "{token_url}"
      client_id: gw
      client_secret_file: gw-secret.txt
issuers:
  - issuer: "{issuer}"
    audiences: ["https://api.example.com"]
    discovery: true
    introspection:
      client_id: gw
      client_secret_file: gw-secret.txt
      require_aud: false
routes:
  - path: /api/users
    scopes: [read:users]
{tracing}"#,
        upstream = upstream.addr,
        token_url = provider.token_url(),
        issuer = provider.issuer(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_continue_from_trusted_proxies_and_reach_the_collector() {
    if !idp::available() {
        return;
    }
    let clients = json!([
        {"client_id": "app", "client_secret": APP_SECRET, "token_endpoint_auth_method": "client_secret_basic", "scope": "read:users"},
        idp::client("gw", GW_SECRET, "client_secret_basic"),
    ]);
    let provider = Idp::start(&clients, 300).await;
    let upstream = Upstream::start().await;
    let (receiver, otlp) = Receiver::start().await;
    // A header value from the environment (one every `cargo test` sets).
    let key = std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo");
    let tracing = format!(
        r#"tracing:
  otlp_endpoint: "http://{otlp}"
  otlp_headers:
    - name: x-otlp-key
      value_env: CARGO_MANIFEST_DIR
  service_name: gateway-under-test
  export_interval: 100ms
"#
    );
    let gw = Gateway::start(
        &config(&provider, &upstream, "127.0.0.1/32", &tracing),
        &[("gw-secret.txt", GW_SECRET)],
    )
    .await;
    let token = provider.token("app", APP_SECRET, "read:users").await;
    let auth = bearer(&token);

    // A trusted proxy's trace is continued, its tracestate kept.
    let parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let sent = format!("00-{parent_trace}-{parent_span}-01");
    // What a client (or a proxy) sends: a trace of its own, with state.
    let traced = [
        ("Authorization", auth.as_str()),
        ("traceparent", sent.as_str()),
        ("tracestate", "vendor=opaque"),
    ];
    let answer = get(gw.addr, "/api/users?access_token=in-the-query", &traced).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = upstream.take();
    assert_eq!(seen.len(), 1);
    let (trace_id, upstream_parent, flags) =
        traceparent(seen[0].header("traceparent").expect("traceparent upstream"));
    assert_eq!(trace_id, parent_trace, "the caller's trace, continued");
    assert_ne!(upstream_parent, parent_span, "the gateway is the parent");
    assert_eq!(flags, "01");
    assert_eq!(seen[0].header("tracestate"), Some("vendor=opaque"));
    assert_eq!(seen[0].header_count("traceparent"), 1);

    let server = receiver.wait_for("HTTP GET /api/users", parent_trace).await;
    assert_eq!(server.kind, 2, "SERVER");
    assert_eq!(
        server.parent, parent_span,
        "below the trusted caller's span"
    );
    assert_eq!(server.service, "gateway-under-test");
    assert_eq!(server.attr("http.route"), Some("/api/users"));
    assert_eq!(server.attr("url.path"), Some("/api/users"), "no query");
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("scopegate.decision"), Some("allow"));
    let authorize = receiver.wait_for("authorize", parent_trace).await;
    assert_eq!((authorize.kind, &authorize.parent), (1, &server.span_id));
    let introspection = receiver.wait_for("introspection", parent_trace).await;
    assert_eq!(
        (introspection.kind, &introspection.parent),
        (3, &authorize.span_id),
        "introspection made for the request is the decision's child"
    );
    let call = receiver.wait_for("upstream default", parent_trace).await;
    assert_eq!((call.kind, &call.parent), (3, &server.span_id));
    assert_eq!(
        call.span_id, upstream_parent,
        "the upstream's parent is the gateway's CLIENT span"
    );
    assert_eq!(call.attr("http.response.status_code"), Some("200"));
    // Background fetches are roots of their own traces.
    for name in ["jwks", "token"] {
        let fetch = receiver.wait_for(name, "").await;
        assert_eq!(fetch.kind, 3, "{name}: CLIENT");
        assert!(fetch.parent.is_empty(), "{name}: a root");
        assert_ne!(fetch.trace_id, parent_trace);
    }

    // An untrusted caller: a new trace, its tracestate dropped.
    std::fs::write(
        gw.path(),
        config(&provider, &upstream, "10.0.0.0/8", &tracing),
    )
    .expect("write");
    gw.runtime.reload().expect("reload");
    let answer = get(gw.addr, "/api/users", &traced).await;
    assert_eq!(answer.status, 200);
    let seen = upstream.take();
    let (new_trace, new_parent, _) =
        traceparent(seen[0].header("traceparent").expect("traceparent upstream"));
    assert_ne!(
        new_trace, parent_trace,
        "never the untrusted caller's trace"
    );
    assert_eq!(seen[0].header("tracestate"), None);
    assert_eq!(
        seen[0].header_count("traceparent"),
        1,
        "the client's replaced"
    );
    let server = receiver.wait_for("HTTP GET /api/users", &new_trace).await;
    assert!(server.parent.is_empty(), "a root: {server:?}");
    let call = receiver.wait_for("upstream default", &new_trace).await;
    assert_eq!(call.span_id, new_parent);

    // A refusal is traced too, named after its route.
    let refused = get(gw.addr, "/api/users", &[]).await;
    assert_eq!(refused.status, 401);
    let mut refused_span = None;
    for _ in 0..200 {
        refused_span = receiver
            .all()
            .into_iter()
            .find(|s| s.attr("http.response.status_code") == Some("401"));
        if refused_span.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_span = refused_span.expect("the 401 is traced");
    assert_eq!(refused_span.name, "HTTP GET /api/users");
    assert_eq!(
        refused_span.attr("scopegate.decision"),
        Some("unauthorized"),
        "the refusal's code"
    );

    // Every export was protobuf with the configured header; no span holds
    // a credential, a secret or a query.
    let exports = receiver.exports.lock().expect("lock").clone();
    assert!(!exports.is_empty());
    for (content_type, header) in &exports {
        assert_eq!(content_type, "application/x-protobuf");
        assert_eq!(header, &key);
    }
    let spans = receiver.all();
    for span in &spans {
        for (k, v) in &span.attributes {
            for secret in [
                token.as_str(),
                GW_SECRET,
                APP_SECRET,
                key.as_str(),
                "in-the-query",
                "Bearer",
            ] {
                assert!(
                    !v.contains(secret) && !k.contains(secret),
                    "{secret:?} in {}: {k}={v}",
                    span.name
                );
            }
        }
    }

    // Without `tracing:` trace headers are neither read nor written.
    std::fs::write(gw.path(), config(&provider, &upstream, "10.0.0.0/8", "")).expect("write");
    gw.runtime.reload().expect("reload");
    let before = receiver.all().len();
    get(gw.addr, "/api/users", &traced).await;
    let seen = upstream.take();
    assert_eq!(seen[0].header("traceparent"), Some(sent.as_str()));
    assert_eq!(seen[0].header("tracestate"), Some("vendor=opaque"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.all().len(), before, "no span without tracing:");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_a_trusted_parent_and_the_ratio_otherwise() {
    let upstream = Upstream::start().await;
    let (receiver, otlp) = Receiver::start().await;
    let cfg = format!(
        r#"trusted_proxies: ["127.0.0.1/32"]
upstream:
  url: "http://{}"
routes:
  - path: /open
    auth: none
tracing:
  otlp_endpoint: "http://{otlp}/"
  sample_ratio: 0.0
  export_interval: 100ms
"#,
        upstream.addr
    );
    let gw = Gateway::start(&cfg, &[]).await;
    // No parent, ratio 0: propagated unsampled, never exported.
    get(gw.addr, "/open", &[]).await;
    let seen = upstream.take();
    let (unsampled, _, flags) = traceparent(seen[0].header("traceparent").expect("traceparent"));
    assert_eq!(flags, "00");
    // A trusted parent that sampled: recorded whatever the ratio.
    let sampled = "0af7651916cd43dd8448eb211c80319c";
    get(
        gw.addr,
        "/open",
        &[("traceparent", &format!("00-{sampled}-b7ad6b7169203331-01"))],
    )
    .await;
    let server = receiver.wait_for("HTTP GET /open", sampled).await;
    assert_eq!(server.attr("scopegate.decision"), Some("allow"));
    assert!(
        receiver.all().iter().all(|s| s.trace_id != unsampled),
        "an unsampled trace is not exported"
    );
    gw.stop().await;
}
