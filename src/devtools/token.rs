//! `scopegate token`: signs a development token with a private key PEM.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// What to put in a minted token.
#[derive(Debug, Clone, Default)]
pub struct Mint {
    pub alg: Option<Algorithm>,
    pub kid: Option<String>,
    pub iss: Option<String>,
    pub aud: Option<String>,
    pub sub: Option<String>,
    pub scope: Option<String>,
    /// Extra claims; values that parse as JSON are taken as JSON.
    pub claims: Vec<(String, String)>,
    /// Seconds from now until `exp`; negative mints an expired token.
    pub ttl: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the key is not a PKCS#8 or PKCS#1 private key PEM (RSA, EC P-256/P-384 or Ed25519)")]
    BadKey,
    #[error("the key cannot sign {0:?}")]
    WrongAlg(Algorithm),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs a token. Without `alg`, the first algorithm the key can sign with
/// is used (RS256, ES256, ES384, EdDSA).
pub fn mint(pem: &[u8], m: &Mint) -> Result<String, MintError> {
    let candidates: Vec<(Algorithm, EncodingKey)> = [
        (Algorithm::RS256, EncodingKey::from_rsa_pem(pem).ok()),
        (Algorithm::ES256, EncodingKey::from_ec_pem(pem).ok()),
        (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem).ok()),
    ]
    .into_iter()
    .filter_map(|(alg, key)| key.map(|k| (alg, k)))
    .collect();
    let (default_alg, key) = candidates.into_iter().next().ok_or(MintError::BadKey)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut claims = Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            claims.insert(k.to_owned(), Value::String(v.clone()));
        }
    };
    put("iss", &m.iss);
    put("aud", &m.aud);
    put("sub", &m.sub);
    put("scope", &m.scope);
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + m.ttl).into());
    for (k, v) in &m.claims {
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
        claims.insert(k.clone(), value);
    }
    let try_sign = |alg: Algorithm| {
        let mut header = Header::new(alg);
        header.kid = m.kid.clone();
        jsonwebtoken::encode(&header, &claims, &key)
    };
    match m.alg {
        Some(alg) => try_sign(alg).map_err(|_| MintError::WrongAlg(alg)),
        // An EC key does not say its curve up front: try P-256, then P-384.
        None if default_alg == Algorithm::ES256 => try_sign(Algorithm::ES256)
            .or_else(|_| try_sign(Algorithm::ES384))
            .map_err(MintError::from),
        None => Ok(try_sign(default_alg)?),
    }
}

/// Mints `count` tokens that differ by their `jti` (load tests that must
/// defeat the verified-token cache), signing on every core.
pub fn mint_many(pem: &[u8], m: &Mint, count: usize) -> Result<Vec<String>, MintError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .max(1);
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let start = t * per_thread;
                    let end = (start + per_thread).min(count);
                    (start..end)
                        .map(|i| {
                            let mut m = m.clone();
                            m.claims.push(("jti".into(), format!("\"{i}\"")));
                            mint(pem, &m)
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(count);
        for worker in workers {
            match worker.join() {
                Ok(tokens) => all.extend(tokens?),
                Err(_) => return Err(MintError::BadKey),
            }
        }
        Ok(all)
    })
}
