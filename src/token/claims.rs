//! Verified claims: the payload of a token whose signature and registered
//! claims have been checked, plus the scopes collected from it.
//!
//! Pure: depends on `serde_json` only.

use serde_json::{Map, Value};

/// A claim name from the config, looked up as a literal key first (Auth0's
/// `https://example.com/roles`) and then as a dotted path into nested objects
/// (Keycloak's `realm_access.roles`). Parsed once at load time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimName {
    literal: String,
    path: Vec<String>,
}

impl ClaimName {
    pub fn new(name: &str) -> Self {
        let path = if name.contains('.') {
            name.split('.').map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        ClaimName {
            literal: name.to_owned(),
            path,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.literal
    }

    /// Looks the claim up in a JSON object.
    pub fn find<'v>(&self, object: &'v Map<String, Value>) -> Option<&'v Value> {
        if let Some(value) = object.get(&self.literal) {
            return Some(value);
        }
        let (first, rest) = self.path.split_first()?;
        let mut current = object.get(first)?;
        for key in rest {
            current = current.as_object()?.get(key)?;
        }
        Some(current)
    }
}

/// The claims of a verified token.
#[derive(Debug, Clone)]
pub struct Claims {
    object: Map<String, Value>,
    scopes: Vec<String>,
    subject: Option<String>,
    expires_at: i64,
    /// The configured `issuer` whose keys or introspection endpoint
    /// vouched for the token (`iss` until the verifier says).
    issuer: Option<String>,
}

impl Claims {
    /// Wraps a verified payload; `scope_claims` say where scopes live.
    pub fn new(object: Map<String, Value>, scope_claims: &[ClaimName], expires_at: i64) -> Self {
        let mut scopes: Vec<String> = Vec::new();
        for name in scope_claims {
            match name.find(&object) {
                Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
                Some(Value::Array(items)) => {
                    scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
                }
                _ => {}
            }
        }
        scopes.sort_unstable();
        scopes.dedup();
        let subject = object.get("sub").and_then(Value::as_str).map(str::to_owned);
        let issuer = object.get("iss").and_then(Value::as_str).map(str::to_owned);
        Claims {
            object,
            scopes,
            subject,
            expires_at,
            issuer,
        }
    }

    /// The same claims, vouched for by the configured issuer `issuer`.
    pub fn issued_by(self, issuer: &str) -> Self {
        Claims {
            issuer: Some(issuer.to_owned()),
            ..self
        }
    }

    /// The `cnf` (confirmation) object of a sender-constrained token.
    pub fn confirmation(&self) -> Option<&Map<String, Value>> {
        self.object.get("cnf").and_then(Value::as_object)
    }

    /// The configured issuer that verified the token.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    pub fn get(&self, name: &ClaimName) -> Option<&Value> {
        name.find(&self.object)
    }

    /// Exact string equality, never a prefix or substring.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .binary_search_by(|s| s.as_str().cmp(scope))
            .is_ok()
    }

    /// Sorted, without duplicates.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// `exp`, in seconds since the Unix epoch.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn literal_key_first_then_dotted_path() {
        let o = object(json!({
            "https://example.com/roles": ["admin"],
            "realm_access": {"roles": ["user"]},
            "a.b": 1, "a": {"b": 2}
        }));
        assert_eq!(
            ClaimName::new("https://example.com/roles").find(&o),
            Some(&json!(["admin"]))
        );
        assert_eq!(
            ClaimName::new("realm_access.roles").find(&o),
            Some(&json!(["user"]))
        );
        assert_eq!(ClaimName::new("a.b").find(&o), Some(&json!(1)));
        assert_eq!(ClaimName::new("realm_access.missing").find(&o), None);
        assert_eq!(ClaimName::new("nothing").find(&o), None);
    }

    #[test]
    fn scopes_are_the_union_and_match_exactly() {
        let names: Vec<ClaimName> = ["scope", "scp", "permissions"].map(ClaimName::new).into();
        let c = Claims::new(
            object(
                json!({"scope": "read:messages  write", "scp": ["b"], "permissions": ["read:messages"], "sub": "u1"}),
            ),
            &names,
            10,
        );
        assert_eq!(c.scopes(), ["b", "read:messages", "write"]);
        assert!(c.has_scope("read:messages"));
        assert!(!c.has_scope("read"));
        assert!(!c.has_scope("read:messages write"));
        assert_eq!(c.subject(), Some("u1"));
    }
}
