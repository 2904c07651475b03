//! Fetching a remote JWKS: bounded in time and size, retried with backoff
//! until the issuer has keys. Follows `HTTPS_PROXY` / `NO_PROXY` (reqwest).
//!
//! Adapter: depends on reqwest, tokio and [`super::keys`].

use std::time::Duration;

use super::KeySet;
use crate::config::RemoteJwks;

/// JWKS documents larger than this are refused (SPEC §Key lifecycle).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("status {0}")]
    Status(reqwest::StatusCode),
    #[error("document larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Keys(#[from] super::KeyError),
}

/// The HTTP client for identity providers.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .user_agent(concat!("scopegate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Fetches and parses one JWKS document.
pub async fn fetch(client: &reqwest::Client, uri: &str) -> Result<KeySet, FetchError> {
    let mut response = client
        .get(uri)
        .header("accept", "application/json")
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(KeySet::from_jwks(&body)?)
}

/// Fetches until the first success, backing off from 1 s to 30 s.
pub async fn fetch_until_ready(client: reqwest::Client, remote: RemoteJwks) {
    let mut delay = Duration::from_secs(1);
    loop {
        match fetch(&client, &remote.uri).await {
            Ok(keys) => {
                for skipped in &keys.skipped {
                    tracing::warn!(issuer = %remote.issuer, "JWKS key skipped: {skipped}");
                }
                tracing::info!(issuer = %remote.issuer, keys = keys.keys().len(), "JWKS loaded");
                remote.keys.store(keys);
                return;
            }
            Err(e) => {
                tracing::warn!(issuer = %remote.issuer, uri = %remote.uri, retry_in = ?delay, "JWKS fetch failed: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
