//! Keys that change under a running gateway: rotation with a single-flight
//! refetch, outages with last-good keys and a stale limit, OIDC discovery,
//! and the verified-token cache on top of all that.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::proxy::{AUD, claims};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, JwksServer, Upstream, bearer, get};

fn remote_config(upstream: &Upstream, issuer: &str, source: &str, extra: &str) -> String {
    format!(
        r#"
upstream:
  url: "http://{}"
issuers:
  - issuer: "{issuer}"
    audiences: ["{AUD}"]
    algorithms: [RS256, ES256]
{source}
{extra}
routes:
  - path: /api/private
  - path: /api/private-scoped
    scopes: [read:messages]
"#,
        upstream.addr
    )
}

/// Polls until `path` with `token` answers `status`, at most `limit`.
async fn until_status(gw: &Gateway, token: &str, status: u16, limit: Duration) -> Option<Duration> {
    let auth = bearer(token);
    crate::support::wait_for_status(
        gw.addr,
        "/api/private",
        &[("Authorization", &auth)],
        status,
        limit,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_refetches_once_for_a_spray_of_unknown_kids_and_the_cache_follows() {
    let upstream = Upstream::start().await;
    let k = keys();
    let idp = JwksServer::start(200, jwks(&[&k.rsa])).await;
    let iss = "https://rotating.test/";
    let cfg = remote_config(&upstream, iss, &format!("    jwks_uri: {}", idp.url()), "");
    let gw = Gateway::start(&cfg, &[]).await;
    let old = k.rsa.token(&claims(json!({"iss": iss})));
    assert!(
        until_status(&gw, &old, 200, Duration::from_secs(10))
            .await
            .is_some(),
        "keys never loaded"
    );
    // The cached token still goes through the route's own policy.
    let resp = get(
        gw.addr,
        "/api/private-scoped",
        &[("Authorization", &bearer(&old))],
    )
    .await;
    assert_eq!(
        resp.status, 403,
        "a cached token lacking the scope is refused"
    );
    let state = gw.runtime.shared.load();
    assert!(
        state.cache.as_ref().is_some_and(|c| c.stats().hits() >= 1),
        "the second request was served from the cache"
    );
    drop(state);
    assert_eq!(idp.hits(), 1);

    // The IdP rotates: only the new key is published.
    idp.set(200, jwks(&[&k.rsa_other]));
    let new = k
        .rsa_other
        .token(&claims(json!({"iss": iss, "scope": "read:messages"})));
    let mut spray = Vec::new();
    for _ in 0..200 {
        let (addr, auth) = (gw.addr, bearer(&new));
        spray.push(tokio::spawn(async move {
            get(addr, "/api/private-scoped", &[("Authorization", &auth)])
                .await
                .status
        }));
    }
    for request in spray {
        assert_eq!(
            request.await.expect("join"),
            200,
            "a token with the new kid is accepted after the refetch"
        );
    }
    assert!(
        idp.hits() <= 2,
        "200 concurrent unknown kids caused {} JWKS fetches",
        idp.hits()
    );
    eprintln!(
        "rotation spray: 200 concurrent requests, {} JWKS fetches in all",
        idp.hits()
    );

    // The old key left the set: its (cached) token is refused now, and the
    // 30 s refetch limit holds.
    let resp = get(gw.addr, "/api/private", &[("Authorization", &bearer(&old))]).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error_description"], "unknown key");
    assert!(idp.hits() <= 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_last_good_keys_until_max_stale_then_503() {
    let upstream = Upstream::start().await;
    let k = keys();
    let idp = JwksServer::start(200, jwks(&[&k.rsa])).await;
    let iss = "https://flaky.test/";
    let cfg = remote_config(
        &upstream,
        iss,
        &format!("    jwks_uri: {}", idp.url()),
        "    jwks_refresh: 1s\n    jwks_max_stale: 3s",
    );
    let gw = Gateway::start(&cfg, &[]).await;
    let token = k.rsa.token(&claims(json!({"iss": iss})));
    assert!(
        until_status(&gw, &token, 200, Duration::from_secs(10))
            .await
            .is_some()
    );

    idp.set(503, "down".into());
    let outage = Instant::now();
    // Well inside jwks_max_stale the last good keys still verify.
    assert_eq!(
        crate::support::bearer_status(gw.addr, "/api/private", &token).await,
        200
    );
    let became_503 = until_status(&gw, &token, 503, Duration::from_secs(15)).await;
    assert!(
        became_503.is_some(),
        "keys must stop serving after jwks_max_stale"
    );
    // Staleness counts from the last successful fetch, which may precede the
    // outage by up to one refresh interval (1 s).
    assert!(
        outage.elapsed() >= Duration::from_secs(2),
        "keys dropped before jwks_max_stale"
    );
    eprintln!("outage: last good keys served for {:?}", outage.elapsed());
    let resp = get(
        gw.addr,
        "/api/private",
        &[("Authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert!(gw.runtime.metrics.jwks_fetches(iss, false) >= 2);

    // The IdP comes back: the issuer recovers by itself.
    idp.set(200, jwks(&[&k.rsa]));
    assert!(
        until_status(&gw, &token, 200, Duration::from_secs(10))
            .await
            .is_some()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_jwks_and_refuses_a_mismatching_issuer() {
    let upstream = Upstream::start().await;
    let k = keys();
    let idp = JwksServer::start(200, jwks(&[&k.rsa])).await;
    let iss = idp.base();
    let discovery = "/.well-known/openid-configuration";
    idp.set_path(
        discovery,
        200,
        json!({"issuer": iss, "jwks_uri": idp.url()}).to_string(),
    );
    let cfg = remote_config(&upstream, &iss, "    discovery: true", "");
    let gw = Gateway::start(&cfg, &[]).await;
    let token = k.rsa.token(&claims(json!({"iss": iss})));
    assert!(
        until_status(&gw, &token, 200, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert_eq!(idp.hits_for(discovery), 1);
    gw.stop().await;

    // A document that names another issuer: never ready.
    let evil = JwksServer::start(200, jwks(&[&k.rsa])).await;
    let iss = evil.base();
    evil.set_path(
        discovery,
        200,
        json!({"issuer": "https://evil.test/", "jwks_uri": evil.url()}).to_string(),
    );
    let gw = Gateway::start(
        &remote_config(&upstream, &iss, "    discovery: true", ""),
        &[],
    )
    .await;
    let token = k.rsa.token(&claims(json!({"iss": iss})));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resp = get(
        gw.addr,
        "/api/private",
        &[("Authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(resp.status, 503);
    assert_eq!(
        evil.hits(),
        0,
        "the JWKS of an unverified discovery document is never fetched"
    );
    assert!(gw.runtime.metrics.jwks_fetches(&iss, false) >= 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_unparsable_jwks_change_nothing() {
    let upstream = Upstream::start().await;
    let k = keys();
    let idp = JwksServer::start(
        200,
        format!(
            r#"{{"keys": [], "pad": "{}"}}"#,
            "x".repeat(2 * 1024 * 1024)
        ),
    )
    .await;
    let iss = "https://big.test/";
    let cfg = remote_config(
        &upstream,
        iss,
        &format!("    jwks_uri: {}", idp.url()),
        "    jwks_refresh: 1s",
    );
    let gw = Gateway::start(&cfg, &[]).await;
    let token = k.rsa.token(&claims(json!({"iss": iss})));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        crate::support::bearer_status(gw.addr, "/api/private", &token).await,
        503
    );
    idp.set(200, jwks(&[&k.rsa]));
    assert!(
        until_status(&gw, &token, 200, Duration::from_secs(10))
            .await
            .is_some()
    );
    // Garbage later keeps the good keys.
    idp.set(200, "{ not json".into());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        crate::support::bearer_status(gw.addr, "/api/private", &token).await,
        200
    );
    assert!(gw.runtime.metrics.jwks_fetches(iss, false) >= 2);
    gw.stop().await;
}

/// The real binary with `HTTP_PROXY` set: the JWKS of a host that does not
/// exist is fetched through the proxy (the test's IdP fixture answers
/// absolute-form requests like a forward proxy would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_fetches_follow_the_proxy_environment() {
    let upstream = Upstream::start().await;
    let k = keys();
    let proxy = JwksServer::start(200, jwks(&[&k.rsa])).await;
    let port = crate::support::free_port();
    let iss = "https://proxied.test/";
    let cfg = format!(
        "listen: 127.0.0.1:{port}\n{}",
        remote_config(
            &upstream,
            iss,
            "    jwks_uri: http://idp.invalid/.well-known/jwks.json",
            ""
        )
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, cfg).expect("write");
    let proxy_url = format!("http://{}", proxy.addr);
    let env = [("HTTP_PROXY", proxy_url.clone()), ("http_proxy", proxy_url)];
    let (mut child, addr) = crate::support::run_binary(&path, port, &env, false).await;
    let token = k.rsa.token(&claims(json!({"iss": iss})));
    let mut status = 0;
    for _ in 0..100 {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            drop(stream);
            status = crate::support::bearer_status(addr, "/api/private", &token).await;
            if status == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "keys fetched through HTTP_PROXY");
    assert!(proxy.hits() >= 1);
}

/// Issue 12: a failed unknown-`kid` refetch starts retries at once, and the
/// keys stop serving `jwks_max_stale` after the last successful fetch, even
/// though the periodic refresh is an hour away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refetch_starts_the_stale_clock() {
    let upstream = Upstream::start().await;
    let k = keys();
    let idp = JwksServer::start(200, jwks(&[&k.rsa])).await;
    let iss = "https://stale.test/";
    let cfg = remote_config(
        &upstream,
        iss,
        &format!("    jwks_uri: {}", idp.url()),
        "    jwks_refresh: 1h\n    jwks_max_stale: 3s",
    );
    let gw = Gateway::start(&cfg, &[]).await;
    let good = k.rsa.token(&claims(json!({"iss": iss})));
    assert!(
        until_status(&gw, &good, 200, Duration::from_secs(10))
            .await
            .is_some()
    );
    let loaded = Instant::now();
    idp.set(500, "down".into());
    // A token with a kid the set lacks: one refetch, which fails.
    let unknown = k.ec256.token(&claims(json!({"iss": iss})));
    assert_eq!(
        crate::support::bearer_status(gw.addr, "/api/private", &unknown).await,
        401
    );
    let dropped = until_status(&gw, &good, 503, Duration::from_secs(15)).await;
    assert!(
        dropped.is_some(),
        "keys must stop serving after jwks_max_stale"
    );
    let after = loaded.elapsed();
    eprintln!("stale: keys dropped {after:?} after the last good fetch (jwks_max_stale 3s)");
    assert!(
        after >= Duration::from_millis(2900),
        "not before jwks_max_stale: {after:?}"
    );
    assert!(
        idp.hits() >= 3,
        "retries with backoff: {} fetches",
        idp.hits()
    );
    // The IdP comes back: a retry picks the keys up again.
    idp.set(200, jwks(&[&k.rsa]));
    assert!(
        until_status(&gw, &good, 200, Duration::from_secs(15))
            .await
            .is_some()
    );
    gw.stop().await;
}
