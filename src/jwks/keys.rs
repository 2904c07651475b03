//! Verification keys: parsed once from a JWKS document, a PEM public key or
//! a shared secret, each tagged with the one key type (and curve) it is.
//!
//! Pure: depends on `jsonwebtoken` (PEM parsing), aws-lc-rs (the
//! signature primitives, with keys parsed once) and `serde_json`.

use std::sync::{Arc, OnceLock};

use aws_lc_rs::hmac;
use aws_lc_rs::signature::ParsedPublicKey;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;

/// A key's type, including the curve: what decides which `alg` may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

/// The key kind an algorithm needs (`None`: an algorithm we never verify).
pub fn kind_for(alg: Algorithm) -> Option<KeyKind> {
    use Algorithm::*;
    Some(match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => KeyKind::Rsa,
        ES256 => KeyKind::EcP256,
        ES384 => KeyKind::EcP384,
        EdDSA => KeyKind::Ed25519,
        HS256 | HS384 | HS512 => KeyKind::Hmac,
        _ => return None,
    })
}

/// Parses a JWS `alg` name exactly (case-sensitive, RFC 7518). RFC 9864's
/// fully-specified `Ed25519` names the only EdDSA curve we verify, so it
/// is the same algorithm as `EdDSA` (token header, JWK `alg`, config).
pub fn parse_alg(name: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" | "Ed25519" => EdDSA,
        "HS256" => HS256,
        "HS384" => HS384,
        "HS512" => HS512,
        _ => return None,
    })
}

/// One usable verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's own `alg`, which a token's `alg` must then equal.
    pub alg: Option<Algorithm>,
    /// Keys from `public_key_file` / `hs256_secret_env` verify whatever the `kid`.
    pub any_kid: bool,
    /// RSA: PKCS#1 `RSAPublicKey` DER; EC: the uncompressed point; Ed25519:
    /// the 32 bytes; HMAC: the secret.
    material: Arc<[u8]>,
    /// One verifier per algorithm the key may serve, parsed on first use
    /// and kept: a verification never parses the key again.
    verifiers: [OnceLock<Option<Verifier>>; 6],
}

fn hmac_verifier(algorithm: hmac::Algorithm, secret: &[u8]) -> Verifier {
    Verifier::Hmac(Box::new(hmac::Key::new(algorithm, secret)))
}

/// A key made ready for one algorithm.
#[derive(Clone)]
enum Verifier {
    Public(ParsedPublicKey),
    // Boxed: an HMAC key is much larger than a parsed public key.
    Hmac(Box<hmac::Key>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (an HMAC secret above all).
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn new(
        kid: Option<String>,
        kind: KeyKind,
        alg: Option<Algorithm>,
        any_kid: bool,
        material: Vec<u8>,
    ) -> Key {
        Key {
            kid,
            kind,
            alg,
            any_kid,
            material: material.into(),
            verifiers: Default::default(),
        }
    }

    /// Where an algorithm's verifier is kept.
    fn slot(alg: Algorithm) -> usize {
        use Algorithm::*;
        match alg {
            RS384 | HS384 => 1,
            RS512 | HS512 => 2,
            PS256 => 3,
            PS384 => 4,
            PS512 => 5,
            _ => 0,
        }
    }

    fn build(&self, alg: Algorithm) -> Option<Verifier> {
        use Algorithm::*;
        use aws_lc_rs::signature as sig;
        let public: &'static dyn sig::VerificationAlgorithm = match alg {
            RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            PS256 => &sig::RSA_PSS_2048_8192_SHA256,
            PS384 => &sig::RSA_PSS_2048_8192_SHA384,
            PS512 => &sig::RSA_PSS_2048_8192_SHA512,
            ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            EdDSA => &sig::ED25519,
            HS256 => {
                return Some(hmac_verifier(hmac::HMAC_SHA256, &self.material));
            }
            HS384 => {
                return Some(hmac_verifier(hmac::HMAC_SHA384, &self.material));
            }
            HS512 => {
                return Some(hmac_verifier(hmac::HMAC_SHA512, &self.material));
            }
            _ => return None,
        };
        ParsedPublicKey::new(public, &*self.material)
            .ok()
            .map(Verifier::Public)
    }

    /// Checks a raw signature over `message`. The key must already fit the
    /// `alg` ([`Key::fits`]); this only runs the primitive.
    pub fn verify(&self, message: &[u8], signature: &[u8], alg: Algorithm) -> bool {
        if kind_for(alg) != Some(self.kind) {
            return false;
        }
        match self.verifiers[Self::slot(alg)].get_or_init(|| self.build(alg)) {
            Some(Verifier::Public(key)) => key.verify_sig(message, signature).is_ok(),
            // Constant-time comparison.
            Some(Verifier::Hmac(key)) => hmac::verify(key, message, signature).is_ok(),
            None => false,
        }
    }

    /// Whether this key may verify a token with this header.
    pub fn fits(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        if kind_for(alg) != Some(self.kind) || self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        self.any_kid || kid.is_none() || self.kid.as_deref() == kid
    }
}

/// The keys of one issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    /// Keys in the document that were skipped, with the reason (for logs).
    pub skipped: Vec<String>,
}

/// Why a key source could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a JWK Set: {0}")]
    NotJwks(String),
    #[error("the JWK Set has no usable signing key ({0})")]
    NoUsableKey(String),
    #[error("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)")]
    NotPem,
    #[error("a shared secret cannot verify {0:?}")]
    NotHmac(Algorithm),
    #[error("the secret is shorter than the {needed} bytes {alg:?} needs")]
    ShortSecret { alg: Algorithm, needed: usize },
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

/// The JWK members the gateway reads; everything else is ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// RSA moduli below this are refused (RFC 7518 §3.3 requires 2048).
const MIN_RSA_BITS: usize = 2048;

impl KeySet {
    pub fn new(keys: Vec<Key>) -> Self {
        KeySet {
            keys,
            skipped: Vec::new(),
        }
    }

    /// Parses a JWKS document. Keys that cannot verify signatures (`oct`,
    /// `use: enc`, unknown types, weak or malformed material) are skipped;
    /// a document with no usable key at all is an error.
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeyError> {
        let doc: Jwks =
            serde_json::from_slice(json).map_err(|e| KeyError::NotJwks(e.to_string()))?;
        let mut set = KeySet::default();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            // Named by `kid` when it has one (what an operator searches the
            // JWKS for), by position otherwise.
            let name = match raw.get("kid").and_then(serde_json::Value::as_str) {
                Some(kid) => format!("key {kid:?}"),
                None => format!("key #{i} (no kid)"),
            };
            match serde_json::from_value::<Jwk>(raw)
                .map_err(|e| e.to_string())
                .and_then(|jwk| Key::from_jwk(&jwk))
            {
                Ok(key) => set.keys.push(key),
                Err(why) => set.skipped.push(format!("{name}: {why}")),
            }
        }
        if set.keys.is_empty() {
            let why = if set.skipped.is_empty() {
                "empty".to_owned()
            } else {
                set.skipped.join("; ")
            };
            return Err(KeyError::NoUsableKey(why));
        }
        Ok(set)
    }

    /// One JWK given as JSON (a DPoP proof's `jwk`): the key, or why it
    /// cannot verify signatures.
    pub fn key_from_jwk(value: &serde_json::Value) -> Result<Key, String> {
        let jwk: Jwk = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        Key::from_jwk(&jwk)
    }

    /// One PEM public key, used whatever the token's `kid`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = |k: &DecodingKey| match k.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => bytes.clone(),
            DecodingKeyKind::RsaModulusExponent { n, e } => rsa_public_key_der(n, e),
        };
        let (material, kind) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            (der(&k), KeyKind::Rsa)
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            // The key is the uncompressed point 04 || x || y.
            let point = der(&k);
            let kind = match point.len() {
                65 => KeyKind::EcP256,
                97 => KeyKind::EcP384,
                _ => return Err(KeyError::NotPem),
            };
            if !on_curve(kind, &point) {
                return Err(KeyError::NotPem);
            }
            (point, kind)
        } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            (der(&k), KeyKind::Ed25519)
        } else {
            return Err(KeyError::NotPem);
        };
        Ok(KeySet::new(vec![Key::new(
            None, kind, None, true, material,
        )]))
    }

    /// A shared HMAC secret, used whatever the token's `kid`. RFC 7518
    /// §3.2: the secret must be at least as long as the hash of every
    /// algorithm it may verify.
    pub fn from_secret(secret: &[u8], algorithms: &[Algorithm]) -> Result<Self, KeyError> {
        for alg in algorithms {
            let needed = match alg {
                Algorithm::HS256 => 32,
                Algorithm::HS384 => 48,
                Algorithm::HS512 => 64,
                other => return Err(KeyError::NotHmac(*other)),
            };
            if secret.len() < needed {
                return Err(KeyError::ShortSecret { alg: *alg, needed });
            }
        }
        Ok(KeySet::new(vec![Key::new(
            None,
            KeyKind::Hmac,
            None,
            true,
            secret.to_vec(),
        )]))
    }

    /// The keys that may verify a token with this `alg` and `kid`.
    pub fn candidates<'s>(
        &'s self,
        alg: Algorithm,
        kid: Option<&'s str>,
    ) -> impl Iterator<Item = &'s Key> + 's {
        self.keys.iter().filter(move |k| k.fits(alg, kid))
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn b64(field: &str, value: Option<&String>) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let value = value.ok_or_else(|| format!("missing {field:?}"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("{field:?} is not base64url"))
}

impl Key {
    fn from_jwk(jwk: &Jwk) -> Result<Key, String> {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err("\"use\" is not \"sig\"".into());
        }
        if jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|o| o == "verify"))
        {
            return Err("\"key_ops\" does not allow \"verify\"".into());
        }
        let alg = match jwk.alg.as_deref() {
            None => None,
            Some(name) => Some(parse_alg(name).ok_or_else(|| format!("unsupported alg {name:?}"))?),
        };
        let (kind, material) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => {
                let n = b64("n", jwk.n.as_ref())?;
                let e = b64("e", jwk.e.as_ref())?;
                let n = strip_leading_zeros(&n);
                let e = strip_leading_zeros(&e);
                // An empty modulus (`"n":"AA"`) has no bits; never underflow.
                let bits = match n.first() {
                    Some(first) => n.len() * 8 - first.leading_zeros() as usize,
                    None => 0,
                };
                if bits < MIN_RSA_BITS {
                    return Err(format!("RSA modulus of {bits} bits is too small"));
                }
                if e.len() > 4 || e.last().is_none_or(|b| b & 1 == 0) || e == [1] {
                    return Err("RSA public exponent is invalid".into());
                }
                if roca_fingerprint(n) {
                    return Err("RSA modulus has the ROCA fingerprint (CVE-2017-15361)".into());
                }
                (KeyKind::Rsa, rsa_public_key_der(n, e))
            }
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let (kind, len) = if crv == "P-256" {
                    (KeyKind::EcP256, 32)
                } else {
                    (KeyKind::EcP384, 48)
                };
                let x = b64("x", jwk.x.as_ref())?;
                let y = b64("y", jwk.y.as_ref())?;
                if x.len() != len || y.len() != len {
                    return Err(format!("{crv} coordinates must be {len} bytes"));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                if !on_curve(kind, &point) {
                    return Err("EC point is not on the curve".into());
                }
                (kind, point)
            }
            ("OKP", Some("Ed25519")) => {
                let x = b64("x", jwk.x.as_ref())?;
                if x.len() != 32 {
                    return Err("Ed25519 key must be 32 bytes".into());
                }
                (KeyKind::Ed25519, x)
            }
            ("oct", _) => return Err("symmetric (oct) keys are never taken from a JWKS".into()),
            (kty, crv) => return Err(format!("unsupported key type {kty:?} / curve {crv:?}")),
        };
        if let Some(alg) = alg
            && kind_for(alg) != Some(kind)
        {
            return Err(format!("alg {alg:?} does not fit a {kind:?} key"));
        }
        Ok(Key::new(jwk.kid.clone(), kind, alg, false, material))
    }
}

/// The ROCA test (Nemec et al., CCS 2017): moduli generated by the
/// vulnerable Infineon library are, modulo each of these small primes, in
/// the subgroup generated by 65537. A random modulus passes all of them with
/// negligible probability.
fn roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = n
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % p);
        let generator = 65_537 % p;
        let mut power = 1;
        for _ in 0..p {
            if power == residue {
                return true;
            }
            power = power * generator % p;
        }
        false
    })
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn length(len: usize, out: &mut Vec<u8>) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    fn integer(value: &[u8], out: &mut Vec<u8>) {
        let value = strip_leading_zeros(value);
        // A leading high bit would make the INTEGER negative.
        let pad = value.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        length(value.len() + usize::from(pad), out);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(value);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(n, &mut body);
    integer(e, &mut body);
    let mut der = Vec::with_capacity(body.len() + 4);
    der.push(0x30);
    length(body.len(), &mut der);
    der.extend_from_slice(&body);
    der
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Checks an uncompressed point at load time, so that an off-curve key is
/// refused with a reason instead of failing every verification later.
fn on_curve(kind: KeyKind, point: &[u8]) -> bool {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ParsedPublicKey};
    let alg = match kind {
        KeyKind::EcP256 => &ECDSA_P256_SHA256_FIXED,
        KeyKind::EcP384 => &ECDSA_P384_SHA384_FIXED,
        _ => return false,
    };
    ParsedPublicKey::new(alg, point).is_ok()
}
