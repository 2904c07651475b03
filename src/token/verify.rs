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

/// What an introspection endpoint said of a token (RFC 7662).
#[derive(Debug, Clone)]
pub enum Introspected {
    /// `active: true`, with the answer's members.
    Active(Arc<Map<String, Value>>),
    /// `active: false`.
    Inactive,
    /// `unsupported_token_type`: a JWT stands on local verification alone.
    Unsupported,
}

/// Asks an issuer's introspection endpoint about a token. Implemented by
/// the introspection adapter, which caches answers (by a hash of the
/// token) and keeps one call in flight per token. `Err`: the endpoint is
/// down, slow or answered something that is not an answer (503).
pub trait Introspect: Send + Sync + std::fmt::Debug {
    fn introspect<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Introspected, ()>> + Send + 'a>>;
}

/// How an issuer introspects.
#[derive(Debug, Clone)]
pub struct IntrospectionRule {
    /// With several introspecting issuers, the prefix of this one's tokens.
    pub token_prefix: Option<String>,
    /// JWTs are introspected too (after local verification).
    pub always: bool,
    /// An active answer must carry an allowed `aud`.
    pub require_aud: bool,
    /// Upper bound on how long an answer without `exp` is trusted (s).
    pub cache_ttl: i64,
    /// Installed by the composition root.
    pub introspector: OnceLock<Arc<dyn Introspect>>,
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
    /// RFC 7662 introspection, for opaque tokens (and JWTs with `always`).
    pub introspection: Option<IntrospectionRule>,
    /// DPoP for this issuer's tokens (a route may override it).
    pub dpop: crate::dpop::Settings,
}

/// Verifies tokens for a set of issuers.
#[derive(Debug, Default)]
pub struct Verifier {
    /// By name, looked up for every request (the DPoP settings, and the
    /// `iss` of every token verified): a fixed set from the config, so
    /// foldhash rather than SipHash, as the route table.
    issuers: HashMap<String, Issuer, foldhash::fast::RandomState>,
    max_bytes: usize,
}

/// SPEC §4.8: a `cnf` must carry a binding the gateway verifies — a DPoP
/// key thumbprint (`jkt`) or a certificate thumbprint (`x5t#S256`), as
/// strings — which the decision then checks against the request. Any
/// other `cnf` (`jwk`, `jku`, `{}`, a non-object) is refused.
fn check_cnf(claims: &Map<String, Value>) -> Result<(), TokenError> {
    let Some(cnf) = claims.get("cnf") else {
        return Ok(());
    };
    let Some(cnf) = cnf.as_object() else {
        return Err(TokenError::BoundToken);
    };
    let known = ["jkt", "x5t#S256"];
    let usable = known
        .iter()
        .filter_map(|m| cnf.get(*m))
        .all(|v| v.as_str().is_some_and(|s| !s.is_empty()));
    if !usable || !known.iter().any(|m| cnf.contains_key(*m)) {
        return Err(TokenError::BoundToken);
    }
    Ok(())
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

    /// A configured issuer, by its `issuer` value.
    pub fn issuer(&self, name: &str) -> Option<&Issuer> {
        self.issuers.get(name)
    }

    pub fn issuers(&self) -> impl Iterator<Item = &Issuer> {
        self.issuers.values()
    }

    /// Installs an issuer's introspection client.
    pub fn attach_introspector(&self, issuer: &str, introspector: Arc<dyn Introspect>) {
        if let Some(rule) = self
            .issuers
            .get(issuer)
            .and_then(|i| i.introspection.as_ref())
        {
            let _ = rule.introspector.set(introspector);
        }
    }

    /// The issuer an opaque token is introspected by: the one whose
    /// `token_prefix` it starts with, else the only introspecting issuer.
    fn introspecting(&self, token: &str) -> Option<&Issuer> {
        let mut candidates = self.issuers.values().filter(|i| i.introspection.is_some());
        let by_prefix = candidates.clone().find(|i| {
            i.introspection
                .as_ref()
                .and_then(|r| r.token_prefix.as_deref())
                .is_some_and(|p| token.starts_with(p))
        });
        by_prefix.or_else(|| {
            let first = candidates.next()?;
            candidates.next().is_none().then_some(first)
        })
    }

    /// Asks `issuer`'s introspection endpoint.
    async fn ask(&self, issuer: &Issuer, token: &str) -> Result<Introspected, TokenError> {
        let rule = issuer.introspection.as_ref().ok_or(TokenError::Malformed)?;
        let introspector = rule
            .introspector
            .get()
            .ok_or(TokenError::IntrospectionUnavailable)?;
        introspector
            .introspect(token)
            .await
            .map_err(|()| TokenError::IntrospectionUnavailable)
    }

    /// An opaque token: introspected, then its answer checked as a JWT's
    /// claims would be.
    async fn verify_opaque(&self, token: &str, now: i64) -> Result<Arc<Claims>, TokenError> {
        let issuer = self.introspecting(token).ok_or(TokenError::Malformed)?;
        let answer = match self.ask(issuer, token).await? {
            Introspected::Active(answer) => answer,
            Introspected::Inactive => return Err(TokenError::Inactive),
            Introspected::Unsupported => return Err(TokenError::Malformed),
        };
        if answer
            .get("iss")
            .is_some_and(|iss| iss.as_str() != Some(issuer.name.as_str()))
        {
            return Err(TokenError::UnknownIssuer);
        }
        let rule = issuer.introspection.as_ref().ok_or(TokenError::Malformed)?;
        let exp = issuer.check_introspected(&answer, now, rule)?;
        let exp = exp.unwrap_or(now.saturating_add(rule.cache_ttl));
        Ok(Arc::new(
            Claims::new((*answer).clone(), &issuer.scope_claims, exp).issued_by(&issuer.name),
        ))
    }

    /// Makes an issuer use an existing key cell (keys kept across a reload).
    pub fn adopt_keys(&mut self, issuer: &str, keys: Arc<KeyCell>) {
        if let Some(i) = self.issuers.get_mut(issuer) {
            i.keys = keys;
        }
    }

    /// Verifies a token at time `now` (seconds since the Unix epoch), and
    /// remembers its claims in `cache` when given. The caller has asked
    /// `cache` for the token already (as the token was extracted, see
    /// [`super::extract::find`]): this counts a miss. An unknown `kid`
    /// asks the issuer's key source for fresh keys once, then verifies
    /// again.
    pub async fn verify(
        &self,
        token: &str,
        now: i64,
        cache: Option<&Cache>,
    ) -> Result<Arc<Claims>, TokenError> {
        // Bounded before any decoding or key lookup.
        if token.len() > self.max_bytes {
            return Err(TokenError::TooLarge);
        }
        if let Some(cache) = cache {
            cache.missed();
        }
        let jws = match jws::split(token) {
            Ok(jws) => jws,
            // Not a JWS: an opaque token, for an introspecting issuer.
            Err(TokenError::Malformed)
                if self.issuers.values().any(|i| i.introspection.is_some()) =>
            {
                return self.verify_opaque(token, now).await;
            }
            Err(e) => return Err(e),
        };
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
        let claims = Arc::new(
            Claims::new(payload, &issuer.scope_claims, valid_until.exp).issued_by(&issuer.name),
        );
        // `always`: a valid JWT must also be active (revocation); its
        // claims stay the JWT's, and it is not cached here (the
        // introspection cache bounds how long an answer is trusted).
        if issuer.introspection.as_ref().is_some_and(|r| r.always) {
            return match self.ask(issuer, token).await? {
                Introspected::Active(_) | Introspected::Unsupported => Ok(claims),
                Introspected::Inactive => Err(TokenError::Inactive),
            };
        }
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
    /// The checks of an active introspection answer: its members have
    /// their JWT types; `exp` (optional here) and `aud` (when
    /// `require_aud`) are checked as for JWTs; a `cnf` is refused.
    fn check_introspected(
        &self,
        answer: &Map<String, Value>,
        now: i64,
        rule: &IntrospectionRule,
    ) -> Result<Option<i64>, TokenError> {
        let exp = time_claim(answer, "exp")?;
        time_claim(answer, "iat")?;
        time_claim(answer, "nbf")?;
        if exp.is_some_and(|exp| now >= exp.saturating_add(self.clock_skew)) {
            return Err(TokenError::Expired);
        }
        for name in ["sub", "client_id", "jti", "scope", "username", "token_type"] {
            if answer.get(name).is_some_and(|v| !v.is_string()) {
                return Err(TokenError::IdClaimNotString);
            }
        }
        check_cnf(answer)?;
        let accepted = |aud: &str| self.audiences.iter().any(|a| a == aud);
        match answer.get("aud") {
            None if !rule.require_aud => {}
            None => return Err(TokenError::AudienceMissing),
            Some(Value::String(aud)) if accepted(aud) => {}
            Some(Value::Array(auds)) if auds.iter().any(|a| a.as_str().is_some_and(accepted)) => {}
            Some(_) => return Err(TokenError::BadAudience),
        }
        Ok(exp)
    }

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
        check_cnf(payload)?;
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
