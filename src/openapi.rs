//! Routes from an OpenAPI 3.0 or 3.1 document (SPEC §4.9): every
//! operation's security requirements, turned into the rules `routes:` would
//! hold. Used by `scopegate routes --from-openapi` (which prints them) and
//! by `routes_from_openapi:` (which loads them).
//!
//! Both versions are read from the same few members (`openapi`, `paths`,
//! the operations' and the document's `security`, `components.
//! securitySchemes`, `$ref`s within the document), so the document is read
//! as plain YAML/JSON data rather than through a typed model of either
//! version.
//!
//! Pure: depends on `serde-saphyr` and `serde_json`.

use serde_json::{Map, Value};

/// The HTTP methods an OpenAPI path item may hold, in its order.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A document that cannot be read, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenApiError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl std::fmt::Display for OpenApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// What an operation requires of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `security: []`, `[{}]`, or anonymous as one alternative.
    None,
    /// A valid token with every one of `scopes` and, when `any_scope` is
    /// not empty, at least one of those.
    Required {
        scopes: Vec<String>,
        any_scope: Vec<String>,
    },
}

/// One operation, as a route rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The path template (`{id}` kept).
    pub path: String,
    /// Upper case: `GET`, `POST`, …
    pub method: String,
    pub operation_id: Option<String>,
    pub access: Access,
    /// Where the mapping is not exact or not obvious: comment lines.
    pub notes: Vec<String>,
    /// Line of the path in the document (for `check`).
    pub line: u64,
}

/// A converted document.
#[derive(Debug, Clone)]
pub struct Document {
    /// `3.0.3`, `3.1.0`, …
    pub version: String,
    pub title: String,
    pub operations: Vec<Operation>,
}

/// Converts an OpenAPI document (YAML or JSON text). `scheme` limits the
/// scopes to one security scheme: requirements on others then count as
/// non-OAuth (a valid token, no scope).
pub fn convert(text: &str, scheme: Option<&str>) -> Result<Document, OpenApiError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
        let message = e.without_snippet().to_string();
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        OpenApiError {
            line,
            column,
            message,
        }
    })?;
    let at = |needle: &str, message: String| {
        let (line, column) = locate(text, needle);
        OpenApiError {
            line,
            column,
            message,
        }
    };
    let Some(root) = doc.as_object() else {
        return Err(at(
            "",
            "not an OpenAPI document (expected a mapping)".into(),
        ));
    };
    let version = match root.get("openapi") {
        Some(Value::String(v)) if v.starts_with("3.") => v.clone(),
        Some(v) => {
            return Err(at(
                "openapi",
                format!("openapi {v} is not 3.x: only OpenAPI 3.0 and 3.1 documents are read"),
            ));
        }
        None if root.contains_key("swagger") => {
            return Err(at(
                "swagger",
                "a Swagger 2.0 document: convert it to OpenAPI 3 first".into(),
            ));
        }
        None => {
            return Err(at(
                "",
                "no `openapi` member: not an OpenAPI 3 document".into(),
            ));
        }
    };
    let title = root
        .get("info")
        .and_then(|i| i.get("title"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let schemes = Schemes::new(&doc, scheme);
    if let Some(name) = scheme
        && !schemes.exists(name)
    {
        return Err(at(
            "securitySchemes",
            format!("--scheme {name}: no such entry in components.securitySchemes"),
        ));
    }
    let global = root.get("security");
    let mut operations = Vec::new();
    let paths = match root.get("paths") {
        None => &Map::new(),
        Some(Value::Object(paths)) => paths,
        Some(_) => return Err(at("paths", "`paths` is not a mapping".into())),
    };
    for (path, item) in paths {
        let line = locate(text, path).0;
        check_template(path).map_err(|why| at(path, format!("path {path:?}: {why}")))?;
        let item = resolve(&doc, item, 0)
            .ok_or_else(|| at(path, format!("path {path:?}: a $ref that does not resolve")))?;
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let op = resolve(&doc, op, 0).ok_or_else(|| {
                at(
                    path,
                    format!("{method} {path}: a $ref that does not resolve"),
                )
            })?;
            let operation_id = op
                .get("operationId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let (access, notes) = match op.get("security").or(global) {
                None => (
                    Access::Required {
                        scopes: Vec::new(),
                        any_scope: Vec::new(),
                    },
                    vec![
                        "no security requirement in the document: a valid token is required"
                            .to_owned(),
                    ],
                ),
                Some(requirements) => access(&schemes, requirements)
                    .map_err(|why| at(path, format!("{method} {path}: {why}")))?,
            };
            operations.push(Operation {
                path: path.clone(),
                method: method.to_ascii_uppercase(),
                operation_id,
                access,
                notes,
                line,
            });
        }
    }
    Ok(Document {
        version,
        title,
        operations,
    })
}

/// `{name}` only as a whole segment, a name of word characters: what the
/// route templates can express.
fn check_template(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("does not start with /".into());
    }
    for segment in path[1..].split('/') {
        let braces = segment.contains('{') || segment.contains('}');
        if !braces {
            continue;
        }
        let name = segment
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|n| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            });
        if name.is_none() {
            return Err(format!(
                "the segment {segment:?} mixes a parameter with text, which route templates cannot express (a parameter must be a whole segment)"
            ));
        }
    }
    Ok(())
}

/// Follows `$ref`s within the document (`#/...`), at most 16 deep.
fn resolve<'d>(doc: &'d Value, value: &'d Value, depth: u8) -> Option<&'d Value> {
    let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
        return Some(value);
    };
    if depth >= 16 {
        return None;
    }
    let pointer = reference.strip_prefix('#')?;
    let target = doc.pointer(pointer)?;
    resolve(doc, target, depth + 1)
}

/// The security schemes: which names are OAuth 2 / OpenID Connect.
struct Schemes<'d> {
    schemes: Option<&'d Map<String, Value>>,
    doc: &'d Value,
    only: Option<&'d str>,
}

impl<'d> Schemes<'d> {
    fn new(doc: &'d Value, only: Option<&'d str>) -> Self {
        let schemes = doc
            .pointer("/components/securitySchemes")
            .and_then(Value::as_object);
        Schemes { schemes, doc, only }
    }

    fn exists(&self, name: &str) -> bool {
        self.schemes.is_some_and(|s| s.contains_key(name))
    }

    /// Whether the scheme's scopes are token scopes the gateway checks.
    fn is_oauth(&self, name: &str) -> bool {
        if self.only.is_some_and(|only| only != name) {
            return false;
        }
        let kind = self
            .schemes
            .and_then(|s| s.get(name))
            .and_then(|s| resolve(self.doc, s, 0))
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str);
        matches!(kind, Some("oauth2" | "openIdConnect"))
    }
}

/// A `security` array → the rule, and notes where it is not exact.
fn access(schemes: &Schemes<'_>, requirements: &Value) -> Result<(Access, Vec<String>), String> {
    let Some(list) = requirements.as_array() else {
        return Err("`security` is not a list".into());
    };
    let none = (Access::None, Vec::new());
    if list.is_empty() {
        return Ok(none);
    }
    // Each alternative: its OAuth scopes, and whether it had any other
    // scheme (checked by nobody here).
    let mut alternatives: Vec<(Vec<String>, bool)> = Vec::new();
    // How each alternative reads (`petstore_auth: write:pets`, `api_key`),
    // and the schemes the gateway does not check.
    let mut shown: Vec<String> = Vec::new();
    let mut unchecked: Vec<String> = Vec::new();
    for requirement in list {
        let Some(requirement) = requirement.as_object() else {
            return Err("a security requirement is not a mapping".into());
        };
        if requirement.is_empty() {
            let note = if list.len() > 1 {
                vec!["anonymous access is one of the document's alternatives".to_owned()]
            } else {
                Vec::new()
            };
            return Ok((Access::None, note));
        }
        let mut scopes = Vec::new();
        let mut other = false;
        let mut parts = Vec::new();
        for (name, wanted) in requirement {
            let listed: Vec<&str> = wanted
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            parts.push(if listed.is_empty() {
                name.clone()
            } else {
                format!("{name}: {}", listed.join(" "))
            });
            if schemes.is_oauth(name) {
                for scope in wanted.as_array().into_iter().flatten() {
                    let Some(scope) = scope.as_str() else {
                        return Err(format!("a scope of {name} is not a string"));
                    };
                    if !scopes.iter().any(|s| s == scope) {
                        scopes.push(scope.to_owned());
                    }
                }
            } else {
                other = true;
                if !unchecked.contains(name) {
                    unchecked.push(name.clone());
                }
            }
        }
        alternatives.push((scopes, other));
        shown.push(format!("{{{}}}", parts.join(", ")));
    }
    let mut notes = Vec::new();
    if !unchecked.is_empty() {
        notes.push(format!(
            "not checked by the gateway (not an OAuth 2 / OpenID Connect scheme, or not the chosen --scheme): {}; a valid token is required",
            unchecked.join(", ")
        ));
    }
    if let [(scopes, _)] = alternatives.as_slice() {
        return Ok((
            Access::Required {
                scopes: scopes.clone(),
                any_scope: Vec::new(),
            },
            notes,
        ));
    }
    // Alternatives of exactly one scope each: `any_scope` is exact.
    if alternatives.iter().all(|(s, _)| s.len() == 1) {
        let mut any: Vec<String> = Vec::new();
        for (s, _) in &alternatives {
            if !any.contains(&s[0]) {
                any.push(s[0].clone());
            }
        }
        return Ok((
            Access::Required {
                scopes: Vec::new(),
                any_scope: any,
            },
            notes,
        ));
    }
    // Anything else cannot be written as one rule: the stricter union.
    let mut union: Vec<String> = Vec::new();
    for (s, _) in &alternatives {
        for scope in s {
            if !union.contains(scope) {
                union.push(scope.clone());
            }
        }
    }
    notes.push(format!(
        "the document accepts any of {}: not expressible as one rule, so every scope is required (stricter)",
        shown.join(" or ")
    ));
    Ok((
        Access::Required {
            scopes: union,
            any_scope: Vec::new(),
        },
        notes,
    ))
}

/// The line and column of the first key `needle` in the text (quoted or
/// not), else 1:1.
fn locate(text: &str, needle: &str) -> (u64, u64) {
    if needle.is_empty() {
        return (1, 1);
    }
    for (n, line) in text.lines().enumerate() {
        for form in [
            format!("\"{needle}\""),
            format!("'{needle}'"),
            needle.to_owned(),
        ] {
            if let Some(col) = line.find(&form) {
                let rest = line[col + form.len()..].trim_start();
                if rest.starts_with(':') {
                    return (n as u64 + 1, col as u64 + 1);
                }
            }
        }
    }
    (1, 1)
}

/// The `routes:` block for `doc`, as YAML text with comments.
pub fn render(doc: &Document, source: &str) -> String {
    use std::fmt::Write as _;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let list = |items: &[String]| items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `scopegate routes --from-openapi {source}` from {} (OpenAPI {}).",
        if doc.title.is_empty() {
            "an untitled document".to_owned()
        } else {
            q(&doc.title)
        },
        doc.version
    );
    if doc.operations.is_empty() {
        out.push_str("# The document has no operations.\nroutes: []\n");
        return out;
    }
    out.push_str("routes:\n");
    for op in &doc.operations {
        let id = op
            .operation_id
            .as_deref()
            .map(|id| format!(" ({id})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  # {} {}{id}", op.method, op.path);
        for note in &op.notes {
            let _ = writeln!(out, "  # {note}");
        }
        let _ = writeln!(out, "  - path: {}", q(&op.path));
        let _ = writeln!(out, "    methods: [{}]", op.method);
        match &op.access {
            Access::None => out.push_str("    auth: none\n"),
            Access::Required { scopes, any_scope } => {
                if scopes.is_empty() && any_scope.is_empty() {
                    out.push_str("    auth: required\n");
                }
                if !scopes.is_empty() {
                    let _ = writeln!(out, "    scopes: [{}]", list(scopes));
                }
                if !any_scope.is_empty() {
                    let _ = writeln!(out, "    any_scope: [{}]", list(any_scope));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r##"
openapi: 3.1.0
info: { title: T, version: "1" }
security: [{ oauth: [read] }]
components:
  securitySchemes:
    oauth: { type: oauth2, flows: {} }
    oidc: { $ref: "#/components/securitySchemes/oauth" }
    key: { type: apiKey, in: header, name: X-Key }
  pathItems:
    shared:
      get: { security: [] }
paths:
  /a:
    get: {}
    post: { security: [{ oauth: [write, read] }] }
    put: { security: [{ oauth: [a] }, { oidc: [b] }] }
    patch: { security: [{ oauth: [a, b] }, { oauth: [c] }] }
    delete: { security: [{ key: [] }] }
    options: { security: [{}, { oauth: [x] }] }
  /b/{id}:
    $ref: "#/components/pathItems/shared"
"##;

    fn access_of(doc: &Document, method: &str, path: &str) -> (Access, usize) {
        let op = doc
            .operations
            .iter()
            .find(|o| o.method == method && o.path == path)
            .expect("operation");
        (op.access.clone(), op.notes.len())
    }

    fn req(scopes: &[&str], any: &[&str]) -> Access {
        Access::Required {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            any_scope: any.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn security_requirements_become_rules() {
        let doc = convert(DOC, None).expect("converts");
        assert_eq!(doc.version, "3.1.0");
        assert_eq!(
            access_of(&doc, "GET", "/a"),
            (req(&["read"], &[]), 0),
            "global"
        );
        assert_eq!(
            access_of(&doc, "POST", "/a"),
            (req(&["write", "read"], &[]), 0)
        );
        assert_eq!(
            access_of(&doc, "PUT", "/a"),
            (req(&[], &["a", "b"]), 0),
            "any_scope"
        );
        assert_eq!(
            access_of(&doc, "PATCH", "/a"),
            (req(&["a", "b", "c"], &[]), 1),
            "stricter union"
        );
        assert_eq!(
            access_of(&doc, "DELETE", "/a"),
            (req(&[], &[]), 1),
            "apiKey only"
        );
        assert_eq!(
            access_of(&doc, "OPTIONS", "/a"),
            (Access::None, 1),
            "anonymous allowed"
        );
        assert_eq!(
            access_of(&doc, "GET", "/b/{id}"),
            (Access::None, 0),
            "$ref path item"
        );
        // Only `oidc`'s scopes: `oauth` requirements count as no scope.
        let only = convert(DOC, Some("oidc")).expect("converts");
        assert_eq!(access_of(&only, "GET", "/a"), (req(&[], &[]), 1));
    }

    #[test]
    fn unreadable_documents_say_where() {
        let swagger = convert("swagger: \"2.0\"\npaths: {}\n", None).expect_err("2.0");
        assert_eq!((swagger.line, swagger.column), (1, 1));
        let v2 = convert("info: {}\nopenapi: 2.0.0\n", None).expect_err("not 3");
        assert_eq!(v2.line, 2);
        let dotted = convert(
            "openapi: 3.0.3\npaths:\n  /ok: {}\n  /{name}.json:\n    get: {}\n",
            None,
        )
        .expect_err("template");
        assert_eq!((dotted.line, dotted.column), (4, 3), "{dotted}");
        assert!(dotted.message.contains("/{name}.json"), "{dotted}");
        let broken = convert("openapi: 3.0.3\npaths: [\n", None).expect_err("yaml");
        assert!(broken.line >= 2, "{broken}");
        assert!(convert("openapi: 3.0.3\n", Some("nope")).is_err());
    }
}
