//! The verified-token cache: verified *claims*, never decisions. Every
//! request still runs its own route's policy on the cached claims (the
//! Oathkeeper CVE-2021-32701 lesson). Keyed by the whole token (hashing is
//! for buckets only; equality is exact, so a collision can never hand one
//! token another's claims). An entry never outlives `exp` (or the
//! `max_token_age` limit) and dies with its issuer's key set: each entry
//! remembers the key generation it was verified under. A new cache comes
//! with every config. Failures are never cached, nor a token that is not a
//! token68: the request's token extraction takes a token found here as
//! well formed without checking its bytes again.
//!
//! Pure: depends on quick_cache, [`super::verify`] and [`super::extract`]
//! (the token68 check).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Claims, KeyCell};

#[derive(Clone)]
struct Entry {
    claims: Arc<Claims>,
    keys: Arc<KeyCell>,
    generation: u64,
    /// Unix seconds after which the entry is stale.
    valid_until: i64,
}

/// Hit and miss counts, shared by the successive caches of a process.
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheStats {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

/// A bounded cache of verified claims.
pub struct Cache {
    entries: quick_cache::sync::Cache<Box<[u8]>, Entry>,
    stats: Arc<CacheStats>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub fn new(capacity: usize, stats: Arc<CacheStats>) -> Self {
        Cache {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            stats,
        }
    }

    /// The claims of a token verified earlier, if still valid at `now`
    /// (counted as a hit). `token` is a candidate's bytes, before any
    /// check: only a token68 is ever found.
    pub fn get(&self, token: &[u8], now: i64) -> Option<Arc<Claims>> {
        let found = self
            .entries
            .get(token)
            .filter(|e| now <= e.valid_until && e.keys.generation() == e.generation)?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(found.claims)
    }

    /// Counts a token that was not found, and is verified afresh.
    pub fn missed(&self) {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Remembers verified claims until `valid_until`, as long as `keys`
    /// still has `generation`; not for a token that is not a token68.
    pub fn insert(
        &self,
        token: &str,
        claims: Arc<Claims>,
        keys: Arc<KeyCell>,
        generation: u64,
        valid_until: i64,
    ) {
        if !super::extract::is_token68(token.as_bytes()) {
            return;
        }
        self.entries.insert(
            token.as_bytes().into(),
            Entry {
                claims,
                keys,
                generation,
                valid_until,
            },
        );
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_tokens_that_extraction_would_check_as_well_formed() {
        let cache = Cache::new(8, Arc::default());
        let claims = Arc::new(Claims::new(serde_json::Map::new(), &[], 100));
        let keys = Arc::new(KeyCell::default());
        let generation = keys.generation();
        for token in ["abc.def-_~+/==", "a b", "a,b", "abc\u{e9}", ""] {
            cache.insert(token, claims.clone(), keys.clone(), generation, 100);
        }
        assert!(cache.get(b"abc.def-_~+/==", 50).is_some());
        assert_eq!(cache.len(), 1, "only the token68 is kept");
        assert!(cache.get(b"abc.def-_~+/==", 101).is_none(), "stale");
        assert_eq!((cache.stats().hits(), cache.stats().misses()), (1, 0));
    }
}
