//! Policies from where they already live (issue 20, SPEC §4.9): routes
//! from OpenAPI documents (the Swagger Petstore's operations and
//! `petstore_auth` scopes in 3.0 YAML, a 3.1 JSON document with `$ref`'d
//! path items, webhooks and alternatives), converted by the CLI, accepted
//! by `check`, served by `routes_from_openapi` and reloaded when the
//! document changes; claims bound to path parameters and headers; routes
//! restricted to issuers; challenges that name scopes only when scopes
//! failed.

use std::process::Command;

use serde_json::{Value, json};

use crate::proxy::{AUD, ISS_A, ISS_B, claims};
use crate::support::keys::{jwks, keys};
use crate::support::{Gateway, Upstream, bearer, request};

const PETSTORE: &str = include_str!("../fixtures/openapi/petstore.yaml");
const TENANTS: &str = include_str!("../fixtures/openapi/tenants-3.1.json");

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/openapi/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn scopegate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .env_remove("SCOPEGATE_CONFIG")
        .args(args)
        .output()
        .expect("run scopegate")
}

fn header(upstream: &str) -> String {
    format!(
        r#"upstream:
  url: "http://{upstream}"
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks.json
"#
    )
}

#[test]
fn documents_print_routes_that_check_accepts() {
    for (name, operations) in [("petstore.yaml", 15), ("tenants-3.1.json", 6)] {
        let out = scopegate(&["routes", "--from-openapi", &fixture(name)]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "stdout only");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        // Only a YAML document with a `routes:` key.
        let doc: Value = serde_saphyr::from_str(&text).expect("YAML");
        let members: Vec<&String> = doc.as_object().expect("mapping").keys().collect();
        assert_eq!(members, ["routes"], "{name}");
        assert_eq!(
            doc["routes"].as_array().expect("list").len(),
            operations,
            "{name}: {text}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("jwks.json"), jwks(&[&keys().rsa])).expect("write");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, header("127.0.0.1:9") + &text).expect("write");
        let check = scopegate(&["check", "-c", config.to_str().expect("utf-8")]);
        let table = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{name}: {}{table}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(table.contains("gateway.yaml:"), "{table}");
    }
    let pets: Value = serde_saphyr::from_str(&String::from_utf8_lossy(
        &scopegate(&["routes", "--from-openapi", &fixture("petstore.yaml")]).stdout,
    ))
    .expect("YAML");
    let rule = |path: &str, method: &str| {
        pets["routes"]
            .as_array()
            .expect("list")
            .iter()
            .find(|r| r["path"] == path && r["methods"][0] == method)
            .cloned()
            .unwrap_or_else(|| panic!("{method} {path}"))
    };
    assert_eq!(
        rule("/pet", "PUT")["scopes"],
        json!(["write:pets", "read:pets"])
    );
    assert_eq!(
        rule("/pet/{petId}", "GET")["scopes"],
        json!(["write:pets", "read:pets"]),
        "api_key or petstore_auth: the stricter union"
    );
    assert_eq!(
        rule("/store/inventory", "GET")["auth"],
        "required",
        "api_key only"
    );
    assert_eq!(
        rule("/store/order", "POST")["auth"],
        "required",
        "no security"
    );
    let tenants: Value = serde_saphyr::from_str(&String::from_utf8_lossy(
        &scopegate(&["routes", "--from-openapi", &fixture("tenants-3.1.json")]).stdout,
    ))
    .expect("YAML");
    let routes = tenants["routes"].as_array().expect("list");
    assert!(
        routes
            .iter()
            .any(|r| r["path"] == "/health" && r["auth"] == "none")
    );
    assert!(
        routes
            .iter()
            .any(|r| r["path"] == "/orgs/{org}/projects/{id}"
                && r["any_scope"] == json!(["projects:admin", "tenants:owner"]))
    );
    assert!(
        routes.iter().all(|r| r["path"] != "projectCreated"),
        "webhooks are not routes"
    );

    // --scheme: another scheme's scopes are not the gateway's.
    let only = scopegate(&[
        "routes",
        "--from-openapi",
        &fixture("petstore.yaml"),
        "--scheme",
        "api_key",
    ]);
    assert!(only.status.success());
    assert!(!String::from_utf8_lossy(&only.stdout).contains("write:pets\""));
}

#[test]
fn unreadable_documents_fail_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text, line) in [
        (
            "dotted.yaml",
            "openapi: 3.0.3\ninfo: {title: x, version: '1'}\npaths:\n  /ok: {}\n  /files/{name}.json:\n    get: {}\n",
            5,
        ),
        ("swagger.json", "{\"swagger\": \"2.0\", \"paths\": {}}", 1),
        ("broken.yaml", "openapi: 3.1.0\npaths: [\n", 2),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = scopegate(&["routes", "--from-openapi", path.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        let prefix = format!("{}:{line}:", path.display());
        assert!(err.starts_with(&prefix), "{name}: {err}");
    }
}

/// An allowed request reached the upstream once, as sent; a refused one
/// not at all.
fn forwarded_as_decided(upstream: &Upstream, method: &str, path: &str, want: u16) {
    let seen = upstream.take();
    if want == 200 {
        assert_eq!(seen.len(), 1, "{method} {path}");
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            (method, path)
        );
    } else {
        assert!(seen.is_empty(), "{method} {path}: refused, never forwarded");
    }
}

/// Sends `method path` with a token holding `scopes` (none: no token).
async fn ask(gw: &Gateway, method: &str, path: &str, scopes: Option<&str>) -> u16 {
    let auth = scopes.map(|s| bearer(&keys().rsa.token(&claims(json!({"scope": s})))));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(gw.addr, method, path, &headers).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_routes_are_served_and_reloaded() {
    let upstream = Upstream::start().await;
    let both = Some("write:pets read:pets");
    let read = Some("read:pets");
    let none = Some("profile");
    let config = header(&upstream.addr.to_string())
        + r#"routes_from_openapi: petstore.yaml
routes:
  # Replaces the generated GET rule (api_key or petstore_auth) only.
  - path: /pet/{petId}
    methods: [GET]
    scopes: [read:pets]
"#;
    let gw = Gateway::start(
        &config,
        &[
            ("jwks.json", &jwks(&[&keys().rsa])),
            ("petstore.yaml", PETSTORE),
        ],
    )
    .await;
    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        ("PUT", "/pet", both, 200),
        ("PUT", "/pet", read, 403),
        ("PUT", "/pet", None, 401),
        ("POST", "/pet", both, 200),
        ("GET", "/pet/findByStatus?status=available", both, 200),
        ("GET", "/pet/findByStatus", read, 403),
        ("GET", "/pet/7", read, 200),
        ("GET", "/pet/7", None, 401),
        ("POST", "/pet/7", read, 403),
        ("DELETE", "/pet/7", both, 200),
        ("DELETE", "/pet/7", read, 403),
        ("POST", "/pet/7/uploadImage", both, 200),
        ("GET", "/store/inventory", none, 200),
        ("GET", "/store/inventory", None, 401),
        ("POST", "/store/order", none, 200),
        ("GET", "/user/login", none, 200),
        ("PATCH", "/pet", both, 405),
        ("GET", "/pets", both, 404),
    ];
    for &(method, path, scopes, want) in cases {
        assert_eq!(
            ask(&gw, method, path, scopes).await,
            want,
            "{method} {path} {scopes:?}"
        );
        forwarded_as_decided(&upstream, method, path, want);
    }
    // The challenge names what the document asks for.
    let auth = bearer(&keys().rsa.token(&claims(json!({"scope": "read:pets"}))));
    let refused = request(gw.addr, "PUT", "/pet", &[("Authorization", &auth)]).await;
    let challenge = refused.header("www-authenticate").expect("challenge");
    assert!(
        challenge.contains(r#"scope="write:pets read:pets""#),
        "{challenge}"
    );

    // `check` names where each rule came from.
    let table = scopegate(&["check", "-c", gw.path().to_str().expect("utf-8")]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("petstore.yaml:"), "{table}");
    assert!(table.contains("(updatePet)"), "{table}");
    assert!(table.contains("gateway.yaml:"), "{table}");

    // The document changes: the inventory now needs read:pets.
    let changed = PETSTORE.replace(
        "      operationId: getInventory\n      responses: { \"200\": { description: ok } }\n      security:\n        - api_key: []",
        "      operationId: getInventory\n      responses: { \"200\": { description: ok } }\n      security:\n        - petstore_auth: [read:pets]",
    );
    assert_ne!(changed, PETSTORE);
    std::fs::write(gw.dir.path().join("petstore.yaml"), changed).expect("write");
    assert_eq!(
        gw.runtime.reload().expect("reload"),
        scopegate::app::Reloaded::Applied
    );
    assert_eq!(ask(&gw, "GET", "/store/inventory", none).await, 403);
    assert_eq!(ask(&gw, "GET", "/store/inventory", read).await, 200);
    upstream.take();
    // A broken document is refused like a broken config: the last good
    // one keeps serving.
    std::fs::write(gw.dir.path().join("petstore.yaml"), "openapi: 2.0\n").expect("write");
    let error = gw.runtime.reload().expect_err("refused").to_string();
    assert!(error.contains("petstore.yaml:1:"), "{error}");
    assert_eq!(ask(&gw, "GET", "/store/inventory", read).await, 200);
    gw.stop().await;

    // The 3.1 document, served (to the same upstream: forget what it saw).
    upstream.take();
    let config = header(&upstream.addr.to_string()) + "routes_from_openapi: tenants.json\n";
    let gw = Gateway::start(
        &config,
        &[
            ("jwks.json", &jwks(&[&keys().rsa])),
            ("tenants.json", TENANTS),
        ],
    )
    .await;
    for &(method, path, scopes, want) in &[
        ("GET", "/health", None, 200),
        ("GET", "/orgs/acme/projects", Some("tenants:read"), 200),
        ("POST", "/orgs/acme/projects", Some("tenants:read"), 403),
        ("POST", "/orgs/acme/projects", Some("projects:write"), 200),
        (
            "DELETE",
            "/orgs/acme/projects/1",
            Some("tenants:owner"),
            200,
        ),
        (
            "DELETE",
            "/orgs/acme/projects/1",
            Some("projects:admin"),
            200,
        ),
        ("DELETE", "/orgs/acme/projects/1", Some("tenants:read"), 403),
        ("POST", "/reports", Some("reports:run"), 403),
        ("POST", "/reports", Some("reports:run tenants:read"), 200),
    ] {
        assert_eq!(
            ask(&gw, method, path, scopes).await,
            want,
            "{method} {path} {scopes:?}"
        );
        forwarded_as_decided(&upstream, method, path, want);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bound_to_the_request_and_routes_bound_to_issuers() {
    let upstream = Upstream::start().await;
    let k = keys();
    let config = format!(
        r#"upstream:
  url: "http://{}"
issuers:
  - issuer: "{ISS_A}"
    audiences: ["{AUD}"]
    jwks_file: jwks-a.json
  - issuer: "{ISS_B}"
    audiences: ["{AUD}"]
    jwks_file: jwks-b.json
routes:
  - path: /orgs/{{org}}/projects/{{id}}
    issuers: ["{ISS_A}"]
    claims:
      - {{ claim: org_id, equals_param: org }}
  - path: /reports
    scopes: [reports:run]
    claims:
      - {{ claim: tenant, equals_header: X-Tenant }}
"#,
        upstream.addr
    );
    let gw = Gateway::start(
        &config,
        &[
            ("jwks-a.json", &jwks(&[&k.rsa])),
            ("jwks-b.json", &jwks(&[&k.rsa_other])),
        ],
    )
    .await;
    let token = |extra: Value| bearer(&k.rsa.token(&claims(extra)));
    let acme = token(json!({"org_id": "acme"}));
    let spaced = token(json!({"org_id": "a b"}));
    let numeric = token(json!({"org_id": 42}));
    for (auth, path, want) in [
        (&acme, "/orgs/acme/projects/1", 200),
        (&acme, "/orgs/ac%6De/projects/1", 200),
        (&acme, "/orgs/ACME/projects/1", 403),
        (&acme, "/orgs/other/projects/1", 403),
        (&spaced, "/orgs/a%20b/projects/1", 200),
        (&spaced, "/orgs/a%2520b/projects/1", 403),
        (&numeric, "/orgs/42/projects/1", 200),
    ] {
        let answer = request(gw.addr, "GET", path, &[("Authorization", auth)]).await;
        assert_eq!(answer.status, want, "{path}");
        let seen = upstream.take();
        assert_eq!(seen.len(), usize::from(want == 200), "{path}");
        if want == 403 {
            assert_eq!(
                answer.json()["error_description"],
                "claim org_id does not match",
                "names the claim, never the values"
            );
            let challenge = answer.header("www-authenticate").expect("challenge");
            assert!(!challenge.contains("scope="), "{challenge}");
            assert!(!challenge.contains("acme") && !answer.text().contains("other"));
        }
    }
    // Another configured issuer's valid token: 401 on this route.
    let b = json!({"iss": ISS_B, "org_id": "acme"});
    let from_b = bearer(&k.rsa_other.token(&claims(b)));
    let answer = request(
        gw.addr,
        "GET",
        "/orgs/acme/projects/1",
        &[("Authorization", &from_b)],
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "invalid_token");
    assert!(upstream.take().is_empty());

    // A header-bound claim, behind a scope.
    let runner = token(json!({"scope": "reports:run", "tenant": "t1"}));
    let no_scope = token(json!({"tenant": "t1"}));
    for (auth, tenants, want) in [
        (&runner, vec!["t1"], 200),
        (&runner, vec![" t1 "], 200),
        (&runner, vec!["T1"], 403),
        (&runner, vec!["t2"], 403),
        (&runner, vec![], 400),
        (&runner, vec!["t1", "t1"], 400),
        (&no_scope, vec!["t1"], 403),
    ] {
        let mut headers = vec![("Authorization", auth.as_str())];
        headers.extend(tenants.iter().map(|t| ("X-Tenant", *t)));
        let answer = request(gw.addr, "POST", "/reports", &headers).await;
        assert_eq!(answer.status, want, "{tenants:?}");
        assert_eq!(upstream.take().len(), usize::from(want == 200));
        let challenge = answer.header("www-authenticate").unwrap_or("");
        match (want, auth == &no_scope) {
            (400, _) => assert_eq!(answer.json()["error"], "invalid_request"),
            (403, true) => assert!(challenge.contains(r#"scope="reports:run""#), "{challenge}"),
            (403, false) => {
                assert!(
                    !challenge.contains("scope="),
                    "a claim failure: {challenge}"
                );
                assert_eq!(
                    answer.json()["error_description"],
                    "claim tenant does not match"
                );
            }
            _ => {}
        }
    }
    gw.stop().await;
}
