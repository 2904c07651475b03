//! scopegate: an authorization gateway in front of an unmodified API.
//!
//! # The life of a request
//!
//! Each of the `workers` event loops ([`app::serve`]: a thread with a
//! current-thread runtime and its own `SO_REUSEPORT` socket per address)
//! runs a request from start to end. [`server`] accepts a connection
//! (bounded by `max_connections`, counted over the workers), reads each
//! request (HTTP/1.1 without a body by the gateway's own codec,
//! `server::h1`; anything else by hyper's server, which takes the
//! connection over) and hands it to [`server::proxy`] or
//! [`server::forward_auth`] (and
//! [`grpc`] serves Envoy's ext_authz `Check`); each loads
//! the current [`state::State`] once, refuse malformed framing, and ask
//! [`decision::decide`] — the SPEC's decision order as one function:
//! normalize the path by the config's `paths:` rules ([`route::normalize_with`]),
//! look it up in the [`route::Table`] (404 / 405) under the request's method
//! and any `_method` override, find the token ([`token::extract`]), verify
//! it ([`token::Verifier`] with keys from [`jwks`]), hold a
//! sender-constrained token to its binding ([`dpop`]: a DPoP proof, a
//! client certificate), check the route's
//! [`policy`], then take one request from the rule's [`quota`] (per
//! process, or in Redis); an opaque token is asked of its issuer's
//! [`introspect`]ion endpoint, and a shadow-mode route reports a 401/403
//! instead of enforcing it. The forward-auth listener first reads the
//! question from its one configured ingress convention. A refusal becomes
//! a response in [`reject`] only; an allowed request is rewritten by
//! [`upstream::headers`], given the gateway's own credential toward its
//! upstream ([`credentials`]: a static header, or a client-credentials
//! token) and forwarded by that upstream's [`upstream::Client`] (a pool of
//! HTTP/1.1 connections, spoken by the gateway's own codec `upstream::h1`
//! in the task of the request using each)
//! with the normalized path, its body guarded (size, stalls, the client's
//! own framing errors). The answer goes back as a [`reply::Reply`]: an
//! upstream's fields stay the lines it sent until something needs them in
//! a map. A WebSocket tunnel is run by the connection that
//! carried its handshake. With `tracing:`, [`telemetry::trace`] gives the
//! request a SERVER span (continuing a trusted proxy's `traceparent`), the
//! decision an `authorize` span and every outgoing call a CLIENT span.
//!
//! # Dependency rules
//!
//! The pure core — [`config`] (one module per section; routes may also
//! come from an OpenAPI document through [`openapi`]), [`route`],
//! [`policy`], [`token`], [`jwks::keys`], [`dpop`] (but its replay cache), [`decision`], [`reject`],
//! [`cors`], [`reply`], [`upstream::headers`], `upstream::h1`, `server::h1`'s codec,
//! the wire pieces they share (`http1`) and the per-poll [`clock`] — knows
//! nothing of sockets or the runtime; [`quota`]'s arithmetic and local store are pure too. Adapters
//! — [`jwks::fetch`], [`credentials`], [`introspect`], [`quota::redis`],
//! [`grpc`], [`upstream`],
//! [`server`], [`admin`], [`reload`], [`telemetry`] — depend on the core,
//! never the
//! reverse, and never on [`app`]: the composition root hands [`admin`] an
//! [`admin::Admin`] (state and metrics) and [`reload`] a [`reload::Reload`]
//! handle. [`cli`] only parses and dispatches.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cors;
pub mod credentials;
pub mod decision;
pub mod devtools;
pub mod dpop;
pub mod grpc;
mod http1;
pub mod introspect;
pub mod jwks;
pub mod openapi;
pub mod policy;
pub mod quota;
pub mod reject;
pub mod reload;
pub mod reply;
pub mod route;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod upstream;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Errors carried by streaming bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type on both sides of the proxy: streamed, never buffered whole.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body with fixed content (refusals, test servers).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Seconds since the Unix epoch (token times are compared in seconds), by
/// the [`clock`].
pub fn now() -> i64 {
    i64::try_from(clock::since_epoch().as_secs()).unwrap_or(i64::MAX)
}
