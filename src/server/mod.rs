//! Listeners: the accept loop (bounded by `max_connections`), protocol
//! choice (HTTP/1.1, or HTTP/2 with prior knowledge), hyper's server
//! builders with a `TokioTimer` so that `header_read_timeout` really fires,
//! and the graceful drain on shutdown.
//!
//! Adapter: depends on hyper, hyper-util, tokio and [`proxy`].

mod io;
pub mod proxy;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub use proxy::Proxy;

/// Serves the proxy on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish for up to the drain timeout.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    let limits = proxy.shared.load().config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Further connections wait in the kernel's backlog until one closes.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
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
        let proxy = proxy.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, proxy, watcher).await;
        });
    }
    drop(listener);
    let drain = limits.drain_timeout;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain timeout: closing remaining connections"),
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let limits = proxy.shared.load().config.limits.clone();
    let (protocol, stream) = match io::sniff(stream, limits.header_read_timeout).await {
        Ok(Some(sniffed)) => sniffed,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(%peer, "read failed: {e}");
            return;
        }
    };
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(peer, req).await) }
    });
    let io = TokioIo::new(stream);
    let result = match protocol {
        io::Protocol::Http1 => {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_request_header_bytes);
            // Upgrades (WebSocket) are not tunnelled yet: `Upgrade` is dropped as
            // hop-by-hop, so no upgrade is ever honoured.
            watcher.watch(builder.serve_connection(io, service)).await
        }
        io::Protocol::H2c => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new()).max_header_list_size(
                u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX),
            );
            watcher.watch(builder.serve_connection(io, service)).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended with an error: {e}");
    }
}
