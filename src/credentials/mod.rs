//! The gateway's own credentials toward upstreams (SPEC §4.3): a static
//! header from the environment or a file, or an OAuth 2.0
//! client-credentials token ([`client_credentials`]) that is fetched once,
//! shared by every request, renewed before it expires by one fetch in
//! flight, and never injected past its expiry.
//!
//! Adapter: depends on reqwest and tokio (token fetches) and the core
//! (the validated [`crate::config::upstream`] credential).

pub mod client_credentials;

use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};

pub use client_credentials::TokenSource;

use crate::config::{Credential, Inject};

/// What an upstream request is given, ready to apply.
#[derive(Debug, Clone)]
pub enum Injector {
    /// A static header (its value sensitive).
    Static {
        name: HeaderName,
        value: HeaderValue,
    },
    /// A client-credentials token, in `Authorization` or another header.
    Token {
        source: Arc<TokenSource>,
        inject: Inject,
    },
}

/// No valid token to inject: 503, `Retry-After` this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable {
    pub retry_after: Duration,
}

/// Which token a request carried, to drop it on the upstream's 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent(pub u64);

impl Injector {
    /// A static injector for a static credential (a token source comes
    /// from the composition root, which keeps it across reloads).
    pub fn from_static(credential: &Credential) -> Option<Injector> {
        match credential {
            Credential::Header { name, value } => Some(Injector::Static {
                name: name.clone(),
                value: value.clone(),
            }),
            Credential::ClientCredentials { .. } => None,
        }
    }

    /// The header the credential goes in.
    pub fn header(&self) -> &HeaderName {
        match self {
            Injector::Static { name, .. } => name,
            Injector::Token {
                inject: Inject::Authorization,
                ..
            } => &AUTHORIZATION,
            Injector::Token {
                inject: Inject::Header(name),
                ..
            } => name,
        }
    }

    /// Sets the credential on an upstream request. The client's copies of
    /// the header, in any spelling, must have been removed first
    /// ([`crate::upstream::headers::Scrub::credential`]).
    pub fn apply(&self, headers: &mut HeaderMap) -> Result<Option<Sent>, Unavailable> {
        match self {
            Injector::Static { name, value } => {
                headers.insert(name.clone(), value.clone());
                Ok(None)
            }
            Injector::Token { source, inject } => {
                let token = source.current()?;
                let value = match inject {
                    Inject::Authorization => token.bearer.clone(),
                    Inject::Header(_) => token.bare.clone(),
                };
                headers.insert(self.header().clone(), value);
                Ok(Some(Sent(token.id)))
            }
        }
    }

    /// The upstream answered 401 to a request that carried `sent`: the
    /// token is dropped (once per token) and a fresh one fetched.
    pub fn rejected(&self, sent: Option<Sent>) {
        if let (Injector::Token { source, .. }, Some(sent)) = (self, sent) {
            source.reject(sent);
        }
    }
}
