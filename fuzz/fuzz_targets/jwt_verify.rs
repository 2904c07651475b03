//! JWT verification with a fixed key set. Property: whatever the bytes,
//! nothing is accepted unless it is a token this target signed itself with
//! valid claims (the fuzzer cannot forge a signature).
#![no_main]

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use scopegate::jwks::KeySet;
use scopegate::token::{ClaimName, Issuer, KeyCell, Verifier};

const SECRET: &[u8] = b"fuzzing secret, long enough for HS256 at least";

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let keys = KeySet::from_secret(SECRET, &[jsonwebtoken::Algorithm::HS256]).expect("secret");
        Verifier::new(
            vec![Issuer {
                name: "https://fuzz/".into(),
                audiences: vec!["api".into()],
                algorithms: vec![jsonwebtoken::Algorithm::HS256],
                clock_skew: 30,
                max_token_age: None,
                require_typ: None,
                scope_claims: vec![ClaimName::new("scope")],
                keys: Arc::new(KeyCell::with(keys)),
            }],
            8192,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    // Raw bytes as a token.
    if let Ok(token) = std::str::from_utf8(data) {
        let accepted = rt.block_on(verifier().verify(token, 1_000_000, None));
        assert!(accepted.is_err(), "accepted a token it did not sign: {token:?}");
    }
    // The bytes as claims of a correctly signed token: accepted only when
    // the claims really are valid.
    if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data) {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let tag = aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET), input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        if rt.block_on(verifier().verify(&token, 1_000_000, None)).is_ok() {
            assert_eq!(claims["iss"], "https://fuzz/");
            let aud_ok = claims["aud"] == "api" || claims["aud"].as_array().is_some_and(|a| a.iter().any(|v| v == "api"));
            assert!(aud_ok, "{claims}");
            assert!(claims["exp"].as_f64().is_some_and(|e| e + 30.0 >= 1_000_000.0), "{claims}");
        }
    }
});
