//! A real browser (headless Chromium) against the gateway: a page on one
//! loopback origin calls the gateway on another with an `Authorization`
//! header. The preflight passes without a token, an allowed call's body
//! reaches the script, a 401's JSON is readable by the script, and a page
//! on an origin that is not allowed is blocked by the browser itself.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::Upstream;
use crate::support::keys::{jwks, keys};

/// Serves `html` at every path: the app's origin.
async fn page_server(html: String) -> SocketAddr {
    crate::support::accept_each(move |stream, _| {
        let html = html.clone();
        async move {
            let svc =
                hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let mut resp = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(html.clone()),
                    ));
                    resp.headers_mut().insert(
                        "content-type",
                        "text/html; charset=utf-8".parse().expect("value"),
                    );
                    async move { Ok::<_, Infallible>(resp) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        }
    })
    .await
}

fn page(gateway: SocketAddr, good: &str, expired: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const gw = "http://{gateway}/api/messages";
async function call(token) {{
  try {{
    const r = await fetch(gw, {{ headers: {{ "Authorization": "Bearer " + token }} }});
    const text = await r.text();
    let body = text; try {{ body = JSON.parse(text); }} catch (e) {{}}
    return {{ status: r.status, body: body, challenge: r.headers.get("WWW-Authenticate") }};
  }} catch (e) {{ return {{ blocked: String(e) }}; }}
}}
(async () => {{
  const out = {{ allowed: await call("{good}"), refused: await call("{expired}") }};
  document.getElementById("out").textContent = JSON.stringify(out);
}})();
</script></body></html>"#
    )
}

/// Loads `url` in headless Chromium and returns what the script wrote.
async fn run_page(browser: PathBuf, url: String) -> Value {
    let profile = tempfile::tempdir().expect("profile");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=10000",
                "--dump-dom",
            ])
            .arg(profile_arg)
            .arg(url)
            .output()
            .expect("run chromium")
    })
    .await
    .expect("join");
    let dom = String::from_utf8_lossy(&output.stdout);
    let start = dom
        .find("<pre id=\"out\">")
        .map(|i| i + "<pre id=\"out\">".len())
        .expect("the page rendered");
    let end = dom[start..].find("</pre>").expect("closing tag") + start;
    let text = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    serde_json::from_str(&text).unwrap_or_else(|_| {
        panic!(
            "the script did not finish: {text:?}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_calls_the_gateway_across_origins() {
    let Some(browser) = crate::support::installed(
        &["chromium", "chromium-browser", "google-chrome"],
        "chromium",
    ) else {
        return;
    };
    let upstream = Upstream::start().await;
    let k = keys();
    let good = k.rsa.token(&claims(json!({"scope": "read:messages"})));
    let expired = k
        .rsa
        .token(&claims(json!({"scope": "read:messages", "exp": 1000})));
    // The gateway's port must be known before the page is written.
    let gw_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let gw_addr = gw_listener.local_addr().expect("addr");
    drop(gw_listener);
    let app = page_server(page(gw_addr, &good, &expired)).await;
    let cfg = format!(
        "listen: {gw_addr}\nupstream:\n  url: \"http://{}\"\nissuers:\n  - issuer: \"{ISS_A}\"\n    audiences: [\"{AUD}\"]\n    jwks_file: jwks.json\ncors:\n  allowed_origins: [\"http://127.0.0.1:{}\"]\n  allowed_headers: [Authorization]\nroutes:\n  - path: /api/messages\n    methods: [GET]\n    scopes: [read:messages]\n",
        upstream.addr,
        app.port()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&k.rsa])).expect("write");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, cfg).expect("write");
    let (mut child, _) = crate::support::run_binary(&path, gw_addr.port(), &[], false).await;

    let result = run_page(
        browser.clone(),
        format!("http://127.0.0.1:{}/app.html", app.port()),
    )
    .await;
    assert_eq!(result["allowed"]["status"], 200, "{result}");
    assert_eq!(
        result["allowed"]["body"], "upstream-ok 0",
        "the allowed body reaches the script"
    );
    assert_eq!(result["refused"]["status"], 401, "{result}");
    assert_eq!(
        result["refused"]["body"]["error"], "invalid_token",
        "the refusal's JSON is readable"
    );
    assert_eq!(
        result["refused"]["body"]["error_description"],
        "token expired"
    );
    assert!(
        result["refused"]["challenge"]
            .as_str()
            .is_some_and(|c| c.contains("invalid_token")),
        "WWW-Authenticate is exposed"
    );
    let seen = upstream.take();
    assert_eq!(
        seen.len(),
        1,
        "preflights and refusals never reach the upstream: {seen:?}"
    );
    assert_eq!(seen[0].method, "GET");

    // The same page from another origin (localhost is not 127.0.0.1): blocked.
    let blocked = run_page(browser, format!("http://localhost:{}/app.html", app.port())).await;
    assert!(
        blocked["allowed"]["blocked"]
            .as_str()
            .is_some_and(|e| e.contains("TypeError")),
        "{blocked}"
    );
    assert!(blocked["refused"]["blocked"].is_string(), "{blocked}");
    assert!(
        upstream.requests().is_empty(),
        "a blocked preflight lets nothing through"
    );
    let _ = child.kill();
    let _ = child.wait();
}
