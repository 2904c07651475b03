//! A route's authorization policy: `scopes` (all), `any_scope` (at least
//! one) and `claims`, checked against verified claims on every request.
//!
//! Pure: depends on [`crate::token::claims`] and `serde_json`.

use std::sync::Arc;

use serde_json::Value;

use crate::token::{ClaimName, Claims};

/// What a claim must hold.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimCheck {
    /// The claim equals this scalar (string, number or boolean).
    Equals(Value),
    /// The claim is an array holding every one of these values; a string
    /// claim is read as a space-separated list (as scope strings are, and as
    /// the Auth0 SDK's `claimIncludes` does).
    Includes(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRule {
    pub claim: ClaimName,
    pub check: ClaimCheck,
}

/// Why a policy refused verified claims (the 403 description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    MissingScope,
    NoneOfScopes,
    Claim,
}

impl Denied {
    pub fn describe(self) -> &'static str {
        match self {
            Denied::MissingScope => "a required scope is missing",
            Denied::NoneOfScopes => "none of the accepted scopes is present",
            Denied::Claim => "a required claim does not match",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    scopes: Vec<String>,
    any_scope: Vec<String>,
    claims: Vec<ClaimRule>,
    /// The RFC 6750 `scope` challenge value: what the route needs.
    challenge: Arc<str>,
}

impl Policy {
    pub fn new(scopes: Vec<String>, any_scope: Vec<String>, claims: Vec<ClaimRule>) -> Self {
        let mut needed: Vec<&str> = scopes
            .iter()
            .chain(&any_scope)
            .map(String::as_str)
            .collect();
        needed.dedup();
        let challenge = needed.join(" ").into();
        Policy {
            scopes,
            any_scope,
            claims,
            challenge,
        }
    }

    pub fn check(&self, claims: &Claims) -> Result<(), Denied> {
        if !self.scopes.iter().all(|s| claims.has_scope(s)) {
            return Err(Denied::MissingScope);
        }
        if !self.any_scope.is_empty() && !self.any_scope.iter().any(|s| claims.has_scope(s)) {
            return Err(Denied::NoneOfScopes);
        }
        for rule in &self.claims {
            let ok = match (&rule.check, claims.get(&rule.claim)) {
                (_, None) => false,
                (ClaimCheck::Equals(want), Some(got)) => want == got,
                (ClaimCheck::Includes(wanted), Some(Value::Array(items))) => {
                    wanted.iter().all(|w| items.contains(w))
                }
                (ClaimCheck::Includes(wanted), Some(Value::String(list))) => {
                    wanted.iter().all(|w| {
                        w.as_str()
                            .is_some_and(|w| list.split_whitespace().any(|item| item == w))
                    })
                }
                (ClaimCheck::Includes(_), Some(_)) => false,
            };
            if !ok {
                return Err(Denied::Claim);
            }
        }
        Ok(())
    }

    pub fn challenge_scope(&self) -> &Arc<str> {
        &self.challenge
    }

    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    pub fn any_scope(&self) -> &[String] {
        &self.any_scope
    }

    pub fn claims(&self) -> &[ClaimRule] {
        &self.claims
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        let names = [ClaimName::new("scope"), ClaimName::new("permissions")];
        Claims::new(v.as_object().cloned().expect("object"), &names, 0)
    }

    #[test]
    fn scopes_all_and_any() {
        let p = Policy::new(vec!["a".into(), "b".into()], vec![], vec![]);
        assert_eq!(p.check(&claims(json!({"scope": "a b c"}))), Ok(()));
        assert_eq!(
            p.check(&claims(json!({"scope": "a"}))),
            Err(Denied::MissingScope)
        );
        assert_eq!(
            p.check(&claims(json!({"scope": "ab"}))),
            Err(Denied::MissingScope)
        );
        let any = Policy::new(vec![], vec!["w".into(), "admin".into()], vec![]);
        assert_eq!(
            any.check(&claims(json!({"permissions": ["admin"]}))),
            Ok(())
        );
        assert_eq!(
            any.check(&claims(json!({"scope": "administrator"}))),
            Err(Denied::NoneOfScopes)
        );
        assert_eq!(&**any.challenge_scope(), "w admin");
    }

    #[test]
    fn claim_rules() {
        let p = Policy::new(
            vec![],
            vec![],
            vec![
                ClaimRule {
                    claim: ClaimName::new("org_id"),
                    check: ClaimCheck::Equals(json!("acme")),
                },
                ClaimRule {
                    claim: ClaimName::new("https://example.com/roles"),
                    check: ClaimCheck::Includes(vec![json!("admin")]),
                },
            ],
        );
        let good = json!({"org_id": "acme", "https://example.com/roles": ["user", "admin"]});
        assert_eq!(p.check(&claims(good)), Ok(()));
        let wrong_org = json!({"org_id": "acme2", "https://example.com/roles": ["admin"]});
        assert_eq!(p.check(&claims(wrong_org)), Err(Denied::Claim));
        let no_role = json!({"org_id": "acme", "https://example.com/roles": ["user"]});
        assert_eq!(p.check(&claims(no_role)), Err(Denied::Claim));
        let missing = json!({"https://example.com/roles": ["admin"]});
        assert_eq!(p.check(&claims(missing)), Err(Denied::Claim));
        let number = json!({"org_id": 1, "https://example.com/roles": "admin"});
        assert_eq!(p.check(&claims(number)), Err(Denied::Claim));
        let listed = json!({"org_id": "acme", "https://example.com/roles": "user admin"});
        assert_eq!(p.check(&claims(listed)), Ok(()), "a space-separated string");
        let substring = json!({"org_id": "acme", "https://example.com/roles": "administrator"});
        assert_eq!(p.check(&claims(substring)), Err(Denied::Claim));
    }
}
