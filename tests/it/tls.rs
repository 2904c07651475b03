//! TLS: the listener with ALPN (h2 and http/1.1, authorized alike),
//! certificates reloaded with the config, and https upstreams verified
//! against `ca_file` (or the system's roots).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::proxy::{AUD, ISS_A, claims};
use crate::support::keys::{jwks, keys};
use crate::support::pki::Pki;
use crate::support::{Gateway, Upstream, bearer};

fn pki() -> Pki {
    crate::support::pki::pki(0)
}

fn client_tls(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// One GET over TLS with the given ALPN; returns (status, HTTP version).
async fn get_tls(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
    path: &str,
    auth: Option<&str>,
) -> (u16, http::Version) {
    let stream = tls_connect(addr, client_tls(ca_pem, alpn))
        .await
        .expect("TLS handshake");
    let mut req = http::Request::builder().uri(format!("https://localhost{path}"));
    if alpn == b"http/1.1" {
        req = req.uri(path).header("host", "localhost");
    }
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req = req.body(Empty::<bytes::Bytes>::new()).expect("request");
    let resp = if alpn == b"h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("response")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("response")
    };
    let (status, version) = (resp.status().as_u16(), resp.version());
    let _ = resp.into_body().collect().await;
    (status, version)
}

fn tls_config(upstream: &Upstream) -> String {
    format!(
        "upstream:\n  url: \"http://{}\"\ntls:\n  cert_file: cert.pem\n  key_file: key.pem\nissuers:\n  - issuer: \"{ISS_A}\"\n    audiences: [\"{AUD}\"]\n    jwks_file: jwks.json\nroutes:\n  - path: /api/private-scoped\n    methods: [GET]\n    scopes: [read:messages]\n  - path: /api/public\n    auth: none\n",
        upstream.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_alpn_h2_and_http11_and_cert_reload() {
    let upstream = Upstream::start().await;
    let k = keys();
    let p = pki();
    let files = [
        ("cert.pem", p.cert_pem.as_str()),
        ("key.pem", p.key_pem.as_str()),
        ("jwks.json", &jwks(&[&k.rsa])),
    ];
    let gw = Gateway::start(&tls_config(&upstream), &files).await;
    let token = bearer(&k.rsa.token(&claims(json!({"scope": "read:messages"}))));

    assert_eq!(
        get_tls(
            gw.addr,
            &p.ca_pem,
            b"h2",
            "/api/public/%2e%2e/private-scoped",
            Some(&token)
        )
        .await,
        (200, http::Version::HTTP_2)
    );
    assert_eq!(
        get_tls(
            gw.addr,
            &p.ca_pem,
            b"http/1.1",
            "/api/private-scoped",
            Some(&token)
        )
        .await,
        (200, http::Version::HTTP_11)
    );
    assert_eq!(
        get_tls(gw.addr, &p.ca_pem, b"h2", "/api/private-scoped", None)
            .await
            .0,
        401
    );
    assert_eq!(
        get_tls(
            gw.addr,
            &p.ca_pem,
            b"h2",
            "/api/public/..;/private-scoped",
            Some(&token)
        )
        .await
        .0,
        400
    );
    let seen = upstream.take();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.target == "/api/private-scoped"));
    assert!(
        seen.iter()
            .all(|r| r.header("x-forwarded-proto") == Some("https"))
    );

    // New certificate files and a config edit: the next handshakes use them.
    let next = pki();
    std::fs::write(gw.dir.path().join("cert.pem"), &next.cert_pem).expect("write");
    std::fs::write(gw.dir.path().join("key.pem"), &next.key_pem).expect("write");
    let mut switched = false;
    for _ in 0..100 {
        if tls_connect(gw.addr, client_tls(&next.ca_pem, b"h2"))
            .await
            .is_ok()
        {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched, "the new certificate is served after the reload");
    assert!(
        tls_connect(gw.addr, client_tls(&p.ca_pem, b"h2"))
            .await
            .is_err(),
        "the old one is not"
    );
    gw.stop().await;
}

/// An https upstream: a TLS server recording what it gets.
async fn tls_upstream(p: &Pki) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let server = scopegate::tls::server_config(p.cert_pem.as_bytes(), p.key_pem.as_bytes())
        .expect("server tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let addr = crate::support::accept_each(move |tcp, _| {
        let (acceptor, count) = (acceptor.clone(), count.clone());
        async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let svc =
                hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from("secure-ok")),
                        ))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await;
    (addr, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verified_against_ca_file() {
    let p = pki();
    let (addr, served) = tls_upstream(&p).await;
    let open = "routes:\n  - path: /x\n    auth: none\n";
    for host in [format!("localhost:{}", addr.port()), addr.to_string()] {
        let cfg = format!("upstream:\n  url: \"https://{host}\"\n  ca_file: ca.pem\n{open}");
        let gw = Gateway::start(&cfg, &[("ca.pem", &p.ca_pem)]).await;
        let resp = crate::support::get(gw.addr, "/x", &[]).await;
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "secure-ok"),
            "{host}"
        );
        gw.stop().await;
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Another CA: the upstream is not trusted, 502 and nothing served.
    let other = pki();
    let cfg = format!(
        "upstream:\n  url: \"https://localhost:{}\"\n  ca_file: ca.pem\n{open}",
        addr.port()
    );
    let gw = Gateway::start(&cfg, &[("ca.pem", &other.ca_pem)]).await;
    assert_eq!(crate::support::get(gw.addr, "/x", &[]).await.status, 502);
    gw.stop().await;
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// `forward_auth.tls`: the gRPC ext_authz listener speaks TLS (issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_ext_authz_over_tls() {
    use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    let p = pki();
    let cfg = format!(
        "forward_auth:\n  grpc_listen: \"127.0.0.1:0\"\n  tls:\n    cert_file: cert.pem\n    key_file: key.pem\nissuers:\n  - issuer: \"{}\"\n    audiences: [\"{}\"]\n    jwks_file: jwks.json\nroutes:\n  - path: /api/private\n",
        crate::proxy::ISS_A,
        crate::proxy::AUD
    );
    let gw = Gateway::start(
        &cfg,
        &[
            ("cert.pem", &p.cert_pem),
            ("key.pem", &p.key_pem),
            (
                "jwks.json",
                &crate::support::keys::jwks(&[&crate::support::keys::keys().rsa]),
            ),
        ],
    )
    .await;
    let addr = gw.grpc.expect("gRPC listener");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&p.ca_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("a TLS connection");
    let answer = AuthorizationClient::new(channel)
        .check(CheckRequest::default())
        .await
        .expect("a CheckResponse over TLS")
        .into_inner();
    assert_eq!(
        answer.status.map(|s| s.code),
        Some(7),
        "no http attributes: PERMISSION_DENIED (400)"
    );
    // Plain text is refused by the TLS listener.
    let plain = AuthorizationClient::connect(format!("http://{addr}")).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut client) => client.check(CheckRequest::default()).await.is_err(),
    };
    assert!(refused, "a plaintext client must not get an answer");
    gw.stop().await;
}
