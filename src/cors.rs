//! CORS (SPEC §Decision order step 1): genuine preflights are answered by
//! the gateway without a token; every response to an allowed origin —
//! refusals included, so that browser apps can read why — carries
//! `Access-Control-Allow-Origin` and `Vary: Origin`. Other origins get no
//! CORS headers at all, and the browser blocks them. `*` is answered with a
//! literal `*`, which browsers never combine with credentials; credentials
//! are allowed only for listed origins with `allow_credentials: true`, and
//! the upstream's own `Access-Control-Allow-Credentials` never gets through
//! otherwise.
//!
//! Pure: depends on `http` types only.

use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
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
    /// Listed origins may send credentials.
    credentials: bool,
}

/// How an origin is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    /// By `*`: answered with a literal `*`, never with credentials.
    Any,
    /// Listed by name.
    Listed,
}

impl Cors {
    /// `origins` may hold `*` for any origin. Header values were checked
    /// by the config layer (tokens only), so building them cannot fail.
    pub fn new(
        origins: Vec<String>,
        methods: Vec<Method>,
        headers: Vec<String>,
        max_age: Duration,
        credentials: bool,
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
            credentials,
        })
    }

    fn allows_origin(&self, origin: &HeaderValue) -> Option<Allowed> {
        let origin = origin.to_str().ok()?;
        match &self.origins {
            None => (origin != "null").then_some(Allowed::Any),
            Some(list) => list.iter().any(|o| o == origin).then_some(Allowed::Listed),
        }
    }

    /// `Access-Control-Allow-Origin` (and `-Credentials`) for an allowed origin.
    fn grant(&self, origin: &HeaderValue, allowed: Allowed, out: &mut HeaderMap) {
        out.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
        match allowed {
            Allowed::Any => {
                out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            }
            Allowed::Listed => {
                out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                if self.credentials {
                    out.insert(
                        ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
            }
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
        let Some((origin, allowed)) = headers
            .get(ORIGIN)
            .and_then(|o| Some((o, self.allows_origin(o)?)))
        else {
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
            self.grant(origin, allowed, out);
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
            out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        }
        response
    }

    /// Adds the CORS response headers for an allowed `origin`.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(VARY, HeaderValue::from_static("Origin"));
        let Some((origin, allowed)) = origin.and_then(|o| Some((o, self.allows_origin(o)?))) else {
            // The upstream must not grant what the gateway does not.
            headers.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
            headers.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
            return;
        };
        self.grant(origin, allowed, headers);
        // Scripts may read why they were refused: added to what the
        // upstream exposes, never in its place.
        const WWW_AUTHENTICATE: HeaderName = http::header::WWW_AUTHENTICATE;
        let exposed = headers
            .get_all(ACCESS_CONTROL_EXPOSE_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|h| {
                let h = h.trim();
                h == "*" || h.eq_ignore_ascii_case(WWW_AUTHENTICATE.as_str())
            });
        if !exposed {
            headers.append(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(WWW_AUTHENTICATE.as_str()),
            );
        }
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
            false,
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
        let mut h = headers(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
        ]);
        c.decorate(
            Some(&HeaderValue::from_static("https://evil.example.com")),
            &mut h,
        );
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[test]
    fn a_wildcard_is_a_literal_star_without_credentials() {
        let any = Cors::new(
            vec!["*".into()],
            vec![Method::GET],
            vec![],
            Duration::from_secs(1),
            false,
        )
        .expect("valid");
        let mut h = headers(&[
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "X-Request-Id"),
        ]);
        any.decorate(
            Some(&HeaderValue::from_static("https://evil.example.com")),
            &mut h,
        );
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let exposed: Vec<_> = h.get_all(ACCESS_CONTROL_EXPOSE_HEADERS).iter().collect();
        assert_eq!(exposed, ["X-Request-Id", "www-authenticate"]);
    }

    #[test]
    fn credentials_only_for_listed_origins_that_allow_them() {
        let mut h = headers(&[("access-control-allow-credentials", "true")]);
        let app = HeaderValue::from_static("https://app.example.com");
        cors().decorate(Some(&app), &mut h);
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let with = Cors::new(
            vec!["https://app.example.com".into()],
            vec![Method::GET],
            vec![],
            Duration::from_secs(1),
            true,
        )
        .expect("valid");
        let mut h = HeaderMap::new();
        with.decorate(Some(&app), &mut h);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }
}
