//! `paths:` — how the upstream reads a path (SPEC §4.2): what a `;` means,
//! and whether case and a trailing slash matter to it.
//!
//! Pure: depends on `serde` and [`crate::route`].

use schemars::JsonSchema;
use serde::Deserialize;

use crate::route::{PathRules, Semicolons};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPaths {
    /// `reject` (default): a `;` in the path is a 400. `strip`: `;…` is cut
    /// from every segment before matching and forwarding (Tomcat, Jetty and
    /// Spring upstreams that use matrix or session parameters).
    pub semicolons: RawSemicolons,
    /// `insensitive`: match lower-cased (Express, ASP.NET Core upstreams);
    /// the path is forwarded as sent.
    pub case: RawCase,
    /// `either`: `/a` and `/a/` match the same route (Express non-strict,
    /// Spring <= 5); the path is forwarded as sent.
    pub trailing_slash: RawTrailingSlash,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawSemicolons {
    #[default]
    Reject,
    Strip,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawCase {
    #[default]
    Sensitive,
    Insensitive,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawTrailingSlash {
    #[default]
    Strict,
    Either,
}

impl RawPaths {
    pub fn build(&self) -> PathRules {
        PathRules {
            semicolons: match self.semicolons {
                RawSemicolons::Reject => Semicolons::Reject,
                RawSemicolons::Strip => Semicolons::Strip,
            },
            case_insensitive: matches!(self.case, RawCase::Insensitive),
            trailing_slash_either: matches!(self.trailing_slash, RawTrailingSlash::Either),
        }
    }
}
