//! Remote key sets: the life of one issuer's JWKS (SPEC §Key lifecycle).
//!
//! - fetched in the background at start (the gateway listens at once; the
//!   issuer answers 503 until its keys arrive);
//! - OIDC discovery when configured, the document's `issuer` checked;
//! - refreshed every `jwks_refresh`, sooner when `Cache-Control: max-age`
//!   says so, never more often than once a minute for that reason;
//! - a token with an unknown `kid` triggers one refetch per issuer per 30 s,
//!   shared by every concurrent request (single flight);
//! - any failed fetch — periodic or unknown-`kid` — starts retries with
//!   backoff; the last good keys serve until `jwks_max_stale` after the last
//!   successful fetch of any kind, then the issuer answers 503;
//! - bounded in time and size, `HTTPS_PROXY` / `NO_PROXY` honoured, no
//!   redirect from https to http, a discovered `jwks_uri` is https unless
//!   the issuer itself is http, `oct` keys ignored, a document that does
//!   not parse changes nothing;
//! - `jwks_refresh` and `jwks_max_stale` change with a reload without a
//!   refetch (the key source is the same).
//!
//! Adapter: depends on reqwest, tokio, [`super::keys`], [`crate::token`]
//! (the key cell and its refetch hook) and [`crate::telemetry`].

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::KeySet;
use crate::config::{RemoteJwks, RemoteSource, RemoteSpec};
use crate::telemetry::Metrics;
use crate::token::{KeyCell, Refetch};

/// JWKS and discovery documents larger than this are refused.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// `Cache-Control: max-age` never makes refreshes more frequent than this.
const MIN_MAX_AGE: Duration = Duration::from_secs(60);
/// At most one unknown-`kid` refetch per issuer per this long.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("status {0}")]
    Status(reqwest::StatusCode),
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("OIDC discovery: {0}")]
    Discovery(String),
    #[error(transparent)]
    Keys(#[from] super::KeyError),
}

/// The HTTP client for identity providers (reqwest follows the proxy
/// environment variables). Redirects are followed (at most 5), never from
/// https down to http: keys fetched over TLS stay fetched over TLS.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    client_with_timeout(FETCH_TIMEOUT)
}

/// The same client (proxy variables, redirect rules) with another timeout:
/// token endpoints get 5 s.
pub fn client_with_timeout(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let from = attempt.previous().last().map(|u| u.scheme() == "https");
        if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else if !may_redirect(from.unwrap_or(false), attempt.url().scheme()) {
            attempt.error("a redirect from https to http is not followed")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(redirects)
        .user_agent(concat!("scopegate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A redirect from an https URL must stay https.
fn may_redirect(from_https: bool, to_scheme: &str) -> bool {
    !from_https || to_scheme == "https"
}

/// A discovered `jwks_uri` must be https, unless the issuer itself is http
/// (local development): discovery over TLS must not hand keys to plain HTTP.
fn discovered_uri_allowed(issuer: &str, jwks_uri: &str) -> bool {
    jwks_uri.starts_with("https://")
        || (jwks_uri.starts_with("http://") && issuer.starts_with("http://"))
}

/// GETs a document with a size cap; returns it with its `max-age`.
async fn get_capped(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
    let mut response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let max_age = max_age(response.headers());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

/// `Cache-Control: max-age=N`, if the response has one.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let (name, value) = d.trim().split_once('=')?;
            name.trim().eq_ignore_ascii_case("max-age").then_some(value)
        })
        .find_map(|n| n.trim().trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The wait before the next refresh after a success: `jwks_refresh`, or
/// sooner when `max-age` says so, but never under a minute for that reason.
fn next_refresh(refresh: Duration, max_age: Option<Duration>) -> Duration {
    max_age.map_or(refresh, |m| m.max(MIN_MAX_AGE).min(refresh))
}

/// One issuer's remote key set. It holds its cell weakly: when no state
/// references the cell any more (the issuer left the config), the
/// background task ends by itself.
pub struct Remote {
    spec: RemoteSpec,
    /// `jwks_refresh` and `jwks_max_stale`, which a reload may change.
    timing: Mutex<Timing>,
    /// The last successful fetch, periodic or unknown-`kid`.
    last_success: Mutex<Option<Instant>>,
    /// Wakes the refresh loop when an unknown-`kid` refetch failed, so that
    /// retries with backoff start at once.
    wake: tokio::sync::Notify,
    client: reqwest::Client,
    cell: Weak<KeyCell>,
    metrics: Arc<Metrics>,
    /// When the last unknown-`kid` refetch started; the lock makes it single flight.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    /// Hash of the last JWKS stored, so an unchanged document keeps the
    /// key generation (and the verified-token cache) as it is.
    last_document: AtomicU64,
    /// The last fetch, of either kind, failed: the loop is retrying.
    failing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    refresh: Duration,
    max_stale: Duration,
}

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl Remote {
    /// Starts keeping `remote.keys` filled: installs the unknown-`kid` hook
    /// and spawns the refresh loop.
    pub fn start(
        client: reqwest::Client,
        remote: &RemoteJwks,
        metrics: Arc<Metrics>,
    ) -> Arc<Remote> {
        let this = Arc::new(Remote {
            spec: remote.spec.clone(),
            timing: Mutex::new(Timing {
                refresh: remote.spec.refresh,
                max_stale: remote.spec.max_stale,
            }),
            last_success: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            client,
            cell: Arc::downgrade(&remote.keys),
            metrics,
            last_refetch: tokio::sync::Mutex::new(None),
            last_document: AtomicU64::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        remote.keys.set_refetcher(this.clone());
        tokio::spawn(this.clone().run());
        this
    }

    /// Takes a reload's `jwks_refresh` and `jwks_max_stale` (same source).
    pub fn retime(&self, spec: &RemoteSpec) {
        let timing = Timing {
            refresh: spec.refresh,
            max_stale: spec.max_stale,
        };
        if let Ok(mut current) = self.timing.lock()
            && *current != timing
        {
            *current = timing;
            // The loop picks the new refresh up at once.
            self.wake.notify_one();
        }
    }

    fn timing(&self) -> Timing {
        self.timing.lock().map_or(
            Timing {
                refresh: self.spec.refresh,
                max_stale: self.spec.max_stale,
            },
            |t| *t,
        )
    }

    /// When the last good keys stop serving, if fetches keep failing.
    fn stale_at(&self) -> Option<Instant> {
        let last = (*self.last_success.lock().ok()?)?;
        Some(last + self.timing().max_stale)
    }

    /// After any failed fetch: drop the keys once they are too old.
    fn failed(&self, e: &FetchError, what: &str) {
        let stale = self.stale_at().is_some_and(|at| Instant::now() >= at);
        match self.cell.upgrade() {
            Some(cell) if stale && cell.is_ready() => {
                cell.clear();
                tracing::error!(issuer = %self.spec.issuer, max_stale = ?self.timing().max_stale,
                    "JWKS unavailable for longer than jwks_max_stale: keys dropped, the issuer answers 503: {e}");
            }
            _ => tracing::warn!(issuer = %self.spec.issuer, "{what} failed: {e}"),
        }
    }

    async fn jwks_url(&self) -> Result<String, FetchError> {
        match &self.spec.source {
            RemoteSource::Jwks(url) => Ok(url.clone()),
            RemoteSource::Discovery => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.spec.issuer.trim_end_matches('/')
                );
                let (body, _) = get_capped(&self.client, &url).await?;
                let doc: Discovery = serde_json::from_slice(&body).map_err(|e| {
                    FetchError::Discovery(format!("{url} is not a discovery document: {e}"))
                })?;
                if doc.issuer != self.spec.issuer {
                    return Err(FetchError::Discovery(format!(
                        "{url} names the issuer {:?}, not the configured {:?}; its keys are not trusted",
                        doc.issuer, self.spec.issuer
                    )));
                }
                if !discovered_uri_allowed(&self.spec.issuer, &doc.jwks_uri) {
                    return Err(FetchError::Discovery(format!(
                        "jwks_uri {:?} is not https (only an http:// issuer may use an http:// jwks_uri)",
                        doc.jwks_uri
                    )));
                }
                Ok(doc.jwks_uri)
            }
        }
    }

    /// One fetch: discovery if configured, the JWKS, parsed. Stores the
    /// keys when they changed. Returns the document's `max-age`.
    async fn fetch_and_store(&self) -> Result<Option<Duration>, FetchError> {
        let result = async {
            let url = self.jwks_url().await?;
            let fetched = get_capped(&self.client, &url);
            let (body, max_age) =
                crate::telemetry::trace::client(&self.metrics.trace, "jwks", "GET", &url, fetched)
                    .await?;
            let keys = KeySet::from_jwks(&body)?;
            Ok::<_, FetchError>((body, keys, max_age))
        }
        .await;
        self.metrics.jwks_fetch(&self.spec.issuer, result.is_ok());
        let (body, keys, max_age) = result?;
        if let Ok(mut last) = self.last_success.lock() {
            *last = Some(Instant::now());
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        let hash = hasher.finish();
        if let Some(cell) = self.cell.upgrade()
            && (self.last_document.swap(hash, Ordering::AcqRel) != hash || !cell.is_ready())
        {
            for skipped in &keys.skipped {
                tracing::warn!(issuer = %self.spec.issuer, "JWKS key skipped: {skipped}");
            }
            tracing::info!(issuer = %self.spec.issuer, keys = keys.keys().len(), "JWKS loaded");
            cell.store(keys);
        }
        Ok(max_age)
    }

    /// The refresh loop; ends when the issuer's cell is gone.
    async fn run(self: Arc<Self>) {
        let mut retry = FIRST_RETRY;
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // A failed unknown-`kid` refetch (retry with backoff from
                // now), or new timing from a reload.
                () = self.wake.notified() => {
                    wait = if self.last_fetch_failed() {
                        self.backoff(&mut retry)
                    } else {
                        self.timing().refresh.min(wait)
                    };
                    continue;
                }
            }
            if self.cell.strong_count() == 0 {
                return;
            }
            wait = match self.fetch_and_store().await {
                Ok(max_age) => {
                    retry = FIRST_RETRY;
                    self.failing.store(false, Ordering::Release);
                    next_refresh(self.timing().refresh, max_age)
                }
                Err(e) => {
                    self.failing.store(true, Ordering::Release);
                    self.failed(&e, "JWKS fetch");
                    self.backoff(&mut retry)
                }
            };
        }
    }

    /// The wait before the next retry (doubling, at most a minute or the
    /// refresh interval), never past the moment the keys go stale.
    fn backoff(&self, retry: &mut Duration) -> Duration {
        let mut wait = *retry;
        *retry = (*retry * 2)
            .min(MAX_RETRY)
            .min(self.timing().refresh.max(FIRST_RETRY));
        if let Some(at) = self.stale_at() {
            let until = at.saturating_duration_since(Instant::now());
            if !until.is_zero() {
                wait = wait.min(until);
            }
        }
        wait
    }

    fn last_fetch_failed(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
}

impl Refetch for Remote {
    fn refetch(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // Waiting callers queue here and find the fresh timestamp.
            let mut last = self.last_refetch.lock().await;
            if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
            match self.fetch_and_store().await {
                Ok(_) => self.failing.store(false, Ordering::Release),
                Err(e) => {
                    self.failing.store(true, Ordering::Release);
                    self.failed(&e, "JWKS refetch for an unknown kid");
                    // Retries with backoff start now, not at the next refresh.
                    self.wake.notify_one();
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{CACHE_CONTROL, HeaderMap, HeaderValue};

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CACHE_CONTROL, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age(&headers(&["public, max-age=3600"])),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age(&headers(&["no-cache", "Max-Age=\"120\""])),
            Some(Duration::from_secs(120))
        );
        assert_eq!(max_age(&headers(&["s-maxage=10"])), None);
        assert_eq!(max_age(&headers(&["max-age=soon"])), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }

    #[test]
    fn never_from_https_down_to_http() {
        assert!(may_redirect(true, "https"));
        assert!(!may_redirect(true, "http"));
        assert!(may_redirect(false, "http"));
        assert!(may_redirect(false, "https"));
        let https = "https://idp.example.com/";
        let http = "http://127.0.0.1:8082/";
        assert!(discovered_uri_allowed(
            https,
            "https://idp.example.com/jwks"
        ));
        assert!(!discovered_uri_allowed(
            https,
            "http://idp.example.com/jwks"
        ));
        assert!(discovered_uri_allowed(http, "http://127.0.0.1:8082/jwks"));
        assert!(discovered_uri_allowed(http, "https://idp.example.com/jwks"));
        assert!(!discovered_uri_allowed(https, "ftp://idp.example.com/jwks"));
    }

    #[test]
    fn max_age_shortens_refresh_but_not_below_a_minute() {
        let five = Duration::from_secs(300);
        assert_eq!(next_refresh(five, None), five);
        assert_eq!(
            next_refresh(five, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        assert_eq!(
            next_refresh(five, Some(Duration::from_secs(5))),
            Duration::from_secs(60)
        );
        assert_eq!(next_refresh(five, Some(Duration::from_secs(86_400))), five);
    }
}
