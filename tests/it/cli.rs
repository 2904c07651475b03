//! The binary: exit codes and one-line errors (SPEC §1).

use std::process::Command;

use crate::support::keys::keys;

fn scopegate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scopegate"));
    cmd.env_remove("SCOPEGATE_CONFIG");
    cmd
}

#[test]
fn check_valid_prints_the_route_table() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml");
    let out = scopegate()
        .args(["check", "-c", example])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/api/private-scoped"), "{stdout}");
    assert!(stdout.contains("scopes: read:messages"), "{stdout}");
}

#[test]
fn check_and_run_refuse_a_bad_config_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, "upstream:\n  url: http://127.0.0.1:1\nroutez: []\n").expect("write");
    let path = path.to_str().expect("utf-8 path");
    let check = scopegate()
        .args(["check", "-c", path])
        .output()
        .expect("run");
    assert_eq!(check.status.code(), Some(1));
    let run = scopegate().args(["run", "-c", path]).output().expect("run");
    assert_eq!(run.status.code(), Some(2));
    let default = scopegate()
        .env("SCOPEGATE_CONFIG", path)
        .output()
        .expect("run");
    assert_eq!(
        default.status.code(),
        Some(2),
        "run is the default command and reads $SCOPEGATE_CONFIG"
    );
    for out in [check, run, default] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("{path}:3:1: routez: unknown field")),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"));
    }
    let missing = scopegate()
        .args(["run", "-c", "/nonexistent/gateway.yaml"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn token_mints_a_development_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.pem");
    std::fs::write(&key, keys().ec256.private_pem()).expect("write");
    let out = scopegate()
        .args([
            "token",
            "--key",
            key.to_str().expect("path"),
            "--kid",
            "k1",
            "--iss",
            "https://i/",
            "--aud",
            "api",
            "--sub",
            "me",
            "--scope",
            "a b",
            "--claim",
            "org_id=acme",
            "--claim",
            "n=3",
            "--ttl",
            "5m",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine as _;
    let decode = |s: &str| -> serde_json::Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .expect("b64"),
        )
        .expect("json")
    };
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], "k1");
    assert_eq!(claims["scope"], "a b");
    assert_eq!(claims["org_id"], "acme");
    assert_eq!(claims["n"], 3);
    let ttl = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert_eq!(ttl, 300);
    let help = scopegate().args(["token", "--help"]).output().expect("run");
    assert!(String::from_utf8_lossy(&help.stdout).contains("DEVELOPMENT AND TESTS ONLY"));
}

fn explain_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = keys();
    std::fs::write(
        dir.path().join("jwks.json"),
        crate::support::keys::jwks(&[&k.rsa]),
    )
    .expect("write");
    let cfg = format!(
        "upstream:\n  url: http://127.0.0.1:9\nissuers:\n  - issuer: \"{}\"\n    audiences: [\"{}\"]\n    jwks_file: jwks.json\nroutes:\n  - path: /api/public\n    methods: [GET]\n    auth: none\n  - path: /api/private-scoped\n    methods: [GET]\n    scopes: [read:messages]\n  - path: /api/messages/{{id}}\n    methods: [PUT]\n    any_scope: [write, admin]\n",
        crate::proxy::ISS_A,
        crate::proxy::AUD
    );
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, cfg).expect("write");
    (dir, path)
}

fn explain(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = scopegate()
        .arg("explain")
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn explain_says_what_the_gateway_would_do() {
    let (_dir, config) = explain_fixture();
    let k = keys();
    let scoped = k.rsa.token(&crate::proxy::claims(
        serde_json::json!({"scope": "read:messages"}),
    ));
    let plain = k.rsa.token(&crate::proxy::claims(
        serde_json::json!({"scope": "profile"}),
    ));

    let (code, out) = explain(
        &config,
        &["GET", "/api/public/../private-scoped", "--token", &scoped],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("normalized: /api/private-scoped"), "{out}");
    assert!(
        out.contains("needs a valid token, all of scopes [read:messages]"),
        "{out}"
    );
    assert!(out.contains("subject user-1"), "{out}");
    assert!(out.contains("decision:   ALLOW"), "{out}");

    let (code, out) = explain(&config, &["GET", "/api/private-scoped", "--token", &plain]);
    assert_eq!(code, Some(1));
    assert!(out.contains("missing:    read:messages"), "{out}");
    assert!(out.contains("DENY 403 insufficient_scope"), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{plain}\n")).expect("write");
    let (code, out) = explain(
        &config,
        &[
            "PUT",
            "/api/messages/7",
            "--token-file",
            token_file.to_str().expect("path"),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(out.contains("missing:    one of write admin"), "{out}");

    for (args, code, needle) in [
        (
            vec!["GET", "/api/private-scoped"],
            1,
            "DENY 401 unauthorized",
        ),
        (
            vec!["GET", "/nowhere"],
            1,
            "route:      none matches this path",
        ),
        (
            vec!["POST", "/api/private-scoped"],
            1,
            "DENY 405 method_not_allowed",
        ),
        (
            vec!["GET", "/api/public/..;/private-scoped"],
            1,
            "DENY 400 invalid_request: path contains a dot segment with a parameter",
        ),
        (vec!["GET", "/api/public"], 0, "needs no token (auth: none)"),
        (
            vec!["GET", "/api/private-scoped", "--token", "a.b.c"],
            1,
            "token:      refused: malformed token",
        ),
    ] {
        let (got, out) = explain(&config, &args);
        assert_eq!(got, Some(code), "{args:?}: {out}");
        assert!(out.contains(needle), "{args:?}: want {needle:?} in\n{out}");
    }

    let (code, _) = explain(std::path::Path::new("/nonexistent.yaml"), &["GET", "/"]);
    assert_eq!(code, Some(2), "a config error is exit 2");
}

#[test]
fn check_warns_about_structural_problems_and_schema_prints_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "upstream:\n  url: http://127.0.0.1:3000\nissuers:\n  - issuer: https://idp.example.com/\n    audiences: [x]\n    hs256_secret_env: SCOPEGATE_CHECK_TEST_UNSET\n    algorithms: [HS256]\nroutes:\n  - path: /search?q\n    auth: none\n  - path: /ok\n    auth: none\n",
    )
    .expect("write");
    let out = scopegate()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "warnings do not fail the check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let p = path.display();
    for warning in [
        format!(
            "warning: {p}:6:23: issuers[0].hs256_secret_env: environment variable SCOPEGATE_CHECK_TEST_UNSET is not set here"
        ),
        format!("warning: {p}:9:11: routes[0].path: can never match: '?' starts the query string"),
        format!(
            "warning: {p}:4:5: issuers[0]: no route requires a token: this issuer is never used"
        ),
    ] {
        assert!(
            stdout.contains(&warning),
            "missing {warning:?} in\n{stdout}"
        );
    }
    // The same file is a start-up error: the secret is really needed there.
    assert_eq!(
        scopegate()
            .args(["run", "-c"])
            .arg(&path)
            .output()
            .expect("run")
            .status
            .code(),
        Some(2)
    );

    let schema = scopegate().arg("schema").output().expect("run");
    assert!(schema.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&schema.stdout).expect("JSON");
    assert_eq!(doc["title"], "scopegate gateway.yaml");
    assert_eq!(doc["additionalProperties"], false);
}

/// `check` and `explain` name the upstream a route goes to, and never the
/// credential itself (issue 13).
#[test]
fn check_and_explain_show_the_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key.txt"), "very-secret-api-key\n").expect("write");
    let cfg = "upstream:\n  url: http://127.0.0.1:9\nupstreams:\n  legacy:\n    url: https://legacy.internal:8443/v1\n    credentials:\n      header: { name: X-Api-Key, value_file: key.txt }\nroutes:\n  - path: /api/public\n    auth: none\n  - path: /api/legacy/{*rest}\n    upstream: legacy\n    auth: none\n  - path: /api/legacy/{*rest}\n    host: admin.example.com\n    auth: none\n";
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, cfg).expect("write");
    let out = scopegate()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("UPSTREAM"), "{table}");
    let row = |needle: &str| {
        table
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no row {needle}: {table}"))
            .to_owned()
    };
    assert!(row("/api/public ").contains("default"));
    assert!(row("/api/legacy/{*rest} ").contains("legacy"));
    assert!(row("admin.example.com/api/legacy/{*rest}").contains("default"));
    let (code, text) = explain(&path, &["GET", "/api/legacy/x"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("legacy (https://legacy.internal:8443/v1), with a static credential header"),
        "{text}"
    );
    for output in [&*table, &text] {
        assert!(!output.contains("very-secret-api-key"));
    }
}
