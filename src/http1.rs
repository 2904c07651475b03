//! HTTP/1.1 wire pieces both of the gateway's codecs use: the one toward
//! the upstream (`upstream::h1`) and the one from the client
//! (`server::h1`). The chunked coding's framing (RFC 9112 §7.1), the
//! last member of a transfer-coding list, and field names as `http` names
//! them.
//!
//! Pure: bytes in, bytes out.

use std::io::Write as _;

use http::HeaderName;
use http::header::{self, InvalidHeaderName};

/// Appends the line that opens a chunk of `len` bytes (upper-case hex, as
/// hyper writes it).
pub(crate) fn chunk_line(len: usize, dst: &mut Vec<u8>) {
    let _ = write!(dst, "{len:X}\r\n");
}

/// The last chunk, with no trailer section: no trailer field is ever
/// forwarded (`Trailer` is hop-by-hop here).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Whether a `Transfer-Encoding` value's final coding is `chunked`
/// (RFC 9112 §6.1).
pub(crate) fn ends_in_chunked(codings: &[u8]) -> bool {
    codings
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A field name as it came on the wire, as a `HeaderName` (lower case):
/// `HeaderName::from_bytes`, but the names most requests and responses
/// carry are found by their length and a comparison, instead of being
/// lower-cased into a buffer and matched against all the standard names
/// (about 120 instructions a field).
pub(crate) fn header_name(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    let is = |name: &[u8]| folds_to(raw, name);
    let known = match raw.len() {
        4 if is(b"host") => header::HOST,
        4 if is(b"date") => header::DATE,
        4 if is(b"etag") => header::ETAG,
        6 if is(b"accept") => header::ACCEPT,
        6 if is(b"server") => header::SERVER,
        6 if is(b"cookie") => header::COOKIE,
        6 if is(b"origin") => header::ORIGIN,
        7 if is(b"referer") => header::REFERER,
        10 if is(b"user-agent") => header::USER_AGENT,
        10 if is(b"connection") => header::CONNECTION,
        10 if is(b"set-cookie") => header::SET_COOKIE,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        13 if is(b"authorization") => header::AUTHORIZATION,
        13 if is(b"cache-control") => header::CACHE_CONTROL,
        13 if is(b"last-modified") => header::LAST_MODIFIED,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        15 if is(b"accept-encoding") => header::ACCEPT_ENCODING,
        15 if is(b"accept-language") => header::ACCEPT_LANGUAGE,
        16 if is(b"content-encoding") => header::CONTENT_ENCODING,
        17 if is(b"transfer-encoding") => header::TRANSFER_ENCODING,
        _ => return HeaderName::from_bytes(raw),
    };
    Ok(known)
}

/// Whether `raw` is `name` in any case, where `name` is lower-case
/// letters and `-`: eight bytes at a time, a letter's case bit (0x20) set
/// before the comparison and a `-` compared as it is.
#[inline(always)]
pub(crate) fn folds_to(raw: &[u8], name: &[u8]) -> bool {
    raw.len() == name.len()
        && raw.chunks(8).zip(name.chunks(8)).all(|(raw, name)| {
            let (raw, name) = (word(raw), word(name));
            let letters = name & 0x4040_4040_4040_4040;
            raw | (letters >> 1) == name
        })
}

/// Up to eight bytes as one word, zero-padded.
#[inline(always)]
fn word(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines_and_codings() {
        let mut line = Vec::new();
        chunk_line(0x1a2b, &mut line);
        assert_eq!(line, b"1A2B\r\n");
        assert!(ends_in_chunked(b"gzip, Chunked "));
        assert!(!ends_in_chunked(b"chunked, gzip"));
        assert!(!ends_in_chunked(b""));
    }

    #[test]
    fn common_names_are_the_names_http_gives() {
        let common = [
            "host",
            "date",
            "etag",
            "accept",
            "server",
            "cookie",
            "origin",
            "referer",
            "user-agent",
            "connection",
            "set-cookie",
            "content-type",
            "authorization",
            "cache-control",
            "last-modified",
            "content-length",
            "accept-encoding",
            "accept-language",
            "content-encoding",
            "transfer-encoding",
        ];
        for name in common {
            let http = HeaderName::from_bytes(name.as_bytes()).expect("a standard name");
            let upper = name.to_ascii_uppercase();
            let mut mixed = name.to_owned();
            mixed[..1].make_ascii_uppercase();
            for raw in [name, &upper, &mixed] {
                assert_eq!(
                    header_name(raw.as_bytes()).ok(),
                    Some(http.clone()),
                    "{raw}"
                );
            }
        }
        for raw in [
            &b"x-request-id"[..],
            b"X-Custom",
            b"hosts",
            b"hos",
            b"accept-charset",
            // A `_` or a control byte where a common name has `-` or a
            // letter: not that name.
            b"content_type",
            b"user\ragent",
            b"h\x0fst",
            b"\x08\x0f\x13\x14",
        ] {
            assert_eq!(
                header_name(raw).map_err(|_| ()),
                HeaderName::from_bytes(raw).map_err(|_| ())
            );
        }
        for bad in [&b""[..], b"ho st", b"host:", b"h\xffst"] {
            assert!(header_name(bad).is_err());
        }
    }
}
