//! The upstream side: a pooled hyper client with a `TokioTimer` (so pool idle
//! timeouts fire), the header rules of [`headers`], and the mapping of
//! failures to 502 / 504.
//!
//! Adapter: depends on hyper, hyper-util, tokio and the core.

pub mod headers;

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::Body;

/// Why forwarding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connection refused, reset, or a broken response: 502.
    Unavailable,
    /// No response headers within `request_timeout`: 504.
    Timeout,
}

/// A pooled HTTP/1.1 client to the upstream.
#[derive(Clone, Debug)]
pub struct Client {
    inner: HyperClient<HttpConnector, Body>,
}

impl Client {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let inner = HyperClient::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        Client { inner }
    }

    /// Sends a request and waits for the response head, at most `timeout`.
    /// The response body then streams without a deadline.
    pub async fn send(
        &self,
        request: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout, self.inner.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                tracing::debug!("upstream request failed: {e}");
                Err(UpstreamError::Unavailable)
            }
            Err(_) => Err(UpstreamError::Timeout),
        }
    }
}
