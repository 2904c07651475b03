//! Property tests (proptest) for path normalization and routing: paths
//! built from dangerous pieces are either refused, or normalized exactly as
//! an independent RFC 3986 reference does, to a form that any standard
//! resolver leaves as it is, and that routes the same when matched again.

use http::Method;
use proptest::prelude::*;
use scopegate::route::{Auth, Lookup, Methods, Rule, Table, Template, normalize};

const PIECES: &[&str] = &[
    "a", "b", "api", "public", "private", "admin", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e",
    "%2e.", "%2f", "%2F", "%5c", "%5C", ";", ";x", "..;", ".;", "%3b", "\\", "é", "%41", "%7e",
    "~", "-", "%20", "%25", "%252e", "", "x.y", "...", "%3A", "%3a", "%40", "%21", "%2B", "%3D",
    ":", "@", "%3F", "%23",
];

/// RFC 3986 §5.2.4, written from the text (input and output buffers).
fn remove_dot_segments(path: &str) -> String {
    let mut input = path.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input
            .strip_prefix("../")
            .or_else(|| input.strip_prefix("./"))
        {
            input = rest.to_owned();
        } else if input.starts_with("/./") {
            input = input[2..].to_owned();
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." {
                "/".to_owned()
            } else {
                input[3..].to_owned()
            };
            if let Some(i) = output.rfind('/') {
                output.truncate(i);
            } else {
                output.clear();
            }
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = input[end..].to_owned();
        }
    }
    output
}

/// The reference: decode escaped pchars — unreserved, sub-delims, `:` and
/// `@` (RFC 3986 §3.3) — and upper-case the other escapes, merge slashes,
/// remove dot segments.
fn reference(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let v = u8::from_str_radix(&path[i + 1..i + 3], 16).expect("valid escape");
            if v.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&v) {
                decoded.push(char::from(v));
            } else {
                decoded.push_str(&format!("%{v:02X}"));
            }
            i += 3;
        } else {
            decoded.push(char::from(bytes[i]));
            i += 1;
        }
    }
    let mut merged = String::new();
    for c in decoded.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    remove_dot_segments(&merged)
}

fn table() -> Table {
    let mut t = Table::default();
    for path in [
        "/api/public",
        "/api/private",
        "/api/admin",
        "/api/{x}",
        "/a/{x}/b",
        "/static/{*rest}",
    ] {
        let rule = Rule {
            origin: "test".into(),
            dpop: None,
            methods: Methods::ALL,
            auth: Auth::Required,
            policy: Default::default(),
            upstream: None,
            rate_limit: None,
            shadow: false,
        };
        t.insert(Template::parse(path).expect("template"), rule)
            .expect("insert");
    }
    t
}

fn routed(t: &Table, path: &str) -> Option<String> {
    match t.lookup(&Method::GET, path) {
        Lookup::Matched { route, .. } => Some(route.template.as_str().to_owned()),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn dangerous_paths_are_refused_or_normalized_like_rfc3986(pieces in prop::collection::vec(prop::sample::select(PIECES), 1..10)) {
        let path = format!("/{}", pieces.join("/"));
        let Ok(normal) = normalize(&path) else { return Ok(()) };
        // Refusals are checked elsewhere; what passes must be exactly the
        // reference resolution of the request (never above the root).
        prop_assert_eq!(&normal, &reference(&path), "path {}", path);
        // A standard resolver on the upstream changes nothing more.
        prop_assert_eq!(remove_dot_segments(&normal), normal.clone());
        prop_assert!(!normal.contains("//"));
        for segment in normal.split('/') {
            prop_assert!(segment != "." && segment != "..", "{}", normal);
        }
        prop_assert!(!normal.contains(';'), "a ';' is refused by default: {}", normal);
        let upper = normal.to_ascii_uppercase();
        prop_assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%2E"));
        // Matching is stable: the forwarded path routes like the authorized one.
        let t = table();
        prop_assert_eq!(routed(&t, &normal), routed(&t, &normalize(&normal).expect("fixed point")));
    }
}
