//! The forward-auth listener: every header convention, the same refusals
//! as the proxy (made by the same code), and spoofing attempts.

use serde_json::json;

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, Upstream, bearer, request};

pub fn forward_auth_config(upstream: Option<&Upstream>, trusted: Option<&str>) -> String {
    let upstream = upstream
        .map(|u| format!("upstream:\n  url: \"http://{}\"\n", u.addr))
        .unwrap_or_default();
    let trusted = trusted
        .map(|t| format!("  trusted_sources: [\"{t}\"]\n"))
        .unwrap_or_default();
    format!(
        r#"{upstream}forward_auth:
  listen: "127.0.0.1:0"
{trusted}identity:
  headers:
    X-Auth-Subject: sub
    X-Auth-Scopes: scopes
    X-Auth-Org: org_id
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
routes:
  - path: /api/public
    methods: [GET]
    auth: none
  - path: /api/private
  - path: /api/private-scoped
    methods: [GET]
    scopes: [read:messages]
"#
    )
}

async fn start(upstream: Option<&Upstream>, trusted: Option<&str>) -> Gateway {
    let k = keys();
    Gateway::start(
        &forward_auth_config(upstream, trusted),
        &[("jwks.json", &jwks(&[&k.rsa]))],
    )
    .await
}

/// Builds the headers that carry a question (method, path) in one convention.
type Question = Box<dyn Fn(&'static str, &'static str) -> Vec<(&'static str, String)>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_header_convention_gets_the_proxy_decision() {
    let gw = start(None, None).await;
    let fa = gw.forward_auth.expect("forward-auth listener");
    let k = keys();
    let scoped = bearer(&k.rsa.token(&claims(json!({"scope": "read:messages"}))));
    let plain = bearer(&k.rsa.token(&claims(json!({}))));
    // (convention, headers carrying the question)
    let conventions: Vec<(&str, Question)> = vec![
        (
            "ingress-nginx",
            Box::new(|m, p| {
                vec![
                    ("X-Original-URL", format!("https://api.example.com{p}")),
                    ("X-Original-Method", m.into()),
                ]
            }),
        ),
        (
            "nginx auth_request",
            Box::new(|m, p| {
                vec![
                    ("X-Original-URI", p.into()),
                    ("X-Original-Method", m.into()),
                ]
            }),
        ),
        (
            "traefik / caddy",
            Box::new(|m, p| {
                vec![
                    ("X-Forwarded-Uri", p.into()),
                    ("X-Forwarded-Method", m.into()),
                ]
            }),
        ),
    ];
    for (name, question) in &conventions {
        let ask = |method: &'static str, path: &'static str, auth: Option<&str>| {
            let mut headers = question(method, path);
            if let Some(a) = auth {
                headers.push(("Authorization", a.to_owned()));
            }
            async move {
                let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                request(fa, "GET", "/auth", &h).await
            }
        };
        let ok = ask("GET", "/api/private-scoped?x=1", Some(&scoped)).await;
        assert_eq!(ok.status, 200, "{name}: {}", ok.text());
        assert_eq!(ok.header("x-auth-subject"), Some("user-1"), "{name}");
        assert_eq!(ok.header("x-auth-scopes"), Some("read:messages"), "{name}");
        assert_eq!(
            ok.header("x-auth-org"),
            Some(""),
            "{name}: a missing claim is an empty header, never absent"
        );
        let none = ask("GET", "/api/private-scoped", None).await;
        assert_eq!(none.status, 401, "{name}");
        assert_eq!(
            none.header("www-authenticate"),
            Some(r#"Bearer realm="api""#),
            "{name}"
        );
        assert_eq!(none.json()["error"], "unauthorized", "{name}");
        let weak = ask("GET", "/api/private-scoped", Some(&plain)).await;
        assert_eq!(weak.status, 403, "{name}");
        assert!(
            weak.header("www-authenticate")
                .is_some_and(|h| h.contains(r#"scope="read:messages""#)),
            "{name}"
        );
        assert_eq!(
            ask("GET", "/nowhere", Some(&scoped)).await.status,
            404,
            "{name}"
        );
        let wrong_method = ask("POST", "/api/private-scoped", Some(&scoped)).await;
        assert_eq!(wrong_method.status, 405, "{name}");
        assert_eq!(wrong_method.header("allow"), Some("GET, HEAD"), "{name}");
        let public = ask("GET", "/api/public", None).await;
        assert_eq!(public.status, 200, "{name}: auth none");
        assert_eq!(public.header("x-auth-subject"), Some(""), "{name}");
        // Normalization: the same 400s as the proxy.
        for path in [
            "/api/public/..;/private",
            "/api/public/%2e%2e;/private",
            "/api/public%2F..%2Fprivate",
            "/api/public%5c..%5cprivate",
            "/../api/private",
            "/api/private%00",
            "/api/priv%zzate",
        ] {
            let resp = ask("GET", path, Some(&scoped)).await;
            assert_eq!(resp.status, 400, "{name}: {path}");
            assert_eq!(resp.json()["error"], "invalid_request", "{name}: {path}");
        }
        // A dot-dot path resolves exactly as on the proxy.
        let resolved = ask("GET", "/api/public/../private-scoped", None).await;
        assert_eq!(
            resolved.status, 401,
            "{name}: /api/public/../private-scoped is /api/private-scoped"
        );
    }
    // Envoy ext_authz (HTTP mode): the request itself is the question.
    let own = request(
        fa,
        "GET",
        "/api/private-scoped",
        &[("Authorization", &scoped)],
    )
    .await;
    assert_eq!(own.status, 200);
    assert_eq!(
        request(
            fa,
            "POST",
            "/api/private-scoped",
            &[("Authorization", &scoped)]
        )
        .await
        .status,
        405
    );
    assert_eq!(
        request(fa, "GET", "/api/public/..;/x", &[]).await.status,
        400
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofing_attempts() {
    let upstream = Upstream::start().await;
    // Only 10.0.0.0/8 may ask: a loopback client is refused.
    let gw = start(Some(&upstream), Some("10.0.0.0/8")).await;
    let k = keys();
    let token = bearer(&k.rsa.token(&claims(json!({"scope": "read:messages"}))));
    let fa = gw.forward_auth.expect("listener");
    let resp = request(
        fa,
        "GET",
        "/auth",
        &[("X-Original-URI", "/api/public"), ("Authorization", &token)],
    )
    .await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"], "forbidden");
    gw.stop().await;

    let gw = start(Some(&upstream), None).await;
    let fa = gw.forward_auth.expect("listener");
    // Two answers to one question are refused.
    let twice = request(
        fa,
        "GET",
        "/auth",
        &[
            ("X-Original-URI", "/api/public"),
            ("X-Original-URI", "/api/private"),
        ],
    )
    .await;
    assert_eq!(twice.status, 400);
    let garbage = request(fa, "GET", "/auth", &[("X-Original-URL", "http://[::1")]).await;
    assert_eq!(garbage.status, 400);
    // The proxy listener never honours these headers: it decides on its own path.
    let proxied = request(
        gw.addr,
        "GET",
        "/api/public",
        &[
            ("X-Original-URI", "/api/private"),
            ("X-Forwarded-Uri", "/api/private"),
        ],
    )
    .await;
    assert_eq!(proxied.status, 200, "decided as /api/public");
    let closed = request(
        gw.addr,
        "GET",
        "/api/private",
        &[
            ("X-Original-URI", "/api/public"),
            ("X-Original-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(
        closed.status, 401,
        "decided as /api/private, whatever X-Original-URI says"
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/api/public");
    gw.stop().await;
}
