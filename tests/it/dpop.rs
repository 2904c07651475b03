//! Sender-constrained tokens (issue 19, SPEC §4.8): DPoP-bound access
//! tokens issued by a real provider (oidc-provider binds a token to the
//! proof key sent to its token endpoint), used with proofs made here, and
//! hand-built hostile proofs; the replay cache shared by two replicas
//! through a real Redis; forward-auth; certificate-bound tokens over TLS
//! with an rcgen PKI.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::idp::{self, Idp};
use crate::support::keys::{TestKey, jwks, keys};
use crate::support::pki::Pki;
use crate::support::redis::Redis;
use crate::support::{Gateway, Raw, Upstream, bearer, now, request};

const GW_SECRET: &str = "gw-secret-0123456789abcdef";
const API: &str = "https://api.example.com";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// RFC 7638, written out here independently of the gateway.
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().expect("crv"),
            jwk["x"].as_str().expect("x"),
            jwk["y"].as_str().expect("y")
        ),
        Some("OKP") => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk["crv"].as_str().expect("crv"),
            jwk["x"].as_str().expect("x")
        ),
        other => panic!("no thumbprint for {other:?}"),
    };
    b64(&sha256(canonical.as_bytes()))
}

/// A proof's parts, each of which a hostile test may change.
#[derive(Clone)]
struct Proof {
    header: Value,
    payload: Value,
}

impl Proof {
    /// A valid proof by `key` for `method url`, bound to `token` if any.
    fn new(key: &TestKey, method: &str, url: &str, token: Option<&str>) -> Proof {
        let mut payload = json!({
            "jti": format!("{}-{}", now(), rand_id()),
            "htm": method,
            "htu": url,
            "iat": now(),
        });
        if let Some(token) = token {
            payload["ath"] = json!(b64(&sha256(token.as_bytes())));
        }
        Proof {
            header: json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": public(key)}),
            payload,
        }
    }

    fn sign(&self, key: &TestKey) -> String {
        key.sign(&self.header, &self.payload)
    }
}

/// The key's public JWK without `kid` and `use` (what a client sends).
fn public(key: &TestKey) -> Value {
    let mut jwk = key.jwk();
    let object = jwk.as_object_mut().expect("object");
    object.remove("kid");
    object.remove("use");
    jwk
}

fn rand_id() -> String {
    let mut bytes = [0u8; 12];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    b64(&bytes)
}

fn config(provider: &Idp, upstream: &Upstream, extra: &str) -> String {
    format!(
        r#"upstream:
  url: "http://{}"
issuers:
  - issuer: "{}"
    audiences: ["{API}"]
    discovery: true
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
    dpop:
      algorithms: [ES256, EdDSA]
routes:
  - path: /api/users
    scopes: [read:users]
  - path: /api/own
  - path: /api/strict
    dpop: {{ mode: required }}
  - path: /api/plain
    dpop: {{ mode: off }}
{extra}"#,
        upstream.addr,
        provider.issuer()
    )
}

async fn send(gw: &Gateway, method: &str, path: &str, auth: &str, proofs: &[&str]) -> Raw {
    let mut headers = vec![("Authorization", auth)];
    headers.extend(proofs.iter().map(|p| ("DPoP", *p)));
    request(gw.addr, method, path, &headers).await
}

fn assert_dpop_401(answer: &Raw, error: &str, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {}", answer.text());
    assert_eq!(answer.json()["error"], error, "{what}");
    let challenge = answer.header("www-authenticate").expect("challenge");
    assert!(
        challenge.starts_with("DPoP algs=\"") && challenge.contains(&format!("error=\"{error}\"")),
        "{what}: {challenge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_bound_tokens_from_a_real_provider_need_their_proof() {
    if !idp::available() {
        return;
    }
    let provider = Idp::start(
        &json!([idp::client("gw", GW_SECRET, "client_secret_basic")]),
        300,
    )
    .await;
    let upstream = Upstream::start().await;
    let k = keys();
    let gw = Gateway::start(
        &config(&provider, &upstream, ""),
        &[("jwks.json", &jwks(&[&k.rsa]))],
    )
    .await;
    let client = &k.ec256;

    // The provider binds the token to the key of the proof it was sent.
    let token_proof = Proof::new(client, "POST", &provider.token_url(), None).sign(client);
    let answer = provider
        .dpop_token(
            "gw",
            GW_SECRET,
            &format!("grant_type=client_credentials&scope=read:users&resource={API}"),
            &token_proof,
        )
        .await;
    assert_eq!(answer["token_type"], "DPoP", "{answer}");
    let token = answer["access_token"].as_str().expect("token").to_owned();
    let claims = provider.verify(&token).await;
    assert_eq!(
        claims["cnf"]["jkt"],
        thumbprint(&public(client)),
        "{claims}"
    );

    // `request` addresses the gateway as Host: gateway.test.
    let url = |path: &str| format!("http://gateway.test{path}");
    let dpop = format!("DPoP {token}");
    let good = Proof::new(client, "GET", &url("/api/users"), Some(&token));

    // A valid proof: allowed once, forwarded as the client sent it.
    let proof = good.sign(client);
    let answer = send(&gw, "GET", "/api/users", &dpop, &[&proof]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = upstream.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("dpop"), Some(proof.as_str()));
    // The same proof again: a replay.
    let again = send(&gw, "GET", "/api/users", &dpop, &[&proof]).await;
    assert_dpop_401(&again, "invalid_dpop_proof", "replayed jti");
    assert_eq!(
        again.json()["error_description"],
        "the DPoP proof was already used"
    );
    assert!(
        again
            .header("www-authenticate")
            .expect("c")
            .contains(r#"algs="#)
    );

    // The bound token as a bearer token, or without a proof.
    let as_bearer = send(&gw, "GET", "/api/users", &bearer(&token), &[]).await;
    assert_dpop_401(&as_bearer, "invalid_token", "bound token as Bearer");
    let no_proof = send(&gw, "GET", "/api/users", &dpop, &[]).await;
    assert_dpop_401(&no_proof, "invalid_dpop_proof", "token without a proof");

    // Hostile proofs, each changing one thing.
    let other = &k.ed;
    // Each case changes one thing of a proof with a fresh jti, so that only
    // the named defect can refuse it.
    let fresh = || {
        let mut p = good.clone();
        p.payload["jti"] = json!(rand_id());
        p
    };
    let hostile: Vec<(&str, String)> = vec![
        ("wrong htm", {
            let mut p = fresh();
            p.payload["htm"] = json!("POST");
            p.sign(client)
        }),
        ("wrong htu path", {
            let mut p = fresh();
            p.payload["htu"] = json!(url("/api/own"));
            p.sign(client)
        }),
        ("wrong htu host", {
            let mut p = fresh();
            p.payload["htu"] = json!("http://evil.example/api/users");
            p.sign(client)
        }),
        ("stale iat", {
            let mut p = fresh();
            p.payload["iat"] = json!(now() - 600);
            p.sign(client)
        }),
        ("future iat", {
            let mut p = fresh();
            p.payload["iat"] = json!(now() + 600);
            p.sign(client)
        }),
        ("ath of another token", {
            let mut p = fresh();
            p.payload["ath"] = json!(b64(&sha256(b"another token")));
            p.sign(client)
        }),
        ("no ath", {
            let mut p = fresh();
            p.payload.as_object_mut().expect("o").remove("ath");
            p.sign(client)
        }),
        ("thumbprint mismatch", {
            let mut p = fresh();
            p.header["alg"] = json!(other.alg());
            p.header["jwk"] = public(other);
            p.sign(other)
        }),
        ("symmetric alg", {
            let mut p = fresh();
            p.header["alg"] = json!("HS256");
            p.header["jwk"] = json!({"kty": "oct", "k": b64(b"0123456789abcdef0123456789abcdef")});
            TestKey::hmac("h", b"0123456789abcdef0123456789abcdef").sign(&p.header, &p.payload)
        }),
        ("private key in the jwk", {
            let mut p = fresh();
            p.header["jwk"]["d"] = json!(b64(b"not really a private key but present"));
            p.sign(client)
        }),
        ("typ JWT", {
            let mut p = fresh();
            p.header["typ"] = json!("JWT");
            p.sign(client)
        }),
        ("a signature over other content", {
            let signed = fresh().sign(client);
            let (input, _) = signed.rsplit_once('.').expect("jws");
            format!(
                "{input}.{}",
                b64(&client.sign_raw("ES256", b"other content"))
            )
        }),
        ("not a JWS", "not-a-proof".to_owned()),
    ];
    for (what, proof) in &hostile {
        let answer = send(&gw, "GET", "/api/users", &dpop, &[proof]).await;
        assert_dpop_401(&answer, "invalid_dpop_proof", what);
        assert_ne!(
            answer.json()["error_description"],
            "the DPoP proof was already used",
            "{what}"
        );
    }
    assert!(
        upstream.take().is_empty(),
        "no hostile proof reached the upstream"
    );

    // Two proofs: 400. A proof without a token: 401.
    let p1 = Proof::new(client, "GET", &url("/api/users"), Some(&token)).sign(client);
    let p2 = Proof::new(client, "GET", &url("/api/users"), Some(&token)).sign(client);
    assert_eq!(
        send(&gw, "GET", "/api/users", &dpop, &[&p1, &p2])
            .await
            .status,
        400
    );
    let tokenless = request(gw.addr, "GET", "/api/users", &[("DPoP", &p1)]).await;
    assert_eq!(tokenless.status, 401);

    // An unbound token with the DPoP scheme and a valid proof: accepted.
    let unbound = k.rsa.token(&crate::proxy::claims(json!({})));
    let proof = Proof::new(client, "GET", &url("/api/own"), Some(&unbound)).sign(client);
    let answer = send(
        &gw,
        "GET",
        "/api/own",
        &format!("DPoP {unbound}"),
        &[&proof],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // …but not signed with an algorithm its issuer's dpop settings refuse.
    let rsa_proof =
        Proof::new(&k.rsa_other, "GET", &url("/api/own"), Some(&unbound)).sign(&k.rsa_other);
    let answer = send(
        &gw,
        "GET",
        "/api/own",
        &format!("DPoP {unbound}"),
        &[&rsa_proof],
    )
    .await;
    assert_dpop_401(
        &answer,
        "invalid_dpop_proof",
        "RS256 not in dpop.algorithms",
    );
    assert_eq!(
        answer
            .header("www-authenticate")
            .expect("c")
            .split(", ")
            .next(),
        Some(r#"DPoP algs="ES256 EdDSA""#)
    );
    // Route overrides: `required` refuses a bearer token, `off` a bound one.
    let strict = send(&gw, "GET", "/api/strict", &bearer(&unbound), &[]).await;
    assert_dpop_401(&strict, "invalid_token", "dpop required");
    let proof = Proof::new(client, "GET", &url("/api/plain"), Some(&token)).sign(client);
    let plain = send(&gw, "GET", "/api/plain", &dpop, &[&proof]).await;
    assert_dpop_401(&plain, "invalid_token", "dpop off");
    assert_eq!(upstream.take().len(), 1, "only the unbound token's request");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_refuse_a_proof_replayed_on_the_other() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let k = keys();
    let cfg = format!(
        r#"upstream:
  url: "http://{}"
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
rate_limits:
  store: redis
  redis:
    url: "redis://127.0.0.1:{}"
    on_error: deny
routes:
  - path: /api/own
"#,
        upstream.addr, redis.port
    );
    let files = [("jwks.json", jwks(&[&k.rsa]))];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let one = Gateway::start(&cfg, &files).await;
    let two = Gateway::start(&cfg, &files).await;
    let client = &k.ec256;
    let jkt = thumbprint(&public(client));
    let token = k.rsa.token(&claims(json!({"cnf": {"jkt": jkt}})));
    let dpop = format!("DPoP {token}");
    // Both replicas are reached as the same public host.
    let htu = "http://api.test/api/own";
    let proof = Proof::new(client, "GET", htu, Some(&token)).sign(client);
    let ask = |gw: &Gateway, proof: &str| {
        let (addr, dpop, proof) = (gw.addr, dpop.clone(), proof.to_owned());
        async move {
            let req = format!(
                "GET /api/own HTTP/1.1\r\nHost: api.test\r\nAuthorization: {dpop}\r\nDPoP: {proof}\r\nConnection: close\r\n\r\n"
            );
            crate::support::raw(addr, req.as_bytes()).await
        }
    };
    assert_eq!(ask(&one, &proof).await.status, 200);
    let replayed = ask(&two, &proof).await;
    assert_dpop_401(
        &replayed,
        "invalid_dpop_proof",
        "replayed on the other replica",
    );
    let fresh = Proof::new(client, "GET", htu, Some(&token)).sign(client);
    assert_eq!(ask(&two, &fresh).await.status, 200);
    assert_eq!(upstream.take().len(), 2);
    // Redis down with on_error: deny: 503, nothing forwarded.
    drop(redis);
    let fresh = Proof::new(client, "GET", htu, Some(&token)).sign(client);
    let down = ask(&one, &fresh).await;
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(upstream.take().is_empty());
    one.stop().await;
    two.stop().await;
}

/// A gateway that only answers an ingress (`forward_auth.LISTENER`), with
/// one route for issuer A's tokens.
async fn asked_by(listener: &str) -> Gateway {
    let cfg = format!(
        r#"forward_auth:
  {listener}
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
routes:
  - path: /api/own
"#
    );
    Gateway::start(&cfg, &[("jwks.json", &jwks(&[&keys().rsa]))]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_reads_the_proof_and_the_original_uri() {
    let k = keys();
    let gw = asked_by("listen: \"127.0.0.1:0\"\n  convention: nginx").await;
    let fa = gw.forward_auth.expect("forward-auth listener");
    let client = &k.ed;
    let token = k.rsa.token(&claims(
        json!({"cnf": {"jkt": thumbprint(&public(client))}}),
    ));
    let dpop = format!("DPoP {token}");
    let ask = |proof: String, uri: &'static str| {
        let dpop = dpop.clone();
        async move {
            let req = format!(
                "GET /auth HTTP/1.1\r\nHost: api.test\r\nX-Original-URI: {uri}\r\nX-Original-Method: GET\r\nX-Forwarded-Proto: https\r\nAuthorization: {dpop}\r\nDPoP: {proof}\r\nConnection: close\r\n\r\n"
            );
            crate::support::raw(fa, req.as_bytes()).await
        }
    };
    let proof = |url: &str| Proof::new(client, "GET", url, Some(&token)).sign(client);
    assert_eq!(
        ask(proof("https://api.test/api/own"), "/api/own?x=1")
            .await
            .status,
        200
    );
    let wrong = ask(proof("https://api.test/api/own"), "/api/other").await;
    assert_eq!(wrong.status, 404, "no route: decided before the token");
    let scheme = ask(proof("http://api.test/api/own"), "/api/own").await;
    assert_dpop_401(&scheme, "invalid_dpop_proof", "the scheme the client used");
    gw.stop().await;
}

fn pki() -> Pki {
    crate::support::pki::pki(2)
}

/// One GET over TLS (HTTP/1.1), with a client certificate or none.
async fn get_mtls(addr: std::net::SocketAddr, pki: &Pki, client: Option<usize>, auth: &str) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(i) => {
            let client = &pki.clients[i];
            let chain =
                vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).expect("cert")];
            let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS: a client without a certificate is still accepted");
    let req = format!(
        "GET /api/own HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_bound_tokens_need_their_certificate() {
    let pki = pki();
    let upstream = Upstream::start().await;
    let k = keys();
    let cfg = format!(
        r#"upstream:
  url: "http://{}"
tls:
  cert_file: server.pem
  key_file: server.key
  client_ca_file: ca.pem
identity:
  headers:
    X-Auth-Subject: sub
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
routes:
  - path: /api/own
"#,
        upstream.addr
    );
    let gw = Gateway::start(
        &cfg,
        &[
            ("jwks.json", &jwks(&[&k.rsa])),
            ("server.pem", &pki.cert_pem),
            ("server.key", &pki.key_pem),
            ("ca.pem", &pki.ca_pem),
        ],
    )
    .await;
    let x5t = b64(&sha256(&pki.clients[0].der));
    let bound = bearer(&k.rsa.token(&claims(json!({"cnf": {"x5t#S256": x5t}}))));
    let unbound = bearer(&k.rsa.token(&claims(json!({}))));
    assert_eq!(
        get_mtls(gw.addr, &pki, Some(0), &bound).await,
        200,
        "its certificate"
    );
    assert_eq!(upstream.take().len(), 1);
    assert_eq!(
        get_mtls(gw.addr, &pki, Some(1), &bound).await,
        401,
        "another certificate"
    );
    assert_eq!(
        get_mtls(gw.addr, &pki, None, &bound).await,
        401,
        "no certificate"
    );
    assert!(upstream.take().is_empty());
    assert_eq!(
        get_mtls(gw.addr, &pki, None, &unbound).await,
        200,
        "certificates are optional"
    );
    assert_eq!(get_mtls(gw.addr, &pki, Some(1), &unbound).await, 200);
    assert_eq!(upstream.take().len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_checks_read_the_proof_and_the_source_certificate() {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    let k = keys();
    let pki = pki();
    let gw = asked_by("grpc_listen: \"127.0.0.1:0\"").await;
    let addr = gw.grpc.expect("gRPC listener");
    let client_key = &k.ec256;
    let x5t = b64(&sha256(&pki.clients[0].der));
    let jkt = thumbprint(&public(client_key));
    let token = k
        .rsa
        .token(&claims(json!({"cnf": {"jkt": jkt, "x5t#S256": x5t}})));
    // Envoy URL-encodes the PEM of the client's certificate.
    let encoded = |pem: &str| {
        pem.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    let check = |certificate: String, proof: String| {
        let headers: std::collections::HashMap<String, String> = [
            ("authorization".to_owned(), format!("DPoP {token}")),
            ("dpop".to_owned(), proof),
        ]
        .into();
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    certificate,
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: "/api/own".into(),
                        host: "api.example.com".into(),
                        scheme: "https".into(),
                        headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    };
    let status = |request: CheckRequest| async move {
        let mut client = AuthorizationClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let answer = client.check(request).await.expect("answer").into_inner();
        match answer.http_response.expect("http_response") {
            HttpResponse::OkResponse(_) => 200,
            HttpResponse::DeniedResponse(d) => d.status.expect("status").code,
            HttpResponse::ErrorResponse(_) => -1,
        }
    };
    let proof = || {
        Proof::new(
            client_key,
            "GET",
            "https://api.example.com/api/own",
            Some(&token),
        )
        .sign(client_key)
    };
    let mine = encoded(&pki.clients[0].cert_pem);
    let other = encoded(&pki.clients[1].cert_pem);
    assert_eq!(status(check(mine.clone(), proof())).await, 200);
    assert_eq!(
        status(check(other, proof())).await,
        401,
        "another certificate"
    );
    assert_eq!(
        status(check(String::new(), proof())).await,
        401,
        "no certificate"
    );
    let wrong = Proof::new(
        client_key,
        "GET",
        "http://api.example.com/api/own",
        Some(&token),
    )
    .sign(client_key);
    assert_eq!(
        status(check(mine, wrong)).await,
        401,
        "the scheme Envoy reports"
    );
    gw.stop().await;
}
