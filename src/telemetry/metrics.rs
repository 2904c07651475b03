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
struct ConnectionLabels {
    listener: &'static str,
    worker: u64,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamResultLabels {
    upstream: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    route: String,
    would: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyResultLabels {
    policy: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    on_error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

/// Something that knows how long the current upstream token has left.
pub trait TokenProbe: Send + Sync {
    /// Seconds until the current token expires (`None`: no valid token).
    fn seconds_left(&self) -> Option<f64>;
}

/// The live token sources, by upstream, read at scrape time.
type Probes = Arc<std::sync::Mutex<Vec<(Arc<str>, std::sync::Weak<dyn TokenProbe>)>>>;

/// Exports `scopegate_upstream_token_expiry_seconds{upstream}`.
struct TokenCollector(Probes);

impl std::fmt::Debug for TokenCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCollector")
    }
}

impl Collector for TokenCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::gauge::ConstGauge;
        let live: Vec<(String, f64)> = match self.0.lock() {
            Ok(probes) => probes
                .iter()
                .filter_map(|(name, probe)| {
                    let left = probe.upgrade()?.seconds_left().unwrap_or(0.0);
                    Some((name.to_string(), left))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if live.is_empty() {
            return Ok(());
        }
        let gauge = ConstGauge::new(0.0f64);
        let mut family = encoder.encode_descriptor(
            "scopegate_upstream_token_expiry_seconds",
            "Seconds until the gateway's current token toward an upstream expires (0: none)",
            None,
            gauge.metric_type(),
        )?;
        for (upstream, left) in live {
            let labels = UpstreamLabels { upstream };
            ConstGauge::new(left).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// The same counters (a `Counter` clone shares its value), found by a
    /// fast hash: the family's own map hashes its labels with SipHash on
    /// every request.
    request_counters: std::sync::RwLock<
        std::collections::HashMap<RequestLabels, Counter, foldhash::fast::RandomState>,
    >,
    duration: Histogram,
    connections: Family<ConnectionLabels, Counter>,
    upstream_errors: Family<KindLabels, Counter>,
    jwks_fetches: Family<JwksLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    token_fetches: Family<UpstreamResultLabels, Counter>,
    token_probes: Probes,
    quota_decisions: Family<PolicyResultLabels, Counter>,
    shadow_decisions: Family<ShadowLabels, Counter>,
    /// The same counts, readable for the `/shadow` report.
    shadow_report: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    introspections: Family<JwksLabels, Counter>,
    introspection_hits: Family<IssuerLabels, Counter>,
    quota_fallbacks: Family<FallbackLabels, Counter>,
    redis_duration: Histogram,
    redis_errors: Counter,
    /// Shared with every state's verified-token cache, so that the counts
    /// survive reloads (a new cache comes with each config).
    pub cache: Arc<CacheStats>,
    /// The tracer behind `tracing:` (none without it), for the calls the
    /// gateway makes on its own (JWKS, token, introspection).
    pub trace: super::trace::Tracing,
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
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "scopegate_connections_accepted",
            "Connections accepted, by listener and worker (`workers: N` runs N event loops)",
            connections.clone(),
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
        let token_fetches = Family::<UpstreamResultLabels, Counter>::default();
        registry.register(
            "scopegate_upstream_token_fetches",
            "Client-credentials token requests by upstream and result",
            token_fetches.clone(),
        );
        let quota_decisions = Family::<PolicyResultLabels, Counter>::default();
        registry.register(
            "scopegate_rate_limit_decisions",
            "Quota decisions by policy and result (allowed, limited, unavailable)",
            quota_decisions.clone(),
        );
        let shadow_decisions = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "scopegate_shadow_decisions",
            "Requests of shadow-mode routes by what enforcement would have answered (401, 403, allow)",
            shadow_decisions.clone(),
        );
        let introspections = Family::<JwksLabels, Counter>::default();
        registry.register(
            "scopegate_introspections",
            "RFC 7662 introspection calls by issuer and result (active, inactive, unsupported, error)",
            introspections.clone(),
        );
        let introspection_hits = Family::<IssuerLabels, Counter>::default();
        registry.register(
            "scopegate_introspection_cache_hits",
            "Introspection answers served from the cache, by issuer",
            introspection_hits.clone(),
        );
        let quota_fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "scopegate_rate_limit_fallbacks",
            "Quota decisions Redis could not make, by the on_error that applied",
            quota_fallbacks.clone(),
        );
        let redis_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        registry.register(
            "scopegate_redis_duration_seconds",
            "Redis quota calls, from send to answer (or timeout)",
            redis_duration.clone(),
        );
        let redis_errors = Counter::default();
        registry.register(
            "scopegate_redis_errors",
            "Redis quota calls that failed or timed out",
            redis_errors.clone(),
        );
        let token_probes: Probes = Arc::default();
        registry.register_collector(Box::new(TokenCollector(token_probes.clone())));
        let cache = Arc::new(CacheStats::default());
        registry.register_collector(Box::new(CacheCollector(cache.clone())));
        Metrics {
            registry,
            requests,
            request_counters: std::sync::RwLock::default(),
            duration,
            connections,
            upstream_errors,
            jwks_fetches,
            reloads,
            token_fetches,
            token_probes,
            quota_decisions,
            shadow_decisions,
            shadow_report: Default::default(),
            introspections,
            introspection_hits,
            quota_fallbacks,
            redis_duration,
            redis_errors,
            cache,
            trace: super::trace::Tracing::default(),
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
        if let Ok(counters) = self.request_counters.read()
            && let Some(counter) = counters.get(&labels)
        {
            counter.inc();
        } else {
            let counter = self.requests.get_or_create(&labels).clone();
            counter.inc();
            if let Ok(mut counters) = self.request_counters.write() {
                counters.insert(labels, counter);
            }
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// The count of connections `worker` accepts on `listener`, started at
    /// zero; the accept loop holds it.
    pub fn accepted(&self, listener: &'static str, worker: usize) -> Counter {
        self.connections
            .get_or_create(&ConnectionLabels {
                listener,
                worker: worker as u64,
            })
            .clone()
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

    /// Counts a request of a shadow-mode route: `would` is the refused
    /// status (401, 403), `None` when it would have been allowed.
    pub fn shadow(&self, route: &str, would: Option<u16>) {
        let would = match would {
            None => "allow",
            Some(401) => "401",
            Some(_) => "403",
        };
        self.shadow_decisions
            .get_or_create(&ShadowLabels {
                route: route.to_owned(),
                would,
            })
            .inc();
        if let Ok(mut report) = self.shadow_report.lock() {
            *report.entry((route.to_owned(), would)).or_default() += 1;
        }
    }

    /// What shadow mode saw since start, per route: `{route: {would: n}}`.
    pub fn shadow_report(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if let Ok(report) = self.shadow_report.lock() {
            for ((route, would), n) in report.iter() {
                let entry = out
                    .entry(route.clone())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                entry[*would] = (*n).into();
            }
        }
        serde_json::Value::Object(out)
    }

    pub fn introspection(&self, issuer: &str, result: &'static str) {
        self.introspections
            .get_or_create(&JwksLabels {
                issuer: issuer.to_owned(),
                result,
            })
            .inc();
    }

    pub fn introspection_cache_hit(&self, issuer: &str) {
        self.introspection_hits
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_owned(),
            })
            .inc();
    }

    /// Starts an introspecting issuer's counters at zero.
    pub fn introspection_issuer(&self, issuer: &str) {
        for result in ["active", "inactive", "unsupported", "error"] {
            drop(self.introspections.get_or_create(&JwksLabels {
                issuer: issuer.to_owned(),
                result,
            }));
        }
        drop(self.introspection_hits.get_or_create(&IssuerLabels {
            issuer: issuer.to_owned(),
        }));
    }

    pub fn rate_limit_decision(&self, policy: &str, result: &'static str) {
        self.quota_decisions
            .get_or_create(&PolicyResultLabels {
                policy: policy.to_owned(),
                result,
            })
            .inc();
    }

    pub fn rate_limit_fallback(&self, on_error: crate::config::OnError) {
        let on_error = match on_error {
            crate::config::OnError::Local => "local",
            crate::config::OnError::Allow => "allow",
            crate::config::OnError::Deny => "deny",
        };
        self.quota_fallbacks
            .get_or_create(&FallbackLabels { on_error })
            .inc();
    }

    pub fn redis_call(&self, took: Duration, ok: bool) {
        self.redis_duration.observe(took.as_secs_f64());
        if !ok {
            self.redis_errors.inc();
        }
    }

    /// Starts a policy's decision counters at zero.
    pub fn rate_limit_policy(&self, policy: &str) {
        for result in ["allowed", "limited", "unavailable"] {
            drop(self.quota_decisions.get_or_create(&PolicyResultLabels {
                policy: policy.to_owned(),
                result,
            }));
        }
    }

    /// Counts one token request toward `upstream`'s token endpoint.
    pub fn upstream_token_fetch(&self, upstream: &str, ok: bool) {
        self.token_fetches
            .get_or_create(&UpstreamResultLabels {
                upstream: upstream.to_owned(),
                result: ok_or_error(ok),
            })
            .inc();
    }

    /// Token requests toward `upstream` with this result.
    pub fn upstream_token_fetches(&self, upstream: &str, ok: bool) -> u64 {
        self.token_fetches
            .get_or_create(&UpstreamResultLabels {
                upstream: upstream.to_owned(),
                result: ok_or_error(ok),
            })
            .get()
    }

    /// Starts `upstream`'s token series (fetches at zero, the expiry gauge
    /// read from `probe` at every scrape).
    pub fn watch_upstream_token(&self, upstream: Arc<str>, probe: std::sync::Weak<dyn TokenProbe>) {
        for ok in [true, false] {
            drop(self.token_fetches.get_or_create(&UpstreamResultLabels {
                upstream: upstream.to_string(),
                result: ok_or_error(ok),
            }));
        }
        if let Ok(mut probes) = self.token_probes.lock() {
            probes.retain(|(name, p)| p.strong_count() > 0 && *name != upstream);
            probes.push((upstream, probe));
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
