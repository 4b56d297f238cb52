//! `http`: one HTTP request (aiohttp's `session.get(url)`), its body as the
//! step's output.
//!
//! All steps share one process-wide `reqwest::Client` (rustls), so connections
//! and TLS sessions are pooled across steps and runs, as with one long-lived
//! aiohttp session. (Its pooled connections belong to the tokio runtime that
//! opened them; gatherd runs one runtime, and tests use a fresh port each.)
//!
//! Architecture Invariant: the body is read in chunks and reading stops at
//! `Limits::output_bytes`; a huge or endless response costs at most that.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use tokio_util::sync::CancellationToken;

use super::capture::Head;
use super::{StepEnv, StepError, StepLines, StepOutput};
use crate::exec::Stream;
use crate::job::HttpStep;

/// How much of an error response's body a failure message quotes.
const ERROR_BODY_CHARS: usize = 200;

/// The client every `http` step uses, built on first use.
fn client() -> Result<&'static reqwest::Client, StepError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("gatherd/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| error_chain(&e))
        })
        .as_ref()
        .map_err(|e| StepError::Failed(format!("cannot set up the HTTP client: {e}")))
}

/// Runs one attempt of an `http` step. Cancel drops the request.
///
/// The request's limit is the http table's `timeout`; failing that, a step
/// with its own `timeout` is bounded by the run tree's cancel alone; failing
/// both, `Limits::http_timeout` applies, so a silent server cannot hang a run.
pub(super) async fn run(
    step: &HttpStep,
    step_timeout: Option<Duration>,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    let timeout = match (step.timeout, step_timeout) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(env.ctx.limits.http_timeout),
    };
    let url = env.render("url", &step.url, cancel).await?;
    let request = build(step, &url, timeout, env, cancel).await?;
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(StepError::Cancelled),
        r = send(request, step, timeout, &url, env.ctx.limits.output_bytes, &env.lines) => r,
    }
}

/// The request with every template rendered and every part checked.
async fn build(
    step: &HttpStep,
    url: &str,
    timeout: Option<Duration>,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<reqwest::RequestBuilder, StepError> {
    let parsed = Url::parse(url).map_err(|e| StepError::Failed(format!("invalid URL `{url}`: {e}")))?;
    let method = Method::from_bytes(step.method.as_bytes())
        .map_err(|_| StepError::Failed(format!("invalid HTTP method `{}`", step.method)))?;
    let mut request = client()?.request(method, parsed);
    for (name, t) in &step.headers {
        let value = env.render(&format!("headers.{name}"), t, cancel).await?;
        let name_ok = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| StepError::Failed(format!("invalid header name `{name}`")))?;
        let value_ok = HeaderValue::from_str(&value)
            .map_err(|_| StepError::Failed(format!("invalid value for header `{name}`")))?;
        request = request.header(name_ok, value_ok);
    }
    if let Some(t) = &step.body {
        request = request.body(env.render("body", t, cancel).await?);
    }
    if let Some(d) = timeout {
        request = request.timeout(d);
    }
    Ok(request)
}

async fn send(
    request: reqwest::RequestBuilder,
    step: &HttpStep,
    timeout: Option<Duration>,
    url: &str,
    limit: usize,
    lines: &StepLines<'_>,
) -> Result<StepOutput, StepError> {
    let fail = |e: reqwest::Error| StepError::Failed(describe(&e, url, timeout));
    let mut response = request.send().await.map_err(fail)?;
    let status = response.status();
    let accepted =
        if step.expect_status.is_empty() { status.is_success() } else { step.expect_status.contains(&status.as_u16()) };
    if !accepted {
        // The answer's status line is what the step "printed" to stderr.
        lines.line(Stream::Stderr, format!("HTTP {}", status_text(status)));
        // Enough bytes for the quoted characters; a broken body is left out.
        let (body, _) = read_body(&mut response, ERROR_BODY_CHARS * 4).await.unwrap_or_default();
        let body: String = body.trim().chars().take(ERROR_BODY_CHARS).collect();
        let head = format!("HTTP {} from {url}", status_text(status));
        return Err(StepError::Failed(if body.is_empty() { head } else { format!("{head}: {body}") }));
    }
    let (text, truncated) = read_body(&mut response, limit).await.map_err(fail)?;
    Ok(StepOutput { value: text.into(), truncated })
}

/// Reads the body in chunks, stopping as soon as it passes `limit` bytes.
async fn read_body(response: &mut reqwest::Response, limit: usize) -> Result<(String, bool), reqwest::Error> {
    let mut head = Head::new(limit);
    while let Some(chunk) = response.chunk().await? {
        head.push(&chunk);
        if head.truncated() {
            break;
        }
    }
    Ok(head.into_text())
}

/// "500 Internal Server Error", or the bare code when it has no known reason.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// A failed request, said with its URL.
fn describe(e: &reqwest::Error, url: &str, timeout: Option<Duration>) -> String {
    if e.is_timeout() {
        match timeout {
            Some(d) => format!("timed out after {} waiting for {url}", humantime::format_duration(d)),
            None => format!("timed out waiting for {url}"),
        }
    } else if e.is_connect() {
        format!("cannot connect to {url}: {}", root_cause(e))
    } else {
        format!("request to {url} failed: {}", error_chain(e))
    }
}

/// The innermost error: "Connection refused" rather than reqwest's wrapping.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    match inner.downcast_ref::<std::io::Error>() {
        Some(io) => super::capture::os_error(io),
        None => inner.to_string(),
    }
}

/// The error and its causes on one line, without repeating the URL reqwest
/// puts in its own message.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        parts.push(err.to_string());
        next = err.source();
    }
    if parts.is_empty() { e.to_string() } else { parts.join(": ") }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;

    use crate::exec::step::testing::{attempt, attempt_with, limits, step};
    use crate::exec::step::{StepError, StepOutput};
    use crate::exec::{BlockingPool, Limits};
    use crate::job::{HttpStep, StepKind, Template};

    /// What the test server does with each connection.
    #[derive(Clone)]
    enum Reply {
        /// Answer with this status line and body.
        With(&'static str, String),
        /// Answer 200 with the request it received as the body.
        Echo,
        /// Never answer.
        Silence,
    }

    /// A one-purpose HTTP/1.1 server on 127.0.0.1, alive for the test.
    async fn server(reply: Reply) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                match reply.clone() {
                    Reply::Silence => held.push(socket),
                    reply => {
                        tokio::spawn(answer(socket, reply));
                    }
                }
            }
        });
        addr
    }

    async fn answer(mut socket: TcpStream, reply: Reply) {
        let request = read_request(&mut socket).await;
        let (status, body) = match reply {
            Reply::With(status, body) => (status, body),
            Reply::Echo => ("200 OK", request),
            Reply::Silence => unreachable!(),
        };
        let response =
            format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        let _ = socket.write_all(response.as_bytes()).await;
        let _ = socket.shutdown().await;
    }

    /// The request head and body (by content-length) as text.
    async fn read_request(socket: &mut TcpStream) -> String {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&data).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + len {
                    return text;
                }
            }
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&data).to_string(),
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn get(url: &str) -> HttpStep {
        HttpStep {
            method: "GET".into(),
            url: t(url),
            headers: Vec::new(),
            body: None,
            timeout: None,
            expect_status: Vec::new(),
        }
    }

    async fn run(step: HttpStep) -> Result<StepOutput, StepError> {
        attempt(StepKind::Http(Box::new(step)), false, Path::new("/")).await
    }

    #[tokio::test]
    async fn ok_response_body_is_the_output() {
        let addr = server(Reply::With("200 OK", "url_content".into())).await;
        let out = run(get(&format!("http://{addr}/"))).await;
        assert_eq!(out, Ok(StepOutput::whole("url_content")));
    }

    #[tokio::test]
    async fn error_status_fails_with_status_url_and_body() {
        let addr = server(Reply::With("500 Internal Server Error", "boom".into())).await;
        let url = format!("http://{addr}/x");
        let r = run(get(&url)).await;
        assert_eq!(r, Err(StepError::Failed(format!("HTTP 500 Internal Server Error from {url}: boom"))));
    }

    #[tokio::test]
    async fn error_body_is_quoted_up_to_200_characters() {
        let addr = server(Reply::With("502 Bad Gateway", "é".repeat(1000))).await;
        let url = format!("http://{addr}/");
        let Err(StepError::Failed(msg)) = run(get(&url)).await else { panic!("expected a failure") };
        assert_eq!(msg, format!("HTTP 502 Bad Gateway from {url}: {}", "é".repeat(200)));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let addr = server(Reply::Silence).await;
        let url = format!("http://{addr}/");
        let step = HttpStep { timeout: Some(Duration::from_millis(200)), ..get(&url) };
        let r = run(step).await;
        assert_eq!(r, Err(StepError::Failed(format!("timed out after 200ms waiting for {url}"))));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_by_default() {
        let addr = server(Reply::Silence).await;
        let url = format!("http://{addr}/");
        let s = step(StepKind::Http(Box::new(get(&url))), false);
        let limits = Limits { http_timeout: Duration::from_millis(200), ..limits() };
        let cancel = CancellationToken::new();
        let r = attempt_with(&s, Path::new("/"), BlockingPool::new(1), limits, &cancel);
        let r = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("an http step with no timeout still waiting for a silent server after 10s");
        assert_eq!(r, Err(StepError::Failed(format!("timed out after 200ms waiting for {url}"))));
    }

    #[tokio::test]
    async fn the_http_tables_timeout_overrides_the_default() {
        let addr = server(Reply::Silence).await;
        let url = format!("http://{addr}/");
        let http = HttpStep { timeout: Some(Duration::from_millis(100)), ..get(&url) };
        let s = step(StepKind::Http(Box::new(http)), false);
        let limits = Limits { http_timeout: Duration::from_secs(3600), ..limits() };
        let cancel = CancellationToken::new();
        let r = attempt_with(&s, Path::new("/"), BlockingPool::new(1), limits, &cancel);
        let r = tokio::time::timeout(Duration::from_secs(10), r).await.expect("the table's timeout applies");
        assert_eq!(r, Err(StepError::Failed(format!("timed out after 100ms waiting for {url}"))));
    }

    #[tokio::test]
    async fn the_steps_timeout_replaces_the_default() {
        let addr = server(Reply::Silence).await;
        let url = format!("http://{addr}/");
        let mut s = step(StepKind::Http(Box::new(get(&url))), false);
        s.timeout = Some(Duration::from_secs(3600));
        let limits = Limits { http_timeout: Duration::from_millis(100), ..limits() };
        let cancel = CancellationToken::new();
        let r = attempt_with(&s, Path::new("/"), BlockingPool::new(1), limits, &cancel);
        // The step's own timeout is measured by the run tree (as a cancel), so
        // the attempt is still waiting when the default would have fired.
        assert!(tokio::time::timeout(Duration::from_millis(500), r).await.is_err(), "the default applied");
    }

    #[tokio::test]
    async fn expect_status_decides_success() {
        let addr = server(Reply::With("404 Not Found", "gone".into())).await;
        let url = format!("http://{addr}/");
        let step = HttpStep { expect_status: vec![404], ..get(&url) };
        assert_eq!(run(step).await, Ok(StepOutput::whole("gone")));

        let addr = server(Reply::With("200 OK", "fine".into())).await;
        let url = format!("http://{addr}/");
        let step = HttpStep { expect_status: vec![201], ..get(&url) };
        assert_eq!(run(step).await, Err(StepError::Failed(format!("HTTP 200 OK from {url}: fine"))));
    }

    #[tokio::test]
    async fn method_headers_and_body_are_sent_and_rendered() {
        let addr = server(Reply::Echo).await;
        let step = HttpStep {
            method: "POST".into(),
            url: t(&format!("http://{addr}/{{{{ input }}}}")),
            headers: vec![("X-Gatherd-Test".into(), t("{{ steps.prev.output }}"))],
            body: Some(t("payload {{ input }}")),
            ..get("unused")
        };
        let out = run(step).await.unwrap();
        let echoed = out.value.as_str().unwrap().to_ascii_lowercase();
        assert!(echoed.starts_with("post /in http/1.1\r\n"), "{echoed}");
        assert!(echoed.contains("\r\nx-gatherd-test: prev\r\n"), "{echoed}");
        assert!(echoed.ends_with("\r\n\r\npayload in"), "{echoed}");
    }

    #[tokio::test]
    async fn body_past_the_bound_is_truncated() {
        let addr = server(Reply::With("200 OK", "y".repeat(100_000))).await;
        let s = step(StepKind::Http(Box::new(get(&format!("http://{addr}/")))), false);
        let limits = Limits { output_bytes: 10, ..limits() };
        let out =
            attempt_with(&s, Path::new("/"), BlockingPool::new(1), limits, &CancellationToken::new()).await.unwrap();
        assert_eq!(out.value, "yyyyyyyyyy");
        assert!(out.truncated);
    }

    #[tokio::test]
    async fn refused_connection_names_the_url() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/");
        let r = run(get(&url)).await;
        assert_eq!(r, Err(StepError::Failed(format!("cannot connect to {url}: Connection refused"))));
    }

    #[tokio::test]
    async fn invalid_url_is_a_clear_failure() {
        let r = run(get("not a url")).await;
        assert!(matches!(&r, Err(StepError::Failed(m)) if m.starts_with("invalid URL `not a url`")), "{r:?}");
    }

    #[tokio::test]
    async fn cancel_drops_the_request() {
        let addr = server(Reply::Silence).await;
        let s = step(StepKind::Http(Box::new(get(&format!("http://{addr}/")))), false);
        let cancel = CancellationToken::new();
        let task = {
            let cancel = cancel.clone();
            tokio::spawn(async move { attempt_with(&s, Path::new("/"), BlockingPool::new(1), limits(), &cancel).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(30), task).await.expect("a cancelled request returns");
        assert_eq!(r.unwrap(), Err(StepError::Cancelled));
    }
}
