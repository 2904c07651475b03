//! The upstream side: pooled HTTP/1.1 connections (`pool`, read and
//! written by the requests that use them with the gateway's own codec,
//! `h1`; idle ones closed by a reaper), the header rules of [`headers`],
//! and the mapping of failures to 502 / 504.
//!
//! Adapter: depends on hyper (the WebSocket handshake, body types),
//! hyper-util, tokio and the core.

mod h1;
pub mod headers;
mod pool;

use std::time::Duration;

use http::Request;
use hyper_util::client::legacy::connect::HttpConnector;

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::reply::Reply;
use crate::{Body, BoxError};

/// What became of a client's request body while it streamed to the
/// upstream, for the answer the client gets when forwarding fails.
#[derive(Debug, Clone, Default)]
pub struct BodyWatch(Option<Arc<AtomicU8>>);

/// Why a client body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// Past `max_request_body_bytes`: 413.
    TooLarge,
    /// No chunk for `body_timeout`: 408.
    TimedOut,
    /// The client's own framing broke (a chunk size that overflows, a
    /// connection reset mid-body): 400, the client's fault, not a 502.
    Broken,
}

impl BodyWatch {
    pub fn fault(&self) -> Option<BodyFault> {
        match self.0.as_ref()?.load(Ordering::Acquire) {
            1 => Some(BodyFault::TooLarge),
            2 => Some(BodyFault::TimedOut),
            3 => Some(BodyFault::Broken),
            _ => None,
        }
    }

    fn set(&self, fault: BodyFault) {
        let code = match fault {
            BodyFault::TooLarge => 1,
            BodyFault::TimedOut => 2,
            BodyFault::Broken => 3,
        };
        if let Some(state) = &self.0 {
            state.store(code, Ordering::Release);
        }
    }
}

/// The body went past `limits.max_request_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct TooLarge(u64);

/// No request-body chunk came within `limits.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no request body chunk for {0:?}")]
pub struct BodyTimeout(Duration);

/// A client body as it streams: past `limit` bytes, or after `timeout`
/// without a chunk, it fails, which aborts the upstream request; the
/// [`BodyWatch`] says why.
pub fn guarded<B>(body: B, limit: u64, timeout: Duration) -> (Body, BodyWatch)
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        // No body (most requests): nothing to guard, nothing allocated.
        let empty =
            http_body_util::BodyExt::map_err(http_body_util::Empty::new(), |never| match never {});
        return (http_body_util::BodyExt::boxed(empty), BodyWatch(None));
    }
    let watch = BodyWatch(Some(Arc::default()));
    let body = Guard {
        inner: body,
        remaining: limit,
        limit,
        timeout,
        timer: None,
        waiting: false,
        watch: watch.clone(),
    };
    (http_body_util::BodyExt::boxed(body), watch)
}

struct Guard<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    timeout: Duration,
    /// Armed when the client is waited for; made on the first wait.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The timer runs for the current wait (it is re-armed per chunk, so
    /// that an upstream slow to read never counts against the client).
    waiting: bool,
    watch: BodyWatch,
}

impl<B> http_body::Body for Guard<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                this.watch.set(BodyFault::Broken);
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    timer.as_mut().reset(deadline);
                    this.waiting = true;
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.watch.set(BodyFault::TimedOut);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
                }
                return Poll::Pending;
            }
        };
        this.waiting = false;
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        if len > this.remaining {
            this.watch.set(BodyFault::TooLarge);
            return Poll::Ready(Some(Err(Box::new(TooLarge(this.limit)))));
        }
        this.remaining -= len;
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that says when it has been sent whole (or has failed).
struct Tracked {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_))))
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why forwarding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connection refused, reset, or a broken response: 502.
    Unavailable,
    /// No response headers within `request_timeout`: 504.
    Timeout,
}

/// A pooled HTTP/1.1 client to the upstream (the `pool` module).
#[derive(Clone, Debug)]
pub struct Client {
    pool: Arc<pool::Pool>,
}

impl Client {
    /// A pool for one upstream: plain HTTP, or HTTPS verified against the
    /// config's roots.
    pub fn new(upstream: &crate::config::Upstream) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(upstream.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*upstream.tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let target = http::Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        Client {
            pool: Arc::new(pool::Pool::new(connector, target)),
        }
    }

    /// Sends a request and waits for the response head, at most `timeout`
    /// counted from the moment the request body has been sent (as Envoy's
    /// route timeout): a slow upload is not the upstream's fault. The
    /// response body then streams without a deadline.
    ///
    /// `request` is in origin-form, and `added` holds the fields the
    /// gateway sets that its map leaves out (`Host`, `X-Forwarded-*`); a
    /// WebSocket handshake (`upgrade`) gets a connection of its own.
    /// `timer` is the client connection's.
    pub async fn send(
        &self,
        request: Request<Body>,
        added: &headers::Added<'_>,
        upgrade: bool,
        timeout: Duration,
        timer: &Timer,
    ) -> Result<Reply, UpstreamError> {
        let (request, done_rx) = if request.body().is_end_stream() {
            (request, None)
        } else {
            let (done_tx, done_rx) = oneshot::channel();
            let request = request.map(|inner| {
                http_body_util::BodyExt::boxed(Tracked {
                    inner,
                    done: Some(done_tx),
                })
            });
            (request, Some(done_rx))
        };
        let response = self.pool.send(request, added, upgrade);
        tokio::pin!(response);
        if let Some(done_rx) = done_rx {
            tokio::select! {
                result = &mut response => return settle(result),
                // Sent whole, failed, or dropped: the clock starts now.
                _ = done_rx => {}
            }
        }
        let now = tokio::time::Instant::from_std(crate::clock::now());
        let mut deadline = timer.take(now + timeout);
        let result = tokio::select! {
            biased;
            result = &mut response => settle(result),
            () = deadline.as_mut() => Err(UpstreamError::Timeout),
        };
        timer.put_back(deadline);
        result
    }
}

/// The timer of a client connection's request timeouts, used by each of
/// its requests in turn. A Tokio timer made for every request is put into
/// the timer wheel and taken out again, under the driver's lock each time;
/// this one stays in the wheel, and moving its deadline later is an atomic
/// store. Requests that overlap (HTTP/2) make their own when it is taken.
#[derive(Debug, Default)]
pub struct Timer(std::sync::Mutex<Option<Pin<Box<tokio::time::Sleep>>>>);

impl Timer {
    /// The timer, due at `deadline`.
    fn take(&self, deadline: tokio::time::Instant) -> Pin<Box<tokio::time::Sleep>> {
        let kept = self.0.lock().ok().and_then(|mut slot| slot.take());
        match kept {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    fn put_back(&self, sleep: Pin<Box<tokio::time::Sleep>>) {
        if let Ok(mut slot) = self.0.lock()
            && slot.is_none()
        {
            *slot = Some(sleep);
        }
    }
}

fn settle(result: Result<Reply, pool::Failed>) -> Result<Reply, UpstreamError> {
    result.map_err(|e| {
        tracing::debug!("upstream request failed: {}", e.0);
        UpstreamError::Unavailable
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::Client;

    /// An upstream on a plain socket that answers every request with `ok`
    /// and counts the connections it accepted.
    fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().expect("clone");
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => {
                                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if writer.write_all(answer).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// One request through `client`, its body read to the end (which puts
    /// the connection back).
    async fn fetch(client: &Client) {
        let request = http::Request::get("/")
            .body(crate::full(""))
            .expect("request");
        let added = super::headers::Added {
            host: http::HeaderValue::from_static("upstream"),
            forwarded: None,
        };
        let response = client
            .send(
                request,
                &added,
                false,
                Duration::from_secs(5),
                &super::Timer::default(),
            )
            .await
            .expect("response");
        let body = response
            .into_response()
            .into_body()
            .collect()
            .await
            .expect("body");
        assert_eq!(body.to_bytes(), "ok");
    }

    /// With `workers: N`, each thread runs a runtime of its own: a
    /// connection one thread's runtime opened is reused by that thread,
    /// never taken by another (whose requests would then be woken by the
    /// first thread's reactor).
    #[test]
    fn idle_connections_stay_with_the_thread_that_opened_them() {
        let (addr, accepted) = counting_upstream();
        let yaml =
            format!("upstream:\n  url: http://{addr}\nroutes:\n  - path: /\n    auth: none\n");
        let config = crate::config::parse(std::path::Path::new("pool.yaml"), yaml.as_bytes())
            .expect("config");
        let client = Client::new(&config.upstreams[0]);
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        };
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let (other_done_tx, other_done_rx) = tokio::sync::oneshot::channel::<()>();
        let first = std::thread::spawn({
            let client = client.clone();
            let accepted = accepted.clone();
            move || {
                runtime().block_on(async {
                    fetch(&client).await;
                    let _ = opened_tx.send(());
                    // This runtime stays up (its reactor running) while
                    // the other thread sends its requests.
                    let _ = other_done_rx.await;
                    fetch(&client).await;
                    accepted.load(Ordering::SeqCst)
                })
            }
        });
        runtime().block_on(async {
            opened_rx.await.expect("the first thread's request");
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
            fetch(&client).await;
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                2,
                "this thread opens a connection of its own"
            );
            fetch(&client).await;
            assert_eq!(accepted.load(Ordering::SeqCst), 2, "and reuses it");
            let _ = other_done_tx.send(());
        });
        assert_eq!(
            first.join().expect("first thread"),
            2,
            "the first thread reuses its own"
        );
    }
}
