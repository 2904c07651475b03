//! WebSocket upgrades: authorized like any request, then tunnelled both
//! ways; a refused handshake never reaches the upstream.

// tungstenite's handshake callback must return its (large) error type.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, bearer};

/// A WebSocket echo server that counts the connections it accepts and
/// keeps the handshake headers it saw.
async fn echo_upstream() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, headers) = (accepted.clone(), seen.clone());
    let addr = crate::support::accept_each(move |stream, _| {
        count.fetch_add(1, Ordering::SeqCst);
        let headers = headers.clone();
        async move {
            let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                            resp| {
                let mut h = headers.lock().expect("lock");
                for (n, v) in req.headers() {
                    h.push((
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    ));
                }
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                } else if msg.is_close() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, accepted, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_is_authorized_then_tunnelled() {
    let (upstream, accepted, seen) = echo_upstream().await;
    let k = keys();
    let cfg = format!(
        "upstream:\n  url: \"http://{upstream}\"\nidentity:\n  headers:\n    X-Auth-Subject: sub\nissuers:\n  - issuer: \"{ISS_A}\"\n    audiences: [\"{AUD}\"]\n    jwks_file: jwks.json\nroutes:\n  - path: /chat\n    methods: [GET]\n    scopes: [chat]\n"
    );
    let gw = Gateway::start(&cfg, &[("jwks.json", &jwks(&[&k.rsa]))]).await;
    let url = format!("ws://{}/chat", gw.addr);

    // Refused handshakes: no token, and a token without the scope.
    let weak = k.rsa.token(&claims(json!({"scope": "read"})));
    for auth in [None, Some(bearer(&weak))] {
        let mut req = url.as_str().into_client_request().expect("request");
        if let Some(a) = &auth {
            req.headers_mut()
                .insert("authorization", a.parse().expect("value"));
        }
        let stream = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        match tokio_tungstenite::client_async(req, stream).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), if auth.is_some() { 403 } else { 401 });
            }
            other => panic!("the handshake must be refused, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a refused upgrade never reaches the upstream"
    );

    // An allowed handshake: messages echo both ways through the tunnel.
    let token = k.rsa.token(&claims(json!({"scope": "chat"})));
    let mut req = url.as_str().into_client_request().expect("request");
    req.headers_mut()
        .insert("authorization", bearer(&token).parse().expect("value"));
    req.headers_mut()
        .insert("x-auth-subject", "forged".parse().expect("value"));
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}")))
            .await
            .expect("send");
        assert_eq!(
            ws.next().await.expect("a reply").expect("message"),
            Message::text(format!("hello {i}"))
        );
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    assert_eq!(
        ws.next().await.expect("a reply").expect("message"),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.expect("close");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let headers = seen.lock().expect("lock").clone();
    let subject: Vec<_> = headers
        .iter()
        .filter(|(n, _)| n == "x-auth-subject")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        subject,
        ["user-1"],
        "identity headers are set on the handshake too"
    );
    gw.stop().await;
}
