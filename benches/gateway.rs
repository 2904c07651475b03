//! Micro-benchmarks of the request path's parts: path normalization, route
//! matching on a 200-route table, token verification per algorithm (a cache
//! miss: the signature is checked), a verified-token cache hit, and the
//! whole decision for an allowed request, and one whole proxied request
//! over loopback (client → gateway → in-process upstream).
//!
//! `cargo bench --bench gateway` (figures in the README).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use scopegate::decision::{Question, decide};
use scopegate::devtools::token::{Mint, mint};
use scopegate::state::State;
use scopegate::token::{Cache, CacheStats};

const ISSUER: &str = "https://bench.example.com/";
const AUDIENCE: &str = "https://api.example.com";

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Keys for every algorithm: (alg, private PEM or HMAC secret, public JWK).
fn keys() -> Vec<(&'static str, String, serde_json::Value)> {
    let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
    let rsa_der: Pkcs8V1Der<'static> = rsa.as_der().expect("der");
    let rsa_pub = rsa.public_key();
    let rsa_jwk = serde_json::json!({"kty": "RSA", "kid": "rsa",
        "n": b64(rsa_pub.modulus().big_endian_without_leading_zero()),
        "e": b64(rsa_pub.exponent().big_endian_without_leading_zero())});
    let ec =
        EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec");
    let point = ec.public_key().as_ref().to_vec();
    let ec_jwk = serde_json::json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let ed = Ed25519KeyPair::generate().expect("ed");
    let ed_jwk = serde_json::json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(ed.public_key().as_ref())});
    vec![
        ("RS256", pem(rsa_der.as_ref()), rsa_jwk.clone()),
        ("PS256", pem(rsa_der.as_ref()), rsa_jwk),
        ("ES256", pem(ec.to_pkcs8v1().expect("der").as_ref()), ec_jwk),
        ("EdDSA", pem(ed.to_pkcs8v1().expect("der").as_ref()), ed_jwk),
    ]
}

fn token(alg: &str, pem: &str, kid: &str, scope: &str) -> String {
    let m = Mint {
        alg: scopegate::jwks::parse_alg(alg),
        kid: Some(kid.into()),
        iss: Some(ISSUER.into()),
        aud: Some(AUDIENCE.into()),
        sub: Some("bench-user".into()),
        scope: Some(scope.into()),
        ttl: 3600,
        ..Mint::default()
    };
    mint(pem.as_bytes(), &m).expect("mint")
}

fn hs256_token(secret: &[u8]) -> String {
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "scope": "read:messages",
        "iat": scopegate::now(), "exp": scopegate::now() + 3600});
    let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
        input.as_bytes(),
    );
    format!("{input}.{}", b64(tag.as_ref()))
}

/// A config with `extra_routes` more routes beside the API.
fn config(
    dir: &Path,
    jwks: &serde_json::Value,
    issuer_extra: &str,
    extra_routes: usize,
) -> scopegate::config::Config {
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("write");
    let mut yaml = format!(
        "upstream:\n  url: http://127.0.0.1:9\nissuers:\n  - issuer: \"{ISSUER}\"\n    audiences: [\"{AUDIENCE}\"]\n{issuer_extra}\nroutes:\n  - path: /api/private-scoped\n    methods: [GET]\n    scopes: [read:messages]\n"
    );
    for i in 0..extra_routes {
        yaml.push_str(&format!("  - path: /svc{i}/items/{{id}}\n    scopes: [svc{i}]\n  - path: /svc{i}/static/{{*rest}}\n    auth: none\n"));
    }
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write");
    scopegate::config::load(&path).expect("config")
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut g = c.benchmark_group("normalize");
    for path in [
        "/api/private-scoped",
        "/api/public/../private-scoped",
        "/a//b/./c/%41%42/d/../e;v=1/",
    ] {
        g.bench_function(path, |b| {
            b.iter(|| scopegate::route::normalize(black_box(path)))
        });
    }
    g.finish();

    let keys = keys();
    let all_jwks =
        serde_json::json!({"keys": keys.iter().map(|(_, _, jwk)| jwk.clone()).collect::<Vec<_>>()});
    let algs = "    jwks_file: jwks.json\n    algorithms: [RS256, PS256, ES256, EdDSA]";
    let cfg = config(dir.path(), &all_jwks, algs, 100);
    assert_eq!(
        cfg.routes.routes().len(),
        201,
        "a 200-route table plus the API"
    );
    let mut g = c.benchmark_group("route");
    for path in [
        "/api/private-scoped",
        "/svc57/items/42",
        "/svc99/static/css/site.css",
        "/nowhere/at/all",
    ] {
        g.bench_function(format!("200 routes {path}"), |b| {
            b.iter(|| {
                cfg.routes
                    .lookup(&Method::GET, black_box(path))
                    .is_matched()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("verify (cache miss)");
    for (alg, pem, jwk) in &keys {
        let token = token(alg, pem, jwk["kid"].as_str().expect("kid"), "read:messages");
        g.bench_function(*alg, |b| {
            b.iter(|| {
                rt.block_on(
                    cfg.verifier
                        .verify(black_box(&token), scopegate::now(), None),
                )
                .expect("valid")
            })
        });
    }
    let secret = b"an HS256 secret of at least thirty-two bytes";
    // An issuer with a shared secret, built directly (the config reads
    // secrets from the environment, which a benchmark should not touch).
    let hs_cfg = {
        scopegate::token::Verifier::new(
            vec![scopegate::token::Issuer {
                name: ISSUER.into(),
                audiences: vec![AUDIENCE.into()],
                algorithms: vec![jsonwebtoken::Algorithm::HS256],
                clock_skew: 30,
                max_token_age: None,
                require_typ: None,
                scope_claims: vec![scopegate::token::ClaimName::new("scope")],
                keys: Arc::new(scopegate::token::KeyCell::with(
                    scopegate::jwks::KeySet::from_secret(secret, &[jsonwebtoken::Algorithm::HS256])
                        .expect("secret"),
                )),
                introspection: None,
                dpop: Default::default(),
            }],
            8192,
        )
    };
    let hs = hs256_token(secret);
    g.bench_function("HS256", |b| {
        b.iter(|| {
            rt.block_on(hs_cfg.verify(black_box(&hs), scopegate::now(), None))
                .expect("valid")
        })
    });
    g.finish();

    let (alg, pem, jwk) = &keys[0];
    let rs256 = token(alg, pem, jwk["kid"].as_str().expect("kid"), "read:messages");
    let cache = Cache::new(1024, Arc::new(CacheStats::default()));
    rt.block_on(cfg.verifier.verify(&rs256, scopegate::now(), Some(&cache)))
        .expect("valid");
    c.bench_function("verify (cache hit) RS256", |b| {
        b.iter(|| {
            rt.block_on(
                cfg.verifier
                    .verify(black_box(&rs256), scopegate::now(), Some(&cache)),
            )
            .expect("valid")
        })
    });

    let limiter = Arc::new(scopegate::quota::Limiter::new(
        None,
        Arc::new(scopegate::telemetry::Metrics::default()),
    ));
    let state = State::new(cfg, Arc::new(CacheStats::default()), Vec::new(), limiter);
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {rs256}")).expect("header"),
    );
    let question = Question {
        method: &Method::GET,
        path: "/api/private-scoped",
        query: None,
        headers: &headers,
        host: None,
        client_ip: None,
        header_overrides: false,
        binding: Default::default(),
    };
    rt.block_on(decide(&state, &question, scopegate::now()));
    c.bench_function("decide: allowed request, RS256, cached", |b| {
        b.iter(|| {
            assert!(
                rt.block_on(decide(&state, black_box(&question), scopegate::now()))
                    .is_allowed()
            )
        })
    });

    proxied(c, &rt, &all_jwks, &rs256, false);
    proxied(c, &rt, &all_jwks, &rs256, true);
}

/// One whole proxied request over loopback: a keep-alive client, the real
/// gateway (`app::serve`), an in-process upstream, all on one
/// current-thread runtime (a regression guard for the hop; figures in the
/// README, never asserted). `traced`: with `tracing:` on, every request
/// sampled and its spans exported (to the same upstream, which answers
/// anything with 200).
fn proxied(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    jwks: &serde_json::Value,
    token: &str,
    traced: bool,
) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, _gateway) = rt.block_on(async {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_addr = upstream.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok\n"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).expect("write");
        let yaml = format!(
            "upstream:\n  url: \"http://{upstream_addr}\"\nissuers:\n  - issuer: \"{ISSUER}\"\n    audiences: [\"{AUDIENCE}\"]\n    jwks_file: jwks.json\n    algorithms: [RS256, PS256, ES256, EdDSA]\nroutes:\n  - path: /api/private-scoped\n    methods: [GET]\n    scopes: [read:messages]\n  - path: /api/public\n    auth: none\n"
        );
        let tracing = if traced {
            format!("tracing:\n  otlp_endpoint: \"http://{upstream_addr}\"\n")
        } else {
            String::new()
        };
        let yaml = yaml + &tracing;
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml).expect("write");
        let config = scopegate::config::load(&path).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let runtime = scopegate::app::Runtime::new(config);
        let listeners = scopegate::app::Listeners {
            proxy: Some(listener),
            forward_auth: None,
            grpc: None,
            admin: None,
            ..Default::default()
        };
        let gateway = tokio::spawn(scopegate::app::serve(runtime, listeners, std::future::pending()));
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        (sender, gateway)
    });
    let client = std::cell::RefCell::new(client);
    let auth = format!("Bearer {token}");
    let send = |path: &str, auth: Option<&str>| {
        let mut request = http::Request::get(path).header("host", "bench.example.com");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let request = request.body(Empty::<bytes::Bytes>::new()).expect("request");
        let mut borrowed = client.borrow_mut();
        let client = &mut *borrowed;
        rt.block_on(async {
            client.ready().await.expect("ready");
            let response = client.send_request(request).await.expect("response");
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.expect("body");
        })
    };
    send("/api/private-scoped", Some(&auth));
    let suffix = if traced { ", traced and exported" } else { "" };
    c.bench_function(
        &format!("proxied request over loopback, RS256, cached{suffix}"),
        |b| b.iter(|| send("/api/private-scoped", Some(&auth))),
    );
    if traced {
        return;
    }
    c.bench_function("proxied request over loopback, auth: none", |b| {
        b.iter(|| send("/api/public", None))
    });
}

criterion_group!(gateway, benches);
criterion_main!(gateway);
