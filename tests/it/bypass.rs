//! A bypass corpus from public advisories against the anchors (each case
//! names its source). Every case asserts the status and that the upstream
//! saw nothing, or exactly the authorized request.

use serde_json::json;

use crate::proxy::{claims, start};
use crate::support::keys::keys;
use crate::support::raw;

/// One case: where it comes from, the raw request (`{TOKEN}` is a valid
/// token without scopes, `{SCOPED}` one with `read:messages`), the status,
/// and the target the upstream must see (`None`: nothing).
struct Case {
    source: &'static str,
    request: String,
    status: u16,
    upstream: Option<&'static str>,
}

fn get(
    source: &'static str,
    target: &str,
    extra: &str,
    status: u16,
    upstream: Option<&'static str>,
) -> Case {
    Case {
        source,
        request: format!(
            "GET {target} HTTP/1.1\r\nHost: gateway.test\r\n{extra}Connection: close\r\n\r\n"
        ),
        status,
        upstream,
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
    for case in &cases {
        upstream.take();
        let request = case
            .request
            .replace("{TOKEN}", &token)
            .replace("{SCOPED}", &scoped);
        let resp = raw(gw.addr, request.as_bytes()).await;
        let line = request
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(90)
            .collect::<String>();
        assert_eq!(resp.status, case.status, "{}: {line}", case.source);
        let seen = upstream.take();
        match case.upstream {
            None => assert!(
                seen.is_empty(),
                "{}: the upstream saw {seen:?}",
                case.source
            ),
            Some(target) => {
                let target = target.replace("{SCOPED}", &scoped);
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
            }
        }
    }
    gw.stop().await;
}
