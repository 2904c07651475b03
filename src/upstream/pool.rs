//! The connections to one upstream: hyper's HTTP/1 client connections,
//! kept idle in a LIFO list and handed back by the response body itself
//! when it has been read to the end.
//!
//! hyper-util's pooled client spawns a task per HTTP/1 request to wait for
//! the connection to become idle again (the body is still streaming when
//! the head arrives); here the body returns its connection as its last
//! frame is read, so a request costs no extra task.
//!
//! Adapter: depends on hyper, hyper-util, hyper-rustls and tokio.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

use crate::Body;

/// Idle connections older than this are closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per upstream.
const MAX_IDLE: usize = 256;

type Sender = http1::SendRequest<Body>;

/// Why a request could not be sent.
#[derive(Debug)]
pub(super) struct Failed(pub String);

pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/` of the upstream: what is connected to.
    target: Uri,
    idle: Mutex<Vec<(Sender, Instant)>>,
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
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (origin-form) on an idle connection, or a new one.
    /// A request that an idle connection closed under before writing it is
    /// sent once more on a fresh connection, as hyper-util's client does.
    pub(super) async fn send(
        self: &Arc<Self>,
        request: Request<Body>,
    ) -> Result<Response<Body>, Failed> {
        let mut request = request;
        let mut fresh = false;
        loop {
            let mut sender = match self.idle_sender().await {
                Some(sender) => sender,
                None => {
                    fresh = true;
                    self.connect().await?
                }
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.returning(sender, response)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(Failed(e.into_error().to_string())),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open.
    async fn idle_sender(&self) -> Option<Sender> {
        loop {
            let (mut sender, since) = self.idle.lock().ok()?.pop()?;
            if sender.is_closed() || since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            // Normally ready at once; the connection may still be
            // finishing the previous exchange.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<Sender, Failed> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(|e| Failed(format!("connect: {e}")))?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Failed(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(sender)
    }

    fn check_in(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((sender, Instant::now()));
        }
    }

    /// The response, whose body hands the connection back when read to
    /// its end (at once when it is empty). A `101` keeps its connection:
    /// it becomes the tunnel.
    fn returning(self: &Arc<Self>, sender: Sender, response: Response<Incoming>) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let upgrading = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
        let sender = if upgrading {
            None
        } else if body.is_end_stream() {
            self.check_in(sender);
            None
        } else {
            Some(sender)
        };
        let body = Returning {
            inner: body,
            sender,
            pool: self.clone(),
        };
        Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
    }
}

/// A response body that returns its connection after its last frame.
struct Returning {
    inner: Incoming,
    sender: Option<Sender>,
    pool: Arc<Pool>,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            // The last frame: a server may stop polling once the body
            // says it has ended.
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                // A broken exchange: the connection is not reused.
                self.sender = None;
                false
            }
            Poll::Pending => false,
        };
        if ended && let Some(sender) = self.sender.take() {
            self.pool.check_in(sender);
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
