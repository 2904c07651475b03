//! Path normalization (SPEC §Path normalization): turns a request target's
//! path into the one canonical form that is both matched and forwarded.
//!
//! Pure: depends on nothing but `std`. The output is what the upstream sees,
//! byte for byte, so every rule here is a security rule.

use std::fmt;

/// Why a path was refused with 400. Cheap to construct: refusals are normal
/// traffic, so no allocation happens before a response is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form (`*`, empty, or no leading `/`).
    NotOriginForm,
    /// `%2F` / `%5C` (any hex case): the upstream might decode it into a separator.
    EncodedSeparator,
    /// A raw `\`: some servers treat it as `/`.
    Backslash,
    /// A control character, raw or percent-encoded (NUL included).
    ControlCharacter,
    /// A raw byte above 0x7F.
    NonAscii,
    /// `%` not followed by two hex digits.
    BadPercentEncoding,
    /// A `.` or `..` segment carrying a `;parameter` (`..;/`, the Tomcat bypass).
    DotSegmentWithParameter,
    /// `..` that would climb above the root.
    AboveRoot,
    /// A `#` that survived to the path (fragments are never forwarded).
    Fragment,
    /// A `;` (raw or `%3B`) under `paths.semicolons: reject`: Tomcat, Jetty
    /// and Spring would cut it off and serve another path than the one matched.
    Semicolon,
}

/// What a `;` in a path segment means (SPEC §4.2 `paths.semicolons`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Semicolons {
    /// 400 for any `;` in the path (the default).
    #[default]
    Reject,
    /// `;…` is cut from every segment before matching and forwarding.
    Strip,
}

impl PathError {
    /// A short, fixed description for the JSON error body.
    pub fn describe(self) -> &'static str {
        match self {
            PathError::NotOriginForm => "request target is not an absolute path",
            PathError::EncodedSeparator => "path contains an encoded slash or backslash",
            PathError::Backslash => "path contains a backslash",
            PathError::ControlCharacter => "path contains a control character",
            PathError::NonAscii => "path contains a raw non-ASCII byte",
            PathError::BadPercentEncoding => "path contains invalid percent-encoding",
            PathError::DotSegmentWithParameter => "path contains a dot segment with a parameter",
            PathError::AboveRoot => "path climbs above the root",
            PathError::Fragment => "path contains a fragment",
            PathError::Semicolon => "path contains a ';' parameter",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl std::error::Error for PathError {}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 unreserved and sub-delims: what a path segment and a host's
/// reg-name both allow raw. A table: every byte of every path and host is
/// looked up.
#[inline]
pub fn is_unreserved_or_sub_delim(b: u8) -> bool {
    const TABLE: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = unreserved_or_sub_delim(b as u8);
            b += 1;
        }
        table
    };
    TABLE[usize::from(b)]
}

const fn unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// What RFC 3986 §3.3 allows raw in a path segment (`pchar` less `%`):
/// unreserved, sub-delims, `:` and `@`. An escape of one of these means
/// the same to every upstream, so it is decoded before matching.
#[inline]
fn is_pchar(b: u8) -> bool {
    is_unreserved_or_sub_delim(b) || b == b':' || b == b'@'
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Normalizes with the default rules (`;` refused): templates, the upstream
/// prefix, and every caller without a `paths:` block.
pub fn normalize(path: &str) -> Result<String, PathError> {
    normalize_with(path, Semicolons::Reject)
}

/// Normalizes the path part of an origin-form request target (no query).
///
/// Steps, in SPEC order: reject dangerous bytes and encodings; decode
/// percent-encoded pchars (unreserved, sub-delims, `:`, `@`; other escapes
/// keep their meaning and get upper-case hex, RFC 3986 §6.2.2.1); apply the
/// `;` rule; merge repeated slashes; remove `.` and `..` segments (RFC 3986
/// §5.2.4), refusing `..` above the root. A trailing slash is kept exactly
/// as sent.
pub fn normalize_with(path: &str, semicolons: Semicolons) -> Result<String, PathError> {
    if already_normal(path.as_bytes()) {
        return Ok(path.to_owned());
    }
    rewrite(path, semicolons)
}

/// A path every rule below leaves as it is (most paths): a leading `/`,
/// only pchars without `%` and `;`, and no empty, `.` or `..` segment but
/// a final empty one (the trailing slash). One pass, no allocation.
fn already_normal(raw: &[u8]) -> bool {
    if raw.first() != Some(&b'/') {
        return false;
    }
    let mut start = 1;
    for (i, &b) in raw.iter().enumerate().skip(1) {
        if b == b'/' {
            if matches!(&raw[start..i], b"" | b"." | b"..") {
                return false;
            }
            start = i + 1;
        } else if b == b';' || !is_pchar(b) {
            return false;
        }
    }
    !matches!(&raw[start..], b"." | b"..")
}

/// The whole normalization, for a path that needs at least one rule.
fn rewrite(path: &str, semicolons: Semicolons) -> Result<String, PathError> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }

    // Pass 1: validate every byte and decode unreserved escapes.
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let (Some(&h), Some(&l)) = (raw.get(i + 1), raw.get(i + 2)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let (Some(h), Some(l)) = (hex_value(h), hex_value(l)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let value = (h << 4) | l;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    // An encoded control character would become one in any
                    // upstream that decodes: refuse it like the raw byte.
                    0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter),
                    v if is_pchar(v) => decoded.push(v),
                    v => {
                        decoded.push(b'%');
                        decoded.push(HEX_UPPER[usize::from(v >> 4)]);
                        decoded.push(HEX_UPPER[usize::from(v & 0xF)]);
                    }
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            b'#' => return Err(PathError::Fragment),
            0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter),
            0x80..=0xFF => return Err(PathError::NonAscii),
            _ => decoded.push(b),
        }
        i += 1;
    }

    // Pass 2: segments. `decoded` starts with '/', so the first split item
    // is the empty string before it.
    let mut segments = decoded.split(|&b| b == b'/').skip(1).peekable();
    let mut out: Vec<&[u8]> = Vec::new();
    // Whether the output must end with '/': a trailing empty segment, or a
    // final `.`/`..` (RFC 3986 §5.2.4 leaves a trailing slash there).
    let mut trailing_slash = false;
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let segment = match segment.iter().position(|&b| b == b';') {
            Some(semi) => {
                let head = &segment[..semi];
                // `..;/`, the Tomcat/Spring bypass, in either mode.
                if head == b"." || head == b".." {
                    return Err(PathError::DotSegmentWithParameter);
                }
                match semicolons {
                    Semicolons::Reject => return Err(PathError::Semicolon),
                    // An emptied segment merges like a repeated slash.
                    Semicolons::Strip => head,
                }
            }
            None => segment,
        };
        match segment {
            b"" => {
                // Repeated slashes merge; only the final empty segment counts.
                trailing_slash = last;
            }
            b"." => trailing_slash = last,
            b".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = last;
            }
            _ => {
                out.push(segment);
                trailing_slash = false;
            }
        }
    }

    let mut result = String::with_capacity(decoded.len());
    for segment in &out {
        result.push('/');
        // Every byte was checked to be ASCII above.
        result.extend(segment.iter().map(|&b| char::from(b)));
    }
    if trailing_slash || out.is_empty() {
        result.push('/');
    }
    Ok(result)
}

/// Percent-decodes `s` once (`%2520` is `%20`): `None` for a truncated
/// or non-hex escape (`%+1` included) or a result that is not UTF-8. For
/// query parameters, claim-bound path parameters and URL-encoded PEM.
pub fn percent_decode(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('%') {
        return Some(std::borrow::Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_is_once_and_strict() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("a%2520b").as_deref(), Some("a%20b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%2", "%zz", "%+1", "%-1", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn table() {
        use PathError::*;
        let cases: &[(&str, Result<&str, PathError>)] = &[
            // Plain paths pass unchanged.
            ("/", Ok("/")),
            ("/api", Ok("/api")),
            ("/api/private", Ok("/api/private")),
            ("/api/private/", Ok("/api/private/")),
            ("/a/b/c/d", Ok("/a/b/c/d")),
            ("/a-b_c~d.e", Ok("/a-b_c~d.e")),
            ("/api/messages/42", Ok("/api/messages/42")),
            // Slash merging.
            ("//", Ok("/")),
            ("//api", Ok("/api")),
            ("/api//private", Ok("/api/private")),
            ("/api///private//", Ok("/api/private/")),
            ("///a///b///", Ok("/a/b/")),
            // Dot segments.
            ("/.", Ok("/")),
            ("/./", Ok("/")),
            ("/a/.", Ok("/a/")),
            ("/a/./b", Ok("/a/b")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/../", Ok("/a/")),
            ("/a/b/../c", Ok("/a/c")),
            ("/api/public/../private-scoped", Ok("/api/private-scoped")),
            ("/a/b/c/../../d", Ok("/a/d")),
            ("/a/..", Ok("/")),
            ("/a/../", Ok("/")),
            ("/a/.../b", Ok("/a/.../b")),
            ("/a/..b/c", Ok("/a/..b/c")),
            ("/a/.b/c", Ok("/a/.b/c")),
            ("/..", Err(AboveRoot)),
            ("/../a", Err(AboveRoot)),
            ("/a/../..", Err(AboveRoot)),
            ("/a/../../b", Err(AboveRoot)),
            ("//..//a", Err(AboveRoot)),
            // Percent-encoded unreserved characters are decoded.
            ("/%41%42c", Ok("/ABc")),
            ("/api/%70rivate", Ok("/api/private")),
            ("/%7e%2d%5f%2E", Ok("/~-_.")),
            ("/a/%2e/b", Ok("/a/b")),
            ("/a/%2e%2e/b", Ok("/b")),
            ("/a/b/%2E%2E", Ok("/a/")),
            ("/api/public/%2e%2e/private", Ok("/api/private")),
            ("/%2e%2e", Err(AboveRoot)),
            ("/%2e%2e/%2e%2e/etc", Err(AboveRoot)),
            // Other escapes keep their meaning, hex upper-cased.
            ("/a%20b", Ok("/a%20b")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/a%25b", Ok("/a%25b")),
            ("/a%3fb", Ok("/a%3Fb")),
            ("/a%23b", Ok("/a%23b")),
            // Encoded separators.
            ("/a%2fb", Err(EncodedSeparator)),
            ("/a%2Fb", Err(EncodedSeparator)),
            ("/a%5cb", Err(EncodedSeparator)),
            ("/a%5Cb", Err(EncodedSeparator)),
            ("/api/public%2f..%2fprivate", Err(EncodedSeparator)),
            // Raw backslash.
            ("/a\\b", Err(Backslash)),
            ("/api/public\\..\\private", Err(Backslash)),
            // Control characters, raw and encoded.
            ("/a\0b", Err(ControlCharacter)),
            ("/a\tb", Err(ControlCharacter)),
            ("/a\rb", Err(ControlCharacter)),
            ("/a\nb", Err(ControlCharacter)),
            ("/a\x7fb", Err(ControlCharacter)),
            ("/a%00b", Err(ControlCharacter)),
            ("/a%0d%0ab", Err(ControlCharacter)),
            ("/a%7F", Err(ControlCharacter)),
            // Raw non-ASCII.
            ("/caf\u{e9}", Err(NonAscii)),
            ("/\u{ff0f}api", Err(NonAscii)),
            // Bad percent-encoding.
            ("/a%", Err(BadPercentEncoding)),
            ("/a%2", Err(BadPercentEncoding)),
            ("/a%zz", Err(BadPercentEncoding)),
            ("/a%g1", Err(BadPercentEncoding)),
            ("/a%%41", Err(BadPercentEncoding)),
            // Dot segments with parameters (the Tomcat/Spring bypass).
            ("/api/public/..;/private", Err(DotSegmentWithParameter)),
            ("/..;/", Err(DotSegmentWithParameter)),
            ("/a/.;x/b", Err(DotSegmentWithParameter)),
            ("/a/..;jsessionid=1/b", Err(DotSegmentWithParameter)),
            ("/api/public/%2e%2e;/private", Err(DotSegmentWithParameter)),
            ("/api/public/%2E%2e;x/private", Err(DotSegmentWithParameter)),
            ("/a/%2e;/b", Err(DotSegmentWithParameter)),
            ("/api/public/..%3b/private", Err(DotSegmentWithParameter)),
            (
                "/api/public/%2e%2e%3Bx/private",
                Err(DotSegmentWithParameter),
            ),
            // Escaped pchars (sub-delims, ':', '@') are decoded.
            ("/api/items%3Apurge", Ok("/api/items:purge")),
            ("/api/items%3apurge", Ok("/api/items:purge")),
            ("/u/%40me", Ok("/u/@me")),
            ("/%21%24%26%27%28%29%2A%2B%2C%3D", Ok("/!$&'()*+,=")),
            // Parameters are refused by default, raw or encoded.
            ("/a;b/c", Err(Semicolon)),
            ("/a/b;v=1", Err(Semicolon)),
            ("/;/a", Err(Semicolon)),
            ("/api/admin;", Err(Semicolon)),
            ("/api/admin%3Bjsessionid=1", Err(Semicolon)),
            ("/a%3bb", Err(Semicolon)),
            // Fragments and non-origin forms.
            ("/a#frag", Err(Fragment)),
            ("*", Err(NotOriginForm)),
            ("", Err(NotOriginForm)),
            ("api/private", Err(NotOriginForm)),
            ("%2Fapi", Err(NotOriginForm)),
        ];
        assert!(cases.len() >= 60, "the table must stay at least 60 rows");
        for (input, expected) in cases {
            let got = normalize(input);
            let want = expected.map(str::to_owned);
            assert_eq!(got, want, "normalize({input:?})");
        }
    }

    #[test]
    fn strip_cuts_parameters_from_every_segment() {
        use PathError::*;
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/api/admin;jsessionid=1", Ok("/api/admin")),
            ("/api/admin;", Ok("/api/admin")),
            ("/api;v=1/admin;x", Ok("/api/admin")),
            ("/api/admin%3Bx", Ok("/api/admin")),
            ("/;x/api", Ok("/api")),
            ("/api/;x", Ok("/api/")),
            ("/api/;x/admin", Ok("/api/admin")),
            ("/api/public/..;/admin", Err(DotSegmentWithParameter)),
            ("/api/%2e%2e;x/admin", Err(DotSegmentWithParameter)),
            ("/a/.;/b", Err(DotSegmentWithParameter)),
        ];
        for (input, expected) in cases {
            let got = normalize_with(input, Semicolons::Strip);
            assert_eq!(got, expected.map(str::to_owned), "strip {input:?}");
        }
    }

    #[test]
    fn output_is_a_fixed_point() {
        for input in ["/a//b/./c/../d/", "/%41/%2e%2e/x", "/a%c3%a9/b", "/"] {
            let once = normalize(input).expect("valid input");
            assert_eq!(normalize(&once), Ok(once.clone()), "{input}");
        }
    }

    /// The fast path keeps only what the whole normalization keeps, on
    /// every path of up to six bytes over the bytes that matter to it.
    #[test]
    fn paths_left_as_they_are_are_exactly_those_the_rules_keep() {
        let alphabet = [b'/', b'.', b'a', b';', b'%', b'2', b'F', b' '];
        let mut paths = vec![b"/".to_vec()];
        let mut frontier = paths.clone();
        for _ in 0..5 {
            let mut next = Vec::new();
            for p in &frontier {
                for &b in &alphabet {
                    let mut q = p.clone();
                    q.push(b);
                    next.push(q);
                }
            }
            paths.extend(next.iter().cloned());
            frontier = next;
        }
        assert!(paths.len() > 30_000);
        let mut fast = 0;
        for raw in paths {
            let path = std::str::from_utf8(&raw).expect("ASCII");
            for mode in [Semicolons::Reject, Semicolons::Strip] {
                if already_normal(&raw) {
                    fast += 1;
                    assert_eq!(rewrite(path, mode).as_deref(), Ok(path), "{path:?}");
                }
            }
        }
        assert!(fast > 1_000, "{fast}");
    }
}
