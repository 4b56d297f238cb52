//! One notification's content ([`Notice`]) and how a webhook target sends it:
//! the body for its format (or its own template), the signature, the request.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{NotifyTarget, Webhook, WebhookFormat};
use crate::job::NotifyEvent;
use crate::store::RunId;

/// What a notification says: the JSON format's body, and the context of a
/// `body` template.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `failure`, `recovery`, ...
    pub event: NotifyEvent,
    /// The job (its path in the jobs folder).
    pub job: String,
    /// The run it is about, if any.
    pub run_id: Option<RunId>,
    /// The run's status (`failed`, ...), if it is about a run.
    pub status: Option<String>,
    /// Why the run failed, or what is wrong.
    pub error: Option<String>,
    /// Consecutive failures so far (for `failure`).
    pub failures: u32,
    /// Where to see the run: the API's `/runs/{id}` (with its TCP address
    /// when it listens on one).
    pub run_url: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// One line for people.
    pub message: String,
    /// The config's target it goes to (set per target).
    pub target: String,
}

impl Notice {
    /// The one line for people, from the other fields.
    pub fn describe(event: NotifyEvent, job: &str, failures: u32, error: Option<&str>) -> String {
        let why = error.map(|e| format!(": {}", first_line(e))).unwrap_or_default();
        match event {
            NotifyEvent::Failure if failures > 1 => format!("{job} failed ({failures} in a row){why}"),
            NotifyEvent::Failure => format!("{job} failed{why}"),
            NotifyEvent::Recovery => format!("{job} recovered: it succeeded again"),
            NotifyEvent::Success => format!("{job} succeeded"),
            NotifyEvent::Missed => format!("{job} missed fires while the daemon was down{why}"),
            NotifyEvent::Interrupted => format!("{job}'s run was interrupted{why}"),
            NotifyEvent::Stale => format!("{job} has not succeeded in time{why}"),
            NotifyEvent::Invalid => format!("{job} is invalid{why}"),
            NotifyEvent::Test => "a test notification from gatherd: this target works".to_string(),
        }
    }

    /// Whether this event means something is wrong (healthchecks' `/fail`).
    fn is_bad(&self) -> bool {
        !matches!(self.event, NotifyEvent::Recovery | NotifyEvent::Success | NotifyEvent::Test)
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// A request ready to send.
#[derive(Debug)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Builds `target`'s request for `notice`; the error says what in the
/// config is wrong (a template that fails at render time).
pub fn request(target: &NotifyTarget, notice: &Notice) -> Result<Request, String> {
    let Some(webhook) = &target.webhook else { return Err("the target has no webhook".into()) };
    let mut url = webhook.url().to_string();
    let mut headers = Vec::new();
    let body: Vec<u8> = match target.format {
        WebhookFormat::Json => {
            headers.push(("content-type".into(), "application/json".into()));
            serde_json::to_vec(notice).map_err(|e| e.to_string())?
        }
        WebhookFormat::Slack => {
            headers.push(("content-type".into(), "application/json".into()));
            let link = notice.run_url.as_deref().map(|u| format!(" ({u})")).unwrap_or_default();
            serde_json::to_vec(&serde_json::json!({ "text": format!("{}{link}", notice.message) }))
                .map_err(|e| e.to_string())?
        }
        WebhookFormat::Ntfy => {
            headers.push(("title".into(), format!("gatherd: {} {}", notice.job, notice.event)));
            let tag = if notice.is_bad() { "warning" } else { "white_check_mark" };
            headers.push(("tags".into(), tag.into()));
            notice.message.clone().into_bytes()
        }
        WebhookFormat::Healthchecks => {
            if notice.is_bad() {
                url = format!("{}/fail", url.trim_end_matches('/'));
            }
            notice.message.clone().into_bytes()
        }
    };
    let mut method = reqwest::Method::POST;
    let mut body = body;
    if let Webhook::Request(r) = webhook {
        if let Some(m) = &r.method {
            method = reqwest::Method::from_bytes(m.as_bytes()).map_err(|e| format!("method {m:?}: {e}"))?;
        }
        if let Some(template) = &r.body {
            body = render(template, notice)?.into_bytes();
        }
        headers.extend(r.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(secret) = &target.signing_secret {
        headers.push(("x-gatherd-signature".into(), super::sign::signature(secret, &body)));
    }
    Ok(Request { method, url, headers, body })
}

/// Renders a `body` template with the notice as its context.
fn render(template: &str, notice: &Notice) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(crate::job::RENDER_FUEL));
    env.template_from_str(template)
        .and_then(|t| t.render(minijinja::Value::from_serialize(notice)))
        .map_err(|e| format!("rendering the webhook's `body`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: NotifyEvent) -> Notice {
        Notice {
            event,
            job: "backup.toml".into(),
            run_id: Some(7),
            status: Some("failed".into()),
            error: Some("exit status 1".into()),
            failures: 1,
            run_url: Some("/runs/7".into()),
            at: Utc::now(),
            message: Notice::describe(event, "backup.toml", 1, Some("exit status 1")),
            target: "ops".into(),
        }
    }

    fn target(toml_text: &str) -> NotifyTarget {
        toml::from_str(toml_text).expect("a target")
    }

    #[test]
    fn formats_shape_the_body_and_healthchecks_pings_fail_on_a_failure() {
        let slack = request(&target("webhook = \"http://x/hook\"\nformat = \"slack\""), &notice(NotifyEvent::Failure));
        let slack = slack.expect("built");
        let body: serde_json::Value = serde_json::from_slice(&slack.body).expect("json");
        assert_eq!(body["text"], "backup.toml failed: exit status 1 (/runs/7)");
        let hc = target("webhook = \"https://hc-ping.com/abc\"\nformat = \"healthchecks\"");
        assert_eq!(request(&hc, &notice(NotifyEvent::Failure)).expect("built").url, "https://hc-ping.com/abc/fail");
        assert_eq!(request(&hc, &notice(NotifyEvent::Recovery)).expect("built").url, "https://hc-ping.com/abc");
        let ntfy = request(&target("webhook = \"http://x/t\"\nformat = \"ntfy\""), &notice(NotifyEvent::Failure));
        assert_eq!(ntfy.expect("built").body, b"backup.toml failed: exit status 1");
    }

    #[test]
    fn a_body_template_sees_the_notice_and_a_signing_secret_signs_the_body() {
        let t = target(
            "signing_secret = \"k\"\n[webhook]\nurl = \"http://x/\"\nmethod = \"PUT\"\nbody = \"{{ job }} {{ event }} {{ run_id }}\"\n",
        );
        let r = request(&t, &notice(NotifyEvent::Failure)).expect("built");
        assert_eq!(r.method, reqwest::Method::PUT);
        assert_eq!(r.body, b"backup.toml failure 7");
        let sig = r.headers.iter().find(|(k, _)| k == "x-gatherd-signature").map(|(_, v)| v.clone());
        assert_eq!(sig, Some(super::super::sign::signature("k", b"backup.toml failure 7")));
    }
}
