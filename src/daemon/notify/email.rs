//! An `email` target: one plain-text mail per notification, handed to the
//! target's SMTP relay with lettre (async, over tokio; TLS by rustls, the
//! stack reqwest already brings). A connection per attempt, no pool: mails
//! are rare, and a retry then starts clean.
//!
//! The subject says what happened in a line a mail client shows
//! (`[gatherd] backup.toml failed (run 42)`); the body is the notice's
//! message, its facts, the link to the run and the whole error. Every text
//! in it comes from the [`Notice`], masked before it got here.

use std::time::Duration;

use lettre::message::{Mailbox, Mailboxes, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Notice;
use crate::config::{Email, EmailTls};
use crate::exec::Secrets;
use crate::job::NotifyEvent;

/// The subject line: `[gatherd] JOB WHAT (run N)`.
pub fn subject(notice: &Notice) -> String {
    let what = match notice.event {
        NotifyEvent::Failure if notice.failures > 1 => format!("failed ({} in a row)", notice.failures),
        NotifyEvent::Failure => "failed".to_string(),
        NotifyEvent::Recovery => "recovered".to_string(),
        NotifyEvent::Success => "succeeded".to_string(),
        NotifyEvent::Missed => "missed fires".to_string(),
        NotifyEvent::Interrupted => "was interrupted".to_string(),
        NotifyEvent::Stale => "has not succeeded in time".to_string(),
        NotifyEvent::Invalid => "is invalid".to_string(),
        NotifyEvent::Test => return format!("[gatherd] test notification to {}", notice.target),
    };
    let run = notice.run_id.map(|id| format!(" (run {id})")).unwrap_or_default();
    format!("[gatherd] {} {what}{run}", notice.job)
}

/// The plain-text body: the message, the facts, the link, the error.
pub fn body(notice: &Notice) -> String {
    let mut text = format!("{}\n\n", notice.message);
    let mut fact = |name: &str, value: &str| text.push_str(&format!("{name:<8}{value}\n"));
    if !notice.job.is_empty() {
        fact("Job:", &notice.job);
    }
    fact("Event:", notice.event.as_str());
    if let Some(id) = notice.run_id {
        let status = notice.status.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
        fact("Run:", &format!("{id}{status}"));
    }
    if notice.failures > 1 {
        fact("Streak:", &format!("{} failures in a row", notice.failures));
    }
    fact("When:", &notice.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if let Some(url) = &notice.run_url {
        fact("Run at:", url);
    }
    if let Some(error) = &notice.error {
        text.push_str(&format!("\nError:\n{error}\n"));
    }
    text.push_str(&format!("\n-- \ngatherd, notification target `{}`\n", notice.target));
    text
}

/// The mail of `notice` for `email`; the error says which address is wrong.
pub fn message(email: &Email, notice: &Notice) -> Result<Message, String> {
    let from: Mailbox = email.from.parse().map_err(|e| format!("`from` {:?}: {e}", email.from))?;
    let mut to = Mailboxes::new();
    for address in &email.to {
        to.push(address.parse().map_err(|e| format!("`to` {address:?}: {e}"))?);
    }
    Message::builder()
        .message_id(Some(message_id(notice)))
        .from(from)
        .mailbox(lettre::message::header::To::from(to))
        .subject(subject(notice))
        .header(ContentType::TEXT_PLAIN)
        .body(body(notice))
        .map_err(|e| format!("cannot build the mail: {e}"))
}

/// One attempt: connects to the relay, logs in if set, sends, within `timeout`.
pub async fn send(email: &Email, secrets: &Secrets, notice: &Notice, timeout: Duration) -> Result<(), String> {
    let relay = format!("{}:{}", email.host, email.port());
    let message = message(email, notice)?;
    let tls = || TlsParameters::new(email.host.clone()).map_err(|e| format!("{relay}: TLS: {}", error_chain(&e)));
    let tls = match email.tls {
        EmailTls::Starttls => Tls::Required(tls()?),
        EmailTls::Tls => Tls::Wrapper(tls()?),
        EmailTls::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(email.host.as_str())
        .port(email.port())
        .tls(tls)
        .timeout(Some(timeout))
        .hello_name(hello_name());
    if let (Some(user), Some(secret)) = (&email.username, &email.password_secret) {
        let Some(password) = secrets.get(secret) else {
            return Err(format!("the password's secret `{secret}` is not in the config's `[secrets]`"));
        };
        builder = builder.credentials(Credentials::new(user.clone(), password.to_string()));
    }
    let transport = builder.build();
    match tokio::time::timeout(timeout, transport.send(message)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{relay}: {}", error_chain(&e))),
        Err(_) => Err(format!("{relay}: no answer within {}", humantime::format_duration(timeout))),
    }
}

/// An error with its sources, one line; lettre's own text already ends
/// with its source's, which is not said twice.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The name gatherd greets the relay with (EHLO): this machine's, else
/// `localhost`.
fn hello_name() -> ClientId {
    host_name().map_or_else(ClientId::default, ClientId::Domain)
}

/// This machine's name, if it has a usable one.
fn host_name() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
}

/// A `Message-ID` unique to this mail (relays and spam filters expect
/// one): the time, the process and a counter, at this machine's name.
fn message_id(notice: &Notice) -> String {
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let at = notice.at.timestamp_nanos_opt().unwrap_or_default();
    let host = host_name().unwrap_or_else(|| "localhost".to_string());
    format!("<gatherd.{at}.{}.{n}@{host}>", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: NotifyEvent, failures: u32) -> Notice {
        let error = "exit status 3\ndisk full";
        Notice {
            event,
            job: "backup.toml".into(),
            run_id: Some(42),
            status: Some("failed".into()),
            error: Some(error.into()),
            failures,
            run_url: Some("http://127.0.0.1:8080/runs/42".into()),
            at: chrono::Utc::now(),
            message: Notice::describe(event, "backup.toml", failures, Some(error)),
            target: "mail".into(),
        }
    }

    #[test]
    fn the_subject_names_the_job_what_happened_and_the_run() {
        assert_eq!(subject(&notice(NotifyEvent::Failure, 1)), "[gatherd] backup.toml failed (run 42)");
        assert_eq!(subject(&notice(NotifyEvent::Failure, 3)), "[gatherd] backup.toml failed (3 in a row) (run 42)");
        assert_eq!(subject(&notice(NotifyEvent::Recovery, 0)), "[gatherd] backup.toml recovered (run 42)");
        let mut stale = notice(NotifyEvent::Stale, 0);
        stale.run_id = None;
        assert_eq!(subject(&stale), "[gatherd] backup.toml has not succeeded in time");
    }

    #[test]
    fn each_mail_has_its_own_message_id() {
        let email: Email =
            toml::from_str("host = \"h\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n").expect("an email table");
        let id = |m: Message| {
            let text = String::from_utf8(m.formatted()).expect("text");
            text.lines().find(|l| l.starts_with("Message-ID: <gatherd.")).map(str::to_string).expect(&text)
        };
        let n = notice(NotifyEvent::Failure, 1);
        let (a, b) = (message(&email, &n).expect("built"), message(&email, &n).expect("built"));
        assert_ne!(id(a), id(b));
    }

    #[test]
    fn an_error_says_each_source_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "connection error: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(error_chain(&e), "connection error: refused");
    }

    #[test]
    fn the_body_holds_the_message_the_link_and_the_whole_error() {
        let body = body(&notice(NotifyEvent::Failure, 1));
        assert!(body.starts_with("backup.toml failed: exit status 3\n\n"), "{body}");
        assert!(body.contains("Run:    42 (failed)\n"), "{body}");
        assert!(body.contains("Run at: http://127.0.0.1:8080/runs/42\n"), "{body}");
        assert!(body.contains("\nError:\nexit status 3\ndisk full\n"), "{body}");
    }
}
