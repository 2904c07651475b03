//! The DPoP replay cache: a proof's `(jkt, jti)` is accepted once within
//! its window (`max_age` + skew). Per process and bounded; in Redis when
//! `rate_limits.store: redis` is configured, so that replicas share it (a
//! proof replayed against another replica is refused too). If Redis fails,
//! `rate_limits.redis.on_error` decides, as for quotas: `local` checks the
//! process's own cache, `allow` accepts, `deny` answers 503.
//!
//! Adapter: depends on quick_cache and [`crate::quota::Shared`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::OnError;
use crate::quota::Shared;

/// Proofs remembered per process.
const LOCAL_ENTRIES: usize = 100_000;

/// The replay store could not answer (Redis down with `on_error: deny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// A running gateway's replay cache, kept across reloads with the quota
/// store.
pub struct Replay {
    /// Key → (expiry, the inserting call's ticket).
    local: quick_cache::sync::Cache<[u8; 32], (Instant, u64)>,
    tickets: AtomicU64,
    shared: Option<(Arc<dyn Shared>, OnError)>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl Replay {
    pub fn new(shared: Option<(Arc<dyn Shared>, OnError)>) -> Self {
        Replay {
            local: quick_cache::sync::Cache::new(LOCAL_ENTRIES),
            tickets: AtomicU64::new(0),
            shared,
        }
    }

    /// Whether `(jkt, jti)` is seen for the first time within `window`
    /// (and is now remembered for it).
    pub async fn first_seen(
        &self,
        jkt: &str,
        jti: &str,
        window: Duration,
    ) -> Result<bool, Unavailable> {
        let key = key(jkt, jti);
        let Some((shared, on_error)) = &self.shared else {
            return Ok(self.first_seen_locally(key, window));
        };
        let name = format!("scopegate:dpop:{}", hex(&key));
        match shared.first_seen(&name, window).await {
            Ok(first) => Ok(first),
            Err(()) => match on_error {
                OnError::Local => Ok(self.first_seen_locally(key, window)),
                OnError::Allow => Ok(true),
                OnError::Deny => Err(Unavailable),
            },
        }
    }

    fn first_seen_locally(&self, key: [u8; 32], window: Duration) -> bool {
        let now = Instant::now();
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let entry = (now + window, ticket);
        let (expiry, owner) = self
            .local
            .get_or_insert_with(&key, || Ok::<_, ()>(entry))
            .unwrap_or(entry);
        if owner == ticket {
            return true;
        }
        if expiry <= now {
            // The earlier use is outside its window (its proof's `iat` is
            // too old by now anyway): this is a new use.
            self.local.insert(key, entry);
            return true;
        }
        false
    }
}

fn key(jkt: &str, jti: &str) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(jkt.as_bytes());
    ctx.update(b"\0");
    ctx.update(jti.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_proof_is_accepted_once_within_its_window() {
        let replay = Replay::new(None);
        let window = Duration::from_millis(200);
        assert_eq!(replay.first_seen("k", "1", window).await, Ok(true));
        assert_eq!(replay.first_seen("k", "1", window).await, Ok(false));
        assert_eq!(replay.first_seen("k", "2", window).await, Ok(true));
        assert_eq!(replay.first_seen("other", "1", window).await, Ok(true));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(replay.first_seen("k", "1", window).await, Ok(true));
    }
}
