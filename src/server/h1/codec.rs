//! The client side of HTTP/1.1 as the gateway's own server speaks it: a
//! request head of the common shape parsed with httparse (hyper's parser,
//! with hyper's server defaults); a response head written as hyper's
//! server writes it (`Server::encode`: the same framing choice, the same
//! merged `Content-Length` / `Transfer-Encoding` / `Connection` lines, a
//! cached `Date`); the chunked coding.
//!
//! A request of any other shape is not parsed here at all: it is
//! [`Parsed::NotOurs`], and hyper's server reads it from its first byte.
//! So everything hyper refuses is refused by hyper, as before.
//!
//! Pure: bytes in, bytes out. [`super`] does the I/O.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::UNIX_EPOCH;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};

use crate::reply::{Line, Lines};

/// The most fields a request head may have (hyper's server default).
const MAX_HEADERS: usize = 100;

/// A request head read from the front of the connection's buffer.
// Returned once per request and moved straight into it: boxing the head
// would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Parsed {
    /// The head has not arrived whole yet.
    Partial,
    /// A request of the common shape; its head has left the buffer.
    Request {
        head: Request<()>,
        /// The client lets the connection stay open after this exchange.
        keep_alive: bool,
    },
    /// Malformed, or of a shape served by hyper (a body, an upgrade,
    /// `Expect`, HTTP/1.0, `CONNECT`, a repeated `Connection`): the buffer
    /// is left as it was.
    NotOurs,
}

/// Where a field lies in the buffer it was parsed from.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// What a connection's parses reuse, so that a request head costs no
/// allocation but its own bytes': room for the fields' places, and the
/// last response's header map, emptied (as hyper's server reuses it).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    fields: Vec<Field>,
    headers: HeaderMap,
}

impl Scratch {
    /// Gives back a map to fill with the next request's fields.
    pub(crate) fn recycle(&mut self, mut headers: HeaderMap) {
        if !headers.is_empty() {
            headers.clear();
        }
        self.headers = headers;
    }
}

/// Parses the request head at the front of `buf`. Only HTTP/1.1 requests
/// without a body (neither `Content-Length` nor `Transfer-Encoding`, RFC
/// 9112 §6.3: their body is empty), without `Upgrade` or `Expect`, and
/// not `CONNECT`, are [`Parsed::Request`]; the fields and target are
/// slices of the head's bytes, not copies (as hyper's are).
pub(crate) fn parse_request(buf: &mut BytesMut, scratch: &mut Scratch) -> Parsed {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotOurs,
    };
    if request.version != Some(1) {
        return Parsed::NotOurs;
    }
    let Some(method) = request
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Parsed::NotOurs;
    };
    if method == Method::CONNECT {
        return Parsed::NotOurs;
    }
    let base = buf.as_ptr() as usize;
    let at = |piece: &[u8]| {
        let start = piece.as_ptr() as usize - base;
        (start, start + piece.len())
    };
    let Some(path) = request.path else {
        return Parsed::NotOurs;
    };
    let target = at(path.as_bytes());
    let ranges = &mut scratch.fields;
    ranges.clear();
    let mut connections = 0;
    let mut keep_alive = true;
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        let served_by_hyper = match name.len() {
            6 => name.eq_ignore_ascii_case(b"expect"),
            7 => name.eq_ignore_ascii_case(b"upgrade"),
            14 => name.eq_ignore_ascii_case(b"content-length"),
            17 => name.eq_ignore_ascii_case(b"transfer-encoding"),
            10 if name.eq_ignore_ascii_case(b"connection") => {
                connections += 1;
                keep_alive = !has_close(field.value);
                // hyper lets the last of several decide, oddly: not ours.
                connections > 1
            }
            _ => false,
        };
        if served_by_hyper {
            return Parsed::NotOurs;
        }
        ranges.push(Field {
            name: at(name),
            value: at(field.value),
        });
    }

    let bytes = buf.split_to(len).freeze();
    let slice = |(start, end): (usize, usize)| bytes.slice(start..end);
    let built = (|| {
        let uri = Uri::from_maybe_shared(slice(target)).ok()?;
        // Filled in place, then swapped with the request's own (empty)
        // map, which waits in `scratch` to be replaced: no map is made
        // only to be dropped.
        let headers = &mut scratch.headers;
        // With room for what the proxy adds (forwarding and identity
        // fields): the map is not grown, and rehashed, on the way out.
        headers.reserve(ranges.len() + 8);
        for field in ranges.iter() {
            let name = crate::http1::header_name(&bytes[field.name.0..field.name.1]).ok()?;
            let value = HeaderValue::from_maybe_shared(slice(field.value)).ok()?;
            headers.append(name, value);
        }
        let mut head = Request::new(());
        *head.method_mut() = method;
        *head.uri_mut() = uri;
        std::mem::swap(head.headers_mut(), headers);
        Some(head)
    })();
    match built {
        Some(head) => Parsed::Request { head, keep_alive },
        None => {
            scratch.headers.clear();
            // Put the head back for hyper, which refuses it (400).
            let mut whole = BytesMut::with_capacity(bytes.len() + buf.len());
            whole.extend_from_slice(&bytes);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::NotOurs
        }
    }
}

/// Whether the bytes read since `known_partial` (the buffer's length when
/// it last held a partial head) may end the head: a blank line, CRLF or
/// bare LF (hyper's `is_complete_fast`). A head trickled in byte by byte
/// is then parsed again only when it may be whole, not after every byte.
pub(crate) fn may_end_head(buf: &[u8], known_partial: usize) -> bool {
    let fresh = &buf[known_partial.saturating_sub(3).min(buf.len())..];
    fresh.iter().enumerate().any(|(at, &b)| {
        let rest = &fresh[at + 1..];
        match b {
            b'\r' => rest.starts_with(b"\n\r\n"),
            b'\n' => rest.starts_with(b"\n") || rest.starts_with(b"\r\n"),
            _ => false,
        }
    })
}

/// How a response body follows its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (`0`: no body is written, whatever the body
    /// holds, as for a `HEAD` or a `304`).
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Until the connection closes.
    CloseDelimited,
}

/// What [`encode_response`] decided besides the head's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoded {
    pub framing: Framing,
    /// The connection closes after this response.
    pub last: bool,
}

/// The response could not be written (hyper's "user header" errors:
/// `Content-Length` values that disagree or are not numbers, a framing
/// field where one was written already): the connection is closed
/// without a response, as hyper closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unwritable;

/// What is known of the body: `None` when it is empty, else its exact
/// length if known.
pub(crate) type BodyLength = Option<Option<u64>>;

/// hyper's `Server::encode` for an HTTP/1.1 request, written into `dst`:
/// the status line (a `ReasonPhrase` extension kept), every field in map
/// order (or in `lines`' order, when given: an upstream's fields, in place
/// of the then empty map), names in lower case, several values of
/// `Content-Length`, `Transfer-Encoding`, `Connection` and `Trailer` on
/// one line, the body's length added when no field gives it, and `Date`
/// when missing.
pub(crate) fn encode_response(
    parts: &http::response::Parts,
    lines: Option<&Lines>,
    body: BodyLength,
    method: &Method,
    keep_alive: bool,
    dst: &mut Vec<u8>,
) -> Result<Encoded, Unwritable> {
    let status = parts.status;
    if status.is_informational() {
        // hyper's server cannot send a 1xx as the response (a 101 comes
        // only to an upgrade, which hyper serves): a bare 500, then close.
        dst.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n");
        date_line(dst);
        dst.extend_from_slice(b"\r\n");
        return Ok(Encoded {
            framing: Framing::Length(0),
            last: true,
        });
    }
    let head = method == Method::HEAD;
    let can_chunk = !head && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let can_have_length = !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let http10 = parts.version == Version::HTTP_10;
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if parts.version != Version::HTTP_10 && status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(reason) => dst.extend_from_slice(reason.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }

    let shape = Shape {
        body,
        head,
        http10,
        can_chunk,
        keep_alive,
    };
    let Written {
        mut framing,
        last,
        wrote_len,
        wrote_date,
    } = match lines {
        Some(lines) => write_fields(lines.iter(), shape, dst)?,
        None => write_fields(
            parts.headers.iter().map(|(name, value)| Line {
                name: name.as_str().as_bytes(),
                value: value.as_bytes(),
                whole: &[],
            }),
            shape,
            dst,
        )?,
    };

    if !wrote_len {
        framing = match body {
            Some(None) if http10 || !can_chunk => Framing::CloseDelimited,
            Some(None) => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            None | Some(Some(0)) => {
                if can_have_length && !head {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(Some(length)) if can_have_length => {
                use std::io::Write as _;
                let _ = write!(dst, "content-length: {length}\r\n");
                Framing::Length(length)
            }
            Some(Some(_)) => Framing::Length(0),
        };
    }
    if !can_chunk {
        framing = Framing::Length(0);
    }
    if !wrote_date {
        date_line(dst);
    }
    dst.extend_from_slice(b"\r\n");
    Ok(Encoded { framing, last })
}

/// What the fields' lines depend on besides the fields.
#[derive(Clone, Copy)]
struct Shape {
    body: BodyLength,
    /// The answer to a `HEAD`.
    head: bool,
    http10: bool,
    can_chunk: bool,
    keep_alive: bool,
}

/// What writing the fields decided.
struct Written {
    framing: Framing,
    /// The connection closes after this response.
    last: bool,
    /// A `Content-Length` or `Transfer-Encoding` line was written.
    wrote_len: bool,
    wrote_date: bool,
}

/// The fields' lines, from fields with lower-case names in which a
/// repeated name's values are adjacent (a map's order), ended by
/// `Connection: close` when the connection closes and no `Connection`
/// field said so. A field that comes with its `whole` line (from
/// [`Lines`]) and is not merged with another is written as that line.
fn write_fields<'f>(
    fields: impl Iterator<Item = Line<'f>>,
    shape: Shape,
    dst: &mut Vec<u8>,
) -> Result<Written, Unwritable> {
    let Shape {
        body,
        head,
        http10,
        can_chunk,
        keep_alive,
    } = shape;
    let mut framing = Framing::Length(0);
    let mut last = !keep_alive;
    let mut wrote_len = false;
    let mut wrote_date = false;
    let mut must_add_chunked = false;
    let mut previous_length = None;
    // The field whose line is still open (values of a merged field follow
    // on it after ", ").
    let mut open: Option<&[u8]> = None;
    // hyper says `Connection: close` when the connection will close for
    // the client's asking (or the drain): a value added to the field, or
    // the field added after the others.
    let mut said_close = false;
    let mut saw_connection = false;
    // A line left open is ended: a `Transfer-Encoding` line not ending in
    // `chunked` gets it, a `Connection` line the `close` to say.
    let close_line =
        |dst: &mut Vec<u8>, open: &mut Option<&[u8]>, chunked: bool, said_close: bool| {
            if let Some(name) = open.take() {
                if name == CONNECTION_NAME && !keep_alive && !said_close {
                    dst.extend_from_slice(b", close");
                }
                let chunked = chunked && name == TRANSFER_ENCODING_NAME;
                dst.extend_from_slice(if chunked { b", chunked\r\n" } else { b"\r\n" });
            }
        };
    for Line { name, value, whole } in fields {
        if open.is_some_and(|o| o != name) {
            close_line(dst, &mut open, must_add_chunked, said_close);
        }
        let continuing = open.is_some();
        if name == CONTENT_LENGTH_NAME {
            if wrote_len && !continuing {
                return Err(Unwritable);
            }
            match body {
                Some(Some(known)) => {
                    // hyper trusts the field to match the body's length.
                    if !continuing {
                        framing = Framing::Length(known);
                        open_line(dst, name, value);
                        open = Some(name);
                        wrote_len = true;
                    }
                    continue;
                }
                Some(None) => {
                    let Some(length) = digits(value) else {
                        return Err(Unwritable);
                    };
                    match previous_length {
                        Some(previous) if previous != length => return Err(Unwritable),
                        Some(_) => {}
                        None => {
                            framing = Framing::Length(length);
                            open_line(dst, name, value);
                            open = Some(name);
                            wrote_len = true;
                            previous_length = Some(length);
                        }
                    }
                    continue;
                }
                // No body: the field stands only for a HEAD's answer.
                None if !head => continue,
                None => wrote_len = true,
            }
        } else if name == TRANSFER_ENCODING_NAME {
            if wrote_len && !continuing {
                return Err(Unwritable);
            }
            if http10 || !can_chunk {
                continue;
            }
            wrote_len = true;
            must_add_chunked = !crate::http1::ends_in_chunked(value);
            if continuing {
                dst.extend_from_slice(b", ");
                dst.extend_from_slice(value);
            } else {
                framing = Framing::Chunked;
                open_line(dst, name, value);
                open = Some(name);
            }
            continue;
        } else if name == CONNECTION_NAME || name == TRAILER_NAME {
            if name == TRAILER_NAME && (http10 || !can_chunk) {
                continue;
            }
            if name == CONNECTION_NAME {
                saw_connection = true;
                if has_close(value) {
                    last = true;
                    said_close = true;
                }
            }
            if continuing {
                dst.extend_from_slice(b", ");
                dst.extend_from_slice(value);
            } else {
                open_line(dst, name, value);
                open = Some(name);
            }
            continue;
        } else if name == DATE_NAME {
            wrote_date = true;
        }
        if whole.is_empty() {
            open_line(dst, name, value);
            dst.extend_from_slice(b"\r\n");
        } else {
            dst.extend_from_slice(whole);
        }
    }
    close_line(dst, &mut open, must_add_chunked, said_close);
    if !keep_alive && !saw_connection {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    Ok(Written {
        framing,
        last,
        wrote_len,
        wrote_date,
    })
}

const CONNECTION_NAME: &[u8] = b"connection";
const CONTENT_LENGTH_NAME: &[u8] = b"content-length";
const DATE_NAME: &[u8] = b"date";
const TRAILER_NAME: &[u8] = b"trailer";
const TRANSFER_ENCODING_NAME: &[u8] = b"transfer-encoding";

fn open_line(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
}

/// hyper's `content_length_parse`: ASCII digits only, no overflow.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// hyper's `connection_close`: a `close` token, in any case, in a value
/// that `to_str` takes (visible ASCII and tabs).
fn has_close(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        && std::str::from_utf8(value)
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
}

/// The `Date` line, its text made at most once a second per thread.
fn date_line(dst: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let second = crate::clock::since_epoch().as_secs();
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let at = UNIX_EPOCH + std::time::Duration::from_secs(second);
            *cached = (second, httpdate::fmt_http_date(at));
        }
        dst.extend_from_slice(b"date: ");
        dst.extend_from_slice(cached.1.as_bytes());
        dst.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(raw);
        (parse_request(&mut buf, &mut Scratch::default()), buf)
    }

    #[test]
    fn a_common_request_is_parsed_and_leaves_the_next_in_the_buffer() {
        let (parsed, rest) = parse(
            "GET /a/b?c=d HTTP/1.1\r\nHost: api\r\nX-Two: 1\r\nx-two: 2\r\n\
             Connection: keep-alive\r\n\r\nGET /next",
        );
        let Parsed::Request { head, keep_alive } = parsed else {
            panic!("not parsed: {parsed:?}");
        };
        assert!(keep_alive);
        assert_eq!(head.method(), Method::GET);
        assert_eq!(head.uri(), "/a/b?c=d");
        assert_eq!(head.version(), Version::HTTP_11);
        assert_eq!(head.headers()["host"], "api");
        let twos: Vec<_> = head.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_in_any_case_ends_the_connection() {
        for value in ["close", "Keep-Alive, CLOSE", " x , close ", "a\tb, close"] {
            let (parsed, _) = parse(&format!(
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: {value}\r\n\r\n"
            ));
            assert!(
                matches!(
                    parsed,
                    Parsed::Request {
                        keep_alive: false,
                        ..
                    }
                ),
                "{value}: {parsed:?}"
            );
        }
    }

    #[test]
    fn a_connection_field_that_is_not_visible_ascii_closes_nothing() {
        // hyper reads it with `to_str`, which refuses it: keep-alive.
        let mut buf = BytesMut::from(
            &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, \xc3\xa9\r\n\r\n"[..],
        );
        let parsed = parse_request(&mut buf, &mut Scratch::default());
        assert!(
            matches!(
                parsed,
                Parsed::Request {
                    keep_alive: true,
                    ..
                }
            ),
            "{parsed:?}"
        );
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        let (parsed, rest) = parse("GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(matches!(parsed, Parsed::Partial));
        assert_eq!(rest.len(), 25);
    }

    #[test]
    fn every_other_shape_is_left_to_hyper_untouched() {
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        let cases = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc".to_owned(),
            "GET / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n".to_owned(),
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_owned(),
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
                .to_owned(),
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n".to_owned(),
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n".to_owned(),
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_owned(),
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n"
                .to_owned(),
            // Malformed: hyper answers these (400, 431).
            "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n".to_owned(),
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n".to_owned(),
            "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            "G(T / HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n"),
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n".to_owned(),
        ];
        for raw in cases {
            let (parsed, rest) = parse(&raw);
            assert!(matches!(parsed, Parsed::NotOurs), "{raw:?}: {parsed:?}");
            assert_eq!(&rest[..], raw.as_bytes(), "the buffer changed: {raw:?}");
        }
    }

    #[test]
    fn a_target_hyper_would_refuse_is_put_back_whole() {
        // httparse takes it; `Uri` does not (too long), nor does hyper.
        let raw = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\nnext",
            "a".repeat(70_000)
        );
        let (parsed, rest) = parse(&raw);
        assert!(matches!(parsed, Parsed::NotOurs), "{parsed:?}");
        assert_eq!(&rest[..], raw.as_bytes());
    }

    #[test]
    fn a_head_may_end_only_at_a_blank_line() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        // Every split point: the end is seen only once it has arrived.
        for known in 0..head.len() {
            for len in known..=head.len() {
                assert_eq!(
                    may_end_head(&head[..len], known),
                    len == head.len(),
                    "known {known}, len {len}"
                );
            }
        }
        assert!(may_end_head(b"GET / HTTP/1.1\nHost: a\n\n", 20));
        assert!(may_end_head(b"GET / HTTP/1.1\nHost: a\n\r\n", 20));
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(digits(b"0"), Some(0));
        assert_eq!(digits(b"1234"), Some(1234));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1,1",
            b"99999999999999999999",
        ] {
            assert_eq!(digits(bad), None, "{bad:?}");
        }
    }
}
