//! The proxy service: the life of one request, top to bottom.
//!
//! 1. load the current state (the request is decided under it to the end);
//! 2. refuse malformed framing (400, never forwarded);
//! 3. decide (normalize, route, token, policy) with [`crate::decision`];
//! 4. refuse, or rewrite the request (normalized path, header rules) and
//!    forward it with bodies streaming both ways.
//!
//! Adapter: depends on hyper and the core.

use std::net::SocketAddr;
use std::sync::Arc;

use super::ClientBody;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, TRANSFER_ENCODING, UPGRADE};
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Method, Request, Response, Version};

use super::access::{self, Outcome};
use crate::Body;
use crate::cors::Cors;
use crate::decision::Question;
use crate::reject::{Refusal, respond};
use crate::reply::Reply;
use crate::state::{Shared, State};
use crate::telemetry::{Metrics, UpstreamErrorKind, trace};
use crate::token::Claims;
use crate::upstream::{self, BodyFault, UpstreamError, headers};
use opentelemetry::KeyValue;

/// Who is asking, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// `addr`'s IP as header text, made once per connection.
    pub address: HeaderValue,
    /// The connection is TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// The `x5t#S256` of the client certificate presented on the TLS
    /// connection (`tls.client_ca_file`), for certificate-bound tokens.
    pub certificate: Option<std::sync::Arc<str>>,
    /// Where a WebSocket handshake leaves its tunnel for the connection.
    pub tunnels: super::Tunnels,
    /// The connection's request-timeout timer, reused request after request.
    pub timer: Arc<upstream::Timer>,
}

impl Peer {
    /// The peer of a connection just accepted from `addr`.
    pub fn new(addr: SocketAddr, tls: bool, certificate: Option<std::sync::Arc<str>>) -> Peer {
        Peer {
            addr,
            address: headers::address_text(addr.ip()),
            tls,
            certificate,
            tunnels: super::Tunnels::default(),
            timer: Arc::default(),
        }
    }
}

/// What every request of a listener shares.
#[derive(Debug)]
pub struct Proxy {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
}

/// The fields [`check_framing`] found on its pass, for what follows: each
/// is read once per request, not looked up again.
#[derive(Debug, Clone, Copy)]
struct Framed<'r> {
    /// The `Host` field: at most one.
    host: Option<&'r HeaderValue>,
    /// The `Content-Length` field: at most one, holding one value.
    length: Option<&'r HeaderValue>,
    /// An `Upgrade` field is there (a WebSocket handshake needs one).
    upgrade: bool,
}

/// What the forwarded request keeps of [`Framed`] once the client's
/// request is the gateway's to rewrite.
#[derive(Debug)]
struct Declared {
    /// The `Host` field as the client sent it.
    host: Option<HeaderValue>,
    /// The request said `Content-Length`, and this (when a number).
    length: Option<Option<u64>>,
    /// The request has an `Upgrade` field.
    upgrade: bool,
}

impl Framed<'_> {
    fn declared(self) -> Declared {
        Declared {
            host: self.host.cloned(),
            length: self
                .length
                .map(|v| v.to_str().ok().and_then(|v| v.parse().ok())),
            upgrade: self.upgrade,
        }
    }
}

/// RFC 9112 / 9113 framing rules the upstream must never have to guess at.
fn check_framing(req: &Request<ClientBody>) -> Result<Framed<'_>, &'static str> {
    if req.method() == Method::CONNECT {
        return Err("CONNECT is not supported");
    }
    // One pass over the fields, no lookups.
    let (mut host, mut hosts, mut length, mut lengths, mut transfer_encoding) =
        (None, 0, None, 0, false);
    let mut upgrade = false;
    for (name, value) in req.headers() {
        if name == HOST {
            host = Some(value);
            hosts += 1;
        } else if name == CONTENT_LENGTH {
            // `Content-Length: 5, 5` is a list: as ambiguous as two fields.
            length = Some(value);
            lengths += 1 + value.as_bytes().iter().filter(|&&b| b == b',').count();
        } else if name == TRANSFER_ENCODING {
            transfer_encoding = true;
        } else if name == UPGRADE {
            upgrade = true;
        }
    }
    if hosts > 1 {
        return Err("more than one Host header");
    }
    if host.is_some_and(|host| !valid_host(host.as_bytes()))
        || req
            .uri()
            .authority()
            .is_some_and(|a| !valid_host(a.as_str().as_bytes()))
    {
        return Err("Host is not a valid host[:port]");
    }
    match req.version() {
        Version::HTTP_2 | Version::HTTP_3 => {
            if let (Some(host), Some(authority)) = (host, req.uri().authority())
                && host.as_bytes() != authority.as_str().as_bytes()
            {
                return Err("Host does not match :authority");
            }
        }
        Version::HTTP_11 if hosts == 0 => return Err("missing Host header"),
        _ => {}
    }
    if lengths > 1 {
        return Err("more than one Content-Length");
    }
    if lengths > 0 && transfer_encoding {
        return Err("Content-Length together with Transfer-Encoding");
    }
    Ok(Framed {
        host,
        length,
        upgrade,
    })
}

/// `RateLimit-Policy` and `RateLimit` on an allowed response, replacing
/// any the upstream sent.
pub(super) fn quota_headers(headers: &mut http::HeaderMap, quota: &crate::decision::QuotaNote<'_>) {
    crate::reject::rate_limit_headers(
        headers,
        &quota.policy.name,
        quota.policy.burst,
        quota.policy.window_secs(),
        quota.remaining,
        quota.reset,
    );
}

/// What a sender-constrained token is checked against: the scheme and
/// host the client used (from `X-Forwarded-Proto` / `X-Forwarded-Host`
/// when the peer is a trusted proxy that sent exactly one of each), and
/// the connection's client certificate.
fn binding<'r, B>(
    trusted: bool,
    peer: &'r Peer,
    req: &'r Request<B>,
    host: Option<&'r str>,
) -> crate::decision::Binding<'r> {
    let forwarded = |name: &str| {
        if !trusted {
            return None;
        }
        let mut values = req.headers().get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok().map(str::trim),
            _ => None,
        }
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ if peer.tls => "https",
        _ => "http",
    };
    crate::decision::Binding {
        scheme,
        host: forwarded("x-forwarded-host").or(host),
        certificate: peer.certificate.as_deref(),
    }
}

/// The host a request is for: the absolute-form authority, else `Host`
/// (HTTP/2 `:authority` arrives as either).
fn request_host<'r, B>(req: &'r Request<B>, framed: &Framed<'r>) -> Option<&'r str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => framed.host.and_then(|h| h.to_str().ok()),
    }
}

/// `host [ ":" port ]` (RFC 9110 §7.2): a reg-name, IPv4 or bracketed IP
/// literal, no userinfo, a port of digits. What is forwarded as `Host` and
/// `X-Forwarded-Host` is then something every upstream parses alike.
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        // A colon inside brackets belongs to an IPv6 literal.
        Some(i) if !value[i..].contains(&b']') => (&value[..i], Some(&value[i + 1..])),
        _ => (value, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    match host {
        [] => false,
        [b'[', inner @ .., b']'] => {
            std::str::from_utf8(inner).is_ok_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        // reg-name or IPv4: unreserved, sub-delims, percent-escapes.
        _ => host
            .iter()
            .all(|&b| crate::route::is_unreserved_or_sub_delim(b) || b == b'%'),
    }
}

impl super::Handler for Proxy {
    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn serves_tls(&self) -> bool {
        true
    }

    fn handle(
        &self,
        peer: Peer,
        req: Request<ClientBody>,
    ) -> impl std::future::Future<Output = Reply> + Send {
        self.handle(peer, req)
    }
}

impl Proxy {
    /// Handles one request; never fails (refusals are responses).
    pub async fn handle(&self, peer: Peer, req: Request<ClientBody>) -> Reply {
        let started = crate::clock::now();
        let state = self.shared.load();
        let method = req.method().clone();
        let cors = state.config.cors.as_ref();
        let origin = cors.and_then(|_| req.headers().get(ORIGIN).cloned());
        let span = super::server_span(&state, peer.addr.ip(), req.headers(), &method);

        let (mut response, outcome) = self.answer(&state, peer, req, span.as_ref()).await;
        if let Some(cors) = cors.filter(|_| !outcome.preflight) {
            cors.decorate(origin.as_ref(), response.headers_mut());
        }
        let outcome = Outcome {
            listener: "proxy",
            path: outcome.path.as_deref(),
            route: outcome.route,
            refused: outcome.refused.as_ref(),
            subject: outcome.verified.as_deref().and_then(Claims::subject),
            shadow: outcome.shadow.as_ref().map(Option::as_ref),
            span: span.as_ref(),
        };
        access::record(
            &self.metrics,
            &method,
            &outcome,
            response.status().as_u16(),
            started,
        );
        response
    }

    /// The decision order, then forwarding.
    async fn answer<'s>(
        &self,
        state: &'s State,
        peer: Peer,
        req: Request<ClientBody>,
        span: Option<&opentelemetry::Context>,
    ) -> (Reply, Answered<'s>) {
        let mut answered = Answered::default();
        let framing = if super::head_size(&req) > state.config.limits.max_request_header_bytes {
            Err(Refusal::HeadersTooLarge)
        } else {
            check_framing(&req).map_err(Refusal::Malformed)
        };
        let framed = match framing {
            Ok(framed) => framed,
            Err(refusal) => return answered.refused(refusal, state),
        };
        // 1. CORS preflights and RFC 9728 metadata are the gateway's own.
        if let Some(cors) = &state.config.cors
            && Cors::is_preflight(req.method(), req.headers())
        {
            return (
                cors.preflight(req.headers()).into(),
                Answered {
                    preflight: true,
                    ..answered
                },
            );
        }
        if let Some(metadata) = &state.config.resource_metadata
            && matches!(*req.method(), Method::GET | Method::HEAD)
            && req.uri().path() == metadata.path
        {
            let mut response = Response::new(crate::full(metadata.body.clone()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return (response.into(), answered);
        }

        // Whether the peer is a trusted proxy: its forwarded headers count.
        let trusted = state
            .config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(peer.addr.ip()));

        // 2-7. Normalize, route, token, policy.
        let decision = {
            let host = request_host(&req, &framed);
            let question = Question {
                method: req.method(),
                path: req.uri().path(),
                query: req.uri().query(),
                headers: req.headers(),
                host,
                client_ip: Some(headers::client_ip(
                    req.headers(),
                    peer.addr.ip(),
                    &state.config.trusted_proxies,
                )),
                header_overrides: false,
                binding: binding(trusted, &peer, &req, host),
            };
            super::decide(state, &question, span).await
        };
        answered.route = decision.route.map(|r| &r.label);
        answered.path = decision.path;
        // Counted when forwarded; a refusal that is never shadowed (a 400)
        // is just a refusal.
        answered.shadow =
            (decision.shadow_mode && decision.verdict.is_ok()).then(|| decision.shadowed.clone());
        answered.verified = decision.verified.clone();
        let claims = match decision.verdict {
            Ok(claims) => claims,
            Err(refusal) => return answered.refused(refusal, state),
        };

        // 8. Forward, with the path that was authorized.
        let path = answered.path.as_deref().unwrap_or("/");
        let allowed = Allowed {
            path,
            upstream: decision.upstream,
            claims: claims.as_deref(),
            trusted,
            span,
            declared: framed.declared(),
        };
        match self.forward(state, &peer, req, allowed).await {
            Ok(mut response) => {
                if let Some(quota) = decision.quota {
                    quota_headers(response.headers_mut(), &quota);
                }
                (response, answered)
            }
            Err(refusal) => answered.refused(refusal, state),
        }
    }

    /// Sends an allowed request, rewritten, to its upstream.
    async fn forward(
        &self,
        state: &State,
        peer: &Peer,
        req: Request<ClientBody>,
        allowed: Allowed<'_>,
    ) -> Result<Reply, Refusal> {
        // Rewritten outside this future: what the rewrite borrows would
        // otherwise be laid out in every connection's request future.
        let Outbound {
            request,
            added,
            upgrade,
            call,
            watch,
            sent,
            upstream,
            target_state,
        } = outbound(state, peer, req, allowed)?;
        let response = target_state
            .client
            .send(
                request,
                &added,
                upgrade.is_some(),
                upstream.request_timeout,
                &peer.timer,
            )
            .await;
        match &response {
            Ok(response) => call.finish(Ok(response.status().as_u16())),
            Err(UpstreamError::Timeout) => call.finish(Err("timeout")),
            Err(UpstreamError::Unavailable) => call.finish(Err("unavailable")),
        }
        let response = response.map_err(|e| {
            // The client's body failed first: the upstream request was
            // aborted, and the fault is the client's.
            let (kind, refusal) = match (watch.fault(), e) {
                (Some(BodyFault::TooLarge), _) => {
                    (UpstreamErrorKind::BodyTooLarge, Refusal::PayloadTooLarge)
                }
                (Some(BodyFault::TimedOut), _) => {
                    (UpstreamErrorKind::BodyTimeout, Refusal::BodyTimeout)
                }
                (Some(BodyFault::Broken), _) => {
                    return Refusal::Malformed("malformed request body");
                }
                (None, UpstreamError::Unavailable) => {
                    (UpstreamErrorKind::Unavailable, Refusal::UpstreamUnavailable)
                }
                (None, UpstreamError::Timeout) => {
                    (UpstreamErrorKind::Timeout, Refusal::UpstreamTimeout)
                }
            };
            self.metrics.upstream_error(kind);
            refusal
        })?;
        // The upstream refused the gateway's own credential: drop the token
        // (once), and tell the client it is the gateway's fault, without
        // the upstream's challenge.
        if response.status() == http::StatusCode::UNAUTHORIZED
            && let Some(credential) = &target_state.credential
        {
            credential.rejected(sent);
            tracing::warn!(upstream = %upstream.name, "the upstream answered 401 to the gateway's credential");
            return Err(Refusal::UpstreamUnauthorized);
        }
        if let Some(client_side) = upgrade {
            return Ok(tunnel(client_side, response.into_response(), &peer.tunnels).into());
        }
        // The upstream client left the response's hop-by-hop fields (and
        // those its `Connection` names) out as it parsed them.
        Ok(response)
    }
}

/// An allowed request rewritten for its upstream, and what answering it
/// needs once it has been sent.
struct Outbound<'s> {
    request: Request<Body>,
    /// `Host` and `X-Forwarded-*`, written beside the request's map.
    added: headers::Added<'s>,
    /// The client's side of a WebSocket handshake.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The CLIENT span, when traced.
    call: trace::Guard,
    watch: upstream::BodyWatch,
    /// The gateway's own credential, when one was set.
    sent: Option<crate::credentials::Sent>,
    upstream: &'s crate::config::Upstream,
    target_state: &'s crate::state::UpstreamState,
}

/// Rewrites an allowed request for its upstream: origin-form target with
/// the authorized path, hop-by-hop and forgeable headers scrubbed, identity,
/// forwarding and credential headers set, the body guarded.
fn outbound<'s>(
    state: &'s State,
    peer: &'s Peer,
    mut req: Request<ClientBody>,
    allowed: Allowed<'_>,
) -> Result<Outbound<'s>, Refusal> {
    let Allowed {
        path,
        upstream,
        claims,
        trusted,
        span,
        declared,
    } = allowed;
    let config = &state.config;
    // A reload may have removed the upstream under a running listener.
    let Some(index) = upstream else {
        return Err(Refusal::UpstreamUnavailable);
    };
    let (Some(upstream), Some(target_state)) =
        (config.upstreams.get(index), state.upstreams.get(index))
    else {
        return Err(Refusal::UpstreamUnavailable);
    };
    // A WebSocket handshake keeps its upgrade; every other `Upgrade`
    // (h2c above all) is dropped below as hop-by-hop. Without an `Upgrade`
    // field (the framing check's pass saw) it is no handshake.
    let upgrade = (declared.upgrade && headers::is_websocket_upgrade(&req))
        .then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    let max_body = config.limits.max_request_body_bytes;
    if declared.length.flatten().is_some_and(|n| n > max_body) {
        return Err(Refusal::PayloadTooLarge);
    }

    // The Host the client addressed: the absolute-form or :authority
    // wins over the Host header (RFC 9112 §3.2.2).
    let client_host = match parts.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => declared.host,
    };

    let path_and_query = match parts.uri.path_and_query() {
        // Normalization left the path as it came and there is no
        // prefix: the request's own target, shared, not parsed again.
        Some(original) if upstream.path_prefix.is_empty() && original.path() == path => {
            original.clone()
        }
        _ => {
            let query = parts.uri.query();
            let mut target = String::with_capacity(
                upstream.path_prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
            );
            target.push_str(&upstream.path_prefix);
            target.push_str(path);
            if let Some(query) = query {
                target.push('?');
                target.push_str(query);
            }
            PathAndQuery::try_from(target).map_err(|_| Refusal::Malformed("request target"))?
        }
    };
    // Origin-form: the connection is to the upstream already.
    parts.uri = Uri::from(path_and_query);
    parts.version = Version::HTTP_11;

    // A body on a GET or HEAD without a length (chunked, or HTTP/2
    // without content-length) would lose its framing as hop-by-hop
    // and vanish: it is sent chunked, as it came.
    let chunked_body = declared.length.is_none()
        && !http_body::Body::is_end_stream(&body)
        && matches!(parts.method, Method::GET | Method::HEAD);
    let h = &mut parts.headers;
    headers::scrub_request(
        h,
        &headers::Scrub {
            identity: &config.identity,
            trusted,
            credential: target_state.credential.as_ref().map(|c| c.header()),
        },
    );
    headers::join_cookies(h);
    headers::mark_sensitive(h);
    if chunked_body {
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    if upgrade.is_some() {
        headers::restore_websocket_upgrade(h);
    }
    headers::set_identity(h, &config.identity, claims);
    const HTTP: HeaderValue = HeaderValue::from_static("http");
    const HTTPS: HeaderValue = HeaderValue::from_static("https");
    let proto = if peer.tls { HTTPS } else { HTTP };
    let host = match (upstream.preserve_host, &client_host) {
        (true, Some(host)) => host.clone(),
        _ => upstream.host.clone(),
    };
    let added = headers::Added {
        host,
        forwarded: headers::forwarded(h, &peer.address, trusted, proto, client_host),
    };
    // The gateway's own credential, last: the client's copy, in any
    // spelling, was scrubbed above. None valid: 503, nothing forwarded.
    let sent = match (&target_state.credential, &upstream.credential) {
        (Some(credential), _) => {
            credential
                .apply(h)
                .map_err(|e| Refusal::CredentialUnavailable {
                    retry_after: e.retry_after.as_secs().max(1),
                })?
        }
        // A credential is configured but could not be set up (no
        // client for its token endpoint): never forward without it.
        (None, Some(_)) => return Err(Refusal::CredentialUnavailable { retry_after: 5 }),
        (None, None) => None,
    };

    // Traced: the upstream's parent is the gateway's CLIENT span, and
    // the client's own trace headers are replaced.
    let call = trace::Guard::new(state.tracer.as_ref().zip(span).map(|(tracer, parent)| {
        let cx = trace::start(
            tracer,
            Some(parent),
            format!("upstream {}", upstream.name),
            trace::Kind::Client,
            vec![
                KeyValue::new("http.request.method", parts.method.to_string()),
                KeyValue::new("server.address", upstream.authority.host().to_owned()),
            ],
        );
        trace::inject(&cx, &mut parts.headers);
        cx
    }));

    let (body, watch) = upstream::guarded(body, max_body, config.limits.body_timeout);
    Ok(Outbound {
        request: Request::from_parts(parts, body),
        added,
        upgrade,
        call,
        watch,
        sent,
        upstream,
        target_state,
    })
}

/// Answers a WebSocket handshake: when the upstream switched protocols,
/// both upgraded connections are joined and bytes copied both ways until
/// either side closes; the connection that carried the handshake runs the
/// copy (its permit, idle timeout and drain apply). Any other answer goes
/// back as it is.
fn tunnel(
    client_side: hyper::upgrade::OnUpgrade,
    mut response: Response<Body>,
    tunnels: &super::Tunnels,
) -> Response<Body> {
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        return Response::from_parts(parts, body);
    }
    let upstream_side = hyper::upgrade::on(&mut response);
    tunnels.open(Box::pin(async move {
        let (client, upstream) = match tokio::try_join!(client_side, upstream_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!("WebSocket upgrade failed: {e}");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!("WebSocket tunnel ended: {e}");
        }
    }));
    let (mut parts, _) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::restore_websocket_upgrade(&mut parts.headers);
    Response::from_parts(parts, crate::full(""))
}

/// What an allowed request is forwarded with.
struct Allowed<'a> {
    /// The normalized path that was authorized.
    path: &'a str,
    /// An index into `config.upstreams`.
    upstream: Option<usize>,
    claims: Option<&'a Claims>,
    /// The peer is a trusted proxy.
    trusted: bool,
    /// The request's SERVER span, when traced.
    span: Option<&'a opentelemetry::Context>,
    /// The request's `Host` and `Content-Length`, as checked.
    declared: Declared,
}

/// What was learnt while answering, for the log and the metrics.
#[derive(Debug, Default)]
struct Answered<'s> {
    path: Option<String>,
    route: Option<&'s std::sync::Arc<str>>,
    refused: Option<Refusal>,
    /// The verified token's claims, allowed or refused (for the subject).
    verified: Option<Arc<Claims>>,
    /// A CORS preflight, which carries its own CORS headers.
    preflight: bool,
    /// A shadow-mode route: the refusal it did not enforce, if any.
    shadow: Option<Option<Refusal>>,
}

impl<'s> Answered<'s> {
    /// The answer to a refused request, and what was learnt before it.
    fn refused(self, refusal: Refusal, state: &State) -> (Reply, Answered<'s>) {
        (
            respond(&refusal, state.challenge()).into(),
            Answered {
                refused: Some(refusal),
                ..self
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::valid_host;

    #[test]
    fn hosts() {
        for good in [
            "gateway.test",
            "gateway.test:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:443",
            "xn--bcher-kva.example",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "a:",
            "a:b",
            "a:123456",
            "user@host",
            "a b",
            "a/b",
            "[::1",
            "[zz]:1",
            "a\\b",
            "h\"x",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }
}
