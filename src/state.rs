//! The compiled, immutable state a request is decided under, and the
//! `ArcSwap` that lets a reload replace it atomically: a request loads the
//! current state once and keeps it to the end.
//!
//! Depends on [`crate::config`] and `arc-swap`.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::token::{Cache, CacheStats};

/// Everything a decision needs, built from one config.
#[derive(Debug)]
pub struct State {
    pub config: Config,
    /// Verified claims; a new, empty cache comes with every config
    /// (`None` with `tokens.cache_size: 0`).
    pub cache: Option<Cache>,
    /// The pooled client for this config's upstream (its address, timeouts
    /// and TLS roots); connections drain with the state they belong to.
    pub client: Option<crate::upstream::Client>,
}

impl State {
    /// A state for `config`; its cache counts into `stats`.
    pub fn new(config: Config, stats: Arc<CacheStats>) -> Self {
        let client = config.upstream.as_ref().map(crate::upstream::Client::new);
        let cache =
            (config.token_cache_size > 0).then(|| Cache::new(config.token_cache_size, stats));
        State {
            config,
            cache,
            client,
        }
    }

    pub fn challenge(&self) -> &crate::reject::Challenge {
        &self.config.challenge
    }
}

/// The current state, shared by every connection.
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<State>,
}

impl Shared {
    pub fn new(state: State) -> Self {
        Shared {
            current: ArcSwap::from_pointee(state),
        }
    }

    /// The state to decide one request under.
    pub fn load(&self) -> Arc<State> {
        self.current.load_full()
    }

    pub fn swap(&self, state: State) {
        self.current.store(Arc::new(state));
    }
}
