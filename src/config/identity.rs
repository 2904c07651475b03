//! `identity:` — what the upstream is told about the caller.
//!
//! Pure: depends on `http` and [`crate::token`].

use http::HeaderName;

use super::{ConfigError, Ctx, raw};
use crate::token::ClaimName;

/// What an identity header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityValue {
    /// The token's scopes, space-separated.
    Scopes,
    Claim(ClaimName),
}

/// What the upstream is told about the caller.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub strip_authorization: bool,
    pub headers: Vec<(HeaderName, IdentityValue)>,
}

/// Headers a token must never be able to set.
pub(super) fn reserved_header(name: &HeaderName) -> bool {
    use http::header::*;
    [
        HOST,
        AUTHORIZATION,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        CONNECTION,
        TE,
        TRAILER,
        UPGRADE,
        COOKIE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
        || name.as_str().starts_with("x-forwarded-")
}

pub(super) fn build(ctx: &Ctx<'_>, raw: raw::RawIdentity) -> Result<Identity, ConfigError> {
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        let field = format!("identity.headers.{name}");
        let at = value.referenced;
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ctx.err(at, &field, "not a valid header name"))?;
        if reserved_header(&header) {
            return Err(ctx.err(at, &field, "this header cannot carry identity"));
        }
        if value.value.is_empty() {
            return Err(ctx.err(at, &field, "needs a claim name or \"scopes\""));
        }
        let v = if value.value == "scopes" {
            IdentityValue::Scopes
        } else {
            IdentityValue::Claim(ClaimName::new(&value.value))
        };
        headers.push((header, v));
    }
    Ok(Identity {
        strip_authorization: raw.strip_authorization,
        headers,
    })
}
