//! Logging set-up (`RUST_LOG` for the level, `SCOPEGATE_LOG_FORMAT=json`
//! for JSON lines) and the process's counters, owned by the composition
//! root and passed down (no globals, so tests stay isolated).
//!
//! Depends on tracing-subscriber.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SCOPEGATE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Counters of events that are not requests.
#[derive(Debug, Default)]
pub struct Metrics {
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    /// (issuer, "ok" | "error") -> fetches.
    jwks_fetches: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Metrics {
    pub fn reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Config reloads with this result (`true`: applied).
    pub fn reloads(&self, ok: bool) -> u64 {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        counter.load(Ordering::Relaxed)
    }

    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        if let Ok(mut map) = self.jwks_fetches.lock() {
            *map.entry((issuer.to_owned(), result)).or_default() += 1;
        }
    }

    /// JWKS fetches for one issuer with this result.
    pub fn jwks_fetches(&self, issuer: &str, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "error" };
        self.jwks_fetches
            .lock()
            .ok()
            .and_then(|map| map.get(&(issuer.to_owned(), result)).copied())
            .unwrap_or(0)
    }
}
