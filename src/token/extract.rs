//! Finding the bearer token in a request: the `Authorization` header, a
//! cookie or a query parameter, as `tokens.from` says (SPEC §Decision order 5).
//!
//! Pure: depends on `http` types only.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

/// Where a token may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Header,
    Cookie(String),
    Query(String),
}

/// A request whose credentials are ambiguous or malformed (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractError {
    /// Two tokens: two `Authorization` headers, header plus query, ...
    Multiple,
    /// `Bearer` with no token, `Bearer a b`, characters outside token68.
    Malformed,
}

impl ExtractError {
    pub fn describe(self) -> &'static str {
        match self {
            ExtractError::Multiple => "more than one token in the request",
            ExtractError::Malformed => "malformed bearer credential",
        }
    }
}

/// An RFC 9110 token68 character, less the trailing `=`.
const fn is_token68_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// Whether `s` is an RFC 9110 token68: what every token is, before
/// anything else reads it (and before the token cache may keep it).
pub(crate) fn is_token68(s: &[u8]) -> bool {
    /// [`is_token68_char`] as a table, since every byte of every token is
    /// looked up (1 = allowed).
    const TOKEN68: [u8; 256] = {
        let mut table = [0; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = is_token68_char(b as u8) as u8;
            b += 1;
        }
        table
    };
    let padding = s.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &s[..s.len() - padding];
    // Eight lookups folded without a branch between them: a token is a
    // few hundred bytes, and a byte-at-a-time `all` spent more on its
    // loop than on the lookups.
    let mut chunks = body.chunks_exact(8);
    let mut ok = 1;
    for c in &mut chunks {
        ok &= TOKEN68[usize::from(c[0])]
            & TOKEN68[usize::from(c[1])]
            & TOKEN68[usize::from(c[2])]
            & TOKEN68[usize::from(c[3])]
            & TOKEN68[usize::from(c[4])]
            & TOKEN68[usize::from(c[5])]
            & TOKEN68[usize::from(c[6])]
            & TOKEN68[usize::from(c[7])];
    }
    for &b in chunks.remainder() {
        ok &= TOKEN68[usize::from(b)];
    }
    !body.is_empty() && ok == 1
}

/// A token found in a request, whether it came with the `DPoP` scheme
/// (RFC 9449 §7.1), which then needs a proof, and what the caller's
/// `known` said about it (see [`find`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'r, K = ()> {
    /// A token68, so ASCII: bytes, since a token found in the cache needs
    /// no `str` (see [`Found::text`]).
    pub token: Cow<'r, [u8]>,
    pub dpop: bool,
    pub known: Option<K>,
}

impl<K> Found<'_, K> {
    /// The token as text (a token68 is ASCII).
    pub fn text(&self) -> Result<&str, ExtractError> {
        std::str::from_utf8(&self.token).map_err(|_| ExtractError::Malformed)
    }
}

/// Asks `known` about a candidate's bytes, and checks them as a token68
/// when it does not know them.
fn check<K>(
    token: &[u8],
    known: &mut impl FnMut(&[u8]) -> Option<K>,
) -> Result<Option<K>, ExtractError> {
    match known(token) {
        Some(k) => Ok(Some(k)),
        None if is_token68(token) => Ok(None),
        None => Err(ExtractError::Malformed),
    }
}

/// The token from an `Authorization` header, if it is a Bearer or DPoP
/// credential.
fn from_authorization<'r, K>(
    headers: &'r HeaderMap,
    known: &mut impl FnMut(&[u8]) -> Option<K>,
) -> Result<Option<Found<'r, K>>, ExtractError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ExtractError::Multiple);
    }
    // Bytes, not `to_str`: a token is hundreds of bytes, and the token68
    // check below already proves a Bearer credential visible ASCII.
    let bytes = value.as_bytes();
    // The scheme ends at any run of SP or HTAB, as lenient upstream parsers
    // read it: `Bearer<TAB>x` is a Bearer credential, never "no token".
    let (scheme, rest) = match bytes.iter().position(|&b| is_blank(b)) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &b""[..]),
    };
    let dpop = scheme.eq_ignore_ascii_case(b"dpop");
    if !dpop && !scheme.eq_ignore_ascii_case(b"bearer") {
        // Basic, Digest, ...: not ours, so no token (a field that is not
        // visible ASCII is malformed, whatever its scheme).
        value.to_str().map_err(|_| ExtractError::Malformed)?;
        return Ok(None);
    }
    // A header value holds no ASCII white space but SP and HTAB.
    let token = rest.trim_ascii();
    let known = check(token, known)?;
    Ok(Some(Found {
        token: Cow::Borrowed(token),
        dpop,
        known,
    }))
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn from_cookies<'r, K>(
    headers: &'r HeaderMap,
    name: &str,
    known: &mut impl FnMut(&[u8]) -> Option<K>,
) -> Result<Option<Found<'r, K>>, ExtractError> {
    let mut found = None;
    // HTTP/2 may split cookies over several fields (RFC 9113 §8.2.3).
    for field in headers.get_all(COOKIE) {
        let Ok(field) = field.to_str() else { continue };
        for pair in field.split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            // Names and values trimmed as lenient cookie parsers do, so that
            // `at =x` and `at=y` are two tokens here as they are upstream.
            // (`to_str` leaves no ASCII white space but SP and HTAB.)
            let (key, value) = (key.trim_ascii(), value.trim_ascii());
            if key != name {
                continue;
            }
            if found.is_some() {
                return Err(ExtractError::Multiple);
            }
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            found = Some(Found {
                known: check(value.as_bytes(), known)?,
                token: Cow::Borrowed(value.as_bytes()),
                dpop: false,
            });
        }
    }
    Ok(found)
}

fn from_query<'r, K>(
    query: Option<&'r str>,
    name: &str,
    known: &mut impl FnMut(&[u8]) -> Option<K>,
) -> Result<Option<Found<'r, K>>, ExtractError> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if crate::route::percent_decode(key).as_deref() != Some(name) {
            continue;
        }
        if found.is_some() {
            return Err(ExtractError::Multiple);
        }
        let value = crate::route::percent_decode(value).ok_or(ExtractError::Malformed)?;
        found = Some(Found {
            known: check(value.as_bytes(), known)?,
            token: match value {
                Cow::Borrowed(value) => Cow::Borrowed(value.as_bytes()),
                Cow::Owned(value) => Cow::Owned(value.into_bytes()),
            },
            dpop: false,
        });
    }
    Ok(found)
}

/// Finds exactly one token across the configured sources.
///
/// `known` is asked about each candidate's bytes before they are checked:
/// what it answers for the token found comes back in [`Found::known`], and
/// a candidate it knows is taken as well formed without a look at its
/// bytes. The token cache answers with claims verified earlier; it holds
/// only tokens that passed [`is_token68`], so what is found, and which
/// refusal wins, stays the same as without it.
pub fn find<'r, K>(
    sources: &[Source],
    headers: &'r HeaderMap,
    query: Option<&'r str>,
    mut known: impl FnMut(&[u8]) -> Option<K>,
) -> Result<Option<Found<'r, K>>, ExtractError> {
    let mut found: Option<Found<'r, K>> = None;
    for source in sources {
        let token = match source {
            Source::Header => from_authorization(headers, &mut known)?,
            Source::Cookie(name) => from_cookies(headers, name, &mut known)?,
            Source::Query(name) => from_query(query, name, &mut known)?,
        };
        if let Some(token) = token {
            if found.is_some() {
                return Err(ExtractError::Multiple);
            }
            found = Some(token);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// [`super::find`] with a `known` that knows nothing.
    fn find<'r>(
        sources: &[Source],
        headers: &'r HeaderMap,
        query: Option<&'r str>,
    ) -> Result<Option<Found<'r>>, ExtractError> {
        super::find(sources, headers, query, |_| None)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn token68_check_sees_every_byte_at_every_position() {
        // Lengths around the eight-byte chunks, each byte value at each
        // position of an otherwise valid body.
        for len in 1..=25 {
            for at in 0..len {
                for c in 0..=127u8 {
                    let mut body = vec![b'a'; len];
                    body[at] = c;
                    let text = String::from_utf8(body).expect("ASCII");
                    let expected = is_token68_char(c)
                        || (c == b'=' && at > 0 && text[at..].bytes().all(|b| b == b'='));
                    assert_eq!(is_token68(text.as_bytes()), expected, "{text:?}");
                }
            }
        }
        assert!(!is_token68("".as_bytes()));
        assert!(!is_token68("==".as_bytes()));
        assert!(is_token68("abc==".as_bytes()));
        assert!(!is_token68("a=bc".as_bytes()));
        assert!(!is_token68("abcdefgh\u{e9}".as_bytes()));
    }

    #[test]
    fn authorization_header_rules() {
        let all = [Source::Header];
        let find1 = |pairs: &[(&'static str, &'static str)]| {
            find(&all, &headers(pairs), None)
                .map(|t| t.filter(|f| !f.dpop).map(|f| f.token.into_owned()))
        };
        assert_eq!(find1(&[]), Ok(None));
        assert_eq!(
            find1(&[("authorization", "Bearer abc.def.ghi")]),
            Ok(Some("abc.def.ghi".into()))
        );
        assert_eq!(
            find1(&[("authorization", "bEaReR abc")]),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            find1(&[("authorization", "Bearer  abc")]),
            Ok(Some("abc".into()))
        );
        assert_eq!(find1(&[("authorization", "Basic dXNlcjpwYXNz")]), Ok(None));
        assert_eq!(
            find(&all, &headers(&[("authorization", "dpop abc")]), None),
            Ok(Some(Found {
                token: Cow::Borrowed(&b"abc"[..]),
                dpop: true,
                known: None,
            })),
            "RFC 9449: the DPoP scheme carries a token"
        );
        assert_eq!(
            find1(&[("authorization", "Bearer\tabc")]),
            Ok(Some("abc".into())),
            "any run of SP / HTAB ends the scheme"
        );
        assert_eq!(
            find1(&[("authorization", "Bearer \t abc")]),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            find1(&[("authorization", "Bearer")]),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            find1(&[("authorization", "Bearer ")]),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            find1(&[("authorization", "Bearer a b")]),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            find1(&[("authorization", "Bearer a,b")]),
            Err(ExtractError::Malformed)
        );
        assert_eq!(
            find1(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            Err(ExtractError::Multiple)
        );
        // A field that is not visible ASCII is malformed, whatever its
        // scheme (and wherever the byte is).
        for raw in [
            &b"Basic d\xe9"[..],
            b"Bearer abc\xe9",
            b"Bearer \xe9abc",
            b"B\xe9arer abc",
        ] {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_bytes(raw).expect("value"));
            assert_eq!(
                find(&all, &h, None).map(|t| t.is_some()),
                Err(ExtractError::Malformed),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn cookie_and_query_sources() {
        let sources = [
            Source::Header,
            Source::Cookie("at".into()),
            Source::Query("access_token".into()),
        ];
        let h = headers(&[("cookie", "x=1; at=tok1")]);
        let token = |found: Result<Option<Found<'_>>, ExtractError>| {
            found.map(|t| t.map(|f| f.token.into_owned()))
        };
        assert_eq!(token(find(&sources, &h, None)), Ok(Some("tok1".into())));
        assert_eq!(
            token(find(
                &sources,
                &HeaderMap::new(),
                Some("a=1&access_token=tok2")
            )),
            Ok(Some("tok2".into()))
        );
        assert_eq!(
            find(&sources, &h, Some("access_token=tok2")),
            Err(ExtractError::Multiple)
        );
        let both = headers(&[("authorization", "Bearer a"), ("cookie", "at=b")]);
        assert_eq!(find(&sources, &both, None), Err(ExtractError::Multiple));
        let spaced = headers(&[("cookie", "at =a; at=b")]);
        assert_eq!(find(&sources, &spaced, None), Err(ExtractError::Multiple));
        let twice = headers(&[("cookie", "at=a"), ("cookie", "at=b")]);
        assert_eq!(find(&sources, &twice, None), Err(ExtractError::Multiple));
        // A source that is not configured is not looked at.
        assert_eq!(
            find(&[Source::Header], &h, Some("access_token=x")),
            Ok(None)
        );
    }

    #[test]
    fn a_known_token_is_found_as_it_would_be_without_it() {
        // `known` as the token cache answers: for tokens that passed the
        // checks, and for no other bytes.
        let known = |token: &[u8]| is_token68(token).then(|| token.to_vec());
        let sources = [
            Source::Header,
            Source::Cookie("at".into()),
            Source::Query("access_token".into()),
        ];
        type Fields = &'static [(&'static str, &'static str)];
        let cases: [(Fields, Option<&str>); 9] = [
            (&[("authorization", "Bearer abc.def")], None),
            (&[("authorization", "DPoP abc")], None),
            (&[("authorization", "Bearer a b")], None),
            (&[("authorization", "Bearer a b")], Some("access_token=x")),
            (&[("authorization", "Bearer x")], Some("access_token=a%20b")),
            (&[("authorization", "Bearer x")], Some("access_token=y")),
            (&[("cookie", "at=\"tok\"")], None),
            (&[("cookie", "at=a,b; at=c")], None),
            (&[], Some("access_token=tok%2B1")),
        ];
        for (pairs, query) in cases {
            let h = headers(pairs);
            let without = find(&sources, &h, query);
            let with = super::find(&sources, &h, query, known);
            assert_eq!(
                with.clone().map(|t| t.map(|f| (f.token, f.dpop))),
                without.map(|t| t.map(|f| (f.token, f.dpop))),
                "{pairs:?} {query:?}"
            );
            if let Ok(Some(found)) = with {
                assert_eq!(found.known.as_deref(), Some(&*found.token));
            }
        }
        // What `known` holds is taken as well formed: the token cache
        // keeps nothing else (`Cache::insert`).
        let odd = headers(&[("authorization", "Bearer a,b")]);
        let found = super::find(&[Source::Header], &odd, None, |_| Some(()));
        assert_eq!(
            found.map(|t| t.map(|f| f.token.into_owned())),
            Ok(Some(b"a,b".to_vec()))
        );
    }
}
