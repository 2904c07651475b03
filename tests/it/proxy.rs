//! The gateway over real sockets: what is allowed reaches the upstream with
//! the normalized path and the identity headers; what is refused never does.

use serde_json::{Value, json};

use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, Upstream, bearer, get, now, raw, request};

pub const ISS_A: &str = "https://issuer-a.test/";
pub const ISS_B: &str = "https://issuer-b.test/";
pub const AUD: &str = "https://api.test";

pub fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
listen: "127.0.0.1:0"
upstream:
  url: "http://{upstream}"
  request_timeout: 1s
realm: api
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}", "https://other.test"]
    jwks_file: jwks-a.json
    algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]
    clock_skew: 30s
  - issuer: "{ISS_B}"
    audiences: ["{AUD}"]
    jwks_file: jwks-b.json
    algorithms: [RS256]
identity:
  headers:
    X-Auth-Subject: sub
    X-Auth-Scopes: scopes
    X-Auth-Org: org_id
routes:
  - path: /api/public
    methods: [GET]
    auth: none
  - path: /api/private
  - path: /api/private-scoped
    methods: [GET]
    scopes: [read:messages]
  - path: /api/messages/{{id}}
    methods: [PUT, DELETE]
    any_scope: [write:messages, admin]
    claims:
      - {{ claim: org_id, equals: acme }}
  - path: /assets/{{*rest}}
    auth: none
{extra}"#
    )
}

pub async fn start(extra: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::start().await;
    let k = keys();
    let a = jwks(&[&k.rsa, &k.ec256, &k.ec384, &k.ed]);
    let b = jwks(&[&k.rsa_other]);
    let gw = Gateway::start(
        &config(&upstream.addr.to_string(), extra),
        &[("jwks-a.json", &a), ("jwks-b.json", &b)],
    )
    .await;
    (upstream, gw)
}

/// Claims of a valid token from issuer A, with `extra` merged in.
pub fn claims(extra: Value) -> Value {
    let mut c =
        json!({"iss": ISS_A, "aud": AUD, "sub": "user-1", "iat": now(), "exp": now() + 600});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_request_is_forwarded_normalized_with_identity() {
    let (upstream, gw) = start("").await;
    let token = keys().rsa.token(&claims(
        json!({"scope": "read:messages profile", "org_id": "acme"}),
    ));
    let auth = bearer(&token);
    let resp = get(
        gw.addr,
        "/api/public/..//./private-scoped?q=a%2Fb&x",
        &[
            ("Authorization", &auth),
            ("X-Auth-Subject", "admin"),
            ("x-auth-scopes", "admin"),
            ("X-Forwarded-For", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-upstream"), Some("yes"));
    // Hop-by-hop headers of the response (and what its Connection names) are removed.
    assert_eq!(resp.header("x-upstream-secret"), None);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.target, "/api/private-scoped?q=a%2Fb&x");
    assert_eq!(r.header_count("x-auth-subject"), 1);
    assert_eq!(r.header("x-auth-subject"), Some("user-1"));
    assert_eq!(r.header("x-auth-scopes"), Some("profile read:messages"));
    assert_eq!(r.header("x-auth-org"), Some("acme"));
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("host"), Some("gateway.test"));
    // The gateway's own, once each: the client's are not forwarded beside them.
    for name in ["host", "x-forwarded-for", "x-forwarded-proto"] {
        assert_eq!(r.header_count(name), 1, "{name}");
    }
    assert_eq!(
        r.header("authorization"),
        Some(auth.as_str()),
        "the token is forwarded untouched by default"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signature_algorithm_is_accepted_with_its_key() {
    let (upstream, gw) = start("").await;
    let k = keys();
    let c = claims(json!({}));
    let cases = [
        (&k.rsa, "RS256"),
        (&k.rsa, "RS384"),
        (&k.rsa, "RS512"),
        (&k.rsa, "PS256"),
        (&k.rsa, "PS384"),
        (&k.rsa, "PS512"),
        (&k.ec256, "ES256"),
        (&k.ec384, "ES384"),
        (&k.ed, "EdDSA"),
    ];
    for (key, alg) in cases {
        let token = key.sign(&json!({"alg": alg, "kid": key.kid}), &c);
        let resp = get(
            gw.addr,
            "/api/private",
            &[("Authorization", &bearer(&token))],
        )
        .await;
        assert_eq!(resp.status, 200, "{alg}: {}", resp.text());
    }
    assert_eq!(upstream.requests().len(), cases.len());
    gw.stop().await;
}

struct Case {
    name: &'static str,
    method: &'static str,
    target: String,
    headers: Vec<(&'static str, String)>,
    status: u16,
    error: &'static str,
    challenge: Option<String>,
}

fn case(
    name: &'static str,
    target: &str,
    token: Option<String>,
    status: u16,
    error: &'static str,
) -> Case {
    let headers = token
        .map(|t| vec![("Authorization", bearer(&t))])
        .unwrap_or_default();
    Case {
        name,
        method: "GET",
        target: target.into(),
        headers,
        status,
        error,
        challenge: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_never_reach_the_upstream() {
    let (upstream, gw) = start("").await;
    let k = keys();
    let good = |extra: Value| Some(k.rsa.token(&claims(extra)));
    let scoped = "/api/private-scoped";
    let invalid = |why: &str| {
        Some(format!(
            r#"Bearer realm="api", error="invalid_token", error_description="{why}""#
        ))
    };
    let mut cases = vec![
        // Path normalization (SPEC §Path normalization step 1 and 4).
        case("encoded slash", "/api/public%2F..%2Fprivate", None, 400, "invalid_request"),
        case("encoded slash lower", "/api/public%2f..%2fprivate", None, 400, "invalid_request"),
        case("encoded backslash", "/api/public%5c..%5cprivate", None, 400, "invalid_request"),
        case("raw backslash", "/api/public\\..\\private", None, 400, "invalid_request"),
        case("encoded NUL", "/api/private%00", None, 400, "invalid_request"),
        case("bad percent", "/api/priv%zzate", None, 400, "invalid_request"),
        case("truncated percent", "/api/private%2", None, 400, "invalid_request"),
        case("dot-dot-semicolon", "/api/public/..;/private", None, 400, "invalid_request"),
        case("encoded dot-dot-semicolon", "/api/public/%2e%2e;/private", None, 400, "invalid_request"),
        case("dot-dot encoded semicolon", "/api/public/..%3B/private", None, 400, "invalid_request"),
        case("above root", "/../api/public", None, 400, "invalid_request"),
        case("encoded above root", "/%2e%2e/api/public", None, 400, "invalid_request"),
        case("asterisk form", "*", None, 400, "invalid_request"),
        // Routing.
        case("no route", "/nothing", None, 404, "not_found"),
        case("trailing slash is another path", "/api/private/", None, 404, "not_found"),
        case("case-sensitive", "/API/private", None, 404, "not_found"),
        case("catch-all needs a segment", "/assets/", None, 404, "not_found"),
        case("traversal to a closed route", "/api/public/../private", None, 401, "unauthorized"),
        // Tokens.
        case("no token", scoped, None, 401, "unauthorized"),
        case("expired", scoped, good(json!({"scope": "read:messages", "exp": now() - 120})), 401, "invalid_token"),
        case("exp missing", scoped, good(json!({"scope": "read:messages", "exp": null})), 401, "invalid_token"),
        case("exp a string", scoped, good(json!({"scope": "read:messages", "exp": "9999999999"})), 401, "invalid_token"),
        case("nbf beyond skew", scoped, good(json!({"scope": "read:messages", "nbf": now() + 300})), 401, "invalid_token"),
        case("nbf a string", scoped, good(json!({"scope": "read:messages", "nbf": "0"})), 401, "invalid_token"),
        case("iat beyond skew", scoped, good(json!({"scope": "read:messages", "iat": now() + 300})), 401, "invalid_token"),
        case("aud mismatch", scoped, good(json!({"scope": "read:messages", "aud": "https://evil.test"})), 401, "invalid_token"),
        case("aud array mismatch", scoped, good(json!({"scope": "read:messages", "aud": ["a", "b"]})), 401, "invalid_token"),
        case("aud missing", scoped, good(json!({"scope": "read:messages", "aud": null})), 401, "invalid_token"),
        case("unknown issuer", scoped, good(json!({"scope": "read:messages", "iss": "https://evil.test/"})), 401, "invalid_token"),
        case("iss not a string", scoped, good(json!({"scope": "read:messages", "iss": ["https://issuer-a.test/"]})), 401, "invalid_token"),
        case("iss missing", scoped, good(json!({"scope": "read:messages", "iss": null})), 401, "invalid_token"),
        case("not base64url", scoped, Some("e30.e30.ab+c/d".into()), 401, "invalid_token"),
        case("not token68", scoped, Some("e30.e30.*^%".into()), 400, "invalid_request"),
        case("two segments", scoped, Some("eyJhbGciOiJSUzI1NiJ9.e30".into()), 401, "invalid_token"),
        case("garbage", scoped, Some("abc".into()), 401, "invalid_token"),
        // Scopes: exact match, never substring.
        case("scope missing", scoped, good(json!({"scope": "profile"})), 403, "insufficient_scope"),
        case("scope prefix", scoped, good(json!({"scope": "read:messages2 read"})), 403, "insufficient_scope"),
        // 405.
        Case { name: "method not allowed", method: "POST", target: scoped.into(), headers: vec![], status: 405, error: "method_not_allowed", challenge: None },
        Case { name: "DELETE public", method: "DELETE", target: "/api/public".into(), headers: vec![], status: 405, error: "method_not_allowed", challenge: None },
        // Credentials.
        Case { name: "basic is no token", method: "GET", target: scoped.into(), headers: vec![("Authorization", "Basic dXNlcjpwYXNz".into())], status: 401, error: "unauthorized", challenge: Some(r#"Bearer realm="api""#.into()) },
        Case { name: "bearer without token", method: "GET", target: scoped.into(), headers: vec![("Authorization", "Bearer".into())], status: 400, error: "invalid_request", challenge: None },
        Case { name: "bearer two words", method: "GET", target: scoped.into(), headers: vec![("Authorization", "Bearer a b".into())], status: 400, error: "invalid_request", challenge: None },
        Case { name: "two authorization headers", method: "GET", target: scoped.into(), headers: vec![("Authorization", bearer(&k.rsa.token(&claims(json!({"scope": "read:messages"}))))), ("Authorization", "Bearer x".into())], status: 400, error: "invalid_request", challenge: None },
        // Claims rules on {id}: right scope, wrong org.
        Case { name: "claim mismatch", method: "PUT", target: "/api/messages/7".into(), headers: vec![("Authorization", bearer(&k.rsa.token(&claims(json!({"scope": "admin", "org_id": "other"})))))], status: 403, error: "insufficient_scope", challenge: Some(r#"Bearer realm="api", error="insufficient_scope", error_description="claim org_id does not match""#.into()) },
        Case { name: "any_scope none", method: "DELETE", target: "/api/messages/7".into(), headers: vec![("Authorization", bearer(&k.rsa.token(&claims(json!({"scope": "read:messages", "org_id": "acme"})))))], status: 403, error: "insufficient_scope", challenge: None },
    ];
    let challenges = [
        ("no token", Some(r#"Bearer realm="api""#.to_owned())),
        ("expired", invalid("token expired")),
        ("aud mismatch", invalid("audience not allowed")),
        ("scope missing", Some(r#"Bearer realm="api", error="insufficient_scope", error_description="a required scope is missing", scope="read:messages""#.to_owned())),
    ];
    for (name, challenge) in challenges {
        let c = cases
            .iter_mut()
            .find(|c| c.name == name)
            .expect("case exists");
        c.challenge = challenge;
    }
    for c in &cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let resp = request(gw.addr, c.method, &c.target, &headers).await;
        assert_eq!(resp.status, c.status, "{}: {}", c.name, resp.text());
        let body = resp.json();
        assert_eq!(body["error"], c.error, "{}", c.name);
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{}",
            c.name
        );
        if let Some(challenge) = &c.challenge {
            assert_eq!(
                resp.header("www-authenticate"),
                Some(challenge.as_str()),
                "{}",
                c.name
            );
        }
        for (_, v) in &c.headers {
            if let Some(token) = v.strip_prefix("Bearer ") {
                assert!(
                    !resp.text().contains(token),
                    "{}: the token must never be echoed",
                    c.name
                );
            }
        }
        if c.status == 405 {
            assert!(resp.header("allow").is_some(), "{}", c.name);
        }
    }
    assert!(
        upstream.requests().is_empty(),
        "refused requests reached the upstream: {:?}",
        upstream.requests()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_refused() {
    let (upstream, gw) = start("").await;
    let k = keys();
    let c = claims(json!({"scope": "read:messages"}));
    let pem = k.rsa.public_pem();
    let hmac_with_pem = crate::support::keys::TestKey::hmac("rsa-1", pem.as_bytes());
    let b64 = crate::support::keys::b64;
    let none_tokens: Vec<String> = ["none", "NONE", "None", "nOnE"]
        .iter()
        .map(|alg| {
            format!(
                "{}.{}.",
                b64(json!({"alg": alg}).to_string().as_bytes()),
                b64(c.to_string().as_bytes())
            )
        })
        .collect();
    let mut hostile: Vec<(&str, String, &str)> = vec![
        // Algorithm confusion: the RSA public key used as an HMAC secret.
        (
            "alg confusion",
            hmac_with_pem.sign(&json!({"alg": "HS256", "kid": "rsa-1"}), &c),
            "algorithm not allowed",
        ),
        // The right issuer, a key it does not have.
        (
            "wrong kid",
            k.rsa.sign(&json!({"alg": "RS256", "kid": "nope"}), &c),
            "unknown key",
        ),
        // Issuer A's claims signed by issuer B's key (kid of A).
        (
            "cross-issuer key",
            k.rsa_other
                .sign(&json!({"alg": "RS256", "kid": "rsa-1"}), &c),
            "signature invalid",
        ),
        // Issuer B's token signed with issuer A's key (kid of B).
        (
            "key of another issuer",
            k.rsa.sign(
                &json!({"alg": "RS256", "kid": "rsa-other"}),
                &claims(json!({"iss": ISS_B})),
            ),
            "signature invalid",
        ),
        // alg does not fit the key type (ES256 header, RSA kid).
        (
            "alg/key mismatch",
            k.ec256.sign(&json!({"alg": "ES256", "kid": "rsa-1"}), &c),
            "unknown key",
        ),
        // ES384 signature presented as ES256 on the P-384 key.
        (
            "curve mismatch",
            k.ec384.sign(&json!({"alg": "ES256", "kid": "ec-384"}), &c),
            "unknown key",
        ),
        // Issuer B does not allow PS256.
        (
            "alg not allowed for issuer",
            k.rsa_other.sign(
                &json!({"alg": "PS256", "kid": "rsa-other"}),
                &claims(json!({"iss": ISS_B})),
            ),
            "algorithm not allowed",
        ),
        (
            "embedded jwk",
            k.rsa.sign(
                &json!({"alg": "RS256", "kid": "rsa-1", "jwk": k.rsa.jwk()}),
                &c,
            ),
            "token header carries a parameter that is never trusted",
        ),
        (
            "jku",
            k.rsa.sign(
                &json!({"alg": "RS256", "kid": "rsa-1", "jku": "http://127.0.0.1:1/jwks"}),
                &c,
            ),
            "token header carries a parameter that is never trusted",
        ),
        (
            "x5u",
            k.rsa.sign(
                &json!({"alg": "RS256", "kid": "rsa-1", "x5u": "http://127.0.0.1:1/x"}),
                &c,
            ),
            "token header carries a parameter that is never trusted",
        ),
        (
            "crit",
            k.rsa.sign(
                &json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}),
                &c,
            ),
            "token header carries a parameter that is never trusted",
        ),
        (
            "oversize",
            k.rsa.token(&claims(
                json!({"scope": "read:messages", "pad": "x".repeat(9000)}),
            )),
            "token too large",
        ),
    ];
    // ECDSA r = s = 0 (the "psychic signature").
    let ec_input = format!(
        "{}.{}",
        b64(json!({"alg": "ES256", "kid": "ec-256"})
            .to_string()
            .as_bytes()),
        b64(c.to_string().as_bytes())
    );
    hostile.push((
        "ecdsa zero",
        format!("{ec_input}.{}", b64(&[0u8; 64])),
        "signature invalid",
    ));
    // A valid signature with the payload swapped afterwards.
    let valid = k.rsa.token(&c);
    let parts: Vec<&str> = valid.split('.').collect();
    let forged = claims(json!({"scope": "read:messages admin"}));
    hostile.push((
        "payload swapped",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(forged.to_string().as_bytes()),
            parts[2]
        ),
        "signature invalid",
    ));
    for t in &none_tokens {
        hostile.push(("alg none", t.clone(), ""));
    }
    for (name, token, description) in &hostile {
        let resp = get(
            gw.addr,
            "/api/private-scoped",
            &[("Authorization", &bearer(token))],
        )
        .await;
        // `alg none` tokens end in '.', an empty signature: malformed or
        // refused as unsigned, a 401 either way.
        assert_eq!(resp.status, 401, "{name}: {}", resp.text());
        assert_eq!(resp.json()["error"], "invalid_token", "{name}");
        if !description.is_empty() {
            assert_eq!(resp.json()["error_description"], *description, "{name}");
        }
        assert!(
            !resp.text().contains(token.as_str()),
            "{name}: token echoed"
        );
    }
    assert!(upstream.requests().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_is_honoured_within_bounds() {
    let (upstream, gw) = start("").await;
    let k = keys();
    let within = [
        json!({"exp": now() - 10}),
        json!({"nbf": now() + 10}),
        json!({"iat": now() + 10}),
        json!({"exp": now() + 60, "nbf": now() - 1, "iat": now() - 1}),
        json!({"exp": (now() + 60) as f64 + 0.5}),
        json!({"aud": ["https://x.test", AUD]}),
    ];
    for extra in &within {
        let resp = get(
            gw.addr,
            "/api/private",
            &[(
                "Authorization",
                &bearer(&k.rsa.token(&claims(extra.clone()))),
            )],
        )
        .await;
        assert_eq!(resp.status, 200, "{extra}: {}", resp.text());
    }
    assert_eq!(upstream.requests().len(), within.len());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_none_forwards_tokens_untouched_and_strip_authorization_removes_them() {
    let (upstream, gw) = start("").await;
    let resp = get(
        gw.addr,
        "/assets/css/site.css",
        &[
            ("Authorization", "Bearer not-even-a-jwt"),
            ("X-Auth-Subject", "forged"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200);
    let r = upstream.take().pop().expect("forwarded");
    assert_eq!(r.target, "/assets/css/site.css");
    assert_eq!(r.header("authorization"), Some("Bearer not-even-a-jwt"));
    assert_eq!(
        r.header("x-auth-subject"),
        None,
        "client copies of identity headers are always removed"
    );
    gw.stop().await;

    let (upstream, gw) = start("").await;
    let cfg = config(&upstream.addr.to_string(), "")
        .replace("identity:\n", "identity:\n  strip_authorization: true\n");
    gw.stop().await;
    let k = keys();
    let gw = crate::support::Gateway::start(
        &cfg,
        &[
            ("jwks-a.json", &jwks(&[&k.rsa])),
            ("jwks-b.json", &jwks(&[&k.rsa_other])),
        ],
    )
    .await;
    let resp = get(
        gw.addr,
        "/api/private",
        &[("Authorization", &bearer(&k.rsa.token(&claims(json!({})))))],
    )
    .await;
    assert_eq!(resp.status, 200);
    let r = upstream.take().pop().expect("forwarded");
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("x-auth-subject"), Some("user-1"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_smuggle_or_strip_identity() {
    let (upstream, gw) = start("").await;
    let k = keys();
    let auth = bearer(&k.rsa.token(&claims(json!({}))));
    // Naming the identity header in Connection must not keep the client's
    // copy nor remove the gateway's.
    let resp = get(
        gw.addr,
        "/api/private",
        &[
            ("Authorization", &auth),
            ("Connection", "X-Auth-Subject, close"),
            ("X-Auth-Subject", "admin"),
            ("Keep-Alive", "timeout=5"),
            ("Upgrade", "h2c"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic x"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200);
    let r = upstream.take().pop().expect("forwarded");
    assert_eq!(r.header("x-auth-subject"), Some("user-1"));
    assert_eq!(r.header_count("x-auth-subject"), 1);
    for hop in ["keep-alive", "upgrade", "te", "proxy-authorization"] {
        assert_eq!(r.header(hop), None, "{hop} must not be forwarded");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_is_refused_and_never_forwarded() {
    let (upstream, gw) = start("").await;
    let requests: &[&[u8]] = &[
        b"GET /api/public HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /api/public HTTP/1.1\r\n\r\n",
        b"POST /assets/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST /assets/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET /api/public HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET /api/public HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n",
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
    ];
    for req in requests {
        let resp = raw(gw.addr, req).await;
        assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(req));
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    // Two equal lengths are collapsed by the parser: the upstream gets one.
    let resp = raw(gw.addr, b"POST /assets/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc").await;
    assert_eq!(resp.status, 200);
    let seen = upstream.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header_count("content-length"), 1);
    assert_eq!(seen[0].body_len, 3);
    gw.stop().await;
}

/// `Content-Length` with `Transfer-Encoding`: hyper drops the length, reads
/// the body as chunked and closes the connection after answering (RFC 9112
/// §6.3), so the upstream sees one unambiguous request and nothing
/// pipelined behind it can ride along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let (upstream, gw) = start("").await;
    let attack = b"POST /assets/x HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /assets/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stream, attack)
        .await
        .expect("write");
    let first = crate::support::read_response(&mut stream).await;
    assert!(
        first.status == 200 || first.status == 400,
        "{}",
        first.status
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
    )
    .await;
    assert!(
        rest.is_empty(),
        "no second response: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let seen = upstream.requests();
    assert!(
        seen.iter().all(|r| r.target == "/assets/x"
            && r.body_len == 0
            && r.header("content-length").is_none_or(|v| v == "0")),
        "{seen:?}"
    );
    assert!(seen.len() <= 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_routed_by_its_path() {
    let (upstream, gw) = start("").await;
    let resp = raw(gw.addr, b"GET http://evil.test/api/public/../private HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(resp.status, 401, "routed as /api/private");
    let resp = raw(gw.addr, b"GET http://other.test/api/public HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(resp.status, 200);
    let r = upstream.take().pop().expect("forwarded");
    assert_eq!(r.target, "/api/public");
    assert_eq!(
        r.header("host"),
        Some("other.test"),
        "RFC 9112: the absolute-form authority is the host"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_502_and_504_and_the_gateway_keeps_serving() {
    // Nothing listens on the upstream port: 502.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let k = keys();
    let files = [
        ("jwks-a.json", jwks(&[&k.rsa])),
        ("jwks-b.json", jwks(&[&k.rsa_other])),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let gw = Gateway::start(&config(&dead.to_string(), ""), &files).await;
    let resp = get(gw.addr, "/api/public", &[]).await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["error"], "bad_gateway");
    gw.stop().await;

    // A slow upstream: 504 after request_timeout (1 s), then still serving.
    let (upstream, gw) = start("").await;
    let resp = get(gw.addr, "/assets/slow", &[]).await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.json()["error"], "gateway_timeout");
    let resp = get(gw.addr, "/assets/fast", &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(upstream.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_host_rules() {
    let upstream = Upstream::start().await;
    let k = keys();
    let extra = "trusted_proxies: [\"127.0.0.0/8\"]\n";
    let cfg = config(&format!("{}/base/", upstream.addr), extra).replace(
        "request_timeout: 1s",
        "request_timeout: 1s\n  preserve_host: false",
    );
    let gw = Gateway::start(
        &cfg,
        &[
            ("jwks-a.json", &jwks(&[&k.rsa])),
            ("jwks-b.json", &jwks(&[&k.rsa_other])),
        ],
    )
    .await;
    let resp = get(
        gw.addr,
        "/api/public?a=1",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "api.example.com"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200);
    let r = upstream.take().pop().expect("forwarded");
    assert_eq!(r.target, "/base/api/public?a=1", "upstream path prefix");
    assert_eq!(
        r.header("host"),
        Some(upstream.addr.to_string().as_str()),
        "preserve_host: false"
    );
    assert_eq!(
        r.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1"),
        "a trusted proxy's chain is appended to"
    );
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    assert_eq!(r.header("x-forwarded-host"), Some("api.example.com"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_headers_431_body_413_and_streaming() {
    let (upstream, gw) = start("limits:\n  max_request_body_bytes: 1048576\n").await;
    let big = "x".repeat(20_000);
    let resp = get(gw.addr, "/api/public", &[("X-Big", &big)]).await;
    assert_eq!(resp.status, 431);
    let declared = raw(gw.addr, b"POST /assets/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n").await;
    assert_eq!(declared.status, 413);
    assert!(upstream.requests().is_empty());

    // A chunked body within the limit streams through whole.
    let mut req = b"POST /assets/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..16 {
        req.extend_from_slice(format!("{:x}\r\n", 32 * 1024).as_bytes());
        req.extend_from_slice(&[b'a'; 32 * 1024]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(gw.addr, &req).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "upstream-ok 524288");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_closes_slow_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_upstream, gw) = start("limits:\n  header_read_timeout: 1s\n").await;
    let mut slow = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /api/public HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    // A normal client is served meanwhile.
    assert_eq!(get(gw.addr, "/api/public", &[]).await.status, 200);
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        slow.read_to_end(&mut buf),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the slow client must be disconnected after header_read_timeout"
    );
    // A client that never sends a byte is dropped too.
    let mut silent = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        silent.read_to_end(&mut buf),
    )
    .await;
    assert!(closed.is_ok(), "a silent client must be disconnected");
    gw.stop().await;
}

/// An HTTP/2 (prior knowledge) connection to `addr`.
async fn h2c(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_authorized_like_http1() {
    use http_body_util::{BodyExt, Empty};
    let (upstream, gw) = start("").await;
    let mut sender = h2c(gw.addr).await;
    let token = keys().rsa.token(&claims(json!({"scope": "read:messages"})));
    let send = |path: &str, auth: Option<&str>| {
        let mut b = http::Request::builder().uri(format!("http://gateway.test{path}"));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Empty::<bytes::Bytes>::new()).expect("request")
    };
    let resp = sender
        .send_request(send(
            "/api/public/%2e%2e/private-scoped",
            Some(&bearer(&token)),
        ))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let resp = sender
        .send_request(send("/api/private-scoped", None))
        .await
        .expect("response");
    assert_eq!(resp.status(), 401);
    let resp = sender
        .send_request(send("/api/public/..;/private-scoped", None))
        .await
        .expect("response");
    assert_eq!(resp.status(), 400);
    let _ = resp.into_body().collect().await;
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/api/private-scoped");
    assert_eq!(seen[0].header("host"), Some("gateway.test"));
    gw.stop().await;
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A 1 GiB upload streams through: the upstream receives every byte and the
/// process's peak memory grows by far less than the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_body_streams_with_flat_memory() {
    use tokio::io::AsyncWriteExt;
    const TOTAL: u64 = 1 << 30;
    let (upstream, gw) = start("limits:\n  max_request_body_bytes: 2147483648\n").await;
    let before = peak_rss_kib();
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /assets/upload HTTP/1.1\r\nHost: a\r\nContent-Length: {TOTAL}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'z'; 256 * 1024];
    for i in 0..TOTAL / chunk.len() as u64 {
        if let Err(e) = stream.write_all(&chunk).await {
            let resp = crate::support::read_response(&mut stream).await;
            panic!(
                "write {i} failed ({e}); gateway said {} {}",
                resp.status,
                resp.text()
            );
        }
    }
    let resp = crate::support::read_response(&mut stream).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), format!("upstream-ok {TOTAL}"));
    assert_eq!(upstream.requests()[0].body_len, TOTAL);
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        let grown_mib = after.saturating_sub(before) / 1024;
        eprintln!("1 GiB upload: peak RSS {before} KiB -> {after} KiB");
        assert!(
            grown_mib < 256,
            "peak RSS grew by {grown_mib} MiB for a 1024 MiB body"
        );
    }
    gw.stop().await;
}

/// HTTP/2 to HTTP/1.1 and bodies without a length (issue 11): split
/// cookies arrive as one field, a bad `:authority` is refused, a chunked
/// GET body reaches the upstream instead of vanishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_http1_upstreams_receive_from_h2_and_chunked_gets() {
    use http_body_util::{BodyExt, Empty};
    let (upstream, gw) = start("").await;
    let mut sender = h2c(gw.addr).await;
    let req = http::Request::builder()
        .uri("http://gateway.test/api/public")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    let seen = upstream.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header_count("cookie"), 1, "{:?}", seen[0].headers);
    assert_eq!(seen[0].header("cookie"), Some("a=1; b=2"));

    for authority in ["gateway.test:abc", "gateway.test:99999999"] {
        let req = http::Request::builder()
            .uri(format!("http://{authority}/api/public"))
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        match sender.send_request(req).await {
            Ok(resp) => assert_eq!(resp.status(), 400, "{authority}"),
            Err(e) => assert!(!e.is_closed(), "{authority}: {e}"),
        }
    }
    assert!(
        upstream.take().is_empty(),
        "bad authorities are never forwarded"
    );

    let chunked = b"GET /api/public HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let resp = crate::support::raw(gw.addr, chunked).await;
    assert_eq!(resp.status, 200);
    let seen = upstream.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body_len, 5,
        "the GET body is forwarded, not dropped"
    );
    assert_eq!(seen[0].header("transfer-encoding"), Some("chunked"));
    gw.stop().await;
}

/// Identity headers carry every claim type the same way on the proxy and
/// on the forward-auth listener (README, "Identity headers"; issue 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_the_same_on_both_listeners() {
    let upstream = Upstream::start().await;
    let k = keys();
    let cfg = format!(
        r#"upstream:
  url: "http://{}"
forward_auth:
  listen: "127.0.0.1:0"
  convention: nginx
identity:
  headers:
    X-Auth-Subject: sub
    X-Auth-Name: name
    X-Auth-Groups: groups
    X-Auth-Org: org
    X-Auth-Level: level
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
routes:
  - path: /api/private
"#,
        upstream.addr
    );
    let gw = Gateway::start(&cfg, &[("jwks.json", &jwks(&[&k.rsa]))]).await;
    let token = bearer(&k.rsa.token(&claims(json!({
        "name": "Jos\u{e9}\r\nX-Injected: 1",
        "groups": ["Domain Users", "a,b"],
        "org": {"id": 7},
        "level": 3,
    }))));
    let proxied = get(gw.addr, "/api/private", &[("Authorization", &token)]).await;
    assert_eq!(proxied.status, 200);
    let seen = upstream.take();
    let answer = crate::support::request(
        gw.forward_auth.expect("listener"),
        "GET",
        "/auth",
        &[
            ("X-Original-URI", "/api/private"),
            ("X-Original-Method", "GET"),
            ("Authorization", &token),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    for (name, want) in [
        ("x-auth-subject", "user-1"),
        ("x-auth-name", "Jos%C3%A9%0D%0AX-Injected: 1"),
        ("x-auth-groups", "Domain Users,a%2Cb"),
        ("x-auth-org", r#"{"id":7}"#),
        ("x-auth-level", "3"),
    ] {
        assert_eq!(seen[0].header(name), Some(want), "proxy {name}");
        assert_eq!(answer.header(name), Some(want), "forward-auth {name}");
    }
    assert_eq!(seen[0].header("x-injected"), None);
    gw.stop().await;
}

/// An upstream that closes every idle keep-alive connection after 50 ms,
/// and every third connection right after its response without saying so:
/// the gateway's pooled connections go stale under it. Each request must
/// still be answered by the upstream, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pooled_connections_are_replaced_not_failed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let served = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s, c) = (served.clone(), connections.clone());
    let addr = crate::support::accept_each(move |mut stream, _| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let served = s.clone();
        async move {
            let mut buf = Vec::new();
            loop {
                let mut chunk = [0u8; 4096];
                let read = tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    stream.read(&mut chunk),
                )
                .await;
                let Ok(Ok(len)) = read else { return };
                if len == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..len]);
                if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    continue;
                }
                buf.clear();
                served.fetch_add(1, Ordering::SeqCst);
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                if n % 3 == 2 {
                    return;
                }
            }
        }
    })
    .await;
    let cfg =
        format!("upstream:\n  url: \"http://{addr}\"\nroutes:\n  - path: /open\n    auth: none\n");
    let gw = Gateway::start(&cfg, &[]).await;
    for i in 0..12 {
        let answer = get(gw.addr, "/open", &[]).await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.text());
        assert_eq!(answer.text(), "ok\n");
        // Every other pause outlives the upstream's idle timeout.
        let pause = if i % 2 == 0 { 10 } else { 80 };
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        12,
        "each request exactly once"
    );
    assert!(
        connections.load(Ordering::SeqCst) > 1,
        "connections were replaced"
    );
    gw.stop().await;
}

/// A raw upstream on loopback: for each request head on each connection,
/// `answer(connection number, request line)` gives the bytes to write and
/// whether to close the connection after them (a body the request may
/// carry is not read).
pub(crate) async fn canned_upstream(
    answer: impl Fn(usize, &str) -> (Vec<u8>, bool) + Send + Sync + 'static,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = std::sync::Arc::new(answer);
    crate::support::accept_each(move |mut stream, n| {
        let answer = answer.clone();
        async move {
            let mut buf = Vec::new();
            loop {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(len) => buf.extend_from_slice(&chunk[..len]),
                    }
                    continue;
                };
                let line = String::from_utf8_lossy(&buf[..end])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                buf.drain(..end + 4);
                let (bytes, close) = answer(n, &line);
                if stream.write_all(&bytes).await.is_err() || close {
                    return;
                }
            }
        }
    })
    .await
}

/// One upstream connection carries every kind of response body one after
/// the other; a response the upstream closes after, and one the client
/// abandons halfway, never put a connection back.
#[tokio::test]
async fn upstream_connections_are_reused_after_every_kind_of_body() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // (connection number, request line) for every request served.
    let served: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let log = served.clone();
    let addr = canned_upstream(move |n, line| {
        log.lock().expect("log").push((n, line.to_owned()));
        let answer: Vec<u8> = if line.starts_with("HEAD ") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec()
        } else if line.contains("/chunked") {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"
                .to_vec()
        } else if line.contains("/empty") {
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
        } else if line.contains("/close") {
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello".to_vec()
        } else if line.contains("/big") {
            let mut big = b"HTTP/1.1 200 OK\r\ncontent-length: 8000000\r\n\r\n".to_vec();
            big.resize(big.len() + 8_000_000, b'x');
            big
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec()
        };
        (answer, line.contains("/close"))
    })
    .await;
    let cfg = format!(
        "upstream:\n  url: \"http://{addr}\"\nroutes:\n  - path: \"/{{*any}}\"\n    auth: none\n"
    );
    let gw = Gateway::start(&cfg, &[]).await;
    let connection_of = |line: &str| {
        let served = served.lock().expect("log");
        served
            .iter()
            .rev()
            .find(|(_, l)| l == line)
            .map(|(n, _)| *n)
            .unwrap_or_else(|| panic!("{line:?} never reached the upstream: {served:?}"))
    };
    for (method, path, status, body) in [
        ("GET", "/len", 200, "hello"),
        ("GET", "/chunked", 200, "hello"),
        ("GET", "/empty", 204, ""),
        ("HEAD", "/len", 200, ""),
        ("GET", "/chunked", 200, "hello"),
        ("GET", "/len", 200, "hello"),
    ] {
        let answer = request(gw.addr, method, path, &[]).await;
        assert_eq!(answer.status, status, "{method} {path}");
        assert_eq!(answer.text(), body, "{method} {path}");
        assert_eq!(
            connection_of(&format!("{method} {path} HTTP/1.1")),
            1,
            "{method} {path} on the first connection"
        );
    }
    // Closed by the upstream after its response: the next request opens
    // a new connection.
    assert_eq!(get(gw.addr, "/close", &[]).await.text(), "hello");
    assert_eq!(get(gw.addr, "/len", &[]).await.text(), "hello");
    assert_eq!(connection_of("GET /len HTTP/1.1"), 2);
    // Abandoned halfway: that connection is not reused either.
    {
        let mut client = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            .await
            .expect("write");
        let mut first = [0u8; 65536];
        assert!(client.read(&mut first).await.expect("read") > 0);
    }
    let big_on = connection_of("GET /big HTTP/1.1");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for _ in 0..3 {
        let answer = get(gw.addr, "/len", &[]).await;
        assert_eq!((answer.status, answer.text().as_str()), (200, "hello"));
        assert_ne!(connection_of("GET /len HTTP/1.1"), big_on);
    }
    assert_eq!(
        served.lock().expect("log").len(),
        12,
        "each request exactly once"
    );
    gw.stop().await;
}

/// An upstream connection's read buffer stops growing at 64 KiB: a large
/// body still streams whole, through many reads; a response head up to the
/// bound is forwarded, and one past it is a 502 that leaves the gateway
/// serving.
#[tokio::test]
async fn the_upstream_read_buffer_is_bounded_and_any_body_streams_through_it() {
    const BODY: usize = 3_000_000;
    let addr = canned_upstream(|_, line| {
        let head_with = |filler: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nx-filler: {}\r\ncontent-length: 2\r\n\r\nok",
                "f".repeat(filler)
            )
            .into_bytes()
        };
        let answer = if line.contains("/body") {
            let mut big = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n").into_bytes();
            // Not one repeated byte: a piece lost, doubled or reordered
            // between reads changes the sum below.
            big.extend((0..BODY).map(|i| (i % 251) as u8));
            big
        } else if line.contains("/head-fits") {
            head_with(60 * 1024)
        } else if line.contains("/head-too-large") {
            head_with(100 * 1024)
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
        };
        (answer, false)
    })
    .await;
    let cfg = format!(
        "upstream:\n  url: \"http://{addr}\"\nroutes:\n  - path: \"/{{*any}}\"\n    auth: none\n"
    );
    let gw = Gateway::start(&cfg, &[]).await;

    let answer = get(gw.addr, "/body", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), BODY, "the whole body");
    let expected: u64 = (0..BODY)
        .map(|i| (i % 251) as u64 * (i as u64 % 7 + 1))
        .sum();
    let got: u64 = answer
        .body
        .iter()
        .enumerate()
        .map(|(i, b)| u64::from(*b) * (i as u64 % 7 + 1))
        .sum();
    assert_eq!(got, expected, "every byte in its place");

    let answer = get(gw.addr, "/head-fits", &[]).await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "ok"));
    assert_eq!(answer.header("x-filler").map(str::len), Some(60 * 1024));

    let answer = get(gw.addr, "/head-too-large", &[]).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert!(answer.header("x-filler").is_none());

    let answer = get(gw.addr, "/after", &[]).await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "ok"));
    gw.stop().await;
}
