//! `upstream:` — where allowed requests go and how to talk to it.
//!
//! Pure: depends on `http`, `rustls` (client roots) and [`crate::route`].

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};
use serde_saphyr::{Location, Spanned};

use super::{ConfigError, Ctx, raw};
use crate::route;

/// Where the upstream is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Prepended to every forwarded path; empty or `/base` (no trailing `/`).
    pub path_prefix: String,
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response headers arrive.
    pub request_timeout: Duration,
    /// Keep the client's `Host` (true) or send the upstream's authority.
    pub preserve_host: bool,
    /// The upstream's authority as a `Host` value, made once.
    pub host: http::HeaderValue,
    /// Client TLS: the roots of an https upstream (trusts nothing for http).
    pub tls: Arc<rustls::ClientConfig>,
}

pub(super) fn build(
    ctx: &Ctx<'_>,
    raw: Spanned<raw::RawUpstream>,
) -> Result<Upstream, ConfigError> {
    let raw = raw.value;
    let at = raw.url.referenced;
    let bad = |m: &str| ctx.err(at, "upstream.url", m.to_owned());
    let uri: Uri = raw
        .url
        .value
        .parse()
        .map_err(|_| bad("not a URL like http://127.0.0.1:3000"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| bad("needs a scheme: http://"))?;
    let ca = match &raw.ca_file {
        Some(f) => Some(ctx.read(f.referenced, "upstream.ca_file", &f.value)?),
        None => None,
    };
    let roots = match (scheme.as_str(), &ca) {
        ("https", Some(pem)) => crate::tls::Roots::Pem(pem),
        ("https", None) => crate::tls::Roots::System,
        ("http", None) => crate::tls::Roots::None,
        ("http", Some(_)) => {
            return Err(ctx.err(
                at,
                "upstream.ca_file",
                "only applies to an https:// upstream",
            ));
        }
        _ => return Err(bad("must be http:// or https://")),
    };
    let tls_at = raw.ca_file.as_ref().map_or(at, |f| f.referenced);
    let tls = crate::tls::client_config(roots)
        .map_err(|e| ctx.err(tls_at, "upstream.ca_file", e.to_string()))?;
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| bad("needs a host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query string"));
    }
    let prefix = uri.path().trim_end_matches('/');
    if !prefix.is_empty() && route::normalize(prefix).as_deref() != Ok(prefix) {
        return Err(bad("the path prefix must be a normalized path like /base"));
    }
    for (name, d) in [
        ("connect_timeout", raw.connect_timeout),
        ("request_timeout", raw.request_timeout),
    ] {
        if d.0.is_zero() {
            return Err(ctx.err(
                Location::UNKNOWN,
                format!("upstream.{name}"),
                "must be greater than 0",
            ));
        }
    }
    let host = http::HeaderValue::from_str(authority.as_str())
        .map_err(|_| bad("the host is not a valid Host header"))?;
    Ok(Upstream {
        scheme,
        authority,
        path_prefix: prefix.to_owned(),
        connect_timeout: raw.connect_timeout.0,
        request_timeout: raw.request_timeout.0,
        preserve_host: raw.preserve_host,
        host,
        tls,
    })
}
