//! The metrics of DESIGN.md, counted at the source, in a registry per BFF instance
//! (so several instances in one process, as in tests, keep their own counts).
//!
//! ```
//! use bff_proxy::metrics::Metrics;
//!
//! let m = Metrics::new();
//! m.refresh("ok");
//! assert!(m.render().contains(r#"bff_refresh_total{result="ok"} 1"#));
//! ```

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The BFF's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    upstream_duration: HistogramVec,
    refresh: IntCounterVec,
    refresh_duration: HistogramVec,
    sessions_ended: IntCounterVec,
    reuse_detected: IntCounter,
    idp_requests: IntCounterVec,
    build_info: IntGaugeVec,
    store_errors: IntCounterVec,
    config_reloads: IntCounterVec,
    forward_auth: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// The definitions below are constants: the prometheus crate refuses only invalid
// names or duplicate registrations, neither of which can happen in a fresh registry.
// That is the one place `expect` is allowed here.
#[allow(clippy::expect_used)]
fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("constant counter definition");
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]);
    #[allow(clippy::expect_used)]
    let h = HistogramVec::new(opts, labels).expect("constant histogram definition");
    let _ = registry.register(Box::new(h.clone()));
    h
}

impl Metrics {
    /// A fresh registry with every metric defined.
    #[must_use]
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "bff_requests_total",
            "Requests by route and outcome.",
            &["route", "outcome"],
        );
        let upstream_duration = histogram_vec(
            &registry,
            "bff_upstream_duration_seconds",
            "Time to the upstream's response head, by route.",
            &["route"],
        );
        let refresh = counter_vec(
            &registry,
            "bff_refresh_total",
            "Refresh attempts by result.",
            &["result"],
        );
        let refresh_duration = histogram_vec(
            &registry,
            "bff_refresh_duration_seconds",
            "Duration of token refreshes at the IdP, retries included.",
            &[],
        );
        let sessions_ended = counter_vec(
            &registry,
            "bff_sessions_ended_total",
            "Sessions ended, by reason.",
            &["reason"],
        );
        #[allow(clippy::expect_used)]
        let reuse_detected = IntCounter::new(
            "bff_reuse_detected_total",
            "Rotated refresh tokens presented after the grace window.",
        )
        .expect("constant counter definition");
        let _ = registry.register(Box::new(reuse_detected.clone()));
        let idp_requests = counter_vec(
            &registry,
            "bff_idp_requests_total",
            "Requests to the IdP by endpoint and status.",
            &["endpoint", "status"],
        );
        #[allow(clippy::expect_used)]
        let build_info = IntGaugeVec::new(
            Opts::new(
                "bff_build_info",
                "1 for the running build: its version and the engine serving (pingora, hyper, tower).",
            ),
            &["version", "engine"],
        )
        .expect("constant gauge definition");
        let _ = registry.register(Box::new(build_info.clone()));
        let store_errors = counter_vec(
            &registry,
            "bff_store_errors_total",
            "Shared-store operations that failed (unreachable, timed out), by operation.",
            &["op"],
        );
        // Every operation at 0 from the start: `rate()` and alerts see a series
        // before the first failure.
        for op in [
            "lock", "renew", "unlock", "put", "get", "delete", "ping", "get_many",
        ] {
            store_errors.with_label_values(&[op]);
        }
        let config_reloads = counter_vec(
            &registry,
            "bff_config_reloads_total",
            "Config reloads on SIGHUP, by result (ok, error: the old config kept).",
            &["result"],
        );
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        let forward_auth = counter_vec(
            &registry,
            "bff_forward_auth_total",
            "Forward-auth answers to a gateway, by outcome (ok, or the refusal's error code).",
            &["outcome"],
        );
        forward_auth.with_label_values(&["ok"]);
        // The standard process_* metrics (CPU, memory, open descriptors, start time).
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Self {
            registry,
            requests,
            upstream_duration,
            refresh,
            refresh_duration,
            sessions_ended,
            reuse_detected,
            idp_requests,
            build_info,
            store_errors,
            config_reloads,
            forward_auth,
        }
    }

    /// Counts a forward-auth answer by outcome.
    pub fn forward_auth(&self, outcome: &str) {
        self.forward_auth.with_label_values(&[outcome]).inc();
    }

    /// Counts a config reload by result (`ok` or `error`).
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Records which engine serves this instance (`bff_build_info`).
    pub fn serving_with(&self, engine: &str) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), engine])
            .set(1);
    }

    /// Counts a failed shared-store operation.
    pub fn store_error(&self, op: &str) {
        self.store_errors.with_label_values(&[op]).inc();
    }

    /// Counts a request's outcome on a route.
    pub fn request(&self, route: &str, outcome: &str) {
        self.requests.with_label_values(&[route, outcome]).inc();
    }

    /// The counter of one route and outcome, resolved once (for the hot path).
    #[must_use]
    pub fn request_counter(&self, route: &str, outcome: &str) -> IntCounter {
        self.requests.with_label_values(&[route, outcome])
    }

    /// A route's `bff_upstream_duration_seconds`, to resolve once per route.
    #[must_use]
    pub fn upstream_histogram(&self, route: &str) -> prometheus::Histogram {
        self.upstream_duration.with_label_values(&[route])
    }

    /// Counts a refresh result (`ok`, `coalesced`, `grace_hit`, `invalid_grant`,
    /// `transient_error`, `invalid_client`).
    pub fn refresh(&self, result: &str) {
        self.refresh.with_label_values(&[result]).inc();
    }

    /// Records a refresh's duration at the IdP.
    pub fn refresh_duration(&self, seconds: f64) {
        self.refresh_duration
            .with_label_values::<&str>(&[])
            .observe(seconds);
    }

    /// Counts an ended session by reason.
    pub fn session_ended(&self, reason: &str) {
        self.sessions_ended.with_label_values(&[reason]).inc();
    }

    /// Counts a detected refresh-token reuse.
    pub fn reuse_detected(&self) {
        self.reuse_detected.inc();
    }

    /// Counts a request to the IdP.
    pub fn idp_request(&self, endpoint: &str, status: &str) {
        self.idp_requests
            .with_label_values(&[endpoint, status])
            .inc();
    }

    /// The current value of a refresh counter (for tests and the load scripts).
    #[must_use]
    pub fn refresh_count(&self, result: &str) -> u64 {
        self.refresh.with_label_values(&[result]).get()
    }

    /// The current value of a request counter.
    #[must_use]
    pub fn request_count(&self, route: &str, outcome: &str) -> u64 {
        self.requests.with_label_values(&[route, outcome]).get()
    }

    /// The number of detected reuses.
    #[must_use]
    pub fn reuse_count(&self) -> u64 {
        self.reuse_detected.get()
    }

    /// The current value of an ended-sessions counter.
    #[must_use]
    pub fn sessions_ended_count(&self, reason: &str) -> u64 {
        self.sessions_ended.with_label_values(&[reason]).get()
    }

    /// The registry holding every metric of this BFF instance.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
