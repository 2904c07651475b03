//! Listeners: the accept loop (bounded by `max_connections`), protocol
//! choice (by ALPN with TLS; HTTP/1.1 or HTTP/2 prior knowledge by a
//! bounded first read without), HTTP/1.1 by the gateway's own side
//! ([`h1`]) until a request it leaves to hyper, hyper's server builders
//! (HTTP/1.1 from that request on, HTTP/2), the idle and
//! header read timeouts (one deadline per connection, `io::Activity`; HTTP/2
//! keeps hyper's `TokioTimer` for its own timers), and the graceful drain
//! on shutdown.
//!
//! Adapter: depends on hyper, hyper-util, tokio, [`h1`] and [`proxy`].

pub(crate) mod access;
pub mod forward_auth;
mod h1;
mod io;
pub mod proxy;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use proxy::{Peer, Proxy};

/// What a listener does with each request: the proxy, or forward-auth.
pub trait Handler: Send + Sync + 'static {
    /// The state requests are decided under; limits and TLS come from it.
    fn shared(&self) -> &Shared;
    /// Whether the config's `tls` applies to this listener.
    fn serves_tls(&self) -> bool;
    /// Answers one request; refusals are responses, so it cannot fail.
    fn handle(&self, peer: Peer, req: Request<ClientBody>) -> impl Future<Output = Reply> + Send;
}

/// A client's request body: none (a request the gateway's own HTTP/1.1
/// side read, [`h1`], has none), or as hyper's server reads it.
#[derive(Debug)]
pub enum ClientBody {
    Empty,
    Hyper(Incoming),
}

impl hyper::body::Body for ClientBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => std::task::Poll::Ready(None),
            ClientBody::Hyper(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ClientBody::Empty => hyper::body::SizeHint::with_exact(0),
            ClientBody::Hyper(body) => body.size_hint(),
        }
    }
}

use io::{Activity, Busy, Tracked};

/// The request's SERVER span when `tracing:` is set: it continues the
/// caller's trace only when the caller is a trusted proxy.
pub(crate) fn server_span(
    state: &crate::state::State,
    peer: std::net::IpAddr,
    headers: &http::HeaderMap,
    method: &http::Method,
) -> Option<opentelemetry::Context> {
    use crate::telemetry::trace;
    let tracer = state.tracer.as_ref()?;
    let trusted = state
        .config
        .trusted_proxies
        .iter()
        .any(|net| net.contains(peer));
    let parent = trace::parent(headers, trusted);
    Some(trace::start(
        tracer,
        Some(&parent),
        format!("HTTP {method}"),
        trace::Kind::Server,
        vec![opentelemetry::KeyValue::new(
            "http.request.method",
            method.to_string(),
        )],
    ))
}

/// [`crate::decision::decide`], under an INTERNAL `authorize` span below
/// the request's when it is traced (the calls it makes, introspection
/// among them, become its children).
pub(crate) async fn decide<'s>(
    state: &'s crate::state::State,
    question: &crate::decision::Question<'_>,
    span: Option<&opentelemetry::Context>,
) -> crate::decision::Decision<'s> {
    use crate::telemetry::trace::{self, FutureExt as _};
    use opentelemetry::trace::TraceContextExt as _;
    let now = crate::now();
    let Some((tracer, parent)) = state.tracer.as_ref().zip(span) else {
        return crate::decision::decide(state, question, now).await;
    };
    let cx = trace::start(
        tracer,
        Some(parent),
        "authorize",
        trace::Kind::Internal,
        Vec::new(),
    );
    let decision = crate::decision::decide(state, question, now)
        .with_context(cx.clone())
        .await;
    let code = match (&decision.verdict, &decision.shadowed) {
        (Err(refusal), _) | (Ok(_), Some(refusal)) => refusal.code(),
        (Ok(_), None) => "allow",
    };
    let span = cx.span();
    span.set_attribute(opentelemetry::KeyValue::new("scopegate.decision", code));
    if decision.shadowed.is_some() {
        span.set_attribute(opentelemetry::KeyValue::new("scopegate.shadowed", true));
    }
    span.end();
    decision
}

use crate::Body;
use crate::reply::Reply;
use crate::state::Shared;

/// What the workers serving one address share (`workers: N` gives each
/// its own socket): the address's connection limit.
#[derive(Clone, Debug)]
pub struct Admission(Arc<Semaphore>);

impl Admission {
    /// `limits.max_connections` of the config the gateway started with.
    pub fn new(shared: &Shared) -> Admission {
        let limit = shared.load().config.limits.max_connections;
        Admission(Arc::new(Semaphore::new(limit)))
    }
}

/// Serves the proxy on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish for up to the drain timeout. Each connection
/// takes a permit of `admission` and adds one to `accepted`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    admission: Admission,
    accepted: prometheus_client::metrics::counter::Counter,
    shutdown: impl Future<Output = ()>,
) {
    let limits = handler.shared().load().config.limits.clone();
    let permits = admission.0;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        accepted.inc();
        // With every permit taken (by any worker), the connection just
        // accepted waits here, unread, and the next wait in the kernel's
        // backlog. Accepting first: a worker waiting for a permit with an
        // empty backlog would hold it while another worker's connections
        // wait.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let handler = handler.clone();
        let stop = stop_rx.clone();
        // The clock is read once per poll of the connection's task.
        connections.spawn(crate::clock::per_poll(async move {
            let _permit = permit;
            serve_connection(stream, peer, handler, stop).await;
        }));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = limits.drain_timeout;
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!(
                ?drain,
                remaining = connections.len(),
                "drain timeout: closing remaining connections"
            );
            connections.shutdown().await;
        }
    }
}

/// The size of a request head as it came on the wire (HTTP/1.1) or as
/// HPACK counts it without its 32-byte overhead (HTTP/2): request line, and
/// every field as `name: value` with its line end. hyper's HTTP/1 buffer
/// cannot go under 8 KiB, so a lower `max_request_header_bytes` is
/// enforced by this count (431).
pub fn head_size<B>(req: &Request<B>) -> usize {
    // `METHOD SP target SP HTTP/1.1 CRLF`
    let line = req.method().as_str().len()
        + 1
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len();
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
        + 2
}

/// A response body that keeps its connection busy until it has been sent
/// whole (or dropped): a streaming response (SSE, long-poll) is not idle.
struct Sending {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Sending {
    type Data = bytes::Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A tunnel a handler opened (a WebSocket after its handshake).
pub type Tunnel = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a handler leaves a tunnel for the connection that carried its
/// handshake to run, so that it holds that connection's permit, obeys the
/// idle timeout and ends with the drain.
#[derive(Clone, Default)]
pub struct Tunnels(Arc<std::sync::Mutex<Option<Tunnel>>>);

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tunnels")
    }
}

impl Tunnels {
    pub fn open(&self, tunnel: Tunnel) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(tunnel);
        }
    }

    fn take(&self) -> Option<Tunnel> {
        self.0.lock().ok()?.take()
    }
}

/// Serves one connection until it ends, a timeout of `Activity::watch`
/// expires, or the drain begins: then it finishes the requests in flight
/// and closes. `$watch` and `$stopped` are pinned [`io::OnWake`]s.
/// A macro: hyper's HTTP/1 and HTTP/2 connections share no trait.
macro_rules! until_done {
    ($conn:expr, $watch:expr, $stopped:expr, $addr:expr) => {{
        let mut conn = std::pin::pin!($conn);
        tokio::select! {
            biased;
            result = conn.as_mut() => result,
            expired = $watch => {
                tracing::debug!(peer = %$addr, "connection closed: {expired:?} timeout");
                Ok(())
            }
            () = $stopped => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    }};
}

/// Resolves once shutdown has begun.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

async fn serve_connection<H: Handler>(
    stream: TcpStream,
    addr: SocketAddr,
    handler: Arc<H>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (limits, tls) = {
        let state = handler.shared().load();
        let tls = if handler.serves_tls() {
            state.config.tls.clone()
        } else {
            None
        };
        (state.config.limits.clone(), tls)
    };
    match tls {
        // Boxed: a TLS session's state is kilobytes that a plain
        // connection's task would otherwise carry too.
        Some(config) => Box::pin(serve_tls(config, stream, addr, handler, stop, &limits)).await,
        None => {
            let (protocol, stream) = match io::sniff(stream, limits.header_read_timeout).await {
                Ok(Some(sniffed)) => sniffed,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(peer = %addr, "read failed: {e}");
                    return;
                }
            };
            serve_http(
                protocol,
                stream,
                Peer::new(addr, false, None),
                handler,
                stop,
                &limits,
            )
            .await;
        }
    }
}

/// The TLS handshake, then HTTP/1.1 or HTTP/2 as ALPN chose.
async fn serve_tls<H: Handler>(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    addr: SocketAddr,
    handler: Arc<H>,
    stop: watch::Receiver<bool>,
    limits: &crate::config::Limits,
) {
    // The handshake counts against the header read timeout.
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let stream = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    // With TLS the protocol is chosen by ALPN, never guessed.
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => io::Protocol::H2c,
        _ => io::Protocol::Http1,
    };
    // RFC 8705: the thumbprint a certificate-bound token must name.
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| crate::dpop::certificate_thumbprint(leaf).into());
    serve_http(
        protocol,
        stream,
        Peer::new(addr, true, certificate),
        handler,
        stop,
        limits,
    )
    .await;
}

/// Serves HTTP/1.1 (with upgrades) or HTTP/2 on an established stream.
async fn serve_http<T, H: Handler>(
    protocol: io::Protocol,
    stream: T,
    peer: Peer,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
    limits: &crate::config::Limits,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let tunnels = peer.tunnels.clone();
    let addr = peer.addr;
    let mut stream = Tracked::new(stream, activity.clone());
    let head_deadline = (protocol == io::Protocol::Http1).then_some(limits.header_read_timeout);
    let mut watch = std::pin::pin!(io::OnWake::new(
        activity.clone().watch(limits.idle_timeout, head_deadline)
    ));
    let mut stopped = std::pin::pin!(io::OnWake::new(stopped(&mut stop)));
    // hyper's floor; a lower limit is counted by `head_size`.
    let max_head = limits.max_request_header_bytes.max(8192);
    let read = match protocol {
        // The common shape is served by the gateway's own HTTP/1.1 side
        // until a request of another shape hands the connection to hyper.
        io::Protocol::Http1 => {
            let serving = h1::Serving {
                peer: &peer,
                handler: &*handler,
                activity: &activity,
                max_head,
                watch: watch.as_mut(),
                stopped: stopped.as_mut(),
            };
            match h1::serve(&mut stream, serving).await {
                // Only hyper's side upgrades: no tunnel to run.
                h1::Ended::Closed => return,
                h1::Ended::Handoff(read) => read,
            }
        }
        io::Protocol::H2c => Vec::new(),
    };
    let io = TokioIo::new(io::Rewind::new(read, stream));
    let in_service = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let busy = in_service.busy();
        let peer = peer.clone();
        async move {
            let response = handler
                .handle(peer, req.map(ClientBody::Hyper))
                .await
                .into_response();
            Ok::<_, Infallible>(response.map(|inner| Sending { inner, _busy: busy }))
        }
    });
    let result = match protocol {
        io::Protocol::Http1 => {
            // No timer for hyper: the header read timeout is the
            // connection's own deadline (`Activity::watch`), not a timer
            // allocated, armed and dropped for every request.
            let mut builder = http1::Builder::new();
            builder.max_buf_size(max_head);
            let conn = builder.serve_connection(io, service).with_upgrades();
            until_done!(conn, watch.as_mut(), stopped.as_mut(), addr)
        }
        io::Protocol::H2c => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new()).max_header_list_size(
                u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX),
            );
            let conn = builder.serve_connection(io, service);
            // Boxed: HTTP/2's connection state is twice HTTP/1's, and
            // every HTTP/1 connection's task would carry room for it.
            Box::pin(async { until_done!(conn, watch.as_mut(), stopped.as_mut(), addr) }).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %addr, "connection ended with an error: {e}");
    }
    run_tunnel(&tunnels, &activity, limits, addr).await;
}

/// A WebSocket handshake handed the connection over: the tunnel runs
/// here, holding this connection's permit, until either side closes, no
/// byte moves for the idle timeout, its lifetime ends, or the drain ends
/// (the listener aborts what is left).
async fn run_tunnel(
    tunnels: &Tunnels,
    activity: &Arc<Activity>,
    limits: &crate::config::Limits,
    addr: SocketAddr,
) {
    if let Some(tunnel) = tunnels.take() {
        let lifetime = async {
            match limits.tunnel_max_lifetime {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tunnel => {}
            () = activity.clone().idle_for(limits.idle_timeout) => {
                tracing::debug!(peer = %addr, "WebSocket tunnel idle: closed");
            }
            () = lifetime => {
                tracing::debug!(peer = %addr, "WebSocket tunnel reached tunnel_max_lifetime: closed");
            }
        }
    }
}
