//! STARTTLS (RFC 3207): the server's certificate and key, a self-signed
//! pair for when none is configured, and the stream a session talks over,
//! plain until the client asks for TLS.
//!
//! TLS is rustls on aws-lc-rs (the provider is named explicitly, so no
//! process-wide default, and never ring).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The gateway's TLS identity: what STARTTLS presents. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// Why a certificate or key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("no PEM certificate (-----BEGIN CERTIFICATE-----) found")]
    NoCertificate,
    #[error("the certificate PEM is malformed: {0}")]
    Certificate(String),
    #[error(
        "no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY) found"
    )]
    NoKey,
    #[error("the private key PEM is malformed: {0}")]
    Key(String),
    /// Unparsable certificate, unsupported key, or a key that is not the
    /// certificate's.
    #[error("the certificate and key cannot be used: {0}")]
    Unusable(String),
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
}

impl TlsConfig {
    /// From a PEM certificate chain (the server's certificate first, then
    /// any intermediates) and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoCertificate,
                e => TlsError::Certificate(e.to_string()),
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey,
            e => TlsError::Key(e.to_string()),
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Unusable(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Unusable(e.to_string()))?;
        Ok(TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// A new self-signed certificate and its key, both PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A self-signed certificate (ECDSA P-256) for `hostname`, so STARTTLS
/// works before the organisation installs a real one. Clients that verify
/// certificates will not trust it; submission clients mostly do not.
pub fn self_signed(hostname: &str) -> Result<SelfSigned, TlsError> {
    let fail = |e: rcgen::Error| TlsError::SelfSigned(e.to_string());
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_owned()]).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The session's connection: plain, or TLS after STARTTLS.
pub(crate) enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// The handshake failed and took the connection with it: reads see
    /// EOF, writes fail.
    Closed,
}

impl<S> Stream<S> {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_loads_and_garbage_is_named() {
        let pair = self_signed("gateway.test").unwrap();
        assert!(pair.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(TlsConfig::from_pem(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes()).is_ok());

        let other = self_signed("gateway.test").unwrap();
        let mismatch = TlsConfig::from_pem(pair.cert_pem.as_bytes(), other.key_pem.as_bytes());
        assert!(
            matches!(mismatch, Err(TlsError::Unusable(_))),
            "{mismatch:?}"
        );
        assert_eq!(
            TlsConfig::from_pem(b"hello", pair.key_pem.as_bytes()).unwrap_err(),
            TlsError::NoCertificate
        );
        assert_eq!(
            TlsConfig::from_pem(pair.cert_pem.as_bytes(), pair.cert_pem.as_bytes()).unwrap_err(),
            TlsError::NoKey
        );
        let bad_cert = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            TlsConfig::from_pem(bad_cert.as_bytes(), pair.key_pem.as_bytes()),
            Err(TlsError::Unusable(_))
        ));
        assert!(!format!("{pair:?}").contains("PRIVATE"));
    }
}
