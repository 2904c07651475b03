//! `issuers[].dpop` and `routes[].dpop` — sender-constrained tokens
//! (SPEC §4.8): whether DPoP proofs are accepted or required, how old a
//! proof may be, which algorithms may sign it.
//!
//! Pure: depends on `serde` and [`crate::dpop`].

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::raw::{Alg, Dur};
use super::{ConfigError, Ctx};
use crate::dpop::{ASYMMETRIC, Mode, Settings};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    /// Bound tokens must prove; unbound bearer tokens still work.
    #[default]
    Allowed,
    /// Every token needs a DPoP proof.
    Required,
    /// DPoP-bound tokens are refused.
    Off,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDpop {
    #[serde(default)]
    pub mode: RawMode,
    /// How long after its `iat` a proof is accepted (plus `clock_skew`).
    #[serde(default = "RawDpop::default_max_age")]
    pub max_age: Dur,
    /// Default: every asymmetric algorithm the gateway verifies.
    #[schemars(with = "Option<Vec<Alg>>")]
    pub algorithms: Option<Spanned<Vec<Alg>>>,
}

impl RawDpop {
    fn default_max_age() -> Dur {
        Dur(std::time::Duration::from_secs(60))
    }
}

pub(super) fn build(
    ctx: &Ctx<'_>,
    field: &str,
    at: Location,
    raw: RawDpop,
) -> Result<Settings, ConfigError> {
    let algorithms = match raw.algorithms {
        None => ASYMMETRIC.to_vec(),
        Some(list) => {
            if list.value.is_empty() {
                return Err(ctx.err(
                    list.referenced,
                    format!("{field}.dpop.algorithms"),
                    "is empty: leave it out for every asymmetric algorithm",
                ));
            }
            if let Some(Alg(symmetric)) = list.value.iter().find(|a| !ASYMMETRIC.contains(&a.0)) {
                return Err(ctx.err(
                    list.referenced,
                    format!("{field}.dpop.algorithms"),
                    format!("{symmetric:?} is not asymmetric: a proof is signed with the client's own key pair"),
                ));
            }
            list.value.into_iter().map(|a| a.0).collect()
        }
    };
    let max_age = i64::try_from(raw.max_age.0.as_secs()).unwrap_or(i64::MAX);
    if max_age == 0 {
        return Err(ctx.err(at, format!("{field}.dpop.max_age"), "must be at least 1s"));
    }
    Ok(Settings {
        mode: match raw.mode {
            RawMode::Allowed => Mode::Allowed,
            RawMode::Required => Mode::Required,
            RawMode::Off => Mode::Off,
        },
        max_age,
        algorithms,
    })
}
