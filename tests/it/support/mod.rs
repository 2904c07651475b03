//! In-process fixtures: a recording upstream, a JWKS server, a token factory
//! (independent of the gateway's own code: it signs with aws-lc-rs directly),
//! a temp-config helper that runs the real gateway on 127.0.0.1:0, and a raw
//! HTTP/1.1 client for byte-exact requests.

#![allow(dead_code)]

pub mod idp;
pub mod keys;
pub mod pki;
pub mod redis;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(text: String) -> TestBody {
    Full::new(Bytes::from(text)).boxed()
}

/// Accepts connections on a fresh loopback port, each handed to `serve`
/// with its number (from 1) in a task of its own; the port's address.
pub async fn accept_each<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(serve(stream, n));
        }
    });
    addr
}

/// Serves HTTP/1.1 on `listener`, each request answered by `handler`.
pub fn spawn_server<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<TestBody>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// A response body that arrives in `DRIP_CHUNKS` pieces over about a second.
pub const DRIP_CHUNKS: usize = 10;

struct Drip(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Drip {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

fn drip_body() -> TestBody {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for i in 0..DRIP_CHUNKS {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tx.send(Bytes::from(format!("chunk-{i};"))).await.is_err() {
                return;
            }
        }
    });
    Drip(rx).boxed()
}

/// How long a `/pause` response stops between its two halves.
pub const PAUSE: Duration = Duration::from_millis(2500);

/// The length of the body `/large` answers: more than the loopback socket
/// buffers and hyper's write queue take before a client reads.
pub const LARGE: usize = 8 << 20;

/// `12345`, a pause of [`PAUSE`] (an SSE or long-poll upstream), `67890`.
fn paused_body() -> TestBody {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"12345")).await;
        tokio::time::sleep(PAUSE).await;
        let _ = tx.send(Bytes::from_static(b"67890")).await;
    });
    Drip(rx).boxed()
}

/// An upstream that records every request it receives. Paths with `/slow` answer
/// after 5 s, `/drip` stream their body, `/pause` send half of it, pause,
/// then the rest, `/cors` add CORS headers of their own, `/unauthorized`
/// answer 401 with a challenge; every other path answers 200 at once with
/// `upstream-ok`.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        spawn_server(listener, move |req: Request<Incoming>| {
            let record = record.clone();
            async move {
                let method = req.method().to_string();
                let target = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let headers = req
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let mut body = req.into_body();
                let mut body_len = 0u64;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
                        Err(_) => break,
                    }
                }
                let slow = target.contains("/slow");
                let drip = target.contains("/drip");
                let pause = target.contains("/pause");
                let large = target.contains("/large");
                let cors = target.contains("/cors");
                let unauthorized = target.contains("/unauthorized");
                record.lock().expect("lock").push(Recorded {
                    method,
                    target,
                    headers,
                    body_len,
                });
                if slow {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                if drip {
                    return Response::new(drip_body());
                }
                if unauthorized {
                    let mut resp = Response::new(full("who are you".into()));
                    *resp.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                    resp.headers_mut().insert(
                        "www-authenticate",
                        "Bearer realm=\"upstream\"".parse().expect("value"),
                    );
                    return resp;
                }
                if pause {
                    return Response::new(paused_body());
                }
                if large {
                    return Response::new(Full::new(Bytes::from(vec![b'l'; LARGE])).boxed());
                }
                let mut resp = Response::new(full(format!("upstream-ok {body_len}")));
                resp.headers_mut()
                    .insert("x-upstream", "yes".parse().expect("value"));
                resp.headers_mut()
                    .insert("connection", "x-upstream-secret".parse().expect("value"));
                resp.headers_mut()
                    .insert("x-upstream-secret", "hop".parse().expect("value"));
                if cors {
                    // An upstream with CORS of its own, granting too much.
                    for (name, value) in [
                        ("access-control-allow-origin", "https://evil.example.com"),
                        ("access-control-allow-credentials", "true"),
                        ("access-control-expose-headers", "X-Request-Id"),
                    ] {
                        resp.headers_mut()
                            .insert(name, value.parse().expect("value"));
                    }
                }
                resp
            }
        });
        Upstream { addr, seen }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

/// A document an IdP serves.
#[derive(Clone)]
pub struct Doc {
    pub status: u16,
    pub body: String,
    pub cache_control: Option<String>,
}

/// An identity provider whose documents (JWKS, discovery), status codes,
/// `Cache-Control` and latency the test controls; it counts its hits.
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    docs: Arc<Mutex<std::collections::HashMap<String, Doc>>>,
    hits: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    delay: Arc<Mutex<Duration>>,
}

pub const JWKS_PATH: &str = "/.well-known/jwks.json";

impl JwksServer {
    pub async fn start(status: u16, body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let addr = listener.local_addr().expect("addr");
        let server = JwksServer {
            addr,
            docs: Arc::default(),
            hits: Arc::default(),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
        };
        server.set(status, body);
        let s = server.clone();
        spawn_server(listener, move |req: Request<Incoming>| {
            let s = s.clone();
            async move {
                let path = req.uri().path().to_owned();
                *s.hits
                    .lock()
                    .expect("lock")
                    .entry(path.clone())
                    .or_default() += 1;
                let delay = *s.delay.lock().expect("lock");
                tokio::time::sleep(delay).await;
                let doc = s.docs.lock().expect("lock").get(&path).cloned();
                let doc = doc.unwrap_or(Doc {
                    status: 404,
                    body: "not found".into(),
                    cache_control: None,
                });
                let mut resp = Response::new(full(doc.body));
                *resp.status_mut() = hyper::StatusCode::from_u16(doc.status).expect("status");
                if let Some(cc) = doc.cache_control {
                    resp.headers_mut()
                        .insert("cache-control", cc.parse().expect("value"));
                }
                resp
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    /// The issuer URL for discovery tests: this server's root.
    pub fn base(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Sets the JWKS document.
    pub fn set(&self, status: u16, body: String) {
        self.set_path(JWKS_PATH, status, body);
    }

    pub fn set_path(&self, path: &str, status: u16, body: String) {
        self.docs.lock().expect("lock").insert(
            path.to_owned(),
            Doc {
                status,
                body,
                cache_control: None,
            },
        );
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().expect("lock") = delay;
    }

    /// Requests for the JWKS document so far.
    pub fn hits(&self) -> usize {
        self.hits_for(JWKS_PATH)
    }

    pub fn hits_for(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// The real gateway, serving a config written to a temp directory.
pub struct Gateway {
    pub addr: SocketAddr,
    /// The admin listener, when the config has `admin_listen`.
    pub admin: Option<SocketAddr>,
    /// The forward-auth listener, when the config has `forward_auth.listen`.
    pub forward_auth: Option<SocketAddr>,
    /// The gRPC ext_authz listener, when the config has `forward_auth.grpc_listen`.
    pub grpc: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub runtime: Arc<scopegate::app::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Writes `files` and `gateway.yaml` into a temp dir, loads the config
    /// exactly as `scopegate run` would, and serves it on 127.0.0.1:0.
    pub async fn start(yaml: &str, files: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write file");
        }
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml).expect("write config");
        Self::serve_path(dir, &path).await
    }

    /// Serves the config at `path` (which may be a symlink) from `dir`.
    pub async fn serve_path(dir: tempfile::TempDir, path: &std::path::Path) -> Gateway {
        let config =
            scopegate::config::load(path).unwrap_or_else(|e| panic!("config must load: {e}"));
        // Every listener on an ephemeral loopback port, whatever the config says.
        let proxy = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = proxy.local_addr().expect("addr");
        let admin = match config.admin_listen {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind admin")),
            None => None,
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr().expect("addr"));
        let forward_auth = match config.forward_auth.as_ref().and_then(|f| f.listen) {
            Some(_) => Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind forward-auth"),
            ),
            None => None,
        };
        let forward_auth_addr = forward_auth.as_ref().map(|l| l.local_addr().expect("addr"));
        let grpc = match config.forward_auth.as_ref().and_then(|f| f.grpc_listen) {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC")),
            None => None,
        };
        let grpc_addr = grpc.as_ref().map(|l| l.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let runtime = scopegate::app::Runtime::new(config);
        let listeners = scopegate::app::Listeners {
            proxy: Some(proxy),
            forward_auth,
            grpc,
            admin,
            ..Default::default()
        };
        let task = tokio::spawn(scopegate::app::serve(runtime.clone(), listeners, async {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            admin: admin_addr,
            forward_auth: forward_auth_addr,
            grpc: grpc_addr,
            dir,
            runtime,
            shutdown: Some(tx),
            task,
        }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// Stops accepting and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("JSON body, got {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends bytes as they are and reads the first response (the server must
/// close, or answer with a length).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_response(&mut stream).await
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or until close).
pub async fn read_response(stream: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    let deadline = Duration::from_secs(15);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(deadline, stream.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(deadline, stream.read(&mut chunk))
                .await
                .expect("body in time")
                .expect("read");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            if body.windows(5).any(|w| w == b"0\r\n\r\n") {
                break;
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(deadline, stream.read(&mut chunk))
                .await
                .expect("body in time")
                .expect("read");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body = dechunk(&body);
    } else if status != 204 && status != 304 {
        let _ = tokio::time::timeout(deadline, stream.read_to_end(&mut body)).await;
    }
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = i + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// `GET` (or another method) with extra header lines, `Connection: close`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Raw {
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes()).await
}

pub async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Raw {
    request(addr, "GET", target, headers).await
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A loopback port that was free a moment ago (for the real binary, whose
/// `listen` comes from its config).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The real `scopegate run -c CONFIG`, started with extra environment and
/// waited for until `port` accepts connections.
pub async fn run_binary(
    config: &std::path::Path,
    port: u16,
    env: &[(&str, String)],
    capture_stderr: bool,
) -> (std::process::Child, SocketAddr) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"));
    cmd.args(["run", "-c"])
        .arg(config)
        .env_remove("SCOPEGATE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stderr(if capture_stderr {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn scopegate");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("scopegate did not start listening on {addr}");
}

/// Reads a child's piped stderr on a thread of its own until the child
/// closes it (a full pipe would block the child); join for the text.
pub fn drain_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut pipe = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut out);
        out
    })
}

/// Sends a signal (`-TERM`, `-HUP`) to a child process.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} failed");
}

/// A test that needs something this machine lacks: skipped with the reason
/// printed, except under `CI=true`, where it fails.
pub fn skip_unless_ci(why: &str) {
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{why}: it must be present under CI=true"
    );
    eprintln!("SKIPPED: {why}");
}

/// The first of `names` found on `PATH` (or in /usr/sbin), or `None` after
/// [`skip_unless_ci`] said why.
pub fn installed(names: &[&str], package: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs: Vec<&str> = path.split(':').chain(["/usr/sbin", "/usr/bin"]).collect();
    let found = names.iter().find_map(|name| {
        dirs.iter()
            .map(|d| std::path::Path::new(d).join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip_unless_ci(&format!(
            "{} is not installed (apt-get install {package})",
            names[0]
        ));
    }
    found
}

/// Polls `path` until it answers `status`, at most `limit`; how long it took.
pub async fn wait_for_status(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    status: u16,
    limit: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if get(addr, path, headers).await.status == status {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// The status of `GET path` with a bearer token.
pub async fn bearer_status(addr: SocketAddr, path: &str, token: &str) -> u16 {
    get(addr, path, &[("Authorization", &bearer(token))])
        .await
        .status
}
