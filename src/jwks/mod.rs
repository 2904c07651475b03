//! Key sets per issuer: parsing JWKS / PEM / secrets into verification keys
//! ([`keys`], pure) and fetching remote JWKS documents ([`fetch`], an
//! adapter on reqwest and tokio that fills the issuers' key cells).

pub mod fetch;
pub mod keys;

pub use keys::{Key, KeyError, KeyKind, KeySet, kind_for, parse_alg};
