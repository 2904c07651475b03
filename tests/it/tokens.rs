//! Key sources other than a JWKS file, token sources other than the header,
//! and the optional token rules (`require_typ`, `max_token_age`).

use serde_json::{Value, json};

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::keys::{TestKey, jwks, keys};
use crate::support::{Gateway, JwksServer, Upstream, bearer, get, now};

fn single_issuer(upstream: &Upstream, issuer_extra: &str, top_extra: &str) -> String {
    format!(
        r#"
upstream:
  url: "http://{}"
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
{issuer_extra}
routes:
  - path: /api/private
{top_extra}"#,
        upstream.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_file_verifies_whatever_the_kid() {
    let upstream = Upstream::start().await;
    let k = keys();
    for (key, alg) in [
        (&k.rsa, "RS256"),
        (&k.ec256, "ES256"),
        (&k.ec384, "ES384"),
        (&k.ed, "EdDSA"),
    ] {
        let cfg = single_issuer(
            &upstream,
            &format!("    public_key_file: key.pem\n    algorithms: [{alg}]"),
            "",
        );
        let gw = Gateway::start(&cfg, &[("key.pem", &key.public_pem())]).await;
        let token = key.sign(&json!({"alg": alg, "kid": "anything"}), &claims(json!({})));
        assert_eq!(
            crate::support::bearer_status(gw.addr, "/api/private", &token).await,
            200,
            "{alg}"
        );
        let other = k
            .rsa_other
            .sign(&json!({"alg": "RS256"}), &claims(json!({})));
        assert_eq!(
            crate::support::bearer_status(gw.addr, "/api/private", &other).await,
            401,
            "{alg}"
        );
        gw.stop().await;
    }
    assert_eq!(upstream.requests().len(), 4);
}

/// Runs the real binary (the secret must be in its environment, and the
/// test process cannot set variables safely) and checks it end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_secret_from_the_environment() {
    let upstream = Upstream::start().await;
    let secret = "0123456789abcdef0123456789abcdef-hs256-and-hs384-need-48-bytes";
    let port = crate::support::free_port();
    let cfg = single_issuer(
        &upstream,
        "    hs256_secret_env: SCOPEGATE_TEST_HS_SECRET\n    algorithms: [HS256, HS384]",
        &format!("listen: 127.0.0.1:{port}\n"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, cfg).expect("write");
    let (child, addr) = crate::support::run_binary(
        &path,
        port,
        &[("SCOPEGATE_TEST_HS_SECRET", secret.to_owned())],
        true,
    )
    .await;
    let key = TestKey::hmac("any", secret.as_bytes());
    for alg in ["HS256", "HS384"] {
        let token = key.sign(&json!({"alg": alg}), &claims(json!({})));
        assert_eq!(
            crate::support::bearer_status(addr, "/api/private", &token).await,
            200,
            "{alg}"
        );
    }
    let wrong = TestKey::hmac("any", b"another secret of enough length!!!!!!!!!!!!!!!!!");
    let token = wrong.sign(&json!({"alg": "HS256"}), &claims(json!({})));
    let resp = get(addr, "/api/private", &[("Authorization", &bearer(&token))]).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error_description"], "signature invalid");
    let token = wrong.sign(&json!({"alg": "HS512"}), &claims(json!({})));
    assert_eq!(
        get(addr, "/api/private", &[("Authorization", &bearer(&token))])
            .await
            .json()["error_description"],
        "algorithm not allowed"
    );
    // SIGTERM, not SIGKILL: the buffered log writer flushes on a clean exit.
    crate::support::signal(&child, "-TERM");
    let output = child.wait_with_output().expect("wait");
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(!logs.contains(secret), "the secret must never be logged");
    assert!(!logs.contains(&token), "tokens must never be logged");
    assert!(
        logs.contains("/api/private"),
        "one line per request: {logs}"
    );
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_typ_and_max_token_age() {
    let upstream = Upstream::start().await;
    let k = keys();
    let cfg = single_issuer(
        &upstream,
        "    jwks_file: jwks.json\n    require_typ: at+jwt\n    max_token_age: 1h\n    clock_skew: 0s",
        "",
    );
    let gw = Gateway::start(&cfg, &[("jwks.json", &jwks(&[&k.rsa]))]).await;
    // RFC 9068 §2.2: an at+jwt carries client_id and jti too.
    let c = claims(json!({"client_id": "app-1", "jti": "j-1"}));
    let ok = [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/AT+JWT",
    ];
    for typ in ok {
        let t = k
            .rsa
            .sign(&json!({"alg": "RS256", "kid": "rsa-1", "typ": typ}), &c);
        assert_eq!(
            crate::support::bearer_status(gw.addr, "/api/private", &t).await,
            200,
            "{typ}"
        );
    }
    for header in [
        json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}),
        json!({"alg": "RS256", "kid": "rsa-1"}),
    ] {
        let t = k.rsa.sign(&header, &c);
        let resp = get(gw.addr, "/api/private", &[("Authorization", &bearer(&t))]).await;
        assert_eq!(
            resp.json()["error_description"],
            "token type not allowed",
            "{header}"
        );
    }
    let typ = json!({"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"});
    // Strict mode: every claim RFC 9068 requires, with its type.
    for (missing, why) in [
        (json!({"jti": "j"}), "client_id"),
        (json!({"client_id": "a"}), "jti"),
        (json!({"client_id": "a", "jti": "j", "sub": null}), "sub"),
    ] {
        let t = k.rsa.sign(&typ, &claims(missing));
        let resp = get(gw.addr, "/api/private", &[("Authorization", &bearer(&t))]).await;
        assert_eq!(resp.status, 401, "without {why}");
        assert_eq!(
            resp.json()["error_description"],
            "a claim RFC 9068 requires is missing",
            "without {why}"
        );
    }
    let wrong_type = k
        .rsa
        .sign(&typ, &claims(json!({"client_id": 7, "jti": "j"})));
    assert_eq!(
        get(
            gw.addr,
            "/api/private",
            &[("Authorization", &bearer(&wrong_type))]
        )
        .await
        .json()["error_description"],
        "sub, client_id or jti is not a string"
    );
    let c = c.as_object().cloned().expect("object");
    let with = |extra: Value| {
        let mut all = c.clone();
        all.extend(extra.as_object().cloned().expect("object"));
        Value::Object(all)
    };
    let old = k.rsa.sign(&typ, &with(json!({"iat": now() - 7200})));
    assert_eq!(
        get(gw.addr, "/api/private", &[("Authorization", &bearer(&old))])
            .await
            .json()["error_description"],
        "token too old"
    );
    let mut no_iat = with(json!({}));
    no_iat.as_object_mut().expect("object").remove("iat");
    let no_iat = k.rsa.sign(&typ, &no_iat);
    assert_eq!(
        get(
            gw.addr,
            "/api/private",
            &[("Authorization", &bearer(&no_iat))]
        )
        .await
        .json()["error_description"],
        "issue time missing"
    );
    gw.stop().await;
    assert_eq!(upstream.requests().len(), ok.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_and_query_sources_and_ambiguity() {
    let upstream = Upstream::start().await;
    let k = keys();
    let cfg = single_issuer(
        &upstream,
        "    jwks_file: jwks.json",
        "tokens:\n  from: [header, \"cookie:at\", \"query:access_token\"]\n",
    );
    let gw = Gateway::start(&cfg, &[("jwks.json", &jwks(&[&k.rsa]))]).await;
    let t = k.rsa.token(&claims(json!({})));
    assert_eq!(
        get(
            gw.addr,
            "/api/private",
            &[("Cookie", &format!("x=1; at={t}"))]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(gw.addr, &format!("/api/private?access_token={t}"), &[])
            .await
            .status,
        200
    );
    let both = get(
        gw.addr,
        &format!("/api/private?access_token={t}"),
        &[("Authorization", &bearer(&t))],
    )
    .await;
    assert_eq!(both.status, 400);
    assert_eq!(both.json()["error"], "invalid_request");
    assert!(
        both.header("www-authenticate")
            .is_some_and(|v| v.contains(r#"error="invalid_request""#))
    );
    gw.stop().await;
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_jwks_is_fetched_and_503_until_then() {
    let upstream = Upstream::start().await;
    let k = keys();
    // The JWKS fails at first: the gateway serves at once, with 503s.
    let idp = JwksServer::start(500, "oops".into()).await;
    let cfg = single_issuer(&upstream, &format!("    jwks_uri: {}", idp.url()), "");
    let gw = Gateway::start(&cfg, &[]).await;
    let t = k.rsa.token(&claims(json!({})));
    let resp = get(gw.addr, "/api/private", &[("Authorization", &bearer(&t))]).await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert_eq!(resp.json()["error"], "temporarily_unavailable");
    // Once the IdP answers (with an oct key that must be ignored), keys load.
    let mut doc: serde_json::Value = serde_json::from_str(&jwks(&[&k.rsa])).expect("json");
    doc["keys"]
        .as_array_mut()
        .expect("keys")
        .push(json!({"kty": "oct", "kid": "rsa-1", "k": "c2VjcmV0"}));
    idp.set(200, doc.to_string());
    let mut status = 0;
    for _ in 0..50 {
        status = crate::support::bearer_status(gw.addr, "/api/private", &t).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200);
    gw.stop().await;
    assert_eq!(upstream.requests().len(), 1);
}

/// Token rules as RFC 7519, RFC 9068, RFC 9449 / 8705, RFC 9864 and the
/// Auth0 SDK's own test cases define them (issue 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_semantics_as_the_rfcs_and_the_auth0_sdk_define_them() {
    let upstream = Upstream::start().await;
    let k = keys();
    // A JWKS as oauth2-mock-server and newer oidc-provider publish it:
    // RFC 9864's fully-specified `Ed25519` as the key's `alg`.
    let mut ed = k.ed.jwk();
    ed["alg"] = json!("Ed25519");
    let set = json!({"keys": [k.rsa.jwk(), ed]}).to_string();
    let cfg = single_issuer(
        &upstream,
        "    jwks_file: jwks.json\n    algorithms: [RS256, EdDSA]\n    clock_skew: 0s",
        "  - path: /api/roles\n    claims:\n      - { claim: roles, includes: [admin] }",
    );
    let gw = Gateway::start(&cfg, &[("jwks.json", &set)]).await;
    let status = |token: String| async move {
        let resp = get(
            gw.addr,
            "/api/private",
            &[("Authorization", &bearer(&token))],
        )
        .await;
        let why = if resp.status == 200 {
            Value::Null
        } else {
            resp.json()["error_description"].clone()
        };
        (resp.status, why)
    };
    // RFC 7519 §4.1.4: on `exp` the token is expired (skew 0).
    let (code, why) = status(k.rsa.token(&claims(json!({"exp": now()})))).await;
    assert_eq!((code, why.as_str()), (401, Some("token expired")));
    // A present sub, client_id or jti must be a string.
    for bad in [
        json!({"sub": {"a": 1}}),
        json!({"sub": 7}),
        json!({"client_id": ["x"]}),
        json!({"jti": 1}),
    ] {
        let (code, why) = status(k.rsa.token(&claims(bad.clone()))).await;
        assert_eq!(
            (code, why.as_str()),
            (401, Some("sub, client_id or jti is not a string")),
            "{bad}"
        );
    }
    // Bound tokens cannot be used as plain Bearer tokens (SPEC §4.8): a
    // DPoP-bound one needs its proof, a certificate-bound one its
    // certificate, and a binding the gateway cannot check is refused.
    for (cnf, description) in [
        (
            json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
            "a DPoP-bound token must be sent with the DPoP scheme and a proof",
        ),
        (
            json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
            "token is bound to a client certificate this connection did not present",
        ),
        (
            json!({}),
            "token's cnf names no binding the gateway can verify",
        ),
        (
            json!({"jwk": {"kty": "EC"}}),
            "token's cnf names no binding the gateway can verify",
        ),
        (
            json!({"jkt": 7}),
            "token's cnf names no binding the gateway can verify",
        ),
    ] {
        let (code, why) = status(k.rsa.token(&claims(json!({"cnf": cnf})))).await;
        assert_eq!((code, why.as_str()), (401, Some(description)), "{cnf}");
    }
    // `crit` is never trusted, even null.
    let crit = k.rsa.sign(
        &json!({"alg": "RS256", "kid": "rsa-1", "crit": null}),
        &claims(json!({})),
    );
    assert_eq!(status(crit).await.0, 401);
    // RFC 9864: `Ed25519` in the token header and in the JWK.
    let fully = k.ed.sign(
        &json!({"alg": "Ed25519", "kid": "ed-1"}),
        &claims(json!({})),
    );
    assert_eq!(status(fully).await.0, 200, "alg Ed25519");
    assert_eq!(
        status(k.ed.token(&claims(json!({})))).await.0,
        200,
        "alg EdDSA"
    );
    // `includes` reads a string claim as a space-separated list.
    for (roles, want) in [
        (json!("user admin"), 200),
        (json!("admin"), 200),
        (json!(["user", "admin"]), 200),
        (json!("administrator"), 403),
        (json!("user"), 403),
    ] {
        let t = k.rsa.token(&claims(json!({"roles": roles})));
        let resp = get(gw.addr, "/api/roles", &[("Authorization", &bearer(&t))]).await;
        assert_eq!(resp.status, want, "roles {roles}");
    }
    let seen = upstream.requests();
    assert!(
        seen.iter().all(|r| r.header("authorization").is_some()),
        "only allowed requests reached the upstream: {seen:?}"
    );
    assert_eq!(
        seen.len(),
        2 + 3,
        "two Ed25519 tokens and three role matches"
    );
    gw.stop().await;
}
