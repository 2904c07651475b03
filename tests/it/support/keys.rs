//! The token factory: key pairs for every algorithm, their public JWK and
//! PEM forms, and compact JWS signing, written on aws-lc-rs directly so that
//! the tests do not trust the gateway's own JOSE code.

use std::sync::OnceLock;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

pub enum Material {
    Rsa(RsaKeyPair),
    Ec256(EcdsaKeyPair),
    Ec384(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

pub struct TestKey {
    pub kid: String,
    pub material: Material,
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa keygen");
        TestKey {
            kid: kid.into(),
            material: Material::Rsa(kp),
        }
    }
    pub fn ec256(kid: &str) -> TestKey {
        let kp =
            EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec keygen");
        TestKey {
            kid: kid.into(),
            material: Material::Ec256(kp),
        }
    }
    pub fn ec384(kid: &str) -> TestKey {
        let kp =
            EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).expect("ec keygen");
        TestKey {
            kid: kid.into(),
            material: Material::Ec384(kp),
        }
    }
    pub fn ed25519(kid: &str) -> TestKey {
        TestKey {
            kid: kid.into(),
            material: Material::Ed(Ed25519KeyPair::generate().expect("ed keygen")),
        }
    }
    pub fn hmac(kid: &str, secret: &[u8]) -> TestKey {
        TestKey {
            kid: kid.into(),
            material: Material::Hmac(secret.to_vec()),
        }
    }

    /// The default algorithm for this key.
    pub fn alg(&self) -> &'static str {
        match self.material {
            Material::Rsa(_) => "RS256",
            Material::Ec256(_) => "ES256",
            Material::Ec384(_) => "ES384",
            Material::Ed(_) => "EdDSA",
            Material::Hmac(_) => "HS256",
        }
    }

    /// The public JWK (what an identity provider publishes).
    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::Rsa(kp) => {
                let pk = kp.public_key();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig",
                       "n": b64(pk.modulus().big_endian_without_leading_zero()),
                       "e": b64(pk.exponent().big_endian_without_leading_zero())})
            }
            Material::Ec256(kp) | Material::Ec384(kp) => {
                let point = kp.public_key().as_ref();
                let n = (point.len() - 1) / 2;
                let crv = if n == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "kid": self.kid, "crv": crv, "x": b64(&point[1..=n]), "y": b64(&point[n + 1..])})
            }
            Material::Ed(kp) => {
                json!({"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "x": b64(kp.public_key().as_ref())})
            }
            Material::Hmac(k) => json!({"kty": "oct", "kid": self.kid, "k": b64(k)}),
        }
    }

    pub fn public_pem(&self) -> String {
        let der: PublicKeyX509Der<'static> = match &self.material {
            Material::Rsa(kp) => kp.public_key().as_der().expect("der"),
            Material::Ec256(kp) | Material::Ec384(kp) => kp.public_key().as_der().expect("der"),
            Material::Ed(kp) => kp.public_key().as_der().expect("der"),
            Material::Hmac(_) => panic!("no PEM for a secret"),
        };
        pem("PUBLIC KEY", der.as_ref())
    }

    pub fn private_pem(&self) -> String {
        let der = match &self.material {
            Material::Rsa(kp) => AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(kp)
                .expect("der")
                .as_ref()
                .to_vec(),
            Material::Ec256(kp) | Material::Ec384(kp) => {
                kp.to_pkcs8v1().expect("der").as_ref().to_vec()
            }
            Material::Ed(kp) => kp.to_pkcs8v1().expect("der").as_ref().to_vec(),
            Material::Hmac(_) => panic!("no PEM for a secret"),
        };
        pem("PRIVATE KEY", &der)
    }

    /// Signs `signing_input` as `alg` would.
    pub fn sign_raw(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match (&self.material, alg) {
            (Material::Rsa(kp), _) => {
                let pad: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("RSA key cannot sign {other}"),
                };
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(pad, &rng, input, &mut sig).expect("sign");
                sig
            }
            (Material::Ec256(kp) | Material::Ec384(kp), _) => {
                kp.sign(&rng, input).expect("sign").as_ref().to_vec()
            }
            (Material::Ed(kp), _) => kp.sign(input).as_ref().to_vec(),
            (Material::Hmac(k), _) => {
                let algo = match alg {
                    "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
                    "HS512" => aws_lc_rs::hmac::HMAC_SHA512,
                    _ => aws_lc_rs::hmac::HMAC_SHA256,
                };
                aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(algo, k), input)
                    .as_ref()
                    .to_vec()
            }
        }
    }

    /// A compact JWS with exactly this header and payload.
    pub fn sign(&self, header: &Value, payload: &Value) -> String {
        let alg = header["alg"].as_str().unwrap_or("RS256").to_owned();
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes())
        );
        let sig = self.sign_raw(&alg, input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// A token with this key's default alg and kid.
    pub fn token(&self, payload: &Value) -> String {
        self.sign(
            &json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"}),
            payload,
        )
    }
}

/// A JWKS document holding these keys' public halves.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Keys shared by all tests (RSA generation is slow).
pub struct Keys {
    pub rsa: TestKey,
    pub rsa_other: TestKey,
    pub ec256: TestKey,
    pub ec384: TestKey,
    pub ed: TestKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: TestKey::rsa("rsa-1"),
        rsa_other: TestKey::rsa("rsa-other"),
        ec256: TestKey::ec256("ec-256"),
        ec384: TestKey::ec384("ec-384"),
        ed: TestKey::ed25519("ed-1"),
    })
}
