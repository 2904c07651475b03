//! Connection plumbing: telling HTTP/2 prior knowledge from HTTP/1 with a
//! bounded first read, replaying the bytes read for that, tracking a
//! connection's activity for the idle and header read timeouts, and
//! polling a connection's rarely-ready futures only when they wake
//! ([`OnWake`]).
//!
//! Adapter: depends on tokio.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a plaintext connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2: prior knowledge in clear text, or `h2` by ALPN under TLS.
    H2c,
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Vec<u8>,
    offset: usize,
    inner: T,
}

/// Reads just enough to tell the protocol. The read is bounded by `timeout`
/// (hyper's auto-detection read has none: a silent client would hold a
/// connection slot forever). `Ok(None)`: the client went away or stalled.
pub async fn sniff<T: AsyncRead + Unpin>(
    mut io: T,
    timeout: Duration,
) -> io::Result<Option<(Protocol, Rewind<T>)>> {
    let mut prefix = Vec::with_capacity(H2_PREFACE.len());
    let read = async {
        let mut buf = [0u8; 24];
        while prefix.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&prefix) {
            let want = H2_PREFACE.len() - prefix.len();
            let n = io.read(&mut buf[..want]).await?;
            if n == 0 {
                return Ok::<bool, io::Error>(false);
            }
            prefix.extend_from_slice(&buf[..n]);
        }
        Ok(true)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) | Err(_) => return Ok(None),
        Ok(Err(e)) => return Err(e),
    }
    let protocol = if prefix == H2_PREFACE {
        Protocol::H2c
    } else {
        Protocol::Http1
    };
    Ok(Some((protocol, Rewind::new(prefix, io))))
}

impl<T> Rewind<T> {
    /// `inner`, after `prefix`: bytes already read from it.
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Rewind {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.offset < self.prefix.len() {
            let rest = &self.prefix[self.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.offset += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What a connection is doing: when it last moved a byte, whether a write
/// is waiting for the client, and how many requests it has in the service.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    /// Milliseconds since `started` of the last read or write.
    last: AtomicU64,
    /// Milliseconds since `started` of the last write.
    wrote: AtomicU64,
    /// Milliseconds since `started` when the service last became empty.
    ended: AtomicU64,
    /// The last write or flush waits for the client to read: the response
    /// is still going out, so no request head is being waited for.
    blocked: AtomicBool,
    busy: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            started: Instant::now(),
            last: AtomicU64::new(0),
            wrote: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
        }
    }
}

/// Marks a request as in progress until dropped.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.0.touch();
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.store(now, Ordering::Release);
        }
    }
}

/// Why [`Activity::watch`] ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing in the service and no byte moved for the idle timeout.
    Idle,
    /// No whole request head within the header read timeout.
    Head,
}

impl Activity {
    fn now(&self) -> u64 {
        let since = crate::clock::now().saturating_duration_since(self.started);
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) -> u64 {
        let now = self.now();
        self.last.store(now, Ordering::Release);
        now
    }

    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.went_out(),
            Poll::Pending => self.blocked.store(true, Ordering::Release),
            Poll::Ready(_) => {}
        }
    }

    /// A flush, too, can wait for the client (a TLS stream's last records).
    /// One that was never held up moved nothing new: no clock read.
    fn flushed(&self, polled: &Poll<io::Result<()>>) {
        match polled {
            Poll::Ready(Ok(())) if self.blocked.load(Ordering::Acquire) => self.went_out(),
            Poll::Pending => self.blocked.store(true, Ordering::Release),
            Poll::Ready(_) => {}
        }
    }

    fn went_out(&self) {
        let now = self.touch();
        self.wrote.store(now, Ordering::Release);
        self.blocked.store(false, Ordering::Release);
    }

    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once the connection has had no request in the service and
    /// moved no byte for `limit` (Envoy's idle timeout: no active streams).
    pub async fn idle_for(self: Arc<Self>, limit: Duration) {
        self.watch(limit, None).await;
    }

    /// Resolves once the connection is idle for `idle` (as
    /// [`Activity::idle_for`]), or, with `head` (HTTP/1), once it has had
    /// no request in the service and written nothing for `head`: a request
    /// head must arrive whole within `head` of the last response going out
    /// (or of the connection opening), however slowly its bytes trickle in.
    /// While a write waits for the client to read, no head is due yet.
    ///
    /// One deadline per connection, checked by this one timer, instead of
    /// a timer armed and dropped for every request (hyper's
    /// `header_read_timeout`, which this replaces for HTTP/1).
    pub async fn watch(self: Arc<Self>, idle: Duration, head: Option<Duration>) -> Expired {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let head_ms = head.map(|h| u64::try_from(h.as_millis()).unwrap_or(u64::MAX));
        loop {
            let now = self.now();
            let serving = self.busy.load(Ordering::Acquire) > 0;
            let quiet = now.saturating_sub(self.last.load(Ordering::Acquire));
            if !serving && quiet >= idle_ms {
                return Expired::Idle;
            }
            // Idle is checked loosely (an eighth of the limit late at most);
            // the head deadline exactly.
            let mut wait = idle_ms.saturating_sub(quiet).max(idle_ms / 8);
            if let Some(head_ms) = head_ms {
                let since = self
                    .ended
                    .load(Ordering::Acquire)
                    .max(self.wrote.load(Ordering::Acquire));
                let waiting = !serving && !self.blocked.load(Ordering::Acquire);
                let spent = now.saturating_sub(since);
                if waiting && spent >= head_ms {
                    return Expired::Head;
                }
                // Not waiting for a head now: the next one is due no sooner
                // than a whole `head` from now.
                let due = if waiting { head_ms - spent } else { head_ms };
                wait = wait.min(due);
            }
            tokio::time::sleep(Duration::from_millis(wait.max(10))).await;
        }
    }
}

/// Polls a future only once it has been woken: on the first poll, then
/// after each wake-up of its own. A future that is rarely ready (the
/// drain's start, a connection's deadline) shares its task with a
/// connection that is polled several times per request; it would
/// otherwise be polled each time for nothing (a lock and a timer check per
/// poll). Any future may be polled this way: one that returns `Pending`
/// promises to wake its waker when it can make progress.
pub struct OnWake<F> {
    inner: Pin<Box<F>>,
    gate: Gate,
}

/// What [`OnWake`] is made of, for a poll that is no future of its own
/// (a read of the client's socket while its request is answered): the
/// waker to poll with, which raises a flag and wakes the task, and the
/// flag, which says whether polling again can make progress.
pub struct Gate {
    flag: Arc<WakeFlag>,
    /// The waker the gated poll is made with: it raises the flag.
    waker: Waker,
    /// The task's waker as last handed to the flag: it changes only if
    /// the gate moves to another task, so the lock is rarely taken.
    task: Option<Waker>,
}

struct WakeFlag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Ok(task) = self.task.lock()
            && let Some(task) = task.as_ref()
        {
            task.wake_by_ref();
        }
    }
}

impl Default for Gate {
    /// A gate that lets its first poll through.
    fn default() -> Self {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Gate {
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl Gate {
    /// Lets the next poll through, woken or not.
    pub fn open(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }

    /// `poll(cx)` with the gate's waker, if the gate was woken (or opened)
    /// since its last poll; else `Pending` at once.
    pub fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            self.task = Some(cx.waker().clone());
            if let Ok(mut task) = self.flag.task.lock() {
                *task = Some(cx.waker().clone());
            }
        }
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        poll(&mut Context::from_waker(&self.waker))
    }
}

impl<F: Future> OnWake<F> {
    pub fn new(inner: F) -> Self {
        OnWake {
            inner: Box::pin(inner),
            gate: Gate::default(),
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let inner = &mut this.inner;
        this.gate.poll(cx, |cx| inner.as_mut().poll(cx))
    }
}

/// An I/O stream that records its activity.
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        activity.touch();
        Tracked { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.wrote(&polled);
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.flushed(&polled);
        polled
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.wrote(&polled);
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A task's waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The inner future is polled first, then only after it woke its
    /// waker; its wake-up reaches the task, and its result comes out.
    #[test]
    fn on_wake_polls_only_after_a_wake_up() {
        let polls = Arc::new(AtomicUsize::new(0));
        let inner_waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let ready = Arc::new(AtomicBool::new(false));
        let future = {
            let (polls, inner_waker, ready) = (polls.clone(), inner_waker.clone(), ready.clone());
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                *inner_waker.lock().expect("lock") = Some(cx.waker().clone());
                if ready.load(Ordering::SeqCst) {
                    Poll::Ready(7)
                } else {
                    Poll::Pending
                }
            })
        };
        let mut on_wake = std::pin::pin!(OnWake::new(future));
        let count = Arc::new(Count::default());
        let task = Waker::from(count.clone());
        let mut cx = Context::from_waker(&task);

        assert!(on_wake.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the first poll reaches it");
        for _ in 0..3 {
            assert!(on_wake.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled without a wake-up");

        ready.store(true, Ordering::SeqCst);
        let woken = inner_waker.lock().expect("lock").take().expect("a waker");
        woken.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the task was not woken");
        assert_eq!(on_wake.as_mut().poll(&mut cx), Poll::Ready(7));
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    /// A TLS stream takes a response's last bytes in `poll_write` and
    /// sends their records in `poll_flush`: a flush held up by the client
    /// is the response still going out too.
    #[tokio::test]
    async fn no_head_is_due_while_a_tls_flush_waits() {
        let head = Duration::from_millis(300);
        // More than the small socket buffers below hold, less than what
        // rustls takes before it makes a write wait: the last write is
        // taken whole, and its records wait in the flush.
        const RESPONSE: usize = 48 * 1024;
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let cert_pem = key.cert.pem();
        let server_tls = crate::tls::server_config(
            cert_pem.as_bytes(),
            key.signing_key.serialize_pem().as_bytes(),
        )
        .expect("server tls");
        let client_tls = crate::tls::client_config(crate::tls::Roots::Pem(cert_pem.as_bytes()))
            .expect("client tls");
        let listening = tokio::net::TcpSocket::new_v4().expect("socket");
        listening.set_send_buffer_size(4096).expect("sndbuf");
        listening
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = listening.local_addr().expect("addr");
        let listener = listening.listen(1).expect("listen");
        let connecting = tokio::net::TcpSocket::new_v4().expect("socket");
        connecting.set_recv_buffer_size(4096).expect("rcvbuf");
        let (client_io, server_io) = tokio::join!(connecting.connect(addr), listener.accept());
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let (client, server) = tokio::join!(
            tokio_rustls::TlsConnector::from(client_tls).connect(name, client_io.expect("connect")),
            tokio_rustls::TlsAcceptor::from(server_tls).accept(server_io.expect("accept").0),
        );
        let mut client = client.expect("client handshake");
        let activity = Arc::new(Activity::default());
        let mut server = Tracked::new(server.expect("server handshake"), activity.clone());
        let watch = tokio::spawn(activity.clone().watch(Duration::from_secs(60), Some(head)));

        let busy = activity.busy();
        let writing = tokio::spawn(async move {
            server.write_all(&[b'r'; RESPONSE]).await.expect("write");
            server.flush().await.expect("flush");
            server
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(busy);
        tokio::time::sleep(head * 3).await;
        assert!(
            !writing.is_finished(),
            "the response went out whole: the flush was never held up"
        );
        assert!(
            !watch.is_finished(),
            "cut while the response's records waited to be flushed"
        );

        let mut got = vec![0; RESPONSE];
        client.read_exact(&mut got).await.expect("read");
        let _server = writing.await.expect("join");
        assert_eq!(watch.await.expect("join"), Expired::Head);
    }

    /// The head deadline runs from the end of the last response, and not
    /// while that response still waits for the client to read it.
    #[tokio::test]
    async fn no_head_is_due_while_a_response_is_going_out() {
        let head = Duration::from_millis(300);
        let activity = Arc::new(Activity::default());
        // The client's side buffers 64 bytes: a larger response waits.
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = Tracked::new(server, activity.clone());
        let watch = tokio::spawn(activity.clone().watch(Duration::from_secs(60), Some(head)));

        let busy = activity.busy();
        let writing = tokio::spawn(async move {
            server.write_all(&[b'r'; 4096]).await.expect("write");
            server
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The service is done; its response is still going out.
        drop(busy);
        tokio::time::sleep(head * 3).await;
        assert!(
            !watch.is_finished(),
            "cut while the response was still going out"
        );

        let mut got = vec![0; 4096];
        client.read_exact(&mut got).await.expect("read");
        let _server = writing.await.expect("join");
        let written = Instant::now();
        assert_eq!(watch.await.expect("join"), Expired::Head);
        let took = written.elapsed();
        assert!(
            took >= head - Duration::from_millis(50) && took < head * 3,
            "the next head was due {took:?} after the response went out"
        );
    }
}
