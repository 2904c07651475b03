//! A route's authorization policy: the issuers it accepts, `scopes` (all),
//! `any_scope` (at least one) and `claims` — constants, or the request's
//! own path parameters and headers — checked against verified claims on
//! every request.
//!
//! Pure: depends on [`crate::token::claims`], `http` and `serde_json`.

use std::sync::Arc;

use http::{HeaderMap, HeaderName};
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
    /// The claim equals the path parameter `name` of the matched template
    /// (segment `segment` of the normalized path, percent-decoded once).
    EqualsParam { name: String, segment: usize },
    /// The claim equals this request header, sent exactly once (trimmed).
    EqualsHeader(HeaderName),
}

impl ClaimRule {
    /// `claim org_id`, `claim org_id = {org}`, `claim tenant = header x-tenant`.
    pub fn describe(&self) -> String {
        let claim = self.claim.as_str();
        match &self.check {
            ClaimCheck::EqualsParam { name, .. } => format!("claim {claim} = {{{name}}}"),
            ClaimCheck::EqualsHeader(h) => format!("claim {claim} = header {h}"),
            _ => format!("claim {claim}"),
        }
    }
}

/// What a claim condition may compare with: the request's normalized path
/// and its headers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    pub path: &'r str,
    pub headers: &'r HeaderMap,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRule {
    pub claim: ClaimName,
    pub check: ClaimCheck,
}

/// Why a policy refused verified claims (the 403 description).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    MissingScope,
    NoneOfScopes,
    /// A claim condition failed; the description names the claim (never
    /// a value).
    Claim(Arc<str>),
    /// The header an `equals_header` condition reads is missing or
    /// repeated: the request is malformed for this route (400).
    HeaderNotOnce,
}

impl Denied {
    pub fn describe(&self) -> &str {
        match self {
            Denied::MissingScope => "a required scope is missing",
            Denied::NoneOfScopes => "none of the accepted scopes is present",
            Denied::Claim(description) => description,
            Denied::HeaderNotOnce => {
                "a header this route compares with a claim is missing or repeated"
            }
        }
    }

    /// Scopes failed: the challenge's `scope=` tells the client what to
    /// ask for. A claim failure names no scope (the caller may hold them).
    pub fn is_scope(&self) -> bool {
        matches!(self, Denied::MissingScope | Denied::NoneOfScopes)
    }
}

/// `claim NAME does not match`, when the name is safe in a quoted header
/// parameter (printable ASCII without `"` or `\`).
fn claim_description(claim: &ClaimName) -> Arc<str> {
    let name = claim.as_str();
    let safe = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if safe {
        format!("claim {name} does not match").into()
    } else {
        "a required claim does not match".into()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    scopes: Vec<String>,
    any_scope: Vec<String>,
    claims: Vec<ClaimRule>,
    /// Each condition's 403 description, made once.
    descriptions: Vec<Arc<str>>,
    /// The `issuer` values whose tokens the route accepts (empty: all).
    issuers: Vec<String>,
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
        let descriptions = claims.iter().map(|r| claim_description(&r.claim)).collect();
        Policy {
            scopes,
            any_scope,
            claims,
            descriptions,
            issuers: Vec::new(),
            challenge,
        }
    }

    /// The same policy, accepting only tokens of these issuers.
    pub fn with_issuers(self, issuers: Vec<String>) -> Self {
        Policy { issuers, ..self }
    }

    /// Whether the configured issuer that verified the token is one the
    /// route accepts.
    pub fn accepts_issuer(&self, claims: &Claims) -> bool {
        self.issuers.is_empty()
            || claims
                .issuer()
                .is_some_and(|iss| self.issuers.iter().any(|i| i == iss))
    }

    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }

    pub fn check(&self, claims: &Claims, request: &Request<'_>) -> Result<(), Denied> {
        if !self.scopes.iter().all(|s| claims.has_scope(s)) {
            return Err(Denied::MissingScope);
        }
        if !self.any_scope.is_empty() && !self.any_scope.iter().any(|s| claims.has_scope(s)) {
            return Err(Denied::NoneOfScopes);
        }
        for (rule, description) in self.claims.iter().zip(&self.descriptions) {
            let got = claims.get(&rule.claim);
            let ok = match (&rule.check, got) {
                (ClaimCheck::EqualsHeader(name), got) => {
                    let mut values = request.headers.get_all(name).iter();
                    let (Some(value), None) = (values.next(), values.next()) else {
                        return Err(Denied::HeaderNotOnce);
                    };
                    let value = value.to_str().map(str::trim).ok();
                    got.zip(value).is_some_and(|(got, v)| same_text(got, v))
                }
                (_, None) => false,
                (ClaimCheck::EqualsParam { segment, .. }, Some(got)) => {
                    param(request.path, *segment).is_some_and(|v| same_text(got, &v))
                }
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
                return Err(Denied::Claim(description.clone()));
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

/// A string claim equals `text` exactly; a number by its decimal form.
fn same_text(claim: &Value, text: &str) -> bool {
    match claim {
        Value::String(s) => s == text,
        Value::Number(n) => n.to_string() == text,
        _ => false,
    }
}

/// Segment `index` (0 is the first after `/`) of a normalized path,
/// percent-decoded once; `None` when absent or not UTF-8.
fn param(path: &str, index: usize) -> Option<std::borrow::Cow<'_, str>> {
    let raw = path.strip_prefix('/')?.split('/').nth(index)?;
    crate::route::percent_decode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(p: &Policy, v: Value) -> Result<(), Denied> {
        let headers = HeaderMap::new();
        p.check(
            &claims(v),
            &Request {
                path: "/",
                headers: &headers,
            },
        )
    }

    fn claims(v: Value) -> Claims {
        let names = [ClaimName::new("scope"), ClaimName::new("permissions")];
        Claims::new(v.as_object().cloned().expect("object"), &names, 0)
    }

    #[test]
    fn scopes_all_and_any() {
        let p = Policy::new(vec!["a".into(), "b".into()], vec![], vec![]);
        assert_eq!(check(&p, json!({"scope": "a b c"})), Ok(()));
        assert_eq!(check(&p, json!({"scope": "a"})), Err(Denied::MissingScope));
        assert_eq!(check(&p, json!({"scope": "ab"})), Err(Denied::MissingScope));
        let any = Policy::new(vec![], vec!["w".into(), "admin".into()], vec![]);
        assert_eq!(check(&any, json!({"permissions": ["admin"]})), Ok(()));
        assert_eq!(
            check(&any, json!({"scope": "administrator"})),
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
        assert_eq!(check(&p, good), Ok(()));
        let wrong_org = json!({"org_id": "acme2", "https://example.com/roles": ["admin"]});
        assert_eq!(
            check(&p, wrong_org),
            Err(Denied::Claim("claim org_id does not match".into()))
        );
        let no_role = json!({"org_id": "acme", "https://example.com/roles": ["user"]});
        assert_eq!(
            check(&p, no_role),
            Err(Denied::Claim(
                "claim https://example.com/roles does not match".into()
            ))
        );
        let missing = json!({"https://example.com/roles": ["admin"]});
        assert_eq!(
            check(&p, missing),
            Err(Denied::Claim("claim org_id does not match".into()))
        );
        let number = json!({"org_id": 1, "https://example.com/roles": "admin"});
        assert_eq!(
            check(&p, number),
            Err(Denied::Claim("claim org_id does not match".into()))
        );
        let listed = json!({"org_id": "acme", "https://example.com/roles": "user admin"});
        assert_eq!(check(&p, listed), Ok(()), "a space-separated string");
        let substring = json!({"org_id": "acme", "https://example.com/roles": "administrator"});
        assert_eq!(
            check(&p, substring),
            Err(Denied::Claim(
                "claim https://example.com/roles does not match".into()
            ))
        );
    }

    #[test]
    fn claims_bound_to_the_path_and_headers() {
        let p = Policy::new(
            vec![],
            vec![],
            vec![
                ClaimRule {
                    claim: ClaimName::new("org_id"),
                    check: ClaimCheck::EqualsParam {
                        name: "org".into(),
                        segment: 1,
                    },
                },
                ClaimRule {
                    claim: ClaimName::new("tenant"),
                    check: ClaimCheck::EqualsHeader(HeaderName::from_static("x-tenant")),
                },
            ],
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", " t1 ".parse().expect("value"));
        let at = |path: &'static str, headers: &HeaderMap, v: Value| {
            p.check(&claims(v), &Request { path, headers })
        };
        let token = json!({"org_id": "acme corp", "tenant": "t1"});
        assert_eq!(
            at("/orgs/acme%20corp/items", &headers, token.clone()),
            Ok(())
        );
        let org = Err(Denied::Claim("claim org_id does not match".into()));
        assert_eq!(
            at("/orgs/ACME%20corp/items", &headers, token.clone()),
            org,
            "case"
        );
        assert_eq!(
            at("/orgs/acme%2520corp/x", &headers, token.clone()),
            org,
            "decoded once"
        );
        assert_eq!(at("/orgs/other/x", &headers, token.clone()), org);
        let number = json!({"org_id": 42, "tenant": "t1"});
        assert_eq!(
            at("/orgs/42/x", &headers, number),
            Ok(()),
            "a number by its decimal form"
        );
        let mut wrong = HeaderMap::new();
        wrong.insert("x-tenant", "t2".parse().expect("value"));
        assert_eq!(
            at("/orgs/acme%20corp/x", &wrong, token.clone()),
            Err(Denied::Claim("claim tenant does not match".into()))
        );
        wrong.append("x-tenant", "t1".parse().expect("value"));
        assert_eq!(
            at("/orgs/acme%20corp/x", &wrong, token.clone()),
            Err(Denied::HeaderNotOnce)
        );
        assert_eq!(
            at("/orgs/acme%20corp/x", &HeaderMap::new(), token),
            Err(Denied::HeaderNotOnce)
        );
    }
}
