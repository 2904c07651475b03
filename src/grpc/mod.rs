//! Envoy's gRPC ext_authz (SPEC §4.6): `envoy.service.auth.v3.Authorization/
//! Check`, for Istio (`envoyExtAuthzGrpc`), Envoy Gateway and the Gateway
//! API `ExternalAuth` filter with GRPC. The question is
//! `attributes.request.http` — method, path with query (not decoded),
//! headers (or `header_map` when `headers` is empty), host — decided by the
//! same [`crate::decision::decide`] as the proxy and HTTP forward-auth.
//!
//! - Allow: status `OK`, `ok_response.headers` with the identity headers
//!   (`append: false`: they replace), and `headers_to_remove` with the
//!   identity headers not set (Envoy removes after it adds).
//! - Refusal: always a `CheckResponse` with `denied_response`, never an RPC
//!   error (which `failure_mode_allow` would let through): 401 →
//!   `UNAUTHENTICATED`, 503 → `UNAVAILABLE`, 429 → `RESOURCE_EXHAUSTED`,
//!   everything else → `PERMISSION_DENIED`; the HTTP refusal's status,
//!   headers and JSON body, made by [`crate::reject`].
//! - `trusted_sources` applies to the gRPC connection's peer, never to
//!   `attributes.source`.
//!
//! Adapter: depends on tonic, envoy-types and the core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue as PbHeader,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

pub use envoy_types::ext_authz::v3::pb::AuthorizationServer;

use crate::decision::Question;
use crate::reject::Refusal;
use crate::server::access::{self, Outcome};
use crate::state::Shared;
use crate::telemetry::Metrics;
use crate::token::Claims;

/// The gRPC Check service.
#[derive(Debug)]
pub struct Check {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
}

/// gRPC status codes (google.rpc.Code).
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

/// The HTTP request Envoy describes, as the decision reads it.
struct Described {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    host: String,
    /// `http` or `https`, as the client used it.
    scheme: &'static str,
    /// The `x5t#S256` of `attributes.source.certificate`, if any.
    certificate: Option<String>,
}

/// Reads `attributes.request.http`. Envoy lower-cases header names and
/// joins repeated headers with `,`; pseudo-headers (`:path`…) are skipped.
fn described(request: &CheckRequest) -> Result<Described, &'static str> {
    let http = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or("the check request has no attributes.request.http")?;
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &[u8]| -> Result<(), &'static str> {
        if name.starts_with(':') {
            return Ok(());
        }
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| "a header name is invalid")?;
        let value = HeaderValue::from_bytes(value).map_err(|_| "a header value is invalid")?;
        headers.append(name, value);
        Ok(())
    };
    if http.headers.is_empty() {
        for h in http.header_map.iter().flat_map(|m| &m.headers) {
            let value = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                &h.raw_value
            };
            add(&h.key, value)?;
        }
    } else {
        for (name, value) in &http.headers {
            add(name, value.as_bytes())?;
        }
    }
    let method =
        Method::from_bytes(http.method.as_bytes()).map_err(|_| "the method is not a method")?;
    let (path, query) = match http.path.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (http.path.clone(), None),
    };
    let certificate = request
        .attributes
        .as_ref()
        .and_then(|a| a.source.as_ref())
        .map(|s| s.certificate.as_str())
        .filter(|c| !c.is_empty())
        .and_then(crate::tls::forwarded_certificate_thumbprint);
    Ok(Described {
        method,
        path,
        query,
        headers,
        host: http.host.clone(),
        scheme: if http.scheme.eq_ignore_ascii_case("https") {
            "https"
        } else {
            "http"
        },
        certificate,
    })
}

/// One header to set. `append: false` is set explicitly (SPEC §4.6): the
/// identity headers replace the client's; Envoy still honours the field
/// its protos mark deprecated in favour of `append_action`.
#[allow(deprecated)]
fn header(key: &str, value: &[u8]) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeader {
            key: key.to_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
            ..Default::default()
        }),
        // Set explicitly: the identity headers replace the client's.
        append: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        ..Default::default()
    }
}

fn status(code: i32) -> Option<rpc::Status> {
    Some(rpc::Status {
        code,
        ..Default::default()
    })
}

impl Check {
    async fn answer(&self, peer: Option<SocketAddr>, request: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        let state = self.shared.load();
        let mut route = None;
        let mut subject = None;
        let mut path = None;
        let mut shadow = None;
        let mut span = None;
        // The original request's method, for the access line (the RPC's
        // own until the question is read).
        let mut method = Method::POST;
        let result: Result<(HeaderMap, Vec<String>), Refusal> = async {
            let Some(forward_auth) = &state.config.forward_auth else {
                return Err(Refusal::NotFound);
            };
            // The connection's peer, never attributes.source (the client's).
            let trusted = peer.is_some_and(|p| {
                forward_auth
                    .trusted_sources
                    .iter()
                    .any(|net| net.contains(p.ip()))
            });
            if !trusted {
                return Err(Refusal::UntrustedSource);
            }
            let described = described(request).map_err(Refusal::BadRequest)?;
            method = described.method.clone();
            let client_ip = peer.map(|p| {
                crate::upstream::headers::client_ip(
                    &described.headers,
                    p.ip(),
                    &state.config.trusted_proxies,
                )
            });
            let question = Question {
                method: &described.method,
                path: &described.path,
                query: described.query.as_deref(),
                headers: &described.headers,
                host: Some(described.host.as_str()).filter(|h| !h.is_empty()),
                client_ip,
                header_overrides: true,
                binding: crate::decision::Binding {
                    scheme: described.scheme,
                    host: Some(described.host.as_str()).filter(|h| !h.is_empty()),
                    certificate: described.certificate.as_deref(),
                },
            };
            span = peer.and_then(|p| {
                crate::server::server_span(&state, p.ip(), &described.headers, &described.method)
            });
            let decision = crate::server::decide(&state, &question, span.as_ref()).await;
            path = decision.path;
            route = decision.route.map(|r| r.label.clone());
            subject = decision
                .verified
                .as_deref()
                .and_then(Claims::subject)
                .map(str::to_owned);
            shadow = (decision.shadow_mode && decision.verdict.is_ok())
                .then(|| decision.shadowed.clone());
            let claims = decision.verdict?;
            let mut set = HeaderMap::new();
            crate::upstream::headers::set_identity(
                &mut set,
                &state.config.identity,
                claims.as_deref(),
            );
            let unset = state
                .config
                .identity
                .headers
                .iter()
                .filter(|(name, _)| !set.contains_key(name))
                .map(|(name, _)| name.as_str().to_owned())
                .collect();
            Ok((set, unset))
        }
        .await;
        let (response, status_code, refused) = match result {
            Ok((set, unset)) => {
                let ok = OkHttpResponse {
                    headers: set
                        .iter()
                        .map(|(n, v)| header(n.as_str(), v.as_bytes()))
                        .collect(),
                    headers_to_remove: unset,
                    ..Default::default()
                };
                let response = CheckResponse {
                    status: status(OK),
                    http_response: Some(HttpResponse::OkResponse(ok)),
                    ..Default::default()
                };
                (response, 200, None)
            }
            Err(refusal) => {
                let (http_status, mut headers, body) =
                    crate::reject::parts(&refusal, state.challenge());
                if let Some(cors) = &state.config.cors {
                    let origin = request
                        .attributes
                        .as_ref()
                        .and_then(|a| a.request.as_ref())
                        .and_then(|r| r.http.as_ref())
                        .and_then(|h| h.headers.get("origin"))
                        .and_then(|o| HeaderValue::from_str(o).ok());
                    cors.decorate(origin.as_ref(), &mut headers);
                }
                let code = match http_status {
                    StatusCode::UNAUTHORIZED => UNAUTHENTICATED,
                    StatusCode::SERVICE_UNAVAILABLE => UNAVAILABLE,
                    StatusCode::TOO_MANY_REQUESTS => RESOURCE_EXHAUSTED,
                    _ => PERMISSION_DENIED,
                };
                let denied = DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(http_status.as_u16()),
                    }),
                    headers: headers
                        .iter()
                        .map(|(n, v)| header(n.as_str(), v.as_bytes()))
                        .collect(),
                    body,
                };
                let response = CheckResponse {
                    status: status(code),
                    http_response: Some(HttpResponse::DeniedResponse(denied)),
                    ..Default::default()
                };
                (response, http_status.as_u16(), Some(refusal))
            }
        };
        // The same access line and metrics as the HTTP listeners.
        let outcome = Outcome {
            listener: "grpc",
            path: path.as_deref(),
            route: route.as_ref(),
            refused: refused.as_ref(),
            subject: subject.as_deref(),
            shadow: shadow.as_ref().map(Option::as_ref),
            span: span.as_ref(),
        };
        access::record(&self.metrics, &method, &outcome, status_code, started);
        response
    }
}

#[tonic::async_trait]
impl Authorization for Check {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = request.remote_addr();
        Ok(tonic::Response::new(
            self.answer(peer, request.get_ref()).await,
        ))
    }
}

/// Serves Check on `listener` until `shutdown` resolves, over TLS when
/// `forward_auth.tls` is set (read at start: a new certificate needs a
/// restart on this listener).
pub async fn serve(
    listener: tokio::net::TcpListener,
    check: Check,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let tls = check
        .shared
        .load()
        .config
        .forward_auth
        .as_ref()
        .and_then(|f| f.grpc_tls.clone());
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        let identity = tonic::transport::Identity::from_pem(tls.cert_pem, tls.key_pem);
        builder =
            match builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity)) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("gRPC ext_authz TLS: {e}");
                    return;
                }
            };
    }
    let result = builder
        .add_service(AuthorizationServer::new(check))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = result {
        tracing::error!("gRPC ext_authz listener: {e}");
    }
}
