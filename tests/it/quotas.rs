//! Quotas keyed on the verified caller (issue 14, SPEC §4.5): per process,
//! and shared through a real Redis (Debian's redis-server) by two gateway
//! processes; every `on_error` mode with Redis killed mid-run; `SCRIPT
//! FLUSH` survived; the 429's headers; forward-auth enforcing the same.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::keys::{jwks, keys};
use crate::support::redis::Redis;
use crate::support::{Gateway, Upstream, bearer, get};

/// Routes with and without a quota; `store` is the `rate_limits` store lines.
fn config(upstream: &Upstream, store: &str, rate: &str, burst: u32, extra: &str) -> String {
    format!(
        r#"upstream:
  url: "http://{}"
{extra}rate_limits:
{store}  policies:
    per-client:
      key: client_id
      rate: {rate}
      burst: {burst}
    per-ip:
      key: ip
      rate: {rate}
      burst: {burst}
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
routes:
  - path: /api/search
    scopes: [search]
    rate_limit: per-client
  - path: /api/other
  - path: /public
    auth: none
    rate_limit: per-ip
"#,
        upstream.addr
    )
}

async fn gateway(cfg: &str) -> Gateway {
    Gateway::start(cfg, &[("jwks.json", &jwks(&[&keys().rsa]))]).await
}

fn token(client: &str) -> String {
    bearer(
        &keys()
            .rsa
            .token(&claims(json!({"client_id": client, "scope": "search"}))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_caller_buckets_headers_and_refusals() {
    let upstream = Upstream::start().await;
    let cors = "cors:\n  allowed_origins: [\"https://app.example.com\"]\nforward_auth:\n  listen: \"127.0.0.1:0\"\n  convention: nginx\n";
    let gw = gateway(&config(&upstream, "  store: local\n", "1/m", 3, cors)).await;
    let alice = token("alice");
    let ask = |path: &'static str, auth: String| {
        let addr = gw.addr;
        async move {
            get(
                addr,
                path,
                &[
                    ("Authorization", &auth),
                    ("Origin", "https://app.example.com"),
                ],
            )
            .await
        }
    };
    for remaining in [2, 1, 0] {
        let ok = ask("/api/search", alice.clone()).await;
        assert_eq!(ok.status, 200);
        // w: the seconds a spent burst takes to refill (3 × 60 s).
        assert_eq!(
            ok.header("ratelimit-policy"),
            Some(r#""per-client";q=3;w=180"#)
        );
        let rl = ok
            .header("ratelimit")
            .expect("RateLimit on an allowed response");
        assert!(
            rl.starts_with(&format!(r#""per-client";r={remaining};t="#)),
            "{rl}"
        );
    }
    let limited = ask("/api/search", alice.clone()).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"], "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((55..=60).contains(&retry), "one request a minute: {retry}");
    assert!(
        limited
            .header("ratelimit")
            .is_some_and(|v| v.contains(";r=0;"))
    );
    assert_eq!(
        limited.header("access-control-allow-origin"),
        Some("https://app.example.com"),
        "CORS on a 429"
    );
    assert_eq!(upstream.take().len(), 3, "a 429 never reaches the upstream");
    // Another client has its own bucket; a route without a policy is free.
    assert_eq!(ask("/api/search", token("bob")).await.status, 200);
    assert_eq!(ask("/api/other", alice.clone()).await.status, 200);
    // The policy first: a caller without the scope gets 403, not 429, and
    // it consumes nothing.
    let no_scope = bearer(&keys().rsa.token(&claims(json!({"client_id": "carol"}))));
    for _ in 0..5 {
        assert_eq!(ask("/api/search", no_scope.clone()).await.status, 403);
    }
    // A token without the key claim: 403 insufficient_claims, no scope=.
    let anonymous = bearer(&keys().rsa.token(&claims(json!({"scope": "search"}))));
    let missing = ask("/api/search", anonymous).await;
    assert_eq!(missing.status, 403);
    assert_eq!(missing.json()["error"], "insufficient_claims");
    // ip-keyed on an auth: none route.
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/public", &[]).await.status, 200);
    }
    assert_eq!(get(gw.addr, "/public", &[]).await.status, 429);
    // The forward-auth listener enforces the same buckets.
    let fa = gw.forward_auth.expect("forward-auth");
    let dave = token("dave");
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|_| {
        let dave = dave.clone();
        async move {
            crate::support::request(
                fa,
                "GET",
                "/auth",
                &[
                    ("X-Original-URI", "/api/search"),
                    ("X-Original-Method", "GET"),
                    ("Authorization", &dave),
                ],
            )
            .await
            .status
        }
    }))
    .await;
    let mut sorted = statuses.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [200, 200, 200, 429], "{statuses:?}");
    let metrics = gw.runtime.metrics.encode();
    assert!(
        metrics.contains(
            r#"scopegate_rate_limit_decisions_total{policy="per-client",result="limited"} 2"#
        ),
        "{metrics}"
    );
    gw.stop().await;
}

/// Two gateway processes (the real binary) sharing one Redis enforce one
/// quota; two with local stores each enforce their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_redis_quota() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&keys().rsa])).expect("write");
    let mut replicas = Vec::new();
    for (i, store) in [
        format!(
            "  store: redis\n  redis:\n    url: \"{}\"\n    timeout: 200ms\n",
            redis.url()
        ),
        format!(
            "  store: redis\n  redis:\n    url: \"{}\"\n    timeout: 200ms\n",
            redis.url()
        ),
        "  store: local\n".to_owned(),
        "  store: local\n".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let port = crate::support::free_port();
        let cfg = format!(
            "listen: \"127.0.0.1:{port}\"\n{}",
            config(&upstream, store, "10/s", 5, "")
        );
        let path = dir.path().join(format!("gateway-{i}.yaml"));
        std::fs::write(&path, cfg).expect("write");
        replicas.push(crate::support::run_binary(&path, port, &[], false).await);
    }
    let alice = token("alice");
    // Two clients hit both Redis replicas for 2 s.
    let started = Instant::now();
    let window = Duration::from_secs(2);
    let mut clients = Vec::new();
    for offset in 0..2 {
        let addrs = [replicas[0].1, replicas[1].1];
        let auth = alice.clone();
        clients.push(tokio::spawn(async move {
            let mut ok = 0;
            let mut i = offset;
            while started.elapsed() < window {
                if get(addrs[i % 2], "/api/search", &[("Authorization", &auth)])
                    .await
                    .status
                    == 200
                {
                    ok += 1;
                }
                i += 1;
            }
            ok
        }));
    }
    let mut passed = 0;
    for c in clients {
        passed += c.await.expect("join");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bound = 5.0 + 10.0 * elapsed;
    eprintln!(
        "quotas: two replicas sharing Redis let {passed} requests through in {elapsed:.2} s (rate 10/s, burst 5: at most {bound:.0})"
    );
    assert!(f64::from(passed) <= bound + 1.0, "{passed} > {bound}");
    assert!(
        f64::from(passed) >= 10.0 * 2.0 * 0.8,
        "the quota still serves its rate: {passed}"
    );
    // Keys live in Redis with a TTL: nothing is left behind.
    let keys_found = redis.cli(&["--scan", "--pattern", "scopegate:rl:*"]);
    let key = keys_found.lines().next().expect("a bucket in Redis");
    let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().expect("ms");
    assert!(
        ttl > 0 && ttl <= 2_000,
        "keys expire once refilled: {ttl} ms"
    );
    // Local stores: each replica has its own burst.
    let bob = token("bob");
    let mut local_ok = 0;
    for addr in [replicas[2].1, replicas[3].1] {
        for _ in 0..5 {
            if get(addr, "/api/search", &[("Authorization", &bob)])
                .await
                .status
                == 200
            {
                local_ok += 1;
            }
        }
    }
    assert_eq!(
        local_ok, 10,
        "per process: each replica allows its own burst"
    );
    for (mut child, _) in replicas {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Redis killed mid-run: `deny` answers 503 within the bounded wait,
/// `allow` lets through, `local` falls back to per-process buckets; all
/// use Redis again once it is back. `SCRIPT FLUSH` is survived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outages_follow_on_error_and_script_flush_is_survived() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let mut gateways = Vec::new();
    for on_error in ["deny", "allow", "local"] {
        let store = format!(
            "  store: redis\n  redis:\n    url: \"{}\"\n    timeout: 100ms\n    on_error: {on_error}\n",
            redis.url()
        );
        gateways.push((
            on_error,
            gateway(&config(&upstream, &store, "1/m", 2, "")).await,
        ));
    }
    // Redis up: the script runs; after SCRIPT FLUSH it is loaded again.
    for (mode, gw) in &gateways {
        assert_eq!(
            get(gw.addr, "/api/search", &[("Authorization", &token(mode))])
                .await
                .status,
            200
        );
    }
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
    for (mode, gw) in &gateways {
        let resp = get(gw.addr, "/api/search", &[("Authorization", &token(mode))]).await;
        assert_eq!(
            resp.status, 200,
            "{mode}: after SCRIPT FLUSH (NOSCRIPT path)"
        );
        assert!(
            resp.header("ratelimit")
                .is_some_and(|v| v.contains(";r=0;")),
            "{mode}: the same Redis bucket"
        );
    }
    redis.stop();
    for (mode, gw) in &gateways {
        let caller = token(&format!("{mode}-outage"));
        let mut statuses = Vec::new();
        let mut slowest = Duration::ZERO;
        for _ in 0..4 {
            let started = Instant::now();
            statuses.push(
                get(gw.addr, "/api/search", &[("Authorization", &caller)])
                    .await
                    .status,
            );
            slowest = slowest.max(started.elapsed());
        }
        eprintln!(
            "quotas: Redis down, on_error {mode}: {statuses:?}, slowest answer {slowest:?} (timeout 100ms)"
        );
        assert!(
            slowest < Duration::from_secs(2),
            "{mode}: a dead Redis stalled requests: {slowest:?}"
        );
        let want: &[u16] = match *mode {
            "deny" => &[503, 503, 503, 503],
            "allow" => &[200, 200, 200, 200],
            _ => &[200, 200, 429, 429],
        };
        assert_eq!(statuses, want, "{mode}");
    }
    for (mode, gw) in &gateways {
        let metrics = gw.runtime.metrics.encode();
        let fallbacks = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "scopegate_rate_limit_fallbacks_total{{on_error=\"{mode}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert!(
            fallbacks.is_some_and(|n| n >= 4.0),
            "{mode}: fallbacks counted: {metrics}"
        );
        assert!(
            metrics.contains("scopegate_redis_errors_total"),
            "{metrics}"
        );
        assert!(metrics.contains("scopegate_redis_duration_seconds_bucket"));
    }
    let deny = &gateways[0].1;
    let refused = get(deny.addr, "/api/search", &[("Authorization", &token("x"))]).await;
    assert_eq!(refused.json()["error"], "temporarily_unavailable");
    assert!(refused.header("retry-after").is_some());
    // Redis is back: the gateways reconnect (backoff at most 5 s).
    redis.spawn().await;
    for (mode, gw) in &gateways {
        let caller = token(&format!("{mode}-back"));
        let back = crate::support::wait_for_status(
            gw.addr,
            "/api/search",
            &[("Authorization", &caller)],
            200,
            Duration::from_secs(15),
        )
        .await;
        eprintln!("quotas: Redis back, on_error {mode}: served again after {back:?}");
        assert!(back.is_some(), "{mode}: never recovered");
    }
    assert!(
        !redis
            .cli(&["--scan", "--pattern", "scopegate:rl:*"])
            .trim()
            .is_empty(),
        "the buckets are in Redis again"
    );
    for (_, gw) in gateways {
        gw.stop().await;
    }
}
