//! Envoy's gRPC ext_authz (issue 16, SPEC §4.6): a tonic client (Envoy's
//! protos from envoy-types) against the real listener — the same cases as
//! the HTTP forward-auth tests — and the same decisions on all three
//! listeners for a corpus of requests.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use serde_json::json;

use crate::forward_auth::forward_auth_config;
use crate::proxy::claims;
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, Upstream, bearer, request};

/// A check request shaped as Envoy sends it: lower-case headers (with the
/// pseudo-headers), the path with its query, the host.
fn check(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut map: HashMap<String, String> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
        .collect();
    map.insert(":method".into(), method.into());
    map.insert(":path".into(), path.into());
    map.insert(":authority".into(), "api.example.com".into());
    CheckRequest {
        attributes: Some(AttributeContext {
            // What the client claims to be: never what decides.
            source: Some(Peer {
                principal: "10.1.2.3".into(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "api.example.com".into(),
                    headers: map,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// What a check answered: gRPC code, HTTP status, headers, body, removals.
#[derive(Debug)]
struct Answer {
    code: i32,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    removed: Vec<String>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read(response: CheckResponse) -> Answer {
    let code = response.status.map_or(-1, |s| s.code);
    #[allow(deprecated)]
    let pairs = |headers: Vec<envoy_types::pb::envoy::config::core::v3::HeaderValueOption>| {
        headers
            .into_iter()
            .map(|h| {
                assert_eq!(
                    h.append.map(|a| a.value),
                    Some(false),
                    "append: false, set explicitly"
                );
                let h = h.header.expect("a header");
                (h.key, h.value)
            })
            .collect::<Vec<_>>()
    };
    match response
        .http_response
        .expect("an http_response, never an RPC error")
    {
        HttpResponse::OkResponse(ok) => Answer {
            code,
            status: 200,
            headers: pairs(ok.headers),
            body: String::new(),
            removed: ok.headers_to_remove,
        },
        HttpResponse::DeniedResponse(denied) => Answer {
            code,
            status: u16::try_from(denied.status.expect("a status").code).expect("a code"),
            headers: pairs(denied.headers),
            body: denied.body,
            removed: Vec::new(),
        },
        HttpResponse::ErrorResponse(_) => panic!("never an error_response"),
    }
}

async fn ask(addr: std::net::SocketAddr, request: CheckRequest) -> Answer {
    let mut client = AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    read(
        client
            .check(request)
            .await
            .expect("a CheckResponse")
            .into_inner(),
    )
}

async fn start(trusted: Option<&str>) -> Gateway {
    Gateway::start(
        &forward_auth_config(None, trusted, "envoy\n  grpc_listen: \"127.0.0.1:0\""),
        &[("jwks.json", &jwks(&[&keys().rsa]))],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_answers_like_the_http_listeners() {
    let gw = start(None).await;
    let grpc = gw.grpc.expect("gRPC listener");
    let k = keys();
    let scoped = bearer(&k.rsa.token(&claims(json!({"scope": "read:messages"}))));
    let plain = bearer(&k.rsa.token(&claims(json!({}))));

    let ok = ask(
        grpc,
        check(
            "GET",
            "/api/private-scoped?x=1",
            &[("authorization", &scoped), ("x-auth-subject", "admin")],
        ),
    )
    .await;
    assert_eq!((ok.code, ok.status), (0, 200), "{ok:?}");
    assert_eq!(ok.header("x-auth-subject"), Some("user-1"));
    assert_eq!(ok.header("x-auth-scopes"), Some("read:messages"));
    assert_eq!(
        ok.removed,
        ["x-auth-org"],
        "an absent claim's header is removed"
    );

    let none = ask(grpc, check("GET", "/api/private-scoped", &[])).await;
    assert_eq!((none.code, none.status), (16, 401), "UNAUTHENTICATED");
    assert_eq!(
        none.header("www-authenticate"),
        Some(r#"Bearer realm="api""#)
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&none.body).expect("JSON")["error"],
        "unauthorized"
    );

    let weak = ask(
        grpc,
        check("GET", "/api/private-scoped", &[("authorization", &plain)]),
    )
    .await;
    assert_eq!((weak.code, weak.status), (7, 403), "PERMISSION_DENIED");
    assert!(
        weak.header("www-authenticate")
            .is_some_and(|h| h.contains(r#"scope="read:messages""#))
    );

    assert_eq!(
        ask(
            grpc,
            check("GET", "/nowhere", &[("authorization", &scoped)])
        )
        .await
        .status,
        404
    );
    let wrong = ask(
        grpc,
        check("POST", "/api/private-scoped", &[("authorization", &scoped)]),
    )
    .await;
    assert_eq!((wrong.code, wrong.status), (7, 405));
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
    for path in [
        "/api/public/..;/private",
        "/api/public%2F..%2Fprivate",
        "/../api/private",
        "/api/private;x",
    ] {
        let bad = ask(grpc, check("GET", path, &[("authorization", &scoped)])).await;
        assert_eq!((bad.code, bad.status), (7, 400), "{path}");
    }
    // Normalization applies: the traversal is decided on its target.
    assert_eq!(
        ask(grpc, check("GET", "/api/public/../private-scoped", &[]))
            .await
            .status,
        401
    );
    // Envoy joins repeated headers with ',': two credentials → 400.
    let joined = format!("{scoped},{plain}");
    assert_eq!(
        ask(
            grpc,
            check("GET", "/api/private-scoped", &[("authorization", &joined)])
        )
        .await
        .status,
        400
    );
    // Method overrides are decided like _method.
    let overridden = ask(
        grpc,
        check("GET", "/api/items", &[("x-http-method-override", "DELETE")]),
    )
    .await;
    assert_eq!(overridden.status, 401);
    assert_eq!(ask(grpc, check("GET", "/api/items", &[])).await.status, 200);
    // No http attributes: 400, still a CheckResponse.
    let empty = ask(grpc, CheckRequest::default()).await;
    assert_eq!((empty.code, empty.status), (7, 400));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_sources_apply_to_the_grpc_peer() {
    // Only 10.0.0.0/8 may ask; attributes.source claims 10.1.2.3, the
    // connection comes from loopback.
    let gw = start(Some("10.0.0.0/8")).await;
    let grpc = gw.grpc.expect("gRPC listener");
    let k = keys();
    let scoped = bearer(&k.rsa.token(&claims(json!({"scope": "read:messages"}))));
    let refused = ask(
        grpc,
        check("GET", "/api/public", &[("authorization", &scoped)]),
    )
    .await;
    assert_eq!((refused.code, refused.status), (7, 403));
    assert!(refused.body.contains("forbidden"));
    gw.stop().await;
}

/// One corpus, three listeners: the proxy, HTTP forward-auth (envoy
/// convention) and gRPC reach the same status for every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_listeners_decide_alike() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(
        &forward_auth_config(
            Some(&upstream),
            None,
            "envoy\n  grpc_listen: \"127.0.0.1:0\"",
        ),
        &[("jwks.json", &jwks(&[&keys().rsa]))],
    )
    .await;
    let (grpc, fa) = (
        gw.grpc.expect("gRPC"),
        gw.forward_auth.expect("HTTP forward-auth"),
    );
    let k = keys();
    let tokens = [
        None,
        Some(bearer(
            &k.rsa.token(&claims(json!({"scope": "read:messages"}))),
        )),
        Some(bearer(&k.rsa.token(&claims(json!({"scope": "admin"}))))),
        Some(bearer(&k.rsa.token(&claims(json!({"exp": 1000}))))),
        Some("Bearer not.a.jwt".to_owned()),
    ];
    let targets = [
        ("GET", "/api/public"),
        ("GET", "/api/private"),
        ("GET", "/api/private-scoped"),
        ("POST", "/api/private-scoped"),
        ("GET", "/api/public/../private-scoped"),
        ("GET", "/api/public/..;/private"),
        ("GET", "/api/items?_method=DELETE"),
        ("DELETE", "/api/items"),
        ("GET", "/nowhere"),
        ("GET", "/api/%70rivate"),
    ];
    let mut compared = 0;
    for token in &tokens {
        for (method, target) in targets {
            let headers: Vec<(&str, &str)> = token
                .iter()
                .map(|t| ("Authorization", t.as_str()))
                .collect();
            let proxied = request(gw.addr, method, target, &headers).await.status;
            let http = request(fa, method, target, &headers).await.status;
            let lower: Vec<(&str, &str)> = token
                .iter()
                .map(|t| ("authorization", t.as_str()))
                .collect();
            let grpc_status = ask(grpc, check(method, target, &lower)).await.status;
            assert_eq!(
                (proxied, http, grpc_status),
                (proxied, proxied, proxied),
                "{method} {target} with {token:?}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 50);
    gw.stop().await;
}

/// The virtualenv `.ci/run` makes for the independent client.
fn python() -> Option<std::path::PathBuf> {
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/grpc-client-venv/bin/python");
    if venv.is_file() {
        return Some(venv);
    }
    crate::support::skip_unless_ci(
        "the grpcio client is not installed (python3 -m venv target/grpc-client-venv && target/grpc-client-venv/bin/pip install grpcio xds-protos)",
    );
    None
}

/// An independent client nobody here wrote the protos for: Python grpcio
/// with Envoy's own protos (xds-protos).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_grpcio_client_gets_envoys_answers() {
    let Some(python) = python() else {
        return;
    };
    let gw = start(None).await;
    let grpc = gw.grpc.expect("gRPC listener");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc-client/check.py");
    let scoped = bearer(&keys().rsa.token(&claims(json!({"scope": "read:messages"}))));
    let run = |path: &'static str, auth: Option<String>| {
        let (python, script) = (python.clone(), script.clone());
        async move {
            let mut cmd = std::process::Command::new(python);
            cmd.arg(script).arg(grpc.to_string()).arg("GET").arg(path);
            if let Some(auth) = auth {
                cmd.arg(format!("authorization={auth}"));
            }
            let out = tokio::task::spawn_blocking(move || cmd.output().expect("run python"))
                .await
                .expect("join");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
        }
    };
    let ok = run("/api/private-scoped?page=2", Some(scoped)).await;
    assert_eq!(ok["code"], 0, "{ok}");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["headers"]["x-auth-subject"], "user-1");
    assert_eq!(
        ok["append"],
        json!([false, false]),
        "append: false on every header"
    );
    assert_eq!(ok["headers_to_remove"], json!(["x-auth-org"]));
    let denied = run("/api/private-scoped", None).await;
    assert_eq!(denied["code"], 16, "{denied}");
    assert_eq!(denied["status"], 401);
    assert_eq!(
        denied["headers"]["www-authenticate"],
        r#"Bearer realm="api""#
    );
    assert_eq!(denied["body"]["error"], "unauthorized");
    gw.stop().await;
}
