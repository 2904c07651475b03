//! Hot reload: watch the config file's *directory* (Kubernetes swaps a
//! `..data` symlink, editors save by rename, so watching the file itself
//! misses both), debounce, and on SIGHUP too; then [`Runtime::reload`]
//! builds the whole new state beside the old one and swaps it atomically.
//! Unchanged content (same fingerprint) changes nothing.
//!
//! Adapter: depends on notify, tokio and [`crate::app`].

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::app::Runtime;

/// Events closer together than this are one change (editors write twice,
/// Kubernetes renames several entries).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Stops watching when dropped.
#[derive(Debug)]
pub struct Watch {
    task: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the config's directory and listening for SIGHUP.
pub fn watch(runtime: Arc<Runtime>) -> Watch {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let dir = match runtime.config_path().parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => ".".into(),
    };
    let events = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot watch the config directory ({e}); SIGHUP still reloads");
            None
        }
    };
    spawn_sighup(tx);
    let task = tokio::spawn(async move {
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let runtime = runtime.clone();
            // Reading files and parsing is blocking work.
            let _ = tokio::task::spawn_blocking(move || runtime.reload()).await;
        }
    });
    Watch { task }
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::Sender<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the config");
                    if tx.send(()).await.is_err() {
                        return;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::Sender<()>) {}
