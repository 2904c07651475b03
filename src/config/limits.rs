//! `limits:` — what a client may send, and for how long.
//!
//! Pure: depends on the raw config only.

use std::time::Duration;

use serde_saphyr::Location;

use super::{ConfigError, Ctx, raw};

/// Limits on what a client may send.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_header_bytes: usize,
    pub max_request_body_bytes: u64,
    pub header_read_timeout: Duration,
    /// A connection with no request or response in progress and no byte
    /// moved for this long is closed (a WebSocket tunnel too).
    pub idle_timeout: Duration,
    /// The longest wait for the next chunk of a request body: 408, and the
    /// upstream request, already under way, aborted.
    pub body_timeout: Duration,
    /// WebSocket tunnels are closed after this long (`None`: they live as
    /// long as they move bytes, outliving the token that opened them).
    pub tunnel_max_lifetime: Option<Duration>,
    pub max_connections: usize,
    pub drain_timeout: Duration,
}

/// The smallest request head a client may be limited to: a request line
/// and a few headers.
const MIN_HEADER_BYTES: usize = 1024;

pub(super) fn build(ctx: &Ctx<'_>, raw: raw::RawLimits) -> Result<Limits, ConfigError> {
    // hyper's HTTP/1 buffer stays at 8 KiB or more; a lower limit is
    // enforced by counting the head (server::head_size).
    let header = raw.max_request_header_bytes;
    if header.value < MIN_HEADER_BYTES {
        return Err(ctx.err(
            header.referenced,
            "limits.max_request_header_bytes",
            format!("must be at least {MIN_HEADER_BYTES}"),
        ));
    }
    if raw.max_connections.value == 0 {
        return Err(ctx.err(
            raw.max_connections.referenced,
            "limits.max_connections",
            "must be greater than 0",
        ));
    }
    for (name, d) in [
        ("header_read_timeout", raw.header_read_timeout),
        ("body_timeout", raw.body_timeout),
    ] {
        if d.0.is_zero() {
            return Err(ctx.err(
                Location::UNKNOWN,
                format!("limits.{name}"),
                "must be greater than 0",
            ));
        }
    }
    Ok(Limits {
        max_request_header_bytes: header.value,
        max_request_body_bytes: raw.max_request_body_bytes,
        header_read_timeout: raw.header_read_timeout.0,
        idle_timeout: raw.idle_timeout.0,
        body_timeout: raw.body_timeout.0,
        tunnel_max_lifetime: Some(raw.tunnel_max_lifetime.0).filter(|d| !d.is_zero()),
        max_connections: raw.max_connections.value,
        drain_timeout: raw.drain_timeout.0,
    })
}
