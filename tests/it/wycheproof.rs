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
    crate::support::skip_unless_ci(&format!(
        "Wycheproof vectors not found in {} (set SCOPEGATE_VECTORS)",
        dir.display()
    ));
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

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The primitive-level files: raw messages and signatures through the same
/// key layer (`KeySet` from the published JWK or secret, then `Key::verify`).
#[test]
fn wycheproof_primitive_vectors() {
    use jsonwebtoken::Algorithm::*;
    let Some(dir) = vectors_dir() else { return };
    let files = [
        ("ecdsa_secp256r1_sha256_p1363_test.json", ES256),
        ("ecdsa_secp384r1_sha384_p1363_test.json", ES384),
        ("ed25519_test.json", EdDSA),
        ("rsa_signature_2048_sha256_test.json", RS256),
        ("rsa_signature_2048_sha384_test.json", RS384),
        ("rsa_signature_2048_sha512_test.json", RS512),
        ("rsa_pss_2048_sha256_mgf1_32_test.json", PS256),
        ("rsa_pss_2048_sha384_mgf1_48_test.json", PS384),
        ("rsa_pss_4096_sha512_mgf1_64_test.json", PS512),
        ("hmac_sha256_test.json", HS256),
        ("hmac_sha384_test.json", HS384),
        ("hmac_sha512_test.json", HS512),
    ];
    let (mut checked, mut refused_keys) = (0, Vec::new());
    let mut wrong = Vec::new();
    for (file, alg) in files {
        let text = std::fs::read_to_string(dir.join(file)).expect("read vectors");
        let doc: Value = serde_json::from_str(&text).expect("vector JSON");
        let hash_bits = match alg {
            HS384 => 384,
            HS512 => 512,
            _ => 256,
        };
        for group in doc["testGroups"].as_array().expect("groups") {
            let is_mac = group["type"] == "MacTest";
            // JWS never truncates a MAC: only full-length tags apply.
            if is_mac && group["tagSize"].as_u64() != Some(hash_bits) {
                continue;
            }
            for test in group["tests"].as_array().expect("tests") {
                let id = test["tcId"].as_u64().expect("tcId");
                let result = test["result"].as_str().expect("result");
                let msg = hex(test["msg"].as_str().expect("msg"));
                let keys = if is_mac {
                    KeySet::from_secret(&hex(test["key"].as_str().expect("key")), &[alg])
                        .map_err(|e| e.to_string())
                } else if let Some(jwk) = group.get("publicKeyJwk").or_else(|| group.get("keyJwk"))
                {
                    KeySet::from_jwks(serde_json::json!({ "keys": [jwk] }).to_string().as_bytes())
                        .map_err(|e| e.to_string())
                } else {
                    // No JWK published: the public_key_file (PEM) path.
                    let pem = group["publicKeyPem"].as_str().expect("a JWK or a PEM key");
                    KeySet::from_pem(pem.as_bytes()).map_err(|e| e.to_string())
                };
                let keys = match keys {
                    Ok(keys) => keys,
                    Err(why) => {
                        // Only weak keys may be refused at load: HMAC keys
                        // shorter than the hash (RFC 7518 §3.2).
                        assert!(
                            is_mac && why.contains("shorter"),
                            "{file} tcId {id}: key refused: {why}"
                        );
                        refused_keys.push(id);
                        continue;
                    }
                };
                let sig = hex(test[if is_mac { "tag" } else { "sig" }]
                    .as_str()
                    .expect("sig"));
                let accepted = keys
                    .candidates(alg, None)
                    .any(|key| key.verify(&msg, &sig, alg));
                checked += 1;
                let expected = match result {
                    "valid" => accepted,
                    "invalid" => !accepted,
                    _ => true,
                };
                if !expected {
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
    assert!(checked > 2000, "only {checked} vectors ran");
    eprintln!(
        "wycheproof: {checked} primitive vectors checked, {} short HMAC keys refused at load",
        refused_keys.len()
    );
}
