//! Real ingress peers in front of the forward-auth listener: Debian's nginx
//! (`auth_request`) and Caddy (`forward_auth`), started on loopback with
//! exactly the snippets the README shows. Allow, 401 and 403 end to end;
//! refused requests never reach the upstream.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::forward_auth::forward_auth_config;
use crate::proxy::claims;
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, Upstream, bearer, free_port, get};

/// The nginx `auth_request` recipe of the README, with its ports filled in.
pub fn nginx_snippet(forward_auth: u16, upstream: u16) -> String {
    format!(
        r#"    location = /_scopegate {{
        internal;
        proxy_pass http://127.0.0.1:{forward_auth};
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Original-Method $request_method;
    }}
    location / {{
        auth_request /_scopegate;
        auth_request_set $auth_subject $upstream_http_x_auth_subject;
        auth_request_set $auth_scopes $upstream_http_x_auth_scopes;
        proxy_set_header X-Auth-Subject $auth_subject;
        proxy_set_header X-Auth-Scopes $auth_scopes;
        proxy_pass http://127.0.0.1:{upstream};
    }}"#
    )
}

/// The Caddy `forward_auth` recipe of the README, with its ports filled in.
pub fn caddy_snippet(forward_auth: u16, upstream: u16) -> String {
    format!(
        r#"	forward_auth 127.0.0.1:{forward_auth} {{
		uri /
		copy_headers X-Auth-Subject X-Auth-Scopes
	}}
	reverse_proxy 127.0.0.1:{upstream}"#
    )
}

/// Starts a process and waits until `port` accepts connections.
async fn start_peer(mut cmd: std::process::Command, port: u16, log: &Path) -> std::process::Child {
    let log_file = std::fs::File::create(log).expect("log file");
    cmd.stdout(log_file.try_clone().expect("log"))
        .stderr(log_file);
    let mut child = cmd.spawn().expect("spawn peer");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "the peer did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The same checks through any peer listening on `port`.
async fn check_end_to_end(peer: &str, port: u16, upstream: &Upstream) {
    let k = keys();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let good = bearer(&k.rsa.token(&claims(json!({"scope": "read:messages"}))));
    let weak = bearer(&k.rsa.token(&claims(json!({}))));

    let ok = get(
        addr,
        "/api/private-scoped?page=2",
        &[("Authorization", &good), ("X-Auth-Subject", "admin")],
    )
    .await;
    assert_eq!(ok.status, 200, "{peer}: {}", ok.text());
    assert_eq!(
        ok.text(),
        "upstream-ok 0",
        "{peer}: {:?} upstream saw {:?}",
        ok.headers,
        upstream.requests()
    );
    let seen = upstream.take();
    assert_eq!(seen.len(), 1, "{peer}");
    assert_eq!(seen[0].target, "/api/private-scoped?page=2", "{peer}");
    assert_eq!(
        seen[0].header("x-auth-subject"),
        Some("user-1"),
        "{peer}: identity from the token, the client's copy overwritten"
    );
    assert_eq!(
        seen[0].header("x-auth-scopes"),
        Some("read:messages"),
        "{peer}"
    );

    let none = get(addr, "/api/private-scoped", &[]).await;
    assert_eq!(none.status, 401, "{peer}");
    assert!(
        none.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer realm=")),
        "{peer}: the challenge reaches the client"
    );
    assert_eq!(
        get(addr, "/api/private-scoped", &[("Authorization", &weak)])
            .await
            .status,
        403,
        "{peer}"
    );
    // The client adds every other convention's headers, naming a public
    // path: the ingress passes them through, and they must decide nothing.
    let steered = get(
        addr,
        "/api/private-scoped",
        &[
            ("X-Original-URL", "http://gateway.test/api/public"),
            ("X-Original-URI", "/api/public"),
            ("X-Forwarded-Uri", "/api/public"),
            ("X-Original-Method", "GET"),
            ("X-Forwarded-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(
        steered.status, 401,
        "{peer}: a client-injected forward-auth header changed the decision"
    );
    let trick = get(addr, "/api/public/../private-scoped", &[]).await;
    assert_eq!(
        trick.status, 401,
        "{peer}: the traversal is decided on the resolved path"
    );
    let encoded = get(
        addr,
        "/api/public%2F..%2Fprivate-scoped",
        &[("Authorization", &good)],
    )
    .await;
    assert!(
        encoded.status >= 400,
        "{peer}: an encoded slash is never let through ({})",
        encoded.status
    );
    assert!(
        upstream.requests().is_empty(),
        "{peer}: refused requests never reach the upstream: {:?}",
        upstream.requests()
    );
    assert_eq!(
        get(addr, "/api/public", &[]).await.status,
        200,
        "{peer}: auth none"
    );
    upstream.take();
}

async fn gateway(convention: &str) -> (Gateway, Upstream) {
    let upstream = Upstream::start().await;
    let k = keys();
    let gw = Gateway::start(
        &forward_auth_config(None, None, convention),
        &[("jwks.json", &jwks(&[&k.rsa]))],
    )
    .await;
    (gw, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nginx_auth_request() {
    let Some(nginx) = crate::support::installed(&["nginx"], "nginx") else {
        return;
    };
    let (gw, upstream) = gateway("nginx").await;
    let fa = gw.forward_auth.expect("forward-auth").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let port = free_port();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n{}\n  }}\n}}\n",
        nginx_snippet(fa, upstream.addr.port())
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("write");
    let mut cmd = std::process::Command::new(nginx);
    cmd.arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(dir.path().join("nginx.conf"));
    let mut child = start_peer(cmd, port, &dir.path().join("stdout.log")).await;
    check_end_to_end("nginx", port, &upstream).await;
    let _ = child.kill();
    let _ = child.wait();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_caddy_forward_auth() {
    let Some(caddy) = crate::support::installed(&["caddy"], "caddy") else {
        return;
    };
    let (gw, upstream) = gateway("caddy").await;
    let fa = gw.forward_auth.expect("forward-auth").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let caddyfile = format!(
        "{{\n\tadmin off\n\tauto_https off\n}}\nhttp://:{port} {{\n\tbind 127.0.0.1\n{}\n}}\n",
        caddy_snippet(fa, upstream.addr.port())
    );
    std::fs::write(dir.path().join("Caddyfile"), caddyfile).expect("write");
    let mut cmd = std::process::Command::new(caddy);
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.path().join("Caddyfile"))
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    let mut child = start_peer(cmd, port, &dir.path().join("caddy.log")).await;
    check_end_to_end("caddy", port, &upstream).await;
    // Caddy hands the client scopegate's own refusal, JSON body included.
    let refused = get(([127, 0, 0, 1], port).into(), "/api/private-scoped", &[]).await;
    assert_eq!(refused.json()["error"], "unauthorized");
    let _ = child.kill();
    let _ = child.wait();
    gw.stop().await;
}
