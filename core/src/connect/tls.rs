//! The TLS connector every connection of the library is made with: rustls (ring) with the
//! verification the sslmode asks for, or no TLS at all without the `tls` feature.

use std::fmt;
use std::path::{Path, PathBuf};

use super::SslMode;
use crate::error::Result;

/// A `tokio_postgres` TLS connector made from [`ConnectionSettings`](super::ConnectionSettings)
/// by [`tls_connector`](super::ConnectionSettings::tls_connector): what the pools, the change
/// listener and the command line connect with.
///
/// With the `tls` feature it is rustls (with the ring provider): `prefer` and `require`
/// encrypt without verifying the server (as libpq does), `verify-ca` checks the certificate
/// chain against the root certificates, `verify-full` also checks that the certificate names
/// the host connected to. Without the feature it makes no TLS connections. Cheap to clone.
///
/// The pools and the change listener also retry a `prefer` connection in plain text when
/// the TLS handshake fails, as libpq does; `Config::connect` with this connector alone
/// does not.
///
/// ```no_run
/// use tenant_schemas::ConnectionSettings;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = ConnectionSettings::from_url(
///     "postgres://app@db.example.com/app?sslmode=verify-full&sslrootcert=/etc/db-ca.crt",
/// )?;
/// let (client, connection) = settings.config().connect(settings.tls_connector()?).await?;
/// tokio::spawn(connection);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConnector {
    mode: SslMode,
    root_cert: Option<PathBuf>,
    #[cfg(feature = "tls")]
    inner: tokio_postgres_rustls::MakeRustlsConnect,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("mode", &self.mode)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    pub(super) fn new(mode: SslMode, root_cert: Option<&Path>) -> Result<Self> {
        #[cfg(feature = "tls")]
        {
            let inner = rustls_config::make(mode, root_cert)?;
            Ok(Self {
                mode,
                root_cert: root_cert.map(Path::to_path_buf),
                inner,
            })
        }
        #[cfg(not(feature = "tls"))]
        match mode {
            // libpq built without SSL support does the same with `prefer`.
            SslMode::Disable | SslMode::Prefer => Ok(Self {
                mode,
                root_cert: root_cert.map(Path::to_path_buf),
            }),
            _ => Err(crate::error::Error::ConnectionSettings {
                reason: format!(
                    "sslmode={mode} needs TLS, and tenant-schemas was built without its `tls` feature"
                ),
            }),
        }
    }

    /// The sslmode it verifies for.
    #[must_use]
    pub fn mode(&self) -> SslMode {
        self.mode
    }
}

#[cfg(not(feature = "tls"))]
impl tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> for TlsConnector {
    type Stream = tokio_postgres::tls::NoTlsStream;
    type TlsConnect = tokio_postgres::NoTls;
    type Error = tokio_postgres::tls::NoTlsError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        tokio_postgres::tls::MakeTlsConnect::<tokio_postgres::Socket>::make_tls_connect(
            &mut tokio_postgres::NoTls,
            domain,
        )
    }
}

#[cfg(feature = "tls")]
pub use handshake::TlsHandshake;

#[cfg(feature = "tls")]
mod handshake {
    use std::future::Future;
    use std::io;
    use std::pin::Pin;

    use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
    use tokio_postgres::Socket;
    use tokio_postgres_rustls::MakeRustlsConnect;

    use super::super::SslMode;
    use super::TlsConnector;

    type Inner = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type InnerStream = <Inner as TlsConnect<Socket>>::Stream;

    /// One TLS handshake with one host, made by a [`TlsConnector`]; its errors say what
    /// failed in words (the host name did not match, the issuer is unknown) before rustls'
    /// own.
    pub struct TlsHandshake {
        inner: Inner,
        host: String,
        mode: SslMode,
    }

    impl std::fmt::Debug for TlsHandshake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TlsHandshake")
                .field("host", &self.host)
                .field("mode", &self.mode)
                .finish_non_exhaustive()
        }
    }

    impl MakeTlsConnect<Socket> for TlsConnector {
        type Stream = InnerStream;
        type TlsConnect = TlsHandshake;
        type Error = std::convert::Infallible;

        fn make_tls_connect(&mut self, domain: &str) -> Result<TlsHandshake, Self::Error> {
            let inner = match MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, domain) {
                Ok(inner) => inner,
                Err(never) => match never {},
            };
            Ok(TlsHandshake {
                inner,
                host: domain.to_owned(),
                mode: self.mode,
            })
        }
    }

    impl TlsConnect<Socket> for TlsHandshake {
        type Stream = InnerStream;
        type Error = io::Error;
        type Future = Pin<Box<dyn Future<Output = io::Result<InnerStream>> + Send>>;

        fn connect(self, stream: Socket) -> Self::Future {
            let Self { inner, host, mode } = self;
            let handshake = inner.connect(stream);
            Box::pin(async move { handshake.await.map_err(|e| explain(e, &host, mode)) })
        }
    }

    /// A certificate the handshake refused, said in words, with rustls' error as the cause.
    #[derive(Debug)]
    struct Refused {
        message: String,
        source: rustls::Error,
    }

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl std::error::Error for Refused {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    fn explain(err: io::Error, host: &str, mode: SslMode) -> io::Error {
        use rustls::CertificateError as C;
        let Some(rustls) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return err;
        };
        let message = match rustls {
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => {
                format!(
                    "the host name `{host}` does not match the server's certificate \
                     (sslmode={mode} checks it; connect with a name the certificate holds, \
                     or use sslmode=verify-ca to check only the chain)"
                )
            }
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => format!(
                "the server's certificate was not issued by a trusted certificate authority \
                 (unknown issuer; sslmode={mode}): give the server's CA certificate with \
                 sslrootcert=FILE"
            ),
            // webpki reads only X.509 version 3; the self-signed certificate Citus makes
            // is version 1 (`prefer` and `require` never get here: they judge nothing).
            rustls::Error::InvalidCertificate(C::Other(other))
                if format!("{other:?}").contains("UnsupportedCertVersion") =>
            {
                format!(
                    "the server's certificate is not an X.509 version 3 certificate, and \
                     sslmode={mode} verifies only those: give the server a version 3 \
                     certificate, or use sslmode=require to encrypt without verifying it"
                )
            }
            rustls::Error::InvalidCertificate(_) => {
                format!("the server's certificate was refused (sslmode={mode})")
            }
            _ => return err,
        };
        let source = rustls.clone();
        io::Error::new(err.kind(), Refused { message, source })
    }
}

#[cfg(feature = "tls")]
mod rustls_config {
    //! rustls client configurations per sslmode.

    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{self, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, PeerMisbehaved, RootCertStore,
    };
    use tokio_postgres_rustls::MakeRustlsConnect;

    use super::super::SslMode;
    use crate::error::{Error, Result};

    fn settings_error(reason: String) -> Error {
        Error::ConnectionSettings { reason }
    }

    pub(super) fn make(mode: SslMode, root_cert: Option<&Path>) -> Result<MakeRustlsConnect> {
        // The ring provider, named rather than taken from the process default: that default
        // is ambiguous (and `builder()` panics) when another crate enables aws-lc-rs too.
        let provider = Arc::new(crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| settings_error(format!("TLS set-up: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(Unverified(provider)),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(roots(root_cert)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| settings_error(format!("TLS set-up: {e}")))?;
                if mode == SslMode::VerifyCa {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// The certificates of `path` (PEM), or Mozilla's roots (webpki-roots) without a file or
    /// with `system`.
    fn roots(path: Option<&Path>) -> Result<RootCertStore> {
        let Some(path) = path.filter(|p| *p != Path::new("system")) else {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        };
        let shown = path.display();
        let bytes = std::fs::read(path)
            .map_err(|e| settings_error(format!("cannot read sslrootcert {shown}: {e}")))?;
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| {
                settings_error(format!(
                    "sslrootcert {shown} is not a PEM certificate file: {e}"
                ))
            })?;
            store.add(cert).map_err(|e| {
                settings_error(format!(
                    "sslrootcert {shown} holds an unusable certificate: {e}"
                ))
            })?;
        }
        if store.is_empty() {
            return Err(settings_error(format!(
                "sslrootcert {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            )));
        }
        Ok(store)
    }

    /// `prefer` and `require`: encrypted, the server not verified (as libpq does).
    ///
    /// Nothing about the certificate is judged, not even its form: its public key is read
    /// straight from the DER ([`subject_public_key_info`]) to check the handshake's
    /// signature, the proof that the server holds the key it sent. rustls' own signature
    /// checks parse the certificate with webpki first, which refuses every X.509 version but
    /// 3 (`UnsupportedCertVersion`), and the self-signed certificate `CREATE EXTENSION citus`
    /// makes is version 1: libpq (OpenSSL) connects to it with `prefer` and `require`, so
    /// this does too.
    #[derive(Debug)]
    struct Unverified(Arc<CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
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
            let algorithms = &self.0.signature_verification_algorithms;
            let spki = subject_public_key_info(cert)?;
            let (algorithm_id, key) = split_spki(spki)?;
            let candidates = algorithms
                .mapping
                .iter()
                .find(|(scheme, _)| *scheme == dss.scheme)
                .map(|(_, candidates)| *candidates)
                .ok_or(rustls::Error::PeerMisbehaved(
                    PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
                ))?;
            // As rustls does: the first algorithm of the scheme made for this kind of key.
            let algorithm = candidates
                .iter()
                .find(|a| a.public_key_alg_id().as_ref() == algorithm_id)
                .ok_or(rustls::Error::PeerMisbehaved(
                    PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
                ))?;
            algorithm
                .verify_signature(key, message, dss.signature())
                .map(|()| HandshakeSignatureValid::assertion())
                .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let spki = SubjectPublicKeyInfoDer::from(subject_public_key_info(cert)?);
            crypto::verify_tls13_signature_with_raw_key(
                message,
                &spki,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// The `subjectPublicKeyInfo` of a DER certificate (the whole element, tag included), of
    /// any X.509 version: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
    /// OPTIONAL, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo,
    /// … }, … }` (RFC 5280, 4.1).
    pub(super) fn subject_public_key_info<'a>(
        cert: &'a CertificateDer<'_>,
    ) -> Result<&'a [u8], rustls::Error> {
        let bad = || rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
        let (certificate, _) = der::element(cert.as_ref(), der::SEQUENCE).ok_or_else(bad)?;
        let (tbs, _) = der::element(certificate.contents, der::SEQUENCE).ok_or_else(bad)?;
        let mut rest = tbs.contents;
        if rest.first() == Some(&der::VERSION) {
            rest = der::element(rest, der::VERSION).ok_or_else(bad)?.1;
        }
        for tag in [
            der::INTEGER,  // serialNumber
            der::SEQUENCE, // signature
            der::SEQUENCE, // issuer
            der::SEQUENCE, // validity
            der::SEQUENCE, // subject
        ] {
            rest = der::element(rest, tag).ok_or_else(bad)?.1;
        }
        let (spki, _) = der::element(rest, der::SEQUENCE).ok_or_else(bad)?;
        Ok(spki.whole)
    }

    /// The contents of a `subjectPublicKeyInfo`'s `AlgorithmIdentifier` (what
    /// `SignatureVerificationAlgorithm::public_key_alg_id` is compared with) and its key (the
    /// bit string's bits).
    fn split_spki(spki: &[u8]) -> Result<(&[u8], &[u8]), rustls::Error> {
        let bad = || rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
        let (spki, _) = der::element(spki, der::SEQUENCE).ok_or_else(bad)?;
        let (algorithm, rest) = der::element(spki.contents, der::SEQUENCE).ok_or_else(bad)?;
        let (key, rest) = der::element(rest, der::BIT_STRING).ok_or_else(bad)?;
        match key.contents.split_first() {
            // No unused bits: a key is whole bytes.
            Some((0, key)) if rest.is_empty() => Ok((algorithm.contents, key)),
            _ => Err(bad()),
        }
    }

    /// Just enough DER to find a certificate's public key.
    mod der {
        pub(super) const SEQUENCE: u8 = 0x30;
        pub(super) const INTEGER: u8 = 0x02;
        pub(super) const BIT_STRING: u8 = 0x03;
        /// `[0] EXPLICIT`, the certificate's version.
        pub(super) const VERSION: u8 = 0xa0;

        pub(super) struct Element<'a> {
            pub(super) whole: &'a [u8],
            pub(super) contents: &'a [u8],
        }

        /// The element with `tag` at the start of `input` (definite length, as DER has), and
        /// what follows it.
        pub(super) fn element(input: &[u8], tag: u8) -> Option<(Element<'_>, &[u8])> {
            let (&first, rest) = input.split_first()?;
            if first != tag {
                return None;
            }
            let (&len, mut rest) = rest.split_first()?;
            let len = if len < 0x80 {
                usize::from(len)
            } else {
                let bytes = usize::from(len & 0x7f);
                if bytes == 0 || bytes > 4 || rest.len() < bytes {
                    return None;
                }
                let (be, after) = rest.split_at(bytes);
                rest = after;
                be.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
            };
            if rest.len() < len {
                return None;
            }
            let header = input.len() - rest.len();
            let (contents, after) = rest.split_at(len);
            Some((
                Element {
                    whole: &input[..header + len],
                    contents,
                },
                after,
            ))
        }
    }

    /// `verify-ca`: the chain is verified, the host name is not.
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            // webpki checks the name last, after the chain: a name error means the chain
            // was good.
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
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

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}
