//! HTTP/1.1 from the client (`src/server/h1`, the gateway's own server
//! side for requests without a body): several requests on one connection,
//! pipelined ones, the hand-over to hyper at a request with a body, and
//! the same connection going on under hyper.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::start;
use crate::support::read_response;

/// Plain requests, then one with a body (hyper's from there on), then
/// plain ones again, all on one connection: every request reaches the
/// upstream once, whole, in order, and every answer is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_is_handed_to_hyper_at_a_body_and_goes_on() {
    let (upstream, gw) = start("").await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let requests: [(&str, &[u8], &str); 4] = [
        (
            "/assets/one",
            b"GET /assets/one HTTP/1.1\r\nHost: a\r\n\r\n",
            "upstream-ok 0",
        ),
        (
            "/assets/two",
            b"GET /assets/two HTTP/1.1\r\nHost: a\r\nX-Custom: 1\r\n\r\n",
            "upstream-ok 0",
        ),
        (
            "/assets/three",
            b"POST /assets/three HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            "upstream-ok 5",
        ),
        (
            "/assets/four",
            b"GET /assets/four HTTP/1.1\r\nHost: a\r\n\r\n",
            "upstream-ok 0",
        ),
    ];
    for (path, request, body) in requests {
        stream.write_all(request).await.expect("write");
        let resp = read_response(&mut stream).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.text(), body, "{path}");
        assert_eq!(resp.header("x-upstream"), Some("yes"), "{path}");
        assert!(resp.header("date").is_some(), "{path}: no Date");
        assert_eq!(resp.header("connection"), None, "{path}: kept alive");
    }
    let seen = upstream.requests();
    let targets: Vec<_> = seen
        .iter()
        .map(|r| (r.target.as_str(), r.body_len))
        .collect();
    assert_eq!(
        targets,
        [
            ("/assets/one", 0),
            ("/assets/two", 0),
            ("/assets/three", 5),
            ("/assets/four", 0)
        ]
    );
    assert_eq!(seen[1].header("x-custom"), Some("1"));
    gw.stop().await;
}

/// Requests sent in one write are answered in order, each once; the last
/// asks to close, is told `Connection: close`, and the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_then_closed() {
    let (upstream, gw) = start("").await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(
            b"GET /assets/p1 HTTP/1.1\r\nHost: a\r\n\r\n\
              HEAD /assets/p2 HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /assets/p3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write");
    let mut all = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut all),
    )
    .await
    .expect("closed in time")
    .expect("read");
    let all = String::from_utf8(all).expect("text");
    let heads: Vec<&str> = all
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &all[at..])
        .collect();
    assert_eq!(heads.len(), 3, "{all}");
    assert!(
        heads.iter().all(|h| h.starts_with("HTTP/1.1 200 OK\r\n")),
        "{all}"
    );
    // The HEAD's answer has its length but no body.
    assert!(heads[1].contains("content-length: 13\r\n"), "{all}");
    let after_head = heads[1].split_once("\r\n\r\n").map(|(_, rest)| rest);
    assert!(
        after_head.is_some_and(|rest| rest.starts_with("HTTP/1.1 ")),
        "{all}"
    );
    assert!(heads[2].contains("\r\nconnection: close\r\n"), "{all}");
    assert!(all.ends_with("upstream-ok 0"), "{all}");
    let targets: Vec<_> = upstream
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(
        targets,
        ["GET /assets/p1", "HEAD /assets/p2", "GET /assets/p3"]
    );
    gw.stop().await;
}

/// A client that closes its side while its request is answered ends the
/// exchange (hyper's server does the same without `half_close`): the
/// connection closes at once, not when the upstream (5 s away) answers.
/// At once after the request, and later, once the wait has begun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_request_ends_the_exchange() {
    let (_upstream, gw) = start("").await;
    for wait in [0, 300] {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        stream
            .write_all(b"GET /assets/slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        stream.shutdown().await.expect("half-close");
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            stream.read_to_end(&mut rest),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "after {wait} ms: {read:?}, {:?}",
            String::from_utf8_lossy(&rest)
        );
        eprintln!("closed {:?} after the client's side", started.elapsed());
    }
    gw.stop().await;
}

/// The request timeout's timer is the connection's, used by one request
/// after another: each request gets its own full `request_timeout` (1 s
/// here), counted from its own start, however long after the last one it
/// comes, and a timeout does not spoil the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_a_connection_gets_its_own_timeout() {
    let (upstream, gw) = start("").await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let mut ask = async |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let started = std::time::Instant::now();
        let status = read_response(&mut stream).await.status;
        (status, started.elapsed())
    };
    assert_eq!(ask("/assets/fast").await.0, 200);
    // Past the first request's deadline: a timer left at it would fire.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(ask("/assets/fast").await.0, 200);
    let (status, took) = ask("/assets/slow").await;
    assert_eq!(status, 504);
    assert!(took >= std::time::Duration::from_millis(900), "{took:?}");
    assert_eq!(ask("/assets/fast").await.0, 200, "after a timeout");
    let (status, took) = ask("/assets/slow").await;
    assert_eq!(status, 504);
    assert!(took >= std::time::Duration::from_millis(900), "{took:?}");
    assert_eq!(upstream.requests().len(), 5);
    gw.stop().await;
}

/// A head that arrives a byte at a time is answered once its blank line
/// has come, whichever line ends it uses; nothing is answered before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_in_pieces_is_answered_once_whole() {
    let (upstream, gw) = start("").await;
    for (path, head) in [
        (
            "/assets/crlf",
            "GET /assets/crlf HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n",
        ),
        ("/assets/lf", "GET /assets/lf HTTP/1.1\nHost: a\nX-A: 1\n\n"),
    ] {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        for byte in head.as_bytes() {
            stream.write_all(&[*byte]).await.expect("write");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let resp = read_response(&mut stream).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let seen = upstream.take();
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        assert_eq!(seen[0].target, path);
        assert_eq!(seen[0].header("x-a"), Some("1"));
    }
    gw.stop().await;
}
