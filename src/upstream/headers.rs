//! Header rules for forwarding (SPEC §Forwarding, §4.2): hop-by-hop removal
//! (with every header `Connection` names) before the gateway adds its own,
//! identity headers always cleared then set from the verified token,
//! `X-Forwarded-*` and other client-address headers kept only from trusted
//! proxies, rewrite and method-override headers never forwarded.
//!
//! Pure: depends on `http` types, [`crate::config`] and [`crate::token`].

use std::net::IpAddr;

use http::header::{AUTHORIZATION, CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Identity, IdentityValue};
use crate::token::Claims;

const FOR: &str = "x-forwarded-for";
const PROTO: &str = "x-forwarded-proto";
const FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(FOR);
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(PROTO);
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static(FORWARDED_HOST);

fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// Whether a field is hop-by-hop by its name alone, in any case: the
/// upstream client ([`super::h1`]) leaves these out as it parses.
pub(super) fn is_hop_by_hop_name(name: &[u8]) -> bool {
    let is = |hop: &[u8]| crate::http1::folds_to(name, hop);
    let listed = match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        17 => is(b"transfer-encoding"),
        _ => false,
    };
    // Proxy-Authenticate, Proxy-Authorization, Proxy-Connection, …
    listed
        || name
            .get(..6)
            .is_some_and(|p| crate::http1::folds_to(p, b"proxy-"))
}

/// Removes hop-by-hop headers, including every header that `Connection`
/// names, from a request or a response.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    sweep(headers, is_hop_by_hop);
}

/// One pass over `headers`: `Connection` itself, every name a
/// `Connection` field lists, and every name `doomed` picks are removed.
/// Nothing is allocated unless a field other than `Connection` goes.
fn sweep(headers: &mut HeaderMap, mut doomed: impl FnMut(&HeaderName) -> bool) {
    let mut connection = false;
    let mut gone: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        if *name == CONNECTION {
            connection = true;
            // A name is made only for a field that is there: `keep-alive`
            // and `close` are tokens far more often than fields.
            let tokens = value.to_str().unwrap_or("").split(',').map(str::trim);
            for token in tokens.filter(|token| headers.contains_key(*token)) {
                gone.extend(HeaderName::from_bytes(token.as_bytes()).ok());
            }
        } else if gone.last() != Some(name) && doomed(name) {
            // The values of one name come together: decided once per name.
            gone.push(name.clone());
        }
    }
    if connection {
        headers.remove(CONNECTION);
    }
    for name in gone {
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
    use http::header::{COOKIE, PROXY_AUTHORIZATION};
    for (name, value) in headers.iter_mut() {
        if name == AUTHORIZATION || name == COOKIE || name == PROXY_AUTHORIZATION {
            value.set_sensitive(true);
        }
    }
}

/// What a forwarded request must not carry from the client (SPEC
/// §Forwarding, §4.2).
#[derive(Debug, Clone, Copy)]
pub struct Scrub<'a> {
    pub identity: &'a Identity,
    /// The peer is a trusted proxy: its client-address headers stay.
    pub trusted: bool,
    /// The header the gateway's own credential goes in.
    pub credential: Option<&'a HeaderName>,
}

/// Removes, in one pass over the request's fields: hop-by-hop fields and
/// every field `Connection` names; method-override, rewrite and `Proxy`
/// headers; client copies of the identity headers and of the credential
/// header; `Authorization` under `strip_authorization`; and, unless the
/// peer is a trusted proxy, every client-address header. All but the
/// hop-by-hop rules apply to every spelling that reads the same once `_`
/// is `-` (CGI-style upstreams: PHP, WSGI, nginx with
/// `underscores_in_headers`).
pub fn scrub_request(headers: &mut HeaderMap, scrub: &Scrub<'_>) {
    sweep(headers, |name| {
        if is_hop_by_hop(name) || (scrub.identity.strip_authorization && name == AUTHORIZATION) {
            return true;
        }
        let spelled;
        let name = if name.as_str().contains('_') {
            spelled = name.as_str().replace('_', "-");
            spelled.as_str()
        } else {
            name.as_str()
        };
        is_method_override(name)
            || is_rewrite(name)
            || (!scrub.trusted && is_client_address(name))
            || scrub
                .identity
                .headers
                .iter()
                .any(|(id, _)| id.as_str() == name)
            || scrub.credential.is_some_and(|c| c.as_str() == name)
    });
}

/// Sets the identity headers from the token; the client's copies were
/// removed by [`scrub_request`].
pub fn set_identity(headers: &mut HeaderMap, identity: &Identity, claims: Option<&Claims>) {
    let Some(claims) = claims else { return };
    for (name, source) in &identity.headers {
        if let Some(value) = identity_value(claims, source) {
            headers.insert(name.clone(), value);
        }
    }
}

/// One identity header's value, the same on every listener (README,
/// "Identity headers"); `None` when the claim is absent or `null`.
///
/// - scopes: space-separated (scope tokens never hold a space);
/// - a string: as it is, with `%`, control characters, non-ASCII bytes
///   (UTF-8) and a space at either end percent-encoded, so that every
///   value can be carried and decoded back exactly;
/// - a number or boolean: its JSON text;
/// - an array of strings, numbers and booleans: the items, each encoded as
///   above with `,` encoded too, joined by `,` (as Envoy's
///   `claim_to_headers`); `"Domain Users"` stays one item;
/// - an object, or an array holding objects or arrays: compact JSON,
///   encoded as a string.
pub fn identity_value(claims: &Claims, source: &IdentityValue) -> Option<HeaderValue> {
    use serde_json::Value;
    let mut out = String::new();
    match source {
        IdentityValue::Scopes => out = claims.scopes().join(" "),
        IdentityValue::Claim(claim) => match claims.get(claim)? {
            Value::Null => return None,
            Value::String(s) => encode_into(&mut out, s, b""),
            Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match item {
                        Value::String(s) => encode_into(&mut out, s, b","),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
            other @ (Value::Number(_) | Value::Bool(_)) => out = other.to_string(),
            other => encode_into(&mut out, &other.to_string(), b""),
        },
    }
    HeaderValue::from_str(&out).ok()
}

/// Appends `text`, percent-encoding what a header cannot carry verbatim.
fn encode_into(out: &mut String, text: &str, also: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let edge_space = b == b' ' && (i == 0 || i + 1 == bytes.len());
        if (0x20..0x7F).contains(&b) && b != b'%' && !edge_space && !also.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

/// Client-address headers: trusted only from `trusted_proxies`.
fn is_client_address(name: &str) -> bool {
    name.starts_with("x-forwarded-")
        || matches!(
            name,
            "forwarded" | "x-real-ip" | "true-client-ip" | "x-client-ip" | "x-cluster-client-ip"
        )
}

/// Rewrite headers (IIS, Symfony, Zend read the path from them), and
/// `Proxy` (httpoxy: CGI turns it into `HTTP_PROXY`): never forwarded,
/// whoever sent them, since the path that was authorized is the path.
fn is_rewrite(name: &str) -> bool {
    matches!(
        name,
        "x-original-url" | "x-original-uri" | "x-rewrite-url" | "proxy"
    )
}

/// Method-override headers (SPEC §4.2): the upstream would serve another
/// method than the one decided.
pub fn is_method_override(name: &str) -> bool {
    matches!(
        name,
        "x-http-method-override" | "x-http-method" | "x-method-override"
    )
}

/// Joins several `Cookie` fields into one with `"; "` (RFC 9113 §8.2.3):
/// HTTP/2 clients split cookies, and HTTP/1.1 upstreams read one field.
pub fn join_cookies(headers: &mut HeaderMap) {
    use http::header::{COOKIE, Entry};
    let Entry::Occupied(entry) = headers.entry(COOKIE) else {
        return;
    };
    if entry.iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in entry.iter() {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    let (_, _) = entry.remove_entry_mult();
    if let Ok(mut value) = HeaderValue::from_bytes(&joined) {
        value.set_sensitive(true);
        headers.insert(COOKIE, value);
    }
}

/// The fields the gateway itself gives a forwarded request, kept out of
/// its header map: `Host`, and `X-Forwarded-For/-Proto/-Host` when they
/// replace the client's. The map holds no other copy of them (the
/// client's `Host` is skipped, its client-address headers were scrubbed,
/// and no identity or credential header may be named so), so the
/// upstream codec writes them straight into the head, `Host` first, the
/// others after the map's fields: four map insertions fewer per request
/// (README, Performance, "Issue 17, eleventh sitting").
#[derive(Debug, Clone)]
pub struct Added<'a> {
    /// The `Host` the upstream gets.
    pub host: HeaderValue,
    /// `X-Forwarded-*`, unless the peer is a trusted proxy (then they are
    /// merged into the map's).
    pub forwarded: Option<Forwarded<'a>>,
}

/// `X-Forwarded-For/-Proto/-Host` for a peer that is not a trusted proxy.
#[derive(Debug, Clone)]
pub struct Forwarded<'a> {
    /// The peer's address as text.
    pub client: &'a HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
    /// The host the client addressed.
    pub host: Option<HeaderValue>,
}

impl Added<'_> {
    /// The fields that follow the map's, in order (`Host` comes first).
    pub(super) fn trailing(&self) -> [Option<(&'static str, &HeaderValue)>; 3] {
        let Some(f) = &self.forwarded else {
            return [None, None, None];
        };
        [
            Some((FOR, f.client)),
            Some((PROTO, &f.proto)),
            f.host.as_ref().map(|host| (FORWARDED_HOST, host)),
        ]
    }

    /// Puts the fields into `headers`, for a client that writes the map
    /// itself (hyper's, for a WebSocket handshake).
    pub(super) fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(HOST, self.host.clone());
        for (name, value) in self.trailing().into_iter().flatten() {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
}

/// `X-Forwarded-For/-Proto/-Host`: appended to the map's when the peer is
/// a trusted proxy (and `None` returned), else the gateway's own, to be
/// written in place of the client's (which [`scrub_request`] removed,
/// since the gateway does not vouch for them). `peer` is the peer's
/// address as text.
pub fn forwarded<'a>(
    headers: &mut HeaderMap,
    peer: &'a HeaderValue,
    trusted: bool,
    proto: HeaderValue,
    host: Option<HeaderValue>,
) -> Option<Forwarded<'a>> {
    if !trusted {
        return Some(Forwarded {
            client: peer,
            proto,
            host,
        });
    }
    let prior = headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
    let chain = match (prior, peer.to_str()) {
        (Some(prior), Ok(peer)) => HeaderValue::from_str(&format!("{prior}, {peer}")).ok(),
        _ => Some(peer.clone()),
    };
    if let Some(chain) = chain {
        headers.insert(X_FORWARDED_FOR, chain);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, proto);
    }
    if !headers.contains_key(X_FORWARDED_HOST)
        && let Some(host) = host
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    None
}

/// An address as header text (`X-Forwarded-For`), made once per connection.
pub fn address_text(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The client's address: the peer's, or — when the peer is a trusted
/// proxy — the rightmost `X-Forwarded-For` address that is not itself a
/// trusted proxy (the leftmost when all are). Addresses that do not parse
/// end the walk: nothing further left can be trusted.
pub fn client_ip(
    headers: &HeaderMap,
    peer: IpAddr,
    trusted: &[crate::config::raw::Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let chain = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in chain.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::ClaimName;
    use serde_json::json;

    #[test]
    fn identity_values_are_defined_for_every_claim_type() {
        let object = json!({
            "sub": "auth0|42",
            "name": "Jos\u{e9} 50%",
            "crlf": "a\r\nX-Injected: 1",
            "edges": " padded ",
            "groups": ["Domain Users", "a,b", "admin"],
            "mixed": [1, true, "x"],
            "nested": [["a"]],
            "org": {"id": 7, "name": "acme"},
            "n": 42,
            "f": 1.5,
            "b": false,
            "nothing": null,
            "scope": "read write"
        });
        let claims = Claims::new(
            object.as_object().cloned().expect("object"),
            &[ClaimName::new("scope")],
            0,
        );
        let value = |name: &str| {
            identity_value(&claims, &IdentityValue::Claim(ClaimName::new(name)))
                .map(|v| v.to_str().expect("ASCII").to_owned())
        };
        assert_eq!(value("sub").as_deref(), Some("auth0|42"));
        assert_eq!(value("name").as_deref(), Some("Jos%C3%A9 50%25"));
        assert_eq!(value("crlf").as_deref(), Some("a%0D%0AX-Injected: 1"));
        assert_eq!(value("edges").as_deref(), Some("%20padded%20"));
        assert_eq!(value("groups").as_deref(), Some("Domain Users,a%2Cb,admin"));
        assert_eq!(value("mixed").as_deref(), Some("1,true,x"));
        assert_eq!(value("nested").as_deref(), Some("[[\"a\"]]"));
        assert_eq!(value("org").as_deref(), Some(r#"{"id":7,"name":"acme"}"#));
        assert_eq!(value("n").as_deref(), Some("42"));
        assert_eq!(value("f").as_deref(), Some("1.5"));
        assert_eq!(value("b").as_deref(), Some("false"));
        assert_eq!(value("nothing"), None);
        assert_eq!(value("absent"), None);
        let scopes = identity_value(&claims, &IdentityValue::Scopes).expect("scopes");
        assert_eq!(scopes, "read write");
    }

    #[test]
    fn hop_by_hop_names_in_any_case() {
        for hop in [
            "te",
            "TE",
            "Trailer",
            "upgrade",
            "Connection",
            "KEEP-ALIVE",
            "transfer-encoding",
            "Proxy-Authorization",
            "proxy-connection",
            "PROXY-",
        ] {
            assert!(is_hop_by_hop_name(hop.as_bytes()), "{hop}");
        }
        for end_to_end in [
            "t",
            "tee",
            "trailers",
            "keep_alive",
            "connectio",
            "transfer_encoding",
            "proxy",
            "proxy_authorization",
            "proxyauthorization",
            "x-proxy-id",
            "content-length",
        ] {
            assert!(!is_hop_by_hop_name(end_to_end.as_bytes()), "{end_to_end}");
        }
    }

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
        const HTTP: HeaderValue = HeaderValue::from_static("http");
        const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
        let peer: IpAddr = "192.0.2.7".parse().expect("ip");
        let host = HeaderValue::from_static("api.example.com");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil"));
        h.insert(FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        let mut stranger = h.clone();
        for name in [
            "x-forwarded-prefix",
            "x-forwarded-port",
            "x_forwarded_for",
            "x-real-ip",
            "true-client-ip",
            "x-client-ip",
            "x-cluster-client-ip",
        ] {
            stranger.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("6.6.6.6"),
            );
        }
        let identity = Identity::default();
        let scrub = |trusted| Scrub {
            identity: &identity,
            trusted,
            credential: None,
        };
        scrub_request(&mut stranger, &scrub(false));
        assert!(stranger.is_empty(), "nothing of the client's: {stranger:?}");
        let address = address_text(peer);
        let added = Added {
            host: HeaderValue::from_static("upstream.internal"),
            forwarded: forwarded(&mut stranger, &address, false, HTTP, Some(host.clone())),
        };
        assert!(stranger.is_empty(), "written beside the map, not into it");
        assert_eq!(
            added
                .trailing()
                .map(|f| f.map(|(name, value)| (name, value.as_bytes()))),
            [
                Some(("x-forwarded-for", &b"192.0.2.7"[..])),
                Some(("x-forwarded-proto", &b"http"[..])),
                Some(("x-forwarded-host", host.as_bytes())),
            ]
        );
        // The same fields, for hyper's client, in the map.
        added.insert_into(&mut stranger);
        assert_eq!(stranger.len(), 4, "only the gateway's own: {stranger:?}");
        assert_eq!(
            stranger.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes),
            Some(&b"192.0.2.7"[..])
        );
        assert_eq!(stranger.get(X_FORWARDED_HOST), Some(&host));
        assert_eq!(
            stranger.get(HOST).map(HeaderValue::as_bytes),
            Some(&b"upstream.internal"[..])
        );
        assert!(stranger.get(FORWARDED).is_none());
        scrub_request(&mut h, &scrub(true));
        let merged = forwarded(&mut h, &address, true, HTTP, Some(host.clone()));
        assert!(
            merged.is_none(),
            "a trusted proxy's are merged into the map"
        );
        assert_eq!(
            h.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes),
            Some(&b"1.2.3.4, 192.0.2.7"[..])
        );
        assert_eq!(
            h.get(X_FORWARDED_HOST).map(HeaderValue::as_bytes),
            Some(&b"evil"[..])
        );
        assert!(h.get(FORWARDED).is_some(), "a trusted proxy's headers stay");
    }

    #[test]
    fn one_scrub_removes_every_forbidden_spelling_and_nothing_else() {
        let identity = Identity {
            strip_authorization: true,
            headers: vec![(
                HeaderName::from_static("x-auth-subject"),
                IdentityValue::Claim(crate::token::ClaimName::new("sub")),
            )],
        };
        let credential = HeaderName::from_static("x-api-key");
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-named"),
            ("x-named", "1"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("authorization", "Bearer client"),
            ("x_auth_subject", "admin"),
            ("x-auth-subject", "admin"),
            ("x_api_key", "forged"),
            ("x-http-method-override", "DELETE"),
            ("x_original_url", "/admin"),
            ("proxy", "http://evil"),
            ("x-real-ip", "6.6.6.6"),
            ("cookie", "a=1"),
            ("accept", "*/*"),
            ("x-kept", "yes"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        h.append("x-kept", HeaderValue::from_static("twice"));
        scrub_request(
            &mut h,
            &Scrub {
                identity: &identity,
                trusted: false,
                credential: Some(&credential),
            },
        );
        mark_sensitive(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "cookie", "x-kept"]);
        assert_eq!(h.get_all("x-kept").iter().count(), 2);
        assert!(h.get("cookie").is_some_and(HeaderValue::is_sensitive));
    }
}
