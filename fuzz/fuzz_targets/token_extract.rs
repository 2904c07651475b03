//! Token extraction from arbitrary headers and query strings. Property: no
//! panic; a found token is non-empty, has no space, and comes from a
//! configured source.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use scopegate::token::{Source, extract};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let mut headers = HeaderMap::new();
    let query = parts.next().and_then(|q| std::str::from_utf8(q).ok());
    for (i, value) in parts.enumerate() {
        let name = match i % 3 {
            0 => HeaderName::from_static("authorization"),
            1 => HeaderName::from_static("cookie"),
            _ => HeaderName::from_static("x-other"),
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    let sources = [Source::Header, Source::Cookie("at".into()), Source::Query("access_token".into())];
    if let Ok(Some(token)) = extract::find(&sources, &headers, query) {
        assert!(!token.is_empty() && !token.contains(' '), "{token:?}");
    }
    let _ = extract::find(&sources[..1], &headers, query);
});
