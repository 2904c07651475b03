//! The metrics of SPEC §Operations in one registry per process.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::token::CacheStats;

/// A route template as a label value, shared rather than copied per request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RouteLabel(Option<Arc<str>>);

impl EncodeLabelValue for RouteLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.0.as_deref().unwrap_or("none"))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route template, never the raw path (bounded cardinality).
    route: RouteLabel,
    /// `allow`, or the refusal's error code.
    decision: &'static str,
    status: u16,
}

/// Why the upstream could not be reached or answered badly.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum UpstreamErrorKind {
    /// Connection refused or reset, or a broken response: 502.
    Unavailable,
    /// No response headers within `request_timeout`: 504.
    Timeout,
    /// The request body went past `max_request_body_bytes` while streaming: 413.
    BodyTooLarge,
    /// The client sent no body chunk for `body_timeout`: 408.
    BodyTimeout,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: UpstreamErrorKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksLabels {
    issuer: String,
    result: &'static str,
}

/// What a reload did.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    /// A changed, valid config was swapped in.
    Applied,
    /// The file (and every file it names) was as before: nothing to do.
    Unchanged,
    /// The new config was refused; the previous one keeps serving.
    Error,
}

impl EncodeLabelValue for ReloadResult {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Error => "error",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadResult,
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histogram,
    upstream_errors: Family<KindLabels, Counter>,
    jwks_fetches: Family<JwksLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    /// Shared with every state's verified-token cache, so that the counts
    /// survive reloads (a new cache comes with each config).
    pub cache: Arc<CacheStats>,
}

/// Exports the cache counters, which the core keeps as plain atomics.
#[derive(Debug)]
struct CacheCollector(Arc<CacheStats>);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "scopegate_token_cache_hits",
                "Verifications answered from the verified-token cache",
                self.0.hits(),
            ),
            (
                "scopegate_token_cache_misses",
                "Verifications that had to check a signature",
                self.0.misses(),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "scopegate_requests",
            "Requests by route template, decision and status",
            requests.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "scopegate_request_duration_seconds",
            "Time from request head to response head",
            duration.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "scopegate_upstream_errors",
            "Upstream failures by kind",
            upstream_errors.clone(),
        );
        let jwks_fetches = Family::<JwksLabels, Counter>::default();
        registry.register(
            "scopegate_jwks_fetches",
            "JWKS (and discovery) fetches by issuer and result",
            jwks_fetches.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "scopegate_config_reloads",
            "Config reloads (file changes and SIGHUP) by result",
            reloads.clone(),
        );
        // Known label values start at zero (Prometheus guidance: a series
        // that appears only on its first event breaks rate() and alerts).
        for result in [
            ReloadResult::Applied,
            ReloadResult::Unchanged,
            ReloadResult::Error,
        ] {
            drop(reloads.get_or_create(&ReloadLabels { result }));
        }
        for kind in [
            UpstreamErrorKind::Unavailable,
            UpstreamErrorKind::Timeout,
            UpstreamErrorKind::BodyTooLarge,
            UpstreamErrorKind::BodyTimeout,
        ] {
            drop(upstream_errors.get_or_create(&KindLabels { kind }));
        }
        let cache = Arc::new(CacheStats::default());
        registry.register_collector(Box::new(CacheCollector(cache.clone())));
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            jwks_fetches,
            reloads,
            cache,
        }
    }
}

fn ok_or_error(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(
        &self,
        route: Option<&Arc<str>>,
        decision: &'static str,
        status: u16,
        took: Duration,
    ) {
        let labels = RequestLabels {
            route: RouteLabel(route.cloned()),
            decision,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub fn reload(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Config reloads with this result.
    pub fn reloads(&self, result: ReloadResult) -> u64 {
        self.reloads.get_or_create(&ReloadLabels { result }).get()
    }

    /// Starts an issuer's JWKS fetch counters at zero.
    pub fn jwks_issuer(&self, issuer: &str) {
        for ok in [true, false] {
            drop(self.jwks_fetches.get_or_create(&JwksLabels {
                issuer: issuer.to_owned(),
                result: ok_or_error(ok),
            }));
        }
    }

    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        self.jwks_fetches
            .get_or_create(&JwksLabels {
                issuer: issuer.to_owned(),
                result: ok_or_error(ok),
            })
            .inc();
    }

    /// JWKS fetches for one issuer with this result.
    pub fn jwks_fetches(&self, issuer: &str, ok: bool) -> u64 {
        self.jwks_fetches
            .get_or_create(&JwksLabels {
                issuer: issuer.to_owned(),
                result: ok_or_error(ok),
            })
            .get()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
