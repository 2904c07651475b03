//! The config-error corpus and the JSON Schema: every invalid fixture fails
//! with exactly its golden first line; the schema rejects every structural
//! mistake (semantic ones, such as overlapping routes, are the parser's
//! alone); every example config passes both. The schema file in the
//! repository is what `scopegate schema` prints.
//!
//! `SCOPEGATE_BLESS=1 cargo test config_corpus` rewrites the golden files.

use std::path::{Path, PathBuf};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/configs")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Fixtures a JSON Schema cannot reject: the mistake is in the meaning.
const SEMANTIC: &[&str] = &[
    "11-bad-template-partial-param",
    "12-bad-template-catch-all-not-last",
    "13-bad-template-dot-segment",
    "14-bad-template-no-slash",
    "15-overlapping-routes",
    "18-missing-key-source",
    "19-two-key-sources",
    "20-bad-cidr",
    "21-missing-env-var",
    "22-missing-key-file",
    "25-hs-with-jwks",
    "26-no-issuer-for-protected-route",
    "27-auth-none-with-scopes",
    "30-bad-cors-origin",
    "32-identity-header-reserved",
    "33-forward-auth-without-convention",
    "34-path-prefix-without-envoy",
    "35-cors-credentials-with-wildcard",
    "37-jwks-empty-rsa-modulus",
    "38-route-unknown-upstream",
    "39-audience-and-resource",
    "40-client-secret-env-unset",
    "41-route-without-upstream",
    "42-claim-quota-on-auth-none",
    "43-unknown-quota-policy",
    "45-bad-rate",
    "46-two-introspecting-issuers-without-prefixes",
    "48-tracing-endpoint-with-query",
    "49-tracing-header-env-unset",
    "50-equals-param-not-in-template",
    "51-route-issuer-not-configured",
    "52-openapi-template-not-expressible",
    "53-dpop-symmetric-algorithm",
];

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&scopegate::config::schema()).expect("a valid JSON Schema")
}

/// Whether the schema accepts a YAML document (a document that is not even
/// YAML counts as rejected).
fn schema_accepts(validator: &jsonschema::Validator, text: &str) -> bool {
    match serde_saphyr::from_str::<serde_json::Value>(text) {
        Ok(doc) => validator.is_valid(&doc),
        Err(_) => false,
    }
}

#[test]
fn invalid_configs_fail_with_their_golden_line() {
    let bless = std::env::var("SCOPEGATE_BLESS").is_ok();
    let validator = validator();
    let files = fixtures("invalid");
    assert!(files.len() >= 25, "the corpus has {} configs", files.len());
    for path in files {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let error = match scopegate::config::load(&path) {
            Ok(_) => panic!("{name} must be refused"),
            Err(e) => e.to_string(),
        };
        // Paths are the machine's: FILE and DIR in the golden files.
        let dir = path.parent().expect("dir").display().to_string();
        let line = error
            .replacen(&path.display().to_string(), "FILE", 1)
            .replace(&dir, "DIR");
        let golden = path.with_extension("err");
        if bless {
            std::fs::write(&golden, format!("{line}\n")).expect("write golden");
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("{name}: no golden file (SCOPEGATE_BLESS=1)"));
        assert_eq!(line, want.trim_end(), "{name}");
        let text = std::fs::read_to_string(&path).expect("read");
        if !SEMANTIC.contains(&name.as_str()) {
            assert!(
                !schema_accepts(&validator, &text),
                "{name}: the schema must reject it too"
            );
        }
    }
}

#[test]
fn example_configs_pass_the_parser_and_the_schema() {
    let validator = validator();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut examples = fixtures("valid");
    examples.push(root.join("gateway.yaml"));
    for path in examples {
        scopegate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).expect("read");
        let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
}

#[test]
fn the_schema_file_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/gateway.schema.json");
    let current = format!(
        "{}\n",
        serde_json::to_string_pretty(&scopegate::config::schema()).expect("json")
    );
    if std::env::var("SCOPEGATE_BLESS").is_ok() {
        std::fs::write(&path, &current).expect("write schema");
    }
    let stored = std::fs::read_to_string(&path).expect("schema/gateway.schema.json");
    assert!(
        stored == current,
        "schema/gateway.schema.json is stale: run `scopegate schema > schema/gateway.schema.json`"
    );
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml"))
            .expect("example");
    assert!(example.starts_with("# yaml-language-server: $schema=./schema/gateway.schema.json\n"));
}
