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

/// The field names most requests and responses carry, with their length
/// and `http`'s constant: one list, for [`header_name`] and its test.
macro_rules! common_names {
    ($($len:literal $name:literal $constant:ident,)*) => {
        /// A field name as it came on the wire, as a `HeaderName` (lower
        /// case): `HeaderName::from_bytes`, but the common names are found
        /// by their length and a comparison, instead of being lower-cased
        /// into a buffer and matched against all the standard names (about
        /// 120 instructions a field).
        pub(crate) fn header_name(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
            let known = match raw.len() {
                $($len if folds_to(raw, $name) => header::$constant,)*
                _ => return HeaderName::from_bytes(raw),
            };
            Ok(known)
        }

        /// The common names as listed: length, name, constant.
        #[cfg(test)]
        const COMMON: &[(usize, &[u8], HeaderName)] = &[$(($len, $name, header::$constant),)*];
    };
}

common_names! {
    4 b"host" HOST,
    4 b"date" DATE,
    4 b"etag" ETAG,
    6 b"accept" ACCEPT,
    6 b"server" SERVER,
    6 b"cookie" COOKIE,
    6 b"origin" ORIGIN,
    7 b"referer" REFERER,
    10 b"user-agent" USER_AGENT,
    10 b"connection" CONNECTION,
    10 b"set-cookie" SET_COOKIE,
    12 b"content-type" CONTENT_TYPE,
    13 b"authorization" AUTHORIZATION,
    13 b"cache-control" CACHE_CONTROL,
    13 b"last-modified" LAST_MODIFIED,
    14 b"content-length" CONTENT_LENGTH,
    15 b"accept-encoding" ACCEPT_ENCODING,
    15 b"accept-language" ACCEPT_LANGUAGE,
    16 b"content-encoding" CONTENT_ENCODING,
    17 b"transfer-encoding" TRANSFER_ENCODING,
}

/// Whether `raw` is `name` in any case, where `name` is lower-case
/// letters and `-`: eight bytes at a time, a letter's case bit (0x20) set
/// before the comparison and a `-` compared as it is.
#[inline(always)]
pub(crate) fn folds_to(raw: &[u8], name: &[u8]) -> bool {
    debug_assert!(name.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'));
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
        for (len, name, listed) in COMMON {
            // Under its own length, or it would never be found.
            assert_eq!(*len, name.len());
            let name = std::str::from_utf8(name).expect("ASCII");
            let http = HeaderName::from_bytes(name.as_bytes()).expect("a standard name");
            assert_eq!(listed, &http);
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
