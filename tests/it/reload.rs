//! Config that changes under a running gateway: edits in place, editor
//! renames, Kubernetes `..data` symlink swaps, SIGHUP, invalid edits,
//! reloads under load, and a graceful SIGTERM.

use std::path::Path;
use std::time::Duration;

use scopegate::telemetry::ReloadResult;
use serde_json::json;

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, JwksServer, Upstream, get};

/// A config whose open routes are `routes` (each `auth: none`).
fn config_with(upstream: &Upstream, routes: &[&str]) -> String {
    let mut cfg = format!("upstream:\n  url: \"http://{}\"\nroutes:\n", upstream.addr);
    for r in routes {
        cfg.push_str(&format!("  - path: {r}\n    auth: none\n"));
    }
    cfg
}

/// Writes like an editor: to a temporary file, then a rename over the target.
fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn until_served(gw: &Gateway, path: &str, status: u16, limit: Duration) -> Option<Duration> {
    crate::support::wait_for_status(gw.addr, path, &[], status, limit).await
}

async fn until_reloads(gw: &Gateway, ok: bool, count: u64) -> bool {
    let ok = if ok {
        ReloadResult::Applied
    } else {
        ReloadResult::Error
    };
    for _ in 0..200 {
        if gw.runtime.metrics.reloads(ok) >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_and_invalid_edits_change_nothing() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream, &["/a"]), &[]).await;
    assert_eq!(get(gw.addr, "/b", &[]).await.status, 404);

    // A valid in-place edit applies.
    std::fs::write(gw.path(), config_with(&upstream, &["/a", "/b"])).expect("write");
    let took = until_served(&gw, "/b", 200, Duration::from_secs(5))
        .await
        .expect("edit applied");
    eprintln!("reload: in-place edit served after {took:?}");
    assert!(until_reloads(&gw, true, 1).await);

    // Invalid edits: the previous config keeps serving, each is counted.
    let good = config_with(&upstream, &["/a", "/b"]);
    let invalid = [
        "upstream: [unclosed\n".to_owned(),
        format!("{good}routez: []\n"),
        format!("{good}  - path: /a\n    auth: none\n"),
        format!(
            "{good}issuers:\n  - issuer: https://x/\n    audiences: [a]\n    jwks_file: missing.json\n"
        ),
    ];
    for (i, bad) in invalid.iter().enumerate() {
        write_atomic(&gw.path(), bad);
        assert!(
            until_reloads(&gw, false, i as u64 + 1).await,
            "invalid edit {i} was not counted"
        );
        assert_eq!(
            get(gw.addr, "/b", &[]).await.status,
            200,
            "invalid edit {i} changed the routes"
        );
        assert_eq!(get(gw.addr, "/a", &[]).await.status, 200);
    }
    assert_eq!(gw.runtime.metrics.reloads(ReloadResult::Applied), 1);

    // Rewriting the same content is not a reload.
    write_atomic(&gw.path(), &config_with(&upstream, &["/a", "/c"]));
    assert!(
        until_served(&gw, "/c", 200, Duration::from_secs(5))
            .await
            .is_some(),
        "editor-style rename applies"
    );
    assert_eq!(get(gw.addr, "/b", &[]).await.status, 404);
    let applied = gw.runtime.metrics.reloads(ReloadResult::Applied);
    write_atomic(&gw.path(), &config_with(&upstream, &["/a", "/c"]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        gw.runtime.metrics.reloads(ReloadResult::Applied),
        applied,
        "identical content must not count as a reload"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_swap_applies() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // The kubelet's layout: gateway.yaml -> ..data/gateway.yaml,
        // ..data -> ..2026_11_22_v1/
        std::fs::create_dir(root.join("..v1")).expect("mkdir");
        std::fs::write(
            root.join("..v1/gateway.yaml"),
            config_with(&upstream, &["/a"]),
        )
        .expect("write");
        symlink("..v1", root.join("..data")).expect("symlink");
        symlink("..data/gateway.yaml", root.join("gateway.yaml")).expect("symlink");
        let path = root.join("gateway.yaml");
        let gw = Gateway::serve_path(dir, &path).await;
        assert_eq!(get(gw.addr, "/b", &[]).await.status, 404);

        // An update: a new timestamped directory, a new ..data link renamed
        // over the old one (atomic), the old directory removed.
        let root = gw.dir.path();
        std::fs::create_dir(root.join("..v2")).expect("mkdir");
        std::fs::write(
            root.join("..v2/gateway.yaml"),
            config_with(&upstream, &["/a", "/b"]),
        )
        .expect("write");
        symlink("..v2", root.join("..data_tmp")).expect("symlink");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
        std::fs::remove_dir_all(root.join("..v1")).expect("cleanup");
        let took = until_served(&gw, "/b", 200, Duration::from_secs(5))
            .await
            .expect("the swap applies");
        eprintln!("reload: ConfigMap swap served after {took:?}");
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_issuers_keep_their_keys_across_reloads() {
    let upstream = Upstream::start().await;
    let k = keys();
    let idp = JwksServer::start(200, jwks(&[&k.rsa])).await;
    let issuer = |routes: &str| {
        format!(
            "upstream:\n  url: \"http://{}\"\nissuers:\n  - issuer: \"{ISS_A}\"\n    audiences: [\"{AUD}\"]\n    jwks_uri: {}\nroutes:\n{routes}",
            upstream.addr,
            idp.url()
        )
    };
    let gw = Gateway::start(&issuer("  - path: /api/private\n"), &[]).await;
    let token = k.rsa.token(&claims(json!({})));
    let mut ready = false;
    for _ in 0..100 {
        if crate::support::bearer_status(gw.addr, "/api/private", &token).await == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready);
    for i in 0..5 {
        std::fs::write(
            gw.path(),
            issuer(&format!(
                "  - path: /api/private\n  - path: /r{i}\n    auth: none\n"
            )),
        )
        .expect("write");
        assert!(
            until_served(&gw, &format!("/r{i}"), 200, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert_eq!(
            crate::support::bearer_status(gw.addr, "/api/private", &token).await,
            200,
            "keys kept across reload {i}"
        );
    }
    assert_eq!(
        idp.hits(),
        1,
        "an unchanged issuer is not refetched on every edit"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_has_no_errors_and_no_mixed_answers() {
    let upstream = Upstream::start().await;
    let v1 = config_with(&upstream, &["/a", "/one"]);
    let v2 = config_with(&upstream, &["/a", "/two"]);
    let gw = Gateway::start(&v1, &[]).await;
    let addr = gw.addr;
    let path = gw.path();
    let writer = tokio::spawn(async move {
        for i in 0..100 {
            write_atomic(&path, if i % 2 == 0 { &v2 } else { &v1 });
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    // Two client loops on keep-alive connections, 10,000 requests each.
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(tokio::spawn(async move {
            use http_body_util::{BodyExt, Empty};
            use hyper_util::rt::TokioIo;
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut answers = std::collections::BTreeMap::<(String, u16), usize>::new();
            for i in 0..10_000 {
                let target = ["/a", "/one", "/two"][i % 3];
                let req = http::Request::get(target)
                    .header("host", "gw.test")
                    .body(Empty::<bytes::Bytes>::new())
                    .expect("request");
                let resp = sender.send_request(req).await.expect("no transport error");
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await.expect("body");
                *answers.entry((target.to_owned(), status)).or_default() += 1;
            }
            answers
        }));
    }
    let mut total = std::collections::BTreeMap::<(String, u16), usize>::new();
    for c in clients {
        for (k, v) in c.await.expect("client") {
            *total.entry(k).or_default() += v;
        }
    }
    writer.await.expect("writer");
    eprintln!(
        "reload under load: {total:?}, {} reloads applied",
        gw.runtime.metrics.reloads(ReloadResult::Applied)
    );
    for ((target, status), n) in &total {
        let allowed: &[u16] = if target == "/a" { &[200] } else { &[200, 404] };
        assert!(
            allowed.contains(status),
            "{n} answers {status} for {target}"
        );
    }
    assert_eq!(total.values().sum::<usize>(), 20_000);
    assert!(
        gw.runtime.metrics.reloads(ReloadResult::Applied) >= 10,
        "the config really changed during the run"
    );
    assert_eq!(gw.runtime.metrics.reloads(ReloadResult::Error), 0);
    gw.stop().await;
}

/// The real binary: SIGHUP reloads a change the directory watch cannot see
/// (the config is a symlink into another directory), and SIGTERM lets a
/// streaming response finish before the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains() {
    #[cfg(unix)]
    {
        use tokio::io::AsyncWriteExt;
        let upstream = Upstream::start().await;
        let port = crate::support::free_port();
        let real = tempfile::tempdir().expect("tempdir");
        let watched = tempfile::tempdir().expect("tempdir");
        let listen = format!("listen: 127.0.0.1:{port}\n");
        let v1 = format!(
            "{listen}{}",
            config_with(&upstream, &["/a", "/drip", "/slow"])
        );
        std::fs::write(real.path().join("real.yaml"), &v1).expect("write");
        std::os::unix::fs::symlink(
            real.path().join("real.yaml"),
            watched.path().join("gateway.yaml"),
        )
        .expect("symlink");
        let (mut child, addr) =
            crate::support::run_binary(&watched.path().join("gateway.yaml"), port, &[], false)
                .await;
        let signal = |sig: &str| crate::support::signal(&child, sig);

        // Edit the real file: the watched directory sees nothing.
        std::fs::write(
            real.path().join("real.yaml"),
            format!(
                "{listen}{}",
                config_with(&upstream, &["/a", "/drip", "/slow", "/b"])
            ),
        )
        .expect("write");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            get(addr, "/b", &[]).await.status,
            404,
            "no watch event for a file in another directory"
        );
        signal("-HUP");
        let mut applied = false;
        for _ in 0..100 {
            if get(addr, "/b", &[]).await.status == 200 {
                applied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(applied, "SIGHUP reloads");

        // A kept-alive connection that waits for its next request.
        let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(crate::support::read_response(&mut idle).await.status, 200);

        // A response that streams for about a second, then SIGTERM mid-way.
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /drip HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        // A request whose answer (5 s away) comes after the drain began.
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(250)).await;
        signal("-TERM");
        // The idle connection is closed when the drain begins, not at its
        // end (`drain_timeout` is 30 s by default).
        let mut rest = [0u8; 64];
        let closed = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut idle, &mut rest),
        )
        .await;
        assert!(
            matches!(closed, Ok(Ok(0))),
            "an idle connection was not closed by the drain: {closed:?}"
        );
        let resp = crate::support::read_response(&mut stream).await;
        assert_eq!(resp.status, 200);
        let expected: String = (0..crate::support::DRIP_CHUNKS)
            .map(|i| format!("chunk-{i};"))
            .collect();
        assert_eq!(
            resp.text(),
            expected,
            "the in-flight response arrives whole"
        );
        // It is answered, says the connection closes, and closes it.
        let resp = crate::support::read_response(&mut slow).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), Some("close"));
        let after = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut slow, &mut rest),
        )
        .await;
        assert!(matches!(after, Ok(Ok(0))), "still open: {after:?}");
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert_eq!(status.code(), Some(0), "exit 0 after draining");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed"
        );
    }
}

/// Issue 12: a reload that changes only an unrelated field of an issuer
/// while its JWKS endpoint is down keeps the last good keys; a reload that
/// brings in the first remote issuer gets it a fetcher, and `/readyz` names
/// it until its keys arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_keys_of_an_unchanged_source_and_fetch_new_ones() {
    let upstream = Upstream::start().await;
    let k = keys();
    let idp = JwksServer::start(200, jwks(&[&k.rsa])).await;
    let config = |issuer_extra: &str| {
        format!(
            "admin_listen: \"127.0.0.1:0\"\nupstream:\n  url: \"http://{}\"\nissuers:\n  - issuer: \"{ISS_A}\"\n    audiences: [\"{AUD}\"]\n    jwks_uri: {}\n{issuer_extra}routes:\n  - path: /api/private\n",
            upstream.addr,
            idp.url(),
        )
    };
    let gw = Gateway::start(&config(""), &[]).await;
    let token = k.rsa.token(&claims(json!({})));
    let auth = crate::support::bearer(&token);
    assert!(
        crate::support::wait_for_status(
            gw.addr,
            "/api/private",
            &[("Authorization", &auth)],
            200,
            Duration::from_secs(10)
        )
        .await
        .is_some()
    );
    // The IdP goes down; only jwks_refresh and clock_skew change.
    idp.set(500, "down".into());
    let retimed = config("    jwks_refresh: 2m\n    clock_skew: 5s\n    jwks_max_stale: 1h\n");
    std::fs::write(gw.path(), &retimed).expect("write");
    assert!(until_reloads(&gw, true, 1).await, "the edit was applied");
    for _ in 0..5 {
        assert_eq!(
            crate::support::bearer_status(gw.addr, "/api/private", &token).await,
            200,
            "the last good keys keep serving: the key source did not change"
        );
    }
    let admin = gw.admin.expect("admin listener");
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);
    assert_eq!(idp.hits(), 1, "no refetch for an unchanged source");
    idp.set(200, jwks(&[&k.rsa]));
    gw.stop().await;

    // A config without remote issuers, then a reload that adds one.
    let dir_config = format!(
        "admin_listen: \"127.0.0.1:0\"\nupstream:\n  url: \"http://{}\"\nissuers:\n  - issuer: \"https://static.test/\"\n    audiences: [\"{AUD}\"]\n    jwks_file: jwks.json\nroutes:\n  - path: /api/private\n",
        upstream.addr
    );
    let gw = Gateway::start(&dir_config, &[("jwks.json", &jwks(&[&k.rsa]))]).await;
    let admin = gw.admin.expect("admin listener");
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);
    idp.set_delay(Duration::from_millis(1500));
    let hits = idp.hits();
    let added = dir_config.replace(
        "routes:",
        &format!(
            "  - issuer: \"{ISS_A}\"\n    audiences: [\"{AUD}\"]\n    jwks_uri: {}\nroutes:",
            idp.url()
        ),
    );
    std::fs::write(gw.path(), added).expect("write");
    assert!(until_reloads(&gw, true, 1).await, "the edit was applied");
    let waiting = get(admin, "/readyz", &[]).await;
    assert_eq!(
        waiting.status, 503,
        "a new key source is not ready before its first fetch"
    );
    assert_eq!(waiting.json()["waiting_for_keys"], json!([ISS_A]));
    assert_eq!(
        crate::support::bearer_status(gw.addr, "/api/private", &token).await,
        503,
        "its tokens wait for keys, with Retry-After"
    );
    assert!(
        crate::support::wait_for_status(
            gw.addr,
            "/api/private",
            &[("Authorization", &auth)],
            200,
            Duration::from_secs(10)
        )
        .await
        .is_some(),
        "the issuer a reload added gets its keys without a restart"
    );
    assert!(idp.hits() > hits);
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);
    gw.stop().await;
}

/// Issue 12: the watcher reacts to the config file (and the files it
/// names), not to every write in its directory; SIGHUP-style reloads of an
/// unchanged file are counted as `unchanged`; every result starts at zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beside_the_config_are_no_reason_to_reload() {
    let upstream = Upstream::start().await;
    let cfg = format!(
        "admin_listen: \"127.0.0.1:0\"\nupstream:\n  url: \"http://{}\"\nroutes:\n  - path: /a\n    auth: none\n",
        upstream.addr
    );
    let gw = Gateway::start(&cfg, &[]).await;
    let admin = gw.admin.expect("admin listener");
    let metrics = get(admin, "/metrics", &[]).await.text();
    for result in ["applied", "unchanged", "error"] {
        assert!(
            metrics.contains(&format!(
                "scopegate_config_reloads_total{{result=\"{result}\"}} 0"
            )),
            "{result} starts at zero: {metrics}"
        );
    }
    let log = gw.dir.path().join("app.log");
    for i in 0..20 {
        std::fs::write(&log, format!("line {i}\n")).expect("write log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    for result in [
        ReloadResult::Applied,
        ReloadResult::Unchanged,
        ReloadResult::Error,
    ] {
        assert_eq!(
            gw.runtime.metrics.reloads(result),
            0,
            "{result:?}: a log file beside the config triggered a reload"
        );
    }
    // The config file itself, rewritten as it was: one unchanged reload.
    std::fs::write(gw.path(), &cfg).expect("write");
    let mut unchanged = 0;
    for _ in 0..40 {
        unchanged = gw.runtime.metrics.reloads(ReloadResult::Unchanged);
        if unchanged >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(unchanged, 1);
    gw.stop().await;
}
