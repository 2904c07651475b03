//! `tracing:` — W3C trace context and OTLP span export (SPEC §4.7). Without
//! the block the gateway neither reads nor writes trace headers.
//!
//! Pure: depends on `serde` and `http`; reads header values from the
//! environment when the config names them.

use std::time::Duration;

use http::HeaderName;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::raw::Dur;
use super::upstream::Secret;
use super::{ConfigError, Ctx};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// OTLP/HTTP (protobuf) base URL; spans go to `{url}/v1/traces`.
    /// Without it trace context is still continued and propagated.
    #[schemars(with = "Option<String>")]
    pub otlp_endpoint: Option<Spanned<String>>,
    /// Headers sent with every export (an API key, say), each value read
    /// from an environment variable.
    #[serde(default)]
    pub otlp_headers: Vec<RawOtlpHeader>,
    /// The share of new traces recorded (0.0 to 1.0); a trusted parent's
    /// sampled flag is followed.
    #[serde(default = "RawTracing::default_ratio")]
    #[schemars(with = "f64", range(min = 0.0, max = 1.0))]
    pub sample_ratio: Spanned<f64>,
    /// `service.name` of the exported spans.
    #[serde(default = "RawTracing::default_service")]
    pub service_name: String,
    /// How often a batch is sent.
    #[serde(default = "RawTracing::default_interval")]
    pub export_interval: Dur,
    /// Spans waiting for export; past it new spans are dropped (counted),
    /// never waited for.
    #[serde(default = "RawTracing::default_queue")]
    pub queue_size: usize,
}

impl RawTracing {
    fn default_ratio() -> Spanned<f64> {
        super::raw::unspanned(1.0)
    }
    fn default_service() -> String {
        "scopegate".to_owned()
    }
    fn default_interval() -> Dur {
        Dur(Duration::from_secs(2))
    }
    fn default_queue() -> usize {
        2048
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOtlpHeader {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The environment variable holding the value.
    #[schemars(with = "String")]
    pub value_env: Spanned<String>,
}

/// The validated `tracing:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// `{otlp_endpoint}/v1/traces`, or no export.
    pub traces_url: Option<String>,
    pub headers: Vec<(HeaderName, Secret)>,
    pub sample_ratio: f64,
    pub service_name: String,
    pub export_interval: Duration,
    pub queue_size: usize,
}

pub(super) fn build(ctx: &Ctx<'_>, raw: RawTracing) -> Result<Tracing, ConfigError> {
    let traces_url = match raw.otlp_endpoint {
        None => None,
        Some(e) => {
            let ok = e.value.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some()
                    && u.query().is_none()
            });
            if !ok {
                return Err(ctx.err(
                    e.referenced,
                    "tracing.otlp_endpoint",
                    "must be an http(s) base URL like http://collector:4318 (no query)",
                ));
            }
            Some(format!("{}/v1/traces", e.value.trim_end_matches('/')))
        }
    };
    let mut headers = Vec::with_capacity(raw.otlp_headers.len());
    for header in raw.otlp_headers {
        let name = HeaderName::from_bytes(header.name.value.as_bytes()).map_err(|_| {
            ctx.err(
                header.name.referenced,
                "tracing.otlp_headers.name",
                format!("{:?} is not a header name", header.name.value),
            )
        })?;
        let value = super::upstream::secret(
            ctx,
            "tracing.otlp_headers",
            "value",
            header.value_env.referenced,
            Some(&header.value_env),
            None,
        )?;
        if http::HeaderValue::from_str(value.expose()).is_err() {
            return Err(ctx.err(
                header.value_env.referenced,
                "tracing.otlp_headers.value_env",
                format!(
                    "{} does not hold a valid header value",
                    header.value_env.value
                ),
            ));
        }
        headers.push((name, value));
    }
    let ratio = raw.sample_ratio;
    if !(0.0..=1.0).contains(&ratio.value) {
        return Err(ctx.err(
            ratio.referenced,
            "tracing.sample_ratio",
            "must be between 0.0 and 1.0",
        ));
    }
    if raw.export_interval.0.is_zero() || raw.queue_size == 0 {
        return Err(ctx.err(
            serde_saphyr::Location::UNKNOWN,
            "tracing",
            "export_interval and queue_size must be greater than 0",
        ));
    }
    Ok(Tracing {
        traces_url,
        headers,
        sample_ratio: ratio.value,
        service_name: raw.service_name,
        export_interval: raw.export_interval.0,
        queue_size: raw.queue_size,
    })
}
