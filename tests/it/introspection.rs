//! Opaque access tokens by RFC 7662 introspection (issue 15, SPEC §4.4),
//! against a real authorization server that introspects and revokes
//! (oidc-provider, run by Node.js): the provider's scopes decide; a revoked
//! or unknown token is refused; concurrent first requests share one call;
//! the provider down is a 503 while cached answers keep serving.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::idp::{self, Idp};
use crate::support::{Gateway, Upstream, bearer, get};

const APP_SECRET: &str = "app-secret-0123456789abcdef";
const GW_SECRET: &str = "gw-secret-0123456789abcdef";

fn clients() -> serde_json::Value {
    json!([
        {"client_id": "app", "client_secret": APP_SECRET, "token_endpoint_auth_method": "client_secret_basic", "scope": "read:users"},
        idp::client("gw", GW_SECRET, "client_secret_basic"),
    ])
}

/// An introspection-only issuer (no key source); `extra` adds lines to
/// its `introspection:` block.
async fn gateway(provider: &Idp, upstream: &Upstream, extra: &str) -> Gateway {
    let cfg = format!(
        r#"upstream:
  url: "http://{}"
identity:
  headers:
    X-Auth-Client: client_id
    X-Auth-Scopes: scopes
issuers:
  - issuer: "{}"
    audiences: ["https://api.example.com"]
    introspection:
      client_id: gw
      client_secret_file: gw-secret.txt
      require_aud: false
{extra}routes:
  - path: /api/users
    scopes: [read:users]
  - path: /api/admin
    scopes: [delete:users]
"#,
        upstream.addr,
        provider.issuer()
    );
    Gateway::start(&cfg, &[("gw-secret.txt", GW_SECRET)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected_once_and_cached() {
    if !idp::available() {
        return;
    }
    let mut provider = Idp::start(&clients(), 300).await;
    let upstream = Upstream::start().await;
    // The endpoint from discovery (`introspection_endpoint`).
    let gw = gateway(&provider, &upstream, "      cache_ttl: 30s\n").await;
    let token = provider.token("app", APP_SECRET, "read:users").await;
    assert!(!token.contains('.'), "an opaque token: {token}");

    // Twenty concurrent first requests: one introspection.
    let before = provider.introspection_requests().await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (addr, auth) = (gw.addr, bearer(&token));
        tasks.push(tokio::spawn(async move {
            get(addr, "/api/users", &[("Authorization", &auth)])
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200);
    }
    assert_eq!(
        provider.introspection_requests().await - before,
        1,
        "single flight"
    );
    let seen = upstream.take();
    assert_eq!(seen.len(), 20);
    assert_eq!(
        seen[0].header("x-auth-client"),
        Some("app"),
        "the answer's client_id"
    );
    assert_eq!(
        seen[0].header("x-auth-scopes"),
        Some("read:users"),
        "the provider's scopes"
    );
    // The provider's scopes decide.
    let admin = get(gw.addr, "/api/admin", &[("Authorization", &bearer(&token))]).await;
    assert_eq!(admin.status, 403);
    // An unknown token: active false → 401.
    let unknown = get(
        gw.addr,
        "/api/users",
        &[("Authorization", &bearer("nOtAReAlToKeN0123456789"))],
    )
    .await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.json()["error_description"], "token is not active");
    assert!(upstream.take().is_empty());
    let metrics = gw.runtime.metrics.encode();
    let issuer = provider.issuer();
    assert!(
        metrics.contains(&format!(
            r#"scopegate_introspections_total{{issuer="{issuer}",result="active"}} 1"#
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        r#"scopegate_introspections_total{{issuer="{issuer}",result="inactive"}} 1"#
    )));
    assert!(metrics.contains(&format!(
        r#"scopegate_introspection_cache_hits_total{{issuer="{issuer}"}}"#
    )));

    // The provider goes down: a cached answer keeps serving; a token the
    // gateway has not seen gets 503 with Retry-After, nothing forwarded.
    let fresh = provider.token("app", APP_SECRET, "read:users").await;
    provider.stop();
    assert_eq!(
        get(gw.addr, "/api/users", &[("Authorization", &bearer(&token))])
            .await
            .status,
        200
    );
    let started = Instant::now();
    let down = get(gw.addr, "/api/users", &[("Authorization", &bearer(&fresh))]).await;
    assert_eq!(down.status, 503);
    assert_eq!(down.json()["error"], "temporarily_unavailable");
    assert!(down.header("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "bounded by the timeout"
    );
    assert_eq!(upstream.take().len(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_once_its_answer_expires() {
    if !idp::available() {
        return;
    }
    let provider = Idp::start(&clients(), 300).await;
    let upstream = Upstream::start().await;
    // An explicit endpoint, short cache lifetimes.
    let extra = format!(
        "      endpoint: \"{}/token/introspection\"\n      cache_ttl: 1s\n      negative_cache_ttl: 1s\n",
        provider.issuer()
    );
    let gw = gateway(&provider, &upstream, &extra).await;
    let token = provider.token("app", APP_SECRET, "read:users").await;
    let auth = bearer(&token);
    assert_eq!(
        get(gw.addr, "/api/users", &[("Authorization", &auth)])
            .await
            .status,
        200
    );
    provider.revoke("app", APP_SECRET, &token).await;
    let revoked = Instant::now();
    let refused = crate::support::wait_for_status(
        gw.addr,
        "/api/users",
        &[("Authorization", &auth)],
        401,
        Duration::from_secs(5),
    )
    .await;
    eprintln!(
        "introspection: a revoked token refused {:?} after revocation (cache_ttl 1s)",
        revoked.elapsed()
    );
    assert!(
        refused.is_some(),
        "a revoked token must be refused once its cached answer expires"
    );
    assert!(revoked.elapsed() <= Duration::from_millis(1600));
    gw.stop().await;
}

/// A slow endpoint (it accepts and never answers): concurrent requests
/// for one token wait about one `timeout`, not one each in turn, and get
/// 503 — never an allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_costs_one_timeout() {
    let upstream = Upstream::start().await;
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = hanging.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            held.push(stream);
        }
    });
    let cfg = format!(
        "upstream:\n  url: \"http://{}\"\nissuers:\n  - issuer: \"https://slow.example.com/\"\n    audiences: [\"api\"]\n    introspection:\n      endpoint: \"http://{endpoint}/introspect\"\n      client_id: gw\n      client_secret_file: gw-secret.txt\n      timeout: 1s\nroutes:\n  - path: /api/users\n",
        upstream.addr
    );
    let gw = Gateway::start(&cfg, &[("gw-secret.txt", GW_SECRET)]).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            get(
                addr,
                "/api/users",
                &[("Authorization", &bearer("opaque-token-0123456789"))],
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 503);
    }
    let took = started.elapsed();
    eprintln!(
        "introspection: 8 concurrent requests against a hanging endpoint answered 503 within {took:?} (timeout 1s)"
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert!(upstream.take().is_empty());
    gw.stop().await;
}
