//! One upstream's client-credentials token (RFC 6749 §4.4), as SPEC §4.3
//! fixes its life:
//!
//! - fetched at start in the background (`/readyz` does not wait for it),
//!   shared by every request, renewed by one fetch in flight — the
//!   source's own task is the only fetcher, so a herd cannot form;
//! - renewed at the earlier of `exp − refresh_before` and 80% of the
//!   lifetime, never before 50%; expiry is when the request was sent +
//!   `expires_in` − 5 s (5 minutes without `expires_in`);
//! - while renewal fails the current token keeps being injected until its
//!   expiry, and fetches retry with exponential backoff from 1 s; with no
//!   valid token a request gets 503 with `Retry-After` (the seconds to the
//!   next try);
//! - an upstream 401 drops the token, at most once per token, and wakes
//!   the task to fetch a new one;
//! - form-urlencoded requests with `client_secret_basic` (id and secret
//!   form-urlencoded, RFC 6749 §2.3.1) or `client_secret_post`, at most one
//!   of `audience` / `resource`, a 5 s timeout, a 1 MiB cap, the proxy
//!   environment honoured; the secret never reaches a log, an error or a
//!   metric.
//!
//! Adapter: depends on reqwest, tokio, arc-swap and [`crate::telemetry`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::Notify;

use super::{Sent, Unavailable};
use crate::config::{AuthMethod, ClientCredentials, TokenEndpoint};
use crate::telemetry::{Metrics, TokenProbe};

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Taken off `expires_in`: a token is never sent in its last seconds.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// How long a token without `expires_in` is used.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// A token ready to inject.
#[derive(Debug)]
pub struct Token {
    /// Distinguishes tokens, so that a 401 drops only the one it answered.
    pub id: u64,
    /// `Bearer <token>`, marked sensitive.
    pub bearer: HeaderValue,
    /// The bare token, marked sensitive.
    pub bare: HeaderValue,
    pub expires_at: Instant,
    renew_at: Instant,
}

/// Why a token request failed (never with the secret or the token in it).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the token endpoint answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the answer is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("the answer is not a token response: {0}")]
    BadAnswer(&'static str),
    #[error("OIDC discovery: {0}")]
    Discovery(String),
}

/// One upstream's token, and the task that keeps it fresh.
pub struct TokenSource {
    upstream: Arc<str>,
    grant: ClientCredentials,
    client: reqwest::Client,
    current: ArcSwapOption<Token>,
    /// When the task tries next (for `Retry-After`).
    next_try: Mutex<Option<Instant>>,
    wake: Arc<Notify>,
    ids: AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("upstream", &self.upstream)
            .field("client_id", &self.grant.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
}

/// The HTTP client for token endpoints (proxy variables honoured, no
/// redirect from https down to http).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    crate::jwks::fetch::client_with_timeout(FETCH_TIMEOUT)
}

impl TokenSource {
    /// Starts fetching for `upstream`; `seed` is a still-valid token of
    /// the same grant (a reload that only rotated the secret keeps it).
    pub fn start(
        upstream: Arc<str>,
        grant: ClientCredentials,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
        seed: Option<&TokenSource>,
    ) -> Arc<TokenSource> {
        let this = Arc::new(TokenSource {
            upstream,
            grant,
            client,
            current: ArcSwapOption::empty(),
            next_try: Mutex::new(None),
            wake: Arc::new(Notify::new()),
            ids: AtomicU64::new(1),
            metrics,
        });
        if let Some(token) = seed.and_then(|s| s.current.load_full()) {
            this.current.store(Some(token));
        }
        let probe: Weak<dyn TokenProbe> = Arc::downgrade(&this) as Weak<dyn TokenProbe>;
        this.metrics
            .watch_upstream_token(this.upstream.clone(), probe);
        tokio::spawn(run(Arc::downgrade(&this), this.wake.clone()));
        this
    }

    pub fn grant(&self) -> &ClientCredentials {
        &self.grant
    }

    /// The token to inject now, or how long until the next try.
    pub fn current(&self) -> Result<Arc<Token>, Unavailable> {
        if let Some(token) = self.current.load_full()
            && Instant::now() < token.expires_at
        {
            return Ok(token);
        }
        let next = self.next_try.lock().ok().and_then(|t| *t);
        let wait = next.map_or(FIRST_RETRY, |t| t.saturating_duration_since(Instant::now()));
        Err(Unavailable {
            retry_after: wait.max(Duration::from_secs(1)),
        })
    }

    /// Drops the token `sent` named (at most once: a later 401 for the
    /// same token finds it gone) and wakes the task.
    pub fn reject(&self, sent: Sent) {
        let current = self.current.load();
        if current.as_ref().is_some_and(|t| t.id == sent.0) {
            self.current.store(None);
            tracing::warn!(upstream = %self.upstream, "the upstream refused the gateway's token (401): dropped, fetching a new one");
            self.wake.notify_one();
        }
    }

    async fn token_endpoint(&self) -> Result<String, FetchError> {
        match &self.grant.endpoint {
            TokenEndpoint::Url(url) => Ok(url.clone()),
            TokenEndpoint::Discover { issuer } => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let body = capped(self.client.get(&url).send().await?).await?;
                #[derive(serde::Deserialize)]
                struct Discovery {
                    issuer: String,
                    token_endpoint: String,
                }
                let doc: Discovery = serde_json::from_slice(&body).map_err(|_| {
                    FetchError::Discovery(format!(
                        "{url} is not a discovery document with a token_endpoint"
                    ))
                })?;
                if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                    return Err(FetchError::Discovery(format!(
                        "{url} names the issuer {:?}, not {issuer:?}",
                        doc.issuer
                    )));
                }
                Ok(doc.token_endpoint)
            }
        }
    }

    /// One token request.
    async fn fetch(&self) -> Result<Token, FetchError> {
        let url = self.token_endpoint().await?;
        let grant = &self.grant;
        let mut request = self
            .client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        // Built before any await: the serializer is not `Send`.
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &grant.scope {
                form.append_pair("scope", scope);
            }
            if let Some(audience) = &grant.audience {
                form.append_pair("audience", audience);
            }
            if let Some(resource) = &grant.resource {
                form.append_pair("resource", resource);
            }
            if grant.auth_method == AuthMethod::ClientSecretPost {
                form.append_pair("client_id", &grant.client_id);
                form.append_pair("client_secret", grant.client_secret.expose());
            }
            form.finish()
        };
        if grant.auth_method == AuthMethod::ClientSecretBasic {
            let value = basic(&grant.client_id, grant.client_secret.expose())
                .map_err(|_| FetchError::BadAnswer("credentials cannot form a header"))?;
            request = request.header("authorization", value);
        }
        let sent_at = Instant::now();
        let response = crate::telemetry::trace::client(
            &self.metrics.trace,
            "token",
            "POST",
            &url,
            request.body(body).send(),
        )
        .await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let body = capped(response).await?;
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| FetchError::BadAnswer("not JSON with an access_token"))?;
        if answer
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(FetchError::BadAnswer("token_type is not Bearer"));
        }
        let lifetime = match answer.expires_in {
            None => DEFAULT_LIFETIME,
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .map(|secs| Duration::from_secs(secs).saturating_sub(EXPIRY_MARGIN))
                .ok_or(FetchError::BadAnswer(
                    "expires_in is not a number of seconds",
                ))?,
        };
        if lifetime.is_zero() {
            return Err(FetchError::BadAnswer("the token expires at once"));
        }
        let mut bare = HeaderValue::from_str(&answer.access_token)
            .map_err(|_| FetchError::BadAnswer("the access_token cannot be sent in a header"))?;
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
            .map_err(|_| FetchError::BadAnswer("the access_token cannot be sent in a header"))?;
        bare.set_sensitive(true);
        bearer.set_sensitive(true);
        Ok(Token {
            id: self.ids.fetch_add(1, Ordering::Relaxed),
            bearer,
            bare,
            expires_at: sent_at + lifetime,
            renew_at: sent_at + renewal(lifetime, grant.refresh_before),
        })
    }
}

impl TokenProbe for TokenSource {
    fn seconds_left(&self) -> Option<f64> {
        let token = self.current.load_full()?;
        let left = token.expires_at.checked_duration_since(Instant::now())?;
        Some(left.as_secs_f64())
    }
}

/// `client_secret_basic` (RFC 6749 §2.3.1): id and secret form-urlencoded,
/// then HTTP Basic; the header value is marked sensitive.
pub fn basic(
    client_id: &str,
    secret: &str,
) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    use base64::Engine as _;
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret));
    let mut value = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))?;
    value.set_sensitive(true);
    Ok(value)
}

/// When to renew, from the moment the request was sent: the earlier of
/// `lifetime − refresh_before` and 80% of the lifetime, never before 50%.
fn renewal(lifetime: Duration, refresh_before: Duration) -> Duration {
    let early = lifetime
        .saturating_sub(refresh_before)
        .min(lifetime.mul_f64(0.8));
    early.max(lifetime / 2)
}

/// Reads a response body, at most [`MAX_RESPONSE_BYTES`].
async fn capped(mut response: reqwest::Response) -> Result<Vec<u8>, FetchError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The source's task: the only fetcher. Ends when the source is dropped
/// (no config uses it any more).
async fn run(source: Weak<TokenSource>, wake: Arc<Notify>) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(this) = source.upgrade() else { return };
        let wait = match this.current.load_full() {
            // A seeded token that is not due yet: renew when due.
            Some(token) if Instant::now() < token.renew_at => {
                token.renew_at.saturating_duration_since(Instant::now())
            }
            _ => {
                let result = this.fetch().await;
                this.metrics
                    .upstream_token_fetch(&this.upstream, result.is_ok());
                match result {
                    Ok(token) => {
                        retry = FIRST_RETRY;
                        let wait = token.renew_at.saturating_duration_since(Instant::now());
                        tracing::info!(upstream = %this.upstream, renew_in = ?wait, "upstream token fetched");
                        this.current.store(Some(Arc::new(token)));
                        wait
                    }
                    Err(e) => {
                        let wait = retry;
                        retry = (retry * 2).min(MAX_RETRY);
                        let valid = this
                            .current
                            .load()
                            .as_ref()
                            .is_some_and(|t| Instant::now() < t.expires_at);
                        tracing::warn!(upstream = %this.upstream, retry_in = ?wait, still_valid = valid,
                            "upstream token request failed: {e}");
                        wait
                    }
                }
            }
        };
        if let Ok(mut next) = this.next_try.lock() {
            *next = Some(Instant::now() + wait);
        }
        drop(this);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // A 401 dropped the token: fetch now.
            () = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::renewal;
    use std::time::Duration;

    #[test]
    fn renewal_is_early_but_never_before_half_the_lifetime() {
        let s = Duration::from_secs;
        // An hour with 60 s before: 80% (48 min) comes first.
        assert_eq!(renewal(s(3600), s(60)), s(2880));
        // Ten minutes with 60 s before: exp − 60 s (9 min) vs 80% (8 min).
        assert_eq!(renewal(s(600), s(60)), s(480));
        // Two minutes with 90 s before: 30 s would be under 50%.
        assert_eq!(renewal(s(120), s(90)), s(60));
        // A long refresh_before on a short token: 50%.
        assert_eq!(renewal(s(10), s(60)), s(5));
    }
}
