//! Slow and hostile clients, and long-lived answers (issue 12): WebSocket
//! tunnels hold their connection's permit and obey the idle timeout, their
//! lifetime and the drain; trickled bodies are cut by `body_timeout`; a
//! streaming response is not idle; a broken chunked body is the client's
//! fault; `max_request_header_bytes` holds below hyper's 8 KiB floor.
//!
//! The figures these tests print (`--nocapture`) are the ones the README
//! quotes.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Gateway, PAUSE, Upstream, get, read_response};

/// A WebSocket echo upstream.
async fn ws_echo() -> std::net::SocketAddr {
    crate::support::accept_each(move |stream, _| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    })
    .await
}

fn config(upstream: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "upstream:\n  url: \"http://{upstream}\"\nlimits:\n{limits}routes:\n  - path: /{{*rest}}\n    auth: none\n"
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(gw: &Gateway) -> Ws {
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr))
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hi")).await.expect("send");
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time");
    assert!(matches!(echo, Some(Ok(Message::Text(t))) if t.as_str() == "hi"));
    ws
}

/// Resolves when the gateway closes the tunnel.
async fn closed(ws: &mut Ws, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), ws.next()).await {
            Err(_) => return None,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                return Some(started.elapsed());
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_hold_their_permit_and_close_when_idle() {
    let upstream = ws_echo().await;
    let gw = Gateway::start(
        &config(upstream, "  max_connections: 3\n  idle_timeout: 1500ms\n"),
        &[],
    )
    .await;
    let mut tunnels = vec![open(&gw).await, open(&gw).await, open(&gw).await];
    // Three silent tunnels hold the three permits: a fourth connection waits.
    let fourth = tokio::time::timeout(
        Duration::from_millis(700),
        tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr)),
    )
    .await;
    assert!(
        fourth.is_err(),
        "a fourth connection got through max_connections: 3"
    );
    // No byte either way for idle_timeout: every tunnel is closed.
    let started = Instant::now();
    for ws in &mut tunnels {
        assert!(
            closed(ws, Duration::from_secs(5)).await.is_some(),
            "a silent tunnel outlived idle_timeout"
        );
    }
    eprintln!(
        "slow clients: 3 silent tunnels (max_connections 3, idle_timeout 1.5s) closed {:?} after the fourth client started waiting",
        started.elapsed()
    );
    // Their permits are free again.
    let ws = open(&gw).await;
    drop(ws);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_end_at_their_lifetime_and_with_the_drain() {
    let upstream = ws_echo().await;
    let gw = Gateway::start(
        &config(upstream, "  tunnel_max_lifetime: 1s\n  idle_timeout: 60s\n"),
        &[],
    )
    .await;
    let mut ws = open(&gw).await;
    let started = Instant::now();
    // A chatty tunnel is never idle, but its lifetime ends.
    let mut cut = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ws.send(Message::text("ping")).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) | Err(_) => {}
            _ => {
                cut = Some(started.elapsed());
                break;
            }
        }
    }
    let cut = cut.expect("tunnel_max_lifetime closes a busy tunnel");
    eprintln!("slow clients: a busy tunnel closed {cut:?} after opening (tunnel_max_lifetime 1s)");
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_secs(4),
        "{cut:?}"
    );
    gw.stop().await;

    // Shutdown: an open tunnel is closed at the end of the drain.
    let gw = Gateway::start(
        &config(upstream, "  drain_timeout: 1s\n  idle_timeout: 60s\n"),
        &[],
    )
    .await;
    let mut ws = open(&gw).await;
    let stopping = Instant::now();
    let stop = tokio::spawn(gw.stop());
    let ended = closed(&mut ws, Duration::from_secs(6)).await;
    assert!(ended.is_some(), "the drain left a tunnel open");
    stop.await.expect("stopped");
    let took = stopping.elapsed();
    eprintln!("slow clients: an open tunnel closed {took:?} into shutdown (drain_timeout 1s)");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_are_cut_by_body_timeout() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(
        &config(
            upstream.addr,
            "  max_connections: 3\n  body_timeout: 1s\n  idle_timeout: 60s\n",
        ),
        &[],
    )
    .await;
    let addr = gw.addr;
    let started = Instant::now();
    let mut trickles = Vec::new();
    for _ in 0..3 {
        trickles.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut read, mut write) = stream.into_split();
            write
                .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx")
                .await
                .expect("head");
            // One byte every 2 s, for as long as the gateway listens.
            let trickle = drip(write, Duration::from_secs(2));
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer)).await;
            trickle.abort();
            let status = String::from_utf8_lossy(&answer)
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            (status, started.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fourth client, while the three hold every permit.
    let fourth = tokio::spawn(async move {
        let resp = get(addr, "/ok", &[]).await;
        (resp.status, started.elapsed())
    });
    for t in trickles {
        let (status, at) = t.await.expect("join");
        assert_eq!(status, 408, "a stalled body gets 408");
        assert!(at < Duration::from_secs(4), "cut after {at:?}");
        eprintln!("slow clients: a trickled body was answered 408 after {at:?} (body_timeout 1s)");
    }
    let (status, at) = fourth.await.expect("join");
    assert_eq!(status, 200);
    eprintln!("slow clients: the fourth client (max_connections 3) was served after {at:?}");
    assert!(at < Duration::from_secs(4));
    assert!(
        gw.runtime
            .metrics
            .encode()
            .contains("kind=\"BodyTimeout\"} 3"),
        "counted as upstream errors of kind BodyTimeout"
    );
    // The upstream never saw a complete body: every request was aborted.
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| r.target == "/ok" || r.body_len < 100)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_is_not_idle() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(upstream.addr, "  idle_timeout: 1s\n"), &[]).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /pause HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("12345"), "{text}");
    assert!(
        text.contains("67890"),
        "cut during a {PAUSE:?} pause with idle_timeout 1s: {text}"
    );
    assert!(started.elapsed() >= PAUSE);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_below_eight_kib_hold() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(
        &config(upstream.addr, "  max_request_header_bytes: 4096\n"),
        &[],
    )
    .await;
    let small = "a".repeat(3000);
    assert_eq!(get(gw.addr, "/ok", &[("X-Pad", &small)]).await.status, 200);
    let large = "a".repeat(5000);
    let resp = get(gw.addr, "/ok", &[("X-Pad", &large)]).await;
    assert_eq!(resp.status, 431);
    assert_eq!(resp.json()["error"], "request_header_fields_too_large");
    let split: Vec<(String, String)> = (0..6)
        .map(|i| (format!("X-Pad-{i}"), "b".repeat(800)))
        .collect();
    let h: Vec<(&str, &str)> = split
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        get(gw.addr, "/ok", &h).await.status,
        431,
        "counted over every field"
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "431s never reach the upstream");
    gw.stop().await;
}

/// Writes a byte every `every` until the gateway stops listening.
fn drip(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if write.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
}

/// How long until the gateway closes `stream`, sending nothing more.
async fn closed_after(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    started: Instant,
) -> Duration {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "still open after 10 s");
    assert!(rest.is_empty(), "closed with an answer: {rest:?}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_is_one_deadline_for_the_whole_head() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(
        &config(
            upstream.addr,
            "  header_read_timeout: 1s\n  idle_timeout: 60s\n",
        ),
        &[],
    )
    .await;
    let head_limit = Duration::from_secs(1);

    // A head trickled in a byte every 100 ms keeps the connection busy,
    // never idle: the deadline cuts it anyway, without an answer.
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    write
        .write_all(b"GET /trickled HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .expect("head");
    let trickle = drip(write, Duration::from_millis(100));
    let took = closed_after(&mut read, started).await;
    trickle.abort();
    assert!(
        took >= head_limit && took < Duration::from_secs(3),
        "{took:?}"
    );
    eprintln!("slow clients: a trickled head was cut after {took:?} (header_read_timeout 1s)");

    // A kept-alive connection: served, then closed when no next head
    // comes within the limit, counted from the end of the response.
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let first = read_response(&mut stream).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let took = closed_after(&mut stream, Instant::now()).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A response slower than the limit, on the same kind of connection,
    // is not cut: no head is due while a request is in the service.
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /pause HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("12345") && text.contains("67890"), "{text}");

    // Nor is a response the client reads late: while it is still going
    // out, no head is due either.
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /large HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(head_limit * 3).await;
    let late = read_response(&mut stream).await;
    assert_eq!(late.status, 200);
    assert_eq!(
        late.body.len(),
        crate::support::LARGE,
        "the whole body, read late"
    );

    let targets: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        ["/first", "/pause", "/large"],
        "a cut head never reaches the upstream"
    );
    gw.stop().await;
}
