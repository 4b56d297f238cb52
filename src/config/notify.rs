//! `[notify.NAME]` in the config: where notifications go. A target is a
//! webhook (`webhook = "URL"` or `webhook = { url, method, headers, body }`,
//! with a ready-made `format`), which may sign its requests
//! (`signing_secret`), or a `command`; how long one delivery is retried is
//! the target's too. `default_notify` and `default_notify_on` are the subscription of
//! every job that names none.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::humantime_opt;
use crate::job::NotifyEvent;

/// A target's first wait before a retry (then doubled).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(5);
/// The longest wait between two attempts.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(5 * 60);
/// How long a notification is retried before it is given up.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30 * 60);
/// The limit on one attempt.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[notify.NAME]`: one notification target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// An HTTP request per notification.
    pub webhook: Option<Webhook>,
    /// Or a program run per notification (`["argv", ...]`): the notification
    /// as JSON on its stdin and as `GATHERD_*` variables; killed at `timeout`.
    pub command: Option<Vec<String>>,
    /// The body's shape for a well-known receiver (default `json`).
    #[serde(default)]
    pub format: WebhookFormat,
    /// With it, each request carries `X-Gatherd-Signature: sha256=HEX`, the
    /// HMAC-SHA256 of the body with this key.
    pub signing_secret: Option<String>,
    /// The limit on one attempt (default 10 s).
    #[serde(default, deserialize_with = "humantime_opt")]
    pub timeout: Option<Duration>,
    /// The wait before the first retry, doubled after each (up to 5 min);
    /// default 5 s.
    #[serde(default, deserialize_with = "humantime_opt")]
    pub retry_delay: Option<Duration>,
    /// How long a notification is retried before it is marked failed
    /// (default 30 min).
    #[serde(default, deserialize_with = "humantime_opt")]
    pub retry_for: Option<Duration>,
}

impl NotifyTarget {
    /// The limit on one attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT)
    }

    /// The first wait before a retry.
    pub fn retry_delay(&self) -> Duration {
        self.retry_delay.unwrap_or(DEFAULT_RETRY_DELAY)
    }

    /// How long retries go on.
    pub fn retry_for(&self) -> Duration {
        self.retry_for.unwrap_or(DEFAULT_RETRY_FOR)
    }
}

/// `webhook = "URL"` or `webhook = { url, method, headers, body }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Webhook {
    /// A POST of the format's body to this URL.
    Url(String),
    /// The request spelled out.
    Request(WebhookRequest),
}

/// `webhook = { url, method, headers, body }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where to send it (http or https).
    pub url: String,
    /// The method (default POST).
    pub method: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A minijinja template of the body (instead of the format's), with the
    /// notification's fields: `event`, `job`, `run_id`, `status`, `error`,
    /// `failures`, `run_url`, `at`, `message`, `target`.
    pub body: Option<String>,
}

impl Webhook {
    /// The URL.
    pub fn url(&self) -> &str {
        match self {
            Webhook::Url(url) => url,
            Webhook::Request(r) => &r.url,
        }
    }
}

/// The ready-made bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The notification as a JSON object (see README "Alerting").
    #[default]
    Json,
    /// Slack and Mattermost incoming webhooks: `{"text": MESSAGE}`.
    Slack,
    /// ntfy: the message as the plain-text body, a `Title` and `Tags` header.
    Ntfy,
    /// healthchecks.io (and compatible) ping URLs: a success or recovery
    /// pings the URL, a failure, stale, missed, interrupted or invalid pings
    /// `URL/fail`; the message is the body.
    Healthchecks,
}

/// Checks the `[notify.*]` tables and the defaults; the message names the key.
pub(super) fn check(
    targets: &BTreeMap<String, NotifyTarget>,
    default_notify: &[String],
    default_notify_on: Option<&[NotifyEvent]>,
) -> Result<(), String> {
    for (name, target) in targets {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("`notify.{name}`: a target's name is letters, digits, `_` or `-`"));
        }
        if target.timeout.is_some_and(|d| d.is_zero()) || target.retry_delay.is_some_and(|d| d.is_zero()) {
            return Err(format!("`notify.{name}`: `timeout` and `retry_delay` must be longer than zero"));
        }
        let webhook = match (&target.webhook, &target.command) {
            (Some(_), Some(_)) => return Err(format!("`notify.{name}`: set `webhook` or `command`, not both")),
            (None, None) => {
                return Err(format!("`notify.{name}` needs `webhook = \"URL\"` or `command = [\"program\", ...]`"));
            }
            (None, Some(argv)) => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(format!("`notify.{name}.command` must name a program first"));
                }
                if target.signing_secret.is_some() || target.format != WebhookFormat::Json {
                    return Err(format!("`notify.{name}`: `format` and `signing_secret` are for a `webhook`"));
                }
                continue;
            }
            (Some(webhook), None) => webhook,
        };
        let url = webhook.url();
        match reqwest::Url::parse(url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => return Err(format!("`notify.{name}.webhook`: {url:?} is {}, not an http(s) URL", u.scheme())),
            Err(e) => return Err(format!("`notify.{name}.webhook`: {url:?} is not a URL ({e})")),
        }
        if let Webhook::Request(r) = webhook {
            if let Some(method) = &r.method
                && reqwest::Method::from_bytes(method.as_bytes()).is_err()
            {
                return Err(format!("`notify.{name}.webhook.method`: {method:?} is not an HTTP method"));
            }
            for (k, v) in &r.headers {
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(v).is_err()
                {
                    return Err(format!("`notify.{name}.webhook.headers`: {k:?} = {v:?} is not a valid header"));
                }
            }
            if let Some(body) = &r.body {
                let mut env = minijinja::Environment::new();
                env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
                if let Err(e) = env.template_from_str(body) {
                    return Err(format!("`notify.{name}.webhook.body` is not a valid template: {e}"));
                }
            }
        }
        if target.signing_secret.as_deref() == Some("") {
            return Err(format!("`notify.{name}.signing_secret` must not be empty"));
        }
    }
    if let Some(unknown) = default_notify.iter().find(|n| !targets.contains_key(*n)) {
        return Err(format!("`default_notify` names {unknown:?}, which has no `[notify.{unknown}]` table"));
    }
    if default_notify_on.is_some_and(|on| on.contains(&NotifyEvent::Test)) {
        return Err("`default_notify_on`: `test` is not an event to subscribe to".into());
    }
    Ok(())
}
