//! CORS (SPEC §Decision order step 1): genuine preflights are answered by
//! the gateway without a token; every response to an allowed origin —
//! refusals included, so that browser apps can read why — carries
//! `Access-Control-Allow-Origin` and `Vary: Origin`. Other origins get no
//! CORS headers at all, and the browser blocks them.
//!
//! Pure: depends on `http` types only.

use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use crate::Body;

/// A validated `cors:` block.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`); `None` means any origin.
    origins: Option<Vec<String>>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    /// Lower-cased.
    headers: Vec<String>,
    allow_headers: HeaderValue,
    max_age: HeaderValue,
}

impl Cors {
    /// `origins` may hold `*` for any origin. Header values were checked
    /// by the config layer (tokens only), so building them cannot fail.
    pub fn new(
        origins: Vec<String>,
        methods: Vec<Method>,
        headers: Vec<String>,
        max_age: Duration,
    ) -> Option<Cors> {
        let any = origins.iter().any(|o| o == "*");
        let allow_methods = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let allow_headers = headers.join(", ");
        Some(Cors {
            origins: if any { None } else { Some(origins) },
            allow_methods: HeaderValue::from_str(&allow_methods).ok()?,
            allow_headers: HeaderValue::from_str(&allow_headers).ok()?,
            max_age: HeaderValue::from(max_age.as_secs()),
            methods,
            headers: headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
        })
    }

    fn allows_origin(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        match &self.origins {
            None => origin != "null",
            Some(list) => list.iter().any(|o| o == origin),
        }
    }

    /// `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The gateway's answer to a preflight: 204, with the CORS headers only
    /// when origin, method and every requested header are allowed.
    pub fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let mut response = Response::new(crate::full(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let Some(origin) = headers.get(ORIGIN).filter(|o| self.allows_origin(o)) else {
            return response;
        };
        let method_ok = headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| {
                self.methods.contains(&m)
                    || (m == Method::HEAD && self.methods.contains(&Method::GET))
            });
        let headers_ok = headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .all(|h| self.headers.contains(&h));
        if method_ok && headers_ok {
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
            out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        }
        response
    }

    /// Adds the CORS response headers for an allowed `origin`.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|o| self.allows_origin(o)) else {
            // The upstream must not grant what the gateway does not.
            headers.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        // Scripts may read why they were refused.
        const WWW_AUTHENTICATE: HeaderName = http::header::WWW_AUTHENTICATE;
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(WWW_AUTHENTICATE.as_str()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors::new(
            vec!["https://app.example.com".into()],
            vec![Method::GET, Method::POST],
            vec!["Authorization".into(), "Content-Type".into()],
            Duration::from_secs(600),
        )
        .expect("valid")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn preflight_rules() {
        let c = cors();
        let good = headers(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ]);
        assert!(Cors::is_preflight(&Method::OPTIONS, &good));
        assert!(!Cors::is_preflight(
            &Method::OPTIONS,
            &headers(&[("origin", "https://app.example.com")])
        ));
        let r = c.preflight(&good);
        assert_eq!(r.status(), 204);
        assert_eq!(
            r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(r.headers()[ACCESS_CONTROL_MAX_AGE], "600");
        for bad in [
            headers(&[
                ("origin", "https://evil.example.com"),
                ("access-control-request-method", "GET"),
            ]),
            headers(&[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "DELETE"),
            ]),
            headers(&[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-other"),
            ]),
        ] {
            assert!(
                !c.preflight(&bad)
                    .headers()
                    .contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn responses_are_decorated_only_for_allowed_origins() {
        let c = cors();
        let mut h = HeaderMap::new();
        c.decorate(
            Some(&HeaderValue::from_static("https://app.example.com")),
            &mut h,
        );
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[VARY], "Origin");
        let mut h = headers(&[("access-control-allow-origin", "*")]);
        c.decorate(
            Some(&HeaderValue::from_static("https://evil.example.com")),
            &mut h,
        );
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
