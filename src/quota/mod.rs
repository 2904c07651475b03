//! Quotas keyed on the verified caller (SPEC §4.5): GCRA buckets, one per
//! (policy, key), kept per process ([`local`]) or in Redis ([`redis`]),
//! consulted by [`crate::decision::decide`] after the route's policy
//! allowed the request. A refused request consumes nothing.
//!
//! GCRA, in microseconds: a bucket is its theoretical arrival time (TAT).
//! A request at `now` is allowed when `max(TAT, now) + T − now ≤ burst × T`
//! (T = the emission interval), which lets `burst` requests through at once
//! and `burst + rate × E` over any E seconds.
//!
//! The arithmetic and the local store are pure; the Redis store is an
//! adapter behind the [`Shared`] trait.

pub mod local;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{OnError, QuotaPolicy};
use crate::telemetry::Metrics;

/// What one bucket said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        /// Requests left right now.
        remaining: u64,
        /// Seconds until the bucket is full again.
        reset: u64,
    },
    Limited {
        /// Seconds until this key's next allowed request (at least 1).
        retry_after: u64,
        reset: u64,
    },
}

/// GCRA on one bucket: `tat` is the stored TAT (`None`: a new bucket),
/// `now` and the answer in microseconds. Returns the verdict and the TAT
/// to store when allowed.
pub fn gcra(tat: Option<u64>, now: u64, interval: u64, burst: u32) -> (Verdict, Option<u64>) {
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval;
    let limit = u64::from(burst) * interval;
    if new_tat - now > limit {
        let wait = new_tat - limit - now;
        return (
            Verdict::Limited {
                retry_after: wait.div_ceil(1_000_000).max(1),
                reset: (tat - now).div_ceil(1_000_000),
            },
            None,
        );
    }
    (
        Verdict::Allowed {
            remaining: (limit - (new_tat - now)) / interval,
            reset: (new_tat - now).div_ceil(1_000_000),
        },
        Some(new_tat),
    )
}

/// The bucket's name: the policy's name and shape (a changed policy starts
/// afresh; an unchanged one keeps its buckets across reloads) and a digest
/// of the key (bounded, and no claim value in Redis).
pub fn bucket(policy: &QuotaPolicy, key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut out = format!(
        "scopegate:rl:{}:{}:{}:",
        policy.name, policy.interval_us, policy.burst
    );
    for b in &digest.as_ref()[..16] {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A store shared by replicas (Redis). Errors include timeouts.
pub trait Shared: Send + Sync + std::fmt::Debug {
    fn take<'a>(
        &'a self,
        bucket: &'a str,
        policy: &'a QuotaPolicy,
    ) -> Pin<Box<dyn Future<Output = Result<Verdict, ()>> + Send + 'a>>;

    /// Remembers `key` for `ttl` unless it is there: true the first time
    /// (the DPoP replay cache).
    fn first_seen<'a>(
        &'a self,
        key: &'a str,
        ttl: std::time::Duration,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ()>> + Send + 'a>>;
}

/// Why a quota could not be decided (Redis failed with `on_error: deny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// The quota store of a running gateway: kept across reloads, so that the
/// buckets of an unchanged policy survive them.
#[derive(Debug)]
pub struct Limiter {
    local: local::Store,
    shared: Option<(Arc<dyn Shared>, OnError)>,
    metrics: Arc<Metrics>,
}

impl Limiter {
    /// The shared store, for the DPoP replay cache.
    pub fn shared(&self) -> Option<(Arc<dyn Shared>, OnError)> {
        self.shared.clone()
    }

    pub fn new(shared: Option<(Arc<dyn Shared>, OnError)>, metrics: Arc<Metrics>) -> Self {
        Limiter {
            local: local::Store::default(),
            shared,
            metrics,
        }
    }

    /// Takes one request from `key`'s bucket of `policy`.
    pub async fn take(&self, policy: &QuotaPolicy, key: &str) -> Result<Verdict, Unavailable> {
        let bucket = bucket(policy, key);
        let verdict = match &self.shared {
            None => self.local.take(&bucket, policy),
            Some((shared, on_error)) => match shared.take(&bucket, policy).await {
                Ok(verdict) => verdict,
                Err(()) => {
                    self.metrics.rate_limit_fallback(*on_error);
                    match on_error {
                        OnError::Local => self.local.take(&bucket, policy),
                        OnError::Allow => {
                            self.metrics.rate_limit_decision(&policy.name, "allowed");
                            return Ok(Verdict::Allowed {
                                remaining: u64::from(policy.burst),
                                reset: 0,
                            });
                        }
                        OnError::Deny => {
                            self.metrics
                                .rate_limit_decision(&policy.name, "unavailable");
                            return Err(Unavailable);
                        }
                    }
                }
            },
        };
        let result = match verdict {
            Verdict::Allowed { .. } => "allowed",
            Verdict::Limited { .. } => "limited",
        };
        self.metrics.rate_limit_decision(&policy.name, result);
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn a_burst_at_once_then_the_rate() {
        // 2/s (T = 0.5 s), burst 3.
        let (t, b) = (S / 2, 3);
        let mut tat = None;
        for i in 0..3 {
            let (v, next) = gcra(tat, 10 * S, t, b);
            assert!(
                matches!(v, Verdict::Allowed { remaining, .. } if remaining == 2 - i),
                "{v:?}"
            );
            tat = next;
        }
        let (v, next) = gcra(tat, 10 * S, t, b);
        assert_eq!(
            v,
            Verdict::Limited {
                retry_after: 1,
                reset: 2
            }
        );
        assert_eq!(next, None, "a refusal consumes nothing");
        // Half a second later one more passes.
        let (v, _) = gcra(tat, 10 * S + S / 2, t, b);
        assert!(matches!(v, Verdict::Allowed { remaining: 0, .. }), "{v:?}");
        // Over E seconds at most burst + rate × E pass.
        let mut tat = None;
        let mut passed = 0;
        for ms in (0..10_000).step_by(10) {
            let (v, next) = gcra(tat, 100 * S + ms * 1000, t, b);
            if matches!(v, Verdict::Allowed { .. }) {
                passed += 1;
                tat = next;
            }
        }
        assert!(passed <= 3 + 2 * 10, "{passed}");
        assert!(passed >= 2 * 10, "{passed}");
    }
}
