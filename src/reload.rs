//! Hot reload: watch the config file's *directory* (Kubernetes swaps a
//! `..data` symlink, editors save by rename, so watching the file itself
//! misses both), react only to the config file, the files it names and the
//! `..data` swap (a log file written beside the config is no reason to
//! reload), debounce, and on SIGHUP too; then the [`Reload`] handle builds
//! the whole new state beside the old one and swaps it atomically.
//!
//! Adapter: depends on notify and tokio; the composition root hands it a
//! [`Reload`] (it knows nothing of what a reload does).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the watcher needs from the gateway.
pub trait Reload: Send + Sync + 'static {
    /// The config file, as given on the command line.
    fn config_path(&self) -> &Path;
    /// The other files the current config read (keys, TLS).
    fn config_files(&self) -> Vec<PathBuf>;
    /// Reads the config again and swaps it in if it is valid (blocking).
    fn reload(&self);
}

/// Whether an event on `path` may change the config: the file itself, a
/// file it names, or Kubernetes' `..data` symlink swap.
fn concerns(path: &Path, names: &[OsString]) -> bool {
    path.file_name()
        .is_some_and(|name| name == "..data" || names.iter().any(|n| n == name))
}

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
pub fn watch<R: Reload>(runtime: Arc<R>) -> Watch {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let dir = match runtime.config_path().parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => ".".into(),
    };
    let events = tx.clone();
    let watched = runtime.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        // Read at every event: a reload may name other files.
        let names: Vec<OsString> = std::iter::once(watched.config_path().to_owned())
            .chain(watched.config_files())
            .filter_map(|p| p.file_name().map(ToOwned::to_owned))
            .collect();
        if event.paths.iter().any(|p| concerns(p, &names)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_config_its_files_and_the_configmap_swap_concern_it() {
        let names = [OsString::from("gateway.yaml"), OsString::from("jwks.json")];
        for yes in [
            "/etc/sg/gateway.yaml",
            "/etc/sg/jwks.json",
            "/etc/sg/..data",
        ] {
            assert!(concerns(Path::new(yes), &names), "{yes}");
        }
        for no in [
            "/etc/sg/app.log",
            "/etc/sg/.gateway.yaml.swp",
            "/etc/sg/..data_tmp",
            "/etc/sg/..2026_11_29",
        ] {
            assert!(!concerns(Path::new(no), &names), "{no}");
        }
    }
}
