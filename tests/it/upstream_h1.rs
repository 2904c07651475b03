//! HTTP/1.1 toward the upstream (`src/upstream/h1.rs` and `pool.rs`, the
//! gateway's own client) against raw upstream sockets: what the client gets
//! when the upstream's framing is unusual or hostile, what the upstream
//! receives of an upload, and an upload the upstream answers as it reads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::canned_upstream;
use crate::smuggling::exchange;
use crate::support::{Gateway, accept_each, get, raw, read_response};

fn config(addr: std::net::SocketAddr) -> String {
    format!(
        "upstream:\n  url: \"http://{addr}\"\nroutes:\n  - path: \"/{{*any}}\"\n    auth: none\n"
    )
}

/// (connection number, request line) of every request a canned upstream
/// served.
type Served = Arc<Mutex<Vec<(usize, String)>>>;

fn connection_of(served: &Served, path: &str) -> usize {
    let line = format!("GET {path} HTTP/1.1");
    let served = served.lock().expect("log");
    served
        .iter()
        .rev()
        .find(|(_, l)| *l == line)
        .map(|(n, _)| *n)
        .unwrap_or_else(|| panic!("{line:?} never reached the upstream: {served:?}"))
}

/// Bytes after a response that nobody asked for (a second response riding
/// on the first, at once or a little later) never answer the next request:
/// the connection they came on is not used again.
#[tokio::test]
async fn extra_bytes_after_a_response_never_answer_another_request() {
    let served: Served = Arc::default();
    let log = served.clone();
    let addr = canned_upstream(move |n, line| {
        log.lock().expect("log").push((n, line.to_owned()));
        let poison = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nPOISON";
        let answer = if line == "GET /at-once HTTP/1.1" {
            [
                &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
                poison,
            ]
            .concat()
        } else if line == "GET /late HTTP/1.1" {
            // Written after the response, once the connection is idle.
            let mut answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
            answer.extend_from_slice(b"<pause>");
            answer.extend_from_slice(poison);
            answer
        } else {
            let path = line.split(' ').nth(1).unwrap_or_default();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                path.len()
            )
            .into_bytes()
        };
        (answer, false)
    })
    .await;
    // The canned upstream writes what it is given at once; `<pause>` is
    // played by a relay that holds the rest back.
    let relay = pausing_relay(addr).await;
    let gw = Gateway::start(&config(relay), &[]).await;

    for first in ["/at-once", "/late"] {
        let answer = get(gw.addr, first, &[]).await;
        assert_eq!(
            (answer.status, answer.text().as_str()),
            (200, "ok"),
            "{first}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = format!("{first}-next");
        let answer = get(gw.addr, &next, &[]).await;
        assert_eq!(
            (answer.status, answer.text()),
            (200, next.clone()),
            "after {first}: its own answer"
        );
        assert_ne!(
            connection_of(&served, &next),
            connection_of(&served, first),
            "after {first}: not on the connection that carried the extra bytes"
        );
    }
    gw.stop().await;
}

/// Relays connections to `upstream`, holding back what follows a
/// `<pause>` marker in the upstream's bytes for 100 ms (and dropping the
/// marker).
async fn pausing_relay(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    accept_each(move |client, _| async move {
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        });
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let data = &buf[..n];
            let pause = data.windows(7).position(|w| w == b"<pause>");
            let (now, later) = match pause {
                Some(i) => (&data[..i], Some(&data[i + 7..])),
                None => (data, None),
            };
            if client_write.write_all(now).await.is_err() {
                return;
            }
            if let Some(later) = later {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if client_write.write_all(later).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// Unusual response framing from the upstream reaches the client whole and
/// unambiguous: a coding beside a length loses the length; interim
/// responses are skipped; a body that runs until close is forwarded whole;
/// a reason phrase of the upstream's own is kept.
#[tokio::test]
async fn unusual_response_framing_is_forwarded_unambiguously() {
    let served: Served = Arc::default();
    let log = served.clone();
    let addr = canned_upstream(move |n, line| {
        log.lock().expect("log").push((n, line.to_owned()));
        let (answer, close): (&[u8], bool) = if line.contains("/te-and-cl") {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                false,
            )
        } else if line.contains("/interim") {
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
                false,
            )
        } else if line.contains("/until-close") {
            (b"HTTP/1.1 200 OK\r\n\r\nall of it, until close", true)
        } else if line.contains("/reason") {
            (b"HTTP/1.1 200 Quite Fine\r\ncontent-length: 2\r\n\r\nok", false)
        } else {
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false)
        };
        (answer.to_vec(), close)
    })
    .await;
    let gw = Gateway::start(&config(addr), &[]).await;

    let answer = get(gw.addr, "/te-and-cl", &[]).await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "hello"));
    assert!(
        answer.header("content-length").is_none_or(|v| v == "5"),
        "the upstream's length beside its coding is not forwarded: {:?}",
        answer.headers
    );
    get(gw.addr, "/after-te-and-cl", &[]).await;
    assert_ne!(
        connection_of(&served, "/after-te-and-cl"),
        connection_of(&served, "/te-and-cl"),
        "a response with both framings ends its connection"
    );

    let answer = get(gw.addr, "/interim", &[]).await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "final"));
    assert!(
        answer.header("link").is_none(),
        "the 103's fields stay with it"
    );

    let answer = get(gw.addr, "/until-close", &[]).await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "all of it, until close")
    );

    let text = exchange(
        gw.addr,
        b"GET /reason HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 Quite Fine\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nok"), "{text:?}");
    gw.stop().await;
}

/// An upstream's fields reach the client as hyper's server wrote them
/// from hyper's client's map: names in lower case, values as they came
/// (less the spaces around them), hop-by-hop fields and those
/// `Connection` names left out, a repeated name's values together at its
/// first place. The first answer's names are all distinct (the gateway
/// writes it from the lines it kept), the second's are not (from a map).
#[tokio::test]
async fn response_fields_reach_the_client_as_hyper_writes_them() {
    let addr = canned_upstream(|_, line| {
        let answer: &[u8] = if line.contains("/repeated") {
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Other: 1\r\nset-cookie: b=2\r\n\
              Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"
        } else {
            b"HTTP/1.1 200 OK\r\nServer: canned\r\nX-Mixed-Case:  a: b \r\n\
              Connection: keep-alive, X-Hidden\r\nx-hidden: 1\r\nKeep-Alive: timeout=5\r\n\
              Content-Type: text/plain\r\nContent-Length: 2\r\nEmpty:\r\n\
              Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\nok"
        };
        (answer.to_vec(), false)
    })
    .await;
    let gw = Gateway::start(&config(addr), &[]).await;
    let ask = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n")
    };

    let text = exchange(gw.addr, ask("/distinct").as_bytes()).await;
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nserver: canned\r\nx-mixed-case: a: b\r\n\
         content-type: text/plain\r\ncontent-length: 2\r\nempty: \r\n\
         date: Mon, 01 Jan 2024 00:00:00 GMT\r\nconnection: close\r\n\r\nok"
    );
    let text = exchange(gw.addr, ask("/repeated").as_bytes()).await;
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nx-other: 1\r\n\
         date: Mon, 01 Jan 2024 00:00:00 GMT\r\ncontent-length: 2\r\n\
         connection: close\r\n\r\nok"
    );
    gw.stop().await;
}

/// A chunked body the upstream breaks mid-way is cut off toward the client
/// (no final chunk: the client cannot take it for whole), and the gateway
/// goes on serving on a new connection.
#[tokio::test]
async fn a_broken_upstream_body_is_cut_off_not_completed() {
    for broken in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
    ] {
        let addr = canned_upstream(move |_, line| {
            if line.contains("/broken") {
                (broken.to_vec(), true)
            } else {
                (
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                    false,
                )
            }
        })
        .await;
        let gw = Gateway::start(&config(addr), &[]).await;
        // Nothing at all (the body failed before hyper flushed the head),
        // or the head and part of the body, then the close.
        let text = exchange(
            gw.addr,
            b"GET /broken HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        )
        .await;
        if !text.is_empty() {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            let body = &text[text.find("\r\n\r\n").expect("head") + 4..];
            assert!(
                !(body.ends_with("0\r\n\r\n")
                    || text.contains("content-length: 10") && body.len() == 10),
                "the client is never handed a complete body: {text:?}"
            );
        }
        let answer = get(gw.addr, "/after", &[]).await;
        assert_eq!((answer.status, answer.text().as_str()), (200, "ok"));
        gw.stop().await;
    }
}

/// An upstream on a raw socket that records each connection's bytes and,
/// once it has read a request head, hands the connection to `serve`.
async fn recording_upstream<F, Fut>(serve: F) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>)
where
    F: Fn(TcpStream, Vec<u8>, Arc<Mutex<Vec<u8>>>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let log = seen.clone();
    let serve = Arc::new(serve);
    let addr = accept_each(move |mut stream, _| {
        let (serve, log) = (serve.clone(), log.clone());
        async move {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            log.lock().expect("log").extend_from_slice(&head);
            serve(stream, head, log).await;
        }
    })
    .await;
    (addr, seen)
}

/// What the recording upstream has received since last asked.
fn take_text(seen: &Mutex<Vec<u8>>) -> String {
    String::from_utf8(std::mem::take(&mut *seen.lock().expect("log"))).expect("ascii")
}

/// Reads the rest of an upload into the log until `end` has been seen.
async fn record_until(stream: &mut TcpStream, log: &Mutex<Vec<u8>>, end: &[u8]) {
    let mut buf = [0u8; 65536];
    loop {
        if log.lock().expect("log").ends_with(end) {
            return;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => log.lock().expect("log").extend_from_slice(&buf[..n]),
        }
    }
}

/// An upload reaches the upstream framed as the client framed it: with
/// its length, or chunked (a client's chunk extensions and trailer fields
/// do not travel), every byte in place.
#[tokio::test]
async fn uploads_reach_the_upstream_with_their_framing() {
    let (addr, seen) = recording_upstream(|mut stream, head, log| async move {
        let text = String::from_utf8_lossy(&head).to_lowercase();
        let end: &[u8] = if text.contains("transfer-encoding: chunked") {
            b"0\r\n\r\n"
        } else {
            b"hello world"
        };
        record_until(&mut stream, &log, end).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    })
    .await;
    let gw = Gateway::start(&config(addr), &[]).await;

    let reply = raw(
        gw.addr,
        b"POST /len HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\nContent-Length: 11\r\n\r\nhello world",
    )
    .await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    let received = take_text(&seen);
    assert!(received.starts_with("POST /len HTTP/1.1\r\n"), "{received}");
    assert!(
        received.contains("\r\ncontent-length: 11\r\n"),
        "{received}"
    );
    assert!(
        !received.to_lowercase().contains("transfer-encoding"),
        "{received}"
    );
    assert!(received.ends_with("\r\n\r\nhello world"), "{received}");

    let reply = raw(
        gw.addr,
        b"POST /chunked HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
    )
    .await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    let received = take_text(&seen);
    let (head, body) = received.split_once("\r\n\r\n").expect("head");
    assert!(
        head.contains("\r\ntransfer-encoding: chunked"),
        "{received}"
    );
    assert!(
        !head.to_lowercase().contains("content-length"),
        "{received}"
    );
    assert_eq!(body, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    gw.stop().await;
}

/// An upstream that answers an upload before reading it is answered to the
/// client (not a 502); one that answers as it reads (echoing each piece)
/// gets the rest of the upload while its response streams: the client
/// sees its first piece echoed before it sends the second.
#[tokio::test]
async fn uploads_the_upstream_answers_early_or_as_it_reads() {
    let (addr, _) = recording_upstream(|mut stream, head, _| async move {
        let text = String::from_utf8_lossy(&head).into_owned();
        if text.starts_with("POST /refuse ") {
            let _ = stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope")
                .await;
            // Closed without reading the body.
            return;
        }
        // Echo: the request body is chunked, so the bytes as they come
        // are a chunked response body.
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut all = Vec::new();
        while !all.ends_with(b"0\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let gw = Gateway::start(&config(addr), &[]).await;

    let mut client = TcpStream::connect(gw.addr).await.expect("connect");
    client
        .write_all(
            b"POST /refuse HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 4000000\r\n\r\n",
        )
        .await
        .expect("write");
    let piece = vec![b'x'; 65536];
    // The gateway may stop reading once it has answered.
    for _ in 0..8 {
        if client.write_all(&piece).await.is_err() {
            break;
        }
    }
    let answer = read_response(&mut client).await;
    assert_eq!((answer.status, answer.text().as_str()), (413, "nope"));

    let mut client = TcpStream::connect(gw.addr).await.expect("connect");
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    read_until(&mut client, &mut got, |got| {
        got.windows(5).any(|w| w == b"first")
    })
    .await;
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    client
        .write_all(b"6\r\nsecond\r\n0\r\n\r\n")
        .await
        .expect("write");
    read_until(&mut client, &mut got, |got| got.ends_with(b"0\r\n\r\n")).await;
    assert!(String::from_utf8_lossy(&got).contains("second"));
    gw.stop().await;
}

/// Reads into `got` until `done` holds, each read within 5 s (the first
/// piece must come back before the client sends the second).
async fn read_until(client: &mut TcpStream, got: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    let mut buf = [0u8; 4096];
    while !done(got) {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(got));
        got.extend_from_slice(&buf[..n]);
    }
}
