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
    /// A connection with no request in progress and no byte moved for this
    /// long is closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
}

pub(super) fn build(ctx: &Ctx<'_>, raw: raw::RawLimits) -> Result<Limits, ConfigError> {
    // hyper's HTTP/1 parser cannot work with a buffer under 8 KiB.
    let header = raw.max_request_header_bytes;
    if header.value < 8192 {
        return Err(ctx.err(
            header.referenced,
            "limits.max_request_header_bytes",
            "must be at least 8192",
        ));
    }
    if raw.max_connections.value == 0 {
        return Err(ctx.err(
            raw.max_connections.referenced,
            "limits.max_connections",
            "must be greater than 0",
        ));
    }
    if raw.header_read_timeout.0.is_zero() {
        return Err(ctx.err(
            Location::UNKNOWN,
            "limits.header_read_timeout",
            "must be greater than 0",
        ));
    }
    Ok(Limits {
        max_request_header_bytes: header.value,
        max_request_body_bytes: raw.max_request_body_bytes,
        header_read_timeout: raw.header_read_timeout.0,
        idle_timeout: raw.idle_timeout.0,
        max_connections: raw.max_connections.value,
        drain_timeout: raw.drain_timeout.0,
    })
}
