//! Logging set-up (`RUST_LOG` for the level, `SCOPEGATE_LOG_FORMAT=json`
//! for JSON lines) and the Prometheus metrics (`metrics`), owned by the
//! composition root and passed down (no globals, so tests stay isolated).
//!
//! Adapter: depends on tracing-subscriber and prometheus-client.

mod metrics;
pub mod trace;

pub use metrics::{Metrics, ReloadResult, TokenProbe, UpstreamErrorKind};

use tracing_subscriber::EnvFilter;

/// Keeps the log writer's thread alive; drop it last to flush.
#[must_use = "logs are lost when the guard is dropped"]
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Lines the log writer's queue holds before it drops new ones. The queue
/// is allocated whole at start-up, 32 bytes a line: tracing-appender's
/// default of 128,000 lines was 4 MB of the gateway's resident memory.
/// 16,384 lines is a third of a second of access lines at 50,000 requests
/// per second, and the writer, batching into one write(2) per drain, keeps
/// up with far more than that.
const LOG_QUEUE_LINES: usize = 16_384;

/// How many bytes of lines the writer gathers into one write(2).
const LOG_WRITE_BYTES: usize = 64 * 1024;

/// Installs the subscriber. Lines go to stderr through a queue to a writer
/// on its own thread, so a request never waits for a write(2); under
/// overload the queue drops lines rather than slowing requests down. The
/// writer writes what the queue holds in one write(2) and flushes whenever
/// the queue is empty, so a line is never held back waiting for others.
pub fn init_logging() -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SCOPEGATE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colours only for a person at a terminal, never in files or collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .thread_name("scopegate-log")
        .finish(std::io::BufWriter::with_capacity(
            LOG_WRITE_BYTES,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let installed = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    LogGuard {
        _writer: installed.ok().map(|()| guard),
    }
}
