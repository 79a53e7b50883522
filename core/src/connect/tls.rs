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
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
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
            crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
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
