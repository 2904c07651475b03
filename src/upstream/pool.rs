//! The connections to one upstream: hyper's HTTP/1 client connections,
//! each driven by the task of the request that uses it.
//!
//! hyper-util's pooled client spawns a task per connection and hands it
//! every request through channels, and spawns another per request to wait
//! for the connection to become idle again: two tasks woken per request,
//! a pool keyed by hashing the scheme and authority, and their futures
//! moved around. Here a request checks a connection out of a LIFO list,
//! polls the connection itself while it waits for the response head, and
//! the response body goes on polling it while it streams; when the body
//! has ended, dropping it puts the connection back. A connection nobody
//! uses is polled by nobody: it is checked when it is next taken (closed
//! by the upstream meanwhile: dropped, the next one tried) and dropped by
//! a reaper once idle for [`IDLE_TIMEOUT`].
//!
//! Idle connections are kept per thread: with `workers: N` each thread
//! runs a runtime of its own, and a connection is registered with the
//! reactor of the runtime that opened it. Taken by another thread, it
//! would still work, but every readiness event would wake a thread across
//! cores; kept per thread, a request only ever takes a connection its own
//! runtime reads.
//!
//! A WebSocket handshake gets a connection of its own, driven by a task of
//! its own, since the tunnel outlives the request.
//!
//! Adapter: depends on hyper, hyper-util, hyper-rustls, tokio and
//! thread_local.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use thread_local::ThreadLocal;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service as _;

use crate::Body;

/// Idle connections older than this are closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per upstream and thread.
const MAX_IDLE: usize = 256;
/// The most an upstream connection's read buffer holds: a response head
/// must fit (nginx's `proxy_buffer_size` is 4 or 8 KiB), and a body is read
/// in pieces up to this size. hyper's default lets the buffer double up to
/// about 400 KiB while a large body streams, per connection.
const READ_BUFFER_MAX: usize = 64 * 1024;

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// One HTTP/1 connection: the handle requests are sent with, and the
/// state machine that reads and writes the socket when polled.
struct Conn {
    sender: http1::SendRequest<Body>,
    driver: http1::Connection<Io, Body>,
}

/// An idle connection, and since when.
type Idle = (Box<Conn>, Instant);

/// Why a request could not be sent.
#[derive(Debug)]
pub(super) struct Failed(pub String);

pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/` of the upstream: what is connected to.
    target: Uri,
    /// The idle connections of each thread that used the pool, most
    /// recent last. Boxed: a connection is a few kilobytes, moved in and
    /// out here. The lock is taken by its own thread, and by the reaper.
    idle: ThreadLocal<Mutex<Vec<Idle>>>,
    /// Whether the reaper task runs (started with the first idle
    /// connection, inside the runtime).
    reaping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(super) fn new(connector: HttpsConnector<HttpConnector>, target: Uri) -> Pool {
        Pool {
            connector,
            target,
            idle: ThreadLocal::new(),
            reaping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sends `request` (origin-form) on an idle connection, or a new one,
    /// and returns the response head once it has come. A request that an
    /// idle connection closed under before it was written is sent once
    /// more on a fresh connection, as hyper-util's client does.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
        upgrade: bool,
    ) -> Result<Response<Body>, Failed> {
        if upgrade {
            return self.send_upgrade(request).await;
        }
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                // Boxed: connecting holds a TLS stream by value, and would
                // make every request's future kilobytes larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            // The response head, with the connection polled alongside: no
            // other task runs it. Unconstrained: the answer comes through a
            // oneshot polled with no waker (below), so a refusal for the
            // task's budget would never be retried.
            let sending = conn.sender.try_send_request(request);
            let mut sending = std::pin::pin!(tokio::task::unconstrained(sending));
            let driver = &mut conn.driver;
            let mut closed = false;
            let sent = std::future::poll_fn(|cx| {
                if !closed && Pin::new(&mut *driver).poll(cx).is_ready() {
                    closed = true;
                }
                // Only the connection, polled just above, completes this
                // future: it needs no waker of its own, and one would wake
                // this task once more for nothing.
                match sending
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                {
                    // Closed without an answer, not even an error.
                    Poll::Pending if closed => Poll::Ready(None),
                    polled => polled.map(Some),
                }
            })
            .await;
            match sent {
                Some(Ok(response)) => return Ok(self.returning(conn, response)),
                Some(Err(mut e)) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Failed(e.into_error().to_string())),
                },
                None => return Err(Failed("connection closed".into())),
            }
        }
    }

    /// A WebSocket handshake: its own connection, driven by its own task
    /// so that the upgrade completes after the response has been answered.
    async fn send_upgrade(&self, request: Request<Body>) -> Result<Response<Body>, Failed> {
        let Conn { mut sender, driver } = *Box::pin(self.connect()).await?;
        tokio::spawn(async move {
            if let Err(e) = driver.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failed(e.to_string()))?;
        Ok(response.map(|body| {
            http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(body, Into::into))
        }))
    }

    /// The most recently used idle connection that is still open and ready
    /// for a request.
    fn checkout(&self) -> Option<Box<Conn>> {
        loop {
            let (mut conn, since) = self.idle.get()?.lock().ok()?.pop()?;
            if expired(since) {
                continue;
            }
            // One poll lets the connection notice a close by the upstream
            // and, after a response, get ready for the next request. Its
            // waker wakes nobody: otherwise handing it this request would
            // wake the task that used it last (the request's own task
            // polls it from here on).
            let mut quiet = Context::from_waker(Waker::noop());
            if Pin::new(&mut conn.driver).poll(&mut quiet).is_ready() {
                continue;
            }
            if conn.sender.is_ready() {
                return Some(conn);
            }
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, Failed> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(|e| Failed(format!("connect: {e}")))?;
        let (sender, driver) = http1::Builder::new()
            .max_buf_size(READ_BUFFER_MAX)
            .handshake(io)
            .await
            .map_err(|e| Failed(format!("handshake: {e}")))?;
        Ok(Box::new(Conn { sender, driver }))
    }

    fn check_in(self: &Arc<Self>, conn: Box<Conn>) {
        if conn.sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.get_or_default().lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((conn, Instant::now()));
        }
        if !self
            .reaping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            reap(Arc::downgrade(self));
        }
    }

    /// The response, whose body drives the connection while it streams and
    /// hands it back once it has ended.
    fn returning(
        self: &Arc<Self>,
        conn: Box<Conn>,
        response: Response<Incoming>,
    ) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let body = Returning {
            ended: body.is_end_stream(),
            inner: body,
            conn: Some(conn),
            pool: self.clone(),
        };
        Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
    }
}

/// Whether a connection idle since `since` is too old to be reused.
fn expired(since: Instant) -> bool {
    since.elapsed() > IDLE_TIMEOUT
}

/// Closes connections idle for longer than [`IDLE_TIMEOUT`], until the
/// pool is gone (a reload replaced it).
fn reap(pool: Weak<Pool>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            for idle in &pool.idle {
                if let Ok(mut idle) = idle.lock() {
                    idle.retain(|(_, since)| !expired(*since));
                }
            }
        }
    });
}

/// A response body that polls its connection while it streams, and puts
/// the connection back into the pool when dropped after its end.
struct Returning {
    inner: Incoming,
    /// `None` once the connection has ended or failed.
    conn: Option<Box<Conn>>,
    ended: bool,
    pool: Arc<Pool>,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::BoxError>>> {
        let this = &mut *self;
        if let Some(conn) = &mut this.conn
            && Pin::new(&mut conn.driver).poll(cx).is_ready()
        {
            // The connection is done (closed after this body, or failed):
            // what it read is in the body's channel; it is not reused.
            this.conn = None;
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.ended = true,
            // The last frame: a server may stop polling once the body
            // says it has ended.
            Poll::Ready(Some(Ok(_))) => this.ended = this.inner.is_end_stream(),
            // A broken exchange: the connection is not reused.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            Poll::Pending => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // Dropped before its end (the client went away): the exchange is
        // unfinished and the connection closes with it.
        if self.ended
            && let Some(conn) = self.conn.take()
        {
            self.pool.check_in(conn);
        }
    }
}
