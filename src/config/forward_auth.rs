//! `forward_auth:` — the decision endpoint for ingress controllers, and the
//! one ingress convention whose headers carry the question (SPEC §4.1).
//!
//! Pure: depends on `serde`, `serde-saphyr` (spans) and [`crate::route`].

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::raw::Cidr;
use super::{ConfigError, Ctx};

/// The ingress that asks, and so the headers that carry its question.
/// Headers of every other convention are ignored: every ingress passes the
/// client's own headers through, and a client can add any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Convention {
    /// nginx `auth_request`: `X-Original-URI`, `X-Original-Method`.
    Nginx,
    /// ingress-nginx `auth-url`: `X-Original-URL` (absolute), `X-Original-Method`.
    IngressNginx,
    /// Traefik ForwardAuth: `X-Forwarded-Uri`, `X-Forwarded-Method`.
    Traefik,
    /// Caddy `forward_auth`: `X-Forwarded-Uri`, `X-Forwarded-Method`.
    Caddy,
    /// Envoy HTTP `ext_authz` and Gateway API `ExternalAuth` (HTTP): the
    /// request's own method and path, less `path_prefix`.
    Envoy,
}

impl Convention {
    pub const CHOICES: &'static str = "nginx, ingress-nginx, traefik, caddy or envoy";
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    /// The HTTP decision endpoint (nginx, ingress-nginx, Traefik, Caddy,
    /// Envoy HTTP ext_authz).
    pub listen: Option<SocketAddr>,
    /// Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`):
    /// Istio, Envoy Gateway, Gateway API `ExternalAuth` with GRPC.
    pub grpc_listen: Option<SocketAddr>,
    /// Required with `listen`: the ingress that asks (nginx,
    /// ingress-nginx, traefik, caddy, envoy).
    #[schemars(with = "Option<Convention>")]
    pub convention: Option<Spanned<Convention>>,
    /// `envoy` only: a prefix Envoy prepends to the path (`path_prefix` of
    /// its `http_service`), stripped before the question is decided.
    #[schemars(with = "Option<String>")]
    pub path_prefix: Option<Spanned<String>>,
    /// Peers allowed to ask; default loopback only.
    pub trusted_sources: Option<Vec<Cidr>>,
    /// TLS on `grpc_listen` (PEM chain and key).
    #[schemars(with = "Option<super::raw::RawTls>")]
    pub tls: Option<Spanned<super::raw::RawTls>>,
    /// The header in which the ingress passes the client's certificate
    /// (URL-encoded PEM: ingress-nginx `ssl-client-cert`, Envoy
    /// `x-forwarded-client-cert` is not it), for certificate-bound tokens.
    #[schemars(with = "Option<String>")]
    pub client_cert_header: Option<Spanned<String>>,
}

/// The certificate chain and key of the gRPC listener (PEM).
#[derive(Clone)]
pub struct GrpcTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret.
        f.write_str("GrpcTls(…)")
    }
}

/// The decision endpoints for ingress controllers.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// The HTTP endpoint, if any.
    pub listen: Option<SocketAddr>,
    /// The gRPC ext_authz endpoint, if any.
    pub grpc_listen: Option<SocketAddr>,
    /// TLS on the gRPC endpoint: the PEM chain and key, checked at load.
    pub grpc_tls: Option<GrpcTls>,
    pub convention: Convention,
    /// `envoy` only; empty, or `/authz` (whole segments, no trailing `/`).
    pub path_prefix: String,
    /// Peers allowed to ask (default loopback only); others get 403.
    pub trusted_sources: Vec<Cidr>,
    /// Where the client's certificate (URL-encoded PEM) comes from.
    pub client_cert_header: Option<http::HeaderName>,
}

pub(super) fn build(
    ctx: &Ctx<'_>,
    raw: Spanned<RawForwardAuth>,
) -> Result<ForwardAuth, ConfigError> {
    let at = raw.referenced;
    let raw = raw.value;
    if raw.listen.is_none() && raw.grpc_listen.is_none() {
        return Err(ctx.err(
            at,
            "forward_auth",
            "needs listen (HTTP), grpc_listen (Envoy gRPC ext_authz) or both",
        ));
    }
    // The convention says how the HTTP endpoint reads its question; the
    // gRPC one reads Envoy's attributes.
    let convention = match raw.convention {
        Some(c) => c,
        None if raw.listen.is_none() => Spanned {
            value: Convention::Envoy,
            referenced: at,
            defined: at,
        },
        None => {
            return Err(ctx.err(
                at,
                "forward_auth.convention",
                format!(
                    "missing: name the ingress that asks ({}); only its headers are read",
                    Convention::CHOICES
                ),
            ));
        }
    };
    let path_prefix = match raw.path_prefix {
        None => String::new(),
        Some(p) if convention.value != Convention::Envoy => {
            return Err(ctx.err(
                p.referenced,
                "forward_auth.path_prefix",
                "applies only to convention: envoy (the other ingresses send the original URI in a header)",
            ));
        }
        Some(p) => {
            let prefix = p.value.trim_end_matches('/');
            if !p.value.starts_with('/')
                || (!prefix.is_empty() && crate::route::normalize(prefix).as_deref() != Ok(prefix))
            {
                return Err(ctx.err(
                    p.referenced,
                    "forward_auth.path_prefix",
                    "must be a normalized path like /authz",
                ));
            }
            prefix.to_owned()
        }
    };
    let loopback = ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let grpc_tls = match raw.tls {
        None => None,
        Some(t) => {
            let t_at = t.referenced;
            let t = t.value;
            if raw.grpc_listen.is_none() {
                return Err(ctx.err(
                    t_at,
                    "forward_auth.tls",
                    "applies to grpc_listen, which is not set",
                ));
            }
            let cert = ctx.read(
                t.cert_file.referenced,
                "forward_auth.tls.cert_file",
                &t.cert_file.value,
            )?;
            let key = ctx.read(
                t.key_file.referenced,
                "forward_auth.tls.key_file",
                &t.key_file.value,
            )?;
            if let Some(ca) = &t.client_ca_file {
                return Err(ctx.err(
                    ca.referenced,
                    "forward_auth.tls.client_ca_file",
                    "applies to the data plane's `tls` only (the ingress passes the client's certificate in client_cert_header)",
                ));
            }
            crate::tls::server_config(&cert, &key)
                .map_err(|e| ctx.err(t_at, "forward_auth.tls", e.to_string()))?;
            Some(GrpcTls {
                cert_pem: cert,
                key_pem: key,
            })
        }
    };
    let client_cert_header = match raw.client_cert_header {
        None => None,
        Some(h) => Some(
            http::HeaderName::from_bytes(h.value.as_bytes()).map_err(|_| {
                ctx.err(
                    h.referenced,
                    "forward_auth.client_cert_header",
                    format!("{:?} is not a header name", h.value),
                )
            })?,
        ),
    };
    Ok(ForwardAuth {
        listen: raw.listen,
        grpc_listen: raw.grpc_listen,
        grpc_tls,
        convention: convention.value,
        path_prefix,
        trusted_sources: raw.trusted_sources.unwrap_or(loopback),
        client_cert_header,
    })
}
