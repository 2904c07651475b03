//! Routing: path normalization, templates and the route table that answers
//! "which rule governs this method on this path?" with a match, 404 or 405.
//!
//! Pure: depends on `std`, `http::Method` and [`crate::policy`] (the rule a
//! route carries). No I/O.

mod normalize;
mod template;

use std::collections::HashMap;

use http::Method;

pub use normalize::{
    PathError, Semicolons, is_unreserved_or_sub_delim, normalize, normalize_with, percent_decode,
};
pub use template::{Segment, Template, TemplateError};

use crate::policy::Policy;

/// A set of HTTP methods. `GET` implies `HEAD` (SPEC §Routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Methods(u16);

/// The methods a route may name, in the order an `Allow` header lists them.
pub const KNOWN_METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

fn method_bit(method: &Method) -> Option<u16> {
    KNOWN_METHODS
        .iter()
        .position(|m| m == method)
        .map(|i| 1 << i)
}

impl Methods {
    /// Every method, including extension methods the table cannot name.
    pub const ALL: Methods = Methods(u16::MAX);

    /// Builds a set from the config's list; `GET` adds `HEAD`. Returns the
    /// first method the gateway cannot route (e.g. `CONNECT`) as an error.
    pub fn from_list<'a>(list: impl IntoIterator<Item = &'a Method>) -> Result<Self, &'a Method> {
        let mut bits = 0;
        for method in list {
            bits |= method_bit(method).ok_or(method)?;
            if *method == Method::GET {
                bits |= method_bit(&Method::HEAD).unwrap_or(0);
            }
        }
        Ok(Methods(bits))
    }

    pub fn contains(self, method: &Method) -> bool {
        if self == Methods::ALL {
            return true;
        }
        method_bit(method).is_some_and(|bit| self.0 & bit != 0)
    }

    pub fn overlaps(self, other: Methods) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_all(self) -> bool {
        self == Methods::ALL
    }

    /// The methods by name, for `Allow` headers and the route table print-out.
    pub fn names(self) -> Vec<&'static str> {
        if self.is_all() {
            return vec!["*"];
        }
        KNOWN_METHODS
            .iter()
            .filter(|m| self.contains(m))
            .map(Method::as_str)
            .collect()
    }
}

/// Whether a route needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Forward without looking at tokens.
    None,
    /// A valid token, then the route's policy.
    Required,
}

/// One rule of a template: for these methods, this authorization, to this
/// upstream.
#[derive(Debug, Clone)]
pub struct Rule {
    pub methods: Methods,
    pub auth: Auth,
    pub policy: Policy,
    /// Index into the config's upstreams (`None`: forward-auth only).
    pub upstream: Option<usize>,
    /// Index into the config's quota policies.
    pub rate_limit: Option<usize>,
    /// `mode: shadow`: a 401 or 403 is reported, and the request forwarded.
    pub shadow: bool,
    /// Overrides the token's issuer's DPoP settings on this rule.
    pub dpop: Option<crate::dpop::Settings>,
    /// Where the rule was written: `gateway.yaml:12`, or the OpenAPI
    /// operation it was generated from (`check` shows it).
    pub origin: std::sync::Arc<str>,
}

/// All rules that share one template (and host).
#[derive(Debug, Clone)]
pub struct Route {
    pub template: Template,
    /// The host the route is bound to (lower-case, no port), if any.
    pub host: Option<String>,
    /// The template's text (`host` + template when bound), shared by logs
    /// and metric labels.
    pub label: std::sync::Arc<str>,
    pub rules: Vec<Rule>,
    /// Precomputed `Allow` header value for a 405.
    pub allow: String,
}

/// What the table says about a request.
#[derive(Debug)]
pub enum Lookup<'t> {
    Matched { route: &'t Route, rule: &'t Rule },
    NotFound,
    MethodNotAllowed { route: &'t Route },
}

impl Lookup<'_> {
    pub fn is_matched(&self) -> bool {
        matches!(self, Lookup::Matched { .. })
    }
}

/// Two rules would govern the same requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("overlaps the route {existing} for the same methods ({methods})")]
pub struct OverlapError {
    pub existing: String,
    pub methods: String,
}

/// How paths are read, for upstreams that route differently from RFC 3986
/// (SPEC §4.2 `paths:`). Matching only: the forwarded path is the
/// normalized one, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathRules {
    pub semicolons: Semicolons,
    /// `case: insensitive`: paths and templates are matched ASCII-lower-cased.
    pub case_insensitive: bool,
    /// `trailing_slash: either`: `/a` and `/a/` are one template.
    pub trailing_slash_either: bool,
}

impl PathRules {
    /// The path's segments as the table matches them.
    fn segments<'p>(&self, path: &'p str) -> Segments<'p> {
        let mut rest = path.strip_prefix('/').unwrap_or(path);
        // `/a/` is `/a`, but `/` stays one empty segment.
        if self.trailing_slash_either && rest.contains('/') {
            rest = rest.strip_suffix('/').unwrap_or(rest);
        }
        Segments {
            rest: Some(rest),
            case_insensitive: self.case_insensitive,
        }
    }
}

/// A path's segments, split as they are matched: no list is made, and a
/// copy (three words) is where a search backtracks from.
#[derive(Debug, Clone)]
struct Segments<'p> {
    /// What is left of the path after the segments already given; `None`
    /// once the last one was.
    rest: Option<&'p str>,
    case_insensitive: bool,
}

impl<'p> Iterator for Segments<'p> {
    type Item = std::borrow::Cow<'p, str>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let segment = match rest.split_once('/') {
            Some((segment, after)) => {
                self.rest = Some(after);
                segment
            }
            None => {
                self.rest = None;
                rest
            }
        };
        Some(
            if self.case_insensitive && segment.bytes().any(|b| b.is_ascii_uppercase()) {
                segment.to_ascii_lowercase().into()
            } else {
                segment.into()
            },
        )
    }
}

/// The compiled route table: a trie over path segments in which, at every
/// depth, a literal child is tried before a `{param}` child and that before a
/// `{*rest}`; the most specific template wins whatever the file order.
#[derive(Debug, Default)]
pub struct Table {
    routes: Vec<Route>,
    root: Node,
    /// Host-bound routes, by host: tried first for a request to that host.
    hosts: HashMap<String, Node, foldhash::fast::RandomState>,
    rules: PathRules,
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<String, Node, foldhash::fast::RandomState>,
    param: Option<Box<Node>>,
    catch_all: Option<usize>,
    end: Option<usize>,
}

impl Table {
    /// An empty table that reads paths by `rules`.
    pub fn new(rules: PathRules) -> Self {
        Table {
            rules,
            ..Table::default()
        }
    }

    pub fn path_rules(&self) -> PathRules {
        self.rules
    }

    /// Adds a rule; rules with an equal template share a [`Route`]. Under
    /// `case: insensitive` or `trailing_slash: either`, templates equal once
    /// folded are the same template.
    pub fn insert(&mut self, template: Template, rule: Rule) -> Result<(), OverlapError> {
        self.insert_for(None, template, rule)
    }

    /// Adds a rule bound to `host` (lower-case, without a port), or to
    /// every host. A bound and an unbound route may share a template: the
    /// bound one wins for its host.
    pub fn insert_for(
        &mut self,
        host: Option<String>,
        template: Template,
        rule: Rule,
    ) -> Result<(), OverlapError> {
        let mut node = match &host {
            Some(h) => self.hosts.entry(h.clone()).or_default(),
            None => &mut self.root,
        };
        let mut slot = None;
        let mut segments = template.segments();
        if self.rules.trailing_slash_either
            && segments.len() > 1
            && segments.last() == Some(&Segment::Literal(String::new()))
        {
            segments = &segments[..segments.len() - 1];
        }
        for segment in segments {
            match segment {
                Segment::Literal(text) => {
                    let key = if self.rules.case_insensitive {
                        text.to_ascii_lowercase()
                    } else {
                        text.clone()
                    };
                    node = node.literals.entry(key).or_default()
                }
                Segment::Param => node = node.param.get_or_insert_with(Box::default),
                Segment::CatchAll => {
                    slot = Some(&mut node.catch_all);
                    break;
                }
            }
        }
        let slot = slot.unwrap_or(&mut node.end);
        let index = match *slot {
            Some(index) => index,
            None => {
                let label = match &host {
                    Some(h) => format!("{h}{}", template.as_str()).into(),
                    None => template.as_str().into(),
                };
                self.routes.push(Route {
                    template,
                    host,
                    label,
                    rules: Vec::new(),
                    allow: String::new(),
                });
                *slot = Some(self.routes.len() - 1);
                self.routes.len() - 1
            }
        };
        let route = &mut self.routes[index];
        if let Some(existing) = route
            .rules
            .iter()
            .find(|r| r.methods.overlaps(rule.methods))
        {
            let shared = Methods(existing.methods.0 & rule.methods.0);
            return Err(OverlapError {
                existing: route.label.to_string(),
                methods: shared.names().join(", "),
            });
        }
        route.rules.push(rule);
        let mut all = Methods::default();
        for r in &route.rules {
            all.0 |= r.methods.0;
        }
        route.allow = all.names().join(", ");
        Ok(())
    }

    /// Finds the rule for a normalized path (on any host).
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        self.lookup_on(None, method, path)
    }

    /// Finds the rule for a normalized path requested of `host` (a `Host`
    /// value: compared case-insensitively, without its port).
    pub fn lookup_on(&self, host: Option<&str>, method: &Method, path: &str) -> Lookup<'_> {
        let segments = self.rules.segments(path);
        let bound = host
            .filter(|_| !self.hosts.is_empty())
            .and_then(|h| self.hosts.get(&*host_key(h)))
            .and_then(|node| node.find(segments.clone()));
        let Some(index) = bound.or_else(|| self.root.find(segments)) else {
            return Lookup::NotFound;
        };
        let route = &self.routes[index];
        match route.rules.iter().find(|r| r.methods.contains(method)) {
            Some(rule) => Lookup::Matched { route, rule },
            None => Lookup::MethodNotAllowed { route },
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// A `Host` value as the table keys it: without the port, lower-cased
/// (`[::1]:8080` → `[::1]`, `API.example.com:443` → `api.example.com`).
pub fn host_key(host: &str) -> std::borrow::Cow<'_, str> {
    let bare = match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && (host.starts_with('[') || !host[..i].contains(':')) =>
        {
            &host[..i]
        }
        _ => host,
    };
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        bare.to_ascii_lowercase().into()
    } else {
        bare.into()
    }
}

impl Node {
    /// Depth-first, most specific child first. Each trie node is visited at
    /// most once, so the cost is bounded by the table, not by the path.
    fn find(&self, mut segments: Segments<'_>) -> Option<usize> {
        let Some(first) = segments.next() else {
            return self.end;
        };
        if let Some(found) = self
            .literals
            .get(first.as_ref())
            .and_then(|child| child.find(segments.clone()))
        {
            return Some(found);
        }
        if !first.is_empty()
            && let Some(found) = self.param.as_ref().and_then(|child| child.find(segments))
        {
            return Some(found);
        }
        // `{*rest}` needs at least one non-empty segment; a trailing slash
        // after it belongs to the rest.
        if !first.is_empty() {
            return self.catch_all;
        }
        None
    }
}

/// The route table as text, for `scopegate check`; `upstreams` names the
/// config's upstreams by index.
pub fn describe(table: &Table, upstreams: &[&str]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<28} {:<9} {:<14} {:<24} REQUIRES",
        "ROUTE", "METHODS", "AUTH", "UPSTREAM", "FROM"
    );
    for route in table.routes() {
        for rule in &route.rules {
            let auth = match rule.auth {
                Auth::None => "none",
                Auth::Required => "required",
            };
            let mut needs = Vec::new();
            if !rule.policy.scopes().is_empty() {
                needs.push(format!("scopes: {}", rule.policy.scopes().join(" ")));
            }
            if !rule.policy.any_scope().is_empty() {
                needs.push(format!("any of: {}", rule.policy.any_scope().join(" ")));
            }
            if !rule.policy.issuers().is_empty() {
                needs.push(format!("issuers: {}", rule.policy.issuers().join(" ")));
            }
            for c in rule.policy.claims() {
                needs.push(c.describe());
            }
            let needs = if needs.is_empty() {
                "-".to_owned()
            } else {
                needs.join("; ")
            };
            let upstream = rule
                .upstream
                .and_then(|i| upstreams.get(i))
                .copied()
                .unwrap_or("-");
            let _ = writeln!(
                out,
                "{:<40} {:<28} {:<9} {:<14} {:<24} {}",
                &*route.label,
                rule.methods.names().join(","),
                auth,
                upstream,
                &*rule.origin,
                needs
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(methods: &[Method]) -> Rule {
        let methods = if methods.is_empty() {
            Methods::ALL
        } else {
            Methods::from_list(methods).expect("known methods")
        };
        Rule {
            origin: "test".into(),
            dpop: None,
            methods,
            auth: Auth::Required,
            policy: Policy::default(),
            upstream: None,
            rate_limit: None,
            shadow: false,
        }
    }

    #[test]
    fn host_bound_routes_win_for_their_host() {
        let mut t = Table::default();
        t.insert(Template::parse("/api/{x}").expect("valid"), rule(&[]))
            .expect("insert");
        let mut bound = rule(&[Method::GET]);
        bound.upstream = Some(1);
        t.insert_for(
            Some("api.example.com".into()),
            Template::parse("/api/{x}").expect("valid"),
            bound,
        )
        .expect("a bound twin of an unbound template");
        let upstream =
            |host: Option<&str>, method: Method| match t.lookup_on(host, &method, "/api/a") {
                Lookup::Matched { rule, .. } => Some(rule.upstream),
                Lookup::MethodNotAllowed { .. } => Some(Some(99)),
                Lookup::NotFound => None,
            };
        assert_eq!(
            upstream(Some("api.example.com"), Method::GET),
            Some(Some(1))
        );
        assert_eq!(
            upstream(Some("API.Example.com:8443"), Method::GET),
            Some(Some(1))
        );
        assert_eq!(
            upstream(Some("api.example.com"), Method::POST),
            Some(Some(99)),
            "the bound route wins: 405"
        );
        assert_eq!(upstream(Some("other.example.com"), Method::GET), Some(None));
        assert_eq!(upstream(None, Method::GET), Some(None));
        assert_eq!(host_key("[::1]:8080"), "[::1]");
        assert_eq!(host_key("[::1]"), "[::1]");
    }

    fn table(templates: &[(&str, &[Method])]) -> Table {
        let mut table = Table::default();
        for (text, methods) in templates {
            table
                .insert(
                    Template::parse(text).expect("valid template"),
                    rule(methods),
                )
                .expect("no overlap");
        }
        table
    }

    fn matched(table: &Table, method: Method, path: &str) -> Option<String> {
        match table.lookup(&method, path) {
            Lookup::Matched { route, .. } => Some(route.template.as_str().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn most_specific_wins_whatever_the_order() {
        let orders: [&[(&str, &[Method])]; 2] = [
            &[
                ("/{*rest}", &[]),
                ("/a/{x}", &[]),
                ("/a/b", &[]),
                ("/a/{x}/c", &[]),
            ],
            &[
                ("/a/{x}/c", &[]),
                ("/a/b", &[]),
                ("/a/{x}", &[]),
                ("/{*rest}", &[]),
            ],
        ];
        for order in orders {
            let t = table(order);
            assert_eq!(matched(&t, Method::GET, "/a/b").as_deref(), Some("/a/b"));
            assert_eq!(matched(&t, Method::GET, "/a/z").as_deref(), Some("/a/{x}"));
            assert_eq!(
                matched(&t, Method::GET, "/a/b/c").as_deref(),
                Some("/a/{x}/c")
            );
            assert_eq!(
                matched(&t, Method::GET, "/a/b/d").as_deref(),
                Some("/{*rest}")
            );
            assert_eq!(matched(&t, Method::GET, "/x").as_deref(), Some("/{*rest}"));
            assert_eq!(matched(&t, Method::GET, "/").as_deref(), None);
        }
    }

    #[test]
    fn backtracks_from_literal_to_param() {
        let t = table(&[("/a/b/c", &[]), ("/a/{x}/d", &[])]);
        assert_eq!(
            matched(&t, Method::GET, "/a/b/d").as_deref(),
            Some("/a/{x}/d")
        );
    }

    #[test]
    fn trailing_slash_is_significant() {
        let t = table(&[("/api/private", &[]), ("/dir/", &[])]);
        assert!(matched(&t, Method::GET, "/api/private").is_some());
        assert!(matched(&t, Method::GET, "/api/private/").is_none());
        assert!(matched(&t, Method::GET, "/dir/").is_some());
        assert!(matched(&t, Method::GET, "/dir").is_none());
    }

    #[test]
    fn params_need_a_non_empty_segment() {
        let t = table(&[("/u/{id}", &[]), ("/files/{*rest}", &[])]);
        assert!(matched(&t, Method::GET, "/u/").is_none());
        assert!(matched(&t, Method::GET, "/u/1").is_some());
        assert!(matched(&t, Method::GET, "/u/1/").is_none());
        assert!(matched(&t, Method::GET, "/files/").is_none());
        assert!(matched(&t, Method::GET, "/files").is_none());
        assert!(matched(&t, Method::GET, "/files/a").is_some());
        assert!(matched(&t, Method::GET, "/files/a/b/").is_some());
    }

    #[test]
    fn methods_get_implies_head_and_405_lists_allow() {
        let t = table(&[
            ("/m", &[Method::GET]),
            ("/m", &[Method::POST, Method::DELETE]),
        ]);
        assert!(matched(&t, Method::HEAD, "/m").is_some());
        assert!(matched(&t, Method::POST, "/m").is_some());
        match t.lookup(&Method::PUT, "/m") {
            Lookup::MethodNotAllowed { route } => {
                assert_eq!(route.allow, "GET, HEAD, POST, DELETE")
            }
            other => panic!("expected 405, got {other:?}"),
        }
        assert!(matches!(t.lookup(&Method::GET, "/n"), Lookup::NotFound));
    }

    #[test]
    fn overlaps_are_refused() {
        let mut t = table(&[("/a/{x}", &[Method::GET])]);
        let err = t
            .insert(
                Template::parse("/a/{y}").expect("valid"),
                rule(&[Method::HEAD]),
            )
            .expect_err("GET covers HEAD");
        assert_eq!(err.existing, "/a/{x}");
        assert!(
            t.insert(Template::parse("/a/{y}").expect("valid"), rule(&[]))
                .is_err()
        );
        assert!(
            t.insert(
                Template::parse("/a/{y}").expect("valid"),
                rule(&[Method::POST])
            )
            .is_ok()
        );
    }

    #[test]
    fn case_insensitive_and_trailing_slash_either() {
        let rules = PathRules {
            case_insensitive: true,
            trailing_slash_either: true,
            ..PathRules::default()
        };
        let mut t = Table::new(rules);
        for text in ["/api/Admin", "/files/{*rest}", "/"] {
            t.insert(Template::parse(text).expect("valid"), rule(&[]))
                .expect("no overlap");
        }
        for path in ["/api/admin", "/API/ADMIN", "/api/admin/", "/Api/aDmin/"] {
            assert_eq!(
                matched(&t, Method::GET, path).as_deref(),
                Some("/api/Admin"),
                "{path}"
            );
        }
        assert_eq!(matched(&t, Method::GET, "/").as_deref(), Some("/"));
        assert_eq!(
            matched(&t, Method::GET, "/FILES/a/").as_deref(),
            Some("/files/{*rest}")
        );
        assert!(matched(&t, Method::GET, "/files/").is_none());
        // Equal once folded: the same template, so an overlap.
        for twin in ["/API/admin", "/api/admin/"] {
            assert!(
                t.insert(Template::parse(twin).expect("valid"), rule(&[Method::GET]))
                    .is_err(),
                "{twin}"
            );
        }
        // Strict by default.
        let strict = table(&[("/api/Admin", &[])]);
        assert!(matched(&strict, Method::GET, "/api/admin").is_none());
        assert!(matched(&strict, Method::GET, "/api/Admin/").is_none());
    }

    #[test]
    fn extension_methods_match_only_open_rules() {
        let custom = Method::from_bytes(b"PROPFIND").expect("token");
        let t = table(&[("/open", &[]), ("/closed", &[Method::GET])]);
        assert!(matched(&t, custom.clone(), "/open").is_some());
        assert!(matches!(
            t.lookup(&custom, "/closed"),
            Lookup::MethodNotAllowed { .. }
        ));
    }
}
