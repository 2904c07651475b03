//! `scopegate demo`: the whole story in one process. An echo upstream, a
//! development issuer (a fresh RSA key, OIDC discovery and JWKS served on
//! loopback) and the gateway with a demo route table; it prints
//! ready-to-paste `curl` commands with minted tokens and what each answers.
//!
//! Adapter: depends on hyper, tokio, aws-lc-rs (key generation) and the
//! composition root.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::token::{Mint, mint};
use crate::app::{Listeners, Runtime};

const AUDIENCE: &str = "https://api.scopegate.demo";
/// The API the gateway calls with its own token (client credentials).
const ECHO_AUDIENCE: &str = "https://echo.scopegate.demo";
const DEMO_CLIENT: &str = "demo-gateway";

/// A fresh signing key: its private PEM (for minting) and public JWKS.
fn signing_key() -> Result<(String, String), String> {
    let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|e| format!("cannot make a key: {e}"))?;
    let der: Pkcs8V1Der<'static> = key
        .as_der()
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let public = key.public_key();
    let jwks = serde_json::json!({"keys": [{
        "kty": "RSA", "kid": "demo-1", "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    }]});
    Ok((pem, jwks.to_string()))
}

/// Serves `answer(request)` on `listener` forever.
fn serve_fn<F>(listener: TcpListener, answer: F)
where
    F: Fn(&Request<Incoming>) -> Response<crate::Body> + Clone + Send + Sync + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let response = answer(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn json(body: String) -> Response<crate::Body> {
    let mut response = Response::new(crate::full(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The upstream: echoes what it received, identity headers included, and
/// whose token it was given (the caller's, or the gateway's own).
fn echo(req: &Request<Incoming>) -> Response<crate::Body> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    // The claims of the bearer token it got (not verified: an echo).
    let token = header("authorization")
        .strip_prefix("Bearer ")
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
        .unwrap_or_default();
    json(
        serde_json::json!({
            "upstream": "echo",
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "x-auth-subject": header("x-auth-subject"),
            "x-auth-scopes": header("x-auth-scopes"),
            "bearer_token_sub": token["sub"],
            "bearer_token_aud": token["aud"],
        })
        .to_string(),
    )
}

fn demo_config(gateway: SocketAddr, upstream: SocketAddr, issuer: &str) -> String {
    format!(
        r#"listen: "{gateway}"
upstream:
  url: "http://{upstream}"
upstreams:
  # The same echo API, called with the gateway's own token.
  echo-with-token:
    url: "http://{upstream}"
    credentials:
      client_credentials:
        issuer: "{issuer}"
        client_id: {DEMO_CLIENT}
        client_secret_file: client-secret.txt
        audience: "{ECHO_AUDIENCE}"
        scope: "read:reports"
issuers:
  - issuer: "{issuer}"
    audiences: ["{AUDIENCE}"]
    discovery: true
    algorithms: [RS256]
identity:
  headers:
    X-Auth-Subject: sub
    X-Auth-Scopes: scopes
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
  - path: /api/reports
    methods: [GET]
    scopes: [read:messages]
    upstream: echo-with-token
"#
    )
}

async fn bind(port: u16) -> Result<TcpListener, String> {
    TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
        format!("cannot listen on 127.0.0.1:{port} ({e}); the demo uses three ports from --port: try `scopegate demo --port 18080`")
    })
}

/// The ready-to-paste commands, each after a `# expect STATUS: why` line.
fn instructions(gateway: SocketAddr, tokens: &[(&str, String)]) -> String {
    let base = format!("http://{gateway}");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Tokens minted by the demo issuer (development keys, valid 1 hour):"
    );
    for (name, token) in tokens {
        let _ = writeln!(out, "export {name}={token}");
    }
    let _ = writeln!(out);
    let commands: [(u16, &str, String); 10] = [
        (
            200,
            "a public route, no token needed",
            format!("curl -i {base}/api/public"),
        ),
        (
            401,
            "a private route without a token",
            format!("curl -i {base}/api/private-scoped"),
        ),
        (
            200,
            "the scoped route with the scope",
            format!("curl -i -H \"Authorization: Bearer $READER\" {base}/api/private-scoped"),
        ),
        (
            403,
            "the scoped route without the scope",
            format!("curl -i -H \"Authorization: Bearer $NOSCOPE\" {base}/api/private-scoped"),
        ),
        (
            401,
            "an expired token",
            format!("curl -i -H \"Authorization: Bearer $EXPIRED\" {base}/api/private-scoped"),
        ),
        (
            401,
            "a path trick decides like the clean path (no token)",
            format!("curl -i --path-as-is {base}/api/public/../private-scoped"),
        ),
        (
            200,
            "the same path trick with the scope",
            format!(
                "curl -i --path-as-is -H \"Authorization: Bearer $READER\" {base}/api/public/../private-scoped"
            ),
        ),
        (
            200,
            "{{id}} route: any_scope accepts write:messages",
            format!("curl -i -X PUT -H \"Authorization: Bearer $WRITER\" {base}/api/messages/42"),
        ),
        (
            405,
            "{{id}} route: GET is not allowed there",
            format!("curl -i -H \"Authorization: Bearer $WRITER\" {base}/api/messages/42"),
        ),
        (
            200,
            "the upstream gets the gateway's own token (bearer_token_sub: demo-gateway), not alice's",
            format!("curl -i -H \"Authorization: Bearer $READER\" {base}/api/reports"),
        ),
    ];
    for (status, why, command) in commands {
        let why = why.replace("{{", "{").replace("}}", "}");
        let _ = writeln!(out, "# expect {status}: {why}");
        let _ = writeln!(out, "{command}");
    }
    out
}

/// Runs the demo until Ctrl-C.
pub async fn run(port: u16) -> ExitCode {
    let ports = [Some(port), port.checked_add(1), port.checked_add(2)];
    let mut listeners = Vec::new();
    for p in ports {
        let Some(p) = p else {
            eprintln!("--port must leave room for two more ports");
            return ExitCode::from(1);
        };
        match bind(p).await {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        }
    }
    let (issuer_listener, upstream_listener, gateway_listener) =
        match (listeners.pop(), listeners.pop(), listeners.pop()) {
            (Some(i), Some(u), Some(g)) => (i, u, g),
            _ => return ExitCode::from(1),
        };
    let addr = |l: &TcpListener| {
        l.local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    let (gateway, upstream, issuer_addr) = (
        addr(&gateway_listener),
        addr(&upstream_listener),
        addr(&issuer_listener),
    );
    let issuer = format!("http://{issuer_addr}/");

    let (pem, jwks) = match signing_key() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let discovery = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("http://{issuer_addr}/.well-known/jwks.json"),
        "token_endpoint": format!("http://{issuer_addr}/oauth/token"),
    })
    .to_string();
    // The gateway's own client: a secret made now, in a file the config names.
    let secret = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        pem.as_bytes(),
    ));
    let dir = std::env::temp_dir().join(format!("scopegate-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("client-secret.txt"), &secret))
    {
        eprintln!("cannot write the demo's client secret: {e}");
        return ExitCode::from(1);
    }
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{DEMO_CLIENT}:{secret}"))
    );
    let client_token = {
        let m = Mint {
            kid: Some("demo-1".into()),
            iss: Some(issuer.clone()),
            aud: Some(ECHO_AUDIENCE.into()),
            sub: Some(DEMO_CLIENT.into()),
            scope: Some("read:reports".into()),
            ttl: 3600,
            ..Mint::default()
        };
        mint(pem.as_bytes(), &m).unwrap_or_default()
    };
    serve_fn(issuer_listener, move |req| {
        match req.uri().path() {
        "/.well-known/openid-configuration" => json(discovery.clone()),
        "/.well-known/jwks.json" => json(jwks.clone()),
        // Client credentials for the gateway itself (Basic authentication).
        "/oauth/token"
            if req.method() == http::Method::POST
                && req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes())
                    == Some(basic.as_bytes()) =>
        {
            json(
                serde_json::json!({"access_token": client_token, "token_type": "Bearer", "expires_in": 3600})
                    .to_string(),
            )
        }
        _ => {
            let mut r = json("{}".into());
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            r
        }
    }
    });
    serve_fn(upstream_listener, echo);

    let config = match crate::config::parse(
        &dir.join("demo.yaml"),
        demo_config(gateway, upstream, &issuer).as_bytes(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo config: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = Runtime::new(config);
    // The issuer is local: its keys and the gateway's token arrive at once.
    runtime.wait_for_keys(Duration::from_secs(2)).await;
    runtime.wait_for_credentials(Duration::from_secs(2)).await;

    let token = |sub: &str, scope: &str, ttl: i64| {
        let m = Mint {
            kid: Some("demo-1".into()),
            iss: Some(issuer.clone()),
            aud: Some(AUDIENCE.into()),
            sub: Some(sub.into()),
            scope: Some(scope.into()),
            ttl,
            ..Mint::default()
        };
        mint(pem.as_bytes(), &m).unwrap_or_default()
    };
    let tokens = [
        ("READER", token("alice", "read:messages", 3600)),
        ("NOSCOPE", token("bob", "profile", 3600)),
        ("EXPIRED", token("carol", "read:messages", -3600)),
        ("WRITER", token("dave", "write:messages", 3600)),
    ];
    println!("scopegate demo");
    println!("  gateway   http://{gateway}");
    println!("  upstream  http://{upstream}  (echoes what it receives)");
    println!("  issuer    {issuer}  (OIDC discovery + JWKS, a key made just now)");
    println!();
    print!("{}", instructions(gateway, &tokens));
    println!();
    println!("Ctrl-C to stop.");

    let listeners = Listeners {
        proxy: Some(gateway_listener),
        forward_auth: None,
        grpc: None,
        admin: None,
        ..Default::default()
    };
    crate::app::serve(
        Arc::clone(&runtime),
        listeners,
        crate::app::shutdown_signal(),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
