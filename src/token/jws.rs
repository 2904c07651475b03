//! Strict parsing of a compact JWS: three base64url segments (no padding,
//! canonical trailing bits), a header whose `alg` is one we implement and
//! which carries none of the parameters we refuse to honour.
//!
//! Pure: depends on `base64`, `serde_json`, `jsonwebtoken` (the `Algorithm`
//! type and the signature primitive).

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::TokenError;
use crate::jwks::{KeySet, parse_alg};

/// Header parameters that are never trusted, whatever their value (even
/// `null`: a present `crit` means the issuer expects an extension honoured).
const FORBIDDEN_HEADERS: [&str; 4] = ["crit", "jku", "x5u", "jwk"];

/// A parsed protected header.
#[derive(Debug, Clone)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// A compact JWS split into its parts; the signature is not checked yet.
#[derive(Debug)]
pub struct Jws<'t> {
    pub header: Header,
    /// `BASE64URL(header) "." BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'t str,
    /// The decoded signature bytes.
    pub signature: Vec<u8>,
    /// The decoded payload bytes (a JSON object for a JWT).
    pub payload: Vec<u8>,
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    if segment.is_empty() {
        return Err(TokenError::Malformed);
    }
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)
}

/// Parses the header alone (signature layer; Wycheproof vectors enter here).
pub fn parse_header(segment: &str) -> Result<Header, TokenError> {
    let bytes = decode_segment(segment)?;
    // Duplicate members are refused, which closes the door on
    // parser-differential headers.
    let raw: RawHeader<'_> = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    if raw.forbidden != 0 {
        return Err(TokenError::ForbiddenHeader);
    }
    let alg = match &raw.alg {
        Some(Text::Str(name)) => match parse_alg(name) {
            Some(alg) => alg,
            None if name.eq_ignore_ascii_case("none") => return Err(TokenError::AlgNone),
            None => return Err(TokenError::AlgUnsupported),
        },
        _ => return Err(TokenError::Malformed),
    };
    let string = |member: Option<Text<'_>>| match member {
        None => Ok(None),
        Some(Text::Str(s)) => Ok(Some(s.into_owned())),
        Some(Text::Other) => Err(TokenError::Malformed),
    };
    Ok(Header {
        alg,
        kid: string(raw.kid)?,
        typ: string(raw.typ)?,
    })
}

/// A protected header as read from its JSON: the members we use, whether
/// a forbidden one is present (a bit per name), and nothing else kept.
/// Every member is parsed, and a duplicate name, known or not, refuses the
/// whole header, exactly as a strict object would; but nothing is
/// allocated for a header that only holds `alg`, `kid` and `typ`.
#[derive(Default)]
struct RawHeader<'a> {
    alg: Option<Text<'a>>,
    kid: Option<Text<'a>>,
    typ: Option<Text<'a>>,
    forbidden: u8,
}

/// A member's name or value: a string (borrowed when it had no escapes),
/// or any other JSON value. Everything else is read as a `Value` would be, so a
/// header is refused for exactly the syntax, numbers and escapes a strict
/// object refused.
enum Text<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<Value>()?.is_some() {}
                Ok(Text::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Text<'de>, A::Error> {
                while map.next_entry::<String, Value>()?.is_some() {}
                Ok(Text::Other)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl<'de> Deserialize<'de> for RawHeader<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawHeader<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawHeader<'de>, A::Error> {
                let duplicate = || serde::de::Error::custom("duplicate header parameter");
                let mut header = RawHeader::default();
                // Names we do not use, checked for duplicates once at the
                // end (sorted: no quadratic scan, whatever the header holds).
                let mut others: Vec<Cow<'de, str>> = Vec::new();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    // Never taken: a JSON member name is a string.
                    let Text::Str(name) = key else {
                        return Err(serde::de::Error::custom("a member name that is no string"));
                    };
                    let slot = match &*name {
                        "alg" => &mut header.alg,
                        "kid" => &mut header.kid,
                        "typ" => &mut header.typ,
                        other => {
                            if let Some(i) = FORBIDDEN_HEADERS.iter().position(|f| *f == other) {
                                let bit = 1 << i;
                                if header.forbidden & bit != 0 {
                                    return Err(duplicate());
                                }
                                header.forbidden |= bit;
                            } else {
                                others.push(name);
                            }
                            map.next_value::<Value>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(duplicate());
                    }
                    *slot = Some(map.next_value::<Text<'de>>()?);
                }
                others.sort_unstable();
                if others.windows(2).any(|pair| pair[0] == pair[1]) {
                    return Err(duplicate());
                }
                Ok(header)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A JSON object (duplicate members refused), for JOSE objects parsed
/// outside a token (a DPoP proof's header and payload).
pub(crate) fn strict_object(bytes: &[u8]) -> Result<Map<String, Value>, TokenError> {
    let StrictObject(map) = serde_json::from_slice(bytes).map_err(|_| TokenError::Malformed)?;
    Ok(map)
}

/// A JSON object that refuses duplicate top-level members, so that no claim
/// can mean one thing to the gateway and another to a later reader.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StrictObject, A::Error> {
                let mut out = Map::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if out.contains_key(&key) {
                        return Err(serde::de::Error::custom("duplicate claim"));
                    }
                    out.insert(key, value);
                }
                Ok(StrictObject(out))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Splits a compact JWS strictly: exactly three non-empty base64url
/// segments and a header we accept.
pub fn split(token: &str) -> Result<Jws<'_>, TokenError> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
    if payload.contains('.') || signature.is_empty() {
        return Err(TokenError::Malformed);
    }
    let header = parse_header(header)?;
    // An empty payload is a valid JWS (never a valid JWT: `claims` refuses it).
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    Ok(Jws {
        header,
        signing_input,
        signature,
        payload,
    })
}

impl Jws<'_> {
    /// The payload as a JWT claims object (duplicate members refused).
    pub fn claims(&self) -> Result<Map<String, Value>, TokenError> {
        let StrictObject(map) =
            serde_json::from_slice(&self.payload).map_err(|_| TokenError::Malformed)?;
        Ok(map)
    }

    /// The signature layer: `alg` in the allow-list, a key that fits the
    /// `alg` (type, curve, the JWK's own `alg`) and the `kid`, and a valid
    /// signature by one of them.
    pub fn verify(&self, keys: &KeySet, algorithms: &[Algorithm]) -> Result<(), TokenError> {
        let alg = self.header.alg;
        if !algorithms.contains(&alg) {
            return Err(TokenError::AlgNotAllowed);
        }
        let mut candidates = keys.candidates(alg, self.header.kid.as_deref()).peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey);
        }
        let input = self.signing_input.as_bytes();
        let verified = candidates.any(|key| key.verify(input, &self.signature, alg));
        if verified {
            Ok(())
        } else {
            Err(TokenError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn refuses_none_and_forbidden_parameters() {
        for alg in ["none", "NONE", "None", "nOnE"] {
            let h = b64(&format!(r#"{{"alg":"{alg}"}}"#));
            assert_eq!(parse_header(&h).err(), Some(TokenError::AlgNone), "{alg}");
        }
        for extra in [
            r#""crit":["exp"]"#,
            r#""jku":"http://x"#,
            r#""x5u":"http://x""#,
            r#""jwk":{}"#,
            r#""crit":null"#,
            r#""jku":null"#,
        ] {
            let h = b64(&format!(r#"{{"alg":"RS256",{extra}}}"#));
            assert!(parse_header(&h).is_err(), "{extra}");
        }
        assert_eq!(
            parse_header(&b64(r#"{"alg":"Ed25519"}"#))
                .map(|h| h.alg)
                .ok(),
            Some(Algorithm::EdDSA),
            "RFC 9864's fully-specified name"
        );
        assert_eq!(
            parse_header(&b64(r#"{"alg":"rs256"}"#)).err(),
            Some(TokenError::AlgUnsupported)
        );
        assert_eq!(
            parse_header(&b64(r#"{"alg":"RS256","alg":"HS256"}"#)).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(
            parse_header(&b64(r#"{"alg":"RS256","kid":7}"#)).err(),
            Some(TokenError::Malformed)
        );
    }

    /// The header parser before it stopped building a map: every header
    /// must get the same answer from both.
    fn parse_header_through_a_map(segment: &str) -> Result<Header, TokenError> {
        let bytes = decode_segment(segment)?;
        let StrictObject(mut raw) =
            serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
        if FORBIDDEN_HEADERS.iter().any(|name| raw.contains_key(*name)) {
            return Err(TokenError::ForbiddenHeader);
        }
        let alg = match raw.get("alg") {
            Some(Value::String(name)) => match parse_alg(name) {
                Some(alg) => alg,
                None if name.eq_ignore_ascii_case("none") => return Err(TokenError::AlgNone),
                None => return Err(TokenError::AlgUnsupported),
            },
            _ => return Err(TokenError::Malformed),
        };
        let mut string = |name: &str| match raw.remove(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(TokenError::Malformed),
        };
        Ok(Header {
            alg,
            kid: string("kid")?,
            typ: string("typ")?,
        })
    }

    #[test]
    fn header_parser_agrees_with_a_strict_map() {
        let members = [
            r#""alg":"RS256""#,
            r#""alg":"none""#,
            r#""alg":"HS512""#,
            r#""alg":"rs256""#,
            r#""alg":7"#,
            r#""al\u0067":"ES256""#,
            r#""kid":"k1""#,
            r#""kid":"k\"1""#,
            r#""kid":null"#,
            r#""kid":[1,{"a":2}]"#,
            r#""typ":"at+jwt""#,
            r#""typ":{}"#,
            r#""crit":["exp"]"#,
            r#""jku":null"#,
            r#""x5u":"http://x""#,
            r#""\u006aku":"x""#,
            r#""jwk":{"kty":"RSA"}"#,
            r#""x":1"#,
            r#""x":1e400"#,
            r#""x":"\ud800""#,
            r#""y":{"a":1,"a":2}"#,
            r#""y":-0.5"#,
            r#""":true"#,
        ];
        // Every answer the two gave, so that the corpus is known to reach
        // each outcome: agreement on refusals alone would prove little.
        let mut outcomes = std::collections::BTreeSet::new();
        for a in &members {
            for b in &members {
                for c in &members {
                    for json in [
                        format!("{{{a},{b},{c}}}"),
                        format!("{{{a},{b}}}"),
                        format!(" {{ {a} }} "),
                        format!("{{{a},{b}}}x"),
                        format!("[{a}]"),
                    ] {
                        let segment = URL_SAFE_NO_PAD.encode(&json);
                        let new = parse_header(&segment).map(|h| (h.alg, h.kid, h.typ));
                        let old =
                            parse_header_through_a_map(&segment).map(|h| (h.alg, h.kid, h.typ));
                        assert_eq!(new, old, "{json}");
                        outcomes.insert(format!("{:?}", new.map(|(alg, ..)| alg)));
                    }
                }
            }
        }
        for outcome in [
            "Ok(RS256)",
            "Ok(ES256)",
            "Err(Malformed)",
            "Err(ForbiddenHeader)",
            "Err(AlgNone)",
            "Err(AlgUnsupported)",
        ] {
            assert!(outcomes.contains(outcome), "never {outcome}: {outcomes:?}");
        }
    }

    #[test]
    fn refuses_bad_shapes_and_encodings() {
        let h = b64(r#"{"alg":"RS256"}"#);
        let p = b64(r#"{"iss":"a"}"#);
        assert!(
            split(&format!("{h}.{p}.c2ln"))
                .and_then(|j| j.claims())
                .is_ok()
        );
        for bad in [
            format!("{h}.{p}"),
            format!("{h}.{p}."),
            format!("{h}..c2ln"),
            format!("{h}.{p}.c2ln.x"),
            format!("{h}=.{p}.c2ln"),
            format!("{h}.{p}=.c2ln"),
            format!("{h}.{}.c2ln", b64("[1]")),
            format!("{h}.{}.c2ln", b64(r#"{"a":1,"a":2}"#)),
            format!("{h}.{p}+.c2ln"),
            "....".to_owned(),
        ] {
            assert!(split(&bad).and_then(|j| j.claims()).is_err(), "{bad}");
        }
    }
}
