//! The forward-auth listener: each ingress convention, the same refusals
//! as the proxy (made by the same code), and spoofing attempts: only the
//! named convention's headers carry the question (SPEC §4.1).

use serde_json::json;

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, Raw, Upstream, bearer, request};

/// A forward-auth config; `convention` is the YAML value (with more
/// `forward_auth` lines after it if needed, such as a `path_prefix`).
pub fn forward_auth_config(
    upstream: Option<&Upstream>,
    trusted: Option<&str>,
    convention: &str,
) -> String {
    let upstream = upstream
        .map(|u| format!("upstream:\n  url: \"http://{}\"\n", u.addr))
        .unwrap_or_default();
    let trusted = trusted
        .map(|t| format!("  trusted_sources: [\"{t}\"]\n"))
        .unwrap_or_default();
    format!(
        r#"{upstream}forward_auth:
  listen: "127.0.0.1:0"
  convention: {convention}
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
  - path: /api/items
    methods: [GET]
    auth: none
  - path: /api/items
    methods: [DELETE]
    scopes: [admin]
"#
    )
}

async fn start(upstream: Option<&Upstream>, trusted: Option<&str>, convention: &str) -> Gateway {
    let k = keys();
    Gateway::start(
        &forward_auth_config(upstream, trusted, convention),
        &[("jwks.json", &jwks(&[&k.rsa]))],
    )
    .await
}

/// How one convention carries a question (method, path with query).
#[derive(Clone, Copy)]
enum Asks {
    /// In these URI and method headers, on a `GET /auth` subrequest.
    Headers {
        uri: &'static str,
        method: &'static str,
        absolute: bool,
    },
    /// As the request itself, under this prefix (Envoy).
    Itself { prefix: &'static str },
}

const CONVENTIONS: [(&str, Asks); 5] = [
    (
        "nginx",
        Asks::Headers {
            uri: "X-Original-URI",
            method: "X-Original-Method",
            absolute: false,
        },
    ),
    (
        "ingress-nginx",
        Asks::Headers {
            uri: "X-Original-URL",
            method: "X-Original-Method",
            absolute: true,
        },
    ),
    (
        "traefik",
        Asks::Headers {
            uri: "X-Forwarded-Uri",
            method: "X-Forwarded-Method",
            absolute: false,
        },
    ),
    (
        "caddy",
        Asks::Headers {
            uri: "X-Forwarded-Uri",
            method: "X-Forwarded-Method",
            absolute: false,
        },
    ),
    (
        "envoy\n  path_prefix: /authz",
        Asks::Itself { prefix: "/authz" },
    ),
];

/// Every header any convention reads, pointing at the public route: what a
/// client adds to its own request to steer a lenient forward-auth server.
const INJECTED: [(&str, &str); 6] = [
    ("X-Original-URL", "https://api.example.com/api/public"),
    ("X-Original-URI", "/api/public"),
    ("X-Forwarded-Uri", "/api/public"),
    ("X-Original-Method", "GET"),
    ("X-Forwarded-Method", "GET"),
    ("X-Rewrite-URL", "/api/public"),
];

impl Asks {
    /// Asks `method path` with `extra` headers (the client's own, which the
    /// ingress passes through), the convention's headers last.
    async fn ask(
        self,
        fa: std::net::SocketAddr,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Raw {
        let mut headers: Vec<(String, String)> = extra
            .iter()
            .filter(|(n, _)| match self {
                // The ingress sets its own headers: the client's copies of
                // those are replaced, every other header passes.
                Asks::Headers { uri, method, .. } => {
                    !n.eq_ignore_ascii_case(uri) && !n.eq_ignore_ascii_case(method)
                }
                Asks::Itself { .. } => true,
            })
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        match self {
            Asks::Headers {
                uri,
                method: m,
                absolute,
            } => {
                let value = if absolute {
                    format!("https://api.example.com{path}")
                } else {
                    path.to_owned()
                };
                headers.push((uri.to_owned(), value));
                headers.push((m.to_owned(), method.to_owned()));
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                request(fa, "GET", "/auth", &h).await
            }
            Asks::Itself { prefix } => {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                request(fa, method, &format!("{prefix}{path}"), &h).await
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_convention_gets_the_proxy_decision() {
    let k = keys();
    let scoped = bearer(&k.rsa.token(&claims(json!({"scope": "read:messages"}))));
    let plain = bearer(&k.rsa.token(&claims(json!({}))));
    for (convention, asks) in CONVENTIONS {
        let name = convention.lines().next().unwrap_or(convention);
        let gw = start(None, None, convention).await;
        let fa = gw.forward_auth.expect("forward-auth listener");
        let ask = |method: &'static str, path: &'static str, auth: Option<&str>| {
            let auth = auth.map(str::to_owned);
            async move {
                let extra: Vec<(&str, &str)> =
                    auth.iter().map(|a| ("Authorization", a.as_str())).collect();
                asks.ask(fa, method, path, &extra).await
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
            "/api/private;jsessionid=1",
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
        // Method overrides cannot be removed here: decided under both methods.
        let override_query = ask("GET", "/api/items?_method=DELETE", None).await;
        assert_eq!(
            override_query.status, 401,
            "{name}: _method=DELETE needs admin"
        );
        let override_header = asks
            .ask(
                fa,
                "GET",
                "/api/items",
                &[("X-HTTP-Method-Override", "DELETE")],
            )
            .await;
        assert_eq!(
            override_header.status, 401,
            "{name}: X-HTTP-Method-Override: DELETE needs admin"
        );
        assert_eq!(ask("GET", "/api/items", None).await.status, 200, "{name}");
        gw.stop().await;
    }
}

/// The critical bypass: behind any ingress, a client adds another
/// convention's headers naming a public path. They must decide nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_named_conventions_headers_carry_the_question() {
    for (convention, asks) in CONVENTIONS {
        let name = convention.lines().next().unwrap_or(convention);
        let gw = start(None, None, convention).await;
        let fa = gw.forward_auth.expect("forward-auth listener");
        let steered = asks.ask(fa, "GET", "/api/private", &INJECTED).await;
        assert_eq!(
            steered.status,
            401,
            "{name}: decided as /api/private: {}",
            steered.text()
        );
        let steered = asks.ask(fa, "DELETE", "/api/items", &INJECTED).await;
        assert_eq!(
            steered.status,
            401,
            "{name}: decided as DELETE: {}",
            steered.text()
        );
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_missing_its_headers_is_a_400_never_a_get() {
    let nginx = start(None, None, "nginx").await;
    let fa = nginx.forward_auth.expect("listener");
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "no method header: the subrequest's own GET must not decide a DELETE",
            &[("X-Original-URI", "/api/items")],
        ),
        ("no URI header", &[("X-Original-Method", "GET")]),
        (
            "another convention's URI header",
            &[
                ("X-Forwarded-Uri", "/api/public"),
                ("X-Original-Method", "GET"),
            ],
        ),
        (
            "another convention's method header",
            &[
                ("X-Original-URI", "/api/public"),
                ("X-Forwarded-Method", "GET"),
            ],
        ),
        (
            "repeated URI",
            &[
                ("X-Original-URI", "/api/public"),
                ("X-Original-URI", "/api/private"),
                ("X-Original-Method", "GET"),
            ],
        ),
        (
            "repeated method",
            &[
                ("X-Original-URI", "/api/public"),
                ("X-Original-Method", "GET"),
                ("X-Original-Method", "DELETE"),
            ],
        ),
        (
            "a method that is not a token",
            &[
                ("X-Original-URI", "/api/public"),
                ("X-Original-Method", "G(T"),
            ],
        ),
        (
            "two _method parameters",
            &[
                ("X-Original-URI", "/api/items?_method=GET&_method=DELETE"),
                ("X-Original-Method", "GET"),
            ],
        ),
    ];
    for (why, headers) in cases {
        let resp = request(fa, "GET", "/auth", headers).await;
        assert_eq!(resp.status, 400, "{why}: {}", resp.text());
        assert_eq!(resp.json()["error"], "invalid_request", "{why}");
    }
    nginx.stop().await;

    let ingress = start(None, None, "ingress-nginx").await;
    let fa = ingress.forward_auth.expect("listener");
    for url in ["/api/public", "ftp://h/api/public", "http://[::1"] {
        let resp = request(
            fa,
            "GET",
            "/auth",
            &[("X-Original-URL", url), ("X-Original-Method", "GET")],
        )
        .await;
        assert_eq!(
            resp.status, 400,
            "X-Original-URL {url} is not an absolute http(s) URL"
        );
    }
    ingress.stop().await;

    let envoy = start(None, None, "envoy\n  path_prefix: /authz").await;
    let fa = envoy.forward_auth.expect("listener");
    for outside in ["/api/public", "/authzx/api/public"] {
        let resp = request(fa, "GET", outside, &[]).await;
        assert_eq!(resp.status, 400, "{outside} is outside the prefix");
    }
    assert_eq!(
        request(fa, "GET", "/authz/api/public", &[]).await.status,
        200
    );
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofing_attempts() {
    let upstream = Upstream::start().await;
    // Only 10.0.0.0/8 may ask: a loopback client is refused.
    let gw = start(Some(&upstream), Some("10.0.0.0/8"), "nginx").await;
    let k = keys();
    let token = bearer(&k.rsa.token(&claims(json!({"scope": "read:messages"}))));
    let fa = gw.forward_auth.expect("listener");
    let resp = request(
        fa,
        "GET",
        "/auth",
        &[
            ("X-Original-URI", "/api/public"),
            ("X-Original-Method", "GET"),
            ("Authorization", &token),
        ],
    )
    .await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"], "forbidden");
    gw.stop().await;

    let gw = start(Some(&upstream), None, "nginx").await;
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
