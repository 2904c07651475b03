//! HTTP/1.1 wire pieces both of the gateway's codecs use: the one toward
//! the upstream (`upstream::h1`) and the one from the client
//! (`server::h1`). The chunked coding's framing (RFC 9112 §7.1) and the
//! last member of a transfer-coding list.
//!
//! Pure: bytes in, bytes out.

use std::io::Write as _;

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
}
