//! Sender-constrained tokens (SPEC §4.8): DPoP proofs (RFC 9449) and
//! certificate-bound tokens (RFC 8705). A token with `cnf.jkt` is accepted
//! only with a proof signed by that key, for this request; a token with
//! `cnf.x5t#S256` only over a connection whose client certificate has that
//! SHA-256 thumbprint.
//!
//! Pure: depends on [`crate::jwks`] and [`crate::token::jws`] (the JOSE
//! primitives), aws-lc-rs (SHA-256) and `serde_json`; the replay cache is in
//! [`replay`].

pub mod replay;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::jwks::{KeySet, parse_alg};

/// `dpop.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Bound tokens must prove; unbound bearer tokens still work.
    #[default]
    Allowed,
    /// Every token must come with a valid DPoP proof.
    Required,
    /// DPoP is not accepted: bound tokens are refused.
    Off,
}

/// An issuer's (or a route's) DPoP settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    /// Seconds a proof is accepted after its `iat` (plus the clock skew).
    pub max_age: i64,
    /// Asymmetric algorithms a proof may be signed with.
    pub algorithms: Vec<Algorithm>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Allowed,
            max_age: 60,
            algorithms: ASYMMETRIC.to_vec(),
        }
    }
}

/// Every asymmetric algorithm the gateway verifies.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The `algs` of a `DPoP` challenge: `ES256 EdDSA`.
pub fn algs(settings: &Settings) -> String {
    settings
        .algorithms
        .iter()
        .map(|a| match a {
            Algorithm::EdDSA => "EdDSA".to_owned(),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a proof must be bound to: this request and this token.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub method: &'a http::Method,
    /// `scheme://host[:port]/path` as the client used them, normalized
    /// ([`request_htu`]).
    pub htu: &'a str,
    /// How the gateway normalizes paths (the proof's `htu` path alike).
    pub semicolons: crate::route::Semicolons,
    pub token: &'a str,
}

/// A valid proof: its key's thumbprint and its `jti`, for the replay cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
    pub jti: String,
}

/// Private members a public JWK must not carry (RFC 7517 §9.3, RFC 9449
/// §4.3: the proof's key is public).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Header parameters a proof must not use: extensions we do not honour,
/// or keys fetched from elsewhere.
const FORBIDDEN_HEADERS: [&str; 5] = ["crit", "jku", "x5u", "x5c", "kid"];

/// Checks a `DPoP` proof (RFC 9449 §4.3) against the request; the error is
/// the 401's `error_description`. The replay check is the caller's.
pub fn verify(
    proof: &str,
    expected: &Expected<'_>,
    settings: &Settings,
    skew: i64,
    now: i64,
) -> Result<Proof, &'static str> {
    let mut parts = proof.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the DPoP proof is not a compact JWS");
    };
    let decode = |s: &str| {
        (!s.is_empty())
            .then(|| URL_SAFE_NO_PAD.decode(s).ok())
            .flatten()
            .ok_or("the DPoP proof is not a compact JWS")
    };
    let header = crate::token::jws::strict_object(&decode(header)?)
        .map_err(|_| "the DPoP proof's header is not a JSON object")?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err("the DPoP proof's typ is not dpop+jwt");
    }
    if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return Err("the DPoP proof's header has a parameter that is not accepted");
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(parse_alg)
        .filter(|alg| ASYMMETRIC.contains(alg) && settings.algorithms.contains(alg))
        .ok_or("the DPoP proof's alg is not an accepted asymmetric algorithm")?;
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err("the DPoP proof has no jwk");
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err("the DPoP proof's jwk holds a private key");
    }
    let key = KeySet::key_from_jwk(&Value::Object(jwk.clone()))
        .map_err(|_| "the DPoP proof's jwk is not a usable public key")?;
    if !key.fits(alg, None) {
        return Err("the DPoP proof's jwk does not fit its alg");
    }
    let signature = decode(signature)?;
    let signing_input = &proof[..proof.rfind('.').unwrap_or(0)];
    if !key.verify(signing_input.as_bytes(), &signature, alg) {
        return Err("the DPoP proof's signature is invalid");
    }
    let claims = crate::token::jws::strict_object(&decode(payload)?)
        .map_err(|_| "the DPoP proof's payload is not a JSON object")?;
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or("the DPoP proof has no jti")?;
    if claims.get("htm").and_then(Value::as_str) != Some(expected.method.as_str()) {
        return Err("the DPoP proof's htm is not the request method");
    }
    let htu_matches = claims
        .get("htu")
        .and_then(Value::as_str)
        .and_then(|u| canonical(u, None, expected.semicolons))
        .is_some_and(|u| u == expected.htu);
    if !htu_matches {
        return Err("the DPoP proof's htu is not the request URI");
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("the DPoP proof has no iat")?;
    if iat > now.saturating_add(skew) || now.saturating_sub(iat) > settings.max_age + skew {
        return Err("the DPoP proof's iat is outside the accepted window");
    }
    if claims.get("ath").and_then(Value::as_str) != Some(ath(expected.token).as_str()) {
        return Err("the DPoP proof's ath is not the access token's hash");
    }
    let jkt = thumbprint(jwk).ok_or("the DPoP proof's jwk has no thumbprint")?;
    Ok(Proof {
        jkt,
        jti: jti.to_owned(),
    })
}

/// `ath`: the base64url SHA-256 of the access token (RFC 9449 §4.2).
pub fn ath(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The RFC 7638 thumbprint of a public JWK (SHA-256, base64url).
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str)? {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, name) in members.iter().enumerate() {
        let value = jwk.get(*name)?.as_str()?;
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&serde_json::to_string(name).ok()?);
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(value).ok()?);
    }
    canonical.push('}');
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Some(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// The `x5t#S256` of a DER certificate (RFC 8705 §3.1).
pub fn certificate_thumbprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The `htu` a request's proof must carry: the scheme and host the client
/// used, and the gateway's normalized path, in canonical form (see `canonical`).
pub fn request_htu(scheme: &str, host: &str, normalized_path: &str) -> Option<String> {
    canonical(
        &format!("{scheme}://{host}/"),
        Some(normalized_path),
        crate::route::Semicolons::Reject,
    )
}

/// A URI as `htu` is compared (RFC 9449 §4.3, RFC 3986 §6.2.2 and
/// §6.2.3): scheme and host lower-cased, the default port dropped, the
/// path normalized as the gateway normalizes request paths, query and
/// fragment left out. `path`: an already normalized path to use instead
/// of the URI's own. `None` for anything but an absolute http(s) URI.
fn canonical(
    uri: &str,
    path: Option<&str>,
    semicolons: crate::route::Semicolons,
) -> Option<String> {
    let uri = uri.split('#').next()?;
    let parsed: http::Uri = uri.parse().ok()?;
    let scheme = parsed.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = parsed.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let port = parsed.port_u16().filter(|p| *p != default_port);
    let path = match path {
        Some(p) => p.to_owned(),
        None => crate::route::normalize_with(parsed.path(), semicolons).ok()?,
    };
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}{path}"),
        None => format!("{scheme}://{host}{path}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Semicolons;
    use serde_json::json;

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // RFC 7638 §3.1's example key and thumbprint.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(jwk.as_object().expect("object")).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        assert_eq!(
            thumbprint(json!({"kty": "oct", "k": "x"}).as_object().expect("o")),
            None
        );
    }

    #[test]
    fn htu_is_compared_normalized() {
        let same = [
            "https://api.example.com/a/b",
            "HTTPS://API.example.com:443/a/b",
            "https://api.example.com/a/./b?x=1",
            "https://api.example.com/a/%62#frag",
        ];
        for uri in same {
            assert_eq!(
                canonical(uri, None, Semicolons::Reject).as_deref(),
                Some("https://api.example.com/a/b"),
                "{uri}"
            );
        }
        assert_eq!(
            request_htu("http", "127.0.0.1:8080", "/x").as_deref(),
            Some("http://127.0.0.1:8080/x")
        );
        assert_eq!(
            request_htu("https", "API.example.com:443", "/a/b").as_deref(),
            Some("https://api.example.com/a/b")
        );
        for bad in [
            "/a/b",
            "ftp://h/a",
            "https://user@h/a",
            "https://h/a/%2e%2e/../..",
        ] {
            assert_eq!(canonical(bad, None, Semicolons::Reject), None, "{bad}");
        }
    }
}
