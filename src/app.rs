//! Composition root: build the state from a config, keep remote key sets
//! fresh, serve, reload, and wait for a shutdown signal.
//!
//! Depends on everything; nothing depends on it but the CLI.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpListener;

use crate::config::QuotaStore;
use crate::config::{self, Config, ConfigError, Credential, RemoteSource};
use crate::credentials::{Injector, TokenSource};
use crate::dpop::replay::Replay;
use crate::introspect::Introspector;
use crate::jwks::fetch::Remote;
use crate::quota::Limiter;
use crate::server::forward_auth::ForwardAuth;
use crate::server::{self, Proxy};
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
        {
            tracing::warn!(
                "limits.max_connections, workers, admin_listen, forward_auth.listen and adding or removing the upstream take effect after a restart"
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

/// One more worker's sockets: the same addresses as the first worker's,
/// every one of them bound with `SO_REUSEPORT`, so that the kernel spreads
/// new connections over the workers. Not yet registered with a runtime:
/// the worker's own does that.
#[derive(Debug, Default)]
pub struct WorkerSockets {
    pub proxy: Option<std::net::TcpListener>,
    pub forward_auth: Option<std::net::TcpListener>,
    pub grpc: Option<std::net::TcpListener>,
}

/// The event loops `workers` asks for: 0 means one per core. One where
/// there is no `SO_REUSEPORT` to spread connections over their sockets.
pub fn workers(config: &Config) -> usize {
    if cfg!(not(unix)) {
        return 1;
    }
    match config.workers {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    }
}

impl Listeners {
    /// Binds the addresses of `config`: the data-plane ones once per
    /// worker.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let workers = workers(config);
        let each = |addr| bind_each(addr, workers).map(Vec::into_iter);
        let ingress = config.forward_auth.as_ref();
        let mut proxy = each((!config.upstreams.is_empty()).then_some(config.listen))?;
        let mut forward_auth = each(ingress.and_then(|f| f.listen))?;
        let mut grpc = each(ingress.and_then(|f| f.grpc_listen))?;
        let registered =
            |l: Option<std::net::TcpListener>| l.map(TcpListener::from_std).transpose();
        let mut listeners = Listeners {
            proxy: registered(proxy.next())?,
            forward_auth: registered(forward_auth.next())?,
            grpc: registered(grpc.next())?,
            admin: registered(bind_each(config.admin_listen, 1)?.pop())?,
            workers: Vec::new(),
        };
        listeners.workers = (1..workers)
            .map(|_| WorkerSockets {
                proxy: proxy.next(),
                forward_auth: forward_auth.next(),
                grpc: grpc.next(),
            })
            .collect();
        Ok(listeners)
    }
}

/// `count` listening sockets on `addr`, none without one, with
/// `SO_REUSEPORT` when more than one. Not registered with a runtime yet.
fn bind_each(
    addr: Option<std::net::SocketAddr>,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let Some(addr) = addr else {
        return Ok(Vec::new());
    };
    let bind = |addr: std::net::SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As tokio's `TcpListener::bind`: a restart may bind while the
        // last run's connections are in TIME_WAIT.
        #[cfg(unix)]
        {
            socket.set_reuseaddr(true)?;
            if count > 1 {
                socket.set_reuseport(true)?;
            }
        }
        socket.bind(addr)?;
        socket.listen(1024)?.into_std()
    };
    let context =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    // With `SO_REUSEPORT`, a second gateway on the same address would join
    // the group and take a share of the connections. A plain bind first
    // fails if anything listens there, as a single socket's bind does.
    let addr = match count {
        1 => addr,
        _ => std::net::TcpListener::bind(addr)
            .and_then(|probe| probe.local_addr())
            .map_err(context)?,
    };
    (0..count).map(|_| bind(addr).map_err(context)).collect()
}

/// A flag raised once, for every worker: stop, release.
type Flag = tokio::sync::watch::Receiver<bool>;

/// Resolves once `flag` is raised (or its sender is gone).
async fn raised(mut flag: Flag) {
    let _ = flag.wait_for(|raised| *raised).await;
}

/// What every worker's data-plane listeners share: the state, the metrics
/// and, per address, the connection limit.
#[derive(Clone)]
struct DataPlane {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    proxy: server::Admission,
    forward_auth: server::Admission,
}

impl DataPlane {
    /// Serves one worker's sockets until `stopped` resolves, each on a task
    /// of the current runtime.
    fn spawn<F: Future<Output = ()> + Send + 'static>(
        &self,
        worker: usize,
        tasks: &mut tokio::task::JoinSet<()>,
        (proxy, forward_auth, grpc): (
            Option<TcpListener>,
            Option<TcpListener>,
            Option<TcpListener>,
        ),
        stopped: impl Fn() -> F,
    ) {
        if let Some(listener) = proxy {
            let proxy = Arc::new(Proxy {
                shared: self.shared.clone(),
                metrics: self.metrics.clone(),
            });
            let accepted = self.metrics.accepted("proxy", worker);
            let admission = self.proxy.clone();
            tasks.spawn(server::serve(
                listener,
                proxy,
                admission,
                accepted,
                stopped(),
            ));
        }
        if let Some(listener) = forward_auth {
            let handler = Arc::new(ForwardAuth {
                shared: self.shared.clone(),
                metrics: self.metrics.clone(),
            });
            let accepted = self.metrics.accepted("forward_auth", worker);
            let admission = self.forward_auth.clone();
            tasks.spawn(server::serve(
                listener,
                handler,
                admission,
                accepted,
                stopped(),
            ));
        }
        if let Some(listener) = grpc {
            let check = crate::grpc::Check {
                shared: self.shared.clone(),
                metrics: self.metrics.clone(),
            };
            tasks.spawn(crate::grpc::serve(listener, check, stopped()));
        }
    }

    /// Starts worker `worker` on a thread of its own: a current-thread
    /// runtime serving `sockets`. It tells `drained` once its connections
    /// are done, then keeps its runtime (and the connections other workers'
    /// requests may have pooled on it) until `release`.
    fn start_worker(
        &self,
        worker: usize,
        sockets: WorkerSockets,
        stop: Flag,
        release: Flag,
    ) -> std::io::Result<(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Receiver<()>,
    )> {
        let plane = self.clone();
        let (drained, done) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("scopegate-worker-{worker}"))
            .spawn(move || {
                let tokio = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker, "cannot start the worker's runtime: {e}");
                        return;
                    }
                };
                tokio.block_on(async move {
                    let registered = (|| {
                        std::io::Result::Ok((
                            sockets.proxy.map(TcpListener::from_std).transpose()?,
                            sockets
                                .forward_auth
                                .map(TcpListener::from_std)
                                .transpose()?,
                            sockets.grpc.map(TcpListener::from_std).transpose()?,
                        ))
                    })();
                    match registered {
                        Ok(listeners) => {
                            let mut tasks = tokio::task::JoinSet::new();
                            plane.spawn(worker, &mut tasks, listeners, || raised(stop.clone()));
                            while tasks.join_next().await.is_some() {}
                        }
                        Err(e) => tracing::error!(worker, "cannot serve the worker's sockets: {e}"),
                    }
                    let _ = drained.send(());
                    raised(release).await;
                });
            })?;
        Ok((thread, done))
    }
}

/// Serves until `shutdown` resolves, reloading the config when its
/// directory changes or on SIGHUP, then drains every listener. Tests run
/// the real gateway through this.
///
/// The first worker's sockets, the admin listener and every background
/// task (key fetchers, token sources, the reload watcher) run on the
/// caller's runtime; each further worker runs on a thread and
/// current-thread runtime of its own. Nothing on a request's path crosses
/// to another thread but the quota store's Redis connection and calls the
/// gateway makes on its own (introspection, tokens).
pub async fn serve(
    runtime: Arc<Runtime>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) {
    let watcher = crate::reload::watch(runtime.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = || raised(stop_rx.clone());
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let plane = DataPlane {
        shared: runtime.shared.clone(),
        metrics: runtime.metrics.clone(),
        proxy: server::Admission::new(&runtime.shared),
        forward_auth: server::Admission::new(&runtime.shared),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let first = (listeners.proxy, listeners.forward_auth, listeners.grpc);
    plane.spawn(0, &mut tasks, first, stopped);
    let mut workers = Vec::new();
    for (i, sockets) in listeners.workers.into_iter().enumerate() {
        match plane.start_worker(i + 1, sockets, stop_rx.clone(), release_rx.clone()) {
            Ok(worker) => workers.push(worker),
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
    for (thread, drained) in workers {
        // An error: the worker ended without saying (it panicked).
        let _ = drained.await;
        threads.push(thread);
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
    let tokio = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
        tracing::info!(%listen, routes = config.routes.routes().len(), "scopegate listening");
        for warning in &config.warnings {
            tracing::warn!("config: {warning}");
        }
        let runtime = Runtime::new(config);
        serve(runtime, listeners, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}
