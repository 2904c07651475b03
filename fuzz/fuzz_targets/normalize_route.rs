//! Path normalization + route matching. Property: a path is refused, or its
//! normal form has no `.`/`..` segment, no `//`, no encoded slash or
//! backslash, is a fixed point, and routes the same when matched again.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use scopegate::route::{Auth, Lookup, Methods, Rule, Table, Template, normalize};

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table::default();
        for path in ["/api/public", "/api/private", "/api/items/{id}", "/api/items/{id}/parts", "/static/{*rest}", "/"] {
            let rule = Rule { methods: Methods::ALL, auth: Auth::Required, policy: Default::default(), upstream: None, rate_limit: None, shadow: false };
            t.insert(Template::parse(path).expect("template"), rule).expect("insert");
        }
        t
    })
}

fn route(path: &str) -> Option<String> {
    match table().lookup(&Method::GET, path) {
        Lookup::Matched { route, .. } => Some(route.template.as_str().to_owned()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok(normal) = normalize(path) else { return };
    assert!(normal.starts_with('/'));
    assert!(!normal.contains("//"), "{normal:?}");
    let upper = normal.to_ascii_uppercase();
    assert!(!upper.contains("%2F") && !upper.contains("%5C") && !normal.contains('\\'), "{normal:?}");
    for segment in normal.split('/') {
        let bare = segment.split(';').next().unwrap_or("");
        assert!(bare != "." && bare != "..", "{normal:?} from {path:?}");
    }
    assert_eq!(normalize(&normal).as_deref(), Ok(normal.as_str()), "not a fixed point");
    assert_eq!(route(&normal), route(&normalize(&normal).expect("fixed point")));
});
