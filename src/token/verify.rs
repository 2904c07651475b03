//! Token verification against the configured issuers (SPEC §Token
//! verification): issuer by `iss`, key by `kid` and `alg`, signature, then
//! `exp` / `nbf` / `iat` / `aud` / `typ` / age.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{Cache, ClaimName, Claims, TokenError, jws};
use crate::jwks::KeySet;

/// Asks an issuer's key source for fresh keys after a token named a `kid`
/// the current set does not hold. Implemented by the JWKS adapter; the
/// implementation rate-limits and shares the fetch between callers.
pub trait Refetch: Send + Sync {
    fn refetch(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The current keys of one issuer. Static sources fill it at load time; a
/// remote JWKS fills it when a fetch succeeds. Empty means "not ready".
/// Every change bumps the generation, which retires cached verifications.
#[derive(Default)]
pub struct KeyCell {
    current: ArcSwapOption<KeySet>,
    generation: AtomicU64,
    /// Set by the first store: readiness is a latch per key source.
    had_keys: std::sync::atomic::AtomicBool,
    refetcher: OnceLock<Arc<dyn Refetch>>,
}

impl std::fmt::Debug for KeyCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCell")
            .field("ready", &self.is_ready())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl KeyCell {
    pub fn with(keys: KeySet) -> Self {
        let cell = KeyCell::default();
        cell.store(keys);
        cell
    }

    pub fn load(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    pub fn store(&self, keys: KeySet) {
        self.current.store(Some(Arc::new(keys)));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.had_keys.store(true, Ordering::Release);
    }

    /// Whether this key source has ever had keys (they may have gone stale
    /// since: an IdP outage every replica shares must not make them all
    /// unready at once).
    pub fn has_had_keys(&self) -> bool {
        self.had_keys.load(Ordering::Acquire)
    }

    /// Drops the keys (they went stale): the issuer is not ready any more.
    pub fn clear(&self) {
        self.current.store(None);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Installs the unknown-`kid` refetch hook (once per cell).
    pub fn set_refetcher(&self, refetcher: Arc<dyn Refetch>) {
        let _ = self.refetcher.set(refetcher);
    }
}

/// A trusted issuer, validated at load time.
#[derive(Debug)]
pub struct Issuer {
    /// The exact `iss` value.
    pub name: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Seconds of leeway on `exp`, `nbf` and `iat`.
    pub clock_skew: i64,
    /// Maximum seconds since `iat`, if set.
    pub max_token_age: Option<i64>,
    /// Lower-cased, without an `application/` prefix.
    pub require_typ: Option<String>,
    pub scope_claims: Vec<ClaimName>,
    pub keys: Arc<KeyCell>,
}

/// Verifies tokens for a set of issuers.
#[derive(Debug, Default)]
pub struct Verifier {
    issuers: HashMap<String, Issuer>,
    max_bytes: usize,
}

fn time_claim(payload: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n.as_i64().or_else(|| n.as_f64().map(|f| f.floor() as i64));
            secs.map(Some).ok_or(TokenError::BadClaimType)
        }
        Some(_) => Err(TokenError::BadClaimType),
    }
}

/// `typ` compared case-insensitively, with or without `application/`
/// (RFC 7515 §4.1.9).
pub fn canonical_typ(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

impl Verifier {
    pub fn new(issuers: Vec<Issuer>, max_bytes: usize) -> Self {
        let issuers = issuers.into_iter().map(|i| (i.name.clone(), i)).collect();
        Verifier { issuers, max_bytes }
    }

    pub fn issuers(&self) -> impl Iterator<Item = &Issuer> {
        self.issuers.values()
    }

    /// Makes an issuer use an existing key cell (keys kept across a reload).
    pub fn adopt_keys(&mut self, issuer: &str, keys: Arc<KeyCell>) {
        if let Some(i) = self.issuers.get_mut(issuer) {
            i.keys = keys;
        }
    }

    /// Verifies a token at time `now` (seconds since the Unix epoch),
    /// through `cache` when given. An unknown `kid` asks the issuer's key
    /// source for fresh keys once, then verifies again.
    pub async fn verify(
        &self,
        token: &str,
        now: i64,
        cache: Option<&Cache>,
    ) -> Result<Arc<Claims>, TokenError> {
        // Bounded before any decoding, key lookup or cache lookup.
        if token.len() > self.max_bytes {
            return Err(TokenError::TooLarge);
        }
        if let Some(claims) = cache.and_then(|c| c.get(token, now)) {
            return Ok(claims);
        }
        let jws = jws::split(token)?;
        let payload = jws.claims()?;
        let issuer = match payload.get("iss") {
            Some(Value::String(iss)) => self.issuers.get(iss).ok_or(TokenError::UnknownIssuer)?,
            _ => return Err(TokenError::IssuerMissing),
        };
        if !issuer.algorithms.contains(&jws.header.alg) {
            return Err(TokenError::AlgNotAllowed);
        }
        if let Some(required) = &issuer.require_typ {
            match &jws.header.typ {
                Some(typ) if canonical_typ(typ) == *required => {}
                _ => return Err(TokenError::BadType),
            }
        }
        let mut generation = issuer.keys.generation();
        let keys = issuer.keys.load().ok_or(TokenError::KeysUnavailable)?;
        match jws.verify(&keys, &issuer.algorithms) {
            Err(TokenError::UnknownKey) if jws.header.kid.is_some() => {
                let Some(refetcher) = issuer.keys.refetcher.get() else {
                    return Err(TokenError::UnknownKey);
                };
                refetcher.refetch().await;
                generation = issuer.keys.generation();
                let keys = issuer.keys.load().ok_or(TokenError::KeysUnavailable)?;
                jws.verify(&keys, &issuer.algorithms)?;
            }
            other => other?,
        }
        let valid_until = issuer.check_claims(&payload, now)?;
        let claims = Arc::new(Claims::new(payload, &issuer.scope_claims, valid_until.exp));
        if let Some(cache) = cache {
            cache.insert(
                token,
                claims.clone(),
                issuer.keys.clone(),
                generation,
                valid_until.until,
            );
        }
        Ok(claims)
    }
}

/// How long verified claims stay valid.
struct ValidUntil {
    exp: i64,
    /// `exp`, or earlier when `max_token_age` ends first.
    until: i64,
}

impl Issuer {
    /// Registered-claim checks on a payload whose signature is valid.
    fn check_claims(
        &self,
        payload: &Map<String, Value>,
        now: i64,
    ) -> Result<ValidUntil, TokenError> {
        let skew = self.clock_skew;
        let exp = time_claim(payload, "exp")?.ok_or(TokenError::ExpiryMissing)?;
        let nbf = time_claim(payload, "nbf")?;
        let iat = time_claim(payload, "iat")?;
        // RFC 7519 §4.1.4: on or after `exp` the token must not be accepted.
        if now >= exp.saturating_add(skew) {
            return Err(TokenError::Expired);
        }
        if nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
            return Err(TokenError::NotYetValid);
        }
        if iat.is_some_and(|iat| now.saturating_add(skew) < iat) {
            return Err(TokenError::IssuedInFuture);
        }
        let mut until = exp;
        if let Some(max_age) = self.max_token_age {
            let iat = iat.ok_or(TokenError::IssueTimeMissing)?;
            if now.saturating_sub(iat) > max_age.saturating_add(skew) {
                return Err(TokenError::TooOld);
            }
            until = until.min(iat.saturating_add(max_age));
        }
        for name in ["sub", "client_id", "jti"] {
            if payload.get(name).is_some_and(|v| !v.is_string()) {
                return Err(TokenError::IdClaimNotString);
            }
        }
        // RFC 9068 §2.2: an `at+jwt` access token carries all of these.
        if self.require_typ.as_deref() == Some("at+jwt")
            && (iat.is_none()
                || ["sub", "client_id", "jti"]
                    .iter()
                    .any(|name| !payload.contains_key(*name)))
        {
            return Err(TokenError::ProfileClaimMissing);
        }
        // SPEC §Token verification: a binding that is not verified is refused.
        if payload.contains_key("cnf") {
            return Err(TokenError::BoundToken);
        }
        let accepted = |aud: &str| self.audiences.iter().any(|a| a == aud);
        match payload.get("aud") {
            None => return Err(TokenError::AudienceMissing),
            Some(Value::String(aud)) if accepted(aud) => {}
            Some(Value::Array(auds)) if auds.iter().any(|a| a.as_str().is_some_and(accepted)) => {}
            Some(_) => return Err(TokenError::BadAudience),
        }
        Ok(ValidUntil { exp, until })
    }
}
