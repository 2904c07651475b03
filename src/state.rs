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
    /// One per `config.upstreams`, in order: the pooled client (its
    /// address, timeouts and TLS roots; connections drain with the state
    /// they belong to) and the gateway's own credential toward it.
    pub upstreams: Vec<UpstreamState>,
    /// Quota buckets, kept by the composition root across reloads.
    pub limiter: Arc<crate::quota::Limiter>,
    /// The tracer when `tracing:` is set (spans and trace headers);
    /// `None`: the request path does nothing for tracing.
    pub tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    /// DPoP proofs seen, kept by the composition root across reloads.
    pub replay: Arc<crate::dpop::replay::Replay>,
}

/// What forwarding to one upstream needs.
#[derive(Debug)]
pub struct UpstreamState {
    pub client: crate::upstream::Client,
    pub credential: Option<crate::credentials::Injector>,
}

impl State {
    /// A state for `config`; its cache counts into `stats`. `credentials`
    /// holds, per upstream, the token source the composition root keeps
    /// across reloads (static credentials are made here).
    pub fn new(
        config: Config,
        stats: Arc<CacheStats>,
        mut credentials: Vec<Option<crate::credentials::Injector>>,
        limiter: Arc<crate::quota::Limiter>,
    ) -> Self {
        credentials.resize(config.upstreams.len(), None);
        let upstreams = config
            .upstreams
            .iter()
            .zip(credentials)
            .map(|(upstream, token)| UpstreamState {
                client: crate::upstream::Client::new(upstream),
                credential: token.or_else(|| {
                    upstream
                        .credential
                        .as_ref()
                        .and_then(crate::credentials::Injector::from_static)
                }),
            })
            .collect();
        let cache =
            (config.token_cache_size > 0).then(|| Cache::new(config.token_cache_size, stats));
        State {
            config,
            cache,
            upstreams,
            limiter,
            tracer: None,
            replay: Arc::new(crate::dpop::replay::Replay::new(None)),
        }
    }

    /// The same state, with the replay cache the runtime keeps.
    pub fn with_replay(self, replay: Arc<crate::dpop::replay::Replay>) -> Self {
        State { replay, ..self }
    }

    /// The same state, traced by `tracer`.
    pub fn traced(self, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) -> Self {
        State { tracer, ..self }
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
