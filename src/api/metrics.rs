//! The daemon's Prometheus metrics (prometheus-client), served on `GET
//! /metrics` as OpenMetrics text.
//!
//! The daemon calls the methods of [`Metrics`] from its run sink; the API only
//! renders. Label values are job ids and step kinds, both bounded by the jobs
//! folder, so the series count stays small.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStatus {
    job: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetStatus {
    target: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Run durations: 10 ms to about 3 h (doubling).
fn run_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 21))
}

/// Step durations: 1 ms to about 9 min (doubling).
fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// A source of the blocking pool's busy threads, read at scrape time.
type PoolSource = Box<dyn Fn() -> i64 + Send + Sync>;

/// `value` as a label value of the text format: prometheus-client writes
/// label values as they are (prometheus/client_rust#151), and a job id is a
/// file name, which may hold `"`, `\\` or a newline. Unescaped, one such name
/// makes Prometheus reject the whole scrape, or injects samples. The text
/// format's three escapes: `\\` → `\\\\`, `"` → `\\"`, newline → `\\n`.
fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Every metric of the daemon, in one registry.
pub struct Metrics {
    registry: Registry,
    runs_total: Family<JobStatus, Counter>,
    run_duration: HistogramFamily<JobLabel>,
    step_duration: HistogramFamily<KindLabel>,
    runs_in_flight: Gauge,
    runs_queued: Gauge,
    pool_busy: Gauge,
    pool_source: Mutex<Option<PoolSource>>,
    invalid_jobs: Gauge,
    last_success: Family<JobLabel, Gauge<f64, AtomicU64>>,
    degraded: Family<ProblemLabel, Gauge>,
    notifications: Family<TargetStatus, Counter>,
    /// What is wrong now, by what it concerns: `/healthz` says it.
    problems: Mutex<std::collections::BTreeMap<&'static str, String>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProblemLabel {
    what: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let runs_total = Family::<JobStatus, Counter>::default();
        // prometheus-client appends `_total` to a counter's name.
        registry.register("gatherd_runs", "Runs finished, by job and final status", runs_total.clone());
        let run_duration: HistogramFamily<JobLabel> = Family::new_with_constructor(run_histogram);
        registry.register("gatherd_run_duration_seconds", "How long runs took, by job", run_duration.clone());
        let step_duration: HistogramFamily<KindLabel> = Family::new_with_constructor(step_histogram);
        registry.register("gatherd_step_duration_seconds", "How long steps took, by step kind", step_duration.clone());
        let runs_in_flight = Gauge::default();
        registry.register("gatherd_runs_in_flight", "Runs going now", runs_in_flight.clone());
        let runs_queued = Gauge::default();
        registry.register(
            "gatherd_runs_queued",
            "Runs recorded queued, waiting for a slot (max_concurrent_runs) or their semaphore",
            runs_queued.clone(),
        );
        let pool_busy = Gauge::default();
        registry.register(
            "gatherd_blocking_pool_busy_threads",
            "Threads of the blocking pool running work now",
            pool_busy.clone(),
        );
        let invalid_jobs = Gauge::default();
        registry.register("gatherd_invalid_job_files", "Job files whose last version is invalid", invalid_jobs.clone());
        let last_success = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "gatherd_last_success_timestamp_seconds",
            "When each job last finished successfully (Unix time)",
            last_success.clone(),
        );
        let degraded = Family::<ProblemLabel, Gauge>::default();
        registry.register(
            "gatherd_degraded",
            "1 while the daemon is degraded for this reason (see /healthz), else 0",
            degraded.clone(),
        );
        let notifications = Family::<TargetStatus, Counter>::default();
        registry.register(
            "gatherd_notifications",
            "Notifications whose delivery ended, by target and status (delivered, failed)",
            notifications.clone(),
        );
        Metrics {
            notifications,
            degraded,
            problems: Mutex::new(std::collections::BTreeMap::new()),
            registry,
            runs_total,
            run_duration,
            step_duration,
            runs_in_flight,
            runs_queued,
            pool_busy,
            pool_source: Mutex::new(None),
            invalid_jobs,
            last_success,
        }
    }

    /// A run of `job` started.
    pub fn run_started(&self, _job: &str) {
        self.runs_in_flight.inc();
    }

    /// A run of `job` ended with `status` (`succeeded`, `failed`, …) after
    /// `duration`. Call once per [`run_started`](Self::run_started).
    pub fn run_finished(&self, job: &str, status: &str, duration: Duration) {
        self.runs_in_flight.dec();
        self.runs_total.get_or_create(&JobStatus { job: escaped(job), status: escaped(status) }).inc();
        let label = JobLabel { job: escaped(job) };
        self.run_duration.get_or_create(&label).observe(duration.as_secs_f64());
        if status == crate::exec::Status::Succeeded.as_str() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_success.get_or_create(&label).set(now.as_secs_f64());
        }
    }

    /// A run of `job` ended with `status` without ever starting (cancelled
    /// while queued): counted in `gatherd_runs_total`, not in flight nor in
    /// the durations.
    pub fn run_not_started(&self, job: &str, status: &str) {
        self.runs_total.get_or_create(&JobStatus { job: escaped(job), status: escaped(status) }).inc();
    }

    /// How many runs are queued for a slot or their semaphore now.
    pub fn set_runs_queued(&self, n: usize) {
        self.runs_queued.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// `job` last succeeded at `at` (the history's, at start: the gauge
    /// survives restarts). A later success of this daemon's wins.
    pub fn set_last_success(&self, job: &str, at: SystemTime) {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let gauge = self.last_success.get_or_create(&JobLabel { job: escaped(job) });
        if gauge.get() < secs {
            gauge.set(secs);
        }
    }

    /// A notification to `target` ended its delivery with `status`
    /// (`delivered` or `failed`).
    pub fn notification(&self, target: &str, status: &str) {
        self.notifications.get_or_create(&TargetStatus { target: escaped(target), status: escaped(status) }).inc();
    }

    /// A step of `kind` (`exec`, `http`, …) ended after `duration`.
    pub fn step_finished(&self, kind: &str, duration: Duration) {
        self.step_duration.get_or_create(&KindLabel { kind: escaped(kind) }).observe(duration.as_secs_f64());
    }

    /// How many job files are invalid now.
    pub fn set_invalid_jobs(&self, n: usize) {
        self.invalid_jobs.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets (`Some(why)`) or clears (`None`) a problem of the daemon's,
    /// named by what it concerns (`jobs_folder`, `history`): `/healthz`
    /// answers 503 with every problem set, and `gatherd_degraded{what}` is 1
    /// while it is.
    pub fn set_problem(&self, what: &'static str, why: Option<String>) {
        let mut problems = self.problems.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let label = ProblemLabel { what: what.to_string() };
        match why {
            Some(why) => {
                problems.insert(what, why);
                self.degraded.get_or_create(&label).set(1);
            }
            None => {
                if problems.remove(what).is_some() {
                    self.degraded.get_or_create(&label).set(0);
                }
            }
        }
    }

    /// The problems set now: (what, why), by what.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let problems = self.problems.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        problems.iter().map(|(what, why)| (*what, why.clone())).collect()
    }

    /// Reads the blocking pool's busy threads from `source` at each scrape.
    pub fn read_pool_busy_from(&self, source: impl Fn() -> i64 + Send + Sync + 'static) {
        if let Ok(mut slot) = self.pool_source.lock() {
            *slot = Some(Box::new(source));
        }
    }

    /// Every metric as OpenMetrics text (which Prometheus reads), served
    /// with [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        if let Ok(slot) = self.pool_source.lock()
            && let Some(source) = slot.as_ref()
        {
            self.pool_busy.set(source());
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        text
    }
}

/// `GET /metrics`.
pub(super) async fn serve_metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_run_is_counted_by_job_and_status() {
        let metrics = Metrics::new();
        metrics.run_started("a.toml");
        metrics.run_finished("a.toml", "succeeded", Duration::from_secs(1));
        metrics.step_finished("sleep", Duration::from_millis(5));
        metrics.set_invalid_jobs(2);
        metrics.read_pool_busy_from(|| 3);
        let text = metrics.render();
        assert!(text.contains("gatherd_runs_total{job=\"a.toml\",status=\"succeeded\"} 1\n"), "{text}");
        assert!(text.contains("gatherd_runs_in_flight 0\n"), "{text}");
        assert!(text.contains("gatherd_invalid_job_files 2\n"), "{text}");
        assert!(text.contains("gatherd_blocking_pool_busy_threads 3\n"), "{text}");
        assert!(text.contains("gatherd_step_duration_seconds_count{kind=\"sleep\"} 1\n"), "{text}");
        assert!(text.contains("gatherd_last_success_timestamp_seconds{job=\"a.toml\"}"), "{text}");
    }

    /// One sample line of the text format: the metric name and its labels
    /// (values unescaped), or why the line does not parse. The grammar of
    /// Prometheus' and OpenMetrics' text formats: a label value is `"`-quoted
    /// and holds no raw `"`, `\` or newline; `\\`, `\"` and `\n` are its escapes.
    fn parse_sample(line: &str) -> Result<(String, Vec<(String, String)>), String> {
        let mut chars = line.chars().peekable();
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("no metric name: {line:?}"));
        }
        let mut labels = Vec::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                if chars.peek() == Some(&'}') {
                    chars.next();
                    break;
                }
                let mut key = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        key.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if key.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
                    return Err(format!("bad label in {line:?}"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated label value in {line:?}")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => return Err(format!("bad escape {other:?} in {line:?}")),
                        },
                        Some(c) => value.push(c),
                    }
                }
                labels.push((key, value));
                match chars.next() {
                    Some(',') => {}
                    Some('}') => break,
                    other => return Err(format!("expected `,` or `}}`, got {other:?} in {line:?}")),
                }
            }
        }
        if chars.next() != Some(' ') {
            return Err(format!("no space before the value in {line:?}"));
        }
        let value: String = chars.collect();
        let number = value.split(' ').next().unwrap_or_default();
        if number.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&number) {
            return Err(format!("bad value {number:?} in {line:?}"));
        }
        Ok((name, labels))
    }

    #[test]
    fn label_values_are_escaped_so_every_line_parses() {
        let job = "q\"uote\\back\ngatherd_injected 1\n.toml";
        let metrics = Metrics::new();
        metrics.run_started(job);
        metrics.run_finished(job, "succeeded", Duration::from_secs(1));
        metrics.step_finished("we\"ird\nkind", Duration::from_millis(5));
        let text = metrics.render();
        let mut jobs = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, labels) = parse_sample(line).unwrap_or_else(|e| panic!("{e}\nin the scrape:\n{text}"));
            assert!(name.starts_with("gatherd_") && name != "gatherd_injected", "an injected sample {line:?}:\n{text}");
            jobs.extend(labels.into_iter().filter(|(k, _)| k == "job").map(|(_, v)| v));
        }
        assert!(!jobs.is_empty() && jobs.iter().all(|j| j == job), "job labels {jobs:?}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
