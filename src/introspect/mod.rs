//! RFC 7662 token introspection for one issuer (SPEC §4.4): the gateway
//! POSTs `token=…&token_type_hint=access_token` with its client
//! authentication, bounded in time (`timeout`) and size (64 KiB); only an
//! HTTP 200 with a JSON object whose `active` is a boolean is an answer —
//! anything else is a failure (503 upstream of here), never an allow, and
//! is never cached. Answers are cached by a SHA-256 of the token (never
//! the token), bounded in entries, an active one for at most `cache_ttl`
//! and never past its `exp`, an inactive one for `negative_cache_ttl`; one
//! call is in flight per token (concurrent first requests share it). After
//! a failed call, calls fail at once for a second, so that requests queued
//! behind a down endpoint each wait at most one timeout, not one each.
//!
//! Adapter: depends on reqwest, quick_cache, aws-lc-rs (the digest) and
//! the core ([`crate::token::Introspect`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::introspection::Endpoint;
use crate::config::{AuthMethod, Introspection};
use crate::telemetry::Metrics;
use crate::token::{Introspect, Introspected};

/// Answers larger than this are failures.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct Cached {
    answer: Introspected,
    until: Instant,
}

/// One issuer's introspection client and answer cache.
pub struct Introspector {
    issuer: String,
    spec: Introspection,
    client: reqwest::Client,
    endpoint: tokio::sync::OnceCell<String>,
    cache: quick_cache::sync::Cache<[u8; 32], Cached>,
    /// When the last call failed: for a moment after, calls fail at once,
    /// so that requests queued behind a down endpoint are not each held
    /// for a full timeout in turn.
    failed_at: std::sync::Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

/// How long after a failed call the endpoint is taken as still down.
const FAILURE_HOLD: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    pub fn new(
        issuer: String,
        spec: Introspection,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Introspector {
        metrics.introspection_issuer(&issuer);
        Introspector {
            cache: quick_cache::sync::Cache::new(spec.cache_entries),
            issuer,
            spec,
            client,
            endpoint: tokio::sync::OnceCell::new(),
            failed_at: std::sync::Mutex::new(None),
            metrics,
        }
    }

    pub fn spec(&self) -> &Introspection {
        &self.spec
    }

    async fn endpoint(&self) -> Result<&str, String> {
        self.endpoint
            .get_or_try_init(|| async {
                match &self.spec.endpoint {
                    Endpoint::Url(url) => Ok(url.clone()),
                    Endpoint::Discover => {
                        let url = format!(
                            "{}/.well-known/openid-configuration",
                            self.issuer.trim_end_matches('/')
                        );
                        let body = capped(
                            self.client
                                .get(&url)
                                .send()
                                .await
                                .map_err(|e| e.to_string())?,
                        )
                        .await?;
                        let doc: Value = serde_json::from_slice(&body)
                            .map_err(|_| format!("{url} is not JSON"))?;
                        doc["introspection_endpoint"]
                            .as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{url} has no introspection_endpoint"))
                    }
                }
            })
            .await
            .map(String::as_str)
    }

    /// One call to the endpoint.
    async fn call(&self, token: &str) -> Result<Introspected, String> {
        let url = self.endpoint().await?;
        let spec = &self.spec;
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token);
            form.append_pair("token_type_hint", "access_token");
            if spec.auth_method == AuthMethod::ClientSecretPost {
                form.append_pair("client_id", &spec.client_id);
                form.append_pair("client_secret", spec.client_secret.expose());
            }
            form.finish()
        };
        let mut request = self
            .client
            .post(url)
            .timeout(spec.timeout)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        if spec.auth_method == AuthMethod::ClientSecretBasic {
            request = request.header(
                "authorization",
                crate::credentials::client_credentials::basic(
                    &spec.client_id,
                    spec.client_secret.expose(),
                )
                .map_err(|_| "client credentials cannot form a header".to_owned())?,
            );
        }
        let sent = request.send();
        let response = crate::telemetry::trace::client(
            &self.metrics.trace,
            "introspection",
            "POST",
            url,
            sent,
        )
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                "unreachable".to_owned()
            }
        })?;
        if response.status() != reqwest::StatusCode::OK {
            // RFC 7662 §2.3 / RFC 7009: unsupported_token_type is an answer.
            let status = response.status();
            let body = capped(response).await.unwrap_or_default();
            let error: Value = serde_json::from_slice(&body).unwrap_or_default();
            if error["error"] == "unsupported_token_type" {
                return Ok(Introspected::Unsupported);
            }
            return Err(format!("status {status}"));
        }
        let body = capped(response).await?;
        let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(&body) else {
            return Err("not a JSON object".into());
        };
        match answer.get("active") {
            Some(Value::Bool(true)) => Ok(Introspected::Active(Arc::new(answer))),
            Some(Value::Bool(false)) => Ok(Introspected::Inactive),
            _ => Err("no boolean active member".into()),
        }
    }

    /// How long an answer may be trusted.
    fn until(&self, answer: &Introspected) -> Instant {
        let now = Instant::now();
        match answer {
            Introspected::Active(claims) => {
                let mut ttl = self.spec.cache_ttl;
                if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
                    let left = exp.saturating_sub(crate::now()).max(0);
                    ttl = ttl.min(Duration::from_secs(u64::try_from(left).unwrap_or(0)));
                }
                now + ttl
            }
            Introspected::Inactive => now + self.spec.negative_cache_ttl,
            Introspected::Unsupported => now + self.spec.cache_ttl,
        }
    }

    async fn lookup(&self, token: &str) -> Result<Introspected, ()> {
        let key: [u8; 32] = {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut key = [0u8; 32];
            key.copy_from_slice(digest.as_ref());
            key
        };
        for _ in 0..2 {
            let guard = match self.cache.get_value_or_guard_async(&key).await {
                Ok(cached) if Instant::now() < cached.until => {
                    self.metrics.introspection_cache_hit(&self.issuer);
                    return Ok(cached.answer);
                }
                // Stale: forget it and take the guard on the next turn.
                Ok(_) => {
                    self.cache.remove(&key);
                    continue;
                }
                Err(guard) => guard,
            };
            // The endpoint failed a moment ago: do not queue behind it.
            let recently_failed = self
                .failed_at
                .lock()
                .ok()
                .and_then(|t| *t)
                .is_some_and(|t| t.elapsed() < FAILURE_HOLD);
            if recently_failed {
                drop(guard);
                self.metrics.introspection(&self.issuer, "error");
                return Err(());
            }
            // This caller makes the one call; concurrent callers wait on
            // the guard and find its answer.
            let result = self.call(token).await;
            if let Ok(mut failed_at) = self.failed_at.lock() {
                *failed_at = result.is_err().then(Instant::now);
            }
            let outcome = match &result {
                Ok(Introspected::Active(_)) => "active",
                Ok(Introspected::Inactive) => "inactive",
                Ok(Introspected::Unsupported) => "unsupported",
                Err(_) => "error",
            };
            self.metrics.introspection(&self.issuer, outcome);
            return match result {
                Ok(answer) => {
                    let until = self.until(&answer);
                    if until > Instant::now() {
                        let _ = guard.insert(Cached {
                            answer: answer.clone(),
                            until,
                        });
                    }
                    Ok(answer)
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, "introspection failed: {e}");
                    Err(())
                }
            };
        }
        Err(())
    }
}

impl Introspect for Introspector {
    fn introspect<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Introspected, ()>> + Send + 'a>> {
        Box::pin(self.lookup(token))
    }
}

/// Reads a body, at most [`MAX_ANSWER_BYTES`].
async fn capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err("answer too large".into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| "read failed".to_owned())?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err("answer too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
