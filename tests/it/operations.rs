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
            get(
                gw.addr,
                &format!("/api/items/{i}"),
                &[("Authorization", &bearer(&token))]
            )
            .await
            .status,
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
