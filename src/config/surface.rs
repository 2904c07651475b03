//! `cors:` and `resource_metadata:` — what browsers and OAuth clients are
//! told about the API, built once at load time.
//!
//! Pure: depends on [`crate::cors`], [`crate::route`] and `serde_json`.

use http::HeaderName;
use http::uri::Uri;
use serde_saphyr::Spanned;

use super::{ConfigError, Ctx, raw};
use crate::route;
use crate::token::Source;

/// RFC 9728 protected-resource metadata, rendered once at load time.
#[derive(Debug, Clone)]
pub struct ResourceMetadata {
    /// Where the data plane serves it (`/.well-known/oauth-protected-resource[/path]`).
    pub path: String,
    /// The JSON document.
    pub body: String,
}

pub(super) fn build_cors(
    ctx: &Ctx<'_>,
    raw: Spanned<raw::RawCors>,
) -> Result<crate::cors::Cors, ConfigError> {
    let at = raw.referenced;
    let raw = raw.value;
    let origins = raw.allowed_origins.value;
    if origins.is_empty() {
        return Err(ctx.err(
            raw.allowed_origins.referenced,
            "cors.allowed_origins",
            "lists no origin",
        ));
    }
    for origin in &origins {
        let valid = origin == "*"
            || origin.parse::<Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some()
                    && origin.matches('/').count() == 2
            });
        if !valid {
            return Err(ctx.err(
                raw.allowed_origins.referenced,
                "cors.allowed_origins",
                format!("{origin:?} is not an origin like https://app.example.com (scheme and host, no path) or \"*\""),
            ));
        }
    }
    for header in &raw.allowed_headers.value {
        if HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(ctx.err(
                raw.allowed_headers.referenced,
                "cors.allowed_headers",
                format!("{header:?} is not a header name"),
            ));
        }
    }
    let credentials = raw.allow_credentials;
    if credentials.value && origins.iter().any(|o| o == "*") {
        return Err(ctx.err(
            credentials.referenced,
            "cors.allow_credentials",
            "cannot be used with \"*\": list the origins that may send credentials",
        ));
    }
    let methods = raw.allowed_methods.into_iter().map(|m| m.0).collect();
    crate::cors::Cors::new(
        origins,
        methods,
        raw.allowed_headers.value,
        raw.max_age.0,
        credentials.value,
    )
    .ok_or_else(|| ctx.err(at, "cors", "cannot be turned into CORS headers"))
}

/// Returns the metadata URL (for challenges) and the document.
pub(super) fn build_resource_metadata(
    ctx: &Ctx<'_>,
    raw: Spanned<raw::RawResourceMetadata>,
    routes: &route::Table,
    sources: &[Source],
) -> Result<(String, ResourceMetadata), ConfigError> {
    let raw = raw.value;
    let at = raw.resource.referenced;
    let resource = raw.resource.value;
    let uri: Uri = resource
        .parse()
        .map_err(|_| ctx.err(at, "resource_metadata.resource", "not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(ctx.err(
            at,
            "resource_metadata.resource",
            "must be an absolute https:// URL",
        ));
    };
    if uri.query().is_some() || resource.contains('#') {
        return Err(ctx.err(
            at,
            "resource_metadata.resource",
            "must not have a query or fragment (RFC 9728 §1.2)",
        ));
    }
    // RFC 9728 §3.1: the well-known segment goes between host and path.
    let suffix = uri.path().trim_end_matches('/');
    let path = format!("/.well-known/oauth-protected-resource{suffix}");
    let url = format!("{scheme}://{authority}{path}");
    let mut scopes: Vec<&str> = routes
        .routes()
        .iter()
        .flat_map(|r| &r.rules)
        .flat_map(|rule| rule.policy.scopes().iter().chain(rule.policy.any_scope()))
        .map(String::as_str)
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    let mut methods = vec!["header"];
    if sources.iter().any(|s| matches!(s, Source::Query(_))) {
        methods.push("query");
    }
    let mut doc = serde_json::json!({
        "resource": resource,
        "authorization_servers": raw.authorization_servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": methods,
    });
    if let Some(name) = raw.resource_name {
        doc["resource_name"] = name.into();
    }
    Ok((
        url,
        ResourceMetadata {
            path,
            body: doc.to_string(),
        },
    ))
}
