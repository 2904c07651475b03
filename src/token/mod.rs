//! Tokens: find the bearer token in a request ([`extract`]), parse the JWS
//! strictly ([`jws`]), verify signature and registered claims against the
//! issuer it names ([`Verifier`]), and expose the verified [`Claims`].
//!
//! Pure core: depends on `http` types, `jsonwebtoken`, `serde_json`,
//! `arc-swap` and [`crate::jwks::keys`]; no sockets, no runtime.

mod cache;
pub mod claims;
pub mod extract;
pub mod jws;
mod verify;

pub use cache::{Cache, CacheStats};
pub use claims::{ClaimName, Claims};
pub use extract::{ExtractError, Source};
pub use verify::{
    Introspect, Introspected, IntrospectionRule, Issuer, KeyCell, Refetch, Verifier, canonical_typ,
};

/// Why a token was refused. A refused token is normal traffic: this is a
/// plain enum, described with fixed strings that never contain the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    TooLarge,
    Malformed,
    AlgNone,
    AlgUnsupported,
    AlgNotAllowed,
    ForbiddenHeader,
    IssuerMissing,
    UnknownIssuer,
    /// The issuer's keys have not been fetched (yet): a 503, not a 401.
    KeysUnavailable,
    UnknownKey,
    BadSignature,
    ExpiryMissing,
    BadClaimType,
    Expired,
    NotYetValid,
    IssuedInFuture,
    IssueTimeMissing,
    TooOld,
    AudienceMissing,
    BadAudience,
    BadType,
    /// A present `sub`, `client_id` or `jti` that is not a string.
    IdClaimNotString,
    /// RFC 9068 strict mode (`require_typ: at+jwt`): a required claim is missing.
    ProfileClaimMissing,
    /// A `cnf` claim: the token is bound to a key or certificate, and
    /// accepting it as a bearer token would drop the binding.
    BoundToken,
    /// The introspection endpoint said `active: false`.
    Inactive,
    /// The route accepts tokens of other issuers only (`routes[].issuers`).
    IssuerNotAccepted,
    /// `cnf.x5t#S256` is not the presented client certificate's.
    CertificateMismatch,
    /// The introspection endpoint is down, slow or answered badly (503).
    IntrospectionUnavailable,
}

impl TokenError {
    /// The `error_description` of the 401.
    pub fn describe(self) -> &'static str {
        use TokenError::*;
        match self {
            TooLarge => "token too large",
            Malformed => "malformed token",
            AlgNone => "unsigned tokens are not accepted",
            AlgUnsupported => "unsupported algorithm",
            AlgNotAllowed => "algorithm not allowed",
            ForbiddenHeader => "token header carries a parameter that is never trusted",
            IssuerMissing => "issuer missing or not a string",
            UnknownIssuer => "unknown issuer",
            IssuerNotAccepted => "this route does not accept tokens of this issuer",
            KeysUnavailable => "signing keys are not available yet",
            UnknownKey => "unknown key",
            BadSignature => "signature invalid",
            ExpiryMissing => "expiry missing",
            BadClaimType => "a time claim is not a number",
            Expired => "token expired",
            NotYetValid => "token not yet valid",
            IssuedInFuture => "token issued in the future",
            IssueTimeMissing => "issue time missing",
            TooOld => "token too old",
            AudienceMissing => "audience missing",
            BadAudience => "audience not allowed",
            BadType => "token type not allowed",
            IdClaimNotString => "sub, client_id or jti is not a string",
            ProfileClaimMissing => "a claim RFC 9068 requires is missing",
            BoundToken => "token's cnf names no binding the gateway can verify",
            CertificateMismatch => {
                "token is bound to a client certificate this connection did not present"
            }
            Inactive => "token is not active",
            IntrospectionUnavailable => "the token cannot be introspected right now",
        }
    }
}
