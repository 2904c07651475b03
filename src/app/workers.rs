//! The `workers` event loops: one socket per worker on every data-plane
//! address (`SO_REUSEPORT`, the kernel spreads connections over them),
//! one thread and current-thread runtime per worker after the first, and
//! the order they stop in.
//!
//! Nothing on a request's path crosses to another thread but the calls the
//! gateway makes on its own (introspection, client-credentials tokens),
//! whose pooled connections live on the runtime that opened them. The
//! upstream pools and the Redis store keep a connection per thread.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::Listeners;
use crate::config::Config;
use crate::server::forward_auth::ForwardAuth;
use crate::server::{self, Admission, Proxy};
use crate::state::Shared;
use crate::telemetry::Metrics;

/// A worker's runtime: current-thread; a turn with tasks still queued
/// takes at most `events_per_busy_turn` ready sockets from the kernel, a
/// turn that waited up to Tokio's 1,024. `events_per_busy_turn` is at
/// least 1 (config).
///
/// A request is written upstream once the tasks queued ahead of it have
/// run (the batching yield, `upstream::pool`). A busy turn's sockets
/// queue their tasks ahead of it: with no bound, a request waits for as
/// many as the kernel has ready, and the p99 with it. A turn after a
/// wait has no request waiting yet, and the more it takes, the larger
/// the batch. Bounding every turn to 14 cut the tail on one machine (AMD)
/// and cost 5–6% of the CPU on another (Intel); on the second, bounding
/// only the busy turns measured best, on the first it was not measured
/// (README, Performance, "Issue 17, fifteenth sitting" and "sixteenth
/// sitting").
pub fn runtime(events_per_busy_turn: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_io_events_per_busy_tick(events_per_busy_turn)
        .build()
}

/// One more worker's sockets: the same addresses as the first worker's,
/// every one of them bound with `SO_REUSEPORT`. Not yet registered with a
/// runtime: the worker's own does that.
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
        let first = WorkerSockets {
            proxy: proxy.next(),
            forward_auth: forward_auth.next(),
            grpc: grpc.next(),
        }
        .register()?;
        Ok(Listeners {
            proxy: first.proxy,
            forward_auth: first.forward_auth,
            grpc: first.grpc,
            admin: registered(bind_each(config.admin_listen, 1)?.pop())?,
            workers: (1..workers)
                .map(|_| WorkerSockets {
                    proxy: proxy.next(),
                    forward_auth: forward_auth.next(),
                    grpc: grpc.next(),
                })
                .collect(),
        })
    }
}

/// `count` listening sockets on `addr`, none without one, with
/// `SO_REUSEPORT` when more than one. Not registered with a runtime yet.
fn bind_each(
    addr: Option<SocketAddr>,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let Some(addr) = addr else {
        return Ok(Vec::new());
    };
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
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

/// A socket registered with the current runtime.
fn registered(socket: Option<std::net::TcpListener>) -> std::io::Result<Option<TcpListener>> {
    socket.map(TcpListener::from_std).transpose()
}

/// One worker's data-plane sockets, registered with its runtime.
pub(super) struct Registered {
    pub proxy: Option<TcpListener>,
    pub forward_auth: Option<TcpListener>,
    pub grpc: Option<TcpListener>,
}

impl WorkerSockets {
    fn register(self) -> std::io::Result<Registered> {
        Ok(Registered {
            proxy: registered(self.proxy)?,
            forward_auth: registered(self.forward_auth)?,
            grpc: registered(self.grpc)?,
        })
    }
}

/// A flag raised once, for every worker: stop, release.
pub(super) type Flag = watch::Receiver<bool>;

/// Resolves once `flag` is raised (or its sender is gone).
pub(super) async fn raised(mut flag: Flag) {
    let _ = flag.wait_for(|raised| *raised).await;
}

/// What every worker's data-plane listeners share: the state, the metrics
/// and, per address, the connection limit.
#[derive(Clone)]
pub(super) struct DataPlane {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    proxy: Admission,
    forward_auth: Admission,
}

/// A worker started by [`DataPlane::start`]: its thread, and word that
/// its connections have drained.
pub(super) struct Worker {
    pub thread: std::thread::JoinHandle<()>,
    pub drained: oneshot::Receiver<()>,
}

impl DataPlane {
    pub(super) fn new(shared: Arc<Shared>, metrics: Arc<Metrics>) -> DataPlane {
        DataPlane {
            proxy: Admission::new(&shared),
            forward_auth: Admission::new(&shared),
            shared,
            metrics,
        }
    }

    /// Serves worker `worker`'s sockets until `stopped` resolves, each on a
    /// task of the current runtime.
    pub(super) fn serve<F: Future<Output = ()> + Send + 'static>(
        &self,
        worker: usize,
        tasks: &mut JoinSet<()>,
        sockets: Registered,
        stopped: impl Fn() -> F,
    ) {
        let (shared, metrics) = (&self.shared, &self.metrics);
        let accepted = |listener| metrics.accepted(listener, worker);
        if let Some(listener) = sockets.proxy {
            let proxy = Arc::new(Proxy {
                shared: shared.clone(),
                metrics: metrics.clone(),
            });
            let admission = self.proxy.clone();
            tasks.spawn(server::serve(
                listener,
                proxy,
                admission,
                accepted("proxy"),
                stopped(),
            ));
        }
        if let Some(listener) = sockets.forward_auth {
            let handler = Arc::new(ForwardAuth {
                shared: shared.clone(),
                metrics: metrics.clone(),
            });
            let admission = self.forward_auth.clone();
            let accepted = accepted("forward_auth");
            tasks.spawn(server::serve(
                listener,
                handler,
                admission,
                accepted,
                stopped(),
            ));
        }
        if let Some(listener) = sockets.grpc {
            let check = crate::grpc::Check {
                shared: shared.clone(),
                metrics: metrics.clone(),
            };
            tasks.spawn(crate::grpc::serve(listener, check, stopped()));
        }
    }

    /// Starts worker `worker` on a thread of its own: a current-thread
    /// runtime serving `sockets` until `stop`. It says when its connections
    /// have drained, then keeps its runtime (and the connections other
    /// workers' requests may have opened on it) until `release`.
    pub(super) fn start(
        &self,
        worker: usize,
        sockets: WorkerSockets,
        stop: Flag,
        release: Flag,
    ) -> std::io::Result<Worker> {
        let plane = self.clone();
        let events_per_busy_turn = self.shared.load().config.events_per_busy_turn;
        let (drained_tx, drained) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("scopegate-worker-{worker}"))
            .spawn(move || {
                let runtime = match runtime(events_per_busy_turn) {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(worker, "cannot start the worker's runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match sockets.register() {
                        Ok(sockets) => {
                            let mut tasks = JoinSet::new();
                            plane.serve(worker, &mut tasks, sockets, || raised(stop.clone()));
                            while tasks.join_next().await.is_some() {}
                        }
                        Err(e) => tracing::error!(worker, "cannot serve the worker's sockets: {e}"),
                    }
                    let _ = drained_tx.send(());
                    raised(release).await;
                });
            })?;
        Ok(Worker { thread, drained })
    }
}
