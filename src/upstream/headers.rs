//! Header rules for forwarding (SPEC §Forwarding): hop-by-hop removal (with
//! every header `Connection` names) before the gateway adds its own,
//! identity headers always cleared then set from the verified token,
//! `X-Forwarded-*` kept only from trusted proxies.
//!
//! Pure: depends on `http` types, [`crate::config`] and [`crate::token`].

use std::net::IpAddr;

use http::header::{AUTHORIZATION, CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Identity, IdentityValue};
use crate::token::Claims;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

fn is_hop_by_hop(name: &HeaderName) -> bool {
    use http::header::{
        PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
    };
    [
        CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// Removes hop-by-hop headers, including every header that `Connection`
/// names, from a request or a response.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// An HTTP/1.1 WebSocket handshake: `GET` with `Connection: upgrade` and
/// `Upgrade: websocket` (RFC 6455 §4.1). Nothing else is ever upgraded.
pub fn is_websocket_upgrade<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::GET
        && req.version() == http::Version::HTTP_11
        && has_token(req.headers(), CONNECTION, "upgrade")
        && has_token(req.headers(), http::header::UPGRADE, "websocket")
}

/// Puts back the two hop-by-hop headers a WebSocket handshake needs on the
/// next hop, after every other hop-by-hop header has been removed.
pub fn restore_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Marks credentials as sensitive, so that no `Debug` output (hyper's and
/// h2's traces among them) ever prints them.
pub fn mark_sensitive(headers: &mut HeaderMap) {
    for name in [
        AUTHORIZATION,
        http::header::COOKIE,
        http::header::PROXY_AUTHORIZATION,
    ] {
        if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

/// Clears client copies of identity headers, then sets them from the token.
pub fn apply_identity(headers: &mut HeaderMap, identity: &Identity, claims: Option<&Claims>) {
    for (name, _) in &identity.headers {
        headers.remove(name);
    }
    // CGI-style upstreams (PHP, WSGI, nginx with underscores_in_headers)
    // read `X_Auth_Subject` and `X-Auth-Subject` as the same variable: a
    // client's underscore spelling of an identity header is dropped too.
    let aliases: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .filter(|n| {
            let dashed = n.as_str().replace('_', "-");
            identity.headers.iter().any(|(id, _)| id.as_str() == dashed)
        })
        .cloned()
        .collect();
    for alias in aliases {
        headers.remove(alias);
    }
    if identity.strip_authorization {
        headers.remove(AUTHORIZATION);
    }
    let Some(claims) = claims else { return };
    for (name, source) in &identity.headers {
        let text = match source {
            IdentityValue::Scopes => Some(claims.scopes().join(" ")),
            IdentityValue::Claim(claim) => claims.get(claim).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                serde_json::Value::Array(items) if items.iter().all(|i| i.is_string()) => Some(
                    items
                        .iter()
                        .filter_map(|i| i.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                other => Some(other.to_string()),
            }),
        };
        // A claim with characters a header cannot carry is left out, never
        // mangled into something else.
        if let Some(value) = text.and_then(|t| HeaderValue::from_str(&t).ok()) {
            headers.insert(name.clone(), value);
        }
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host`: appended to when the peer is a
/// trusted proxy, replaced otherwise. `Forwarded` from an untrusted peer is
/// dropped, since the gateway does not vouch for it.
pub fn apply_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    trusted: bool,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    let peer_text = peer.to_string();
    if trusted {
        let chain = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {peer_text}"),
            None => peer_text,
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if !headers.contains_key(X_FORWARDED_HOST)
            && let Some(host) = host
        {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        return;
    }
    headers.remove(FORWARDED);
    headers.remove(X_FORWARDED_HOST);
    if let Ok(v) = HeaderValue::from_str(&peer_text) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// The `Host` the upstream gets.
pub fn set_host(headers: &mut HeaderMap, host: HeaderValue) {
    headers.insert(HOST, host);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-Auth-Subject, x-secret"),
        );
        h.insert("x-auth-subject", HeaderValue::from_static("admin"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(
            h.get("x-kept").map(HeaderValue::as_bytes),
            Some(&b"yes"[..])
        );
    }

    #[test]
    fn forwarded_headers_replaced_for_strangers_appended_for_proxies() {
        let peer: IpAddr = "192.0.2.7".parse().expect("ip");
        let host = HeaderValue::from_static("api.example.com");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil"));
        h.insert(FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        let mut stranger = h.clone();
        apply_forwarded(&mut stranger, peer, false, "http", Some(&host));
        assert_eq!(
            stranger.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes),
            Some(&b"192.0.2.7"[..])
        );
        assert_eq!(stranger.get(X_FORWARDED_HOST), Some(&host));
        assert!(stranger.get(FORWARDED).is_none());
        apply_forwarded(&mut h, peer, true, "http", Some(&host));
        assert_eq!(
            h.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes),
            Some(&b"1.2.3.4, 192.0.2.7"[..])
        );
        assert_eq!(
            h.get(X_FORWARDED_HOST).map(HeaderValue::as_bytes),
            Some(&b"evil"[..])
        );
    }
}
