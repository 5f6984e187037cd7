//! Prometheus metrics: the recorder, its histogram buckets and the metrics' descriptions. The
//! HTTP middleware that records per-route counts and latencies is `http/metrics.rs`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds: fine below a millisecond, where hearth's own time lives.
const BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// Buckets of `hearth_db_commit_writes` (writes that shared one commit).
const COMMIT_WRITES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders it.
///
/// # Errors
/// When another recorder was installed first.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("seconds".into()), BUCKETS)
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(Matcher::Full("hearth_db_commit_writes".into()), COMMIT_WRITES)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    metrics::describe_histogram!(
        "hearth_db_commit_writes",
        "Write jobs that shared one SQLite commit (group commit: higher under load)."
    );
    metrics::describe_counter!(
        "hearth_http_requests_total",
        "HTTP requests answered, by route, method and status."
    );
    metrics::describe_histogram!(
        "hearth_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from request to response headers, by route, method and status."
    );
}
