//! `workers: N`: the real binary with two event loops, each a thread and
//! current-thread runtime of its own with its own socket on the address
//! (`SO_REUSEPORT`). Both serve, under one state (reloads reach both), one
//! connection limit, one Redis quota (over a connection each), and one
//! drain.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::proxy::{claims, config};
use crate::support::keys::{jwks, keys};
use crate::support::{Raw, Upstream, bearer, read_response, run_binary};

/// Writes the proxy tests' config with `extra` (listening on `port`) and
/// the key sets beside it; returns the directory and the config path.
fn write_config(
    upstream: &Upstream,
    port: u16,
    extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let k = keys();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("jwks-a.json"), jwks(&[&k.rsa])).expect("write");
    std::fs::write(dir.path().join("jwks-b.json"), jwks(&[&k.rsa_other])).expect("write");
    let yaml = config(&upstream.addr.to_string(), extra).replace(
        "listen: \"127.0.0.1:0\"",
        &format!("listen: \"127.0.0.1:{port}\""),
    );
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write");
    (dir, path)
}

/// The gateway process, killed if the test fails before it ends it.
struct Process(Option<std::process::Child>);

impl Process {
    fn signal(&self, sig: &str) {
        crate::support::signal(self.0.as_ref().expect("running"), sig);
    }

    async fn wait(mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET path` with `headers` on a kept-alive connection.
async fn get_on(stream: &mut TcpStream, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_response(stream).await
}

/// A request to the proxy, with a bearer token or none.
async fn send(stream: &mut TcpStream, path: &str, token: Option<&str>) -> Raw {
    match token {
        Some(token) => get_on(stream, path, &[("Authorization", &bearer(token))]).await,
        None => get_on(stream, path, &[]).await,
    }
}

/// A forward-auth question (nginx's `auth_request` convention).
async fn ask(stream: &mut TcpStream, token: &str) -> Raw {
    let auth = bearer(token);
    let headers = [
        ("X-Original-URI", "/api/private-scoped"),
        ("X-Original-Method", "GET"),
        ("Authorization", auth.as_str()),
    ];
    get_on(stream, "/auth", &headers).await
}

/// `scopegate_connections_accepted_total{listener=…,worker=…}`, by
/// worker.
async fn accepted_by_worker(admin: SocketAddr, listener: &str) -> Vec<(String, f64)> {
    let metrics = crate::support::get(admin, "/metrics", &[]).await.text();
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("scopegate_connections_accepted_total{")?;
            let (labels, value) = rest.split_once("} ")?;
            labels
                .contains(&format!("listener=\"{listener}\""))
                .then_some(())?;
            let worker = labels.split("worker=\"").nth(1)?.split('"').next()?;
            Some((worker.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_serve_under_one_state_and_drain_together() {
    let upstream = Upstream::start().await;
    let (port, admin_port) = (crate::support::free_port(), crate::support::free_port());
    let fa_port = crate::support::free_port();
    let extra = format!(
        "workers: 2\nadmin_listen: \"127.0.0.1:{admin_port}\"\nforward_auth:\n  listen: \"127.0.0.1:{fa_port}\"\n  convention: nginx\n"
    );
    let (dir, path) = write_config(&upstream, port, &extra);
    let (child, addr) = run_binary(&path, port, &[], false).await;
    let gateway = Process(Some(child));
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let before: f64 = accepted_by_worker(admin, "proxy")
        .await
        .iter()
        .map(|(_, n)| n)
        .sum();

    // 32 connections: the kernel spreads them over both sockets.
    let k = keys();
    let token = k.rsa.token(&claims(json!({"scope": "read:messages"})));
    let unscoped = k.rsa.token(&claims(json!({})));
    let mut streams = Vec::new();
    for _ in 0..32 {
        streams.push(TcpStream::connect(addr).await.expect("connect"));
    }
    upstream.take();
    for stream in &mut streams {
        let allowed = send(stream, "/api/private-scoped", Some(&token)).await;
        assert_eq!(allowed.status, 200, "{}", allowed.text());
        let refused = send(stream, "/api/private-scoped", Some(&unscoped)).await;
        assert_eq!(refused.status, 403);
        assert_eq!(
            send(stream, "/api/private-scoped/../private-scoped", None)
                .await
                .status,
            401
        );
    }
    let seen = upstream.take();
    assert_eq!(seen.len(), 32, "only the allowed requests arrive: {seen:?}");
    for request in &seen {
        assert_eq!(request.target, "/api/private-scoped");
        let subject = request.headers.iter().find(|(n, _)| n == "x-auth-subject");
        assert_eq!(subject.map(|(_, v)| v.as_str()), Some("user-1"));
    }
    let accepted = accepted_by_worker(admin, "proxy").await;
    let count = |worker: &str| {
        accepted
            .iter()
            .find(|(w, _)| w == worker)
            .map_or(0.0, |(_, n)| *n)
    };
    assert!(
        count("0") > 0.0 && count("1") > 0.0,
        "both workers accepted some of 32 connections: {accepted:?}"
    );
    assert_eq!(count("0") + count("1") - before, 32.0, "{accepted:?}");

    // Forward-auth has a socket per worker too.
    let fa: SocketAddr = ([127, 0, 0, 1], fa_port).into();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(fa).await.expect("connect");
        let allowed = ask(&mut stream, &token).await;
        assert_eq!(allowed.status, 200);
        assert_eq!(allowed.header("x-auth-subject"), Some("user-1"));
        assert_eq!(ask(&mut stream, &unscoped).await.status, 403);
    }
    let asked = accepted_by_worker(admin, "forward_auth").await;
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked.iter().all(|(_, n)| *n > 0.0),
        "both workers answered some of 16 forward-auth connections: {asked:?}"
    );
    assert!(upstream.take().is_empty(), "forward-auth forwards nothing");

    // A reload, applied by the first worker's runtime, reaches every
    // connection on both.
    let (_reload_dir, reloaded) = write_config(
        &upstream,
        port,
        &format!("  - path: /api/added\n    auth: none\n{extra}"),
    );
    std::fs::copy(&reloaded, &path).expect("replace the config");
    let mut applied = false;
    for _ in 0..100 {
        if send(&mut streams[0], "/api/added", None).await.status == 200 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "the reload was applied");
    for stream in &mut streams {
        assert_eq!(send(stream, "/api/added", None).await.status, 200);
    }

    // A second gateway on the same address is refused, as with one
    // socket: SO_REUSEPORT must not let it take a share of the connections.
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut second = Process(Some(second));
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = second
            .0
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
        {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(1),
        "the second gateway must not start"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut second.0.take().and_then(|c| c.stderr).expect("stderr"),
        &mut stderr,
    )
    .expect("read");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}: ")),
        "{stderr}"
    );

    // Every connection streams a response; SIGTERM mid-way: both workers
    // let theirs finish, then the process exits 0.
    for stream in &mut streams {
        stream
            .write_all(b"GET /assets/drip HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    gateway.signal("-TERM");
    let expected: String = (0..crate::support::DRIP_CHUNKS)
        .map(|i| format!("chunk-{i};"))
        .collect();
    for stream in &mut streams {
        let resp = read_response(stream).await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.text(),
            expected,
            "the in-flight response arrives whole"
        );
    }
    let status = gateway.wait().await;
    assert_eq!(status.code(), Some(0), "exit 0 after both workers drained");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no worker listens any more"
    );
    drop(dir);
}

/// `limits.max_connections` counts the connections of every worker: with
/// two workers and a limit of 4, four of eight connections are served and
/// the others wait, whichever worker they reached; each slot freed serves
/// one of them (a worker waiting for a slot with nobody in its own backlog
/// must not keep it from the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_is_shared_by_the_workers() {
    let upstream = Upstream::start().await;
    let port = crate::support::free_port();
    let (_dir, path) = write_config(
        &upstream,
        port,
        "workers: 2\nlimits:\n  max_connections: 4\n",
    );
    let (child, addr) = run_binary(&path, port, &[], false).await;
    let _gateway = Process(Some(child));
    // run_binary's probe connection holds a slot until the gateway sees it
    // closed.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (served_tx, mut served) = tokio::sync::mpsc::unbounded_channel();
    let mut close = Vec::new();
    for i in 0..8 {
        let served = served_tx.clone();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        close.push((i, Some(close_tx)));
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let resp = send(&mut stream, "/api/public", None).await;
            assert_eq!(resp.status, 200);
            let _ = served.send(i);
            let _ = close_rx.await;
        });
    }
    let collect = |served: &mut tokio::sync::mpsc::UnboundedReceiver<usize>| {
        let mut got = Vec::new();
        while let Ok(i) = served.try_recv() {
            got.push(i);
        }
        got
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = collect(&mut served);
    assert_eq!(first.len(), 4, "four served, four waiting: {first:?}");
    for round in 0..2 {
        // Close the first two served connections: two more are served.
        let freed: Vec<usize> = if round == 0 {
            first[..2].to_vec()
        } else {
            first[2..].to_vec()
        };
        for i in &freed {
            if let Some(tx) = close[*i].1.take() {
                let _ = tx.send(());
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let next = collect(&mut served);
        assert_eq!(
            next.len(),
            2,
            "round {round}: each freed slot serves one waiting connection: {next:?}"
        );
    }
}

/// A Redis quota on two workers: one bucket (four requests of 32, over
/// connections the kernel spread on both workers), and one Redis
/// connection per worker, each driven by its own runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_asks_redis_on_its_own_connection() {
    let Some(redis) = crate::support::redis::Redis::start().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let (port, admin_port) = (crate::support::free_port(), crate::support::free_port());
    let extra = format!(
        "  - path: /quota\n    auth: none\n    rate_limit: four\nworkers: 2\nadmin_listen: \"127.0.0.1:{admin_port}\"\nrate_limits:\n  store: redis\n  redis:\n    url: \"{}\"\n    timeout: 200ms\n  policies:\n    four:\n      key: ip\n      rate: 1/m\n      burst: 4\n",
        redis.url()
    );
    let (_dir, path) = write_config(&upstream, port, &extra);
    let (child, addr) = run_binary(&path, port, &[], false).await;
    let _gateway = Process(Some(child));
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let mut statuses = Vec::new();
    for _ in 0..32 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        statuses.push(send(&mut stream, "/quota", None).await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        28,
        "{statuses:?}"
    );
    let accepted = accepted_by_worker(admin, "proxy").await;
    assert!(
        accepted.iter().all(|(_, n)| *n > 0.0),
        "both workers served: {accepted:?}"
    );
    let clients = redis.cli(&["CLIENT", "LIST"]);
    let gateway_connections = clients
        .lines()
        .filter(|line| !line.contains("cmd=client"))
        .count();
    assert_eq!(
        gateway_connections, 2,
        "one connection per worker:\n{clients}"
    );
}

/// `events_per_busy_turn: 1`, the smallest busy turn: while tasks are
/// queued, the event loop takes one ready socket from the kernel a turn.
/// 48 connections each have a request in flight at once; every one is
/// decided and forwarded as sent (the allowed ones reach the upstream
/// with their own query and caller, the refused ones not at all), and the
/// gateway says which bound it runs with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_a_busy_turn_serves_every_connection_as_sent() {
    let upstream = Upstream::start().await;
    let port = crate::support::free_port();
    let (_dir, path) = write_config(&upstream, port, "workers: 1\nevents_per_busy_turn: 1\n");
    let env = [("RUST_LOG", "info".to_owned())];
    let (mut child, addr) = run_binary(&path, port, &env, true).await;
    let log = crate::support::drain_stderr(&mut child);
    let gateway = Process(Some(child));

    let k = keys();
    let scoped = k.rsa.token(&claims(json!({"scope": "read:messages"})));
    let unscoped = k.rsa.token(&claims(json!({})));
    let mut streams = Vec::new();
    for _ in 0..48 {
        streams.push(TcpStream::connect(addr).await.expect("connect"));
    }
    upstream.take();
    // Every request written before any response is read: the gateway has
    // up to 48 ready sockets at once, and once busy takes them one a turn.
    for (i, stream) in streams.iter_mut().enumerate() {
        let token = if i % 2 == 0 { &scoped } else { &unscoped };
        let request = format!(
            "GET /api/private-scoped?c={i} HTTP/1.1\r\nHost: a\r\nAuthorization: {}\r\n\r\n",
            bearer(token)
        );
        stream.write_all(request.as_bytes()).await.expect("write");
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let resp = read_response(stream).await;
        let want = if i % 2 == 0 { 200 } else { 403 };
        assert_eq!(resp.status, want, "connection {i}: {}", resp.text());
    }
    let mut seen: Vec<String> = upstream
        .take()
        .into_iter()
        .map(|request| {
            let subject = request.headers.iter().find(|(n, _)| n == "x-auth-subject");
            assert_eq!(subject.map(|(_, v)| v.as_str()), Some("user-1"));
            request.target
        })
        .collect();
    seen.sort();
    let mut want: Vec<String> = (0..48)
        .step_by(2)
        .map(|i| format!("/api/private-scoped?c={i}"))
        .collect();
    want.sort();
    assert_eq!(
        seen, want,
        "each allowed request once, as sent; no refused one"
    );

    gateway.signal("-TERM");
    assert_eq!(gateway.wait().await.code(), Some(0));
    let log = log.join().expect("log");
    assert!(
        log.contains("events_per_busy_turn=1"),
        "the gateway logs its bound:\n{log}"
    );
}
