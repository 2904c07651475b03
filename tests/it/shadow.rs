//! Shadow mode (issue 18, SPEC §4.7): on a shadow route a 401 or 403 is
//! reported and the request forwarded as if allowed — with identity
//! headers only from a verified token — while 400s, 404, 405 are answered
//! as always; counted, summarized at `/shadow`, flipped by a reload.

use std::time::Duration;

use serde_json::json;

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, Upstream, bearer, get, request};

fn config(upstream: &Upstream, mode: &str) -> String {
    format!(
        r#"admin_listen: "127.0.0.1:0"
upstream:
  url: "http://{}"
forward_auth:
  listen: "127.0.0.1:0"
  convention: nginx
identity:
  headers:
    X-Auth-Subject: sub
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
routes:
  - path: /api/rollout
    methods: [GET]
    scopes: [admin]
    mode: {mode}
  - path: /api/enforced
    scopes: [admin]
"#,
        upstream.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_reports_refusals_and_forwards() {
    let upstream = Upstream::start().await;
    let k = keys();
    let gw = Gateway::start(
        &config(&upstream, "shadow"),
        &[("jwks.json", &jwks(&[&k.rsa]))],
    )
    .await;
    let user = bearer(&k.rsa.token(&claims(json!({"scope": "read"}))));
    let admin = bearer(&k.rsa.token(&claims(json!({"scope": "admin"}))));
    let expired = bearer(&k.rsa.token(&claims(json!({"exp": 1000}))));

    // Would be 401: forwarded, no identity header (the client's removed).
    for auth in [None, Some(expired.as_str())] {
        let mut headers = vec![("X-Auth-Subject", "forged")];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        assert_eq!(get(gw.addr, "/api/rollout", &headers).await.status, 200);
        let seen = upstream.take();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].header("x-auth-subject"),
            None,
            "identity only from a verified token"
        );
    }
    // Would be 403: forwarded with the verified token's identity.
    assert_eq!(
        get(gw.addr, "/api/rollout", &[("Authorization", &user)])
            .await
            .status,
        200
    );
    assert_eq!(upstream.take()[0].header("x-auth-subject"), Some("user-1"));
    // Allowed anyway.
    assert_eq!(
        get(gw.addr, "/api/rollout", &[("Authorization", &admin)])
            .await
            .status,
        200
    );
    upstream.take();
    // Never shadowed: malformed paths, ambiguous credentials, 405.
    assert_eq!(get(gw.addr, "/api/rollout;x", &[]).await.status, 400);
    let two = request(
        gw.addr,
        "GET",
        "/api/rollout?access_token=x",
        &[("Authorization", &user), ("Authorization", &admin)],
    )
    .await;
    assert_eq!(two.status, 400);
    assert_eq!(
        request(gw.addr, "POST", "/api/rollout", &[]).await.status,
        405
    );
    assert!(
        upstream.take().is_empty(),
        "refusals that are not 401/403 still refuse"
    );
    // Another route is enforced as always.
    assert_eq!(get(gw.addr, "/api/enforced", &[]).await.status, 401);
    // Forward-auth answers 200 for a would-be 401.
    let fa = gw.forward_auth.expect("forward-auth");
    let answer = request(
        fa,
        "GET",
        "/auth",
        &[
            ("X-Original-URI", "/api/rollout"),
            ("X-Original-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-auth-subject"), Some(""));

    let metrics = gw.runtime.metrics.encode();
    for (would, n) in [("401", 3), ("403", 1), ("allow", 1)] {
        assert!(
            metrics.contains(&format!(
                r#"scopegate_shadow_decisions_total{{route="/api/rollout",would="{would}"}} {n}"#
            )),
            "{would}: {metrics}"
        );
    }
    let report = get(gw.admin.expect("admin"), "/shadow", &[]).await.json();
    assert_eq!(
        report["/api/rollout"],
        json!({"401": 3, "403": 1, "allow": 1})
    );

    // A reload switches the route to enforce without a restart.
    std::fs::write(gw.path(), config(&upstream, "enforce")).expect("write");
    let enforced =
        crate::support::wait_for_status(gw.addr, "/api/rollout", &[], 401, Duration::from_secs(5))
            .await;
    assert!(enforced.is_some(), "the reload flipped the mode");
    assert!(
        upstream
            .take()
            .iter()
            .all(|r| r.target != "/api/rollout" || r.header("x-auth-subject").is_none())
    );
    gw.stop().await;
}
