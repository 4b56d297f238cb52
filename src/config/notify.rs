//! `[notify.NAME]` in the config: where notifications go. A target is a
//! webhook (`webhook = "URL"` or `webhook = { url, method, headers, body }`,
//! with a ready-made `format`), which may sign its requests
//! (`signing_secret`), a `command`, or an `email` sent through an SMTP
//! relay; how long one delivery is retried is the target's too.
//! `default_notify` and `default_notify_on` are the subscription of every
//! job that names none.

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
    /// Or a mail per notification, through an SMTP relay.
    pub email: Option<Email>,
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

/// `email = { host, port, tls, from, to, username, password_secret }`: a
/// plain-text mail per notification, handed to an SMTP relay (cron's
/// `MAILTO` for gatherd).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// The relay's host name (or IP address), without port or scheme.
    pub host: String,
    /// The relay's port; default from `tls`: 587 (`starttls`), 465 (`tls`),
    /// 25 (`none`).
    pub port: Option<u16>,
    /// How the connection is secured (default `starttls`).
    #[serde(default)]
    pub tls: EmailTls,
    /// The sender: `gatherd@example.org` or `gatherd <gatherd@example.org>`.
    pub from: String,
    /// The recipients (at least one), each as `from` is written.
    pub to: Vec<String>,
    /// The user to log in as (with `password_secret`); none: no login.
    pub username: Option<String>,
    /// The name of the `[secrets]` entry holding the password — never the
    /// password itself, so it stays out of the config file and is masked.
    pub password_secret: Option<String>,
}

/// How an `email` target's connection to its relay is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain TCP upgraded with STARTTLS, which the relay must offer (no
    /// fallback to plain text); the submission port 587.
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", SMTPS); port 465.
    Tls,
    /// No encryption: for a relay on this machine (port 25). A password is
    /// sent this way only to a loopback address.
    None,
}

impl Email {
    /// The port: the one set, else the usual one of the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            EmailTls::Starttls => 587,
            EmailTls::Tls => 465,
            EmailTls::None => 25,
        })
    }
}

/// Whether `host` names this machine (a password may cross it unencrypted).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks an `email` table; the message names the key.
fn check_email(name: &str, email: &Email, secrets: &BTreeMap<String, super::SecretSource>) -> Result<(), String> {
    let key = format!("notify.{name}.email");
    if email.host.is_empty()
        || email.host.contains(['/', ' '])
        || email.host.parse::<std::net::SocketAddr>().is_ok()
        || (email.host.contains(':') && email.host.parse::<std::net::IpAddr>().is_err())
    {
        return Err(format!(
            "`{key}.host`: {:?} is not a host name; write the name or address alone and the port as `port`",
            email.host
        ));
    }
    if email.port == Some(0) {
        return Err(format!("`{key}.port` must be a port number from 1 to 65535"));
    }
    for (field, address) in std::iter::once(("from", &email.from)).chain(email.to.iter().map(|a| ("to", a))) {
        if let Err(e) = address.parse::<lettre::message::Mailbox>() {
            return Err(format!(
                "`{key}.{field}`: {address:?} is not a mail address ({e}); write `name@example.org` or `Name <name@example.org>`"
            ));
        }
    }
    if email.to.is_empty() {
        return Err(format!("`{key}.to` needs at least one address, e.g. to = [\"ops@example.org\"]"));
    }
    match (&email.username, &email.password_secret) {
        (Some(_), None) | (None, Some(_)) => {
            return Err(format!("`{key}`: set `username` and `password_secret` together (or neither, for no login)"));
        }
        (Some(user), Some(_)) if user.is_empty() => return Err(format!("`{key}.username` must not be empty")),
        _ => {}
    }
    if let Some(secret) = &email.password_secret {
        if !secrets.contains_key(secret) {
            let known: Vec<&str> = secrets.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(format!(
                "`{key}.password_secret` names {secret:?}, which is not in `[secrets]` (secrets: {known}); \
                 the password is a secret, e.g. [secrets] {secret} = {{ file = \"/etc/gatherd/{secret}\" }}"
            ));
        }
        if email.tls == EmailTls::None && !is_loopback(&email.host) {
            return Err(format!(
                "`{key}`: `tls = \"none\"` would send the password to {:?} unencrypted; use `starttls` or `tls` \
                 (a relay on this machine, `localhost` or a loopback address, may go without)",
                email.host
            ));
        }
    }
    Ok(())
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
    secrets: &BTreeMap<String, super::SecretSource>,
) -> Result<(), String> {
    for (name, target) in targets {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("`notify.{name}`: a target's name is letters, digits, `_` or `-`"));
        }
        if target.timeout.is_some_and(|d| d.is_zero()) || target.retry_delay.is_some_and(|d| d.is_zero()) {
            return Err(format!("`notify.{name}`: `timeout` and `retry_delay` must be longer than zero"));
        }
        let webhook = match (&target.webhook, &target.command, &target.email) {
            (None, None, None) => {
                return Err(format!(
                    "`notify.{name}` needs `webhook = \"URL\"`, `command = [\"program\", ...]` or \
                     `email = {{ host = \"...\", from = \"...\", to = [\"...\"] }}`"
                ));
            }
            (Some(webhook), None, None) => webhook,
            (None, Some(_), None) | (None, None, Some(_)) => {
                if let Some(argv) = &target.command
                    && argv.first().is_none_or(|p| p.is_empty())
                {
                    return Err(format!("`notify.{name}.command` must name a program first"));
                }
                if let Some(email) = &target.email {
                    check_email(name, email, secrets)?;
                }
                if target.signing_secret.is_some() || target.format != WebhookFormat::Json {
                    return Err(format!("`notify.{name}`: `format` and `signing_secret` are for a `webhook`"));
                }
                continue;
            }
            _ => return Err(format!("`notify.{name}`: set one of `webhook`, `command` or `email`, not several")),
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

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(std::path::Path::new("/etc/gatherd/config.toml"), text).map_err(|e| e.to_string())
    }

    const SECRET: &str = "[secrets]\nsmtp = { env = \"SMTP_PASSWORD\" }\n";

    #[test]
    fn an_email_target_takes_its_port_from_its_tls_mode_and_starttls_by_default() {
        let config = parse(
            "[notify.mail]\nemail = { host = \"smtp.example.org\", from = \"gatherd <gatherd@example.org>\", to = [\"ops@example.org\"] }\n",
        )
        .expect("valid");
        let email = config.notify["mail"].email.as_ref().expect("an email target");
        assert_eq!((email.tls, email.port()), (EmailTls::Starttls, 587));
        let port = |tls: &str| {
            let text = format!(
                "[notify.mail]\nemail = {{ host = \"h\", tls = \"{tls}\", from = \"a@b.c\", to = [\"d@e.f\"] }}\n"
            );
            parse(&text).expect("valid").notify["mail"].email.as_ref().expect("email").port()
        };
        assert_eq!((port("tls"), port("none"), port("starttls")), (465, 25, 587));
        let text = format!(
            "{SECRET}[notify.mail]\nemail = {{ host = \"h\", port = 2525, from = \"a@b.c\", to = [\"d@e.f\"], username = \"u\", password_secret = \"smtp\" }}\n"
        );
        assert_eq!(parse(&text).expect("valid").notify["mail"].email.as_ref().expect("email").port(), 2525);
    }

    #[test]
    fn a_wrong_email_target_is_refused_with_the_key_and_what_to_write() {
        let mail = |fields: &str| format!("{SECRET}[notify.mail]\nemail = {{ {fields} }}\n");
        let ok = "from = \"a@b.c\", to = [\"d@e.f\"]";
        let cases = [
            (
                mail(&format!("host = \"smtp.example.org:587\", {ok}")),
                "`notify.mail.email.host`: \"smtp.example.org:587\" is not a host name",
            ),
            (mail(&format!("host = \"smtp://x\", {ok}")), "the port as `port`"),
            (mail(&format!("host = \"\", {ok}")), "is not a host name"),
            (mail(&format!("host = \"h\", port = 0, {ok}")), "`notify.mail.email.port` must be a port number"),
            (
                mail("host = \"h\", from = \"gatherd\", to = [\"d@e.f\"]"),
                "`notify.mail.email.from`: \"gatherd\" is not a mail address",
            ),
            (
                mail("host = \"h\", from = \"a@b.c\", to = [\"ops@x\", \"not an address\"]"),
                "`notify.mail.email.to`: \"not an address\"",
            ),
            (mail("host = \"h\", from = \"a@b.c\", to = []"), "`notify.mail.email.to` needs at least one address"),
            (mail(&format!("host = \"h\", {ok}, username = \"u\"")), "set `username` and `password_secret` together"),
            (
                mail(&format!("host = \"h\", {ok}, password_secret = \"smtp\"")),
                "set `username` and `password_secret` together",
            ),
            (
                mail(&format!("host = \"h\", {ok}, username = \"u\", password_secret = \"nope\"")),
                "`notify.mail.email.password_secret` names \"nope\", which is not in `[secrets]` (secrets: smtp)",
            ),
            (
                mail(&format!(
                    "host = \"smtp.example.org\", tls = \"none\", {ok}, username = \"u\", password_secret = \"smtp\""
                )),
                "would send the password to \"smtp.example.org\" unencrypted",
            ),
            (mail(&format!("host = \"h\", tls = \"ssl\", {ok}")), "unknown variant `ssl`"),
            (mail(&format!("host = \"h\", {ok}, password = \"hunter2\"")), "unknown field `password`"),
            (mail("from = \"a@b.c\", to = [\"d@e.f\"]"), "missing field `host`"),
            (
                format!("[notify.mail]\nemail = {{ host = \"h\", {ok} }}\nformat = \"slack\"\n"),
                "`format` and `signing_secret` are for a `webhook`",
            ),
            (
                format!("[notify.mail]\nemail = {{ host = \"h\", {ok} }}\nwebhook = \"http://x/\"\n"),
                "set one of `webhook`, `command` or `email`, not several",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(expected), "{text}\n→ {err}\nexpected: {expected}");
        }
    }

    #[test]
    fn a_password_may_go_unencrypted_only_to_a_relay_on_this_machine() {
        for host in ["localhost", "127.0.0.1", "127.0.0.2", "::1"] {
            let text = format!(
                "{SECRET}[notify.mail]\nemail = {{ host = \"{host}\", tls = \"none\", from = \"a@b.c\", to = [\"d@e.f\"], username = \"u\", password_secret = \"smtp\" }}\n"
            );
            parse(&text).unwrap_or_else(|e| panic!("{host}: {e}"));
        }
    }
}
