//! Logging set-up (`RUST_LOG` for the level, `SCOPEGATE_LOG_FORMAT=json`
//! for JSON lines) and the Prometheus metrics ([`metrics`]), owned by the
//! composition root and passed down (no globals, so tests stay isolated).
//!
//! Adapter: depends on tracing-subscriber and prometheus-client.

mod metrics;

pub use metrics::{Metrics, UpstreamErrorKind};

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
