//! Route templates: `/literal/{name}/{*rest}` parsed once at load time.
//!
//! Pure: depends only on `std` and [`super::normalize`].

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this text (the empty literal is a trailing slash).
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param,
    /// `{*name}`: the rest of the path, at least one non-empty segment.
    CatchAll,
}

/// A parsed template. Parameter names are kept only for display: `/a/{x}` and
/// `/a/{y}` compare equal.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

/// Why a template was refused at load time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("a route path must start with '/'")]
    NoLeadingSlash,
    #[error("empty segment ('//') in a route path can never match: paths are normalized first")]
    EmptySegment,
    #[error("'{{' or '}}' must enclose a whole segment, as in /users/{{id}}")]
    PartialParameter,
    #[error("parameter name {0:?} must be non-empty letters, digits or '_'")]
    BadParameterName(String),
    #[error("{{*{0}}} must be the last segment")]
    CatchAllNotLast(String),
    #[error("segment {0:?} can never match: requests are normalized to {1:?} before matching")]
    NotNormalized(String, String),
    #[error("segment {0:?} can never match: a request carrying it is refused ({1})")]
    Refused(String, &'static str),
}

impl Template {
    /// Parses a template as written in `gateway.yaml`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(TemplateError::NoLeadingSlash);
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (catch_all, name) = match inner.strip_prefix('*') {
                    Some(name) => (true, name),
                    None => (false, inner),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(TemplateError::BadParameterName(name.to_owned()));
                }
                if catch_all && !last {
                    return Err(TemplateError::CatchAllNotLast(name.to_owned()));
                }
                segments.push(if catch_all {
                    Segment::CatchAll
                } else {
                    Segment::Param
                });
                continue;
            }
            if part.contains(['{', '}']) {
                return Err(TemplateError::PartialParameter);
            }
            if part.is_empty() && !last {
                return Err(TemplateError::EmptySegment);
            }
            // A literal that normalization would rewrite can never be seen.
            let probe = format!("/{part}");
            match super::normalize(&probe) {
                Ok(n) if n == probe => {}
                Ok(n) => return Err(TemplateError::NotNormalized((*part).to_owned(), n)),
                Err(e) => return Err(TemplateError::Refused((*part).to_owned(), e.describe())),
            }
            segments.push(Segment::Literal((*part).to_owned()));
        }
        Ok(Template {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as written (with its parameter names).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.segments == other.segments
    }
}

impl Eq for Template {}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares_without_names() {
        let a = Template::parse("/a/{x}/{*rest}").expect("valid");
        let b = Template::parse("/a/{y}/{*tail}").expect("valid");
        assert_eq!(a, b);
        assert_eq!(
            a.segments(),
            &[
                Segment::Literal("a".into()),
                Segment::Param,
                Segment::CatchAll
            ]
        );
        assert_ne!(
            Template::parse("/a/").expect("valid"),
            Template::parse("/a").expect("valid")
        );
        assert_eq!(
            Template::parse("/").expect("valid").segments(),
            &[Segment::Literal(String::new())]
        );
    }

    #[test]
    fn refuses_bad_templates() {
        use TemplateError::*;
        let bad: &[(&str, TemplateError)] = &[
            ("api", NoLeadingSlash),
            ("/a//b", EmptySegment),
            ("/v{x}", PartialParameter),
            ("/a/{x", PartialParameter),
            ("/{}", BadParameterName(String::new())),
            ("/{a-b}", BadParameterName("a-b".into())),
            ("/{*rest}/x", CatchAllNotLast("rest".into())),
        ];
        for (text, want) in bad {
            assert_eq!(Template::parse(text).err().as_ref(), Some(want), "{text}");
        }
        for text in ["/a/../b", "/a/./b", "/%41", "/a%2fb"] {
            assert!(Template::parse(text).is_err(), "{text} must be refused");
        }
    }
}
