//! TLS to PostgreSQL, with rustls (already in the tree for reqwest and
//! lettre), honouring libpq's `sslmode` and `sslrootcert`.
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (the default) | if the server offers it, else in clear | not checked |
//! | `require` | always | not checked, unless `sslrootcert` is given (then as `verify-ca`, as libpq does) |
//! | `verify-ca` | always | signed by a CA of `sslrootcert` (else the Mozilla roots), any name |
//! | `verify-full` | always | signed so, and issued for the host of the URL |
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and refuses
//! the other words and `sslrootcert` in a URL: [`split_tls`] takes them out
//! of the URL first.
//!
//! Not done: channel binding (`SCRAM-SHA-256-PLUS`; the password exchange
//! is SCRAM without it) and client certificates (`sslcert`/`sslkey`).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// The `sslmode` of a store URL, all five of libpq's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(word: &str) -> Result<Mode, String> {
        Ok(match word {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            "allow" => {
                return Err("sslmode=allow is not supported: use prefer (TLS when the server offers it)".into());
            }
            other => {
                return Err(format!("sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"));
            }
        })
    }

    /// What tokio-postgres is told: whether TLS is tried, and required.
    pub(crate) fn driver(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS settings read from a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a store URL (`postgres://...?a=b`
/// or `key=value ...`): the URL the driver can read, and the settings.
pub(crate) fn split_tls(url: &str) -> Result<(String, Settings), String> {
    let mut settings = Settings { mode: Mode::Prefer, root_cert: None };
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => settings.mode = Mode::parse(value)?,
            "sslrootcert" => settings.root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, &percent_decode(value)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
            }
        }
    } else {
        // `key=value` pairs; quoted values are left to the driver (and
        // `sslmode`/`sslrootcert` need no quotes).
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            let handled = match word.split_once('=') {
                Some((key, value)) if !value.starts_with('\'') => take(key.trim(), value)?,
                _ => false,
            };
            if !handled {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    Ok((rest, settings))
}

fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else { return Err(format!("a bad %-escape in `{value}`")) };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{value}` is not UTF-8 once decoded"))
}

/// The connector given to tokio-postgres (and to the pool): one rustls
/// configuration for every connection of a store.
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
    /// Said when the handshake fails: what was checked, against what.
    checked: Arc<str>,
}

impl std::fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeRustls").field("checked", &self.checked).finish_non_exhaustive()
    }
}

impl MakeRustls {
    /// The connector for `settings`; a root certificate file that cannot be
    /// read (or holds no certificate) is an error naming it.
    pub(crate) fn new(settings: &Settings) -> Result<MakeRustls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let mode = match (settings.mode, &settings.root_cert) {
            // libpq: `require` with a root certificate verifies the chain.
            (Mode::Require, Some(_)) => Mode::VerifyCa,
            (mode, _) => mode,
        };
        let (roots, from) = match (&settings.root_cert, mode) {
            (_, Mode::Disable | Mode::Prefer | Mode::Require) => (RootCertStore::empty(), String::new()),
            (Some(path), _) => (read_roots(path)?, format!("the CA in sslrootcert={}", path.display())),
            // libpq's rule: `verify-ca` checks no name, so any certificate a
            // public CA issued (for any domain) would pass — it needs the
            // database's own CA.
            (None, Mode::VerifyCa) => {
                return Err("sslmode=verify-ca needs sslrootcert=FILE (the CA that signed the server's \
                     certificate): without it any publicly issued certificate would pass, as verify-ca \
                     checks no name; use verify-full to check a public CA's certificate and its name"
                    .to_string());
            }
            (None, _) => (
                RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
                "the public (Mozilla) CAs: set sslrootcert=FILE for your own".to_string(),
            ),
        };
        let (config, checked) = match mode {
            Mode::Disable | Mode::Prefer | Mode::Require => (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                    .with_no_client_auth(),
                "the server's certificate is not checked (sslmode=prefer or require; verify-full checks it)".into(),
            ),
            Mode::VerifyCa | Mode::VerifyFull => {
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("TLS set-up: {e}"))?;
                if mode == Mode::VerifyFull {
                    (
                        builder.with_webpki_verifier(webpki).with_no_client_auth(),
                        format!("verify-full: the certificate must be signed by {from} and name the URL's host"),
                    )
                } else {
                    (
                        builder
                            .dangerous()
                            .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                            .with_no_client_auth(),
                        format!("verify-ca: the certificate must be signed by {from}"),
                    )
                }
            }
        };
        Ok(MakeRustls { config: Arc::new(config), checked: checked.into() })
    }
}

fn read_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read sslrootcert={}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read sslrootcert={}: {e}", path.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("sslrootcert={} holds no certificate (PEM) rustls can use", path.display()));
    }
    Ok(roots)
}

/// `prefer`/`require`: any certificate (the handshake's own signature is
/// still checked against it, so the session is at least with its holder).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS: `{domain}` as a name: {e}")))?;
        Ok(RustlsConnect { config: self.config.clone(), checked: self.checked.clone(), name })
    }
}

/// One connection's handshake.
pub(crate) struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    checked: Arc<str>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| io::Error::new(e.kind(), format!("{e} ({})", self.checked)))
        })
    }
}

/// A TLS connection to the server.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url_and_the_rest_kept() {
        let (rest, s) =
            split_tls("postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x")
                .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5432/db?application_name=x");
        assert_eq!(s, Settings { mode: Mode::VerifyFull, root_cert: Some("/etc/ca.pem".into()) });
        let (rest, s) = split_tls("postgres://u@h/db").unwrap();
        assert_eq!((rest.as_str(), s.mode, s.root_cert), ("postgres://u@h/db", Mode::Prefer, None));
        let (rest, s) = split_tls("host=h user=u sslmode=verify-ca sslrootcert=/ca.pem dbname=d").unwrap();
        assert_eq!(rest, "host=h user=u dbname=d");
        assert_eq!(s, Settings { mode: Mode::VerifyCa, root_cert: Some("/ca.pem".into()) });
        let err = split_tls("postgres://h/db?sslmode=strict").unwrap_err();
        assert!(err.contains("sslmode=strict is not one of disable, prefer, require, verify-ca, verify-full"), "{err}");
        let err = MakeRustls::new(&Settings { mode: Mode::VerifyFull, root_cert: Some("/nonexistent/ca.pem".into()) })
            .unwrap_err();
        assert!(err.starts_with("cannot read sslrootcert=/nonexistent/ca.pem: "), "{err}");
    }

    /// libpq's rule: `verify-ca` checks no name, so it is refused without
    /// the database's own CA (the public CAs would pass any certificate
    /// they issued, for any domain).
    #[test]
    fn verify_ca_without_sslrootcert_is_refused_saying_why() {
        let Err(err) = MakeRustls::new(&Settings { mode: Mode::VerifyCa, root_cert: None }) else { panic!("refused") };
        assert!(err.starts_with("sslmode=verify-ca needs sslrootcert=FILE"), "{err}");
        assert!(MakeRustls::new(&Settings { mode: Mode::VerifyFull, root_cert: None }).is_ok(), "public CAs + name");
    }
}
