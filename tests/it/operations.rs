//! What an operator sees: admin endpoints, metrics that move with traffic,
//! readiness, and logs that never carry a token.

use std::time::Duration;

use serde_json::json;

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, JwksServer, Upstream, bearer, get};

fn admin_config(upstream: &Upstream, jwks_uri: &str) -> String {
    format!(
        r#"
admin_listen: "127.0.0.1:0"
upstream:
  url: "http://{}"
  request_timeout: 1s
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_uri: {jwks_uri}
    jwks_refresh: 1s
routes:
  - path: /api/public
    methods: [GET]
    auth: none
  - path: /api/items/{{id}}
    scopes: [read:items]
  - path: /assets/{{*rest}}
    auth: none
"#,
        upstream.addr
    )
}

/// The value of one sample line of the Prometheus text, 0 when absent.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_readiness_and_metrics() {
    let upstream = Upstream::start().await;
    let k = keys();
    let idp = JwksServer::start(503, "down".into()).await;
    let gw = Gateway::start(&admin_config(&upstream, &idp.url()), &[]).await;
    let admin = gw.admin.expect("admin listener");

    assert_eq!(get(admin, "/healthz", &[]).await.status, 200);
    let ready = get(admin, "/readyz", &[]).await;
    assert_eq!(ready.status, 503, "not ready while an issuer has no keys");
    assert_eq!(ready.json()["waiting_for_keys"], json!([ISS_A]));

    // Let the first fetch fail before the IdP comes up.
    for _ in 0..100 {
        if gw.runtime.metrics.jwks_fetches(ISS_A, false) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    idp.set(200, jwks(&[&k.rsa]));
    let mut status = 0;
    for _ in 0..100 {
        status = get(admin, "/readyz", &[]).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "ready once the keys arrive");

    let routes = get(admin, "/routes", &[]).await.json();
    let items = routes
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["path"] == "/api/items/{id}")
        .expect("route listed");
    assert_eq!(items["scopes"], json!(["read:items"]));
    assert_eq!(items["auth"], "required");

    // Traffic moves the counters, labelled by template, never by raw path.
    let token = k.rsa.token(&claims(json!({"scope": "read:items"})));
    let before = get(admin, "/metrics", &[]).await.text();
    for i in 0..3 {
        assert_eq!(
            crate::support::bearer_status(gw.addr, &format!("/api/items/{i}"), &token).await,
            200
        );
    }
    assert_eq!(get(gw.addr, "/api/items/9", &[]).await.status, 401);
    assert_eq!(get(gw.addr, "/nowhere", &[]).await.status, 404);
    assert_eq!(get(gw.addr, "/assets/slow", &[]).await.status, 504);
    let after = get(admin, "/metrics", &[]).await;
    assert_eq!(after.status, 200);
    let m = after.text();
    let allowed =
        r#"scopegate_requests_total{route="/api/items/{id}",decision="allow",status="200"}"#;
    assert_eq!(sample(&m, allowed) - sample(&before, allowed), 3.0, "{m}");
    assert_eq!(
        sample(
            &m,
            r#"scopegate_requests_total{route="/api/items/{id}",decision="unauthorized",status="401"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"scopegate_requests_total{route="none",decision="not_found",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&m, r#"scopegate_upstream_errors_total{kind="Timeout"}"#),
        1.0
    );
    assert!(!m.contains("/api/items/0"), "raw paths never become labels");
    assert!(sample(&m, "scopegate_request_duration_seconds_count") >= 6.0);
    assert!(
        sample(
            &m,
            &format!(r#"scopegate_jwks_fetches_total{{issuer="{ISS_A}",result="error"}}"#)
        ) >= 1.0
    );
    assert!(
        sample(
            &m,
            &format!(r#"scopegate_jwks_fetches_total{{issuer="{ISS_A}",result="ok"}}"#)
        ) >= 1.0
    );
    assert!(
        sample(&m, "scopegate_token_cache_hits_total") >= 2.0,
        "the same token three times: two hits"
    );
    assert!(sample(&m, "scopegate_token_cache_misses_total") >= 1.0);

    // A failed reload shows up too.
    std::fs::write(gw.path(), "routes: [\n").expect("write");
    let mut reloads = 0.0;
    for _ in 0..100 {
        reloads = sample(
            &get(admin, "/metrics", &[]).await.text(),
            r#"scopegate_config_reloads_total{result="error"}"#,
        );
        if reloads >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloads, 1.0);
    gw.stop().await;
}

fn browser_config(upstream: &Upstream, origin: &str) -> String {
    format!(
        r#"
upstream:
  url: "http://{}"
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
cors:
  allowed_origins: ["{origin}"]
  allowed_methods: [GET, POST]
  allowed_headers: [Authorization, Content-Type]
  max_age: 10m
resource_metadata:
  resource: "https://api.example.com/v1"
  authorization_servers: ["{ISS_A}"]
routes:
  - path: /api/messages
    methods: [GET, POST]
    scopes: [read:messages]
  - path: /api/admin
    any_scope: [admin, root]
  - path: /api/public
    auth: none
"#,
        upstream.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_refusals_readable_by_browsers() {
    let upstream = Upstream::start().await;
    let k = keys();
    let app = "https://app.example.com";
    let gw = Gateway::start(
        &browser_config(&upstream, app),
        &[("jwks.json", &jwks(&[&k.rsa]))],
    )
    .await;
    let preflight = |origin: &'static str, method: &'static str| {
        let addr = gw.addr;
        async move {
            crate::support::request(
                addr,
                "OPTIONS",
                "/api/messages",
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", method),
                    ("Access-Control-Request-Headers", "authorization"),
                ],
            )
            .await
        }
    };
    // A genuine preflight: answered by the gateway, without a token.
    let ok = preflight(app, "GET").await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some(app));
    assert_eq!(ok.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        ok.header("access-control-allow-headers"),
        Some("Authorization, Content-Type")
    );
    assert_eq!(ok.header("access-control-max-age"), Some("600"));
    // Another origin, or a method not allowed: no CORS headers.
    assert_eq!(
        preflight("https://evil.example.com", "GET")
            .await
            .header("access-control-allow-origin"),
        None
    );
    assert_eq!(
        preflight(app, "DELETE")
            .await
            .header("access-control-allow-origin"),
        None
    );
    // OPTIONS without Access-Control-Request-Method is no preflight: routed (405 here).
    let plain =
        crate::support::request(gw.addr, "OPTIONS", "/api/messages", &[("Origin", app)]).await;
    assert_eq!(plain.status, 405);
    assert!(
        upstream.requests().is_empty(),
        "preflights never reach the upstream"
    );

    // A refusal carries CORS headers, so the script can read the JSON.
    let refused = get(gw.addr, "/api/messages", &[("Origin", app)]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("access-control-allow-origin"), Some(app));
    assert_eq!(refused.header("vary"), Some("Origin"));
    assert_eq!(refused.json()["error"], "unauthorized");
    let evil = get(
        gw.addr,
        "/api/messages",
        &[("Origin", "https://evil.example.com")],
    )
    .await;
    assert_eq!(evil.header("access-control-allow-origin"), None);
    // And an allowed response too.
    let token = k.rsa.token(&claims(json!({"scope": "read:messages"})));
    let allowed = get(
        gw.addr,
        "/api/messages",
        &[("Origin", app), ("Authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(app));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9728_metadata_and_challenges() {
    let upstream = Upstream::start().await;
    let k = keys();
    let gw = Gateway::start(
        &browser_config(&upstream, "https://app.example.com"),
        &[("jwks.json", &jwks(&[&k.rsa]))],
    )
    .await;
    let doc = get(gw.addr, "/.well-known/oauth-protected-resource/v1", &[]).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.header("content-type"), Some("application/json"));
    assert_eq!(
        doc.json(),
        json!({
            "resource": "https://api.example.com/v1",
            "authorization_servers": [ISS_A],
            "scopes_supported": ["admin", "read:messages", "root"],
            "bearer_methods_supported": ["header"],
        })
    );
    let url = "https://api.example.com/.well-known/oauth-protected-resource/v1";
    let none = get(gw.addr, "/api/messages", &[]).await;
    assert_eq!(
        none.header("www-authenticate"),
        Some(format!(r#"Bearer realm="api", resource_metadata="{url}""#).as_str())
    );
    let bad = get(
        gw.addr,
        "/api/messages",
        &[("Authorization", "Bearer a.b.c")],
    )
    .await;
    assert!(
        bad.header("www-authenticate")
            .is_some_and(|h| h.contains(&format!(r#"resource_metadata="{url}""#))
                && h.contains(r#"error="invalid_token""#))
    );
    let token = k.rsa.token(&claims(json!({})));
    let forbidden = get(
        gw.addr,
        "/api/messages",
        &[("Authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(forbidden.status, 403);
    assert!(
        forbidden
            .header("www-authenticate")
            .is_some_and(|h| !h.contains("resource_metadata")),
        "403s keep the plain RFC 6750 challenge"
    );
    assert!(upstream.requests().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_idle_timeout_streaming_413_and_max_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let cfg = format!(
        "admin_listen: 127.0.0.1:0\nupstream:\n  url: \"http://{}\"\nlimits:\n  idle_timeout: 1s\n  max_request_body_bytes: 100000\n  max_connections: 2\nroutes:\n  - path: /upload\n    auth: none\n",
        upstream.addr
    );
    let gw = Gateway::start(&cfg, &[]).await;

    // A streamed body past the limit: 413, and the upstream request aborted.
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .expect("head");
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..12 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let resp = crate::support::read_response(&mut stream).await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["error"], "payload_too_large");
    let seen = upstream.take();
    assert!(
        seen.iter().all(|r| r.body_len <= 100_000),
        "the upstream never got past the limit: {seen:?}"
    );

    // An idle keep-alive connection is closed after idle_timeout.
    let mut idle = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /upload HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let first = crate::support::read_response(&mut idle).await;
    assert_eq!(first.status, 200);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection must be closed");

    // Two connections hold both slots: a third waits, the admin listener answers.
    let mut a = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let b = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    a.write_all(b"GET /upload HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(crate::support::read_response(&mut a).await.status, 200);
    let third = tokio::spawn({
        let addr = gw.addr;
        async move { get(addr, "/upload", &[]).await.status }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "the third connection waits for a free slot"
    );
    assert_eq!(
        get(gw.admin.expect("admin"), "/healthz", &[]).await.status,
        200
    );
    drop(a);
    drop(b);
    assert_eq!(third.await.expect("join"), 200, "served once a slot frees");
    gw.stop().await;
}

/// The real binary at the most verbose level, in both log formats: no
/// token, secret or Authorization value ever reaches the log, whatever the
/// request (valid, invalid, in a query, in a cookie, over HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_carry_tokens_or_secrets() {
    use http_body_util::{BodyExt, Empty};
    let upstream = Upstream::start().await;
    let k = keys();
    let secret = "hs-secret-that-must-never-be-logged-0123456789abcdef";
    for format in ["text", "json"] {
        let port = crate::support::free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("jwks.json"), jwks(&[&k.rsa])).expect("write");
        let cfg = format!(
            "listen: 127.0.0.1:{port}\nupstream:\n  url: \"http://{}\"\ntokens:\n  from: [header, \"cookie:at\", \"query:access_token\"]\nidentity:\n  headers:\n    X-Auth-Subject: sub\nissuers:\n  - issuer: \"{ISS_A}\"\n    audiences: [\"{AUD}\"]\n    jwks_file: jwks.json\n  - issuer: https://hs.test/\n    audiences: [\"{AUD}\"]\n    hs256_secret_env: SG_LOG_TEST_SECRET\n    algorithms: [HS256]\nupstreams:\n  legacy:\n    url: \"http://{}\"\n    credentials:\n      header: {{ name: X-Api-Key, value_env: SG_LOG_TEST_SECRET }}\nroutes:\n  - path: /api/private\n  - path: /api/scoped\n    scopes: [nope]\n  - path: /api/legacy\n    upstream: legacy\n",
            upstream.addr, upstream.addr
        );
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, cfg).expect("write");
        let env = [
            ("RUST_LOG", "trace".to_owned()),
            ("SCOPEGATE_LOG_FORMAT", format.to_owned()),
            ("SG_LOG_TEST_SECRET", secret.to_owned()),
        ];
        let (mut child, addr) = crate::support::run_binary(&path, port, &env, true).await;
        // Drain stderr while the gateway runs: trace output fills a pipe fast.
        let reader = crate::support::drain_stderr(&mut child);
        let good = k.rsa.token(&claims(json!({})));
        let expired = k.rsa.token(&claims(json!({"exp": 1000})));
        let forged = format!("{}x", &good[..good.len() - 1]);
        let tokens = [&good, &expired, &forged];
        for t in tokens {
            let auth = bearer(t);
            get(addr, "/api/private", &[("Authorization", &auth)]).await;
            get(addr, "/api/scoped", &[("Authorization", &auth)]).await;
            // The gateway's own static credential goes upstream, never to the log.
            get(addr, "/api/legacy", &[("Authorization", &auth)]).await;
            get(addr, &format!("/api/private?access_token={t}"), &[]).await;
            get(addr, "/api/private", &[("Cookie", &format!("at={t}"))]).await;
            get(
                addr,
                "/api/private",
                &[("Authorization", &auth), ("Cookie", &format!("at={t}"))],
            )
            .await;
        }
        get(
            addr,
            "/api/private",
            &[("Authorization", "Basic c2VjcmV0OnBhc3N3b3Jk")],
        )
        .await;
        // HTTP/2 (h2c) too: its header tracing is the most verbose.
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2");
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{addr}/api/private"))
            .header("authorization", bearer(&good))
            .body(Empty::<bytes::Bytes>::new())
            .expect("req");
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
        drop(sender);
        tokio::time::sleep(Duration::from_millis(200)).await;
        crate::support::signal(&child, "-TERM");
        let logs = tokio::task::spawn_blocking(move || {
            let _ = child.wait();
            reader.join().expect("reader")
        })
        .await
        .expect("join");
        assert!(
            logs.contains("/api/private"),
            "{format}: request lines are logged"
        );
        if format == "json" {
            // Operators see why: the refusal's description, and who was
            // refused once the token verified (issue 12).
            let access: Vec<serde_json::Value> = logs
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|l| l["target"] == "scopegate::access")
                .collect();
            let refused_scope = access
                .iter()
                .find(|f| f["path"] == "/api/scoped" && f["status"] == 403)
                .expect("a 403 line");
            assert_eq!(refused_scope["subject"], "user-1", "{refused_scope}");
            assert_eq!(refused_scope["reason"], "insufficient_scope");
            assert_eq!(refused_scope["description"], "a required scope is missing");
            let expired_line = access
                .iter()
                .find(|f| f["description"] == "token expired")
                .expect("an expired-token line");
            assert_eq!(expired_line["status"], 401);
            assert_eq!(
                expired_line["subject"], "-",
                "an unverified token names no one"
            );
        }
        for t in tokens {
            // Any 20-character piece of the signature would betray the token.
            let signature = t.rsplit('.').next().expect("signature");
            assert!(
                !logs.contains(&signature[..20]),
                "{format}: a token leaked into the logs"
            );
        }
        for needle in [secret, "c2VjcmV0OnBhc3N3b3Jk", "Bearer ey"] {
            assert!(
                !logs.contains(needle),
                "{format}: {needle:?} leaked into the logs"
            );
        }
    }
}

/// `allowed_origins: ["*"]` is a literal `*`, never with credentials; the
/// upstream's `Access-Control-Allow-Credentials` gets through only for a
/// listed origin with `allow_credentials: true`; what the upstream exposes
/// is kept (issue 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_never_grants_credentials_it_was_not_told_to() {
    let upstream = Upstream::start().await;
    let app = "https://app.example.com";
    let any = format!(
        "upstream:\n  url: \"http://{}\"\ncors:\n  allowed_origins: [\"*\"]\nroutes:\n  - path: /cors\n    auth: none\n",
        upstream.addr
    );
    let gw = Gateway::start(&any, &[]).await;
    let evil = get(gw.addr, "/cors", &[("Origin", "https://evil.example.com")]).await;
    assert_eq!(evil.status, 200);
    assert_eq!(evil.header("access-control-allow-origin"), Some("*"));
    assert_eq!(evil.header("access-control-allow-credentials"), None);
    let exposed: Vec<&str> = evil
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("access-control-expose-headers"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(exposed, ["X-Request-Id", "www-authenticate"]);
    let preflight = crate::support::request(
        gw.addr,
        "OPTIONS",
        "/cors",
        &[
            ("Origin", "https://evil.example.com"),
            ("Access-Control-Request-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(preflight.header("access-control-allow-credentials"), None);
    gw.stop().await;

    for (credentials, want) in [("false", None), ("true", Some("true"))] {
        let listed = format!(
            "upstream:\n  url: \"http://{}\"\ncors:\n  allowed_origins: [\"{app}\"]\n  allow_credentials: {credentials}\nroutes:\n  - path: /cors\n    auth: none\n",
            upstream.addr
        );
        let gw = Gateway::start(&listed, &[]).await;
        let resp = get(gw.addr, "/cors", &[("Origin", app)]).await;
        assert_eq!(resp.header("access-control-allow-origin"), Some(app));
        assert_eq!(
            resp.header("access-control-allow-credentials"),
            want,
            "allow_credentials: {credentials}"
        );
        let other = get(gw.addr, "/cors", &[("Origin", "https://evil.example.com")]).await;
        assert_eq!(other.header("access-control-allow-origin"), None);
        assert_eq!(other.header("access-control-allow-credentials"), None);
        gw.stop().await;
    }
}
