//! The connections to one upstream, and HTTP/1.1 over them ([`super::h1`]
//! is the codec).
//!
//! A request checks a connection out of a LIFO list, writes its head (and
//! body) on it and reads the response head, in the request's own task;
//! the response body then reads the rest from the same connection while it
//! streams, and when the body has ended, dropping it puts the connection
//! back. No task, channel or wake-up besides the request's own. A
//! connection nobody uses is polled by nobody: it is checked when it is next
//! taken (closed by the upstream, or holding bytes nobody asked for:
//! dropped, the next one tried) and dropped by a reaper once idle for
//! [`IDLE_TIMEOUT`].
//!
//! Before this, hyper's client connection did the HTTP/1.1: a request
//! channel, a response oneshot, a dispatcher and a fresh 8 KiB read buffer
//! per response (its parsed head keeps the old one shared), about 13,000
//! instructions per request; without it the whole hop went from 39,996 to
//! 31,695 (README, Performance, "Issue 17, fifth sitting").
//!
//! A request is written once every request its runtime has ready has got
//! that far (`behind_the_queue`); a worker's event loop with tasks still
//! queued takes at most `events_per_busy_turn` ready sockets a turn
//! (config, 14 unless set; `app::workers`), which bounds that wait. An
//! upstream on the same core is then woken less often, though not once
//! per batch: the kernel lets it preempt the gateway after a few writes
//! of the batch (about four requests per wake-up, measured). What the
//! yield is kept for is measured in requests per second and CPU (README,
//! Performance, "Issue 17, tenth sitting" and "thirteenth sitting"); what
//! the bound is for, in the p99 ("fifteenth sitting").
//!
//! An upload is written as it streams. An upstream that answers before the
//! body has been sent whole gets the rest while its response streams; one
//! that answers and closes without reading it has its answer forwarded.
//! Either way the connection is reused only if the upload finished.
//!
//! Idle connections are kept per thread: with `workers: N` each thread
//! runs a runtime of its own, and a connection is registered with the
//! reactor of the runtime that opened it. Taken by another thread, it
//! would still work, but every readiness event would wake a thread across
//! cores; kept per thread, a request only ever takes a connection its own
//! runtime reads.
//!
//! A WebSocket handshake gets a hyper connection of its own, driven by a
//! task of its own, since the tunnel outlives the request.
//!
//! Adapter: depends on hyper (upgrades), hyper-util, hyper-rustls, tokio,
//! tokio-rustls and thread_local.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use thread_local::ThreadLocal;

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service as _;

use super::h1::{self, Chunked, Framing, Head, Parsed, Sending, Step};
use super::headers::Added;
use crate::Body;
use crate::reply::Reply;

/// Idle connections older than this are closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per upstream and thread.
const MAX_IDLE: usize = 256;
/// The most an upstream connection's read buffer holds: a response head
/// must fit (nginx's `proxy_buffer_size` is 4 or 8 KiB), and a body is read
/// in pieces up to this size.
const READ_BUFFER_MAX: usize = 64 * 1024;
/// The first read's size; it doubles while reads fill it, up to
/// [`READ_BUFFER_MAX`].
const READ_FIRST: usize = 8 * 1024;

/// What hyper-rustls connects (the WebSocket path keeps it as it is).
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
type TlsStream = tokio_rustls::client::TlsStream<TokioIo<TokioIo<TcpStream>>>;

/// A connection's transport.
enum Stream {
    Plain(TcpStream),
    /// Boxed: a TLS session is kilobytes.
    Tls(Box<TlsStream>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One HTTP/1.1 connection to the upstream.
struct Conn {
    io: Stream,
    /// Read and not yet consumed. One allocation for the connection's
    /// life while responses are small: heads and small body pieces are
    /// copied out of it.
    read: BytesMut,
    /// The request head being written (kept for its capacity).
    write: Vec<u8>,
    /// How much the next read asks for.
    next_read: usize,
    /// The last read did not fill half of `next_read`.
    shrink: bool,
}

/// An idle connection, and since when.
type Idle = (Box<Conn>, Instant);

/// Why a request could not be sent.
#[derive(Debug)]
pub(super) struct Failed(pub String);

impl Conn {
    fn new(io: Stream) -> Conn {
        Conn {
            io,
            read: BytesMut::new(),
            write: Vec::with_capacity(512),
            next_read: READ_FIRST,
            shrink: false,
        }
    }

    /// Reads once into the buffer, never past `READ_BUFFER_MAX` buffered.
    /// `Ok(0)`: the upstream closed the connection (or the buffer is full).
    /// The read asks for at least `next_read` bytes, and takes what room
    /// the buffer has beyond it.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let room = READ_BUFFER_MAX.saturating_sub(self.read.len());
        let want = self.next_read.min(room);
        if want == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.read.capacity() - self.read.len() < want && !self.read.try_reclaim(want) {
            // Exactly what is wanted. `reserve` grows a buffer no body
            // piece shares any more the way a `Vec` grows, by doubling:
            // up to 112 KiB per connection for 64 KiB reads.
            let mut fresh = BytesMut::with_capacity(self.read.len() + want);
            fresh.extend_from_slice(&self.read);
            self.read = fresh;
        }
        let mut limited = (&mut self.read).limit(room);
        let read = std::pin::pin!(self.io.read_buf(&mut limited)).poll(cx);
        if let Poll::Ready(Ok(n)) = read {
            self.record(n);
        }
        read
    }

    /// hyper's adaptive read size: doubled after a read that filled it,
    /// halved after two in a row that did not fill half of it.
    fn record(&mut self, n: usize) {
        if n >= self.next_read {
            self.next_read = (self.next_read * 2).min(READ_BUFFER_MAX);
            self.shrink = false;
        } else if n < self.next_read / 2 {
            if self.shrink {
                self.next_read = (self.next_read / 2).max(READ_FIRST);
            }
            self.shrink = !self.shrink;
        } else {
            self.shrink = false;
        }
    }

    /// The final response head, reading as needed; interim (1xx) ones are
    /// skipped.
    /// `headers`: an empty map for the head's fields.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
        headers: &mut HeaderMap,
    ) -> Poll<Result<Head, Failed>> {
        loop {
            match h1::parse_response(&self.read, method, headers) {
                Ok(Parsed::Final(len, head)) => {
                    bytes::Buf::advance(&mut self.read, len);
                    return Poll::Ready(Ok(head));
                }
                Ok(Parsed::Interim(len)) => {
                    bytes::Buf::advance(&mut self.read, len);
                    continue;
                }
                Ok(Parsed::Partial) => {}
                Err(e) => return Poll::Ready(Err(Failed(format!("response: {e}")))),
            }
            if self.read.len() >= READ_BUFFER_MAX {
                return Poll::Ready(Err(Failed(format!(
                    "response head larger than {READ_BUFFER_MAX} bytes"
                ))));
            }
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(Failed("connection closed before a response".into())));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Failed(format!("read: {e}")))),
            }
        }
    }

    /// Whether an idle connection can carry a request: still open, and
    /// nothing arrived since its last response (its buffer was empty when
    /// it was put back). Polled with a waker that wakes nobody (no task
    /// owns an idle connection).
    fn still_open(&mut self) -> bool {
        self.poll_fill(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    }
}

/// A request body on its way to the upstream, written as it streams. The
/// response may come before it has been sent whole: the response body then
/// goes on sending it (an upload the upstream answers as it reads).
struct Upload {
    body: Body,
    sending: Sending,
    /// Framed and not yet written; at first the request head, which waits
    /// for what the body has ready on its first poll, so that a body that
    /// fails at once (broken chunked framing) sends nothing.
    pending: Vec<u8>,
    written: usize,
    /// Data bytes taken from the body.
    sent: u64,
    /// The body has been polled once.
    started: bool,
    /// The body has ended; its end is framed in `pending`.
    ended: bool,
}

impl Upload {
    fn new(head: Vec<u8>, body: Body, sending: Sending) -> Upload {
        Upload {
            body,
            sending,
            pending: head,
            written: 0,
            sent: 0,
            started: false,
            ended: false,
        }
    }

    /// Writes what can be written now; ready once the body has been sent
    /// whole and flushed.
    fn poll_send(&mut self, io: &mut Stream, cx: &mut Context<'_>) -> Poll<Result<(), Broke>> {
        loop {
            if self.started {
                while self.written < self.pending.len() {
                    match Pin::new(&mut *io).poll_write(cx, &self.pending[self.written..]) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(Broke::Wire(Failed(
                                "upstream closed the upload".into(),
                            ))));
                        }
                        Poll::Ready(Ok(n)) => self.written += n,
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Err(wire(&e)));
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                if self.ended {
                    return Pin::new(io).poll_flush(cx).map_err(|e| wire(&e));
                }
                self.pending.clear();
                self.written = 0;
            }
            let first = !self.started;
            self.started = true;
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not sent: `Trailer` is hop-by-hop here.
                    if let Ok(data) = frame.into_data() {
                        self.sent += data.len() as u64;
                        if let Sending::Length(length) = self.sending
                            && self.sent > length
                        {
                            return Poll::Ready(Err(Broke::Body(Failed(
                                "request body longer than its Content-Length".into(),
                            ))));
                        }
                        h1::encode_piece(self.sending, &data, &mut self.pending);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(Broke::Body(Failed(format!("request body: {e}")))));
                }
                Poll::Ready(None) => {
                    if let Sending::Length(length) = self.sending
                        && self.sent != length
                    {
                        return Poll::Ready(Err(Broke::Body(Failed(
                            "request body shorter than its Content-Length".into(),
                        ))));
                    }
                    if self.sending == Sending::Chunked {
                        self.pending.extend_from_slice(crate::http1::LAST_CHUNK);
                    }
                    self.ended = true;
                }
                // Nothing yet: the head goes alone.
                Poll::Pending if first => {}
                Poll::Pending => {
                    // A TLS stream may hold what was written.
                    if let Poll::Ready(Err(e)) = Pin::new(io).poll_flush(cx) {
                        return Poll::Ready(Err(wire(&e)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// How an upload broke.
enum Broke {
    /// The client's body failed (too large, too slow, malformed): the
    /// request fails now, the client's fault.
    Body(Failed),
    /// The connection failed: the upstream may have answered already.
    Wire(Failed),
}

/// A write that failed: the connection's fault.
fn wire(e: &io::Error) -> Broke {
    Broke::Wire(Failed(format!("write: {e}")))
}

/// Writes a request head that has no body after it.
async fn write_head(io: &mut Stream, head: &[u8]) -> Result<(), Failed> {
    io.write_all(head)
        .await
        .and(io.flush().await)
        .map_err(|e| Failed(format!("write: {e}")))
}

pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/` of the upstream: what is connected to.
    target: Uri,
    /// The idle connections of each thread that used the pool, most
    /// recent last. The lock is taken by its own thread, and by the reaper.
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
    /// and returns the response head once it has come. A request whose
    /// head could not be written on an idle connection (closed under it)
    /// is sent once more on a fresh one, as hyper-util's client does; once
    /// written, it is never sent again.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
        added: &Added<'_>,
        upgrade: bool,
    ) -> Result<Reply, Failed> {
        if upgrade {
            // hyper writes the head from the map alone.
            added.insert_into(request.headers_mut());
            // Boxed: hyper's handshake and `send_request` futures would
            // otherwise make every request's future 1.7 KB larger, and
            // that future is moved by value on every request.
            return Box::pin(self.send_upgrade(request)).await.map(Reply::from);
        }
        let (mut parts, body) = request.into_parts();
        let hint = if body.is_end_stream() {
            None
        } else {
            Some(body.size_hint().exact())
        };
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                // Boxed: connecting holds a TLS handshake by value, and
                // would make every request's future kilobytes larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            conn.write.clear();
            let sending = h1::encode_request(
                &parts.method,
                target,
                &mut parts.headers,
                added,
                hint,
                &mut conn.write,
            );
            // Written once every request the runtime has ready got this
            // far: an upstream sharing the core preempts the gateway less
            // often than once per request (README, Performance, "Issue 17,
            // fifth sitting" and "thirteenth sitting").
            behind_the_queue().await;
            let mut upload = None;
            if sending == Sending::Nothing {
                if let Err(e) = write_head(&mut conn.io, &conn.write).await {
                    if reused {
                        continue;
                    }
                    return Err(e);
                }
            } else {
                let head = std::mem::take(&mut conn.write);
                upload = Some(Upload::new(head, body, sending));
            }
            // The request's map, emptied, takes the response's fields: one
            // map per client connection, request after request (the
            // client side recycles the response's map in turn).
            let mut fields = std::mem::take(&mut parts.headers);
            fields.clear();
            // The response head; an upload goes on meanwhile. An upload
            // that fails (an upstream that answered and closed without
            // reading the rest: a 413, say) leaves the answer to come,
            // or the read's own error.
            let mut upload_failed = None;
            let head = std::future::poll_fn(|cx| {
                if let Some(sending) = &mut upload {
                    match sending.poll_send(&mut conn.io, cx) {
                        Poll::Ready(Ok(())) => upload = None,
                        Poll::Ready(Err(Broke::Body(e))) => return Poll::Ready(Err(e)),
                        Poll::Ready(Err(Broke::Wire(e))) => {
                            upload = None;
                            upload_failed = Some(e);
                        }
                        Poll::Pending => {}
                    }
                }
                match conn.poll_head(cx, &parts.method, &mut fields) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(upload_failed.take().unwrap_or(e))),
                    polled => polled,
                }
            })
            .await?;
            return Ok(self.returning(conn, head, upload, upload_failed.is_none()));
        }
    }

    /// A WebSocket handshake: its own hyper connection, driven by its own
    /// task so that the upgrade completes after the response has been
    /// answered.
    async fn send_upgrade(&self, request: Request<Body>) -> Result<Response<Body>, Failed> {
        let io = Box::pin(self.connect_io()).await?;
        let (mut sender, driver) = http1::Builder::new()
            .max_buf_size(READ_BUFFER_MAX)
            .handshake::<_, Body>(io)
            .await
            .map_err(|e| Failed(format!("handshake: {e}")))?;
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

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<Box<Conn>> {
        loop {
            let (mut conn, since) = self.idle.get()?.lock().ok()?.pop()?;
            if !expired(since) && conn.still_open() {
                return Some(conn);
            }
        }
    }

    async fn connect_io(&self) -> Result<Io, Failed> {
        self.connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(|e| Failed(format!("connect: {e}")))
    }

    async fn connect(&self) -> Result<Box<Conn>, Failed> {
        let io = match self.connect_io().await? {
            MaybeHttpsStream::Http(tcp) => Stream::Plain(tcp.into_inner()),
            MaybeHttpsStream::Https(tls) => Stream::Tls(Box::new(tls.into_inner())),
        };
        Ok(Box::new(Conn::new(io)))
    }

    fn check_in(self: &Arc<Self>, conn: Box<Conn>) {
        if let Ok(mut idle) = self.idle.get_or_default().lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((conn, crate::clock::now()));
        }
        if !self
            .reaping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            reap(Arc::downgrade(self));
        }
    }

    /// The response, whose body reads the rest from the connection (and
    /// sends the rest of an upload still under way) and hands it back once
    /// both have ended. `intact`: no upload failed on the connection.
    fn returning(
        self: &Arc<Self>,
        conn: Box<Conn>,
        head: Head,
        upload: Option<Upload>,
        intact: bool,
    ) -> Reply {
        let reading = match head.framing {
            Framing::Empty | Framing::Length(0) => Reading::Done,
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(Chunked::Size),
            Framing::UntilClose => Reading::UntilClose,
        };
        let body = Returning {
            conn: Some(conn),
            reading,
            upload,
            reusable: head.keep_alive && intact,
            pool: self.clone(),
        };
        let response = Response::from_parts(head.parts, http_body_util::BodyExt::boxed(body));
        match head.lines {
            Some(lines) => Reply::upstream(response, lines),
            None => response.into(),
        }
    }
}

/// Resolves once every task already queued on the runtime has been
/// polled: the task wakes itself and goes to the back of the run queue.
/// Tokio's `yield_now` instead holds the task until the I/O driver has
/// been polled, which puts it behind every task that poll wakes: the
/// requests that arrive meanwhile are decided first, and the yielded
/// ones wait longer than their turn (the p99).
fn behind_the_queue() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// Whether a connection idle since `since` is too old to be reused.
fn expired(since: Instant) -> bool {
    crate::clock::now().saturating_duration_since(since) > IDLE_TIMEOUT
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

/// Where a response body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// A response body read from its connection as it streams; the
/// connection goes back into the pool when the body is dropped after its
/// end.
struct Returning {
    /// `None` once the connection failed.
    conn: Option<Box<Conn>>,
    reading: Reading,
    /// The rest of a request body the upstream answered early.
    upload: Option<Upload>,
    /// The connection may carry another request once this body, and the
    /// upload, have ended.
    reusable: bool,
    pool: Arc<Pool>,
}

impl Returning {
    fn next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Failed>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(upload) = &mut self.upload {
            match upload.poll_send(&mut conn.io, cx) {
                Poll::Ready(Ok(())) => self.upload = None,
                // The upload failed: the response is still read, but the
                // connection is not reused.
                Poll::Ready(Err(Broke::Body(e) | Broke::Wire(e))) => {
                    tracing::debug!("upload after an early response: {}", e.0);
                    self.upload = None;
                    self.reusable = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            let need_more = match &mut self.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Length(remaining) => {
                    if conn.read.is_empty() {
                        true
                    } else {
                        let piece;
                        (piece, *remaining) = h1::take_within(&mut conn.read, *remaining);
                        if *remaining == 0 {
                            self.reading = Reading::Done;
                        }
                        return Poll::Ready(Some(Ok(piece)));
                    }
                }
                Reading::Chunked(state) => match state.step(&mut conn.read) {
                    Ok(Step::Data(piece)) => return Poll::Ready(Some(Ok(piece))),
                    Ok(Step::End) => {
                        self.reading = Reading::Done;
                        continue;
                    }
                    Ok(Step::More) => true,
                    Err(e) => return Poll::Ready(Some(Err(Failed(format!("response body: {e}"))))),
                },
                Reading::UntilClose => {
                    if conn.read.is_empty() {
                        true
                    } else {
                        let n = conn.read.len();
                        return Poll::Ready(Some(Ok(h1::take(&mut conn.read, n))));
                    }
                }
            };
            debug_assert!(need_more);
            match std::task::ready!(conn.poll_fill(cx)) {
                Ok(0) if self.reading == Reading::UntilClose => {
                    self.reading = Reading::Done;
                    self.reusable = false;
                }
                Ok(0) => {
                    return Poll::Ready(Some(Err(Failed(
                        "connection closed before the response body ended".into(),
                    ))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(Failed(format!("read: {e}"))))),
            }
        }
    }
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::BoxError>>> {
        match std::task::ready!(self.next(cx)) {
            Some(Ok(piece)) => Poll::Ready(Some(Ok(Frame::data(piece)))),
            Some(Err(Failed(e))) => {
                // A broken exchange: the connection is not reused.
                self.conn = None;
                Poll::Ready(Some(Err(e.into())))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reading == Reading::Done || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Length(n) => SizeHint::with_exact(n),
            Reading::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // Dropped before its end (the client went away), or with bytes
        // after the response that nobody asked for: the connection closes.
        if self.reading == Reading::Done
            && self.reusable
            && self.upload.is_none()
            && let Some(conn) = self.conn.take()
            && conn.read.is_empty()
        {
            self.pool.check_in(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// A body read at full speed, each piece dropped as soon as it is
    /// handed on (a fast client): the read buffer's allocation never grows
    /// past [`READ_BUFFER_MAX`], though the reads grow to it.
    #[tokio::test]
    async fn a_read_buffer_stays_within_its_maximum() {
        const BODY: usize = 4 << 20;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let upstream = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            socket.write_all(&vec![b'x'; BODY]).await.expect("write");
        });
        let io = TcpStream::connect(addr).await.expect("connect");
        let mut conn = Conn::new(Stream::Plain(io));

        let (mut total, mut largest_read, mut largest_buffer) = (0, 0, 0);
        while total < BODY {
            let n = std::future::poll_fn(|cx| conn.poll_fill(cx))
                .await
                .expect("read");
            assert!(n > 0, "closed after {total} bytes");
            largest_read = largest_read.max(n);
            largest_buffer = largest_buffer.max(conn.read.capacity());
            let len = conn.read.len();
            total += h1::take(&mut conn.read, len).len();
        }
        upstream.await.expect("upstream");
        assert_eq!(total, BODY);
        assert!(
            largest_buffer <= READ_BUFFER_MAX,
            "a buffer of {largest_buffer} bytes"
        );
        assert!(
            largest_read > READ_FIRST,
            "reads never grew past {largest_read} bytes"
        );
    }
}
