//! The gateway's own credentials toward upstreams (issue 13, SPEC §4.3),
//! against a real OpenID provider (oidc-provider, run by Node.js): the
//! injected token verifies against the provider's JWKS and carries the
//! configured audience and scope; one fetch however many requests; renewal
//! before expiry; the provider down at start and at renewal; an upstream
//! 401; a secret rotated through a file and a reload; static credentials;
//! named upstreams and host-bound routes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::idp::{self, Idp};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, Upstream, bearer, get};

const SECRET: &str = "s3cret-for-the-gateway-0123456789";
const RESOURCE: &str = "https://users.internal/";

/// Callers' tokens are verified as usual (issuer A); the upstreams get the
/// gateway's own credential.
fn config(upstreams: &str, routes: &str) -> String {
    format!(
        r#"admin_listen: "127.0.0.1:0"
upstreams:
{upstreams}issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
routes:
{routes}"#
    )
}

async fn gateway(cfg: &str, files: &[(&str, &str)]) -> Gateway {
    let k = keys();
    let mut all = vec![("jwks.json", jwks(&[&k.rsa]))];
    all.extend(files.iter().map(|(n, c)| (*n, (*c).to_owned())));
    let refs: Vec<(&str, &str)> = all.iter().map(|(n, c)| (*n, c.as_str())).collect();
    Gateway::start(cfg, &refs).await
}

fn caller() -> String {
    bearer(&keys().rsa.token(&claims(json!({"scope": "read:users"}))))
}

/// The token the upstream received in `header` (without `Bearer `).
fn injected(seen: &crate::support::Recorded, header: &str) -> String {
    let value = seen.header(header).expect("an injected credential");
    value.strip_prefix("Bearer ").unwrap_or(value).to_owned()
}

/// One upstream `api` with a client-credentials grant for client `gw`;
/// `endpoint` is its `token_url:` or `issuer:` line.
fn api_upstream(upstream: &Upstream, endpoint: &str) -> String {
    format!(
        "  api:\n    url: \"http://{}\"\n    credentials:\n      client_credentials:\n        {endpoint}\n        client_id: gw\n        client_secret_file: secret.txt\n        resource: \"{RESOURCE}\"\n",
        upstream.addr
    )
}

/// Waits until `path` answers 200 (the first token has arrived).
async fn served(gw: &Gateway, path: &str) -> Option<Duration> {
    crate::support::wait_for_status(gw.addr, path, &[], 200, Duration::from_secs(20)).await
}

async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_tokens_static_keys_and_host_routes() {
    if !idp::available() {
        return;
    }
    let provider = Idp::start(
        &json!([
            idp::client("gw-basic", SECRET, "client_secret_basic"),
            idp::client("gw-post", SECRET, "client_secret_post"),
        ]),
        300,
    )
    .await;
    let users = Upstream::start().await;
    let billing = Upstream::start().await;
    let legacy = Upstream::start().await;
    let upstreams = format!(
        r#"  users-api:
    url: "http://{}"
    credentials:
      client_credentials:
        issuer: "{}"
        client_id: gw-basic
        client_secret_file: secret.txt
        resource: "{RESOURCE}"
        scope: "read:users"
  billing:
    url: "http://{}"
    credentials:
      client_credentials:
        token_url: "{}"
        client_id: gw-post
        client_secret_file: billing-secret.txt
        auth_method: client_secret_post
        audience: "https://billing.internal/"
    inject_as: header:X-Service-Token
  legacy:
    url: "http://{}"
    credentials:
      header: {{ name: X-Api-Key, value_file: api-key.txt }}
"#,
        users.addr,
        provider.issuer(),
        billing.addr,
        provider.token_url(),
        legacy.addr
    );
    let routes = r#"  - path: /api/users/{*rest}
    upstream: users-api
    scopes: [read:users]
  - path: /api/billing
    upstream: billing
  - path: /api/legacy
    upstream: legacy
  - path: /api/legacy
    host: admin.example.com
    upstream: users-api
"#;
    let gw = gateway(
        &config(&upstreams, routes),
        &[
            ("secret.txt", &format!("{SECRET}\n")),
            ("billing-secret.txt", SECRET),
            ("api-key.txt", "legacy-key-42\n"),
        ],
    )
    .await;
    let caller = caller();

    // Fifty concurrent requests: one token request, every one served.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (addr, auth) = (gw.addr, caller.clone());
        tasks.push(tokio::spawn(async move {
            let path = format!("/api/users/{i}");
            loop {
                let r = get(addr, &path, &[("Authorization", &auth)]).await;
                if r.status != 503 {
                    return r.status;
                }
                // Before the first token arrives: 503 with Retry-After.
                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200);
    }
    assert_eq!(
        provider.token_requests().await,
        2,
        "one token per client-credentials upstream (users-api, billing), fetched at start and shared"
    );
    let seen = users.take();
    assert_eq!(seen.len(), 50);
    let token = injected(&seen[0], "authorization");
    assert!(
        seen.iter().all(|r| injected(r, "authorization") == token),
        "one shared token"
    );
    assert_ne!(
        format!("Bearer {token}"),
        caller,
        "the caller's token is replaced"
    );
    let claims = provider.verify(&token).await;
    assert_eq!(claims["aud"], RESOURCE, "{claims}");
    assert_eq!(claims["scope"], "read:users");
    assert_eq!(claims["client_id"], "gw-basic");
    assert_eq!(claims["iss"], provider.issuer());

    // client_secret_post, Auth0's audience, injected as another header;
    // the client's copy of that header is removed.
    let resp = get(
        gw.addr,
        "/api/billing",
        &[
            ("Authorization", &caller),
            ("X-Service-Token", "forged"),
            ("X_Service_Token", "forged"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200);
    let seen = billing.take();
    assert_eq!(seen[0].header_count("x-service-token"), 1);
    assert_eq!(seen[0].header("x_service_token"), None);
    let billing_token = injected(&seen[0], "x-service-token");
    let claims = provider.verify(&billing_token).await;
    assert_eq!(claims["aud"], "https://billing.internal/");
    assert_eq!(claims["client_id"], "gw-post");
    assert_eq!(
        seen[0].header("authorization"),
        Some(caller.as_str()),
        "header:NAME leaves the caller's Authorization"
    );

    // A static key from a file; the client's own copy never passes.
    let resp = get(
        gw.addr,
        "/api/legacy",
        &[("Authorization", &caller), ("X-Api-Key", "forged")],
    )
    .await;
    assert_eq!(resp.status, 200);
    let seen = legacy.take();
    assert_eq!(seen[0].header("x-api-key"), Some("legacy-key-42"));
    assert_eq!(seen[0].header_count("x-api-key"), 1);

    // A host-bound route wins for its host.
    let resp = crate::support::raw(
        gw.addr,
        format!("GET /api/legacy HTTP/1.1\r\nHost: ADMIN.example.com:8443\r\nAuthorization: {caller}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(legacy.take().is_empty());
    assert_eq!(users.take().len(), 1, "admin.example.com goes to users-api");

    // Operators see the upstreams, never a secret.
    let routes = gw.runtime.shared.load();
    let names: Vec<&str> = routes.config.upstreams.iter().map(|u| &*u.name).collect();
    assert_eq!(names, ["billing", "legacy", "users-api"], "by name");
    drop(routes);
    let metrics = gw.runtime.metrics.encode();
    assert!(
        metrics.contains(
            r#"scopegate_upstream_token_fetches_total{upstream="users-api",result="ok"} 1"#
        ),
        "{metrics}"
    );
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with(r#"scopegate_upstream_token_expiry_seconds{upstream="users-api"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("an expiry gauge");
    assert!(gauge > 200.0 && gauge <= 295.0, "{gauge}");
    let table = get(gw.admin.expect("admin"), "/routes", &[]).await.text();
    let routes: Value = serde_json::from_str(&table).expect("JSON");
    let legacy_routes: Vec<(&Value, &Value)> = routes
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["path"] == "/api/legacy")
        .map(|r| (&r["host"], &r["upstream"]))
        .collect();
    assert_eq!(
        legacy_routes,
        [
            (&Value::Null, &json!("legacy")),
            (&json!("admin.example.com"), &json!("users-api"))
        ]
    );
    for secret in [SECRET, "legacy-key-42", &token, &billing_token] {
        assert!(!metrics.contains(secret), "a secret in the metrics");
        assert!(!table.contains(secret), "a secret in /routes");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_before_expiry_under_load_is_one_fetch() {
    if !idp::available() {
        return;
    }
    // expires_in 12 s → used 7 s (5 s margin), renewed at 50% = 3.5 s.
    let provider = Idp::start(
        &json!([idp::client("gw", SECRET, "client_secret_basic")]),
        12,
    )
    .await;
    let upstream = Upstream::start().await;
    let cfg = config(
        &api_upstream(
            &upstream,
            &format!("token_url: \"{}\"", provider.token_url()),
        ),
        "  - path: /api/x\n    upstream: api\n    auth: none\n",
    );
    let gw = gateway(&cfg, &[("secret.txt", SECRET)]).await;
    assert!(served(&gw, "/api/x").await.is_some());
    let started = Instant::now();
    // Four clients in a loop for 6 s: across the renewal at 3.5 s.
    let mut loops = Vec::new();
    for _ in 0..4 {
        let addr = gw.addr;
        loops.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while started.elapsed() < Duration::from_secs(6) {
                statuses.push(get(addr, "/api/x", &[]).await.status);
            }
            statuses
        }));
    }
    let mut served = 0;
    for l in loops {
        let statuses = l.await.expect("join");
        assert!(
            statuses.iter().all(|s| *s == 200),
            "every request served across the renewal"
        );
        served += statuses.len();
    }
    assert_eq!(
        provider.token_requests().await,
        2,
        "the first token and exactly one renewal"
    );
    let tokens: std::collections::BTreeSet<String> = upstream
        .take()
        .iter()
        .map(|r| injected(r, "authorization"))
        .collect();
    assert_eq!(tokens.len(), 2, "the renewed token replaced the first");
    eprintln!("credentials: {served} requests over 6 s across a renewal, 2 token requests in all");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_at_start_then_at_renewal() {
    if !idp::available() {
        return;
    }
    let mut provider = Idp::later(12);
    let upstream = Upstream::start().await;
    let cfg = config(
        &api_upstream(&upstream, &format!("issuer: \"{}\"", provider.issuer())),
        "  - path: /api/x\n    upstream: api\n    auth: none\n",
    );
    let gw = gateway(&cfg, &[("secret.txt", SECRET)]).await;
    // Down at start: 503 with Retry-After, nothing forwarded.
    let resp = get(gw.addr, "/api/x", &[]).await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"], "temporarily_unavailable");
    let retry: u64 = resp
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(upstream.take().is_empty());
    // The provider comes up: served once a retry gets a token.
    provider
        .spawn(&json!([idp::client("gw", SECRET, "client_secret_basic")]))
        .await;
    let recovered = served(&gw, "/api/x").await;
    eprintln!("credentials: provider up after a cold start → first 200 after {recovered:?}");
    assert!(recovered.is_some());
    let fetched = Instant::now();
    // Down at renewal time: the valid token keeps serving until it
    // expires (7 s after it was requested), then 503.
    provider.stop();
    let mut last_ok = Duration::ZERO;
    let failed = loop {
        let status = get(gw.addr, "/api/x", &[]).await.status;
        if status == 200 {
            last_ok = fetched.elapsed();
        } else {
            break (status, fetched.elapsed());
        }
        assert!(
            fetched.elapsed() < Duration::from_secs(15),
            "the token was used past its expiry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "credentials: provider down at renewal → last 200 at {last_ok:?}, then {} at {:?} (token used 7 s)",
        failed.0, failed.1
    );
    assert_eq!(failed.0, 503);
    assert!(
        last_ok > Duration::from_secs(4),
        "served past the renewal point: {last_ok:?}"
    );
    assert!(
        failed.1 <= Duration::from_millis(7600),
        "never past expires_in − 5 s: {:?}",
        failed.1
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_401_drops_the_token_once_and_a_rotated_secret_follows_a_reload() {
    if !idp::available() {
        return;
    }
    let mut provider = Idp::start(
        &json!([idp::client("gw", SECRET, "client_secret_basic")]),
        300,
    )
    .await;
    let upstream = Upstream::start().await;
    let upstreams = api_upstream(
        &upstream,
        &format!("token_url: \"{}\"", provider.token_url()),
    );
    let cfg = config(
        &upstreams,
        "  - path: /api/{*rest}\n    upstream: api\n    auth: none\n",
    );
    let gw = gateway(&cfg, &[("secret.txt", SECRET)]).await;
    assert!(served(&gw, "/api/ok").await.is_some());
    let first = injected(&upstream.take()[0], "authorization");
    assert_eq!(provider.token_requests().await, 1);

    // Five concurrent 401s for the same token: one drop, one refetch; the
    // client gets 502 without the upstream's challenge.
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            get(addr, "/api/unauthorized", &[]).await
        }));
    }
    let mut refused = 0;
    for t in tasks {
        let resp = t.await.expect("join");
        // A request that started after the drop finds no token yet: 503.
        assert!(matches!(resp.status, 502 | 503), "{}", resp.status);
        if resp.status == 502 {
            refused += 1;
            assert_eq!(resp.json()["error"], "upstream_unauthorized");
            assert_eq!(
                resp.header("www-authenticate"),
                None,
                "the upstream's challenge is not passed on"
            );
        }
    }
    assert!(refused >= 1);
    assert!(
        until(Duration::from_secs(5), async || provider
            .token_requests()
            .await
            == 2)
        .await
        .is_some()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(provider.token_requests().await, 2, "dropped once per token");
    upstream.take();
    assert_eq!(get(gw.addr, "/api/ok", &[]).await.status, 200);
    let second = injected(&upstream.take()[0], "authorization");
    assert_ne!(first, second);

    // The secret rotates at the provider, then in the file: a reload keeps
    // the current token (no interruption) and renews with the new secret.
    let rotated = "rotated-secret-9876543210abcdef";
    provider.stop();
    provider
        .spawn(&json!([idp::client("gw", rotated, "client_secret_basic")]))
        .await;
    std::fs::write(gw.dir.path().join("secret.txt"), rotated).expect("write secret");
    // The file is named by the config: the watcher reloads it.
    assert!(
        until(Duration::from_secs(5), async || {
            gw.runtime
                .metrics
                .reloads(scopegate::telemetry::ReloadResult::Applied)
                >= 1
        })
        .await
        .is_some(),
        "a rewritten secret file reloads the config"
    );
    assert_eq!(
        get(gw.addr, "/api/ok", &[]).await.status,
        200,
        "the current token kept serving"
    );
    // Force a renewal: the upstream refuses the current token.
    let _ = get(gw.addr, "/api/unauthorized", &[]).await;
    assert!(
        until(Duration::from_secs(10), async || get(
            gw.addr,
            "/api/ok",
            &[]
        )
        .await
        .status
            == 200
            && provider.token_requests().await >= 1)
        .await
        .is_some()
    );
    let third = injected(upstream.take().last().expect("seen"), "authorization");
    assert_ne!(third, second);
    let claims: Value = provider.verify(&third).await;
    assert_eq!(claims["client_id"], "gw", "fetched with the rotated secret");
    assert_eq!(
        gw.runtime.metrics.upstream_token_fetches("api", false),
        0,
        "the old secret was never used against the new provider"
    );
    gw.stop().await;
}
