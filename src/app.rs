//! Composition root: build the state from a config, start the key fetchers
//! and the listener, wait for a shutdown signal.
//!
//! Depends on everything; nothing depends on it but the CLI.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{self, Config};
use crate::server::{self, Proxy};
use crate::state::{Shared, State};

/// Serves `config` on an already bound listener until `shutdown` resolves.
/// Tests bind `127.0.0.1:0` and run the real gateway through this.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let client = crate::upstream::Client::new(config.upstream.connect_timeout);
    start_key_fetchers(&config);
    let shared = Arc::new(Shared::new(State::new(config)));
    let proxy = Arc::new(Proxy { shared, client });
    server::serve(listener, proxy, shutdown).await;
}

fn start_key_fetchers(config: &Config) {
    if config.remote_jwks.is_empty() {
        return;
    }
    let client = match crate::jwks::fetch::client() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("cannot build the JWKS client: {e}; remote issuers stay unavailable");
            return;
        }
    };
    for remote in &config.remote_jwks {
        tokio::spawn(crate::jwks::fetch::fetch_until_ready(
            client.clone(),
            remote.clone(),
        ));
    }
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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if config.workers > 0 {
        builder.worker_threads(config.workers);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let listen = config.listen;
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(%listen, routes = config.routes.routes().len(), "scopegate listening");
        serve(config, listener, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}
