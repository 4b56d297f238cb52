//! Secrets and their masking: the values of the config's `[secrets]`, which
//! templates (`{{ secrets.NAME }}`) and scripts (`secret("NAME")`) read, and
//! the [`Masker`] that replaces each of them by [`MASK`] in everything a run
//! reports.
//!
//! Architecture Invariant: a secret's value never leaves the executor in a
//! [`RunEvent`]. The run tree masks every event before it is sent (one
//! place, `Runner::emit`, and the lines' one `send`), so every projection of
//! the stream — the store, the log in every format, the API and its SSE,
//! `gatherd run`'s report and `--json`, notification payloads — is masked
//! without knowing it. The value still flows unmasked into the templates,
//! environments and scripts of the steps that use it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::RunEvent;

/// What a secret's value is replaced by wherever a run reports it.
pub const MASK: &str = "********";

/// The shortest value a secret may have. Shorter values are refused when
/// the config is read: masking every `ab` in every log line would garble
/// the logs and tell anyone reading them what the secret is.
pub const MIN_SECRET_BYTES: usize = 4;

/// The values of the config's `[secrets]`, by name. Its `Debug` shows the
/// names only.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Arc<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl PartialEq for Secrets {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl Secrets {
    /// Secrets from `(name, value)` pairs (values checked by the config).
    pub fn new(values: impl IntoIterator<Item = (String, String)>) -> Secrets {
        Secrets { values: Arc::new(values.into_iter().collect()) }
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether none is defined.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The names defined, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// `{NAME: value}`, as templates read it (`secrets.NAME`).
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        self.values.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
    }

    /// The masker of these values.
    pub fn masker(&self) -> Masker {
        Masker::new(self.values.values().cloned())
    }
}

/// Replaces every secret's value by [`MASK`]. Cheap to clone; one with no
/// values costs a length check per string.
///
/// A value of several lines is masked whole and line by line (each line of
/// at least [`MIN_SECRET_BYTES`]), since a step's output is recorded a line
/// at a time.
#[derive(Clone, Default)]
pub struct Masker {
    /// Longest first, so a value that holds another is masked whole.
    values: Arc<[String]>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} values)", self.values.len())
    }
}

impl Masker {
    /// A masker of `values` (each at least [`MIN_SECRET_BYTES`] long; shorter
    /// ones, which the config refuses, are left out).
    pub fn new(values: impl IntoIterator<Item = String>) -> Masker {
        let mut all: Vec<String> = Vec::new();
        for value in values {
            let lines: Vec<String> = value
                .lines()
                .map(|l| l.trim_end_matches('\r'))
                .filter(|l| l.len() >= MIN_SECRET_BYTES && l.len() < value.len())
                .map(str::to_owned)
                .collect();
            all.extend(lines);
            if value.len() >= MIN_SECRET_BYTES {
                all.push(value);
            }
        }
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Masker { values: all.into() }
    }

    /// Whether it masks nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every value replaced by [`MASK`]; borrowed when none is in it.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for value in self.values.iter() {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), MASK));
            }
        }
        out
    }

    /// Masks `s` in place.
    pub fn mask_string(&self, s: &mut String) {
        if self.values.is_empty() {
            return;
        }
        if let Cow::Owned(masked) = self.mask(s) {
            *s = masked;
        }
    }

    /// Masks every string of `v` (object keys too) in place.
    pub fn mask_value(&self, v: &mut Value) {
        if self.values.is_empty() {
            return;
        }
        match v {
            Value::String(s) => self.mask_string(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.mask_value(i)),
            Value::Object(map) => {
                let masked_key = |k: &String| matches!(self.mask(k), Cow::Owned(_));
                if map.keys().any(masked_key) {
                    let old = std::mem::take(map);
                    for (k, mut item) in old {
                        self.mask_value(&mut item);
                        map.insert(self.mask(&k).into_owned(), item);
                    }
                } else {
                    map.values_mut().for_each(|i| self.mask_value(i));
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Masks every text an event carries: errors, outputs, results, lines.
    pub fn mask_event(&self, event: &mut RunEvent) {
        if self.values.is_empty() {
            return;
        }
        match event {
            RunEvent::RunStarted { .. } | RunEvent::NodeStarted { .. } => {}
            RunEvent::AttemptFailed { error, .. } => self.mask_string(error),
            RunEvent::NodeFinished { output, error, .. } => {
                if let Some(output) = output {
                    self.mask_value(output);
                }
                if let Some(error) = error {
                    self.mask_string(error);
                }
            }
            RunEvent::Log { text, .. } => self.mask_string(text),
            RunEvent::RunFinished { result, error, .. } => {
                if let Some(result) = result {
                    self.mask_value(result);
                }
                if let Some(error) = error {
                    self.mask_string(error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_is_masked_and_the_longest_value_first() {
        let m = Masker::new(["hunter22".to_string(), "hunter22-extra".to_string()]);
        assert_eq!(m.mask("a hunter22 b hunter22-extra c"), "a ******** b ******** c");
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_value_of_several_lines_is_masked_line_by_line_too() {
        let m = Masker::new(["-----BEGIN KEY-----\nabcdefgh\nxy\n-----END KEY-----".to_string()]);
        assert_eq!(m.mask("abcdefgh"), MASK);
        assert_eq!(m.mask("xy"), "xy", "a line shorter than the minimum is not masked alone");
        assert_eq!(m.mask("k: -----BEGIN KEY-----\nabcdefgh\nxy\n-----END KEY-----!"), "k: ********!");
    }

    #[test]
    fn values_events_and_keys_are_masked() {
        let m = Masker::new(["s3cr3t".to_string()]);
        let mut v = serde_json::json!({"a": ["x s3cr3t"], "s3cr3t": 1, "n": 2});
        m.mask_value(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["x ********"], "********": 1, "n": 2}));
        let mut e = RunEvent::AttemptFailed {
            path: "main/s".into(),
            attempt: 1,
            error: "bad s3cr3t".into(),
            retry_in: std::time::Duration::ZERO,
            at: std::time::Duration::ZERO,
        };
        m.mask_event(&mut e);
        assert!(matches!(e, RunEvent::AttemptFailed { error, .. } if error == "bad ********"));
    }

    /// A run whose one shell step runs `command`, with secret `api` = `value`.
    async fn run_shell(command: &str, value: &str) -> (crate::exec::RunOutcome, crate::exec::RunReport) {
        use crate::job::{
            Group, GroupMode, Job, Node, OnError, ProcessSpec, Retry, ShellStep, Step, StepKind, Template,
        };
        let shell = ShellStep { command: Template::parse(command).expect("template"), process: ProcessSpec::default() };
        let step = Step {
            name: "s".into(),
            kind: StepKind::Shell(Box::new(shell)),
            blocking: false,
            timeout: None,
            retry: Retry::default(),
        };
        let root = Group {
            name: "main".into(),
            mode: GroupMode::Sequence,
            children: vec![Node::Step(step)],
            limit: None,
            on_error: OnError::Continue,
            timeout: None,
            each: None,
            finally: None,
        };
        let job = Job::for_test("masked", std::path::Path::new("/"), Node::Group(root));
        let mut ctx = crate::exec::RunContext::new(crate::exec::BlockingPool::new(2));
        let secrets = Secrets::new([("api".to_string(), value.to_string())]);
        ctx.environment = Arc::new(crate::exec::Environment::from_vars(Vec::new(), None, &[], secrets));
        crate::exec::testing::run_with(job, ctx).await
    }

    /// Lines are assembled across reads before they are masked: a value the
    /// process writes in two pieces, 200 ms apart, is still masked whole.
    #[tokio::test]
    async fn a_value_written_across_two_reads_is_masked_in_the_line() {
        let (_, report) = run_shell("printf 'key=tok-4f9c'; sleep 0.2; printf '2e81d7\\n'", "tok-4f9c2e81d7").await;
        let texts: Vec<&str> = report.logs.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["key=********"]);
        let out = &crate::exec::testing::line(&report, "main/s").output;
        assert_eq!(out.as_str(), Some("key=********"));
    }

    /// A key of several lines printed as it is: each of its lines is masked.
    #[tokio::test]
    async fn a_value_of_several_lines_printed_line_by_line_is_masked_line_by_line() {
        let (outcome, report) = run_shell(
            "printf 'BEGIN-KEY-LINE\\nsecond-line-of-it\\n'; echo 'bad: {{ secrets.api }}' >&2; exit 1",
            "BEGIN-KEY-LINE\nsecond-line-of-it",
        )
        .await;
        let texts: Vec<&str> = report.logs.iter().map(|l| l.text.as_str()).collect();
        assert!(!texts.iter().any(|t| t.contains("KEY-LINE") || t.contains("of-it")), "{texts:?}");
        let error = outcome.error.unwrap_or_default();
        assert!(!error.contains("KEY-LINE") && error.contains("********"), "{error}");
    }

    #[test]
    fn secrets_show_their_names_only_when_debugged() {
        let s = Secrets::new([("api".to_string(), "s3cr3t-value".to_string())]);
        let shown = format!("{s:?} {:?}", s.masker());
        assert!(!shown.contains("s3cr3t") && shown.contains("api"), "{shown}");
    }
}
