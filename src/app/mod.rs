//! Composition root: build the state from a config, keep remote key sets
//! fresh, serve on the `workers` event loops ([`workers`]), reload, and
//! wait for a shutdown signal.
//!
//! Depends on everything; nothing depends on it but the CLI.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpListener;

mod workers;

pub use workers::{WorkerSockets, workers};

use crate::config::QuotaStore;
use crate::config::{self, Config, ConfigError, Credential, RemoteSource};
use crate::credentials::{Injector, TokenSource};
use crate::dpop::replay::Replay;
use crate::introspect::Introspector;
use crate::jwks::fetch::Remote;
use crate::quota::Limiter;
use crate::state::{Shared, State};
use crate::telemetry::{Metrics, ReloadResult};
use crate::token::KeyCell;

/// What a running gateway shares between its listeners, its reloads and
/// its key fetchers.
#[derive(Debug)]
pub struct Runtime {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    path: PathBuf,
    /// Every remote key source that is running, so that an issuer whose
    /// key source is unchanged keeps its keys (and its fetcher) across a
    /// reload, whatever else of it changed; and the IdP client, built when
    /// the first remote issuer appears (at start or by a reload).
    remotes: Mutex<Remotes>,
    /// Every running client-credentials token source, by upstream name,
    /// kept across reloads while its grant is unchanged.
    tokens: Mutex<HashMap<Arc<str>, Weak<TokenSource>>>,
    /// Every running introspection client, by issuer, kept across reloads
    /// while its settings are unchanged (its answer cache with it).
    introspectors: Mutex<HashMap<String, Arc<Introspector>>>,
    /// The quota store, kept while `rate_limits.store` is unchanged.
    limiter: Mutex<Option<(QuotaStore, Arc<Limiter>)>>,
    /// The DPoP replay cache, kept with the quota store it may share.
    replay: Mutex<Option<(Arc<Limiter>, Arc<Replay>)>>,
    /// Serializes reloads (watcher and SIGHUP may fire together).
    reloading: Mutex<()>,
}

/// The running key sources, by (issuer, source).
#[derive(Debug, Default)]
struct Remotes {
    running: HashMap<(String, RemoteSource), (Weak<KeyCell>, Weak<Remote>)>,
    idp: Option<reqwest::Client>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    Applied,
    Unchanged,
}

impl Runtime {
    /// Builds the runtime and starts fetching remote keys. Must run inside
    /// a Tokio runtime.
    pub fn new(mut config: Config) -> Arc<Runtime> {
        let metrics = Arc::new(Metrics::default());
        metrics.trace.apply(config.tracing.as_ref());
        let remotes = Mutex::new(Remotes::default());
        adopt_remotes(&remotes, &metrics, &mut config);
        let tokens = Mutex::new(HashMap::new());
        let credentials = token_sources(&tokens, &metrics, &config);
        let limiter = Mutex::new(None);
        let quotas = limiter_for(&limiter, &metrics, &config);
        let replay = Mutex::new(None);
        let replays = replay_for(&replay, &quotas);
        let introspectors = Mutex::new(HashMap::new());
        attach_introspectors(&introspectors, &metrics, &config);
        Arc::new(Runtime {
            path: config.path.clone(),
            shared: Arc::new(Shared::new(
                State::new(config, metrics.cache.clone(), credentials, quotas)
                    .traced(metrics.trace.tracer())
                    .with_replay(replays),
            )),
            metrics,
            replay,
            remotes,
            tokens,
            introspectors,
            limiter,
            reloading: Mutex::new(()),
        })
    }

    /// Reads the config file again and, if it is valid and different,
    /// swaps it in. An invalid file changes nothing.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let _one_at_a_time = self.reloading.lock();
        let result = config::load(&self.path);
        let mut config = match result {
            Ok(config) => config,
            Err(e) => {
                self.metrics.reload(ReloadResult::Error);
                tracing::error!("config reload refused, the previous config keeps serving: {e}");
                return Err(e);
            }
        };
        let current = self.shared.load();
        if config.fingerprint == current.config.fingerprint {
            self.metrics.reload(ReloadResult::Unchanged);
            return Ok(Reloaded::Unchanged);
        }
        let old = &current.config;
        if config.listen != old.listen {
            tracing::warn!(old = %old.listen, new = %config.listen, "listen changed: it takes effect after a restart");
        }
        if config.limits.max_connections != old.limits.max_connections
            || config.workers != old.workers
            || config.events_per_busy_turn != old.events_per_busy_turn
        {
            tracing::warn!(
                "limits.max_connections, workers, events_per_busy_turn, admin_listen, forward_auth.listen and adding or removing the upstream take effect after a restart"
            );
        }
        self.metrics.trace.apply(config.tracing.as_ref());
        adopt_remotes(&self.remotes, &self.metrics, &mut config);
        let credentials = token_sources(&self.tokens, &self.metrics, &config);
        let quotas = limiter_for(&self.limiter, &self.metrics, &config);
        let replay = replay_for(&self.replay, &quotas);
        attach_introspectors(&self.introspectors, &self.metrics, &config);
        let routes = config.routes.routes().len();
        self.shared.swap(
            State::new(config, self.metrics.cache.clone(), credentials, quotas)
                .traced(self.metrics.trace.tracer())
                .with_replay(replay),
        );
        self.metrics.reload(ReloadResult::Applied);
        tracing::info!(routes, "config reloaded");
        Ok(Reloaded::Applied)
    }

    /// Waits (at most `limit`) until every issuer has keys; true if they do.
    pub async fn wait_for_keys(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self
                .shared
                .load()
                .config
                .verifier
                .issuers()
                .all(|i| i.keys.is_ready())
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.path
    }

    /// Waits (at most `limit`) until every upstream token has been fetched.
    pub async fn wait_for_credentials(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ready = self
                .shared
                .load()
                .upstreams
                .iter()
                .all(|u| match &u.credential {
                    Some(Injector::Token { source, .. }) => source.current().is_ok(),
                    _ => true,
                });
            if ready {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl crate::reload::Reload for Runtime {
    fn config_path(&self) -> &Path {
        &self.path
    }

    fn config_files(&self) -> Vec<PathBuf> {
        self.shared.load().config.files.clone()
    }

    fn reload(&self) {
        let _ = Runtime::reload(self);
    }
}

/// Gives every remote issuer of `config` the key cell (and fetcher) of the
/// running key source with the same issuer and source — taking its new
/// `jwks_refresh` and `jwks_max_stale` — or starts fetching for a new one
/// (its issuer answers 503, and `/readyz` names it, until the first fetch).
fn adopt_remotes(remotes: &Mutex<Remotes>, metrics: &Arc<Metrics>, config: &mut Config) {
    let Ok(mut remotes) = remotes.lock() else {
        return;
    };
    remotes
        .running
        .retain(|_, (cell, _)| cell.strong_count() > 0);
    if remotes.idp.is_none() && !config.remote_jwks.is_empty() {
        remotes.idp = crate::jwks::fetch::client()
            .map_err(|e| {
                tracing::error!(
                    "cannot build the JWKS client: {e}; remote issuers stay unavailable"
                )
            })
            .ok();
    }
    for remote in &mut config.remote_jwks {
        let key = (remote.spec.issuer.clone(), remote.spec.source.clone());
        if let Some((cell, fetcher)) = remotes.running.get(&key) {
            if let Some(cell) = cell.upgrade() {
                if let Some(fetcher) = fetcher.upgrade() {
                    fetcher.retime(&remote.spec);
                }
                config
                    .verifier
                    .adopt_keys(&remote.spec.issuer, cell.clone());
                remote.keys = cell;
                continue;
            }
        }
        let Some(client) = remotes.idp.clone() else {
            continue;
        };
        metrics.jwks_issuer(&remote.spec.issuer);
        let fetcher = Remote::start(client, remote, metrics.clone());
        remotes.running.insert(
            key,
            (Arc::downgrade(&remote.keys), Arc::downgrade(&fetcher)),
        );
    }
}

/// The client-credentials token source of every upstream that has one:
/// the running source when the grant is unchanged (its token kept), a new
/// one otherwise — seeded with the old token when only the secret changed,
/// so that a rotation never interrupts traffic.
fn token_sources(
    tokens: &Mutex<HashMap<Arc<str>, Weak<TokenSource>>>,
    metrics: &Arc<Metrics>,
    config: &Config,
) -> Vec<Option<Injector>> {
    let Ok(mut running) = tokens.lock() else {
        return Vec::new();
    };
    running.retain(|_, source| source.strong_count() > 0);
    let mut client = None;
    config
        .upstreams
        .iter()
        .map(|upstream| {
            let Some(Credential::ClientCredentials { grant, inject }) = &upstream.credential else {
                return None;
            };
            let previous = running.get(&upstream.name).and_then(Weak::upgrade);
            let source = match previous {
                Some(source) if source.grant() == grant => source,
                previous => {
                    if client.is_none() {
                        client = crate::credentials::client_credentials::http_client()
                            .map_err(|e| tracing::error!("cannot build the token client: {e}"))
                            .ok();
                    }
                    let seed = previous.as_deref().filter(|p| p.grant().same_grant(grant));
                    let source = TokenSource::start(
                        upstream.name.clone(),
                        grant.clone(),
                        client.clone()?,
                        metrics.clone(),
                        seed,
                    );
                    running.insert(upstream.name.clone(), Arc::downgrade(&source));
                    source
                }
            };
            Some(Injector::Token {
                source,
                inject: inject.clone(),
            })
        })
        .collect()
}

/// Gives every introspecting issuer of `config` its client: the running
/// one while its settings are unchanged (answers stay cached), a new one
/// otherwise.
fn attach_introspectors(
    running: &Mutex<HashMap<String, Arc<Introspector>>>,
    metrics: &Arc<Metrics>,
    config: &Config,
) {
    let Ok(mut running) = running.lock() else {
        return;
    };
    running.retain(|issuer, _| config.introspections.iter().any(|(name, _)| name == issuer));
    for (issuer, spec) in &config.introspections {
        let introspector = match running.get(issuer) {
            Some(current) if current.spec() == spec => current.clone(),
            _ => {
                let Ok(client) = crate::jwks::fetch::client_with_timeout(spec.timeout) else {
                    tracing::error!(%issuer, "cannot build the introspection client: its opaque tokens answer 503");
                    continue;
                };
                let fresh = Arc::new(Introspector::new(
                    issuer.clone(),
                    spec.clone(),
                    client,
                    metrics.clone(),
                ));
                running.insert(issuer.clone(), fresh.clone());
                fresh
            }
        };
        config.verifier.attach_introspector(issuer, introspector);
    }
}

/// The quota store for `config`: the running one while `rate_limits.store`
/// is unchanged (buckets of unchanged policies survive the reload), a new
/// one otherwise.
fn limiter_for(
    current: &Mutex<Option<(QuotaStore, Arc<Limiter>)>>,
    metrics: &Arc<Metrics>,
    config: &Config,
) -> Arc<Limiter> {
    let store = config.quotas.store.clone().unwrap_or(QuotaStore::Local);
    for policy in &config.quotas.policies {
        metrics.rate_limit_policy(&policy.name);
    }
    let Ok(mut current) = current.lock() else {
        return Arc::new(Limiter::new(None, metrics.clone()));
    };
    if let Some((running, limiter)) = &*current
        && *running == store
    {
        return limiter.clone();
    }
    let shared = match &store {
        QuotaStore::Local => None,
        QuotaStore::Redis {
            url,
            timeout,
            on_error,
        } => match crate::quota::redis::Store::new(url.expose(), *timeout, metrics.clone()) {
            Ok(redis) => Some((Arc::new(redis) as Arc<dyn crate::quota::Shared>, *on_error)),
            Err(e) => {
                tracing::error!("rate_limits.redis: {e}; quotas are kept per process");
                None
            }
        },
    };
    let limiter = Arc::new(Limiter::new(shared, metrics.clone()));
    *current = Some((store, limiter.clone()));
    limiter
}

/// The DPoP replay cache for `limiter`'s store: the running one while the
/// quota store is the same (proofs seen stay seen across reloads).
fn replay_for(
    current: &Mutex<Option<(Arc<Limiter>, Arc<Replay>)>>,
    limiter: &Arc<Limiter>,
) -> Arc<Replay> {
    let Ok(mut current) = current.lock() else {
        return Arc::new(Replay::new(limiter.shared()));
    };
    if let Some((owner, replay)) = &*current
        && Arc::ptr_eq(owner, limiter)
    {
        return replay.clone();
    }
    let replay = Arc::new(Replay::new(limiter.shared()));
    *current = Some((limiter.clone(), replay.clone()));
    replay
}

/// The sockets a gateway serves, bound by the caller (tests bind
/// `127.0.0.1:0`).
#[derive(Debug, Default)]
pub struct Listeners {
    /// The data plane; absent when only forward-auth is configured.
    pub proxy: Option<TcpListener>,
    pub forward_auth: Option<TcpListener>,
    /// Envoy's gRPC ext_authz.
    pub grpc: Option<TcpListener>,
    pub admin: Option<TcpListener>,
    /// The data-plane sockets of every worker after the first (`workers:
    /// N`), each served by a thread and runtime of its own.
    pub workers: Vec<WorkerSockets>,
}

/// Serves until `shutdown` resolves, reloading the config when its
/// directory changes or on SIGHUP, then drains every listener. Tests run
/// the real gateway through this.
///
/// The first worker's sockets, the admin listener and every background
/// task (key fetchers, token sources, the reload watcher) run on the
/// caller's runtime; each further worker runs on a thread and
/// current-thread runtime of its own ([`workers`]).
pub async fn serve(
    runtime: Arc<Runtime>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) {
    let watcher = crate::reload::watch(runtime.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = || workers::raised(stop_rx.clone());
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let plane = workers::DataPlane::new(runtime.shared.clone(), runtime.metrics.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let first = workers::Registered {
        proxy: listeners.proxy,
        forward_auth: listeners.forward_auth,
        grpc: listeners.grpc,
    };
    plane.serve(0, &mut tasks, first, stopped);
    let mut started = Vec::new();
    for (i, sockets) in listeners.workers.into_iter().enumerate() {
        match plane.start(i + 1, sockets, stop_rx.clone(), release_rx.clone()) {
            Ok(worker) => started.push(worker),
            Err(e) => tracing::error!(worker = i + 1, "cannot start a worker thread: {e}"),
        }
    }
    if let Some(listener) = listeners.admin {
        let admin = Arc::new(crate::admin::Admin {
            shared: runtime.shared.clone(),
            metrics: runtime.metrics.clone(),
        });
        tasks.spawn(crate::admin::serve(listener, admin, stopped()));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let mut threads = Vec::new();
    for worker in started {
        // An error: the worker ended without saying (it panicked).
        let _ = worker.drained.await;
        threads.push(worker.thread);
    }
    let _ = release_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
    drop(watcher);
    // Spans still queued are sent before the process ends.
    let trace = runtime.metrics.trace.clone();
    let _ = tokio::task::spawn_blocking(move || trace.shutdown()).await;
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested: draining");
}

/// `scopegate run`: exit 0 after a clean shutdown, 1 on a runtime failure,
/// 2 on a config error.
pub fn run(path: &Path) -> std::process::ExitCode {
    use std::process::ExitCode;
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // The first worker's runtime: current-thread, like every worker's
    // (`serve` starts the others). No work-stealing, no wake-ups across
    // cores: a connection's requests stay on the thread that accepted it.
    let tokio = match workers::runtime(config.events_per_busy_turn) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    tokio.block_on(async move {
        let listen = config.listen;
        let listeners = match Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(
            %listen,
            routes = config.routes.routes().len(),
            workers = workers::workers(&config),
            events_per_busy_turn = config.events_per_busy_turn,
            "scopegate listening"
        );
        for warning in &config.warnings {
            tracing::warn!("config: {warning}");
        }
        let runtime = Runtime::new(config);
        serve(runtime, listeners, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}
