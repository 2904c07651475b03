//! Wycheproof JWS / JWK vectors through the gateway's own signature and
//! key-handling layer (`token::jws::split` + `Jws::verify`, keys parsed by
//! `jwks::KeySet`). The vector files are read from `../shared/vectors/`
//! (or `$SCOPEGATE_VECTORS`) and never copied into the repository.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use scopegate::jwks::{KeySet, parse_alg};
use scopegate::token::jws;
use serde_json::Value;

/// Where the vectors are, or why the test is skipped (a failure under CI).
fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SCOPEGATE_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/wycheproof")
        });
    if dir.join("json_web_signature_test.json").is_file() {
        return Some(dir);
    }
    let why = format!(
        "Wycheproof vectors not found in {} (set SCOPEGATE_VECTORS)",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}: they must be present under CI=true");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// Vectors where the gateway's answer differs from the label, and why.
fn deviations() -> BTreeMap<(&'static str, u64), &'static str> {
    BTreeMap::from([
        // Upstream anomalies documented in shared/vectors/README.md.
        (
            ("json_web_signature_test.json", 367),
            "labelled invalid but byte-identical to valid tcId 357",
        ),
        (
            ("json_web_signature_test.json", 370),
            "labelled invalid but byte-identical to valid tcId 357",
        ),
        (
            ("json_web_signature_test.json", 372),
            "labelled valid but has '?' inside base64url: strict decoding refuses it",
        ),
        (
            ("json_web_signature_test.json", 373),
            "labelled valid but has '?' inside base64url: strict decoding refuses it",
        ),
        // ES512 is not implemented by jsonwebtoken.
        (
            ("json_web_signature_test.json", 347),
            "ES512 (RFC 7520 §4.3) is not supported",
        ),
        (
            ("json_web_signature_test.json", 351),
            "ES512 (RFC 7520 §4.3) is not supported",
        ),
        // RFC 7520 Figure 20 (PS384) published under a JWK whose `alg` is
        // PS256: SPEC requires the JWK's alg and the token's to agree.
        (
            ("json_web_signature_test.json", 346),
            "the JWK's alg (PS256) disagrees with the token's (PS384)",
        ),
        (
            ("json_web_signature_test.json", 350),
            "the JWK's alg (PS256) disagrees with the token's (PS384)",
        ),
        // A JWKS never supplies HMAC secrets: those come from one
        // hs256_secret_env per issuer, so a set of two oct keys is unusable.
        (
            ("json_web_key_test.json", 2),
            "HMAC keys are never taken from a JWK Set",
        ),
        (
            ("json_web_crypto_test.json", 48),
            "HMAC keys are never taken from a JWK Set",
        ),
    ])
}

/// The keys a gateway would hold for a group, as its config would load
/// them: asymmetric JWKs through the JWKS parser, an `oct` JWK through the
/// shared-secret path (pinned to the JWK's `alg`).
fn keys_for(group: &Value) -> (Result<KeySet, String>, Vec<jsonwebtoken::Algorithm>) {
    let source = group.get("public").unwrap_or(&group["private"]);
    let jwks: Vec<Value> = match source.get("keys") {
        Some(Value::Array(keys)) => keys.clone(),
        _ => vec![source.clone()],
    };
    let algs: Vec<_> = jwks
        .iter()
        .filter_map(|k| k["alg"].as_str().and_then(parse_alg))
        .collect();
    let single_oct = jwks.len() == 1 && jwks[0]["kty"] == "oct";
    let set = if single_oct {
        let secret = URL_SAFE_NO_PAD
            .decode(jwks[0]["k"].as_str().unwrap_or_default())
            .map_err(|e| e.to_string());
        secret.and_then(|s| KeySet::from_secret(&s, &algs).map_err(|e| e.to_string()))
    } else {
        let doc = serde_json::json!({ "keys": jwks }).to_string();
        KeySet::from_jwks(doc.as_bytes()).map_err(|e| e.to_string())
    };
    (set, algs)
}

fn accepts(token: &Value, keys: &Result<KeySet, String>, algs: &[jsonwebtoken::Algorithm]) -> bool {
    // The JSON serialization (an object) is never a bearer token.
    let (Some(token), Ok(keys)) = (token.as_str(), keys) else {
        return false;
    };
    jws::split(token)
        .and_then(|jws| jws.verify(keys, algs))
        .is_ok()
}

#[test]
fn wycheproof_jose_vectors() {
    let Some(dir) = vectors_dir() else { return };
    let deviations = deviations();
    let mut checked = 0;
    let mut wrong = Vec::new();
    let mut seen_deviations = Vec::new();
    for file in [
        "json_web_signature_test.json",
        "json_web_key_test.json",
        "json_web_crypto_test.json",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("read vectors");
        let doc: Value = serde_json::from_str(&text).expect("vector JSON");
        for group in doc["testGroups"].as_array().expect("groups") {
            let (keys, algs) = keys_for(group);
            for test in group["tests"].as_array().expect("tests") {
                let Some(token) = test.get("jws") else {
                    continue;
                }; // JWE groups
                let id = test["tcId"].as_u64().expect("tcId");
                let result = test["result"].as_str().expect("result");
                let accepted = accepts(token, &keys, &algs);
                checked += 1;
                let expected = match result {
                    "valid" => true,
                    "invalid" => false,
                    _ => accepted, // "acceptable": either answer
                };
                if let Some(why) = deviations.get(&(file, id)) {
                    assert_ne!(
                        accepted, expected,
                        "{file} tcId {id} is listed as a deviation ({why}) but now agrees"
                    );
                    seen_deviations.push(id);
                    continue;
                }
                if accepted != expected {
                    wrong.push(format!(
                        "{file} tcId {id} ({}): labelled {result}, gateway {}",
                        test["comment"],
                        if accepted { "accepted" } else { "rejected" }
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} vectors disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(
        seen_deviations.len(),
        deviations.len(),
        "every listed deviation must be exercised"
    );
    assert!(checked > 400, "only {checked} vectors ran");
    eprintln!(
        "wycheproof: {checked} JOSE vectors checked, {} listed deviations",
        deviations.len()
    );
}
