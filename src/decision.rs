//! The decision order of SPEC §Decision order as one function, shared by
//! the proxy, the forward-auth endpoint and `scopegate explain`.
//!
//! Pure: depends on the core modules only; takes the time as an argument.

use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::reject::Refusal;
use crate::route::{Auth, Lookup, Route, normalize};
use crate::state::State;
use crate::token::{self, Claims, TokenError};

/// The question: may this request pass?
#[derive(Debug, Clone, Copy)]
pub struct Question<'r> {
    pub method: &'r Method,
    /// The path as received (origin-form, no query, no fragment).
    pub path: &'r str,
    pub query: Option<&'r str>,
    pub headers: &'r HeaderMap,
}

/// The answer, with what was learnt on the way (for logs and forwarding).
#[derive(Debug)]
pub struct Decision<'s> {
    /// The normalized path: what is matched and what is forwarded.
    pub path: Option<String>,
    pub route: Option<&'s Route>,
    /// `Ok(None)`: allowed without a token (`auth: none`).
    pub verdict: Result<Option<Arc<Claims>>, Refusal>,
}

impl Decision<'_> {
    pub fn is_allowed(&self) -> bool {
        self.verdict.is_ok()
    }
}

/// Decides a request under one state, at time `now` (Unix seconds).
/// Asynchronous only because an unknown `kid` may wait for a key refetch.
pub async fn decide<'s>(state: &'s State, q: &Question<'_>, now: i64) -> Decision<'s> {
    let mut decision = Decision {
        path: None,
        route: None,
        verdict: Err(Refusal::NotFound),
    };
    let config = &state.config;

    // 2. Normalize the path.
    let path = match normalize(q.path) {
        Ok(path) => path,
        Err(e) => {
            decision.verdict = Err(Refusal::BadPath(e));
            return decision;
        }
    };

    // 3. Match the route.
    let (route, rule) = match config.routes.lookup(q.method, &path) {
        Lookup::Matched { route, rule } => (route, rule),
        Lookup::NotFound => {
            decision.path = Some(path);
            return decision;
        }
        Lookup::MethodNotAllowed { route } => {
            decision.path = Some(path);
            decision.route = Some(route);
            decision.verdict = Err(Refusal::MethodNotAllowed {
                allow: route.allow.clone(),
            });
            return decision;
        }
    };
    decision.path = Some(path);
    decision.route = Some(route);

    // 4. `auth: none` forwards without looking at tokens.
    if rule.auth == Auth::None {
        decision.verdict = Ok(None);
        return decision;
    }

    decision.verdict = authorize(state, q, rule, now).await;
    decision
}

/// Steps 5 to 7: find the token, verify it, check the route's policy.
async fn authorize(
    state: &State,
    q: &Question<'_>,
    rule: &crate::route::Rule,
    now: i64,
) -> Result<Option<Arc<Claims>>, Refusal> {
    let config = &state.config;
    let token = token::extract::find(&config.token_sources, q.headers, q.query)
        .map_err(Refusal::BadCredential)?
        .ok_or(Refusal::NoToken)?;
    let claims = config
        .verifier
        .verify(&token, now, state.cache.as_ref())
        .await
        .map_err(|e| match e {
            TokenError::KeysUnavailable => Refusal::KeysUnavailable,
            e => Refusal::InvalidToken(e),
        })?;
    rule.policy
        .check(&claims)
        .map_err(|denied| Refusal::InsufficientScope {
            scope: rule.policy.challenge_scope().clone(),
            denied,
        })?;
    Ok(Some(claims))
}
