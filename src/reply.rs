//! A response on its way to the client.
//!
//! An upstream's answer usually goes out as it came: its fields, less the
//! hop-by-hop ones, in their order. Parsing them into a `HeaderMap` (each
//! name hashed, each value checked and counted) only to write them out
//! again cost about 850 instructions a request. So a [`Reply`] keeps an
//! upstream's fields as the lines the client will read, and makes the map
//! only when something needs it: a header the gateway adds (CORS, quota),
//! or hyper's server writing the response.
//!
//! Pure: no I/O.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::Body;

/// A response on its way to the client: a `Response<Body>`, or an
/// upstream's answer whose fields are still the lines it sent.
#[derive(Debug)]
pub struct Reply {
    /// Its map is empty while `lines` holds the fields (and keeps its
    /// allocation, for them or for the connection's next request).
    response: Response<Body>,
    lines: Option<Lines>,
}

/// An upstream response's fields as the client will read them: one
/// `name: value\r\n` line each, names in lower case (as `http` names
/// them), in the order they came; no name twice (a repeated name is
/// grouped in a map, as hyper writes it), no hop-by-hop field. Each line
/// is preceded by its name's length and its own (`u32`, native order), so
/// that it is found without a scan and written whole.
///
/// httparse checked every byte, and its checks are `http`'s own
/// (`upstream::h1`'s test `httparse_and_http_agree_on_field_bytes`), so
/// each line makes a `HeaderName` and a `HeaderValue`.
#[derive(Debug, Default)]
pub(crate) struct Lines(Vec<u8>);

/// A field of [`Lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line<'l> {
    /// In lower case.
    pub name: &'l [u8],
    pub value: &'l [u8],
    /// `name: value\r\n`.
    pub whole: &'l [u8],
}

const LENGTH: usize = size_of::<u32>();

impl Lines {
    /// Room for `fields` fields of `bytes` bytes in all, as they came.
    pub(crate) fn with_room(bytes: usize, fields: usize) -> Self {
        Self(Vec::with_capacity(bytes + fields * (2 * LENGTH + 2)))
    }

    /// Adds a field; `name` is lower-cased here. Names and values are
    /// parts of a response head, far shorter than 4 GiB.
    pub(crate) fn push(&mut self, name: &[u8], value: &[u8]) {
        let line = name.len() + 2 + value.len() + 2;
        let length = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_ne_bytes();
        self.0.reserve(2 * LENGTH + line);
        self.0.extend_from_slice(&length(name.len()));
        self.0.extend_from_slice(&length(line));
        let at = self.0.len();
        self.0.extend_from_slice(name);
        self.0[at..].make_ascii_lowercase();
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    /// Each field, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Line<'_>> {
        each_line(&self.0)
    }

    /// The fields, appended to `headers`; their values share the lines'
    /// one allocation. Each always parses (see [`Lines`]).
    pub(crate) fn into_map(self, headers: &mut HeaderMap) {
        let bytes = Bytes::from(self.0);
        headers.reserve(each_line(&bytes).count());
        for Line { name, value, .. } in each_line(&bytes) {
            if let (Ok(name), Ok(value)) = (
                crate::http1::header_name(name),
                HeaderValue::from_maybe_shared(bytes.slice_ref(value)),
            ) {
                headers.append(name, value);
            }
        }
    }
}

/// The fields of a [`Lines`]' bytes, in order.
fn each_line(bytes: &[u8]) -> impl Iterator<Item = Line<'_>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let (name, tail) = rest.split_first_chunk::<LENGTH>()?;
        let (line, tail) = tail.split_first_chunk::<LENGTH>()?;
        let name = u32::from_ne_bytes(*name) as usize;
        let line = u32::from_ne_bytes(*line) as usize;
        let (whole, tail) = tail.split_at_checked(line)?;
        rest = tail;
        Some(Line {
            name: whole.get(..name)?,
            value: whole.get(name + 2..line.checked_sub(2)?)?,
            whole,
        })
    })
}

impl Reply {
    /// An upstream's answer, its fields in `lines`; `response`'s map is
    /// empty.
    pub(crate) fn upstream(response: Response<Body>, lines: Lines) -> Self {
        debug_assert!(response.headers().is_empty());
        Self {
            response,
            lines: Some(lines),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The fields, in a map: an upstream's lines are parsed into it first.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.parse_lines();
        self.response.headers_mut()
    }

    /// The response, its fields in its map.
    pub fn into_response(mut self) -> Response<Body> {
        self.parse_lines();
        self.response
    }

    /// For the gateway's own HTTP/1.1 writer: the response, and the lines
    /// to write instead of its (then empty) map.
    pub(crate) fn into_parts(self) -> (Response<Body>, Option<Lines>) {
        (self.response, self.lines)
    }

    fn parse_lines(&mut self) {
        if let Some(lines) = self.lines.take() {
            lines.into_map(self.response.headers_mut());
        }
    }
}

impl From<Response<Body>> for Reply {
    fn from(response: Response<Body>) -> Self {
        Self {
            response,
            lines: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_back_as_pushed_and_parse_into_a_map() {
        let mut lines = Lines::default();
        lines.push(b"Content-Type", b"text/plain");
        lines.push(b"X-Empty", b"");
        lines.push(b"x-odd", b"a: b:c");
        let fields: Vec<_> = lines
            .iter()
            .map(|line| (line.name, line.value, line.whole))
            .collect();
        assert_eq!(
            fields,
            [
                (
                    &b"content-type"[..],
                    &b"text/plain"[..],
                    &b"content-type: text/plain\r\n"[..]
                ),
                (b"x-empty", b"", b"x-empty: \r\n"),
                (b"x-odd", b"a: b:c", b"x-odd: a: b:c\r\n"),
            ]
        );

        let mut reply = Reply::upstream(Response::new(crate::full("")), lines);
        let headers = reply.headers_mut();
        assert_eq!(headers.len(), 3);
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers["x-empty"], "");
        assert_eq!(headers["x-odd"], "a: b:c");
        let order: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(order, ["content-type", "x-empty", "x-odd"]);
        // Parsed once: a second look finds the same map.
        headers.append("x-added", HeaderValue::from_static("1"));
        assert_eq!(reply.into_response().headers().len(), 4);
    }
}
