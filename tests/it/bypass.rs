//! A bypass corpus from public advisories against the anchors (each case
//! names its source). Every case asserts the status and that the upstream
//! saw nothing, or exactly the authorized request.

use serde_json::json;

use crate::proxy::{AUD, ISS_A, claims, start};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, Upstream, raw};

/// One case: where it comes from, the raw request (`{TOKEN}` is a valid
/// token without scopes, `{SCOPED}` one with `read:messages`), the status,
/// the target the upstream must see (`None`: nothing), and headers it must
/// not see.
struct Case {
    source: &'static str,
    request: String,
    status: u16,
    upstream: Option<&'static str>,
    absent: &'static [&'static str],
}

fn request(
    source: &'static str,
    method: &str,
    target: &str,
    extra: &str,
    status: u16,
    upstream: Option<&'static str>,
) -> Case {
    Case {
        source,
        request: format!(
            "{method} {target} HTTP/1.1\r\nHost: gateway.test\r\n{extra}Connection: close\r\n\r\n"
        ),
        status,
        upstream,
        absent: &[],
    }
}

fn get(
    source: &'static str,
    target: &str,
    extra: &str,
    status: u16,
    upstream: Option<&'static str>,
) -> Case {
    request(source, "GET", target, extra, status, upstream)
}

impl Case {
    /// The upstream must not see these headers (any spelling counts).
    fn without(mut self, absent: &'static [&'static str]) -> Case {
        self.absent = absent;
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisories_corpus() {
    let (upstream, gw) = start("").await;
    let k = keys();
    let token = k.rsa.token(&claims(json!({"scope": "profile"})));
    let scoped = k.rsa.token(&claims(json!({"scope": "read:messages"})));
    let auth = "Authorization: Bearer {TOKEN}\r\n";
    let cases = vec![
        // oauth2-proxy GHSA-7rh7-c77v-6434: skip-auth rules matched against path+query.
        get(
            "oauth2-proxy GHSA-7rh7-c77v-6434",
            "/api/private-scoped?/api/public",
            "",
            401,
            None,
        ),
        get(
            "oauth2-proxy GHSA-7rh7-c77v-6434",
            "/api/private-scoped?x=/api/public",
            "",
            401,
            None,
        ),
        get(
            "oauth2-proxy GHSA-7rh7-c77v-6434",
            "/api/private-scoped?redirect=%2Fapi%2Fpublic",
            "",
            401,
            None,
        ),
        get(
            "oauth2-proxy GHSA-7rh7-c77v-6434",
            "/api/public?/api/private-scoped",
            "",
            200,
            Some("/api/public?/api/private-scoped"),
        ),
        // oauth2-proxy GHSA-pxq7-h93f-9jrg: a fragment in the target.
        get(
            "oauth2-proxy GHSA-pxq7-h93f-9jrg",
            "/api/private-scoped#/api/public",
            "",
            401,
            None,
        ),
        get(
            "oauth2-proxy GHSA-pxq7-h93f-9jrg",
            "/api/public#/../private-scoped",
            "",
            200,
            Some("/api/public"),
        ),
        // Ory Oathkeeper GHSA-p224-6x5r-fjpm: traversal past the matched prefix.
        get(
            "Oathkeeper GHSA-p224-6x5r-fjpm",
            "/api/public/../private-scoped",
            "",
            401,
            None,
        ),
        get(
            "Oathkeeper GHSA-p224-6x5r-fjpm",
            "/api/public/%2e%2e/private-scoped",
            "",
            401,
            None,
        ),
        get(
            "Oathkeeper GHSA-p224-6x5r-fjpm",
            "/api/public/%2E%2E/private-scoped",
            "",
            401,
            None,
        ),
        get(
            "Oathkeeper GHSA-p224-6x5r-fjpm",
            "/api/public/.%2e/private-scoped",
            "",
            401,
            None,
        ),
        get(
            "Oathkeeper GHSA-p224-6x5r-fjpm",
            "/assets/../api/private-scoped",
            "",
            401,
            None,
        ),
        get(
            "Oathkeeper GHSA-p224-6x5r-fjpm",
            "/assets/x/../../api/private-scoped",
            "",
            401,
            None,
        ),
        get(
            "Oathkeeper GHSA-p224-6x5r-fjpm",
            "/assets/../../api/private-scoped",
            "",
            400,
            None,
        ),
        // Envoy CVE-2019-9901: no path normalization before the RBAC check.
        get(
            "Envoy CVE-2019-9901",
            "/api/./private-scoped",
            "",
            401,
            None,
        ),
        get(
            "Envoy CVE-2019-9901",
            "/api/public/./../private-scoped",
            "",
            401,
            None,
        ),
        get(
            "Envoy CVE-2019-9901",
            "//api//private-scoped",
            "",
            401,
            None,
        ),
        get(
            "Envoy CVE-2019-9901",
            "/api/public/../private-scoped",
            &auth.replace("{TOKEN}", "{SCOPED}"),
            200,
            Some("/api/private-scoped"),
        ),
        // Istio CVE-2021-31920: escaped slashes and backslashes.
        get(
            "Istio CVE-2021-31920",
            "/api%2Fprivate-scoped",
            "",
            400,
            None,
        ),
        get(
            "Istio CVE-2021-31920",
            "/api/public%2F..%2Fprivate-scoped",
            "",
            400,
            None,
        ),
        get(
            "Istio CVE-2021-31920",
            "/api/public%2f..%2fprivate-scoped",
            "",
            400,
            None,
        ),
        get(
            "Istio CVE-2021-31920",
            "/api/public%5C..%5Cprivate-scoped",
            "",
            400,
            None,
        ),
        get(
            "Istio CVE-2021-31920",
            "/api/public\\..\\private-scoped",
            "",
            400,
            None,
        ),
        // Tomcat/Spring path parameters (CVE-2020-1957 class): `..;`.
        get(
            "Spring/Tomcat ..; (CVE-2020-1957 class)",
            "/api/public/..;/private-scoped",
            "",
            400,
            None,
        ),
        get(
            "Spring/Tomcat ..; (CVE-2020-1957 class)",
            "/api/public/..;jsessionid=x/private-scoped",
            "",
            400,
            None,
        ),
        get(
            "Spring/Tomcat ..; (CVE-2020-1957 class)",
            "/api/public/%2e%2e;/private-scoped",
            "",
            400,
            None,
        ),
        get(
            "Spring/Tomcat ..; (CVE-2020-1957 class)",
            "/api/public/..%3b/private-scoped",
            "",
            400,
            None,
        ),
        // Refused outright since `paths.semicolons: reject` became the default.
        get(
            "Spring/Tomcat ..; (CVE-2020-1957 class)",
            "/api/public;/../private-scoped",
            "",
            400,
            None,
        ),
        // Encodings that some upstreams decode and the gateway must not miss.
        get(
            "percent-encoded unreserved (RFC 3986 6.2.2.2)",
            "/%61pi/private-scoped",
            "",
            401,
            None,
        ),
        get(
            "percent-encoded unreserved (RFC 3986 6.2.2.2)",
            "/api/%70rivate-scoped",
            &auth.replace("{TOKEN}", "{SCOPED}"),
            200,
            Some("/api/private-scoped"),
        ),
        get(
            "double encoding",
            "/api/public/%252e%252e/private-scoped",
            "",
            404,
            None,
        ),
        get(
            "overlong UTF-8 dot (CVE-2000-0884 class)",
            "/api/public/%c0%ae%c0%ae/private-scoped",
            "",
            404,
            None,
        ),
        get(
            "encoded NUL truncation",
            "/api/public%00/../private-scoped",
            "",
            400,
            None,
        ),
        get("raw non-ASCII", "/api/ｐrivate-scoped", "", 400, None),
        get("case folding", "/API/private-scoped", "", 404, None),
        get("trailing dot", "/api/private-scoped.", "", 404, None),
        get("trailing slash", "/api/private-scoped/", "", 404, None),
        get(
            "encoded query marker",
            "/api/private-scoped%3F",
            "",
            404,
            None,
        ),
        get("above the root", "/../api/private-scoped", "", 400, None),
        // Absolute-form and header-driven routing.
        get(
            "absolute-form routing (RFC 9112 3.2.2)",
            "http://gateway.test/api/public/../private-scoped",
            "",
            401,
            None,
        ),
        get(
            "X-Original-URL on the proxy (ingress header spoofing)",
            "/api/private-scoped",
            "X-Original-URL: /api/public\r\nX-Rewrite-URL: /api/public\r\n",
            401,
            None,
        ),
        get(
            "X-Forwarded-Uri on the proxy",
            "/api/private-scoped",
            "X-Forwarded-Uri: /api/public\r\nX-Forwarded-Prefix: /api/public\r\n",
            401,
            None,
        ),
        // Credentials.
        get(
            "Basic instead of Bearer",
            "/api/private-scoped",
            "Authorization: Basic YWRtaW46YWRtaW4=\r\n",
            401,
            None,
        ),
        get(
            "two Authorization headers (parser differential)",
            "/api/private-scoped",
            &format!("{}{}", auth.replace("{TOKEN}", "{SCOPED}"), auth),
            400,
            None,
        ),
        get(
            "token in header and query",
            "/api/private-scoped?access_token={SCOPED}",
            &auth.replace("{TOKEN}", "{SCOPED}"),
            200,
            Some("/api/private-scoped?access_token={SCOPED}"),
        ),
        // Ory Oathkeeper CVE-2021-32701: a cached decision reused for another route.
        get(
            "Oathkeeper CVE-2021-32701 (warm the cache)",
            "/api/private",
            auth,
            200,
            Some("/api/private"),
        ),
        get(
            "Oathkeeper CVE-2021-32701",
            "/api/private-scoped",
            auth,
            403,
            None,
        ),
        // Caddy GHSA-7r4p-vjf4-gxv4 / oauth2-proxy GHSA-w9mr-28mw-j8hg: identity headers.
        get(
            "Caddy GHSA-7r4p-vjf4-gxv4",
            "/api/public",
            "X-Auth-Subject: admin\r\nX-Auth-Scopes: admin\r\n",
            200,
            Some("/api/public"),
        ),
        get(
            "oauth2-proxy GHSA-w9mr-28mw-j8hg",
            "/api/private",
            &format!("{auth}Connection: X-Auth-Subject\r\nX-Auth-Subject: admin\r\n"),
            200,
            Some("/api/private"),
        ),
        get(
            "underscore spelling of an identity header",
            "/api/public",
            "X_Auth_Subject: admin\r\n",
            200,
            Some("/api/public"),
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    run(
        &cases,
        &gw,
        &upstream,
        &[("{TOKEN}", &token), ("{SCOPED}", &scoped)],
    )
    .await;
    gw.stop().await;
}

/// Sends every case and checks the status and what the upstream saw.
async fn run(cases: &[Case], gw: &Gateway, upstream: &Upstream, tokens: &[(&str, &str)]) {
    for case in cases {
        upstream.take();
        let mut request = case.request.clone();
        for (name, token) in tokens {
            request = request.replace(name, token);
        }
        let resp = raw(gw.addr, request.as_bytes()).await;
        let line = request
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(90)
            .collect::<String>();
        assert_eq!(
            resp.status,
            case.status,
            "{}: {line}: {}",
            case.source,
            resp.text()
        );
        let seen = upstream.take();
        match case.upstream {
            None => assert!(
                seen.is_empty(),
                "{}: the upstream saw {seen:?}",
                case.source
            ),
            Some(target) => {
                let mut target = target.to_owned();
                for (name, token) in tokens {
                    target = target.replace(name, token);
                }
                assert_eq!(seen.len(), 1, "{}: {seen:?}", case.source);
                assert_eq!(seen[0].target, target, "{}", case.source);
                // No identity header but the gateway's own.
                let subject = seen[0].header("x-auth-subject");
                assert!(
                    subject.is_none() || subject == Some("user-1"),
                    "{}: {subject:?}",
                    case.source
                );
                assert_eq!(
                    seen[0].header_count("x-auth-subject"),
                    usize::from(subject.is_some())
                );
                assert!(
                    seen[0].header("x-auth-scopes") != Some("admin"),
                    "{}",
                    case.source
                );
                assert_eq!(
                    seen[0].header("x_auth_subject"),
                    None,
                    "{}: an underscore header is dropped",
                    case.source
                );
                for name in case.absent {
                    let dashed = name.replace('_', "-");
                    assert!(
                        seen[0]
                            .headers
                            .iter()
                            .all(|(n, _)| !n.replace('_', "-").eq_ignore_ascii_case(&dashed)),
                        "{}: the upstream saw {name}: {:?}",
                        case.source,
                        seen[0].headers
                    );
                }
            }
        }
    }
}

/// The routes of the second-wave corpus: a public `{name}` beside literal
/// routes that need `admin`, as APIs with custom methods (`items:purge`)
/// and method overrides have them.
fn second_wave_config(upstream: &Upstream, paths: &str) -> String {
    format!(
        r#"upstream:
  url: "http://{}"
{paths}tokens:
  from: [header, "cookie:at"]
identity:
  headers:
    X-Auth-Subject: sub
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
routes:
  - path: /api/{{name}}
    auth: none
  - path: /api/admin
    scopes: [admin]
  - path: /api/items:purge
    scopes: [admin]
  - path: /api/items
    methods: [GET, POST]
    auth: none
  - path: /api/items
    methods: [DELETE]
    scopes: [admin]
"#,
        upstream.addr
    )
}

/// Requests that an upstream parser reads as another path, method or
/// credential than the gateway did (issue 11; SPEC §4.2 and §Forwarding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parser_differentials_corpus() {
    let upstream = Upstream::start().await;
    let k = keys();
    let gw = Gateway::start(
        &second_wave_config(&upstream, ""),
        &[("jwks.json", &jwks(&[&k.rsa]))],
    )
    .await;
    let user = k.rsa.token(&claims(json!({"scope": "profile"})));
    let admin = k.rsa.token(&claims(json!({"scope": "admin"})));
    let as_admin = "Authorization: Bearer {ADMIN}\r\n";
    let overrides: &[&str] = &[
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ];
    let cases = vec![
        // Tomcat, Jetty and Spring cut `;…` before routing: /api/admin is served.
        get("Tomcat/Spring path parameters (CVE-2020-1957 class)", "/api/admin;jsessionid=1", "", 400, None),
        get("Tomcat/Spring path parameters (CVE-2020-1957 class)", "/api/admin;", "", 400, None),
        get("Tomcat/Spring path parameters, encoded (CVE-2021-22112 class)", "/api/admin%3Bx", "", 400, None),
        get("Tomcat/Spring path parameters", "/api;x/admin", "", 400, None),
        // Escaped pchars mean the same to every upstream (RFC 3986 §6.2.2.2).
        request("escaped ':' of a custom method (AIP-136 items:purge)", "POST", "/api/items%3Apurge", "", 401, None),
        request("escaped ':' of a custom method (AIP-136 items:purge)", "POST", "/api/items%3apurge", as_admin, 200, Some("/api/items:purge")),
        get("escaped '@', '!', '$'", "/api/%40me%21%24", "", 200, Some("/api/@me!$")),
        get("escaped '%' stays escaped", "/api/a%25b", "", 200, Some("/api/a%25b")),
        // Method override: Symfony, Laravel and express method-override serve a DELETE.
        request("X-HTTP-Method-Override (Symfony/Laravel/express method-override)", "POST", "/api/items", "X-HTTP-Method-Override: DELETE\r\n", 200, Some("/api/items")).without(overrides),
        request("X-HTTP-Method (Symfony)", "POST", "/api/items", "X-HTTP-Method: DELETE\r\n", 200, Some("/api/items")).without(overrides),
        request("X-Method-Override (Symfony)", "POST", "/api/items", "X-Method-Override: DELETE\r\n", 200, Some("/api/items")).without(overrides),
        request("underscore spelling of an override (CGI)", "POST", "/api/items", "X_HTTP_Method_Override: DELETE\r\n", 200, Some("/api/items")).without(overrides),
        request("_method query parameter (Rails/Laravel/Symfony)", "POST", "/api/items?_method=DELETE", "", 401, None),
        request("_method query parameter, form-encoded name", "POST", "/api/items?%5Fmethod=delete", "", 401, None),
        request("_method query parameter, with the scope it needs", "POST", "/api/items?_method=DELETE", as_admin, 200, Some("/api/items?_method=DELETE")),
        request("two _method parameters", "POST", "/api/items?_method=GET&_method=DELETE", as_admin, 400, None),
        // Rewrite and client-address headers from a peer that is not a trusted proxy.
        get("Symfony X-Original-URL / X-Rewrite-URL (CVE-2018-14773)", "/api/public", "X-Original-URL: /api/admin\r\nX-Rewrite-URL: /api/admin\r\nX-Original-URI: /api/admin\r\n", 200, Some("/api/public")).without(&["x-original-url", "x-rewrite-url", "x-original-uri"]),
        get("httpoxy (CVE-2016-5385)", "/api/public", "Proxy: http://evil.test:3128\r\n", 200, Some("/api/public")).without(&["proxy"]),
        get(
            "client-address spoofing (IP allow-lists upstream)",
            "/api/public",
            "X-Real-IP: 10.0.0.1\r\nTrue-Client-IP: 10.0.0.1\r\nX-Client-IP: 10.0.0.1\r\nX-Cluster-Client-IP: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\nX-Forwarded-Prefix: /admin\r\nX-Forwarded-Port: 443\r\nX_Real_IP: 10.0.0.1\r\n",
            200,
            Some("/api/public"),
        )
        .without(&["x-real-ip", "true-client-ip", "x-client-ip", "x-cluster-client-ip", "forwarded", "x-forwarded-prefix", "x-forwarded-port"]),
        // Credentials two parsers read differently.
        get("HTAB after the scheme (lenient upstream parsers)", "/api/admin", "Authorization: Bearer\tforged\r\nCookie: at={ADMIN}\r\n", 400, None),
        get("cookie name with a space (lenient upstream parsers)", "/api/admin", "Cookie: at =forged; at={ADMIN}\r\n", 400, None),
        get("cookie split over two fields", "/api/admin", "Cookie: at={ADMIN}\r\nCookie: at=forged\r\n", 400, None),
        get("the admin route itself, for contrast", "/api/admin", as_admin, 200, Some("/api/admin")),
        get("a user token on the admin route", "/api/admin", "Authorization: Bearer {USER}\r\n", 403, None),
    ];
    let mut cases = cases;
    // Host values the upstream would parse differently.
    for bad_host in [
        "evil.test@gateway.test",
        "gateway.test:abc",
        "gateway.test:",
        "a b",
    ] {
        cases.push(Case {
            source: "a Host that is not host[:port] (RFC 9110 §7.2)",
            request: format!(
                "GET /api/public HTTP/1.1\r\nHost: {bad_host}\r\nConnection: close\r\n\r\n"
            ),
            status: 400,
            upstream: None,
            absent: &[],
        });
    }
    run(
        &cases,
        &gw,
        &upstream,
        &[("{ADMIN}", &admin), ("{USER}", &user)],
    )
    .await;
    gw.stop().await;
}

/// `paths:` for upstreams that read paths their own way (SPEC §4.2): what
/// they would serve as `/api/admin` is decided as `/api/admin`, and the
/// path is forwarded as sent (after normalization).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_read_as_the_upstream_reads_them() {
    let upstream = Upstream::start().await;
    let k = keys();
    let paths = "paths:\n  semicolons: strip\n  case: insensitive\n  trailing_slash: either\n";
    let gw = Gateway::start(
        &second_wave_config(&upstream, paths),
        &[("jwks.json", &jwks(&[&k.rsa]))],
    )
    .await;
    let admin = k.rsa.token(&claims(json!({"scope": "admin"})));
    let as_admin = "Authorization: Bearer {ADMIN}\r\n";
    let cases = vec![
        get(
            "Spring ;jsessionid (strip)",
            "/api/admin;jsessionid=1",
            "",
            401,
            None,
        ),
        get(
            "Spring ;jsessionid (strip)",
            "/api/admin;jsessionid=1",
            as_admin,
            200,
            Some("/api/admin"),
        ),
        get(
            "Spring matrix parameters (strip)",
            "/api;v=2/admin;x",
            as_admin,
            200,
            Some("/api/admin"),
        ),
        get("encoded ; (strip)", "/api/admin%3Bx", "", 401, None),
        get(
            "..; still refused under strip",
            "/api/x/..;/admin",
            "",
            400,
            None,
        ),
        get(
            "Express/ASP.NET Core case-insensitive routing",
            "/API/ADMIN",
            "",
            401,
            None,
        ),
        get(
            "Express/ASP.NET Core case-insensitive routing",
            "/Api/Admin",
            as_admin,
            200,
            Some("/Api/Admin"),
        ),
        get(
            "Express non-strict / Spring <= 5 trailing slash",
            "/api/admin/",
            "",
            401,
            None,
        ),
        get(
            "Express non-strict / Spring <= 5 trailing slash",
            "/api/admin/",
            as_admin,
            200,
            Some("/api/admin/"),
        ),
        get(
            "a public name stays public",
            "/api/Other/",
            "",
            200,
            Some("/api/Other/"),
        ),
    ];
    run(&cases, &gw, &upstream, &[("{ADMIN}", &admin)]).await;
    gw.stop().await;
}
