//! Request smuggling and framing over raw sockets. Each request carries a
//! second, pipelined request for `/api/private-scoped` without a token: the
//! gateway would never authorize it, so if the upstream ever sees it, it
//! rode along. Each case is refused (400/431) or normalized so that the
//! upstream sees exactly one unambiguous request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proxy::start;

const SMUGGLED: &str = "GET /api/private-scoped HTTP/1.1\r\nHost: a\r\n\r\n";

/// Sends the bytes, reads everything until the gateway closes (or 5 s).
pub(crate) async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_attacks_never_smuggle_a_request() {
    let (upstream, gw) = start("").await;
    let big_target = format!("/assets/{}", "a".repeat(20_000));
    // (name, first request's head and body, statuses accepted for it)
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            "CL + TE",
            format!(
                "POST /assets/x HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[200, 400],
        ),
        (
            "TE + CL",
            format!(
                "POST /assets/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[200, 400],
        ),
        (
            "two different Content-Length",
            format!(
                "POST /assets/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 48\r\n\r\n{SMUGGLED}"
            ),
            &[400],
        ),
        (
            "comma-separated Content-Length",
            format!(
                "POST /assets/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 48\r\n\r\n{SMUGGLED}"
            ),
            &[400],
        ),
        (
            "TE chunked with trailing space",
            format!(
                "POST /assets/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\nContent-Length: 48\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[200, 400],
        ),
        (
            "TE xchunked",
            format!(
                "POST /assets/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 48\r\n\r\n{SMUGGLED}"
            ),
            &[400],
        ),
        (
            "TE chunked, identity",
            format!(
                "POST /assets/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[400],
        ),
        (
            "TE in HTTP/1.0",
            format!(
                "POST /assets/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[400],
        ),
        (
            "bad chunk size",
            format!(
                "POST /assets/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{SMUGGLED}"
            ),
            // The client's framing broke: its fault, never a 502.
            &[400],
        ),
        (
            "chunk size overflow",
            format!(
                "POST /assets/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{SMUGGLED}"
            ),
            &[400],
        ),
        (
            "header name with a space",
            format!("GET /assets/x HTTP/1.1\r\nHost: a\r\nContent-Length : 48\r\n\r\n{SMUGGLED}"),
            &[400],
        ),
        (
            "obsolete line folding",
            format!(
                "GET /assets/x HTTP/1.1\r\nHost: a\r\nX-Auth-Subject: a\r\n admin\r\n\r\n{SMUGGLED}"
            ),
            &[400],
        ),
        (
            "NUL in a header value",
            format!("GET /assets/x HTTP/1.1\r\nHost: a\r\nX-Foo: a\0b\r\n\r\n{SMUGGLED}"),
            &[400],
        ),
        (
            "authority-form target",
            format!("GET gateway.test:80 HTTP/1.1\r\nHost: a\r\n\r\n{SMUGGLED}"),
            &[400],
        ),
        (
            "CONNECT",
            format!("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n{SMUGGLED}"),
            &[400],
        ),
        (
            "oversized request line",
            format!("GET {big_target} HTTP/1.1\r\nHost: a\r\n\r\n{SMUGGLED}"),
            &[400, 414, 431],
        ),
        (
            "duplicate Host",
            format!("GET /assets/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{SMUGGLED}"),
            &[400],
        ),
    ];
    // Each attack first on a connection of its own, then behind a plain
    // GET on the same connection: the gateway's own HTTP/1.1 side serves
    // the GET and hands the connection over at the attack, which must meet
    // exactly the same rules.
    const FIRST: &str = "GET /assets/first HTTP/1.1\r\nHost: a\r\n\r\n";
    for behind_a_get in [false, true] {
        for (name, bytes, allowed) in &cases {
            upstream.take();
            let prefix = if behind_a_get { FIRST } else { "" };
            let whole = exchange(gw.addr, format!("{prefix}{bytes}").as_bytes()).await;
            let response = if behind_a_get {
                assert_eq!(status_of(&whole), 200, "{name}: the GET before it\n{whole}");
                let second = whole[1..]
                    .find("HTTP/1.1 ")
                    .map_or("", |at| &whole[at + 1..]);
                second.to_owned()
            } else {
                whole
            };
            let status = status_of(&response);
            assert!(
                allowed.contains(&status),
                "{name} (behind a GET: {behind_a_get}): status {status}\n{response}"
            );
            let mut seen = upstream.take();
            if behind_a_get {
                assert_eq!(
                    seen.first().map(|r| r.target.as_str()),
                    Some("/assets/first"),
                    "{name}: {seen:?}"
                );
                seen.remove(0);
            }
            assert!(
                seen.iter().all(|r| r.target != "/api/private-scoped"),
                "{name}: a smuggled request reached the upstream: {seen:?}"
            );
            assert!(
                seen.len() <= 1,
                "{name}: the upstream saw {} requests",
                seen.len()
            );
            if status == 400 || status == 431 {
                assert!(
                    seen.is_empty(),
                    "{name}: a refused request reached the upstream"
                );
            }
        }
    }

    // Bare LF line endings are normalized: the upstream gets one clean request.
    upstream.take();
    let response = exchange(
        gw.addr,
        b"GET /assets/lf HTTP/1.1\nHost: a\nConnection: close\n\n",
    )
    .await;
    assert!(matches!(status_of(&response), 200 | 400), "{response}");
    let seen = upstream.take();
    assert!(
        seen.len() <= 1 && seen.iter().all(|r| r.target == "/assets/lf"),
        "{seen:?}"
    );
    gw.stop().await;
}

/// Resource exhaustion: idle connections, slow bodies, distinct tokens
/// against a bounded cache, and hostile token payloads. The gateway stays
/// responsive and its cache bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhaustion() {
    use serde_json::json;
    let (upstream, gw) = start("tokens:\n  cache_size: 500\n").await;
    let k = crate::support::keys::keys();

    // 300 idle connections and a slow body: others are still served.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(
            tokio::net::TcpStream::connect(gw.addr)
                .await
                .expect("connect"),
        );
    }
    let mut slow = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    slow.write_all(
        b"POST /assets/slow-body HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc",
    )
    .await
    .expect("write");
    let started = std::time::Instant::now();
    assert_eq!(
        crate::support::get(gw.addr, "/api/public", &[])
            .await
            .status,
        200
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "still responsive"
    );
    drop(idle);
    drop(slow);

    // 10,000 distinct valid tokens against a cache of 500: all verified, the
    // cache stays within its bound.
    let mut tokens = Vec::new();
    for i in 0..10_000 {
        tokens.push(
            k.ec256
                .token(&crate::proxy::claims(json!({"jti": format!("t-{i}")}))),
        );
    }
    for chunk in tokens.chunks(100) {
        let mut batch = Vec::new();
        for t in chunk {
            let (addr, auth) = (gw.addr, crate::support::bearer(t));
            batch.push(tokio::spawn(async move {
                crate::support::get(addr, "/api/private", &[("Authorization", &auth)])
                    .await
                    .status
            }));
        }
        for b in batch {
            assert_eq!(b.await.expect("join"), 200);
        }
    }
    let state = gw.runtime.shared.load();
    let cache = state.cache.as_ref().expect("cache on");
    assert!(
        cache.len() <= 600,
        "the cache holds {} entries for a bound of 500",
        cache.len()
    );
    drop(state);

    // Hostile payloads: deep nesting and a huge claim, correctly signed.
    // 2,000 levels: under tokens.max_bytes, so the JSON parser really sees it.
    let deep = format!("{}1{}", "[".repeat(2_000), "]".repeat(2_000));
    let header = crate::support::keys::b64(
        json!({"alg": "ES256", "kid": "ec-256"})
            .to_string()
            .as_bytes(),
    );
    let payload = crate::support::keys::b64(
        format!(
            r#"{{"iss":"{}","aud":"{}","exp":{},"x":{deep}}}"#,
            crate::proxy::ISS_A,
            crate::proxy::AUD,
            crate::support::now() + 60
        )
        .as_bytes(),
    );
    let input = format!("{header}.{payload}");
    let deep_token = format!(
        "{input}.{}",
        crate::support::keys::b64(&k.ec256.sign_raw("ES256", input.as_bytes()))
    );
    let resp = crate::support::get(
        gw.addr,
        "/api/private",
        &[("Authorization", &crate::support::bearer(&deep_token))],
    )
    .await;
    assert!(deep_token.len() < 8192, "under the size cap");
    assert_eq!(
        resp.status, 401,
        "a 2,000-deep payload is refused, not a stack overflow"
    );
    assert_eq!(resp.json()["error_description"], "malformed token");
    let huge = k
        .ec256
        .token(&crate::proxy::claims(json!({"pad": "x".repeat(100_000)})));
    let resp = crate::support::get(
        gw.addr,
        "/api/private",
        &[("Authorization", &crate::support::bearer(&huge))],
    )
    .await;
    assert!(resp.status == 401 || resp.status == 431, "{}", resp.status);
    assert_eq!(
        crate::support::get(gw.addr, "/api/public", &[])
            .await
            .status,
        200,
        "still serving"
    );
    let _ = upstream;
    gw.stop().await;
}
