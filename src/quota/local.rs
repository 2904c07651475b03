//! Per-process buckets: 32 shards, each a small mutex-guarded map, so that
//! requests for different keys rarely meet (no global lock on the hot
//! path). Time is monotonic; buckets that have refilled are purged when a
//! shard grows.
//!
//! Pure: depends on `std` and [`super::gcra`].

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Instant;

use super::{Verdict, gcra};
use crate::config::QuotaPolicy;

const SHARDS: usize = 32;
/// A shard this large is swept of full buckets before it grows further.
const SWEEP_AT: usize = 4096;

#[derive(Debug)]
pub struct Store {
    shards: Vec<Mutex<HashMap<String, u64>>>,
    hasher: RandomState,
    epoch: Instant,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }
}

impl Store {
    /// Takes one request from `bucket`.
    pub fn take(&self, bucket: &str, policy: &QuotaPolicy) -> Verdict {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let shard = (self.hasher.hash_one(bucket) as usize) % SHARDS;
        let Ok(mut map) = self.shards[shard].lock() else {
            // A poisoned shard: let the request through rather than fail it.
            return Verdict::Allowed {
                remaining: 0,
                reset: 0,
            };
        };
        let (verdict, next) = gcra(
            map.get(bucket).copied(),
            now,
            policy.interval_us,
            policy.burst,
        );
        if let Some(tat) = next {
            if map.len() >= SWEEP_AT && !map.contains_key(bucket) {
                map.retain(|_, tat| *tat > now);
            }
            map.insert(bucket.to_owned(), tat);
        }
        verdict
    }
}
