//! HTTP/1.1 toward the upstream, as the proxy speaks it: the request head
//! written from the outbound request as it stands and the fields the
//! gateway adds beside its map ([`super::headers::Added`]), with the framing
//! hyper's client would choose; the response head parsed with httparse
//! (hyper's own parser, with hyper's defaults); the response body's framing
//! chosen by RFC 9112 §6.3; the chunked coding decoded.
//!
//! Pure: bytes in, bytes out. [`super::pool`] does the I/O.
//!
//! Where it is stricter than hyper's client (the README, "Proxying", has
//! the whole list): a response with both `Transfer-Encoding` and
//! `Content-Length` loses its `Content-Length` (RFC 9112 §6.3, rule 3) and
//! its connection is not reused; a chunk line holding a bare CR or LF, or
//! longer than 4 KiB, is refused; a `101` nobody asked for is an error.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use super::headers::Added;
use crate::http1::ends_in_chunked;
use crate::reply::Lines;

/// The most fields a response head or trailer section may have (hyper's
/// default).
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// The largest trailer section (dropped, but read).
const MAX_TRAILERS: usize = 64 * 1024;
/// Body pieces up to this size are copied out of the read buffer, which
/// then stays one allocation, reused for the connection's next response;
/// larger ones are split off it without a copy.
const COPY_MAX: usize = 4096;

/// Why a response could not be read: the upstream broke HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// How a request body follows its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sending {
    /// No body is sent.
    Nothing,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked coding.
    Chunked,
}

/// What is known of the request body: `None` when it is known to be
/// empty, else its exact length if known.
pub(super) type BodyHint = Option<Option<u64>>;

/// Sets the request's framing headers as hyper's HTTP/1.1 client would,
/// and writes its head into `dst`: origin-form target, the gateway's
/// `Host`, the map's fields in map order but for the client's `Host`,
/// then the gateway's other fields; names in lower case.
pub(super) fn encode_request(
    method: &Method,
    target: &str,
    headers: &mut HeaderMap,
    added: &Added<'_>,
    body: BodyHint,
    dst: &mut Vec<u8>,
) -> Sending {
    let sending = request_framing(method, headers, body);
    let line = |dst: &mut Vec<u8>, name: &str, value: &[u8]| {
        dst.extend_from_slice(name.as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value);
        dst.extend_from_slice(b"\r\n");
    };
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    line(dst, HOST.as_str(), added.host.as_bytes());
    for (name, value) in headers.iter() {
        if name != HOST {
            line(dst, name.as_str(), value.as_bytes());
        }
    }
    for (name, value) in added.trailing().into_iter().flatten() {
        line(dst, name, value.as_bytes());
    }
    dst.extend_from_slice(b"\r\n");
    sending
}

/// hyper's `Client::set_length` for HTTP/1.1: headers the request already
/// has are respected; otherwise the body's known length, else chunked —
/// except that a GET, HEAD or CONNECT without framing headers sends no
/// body (the proxy marks such a body chunked itself).
fn request_framing(method: &Method, headers: &mut HeaderMap, body: BodyHint) -> Sending {
    let Some(exact) = body else {
        headers.remove(TRANSFER_ENCODING);
        return Sending::Nothing;
    };
    if headers.contains_key(TRANSFER_ENCODING) {
        if !is_chunked(headers) {
            add_chunked(headers);
        }
        headers.remove(CONTENT_LENGTH);
        return Sending::Chunked;
    }
    if let Some(Ok(length)) = content_length(
        headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .map(HeaderValue::as_bytes),
    ) {
        return Sending::Length(length);
    }
    match exact {
        Some(length) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
            Sending::Length(length)
        }
        None if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) => Sending::Nothing,
        None => {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            headers.remove(CONTENT_LENGTH);
            Sending::Chunked
        }
    }
}

/// Appends `chunked` to the last `Transfer-Encoding` value.
fn add_chunked(headers: &mut HeaderMap) {
    let http::header::Entry::Occupied(mut codings) = headers.entry(TRANSFER_ENCODING) else {
        return;
    };
    if let Some(last) = codings.iter_mut().next_back() {
        let joined = [last.as_bytes(), b", chunked"].concat();
        *last = HeaderValue::from_bytes(&joined).unwrap_or(HeaderValue::from_static("chunked"));
    }
}

/// Whether the last `Transfer-Encoding` field's final coding is
/// `chunked` (RFC 9112 §6.1).
fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .is_some_and(|value| ends_in_chunked(value.as_bytes()))
}

/// Every `Content-Length` value given, list members included: `None`
/// without one, `Some(Err)` unless all are the same run of digits.
fn content_length<'v>(values: impl Iterator<Item = &'v [u8]>) -> Option<Result<u64, ()>> {
    let mut found = None;
    for value in values {
        for member in value.split(|&b| b == b',') {
            let member = member.trim_ascii();
            let parsed =
                (!member.is_empty() && member.len() <= 19 && member.iter().all(u8::is_ascii_digit))
                    .then(|| {
                        member
                            .iter()
                            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
                    });
            match (parsed, found) {
                (None, _) => return Some(Err(())),
                (Some(n), Some(seen)) if n != seen => return Some(Err(())),
                (Some(n), _) => found = Some(n),
            }
        }
    }
    found.map(Ok)
}

/// The tokens of every `Connection` field of a response head, trimmed.
fn connection_tokens<'h>(fields: &'h [httparse::Header<'h>]) -> impl Iterator<Item = &'h [u8]> {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .flat_map(|f| f.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: HEAD, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A response head, parsed.
#[derive(Debug)]
pub(super) struct Head {
    /// Its fields are in `lines` instead, when there are lines.
    pub parts: http::response::Parts,
    /// The fields forwarded, as the client's side will write them, when
    /// no name among them is repeated (a repeated name goes in the map,
    /// which groups its values as hyper writes them).
    pub lines: Option<Lines>,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// What [`parse_response`] found at the start of the buffer.
#[derive(Debug)]
pub(super) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) response of this many bytes, to be skipped.
    Interim(usize),
    /// The final response's head, of this many bytes.
    Final(usize, Head),
}

/// Parses the response head at the start of `buf`, for a request made with
/// `method`. The fields are copied out, so `buf` can be reused: into
/// [`Lines`], which go into `headers` when a name is repeated. `headers`
/// is an empty map whose allocations the final head takes over either way.
pub(super) fn parse_response(
    buf: &[u8],
    method: &Method,
    headers: &mut HeaderMap,
) -> Result<Parsed, Malformed> {
    if buf.is_empty() {
        return Ok(Parsed::Partial);
    }
    // Uninitialized: 100 empty fields written out would cost more than
    // parsing a small head.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Malformed("more than 100 response header fields"));
        }
        Err(_) => return Err(Malformed("malformed response head")),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| Malformed("response status code"))?;
    match code {
        // Only a WebSocket handshake asks for an upgrade, and it does not
        // come this way.
        101 => {
            return Err(Malformed(
                "101 Switching Protocols without an upgrade asked for",
            ));
        }
        100..=199 => return Ok(Parsed::Interim(len)),
        _ => {}
    }
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };

    // The framing and the connection's fate, from the fields as they came.
    let fields = &*response.headers;
    let named = |field: &&httparse::Header<'_>, name: &str| field.name.eq_ignore_ascii_case(name);
    let lengths = content_length(
        fields
            .iter()
            .filter(|f| named(f, "content-length"))
            .map(|f| f.value),
    );
    let coding = fields.iter().rfind(|f| named(f, "transfer-encoding"));
    let (mut close, mut persist, mut names) = (false, false, false);
    for token in connection_tokens(fields) {
        let is = |option: &[u8]| token.eq_ignore_ascii_case(option);
        close |= is(b"close");
        persist |= is(b"keep-alive");
        // Anything else names a field (`keep-alive` is one too, hop-by-hop anyway).
        names |= !is(b"close") && !is(b"keep-alive");
    }
    let mut keep_alive = !close && (version == Version::HTTP_11 || persist);
    let framing = if matches!(code, 204 | 304) || *method == Method::HEAD {
        Framing::Empty
    } else if let Some(coding) = coding {
        if version == Version::HTTP_10 {
            return Err(Malformed("Transfer-Encoding in an HTTP/1.0 response"));
        }
        if lengths.is_some() {
            // Both: the coding wins, and the connection is not trusted
            // with another request.
            keep_alive = false;
        }
        if ends_in_chunked(coding.value) {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match lengths {
            Some(Ok(length)) => Framing::Length(length),
            Some(Err(())) => return Err(Malformed("response Content-Length")),
            None => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }

    // The fields forwarded: not the hop-by-hop ones, nor those `Connection`
    // names, nor a length beside a coding. Copied out as lines, so `buf`
    // can be reused; into the map when a name repeats.
    let mut lines = Lines::with_room(len, fields.len());
    for field in fields {
        let name = field.name.as_bytes();
        if super::headers::is_hop_by_hop_name(name)
            || (names && connection_tokens(fields).any(|token| token.eq_ignore_ascii_case(name)))
            || (coding.is_some() && named(&field, "content-length"))
        {
            continue;
        }
        if !(1..=MAX_NAME).contains(&name.len()) {
            return Err(Malformed("response header name"));
        }
        lines.push(name, field.value);
    }
    debug_assert!(headers.is_empty());
    let lines = if repeats_a_name(fields) {
        lines.into_map(headers);
        None
    } else {
        Some(lines)
    };

    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    // The map made with `parts` goes to the caller, to be dropped there.
    std::mem::swap(&mut parts.headers, headers);
    if let Some(reason) = response.reason
        && Some(reason) != status.canonical_reason()
        && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes().to_vec())
    {
        // hyper's server writes it back as it came, as hyper's client kept it.
        parts.extensions.insert(reason);
    }
    Ok(Parsed::Final(
        len,
        Head {
            parts,
            lines,
            framing,
            keep_alive,
        },
    ))
}

/// Whether a name comes twice (in any case).
fn repeats_a_name(fields: &[httparse::Header<'_>]) -> bool {
    fields.iter().enumerate().any(|(at, field)| {
        fields[at + 1..].iter().any(|other| {
            other.name.len() == field.name.len() && other.name.eq_ignore_ascii_case(field.name)
        })
    })
}

/// The longest name `HeaderName` takes.
const MAX_NAME: usize = (1 << 16) - 1;

/// The next body piece of at most `remaining` bytes from a non-empty
/// `buf`, and how many bytes remain after it.
pub(super) fn take_within(buf: &mut BytesMut, remaining: u64) -> (Bytes, u64) {
    let n = usize::try_from(remaining)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    (take(buf, n), remaining - n as u64)
}

/// Takes the first `n` bytes of `buf` as a body piece.
pub(super) fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    if n <= COPY_MAX {
        let piece = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        piece
    } else {
        buf.split_to(n).freeze()
    }
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
    Done,
}

/// One step of [`Chunked::step`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Data(Bytes),
    /// `buf` holds too little to go on.
    More,
    End,
}

impl Chunked {
    /// Decodes from the start of `buf`, removing what it consumed. The
    /// trailer section is read and dropped: `Trailer` is hop-by-hop here,
    /// so no trailer field is forwarded.
    pub(super) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(Malformed("chunk-size line too long"));
                        }
                        return Ok(Step::More);
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err(Malformed("chunk-size line too long"));
                    }
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let (piece, left) = take_within(buf, remaining);
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Step::Data(piece));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Chunked::Done;
                        continue;
                    }
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, _))) => {
                            buf.advance(len);
                            *self = Chunked::Done;
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILERS => {
                            return Ok(Step::More);
                        }
                        _ => return Err(Malformed("malformed trailer section")),
                    }
                }
                Chunked::Done => return Ok(Step::End),
            }
        }
    }
}

/// `chunk-size [ BWS ; chunk-ext ]` (RFC 9112 §7.1), the line without
/// its CRLF. The extensions are ignored; a bare CR or LF anywhere in the
/// line is refused.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(Malformed("bare CR or LF in a chunk-size line"));
    }
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Malformed("chunk size"));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(Malformed("chunk size overflows"))?;
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(Malformed("chunk size"));
    }
    Ok(size)
}

/// Frames one piece of a request body for `sending` into `dst`.
pub(super) fn encode_piece(sending: Sending, piece: &[u8], dst: &mut Vec<u8>) {
    if sending == Sending::Chunked {
        if piece.is_empty() {
            return;
        }
        crate::http1::chunk_line(piece.len(), dst);
        dst.extend_from_slice(piece);
        dst.extend_from_slice(b"\r\n");
    } else {
        dst.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: &Method) -> Result<Head, Malformed> {
        match parse_response(raw.as_bytes(), method, &mut HeaderMap::new())? {
            Parsed::Final(len, head) => {
                assert_eq!(len, raw.find("\r\n\r\n").map(|i| i + 4).expect("end"));
                Ok(head)
            }
            other => panic!("not a final head: {other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = &Method::GET;
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n",
                get,
                Framing::Length(3),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n",
                get,
                Framing::Length(3),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                get,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                get,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                get,
                Framing::UntilClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                get,
                Framing::Chunked,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", get, Framing::UntilClose, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 3\r\n\r\n",
                get,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
                get,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n",
                &Method::HEAD,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\n",
                get,
                Framing::Length(3),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: x, Close\r\n\r\n",
                get,
                Framing::Length(3),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n",
                get,
                Framing::Length(3),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\n",
                get,
                Framing::Length(3),
                true,
            ),
        ];
        for (raw, method, framing, keep_alive) in cases {
            let parsed = head(raw, method).expect(raw);
            assert_eq!(
                (parsed.framing, parsed.keep_alive),
                (framing, keep_alive),
                "{raw}"
            );
            if raw.contains("transfer-encoding") && method == get && framing != Framing::Empty {
                assert!(
                    !parsed.parts.headers.contains_key(CONTENT_LENGTH),
                    "a length beside a coding is not forwarded: {raw}"
                );
            }
        }
    }

    #[test]
    fn hop_by_hop_fields_are_left_out() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n\
                   x-private: 1\r\nX-Public: 2\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\n\
                   Proxy-Authenticate: Basic\r\nproxy-connection: close\r\ncontent-length: 0\r\n\r\n";
        let parsed = head(raw, &Method::GET).expect("head");
        assert!(parsed.lines.is_some());
        let names: Vec<String> = forwarded(&parsed).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x-public", "content-length"]);
        assert!(parsed.keep_alive, "proxy-connection is not connection");
        // The same, a name repeated: in the map.
        let repeated = raw.replace("X-Public: 2", "X-Public: 2\r\nx-public: 3");
        let parsed = head(&repeated, &Method::GET).expect("head");
        assert!(parsed.lines.is_none());
        let fields = forwarded(&parsed);
        assert_eq!(
            fields,
            [
                ("x-public".to_owned(), "2".to_owned()),
                ("x-public".into(), "3".into()),
                ("content-length".into(), "0".into())
            ]
        );
    }

    /// The fields a head forwards, in the order they will be written,
    /// whichever way it holds them.
    fn forwarded(head: &Head) -> Vec<(String, String)> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("text");
        match &head.lines {
            Some(lines) => {
                assert!(head.parts.headers.is_empty());
                lines
                    .iter()
                    .map(|line| (text(line.name), text(line.value)))
                    .collect()
            }
            None => head
                .parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), text(v.as_bytes())))
                .collect(),
        }
    }

    #[test]
    fn fields_stay_lines_unless_a_name_repeats() {
        let raw = "HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Odd:a: b  \r\nContent-Length: 2\r\n\
                   EMPTY:\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\nok";
        let parsed = head(raw, &Method::GET).expect("head");
        let Some(lines) = &parsed.lines else {
            panic!("lines");
        };
        assert!(parsed.parts.headers.is_empty());
        assert_eq!(
            lines
                .iter()
                .map(|line| (line.name, line.value))
                .collect::<Vec<_>>(),
            [
                (&b"server"[..], &b"nginx"[..]),
                (b"x-odd", b"a: b"),
                (b"content-length", b"2"),
                (b"empty", b""),
                (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
            ]
        );
        // Parsed into a map, they are what the map path makes of the same
        // fields, and in the same order.
        let from_lines = crate::reply::Reply::upstream(
            http::Response::from_parts(parsed.parts, crate::full("")),
            parsed.lines.expect("lines"),
        )
        .into_response();
        let repeated = raw.replace("EMPTY:", "EMPTY:\r\nempty: again");
        let mapped = head(&repeated, &Method::GET).expect("head");
        assert!(mapped.lines.is_none());
        let mut expected = mapped.parts.headers;
        let again = expected.get_all("empty").iter().nth(1).cloned();
        assert_eq!(again.expect("again"), "again");
        let date = expected.remove("date").expect("date");
        expected.insert("empty", HeaderValue::from_static(""));
        expected.insert("date", date);
        assert_eq!(*from_lines.headers(), expected);
        let order = |map: &HeaderMap| map.keys().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(order(from_lines.headers()), order(&expected));
    }

    /// A field's name or value is taken into a `HeaderName` or a
    /// `HeaderValue` exactly when httparse takes it: so the lines httparse
    /// passed make both, and never need checking again.
    #[test]
    fn httparse_and_http_agree_on_field_bytes() {
        let parses = |head: &[u8]| {
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let mut response = httparse::Response::new(&mut fields);
            matches!(response.parse(head), Ok(httparse::Status::Complete(_)))
                .then(|| {
                    response
                        .headers
                        .first()
                        .map(|f| (f.name.to_owned(), f.value.to_vec()))
                })
                .flatten()
        };
        // Short values, and values long enough for httparse's SIMD paths.
        for pad in [0, 40] {
            let fill = "a".repeat(pad);
            for byte in 0..=255u8 {
                let mut name = format!("x{fill}").into_bytes();
                name.push(byte);
                name.extend_from_slice(b"y");
                let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
                head.extend_from_slice(&name);
                head.extend_from_slice(b": v\r\n\r\n");
                let httparse = parses(&head).is_some_and(|(n, _)| n.as_bytes() == name);
                let http = http::HeaderName::from_bytes(&name).is_ok();
                assert_eq!(httparse, http, "name byte {byte:#04x}, pad {pad}");

                let mut value = format!("a{fill}").into_bytes();
                value.push(byte);
                value.extend_from_slice(format!("{fill}b").as_bytes());
                let mut head = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
                head.extend_from_slice(&value);
                head.extend_from_slice(b"\r\n\r\n");
                let httparse = parses(&head).is_some_and(|(_, v)| v == value);
                let http = HeaderValue::from_bytes(&value).is_ok();
                assert_eq!(httparse, http, "value byte {byte:#04x}, pad {pad}");
            }
        }
        // No name is empty.
        assert!(parses(b"HTTP/1.1 200 OK\r\n: v\r\n\r\n").is_none());
    }

    #[test]
    fn malformed_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\nx: \x01\r\n\r\n",
        ] {
            assert!(
                parse_response(raw.as_bytes(), &Method::GET, &mut HeaderMap::new()).is_err(),
                "{raw:?}"
            );
        }
        let many: String = (0..101).map(|i| format!("x{i}: y\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(parse_response(raw.as_bytes(), &Method::GET, &mut HeaderMap::new()).is_err());
    }

    #[test]
    fn heads_keep_their_fields_and_interim_ones_are_skipped() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Made\r\nX-One: a\r\nx-one: b\r\nempty:\r\n\r\nbody";
        let Ok(Parsed::Interim(n)) =
            parse_response(raw.as_bytes(), &Method::POST, &mut HeaderMap::new())
        else {
            panic!("interim");
        };
        assert_eq!(&raw[..n], "HTTP/1.1 100 Continue\r\n\r\n");
        let Ok(Parsed::Final(len, head)) =
            parse_response(&raw.as_bytes()[n..], &Method::POST, &mut HeaderMap::new())
        else {
            panic!("final");
        };
        assert_eq!(&raw[n + len..], "body");
        assert_eq!(head.parts.status, 201);
        assert!(head.lines.is_none(), "a repeated name");
        let ones: Vec<_> = head.parts.headers.get_all("x-one").iter().collect();
        assert_eq!(ones, ["a", "b"]);
        assert_eq!(head.parts.headers["empty"], "");
        let reason = head.parts.extensions.get::<hyper::ext::ReasonPhrase>();
        assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Made"[..]));
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 200 OK\r\ncontent-le",
                &Method::GET,
                &mut HeaderMap::new()
            ),
            Ok(Parsed::Partial)
        ));
    }

    /// Decodes `wire` fed in pieces of `step` bytes.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), Malformed> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match state.step(&mut buf)? {
                Step::Data(piece) => body.extend_from_slice(&piece),
                Step::End => return Ok((body, wire.len() - fed + buf.len())),
                Step::More if fed == wire.len() => return Err(Malformed("incomplete")),
                Step::More => {
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_reads() {
        let wire =
            b"5\r\nhello\r\n1;ext=\"x\"\r\n \r\nA \t; e\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (body, left) = decode(wire, step).expect("decodes");
            assert_eq!(body, b"hello 0123456789", "step {step}");
            assert_eq!(left, 4, "what follows the body is left: step {step}");
        }
        assert_eq!(decode(b"0\r\n\r\n", 1).expect("empty").0, b"");
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\rx\r\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"x\r\n",
            b"-5\r\nhello\r\n",
            b"+5\r\nhello\r\n",
            b"5 x\r\nhello\r\n",
            b"10000000000000000\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(
                decode(wire, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE]].concat();
        assert!(decode(&long, 1000).is_err(), "an endless chunk-size line");
    }

    #[test]
    fn request_framing_matches_hypers_client() {
        let frame = |method: Method, headers: &[(&str, &str)], body: BodyHint| {
            let mut map = HeaderMap::new();
            for (n, v) in headers {
                map.append(
                    http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            let added = Added {
                host: HeaderValue::from_static("u"),
                forwarded: None,
            };
            let mut dst = Vec::new();
            let sending = encode_request(&method, "/p?q", &mut map, &added, body, &mut dst);
            (sending, String::from_utf8(dst).expect("ascii"))
        };
        assert_eq!(
            frame(Method::GET, &[("host", "client")], None),
            (
                Sending::Nothing,
                "GET /p?q HTTP/1.1\r\nhost: u\r\n\r\n".into()
            )
        );
        assert_eq!(
            frame(Method::POST, &[("content-length", "0")], None),
            (
                Sending::Nothing,
                "POST /p?q HTTP/1.1\r\nhost: u\r\ncontent-length: 0\r\n\r\n".into()
            )
        );
        assert_eq!(
            frame(Method::POST, &[("content-length", "5")], Some(Some(5))),
            (
                Sending::Length(5),
                "POST /p?q HTTP/1.1\r\nhost: u\r\ncontent-length: 5\r\n\r\n".into()
            )
        );
        assert_eq!(
            frame(Method::POST, &[], Some(Some(5))),
            (
                Sending::Length(5),
                "POST /p?q HTTP/1.1\r\nhost: u\r\ncontent-length: 5\r\n\r\n".into()
            )
        );
        assert_eq!(
            frame(Method::POST, &[], Some(None)),
            (
                Sending::Chunked,
                "POST /p?q HTTP/1.1\r\nhost: u\r\ntransfer-encoding: chunked\r\n\r\n".into()
            )
        );
        assert_eq!(frame(Method::GET, &[], Some(None)).0, Sending::Nothing);
        assert_eq!(
            frame(Method::GET, &[("transfer-encoding", "chunked")], Some(None)),
            (
                Sending::Chunked,
                "GET /p?q HTTP/1.1\r\nhost: u\r\ntransfer-encoding: chunked\r\n\r\n".into()
            )
        );
        assert_eq!(
            frame(
                Method::PUT,
                &[("transfer-encoding", "gzip"), ("content-length", "5")],
                Some(Some(5))
            ),
            (
                Sending::Chunked,
                "PUT /p?q HTTP/1.1\r\nhost: u\r\ntransfer-encoding: gzip, chunked\r\n\r\n".into()
            )
        );
        let mut dst = Vec::new();
        encode_piece(Sending::Chunked, &[b'x'; 26], &mut dst);
        encode_piece(Sending::Chunked, b"", &mut dst);
        dst.extend_from_slice(crate::http1::LAST_CHUNK);
        assert_eq!(decode(&dst, 4).expect("round trip").0, [b'x'; 26]);
    }

    #[test]
    fn the_gateways_fields_are_written_beside_the_map() {
        let mut map = HeaderMap::new();
        for (n, v) in [("accept", "*/*"), ("host", "client.example"), ("x-b", "1")] {
            map.append(n, HeaderValue::from_static(v));
        }
        let client = HeaderValue::from_static("192.0.2.7");
        let added = |host| Added {
            host: HeaderValue::from_static("api.internal"),
            forwarded: Some(super::super::headers::Forwarded {
                client: &client,
                proto: HeaderValue::from_static("https"),
                host,
            }),
        };
        let head = |added: &Added<'_>| {
            let mut dst = Vec::new();
            encode_request(&Method::GET, "/p", &mut map.clone(), added, None, &mut dst);
            String::from_utf8(dst).expect("ascii")
        };
        assert_eq!(
            head(&added(Some(HeaderValue::from_static("client.example")))),
            "GET /p HTTP/1.1\r\nhost: api.internal\r\naccept: */*\r\nx-b: 1\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: client.example\r\n\r\n"
        );
        assert_eq!(
            head(&added(None)),
            "GET /p HTTP/1.1\r\nhost: api.internal\r\naccept: */*\r\nx-b: 1\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: https\r\n\r\n"
        );
    }
}
