//! Making a connection as libpq makes it with `sslmode=prefer`: TLS first, and when the TLS
//! handshake fails (not only when the server says it has no TLS, which tokio-postgres
//! handles), a second connection in plain text. libpq does the same ("if the SSL connection
//! attempt fails, try a non-SSL connection"), so a server libpq reaches with `prefer` is
//! reached here too, e.g. one whose TLS offers only what rustls refuses (TLS 1.1, RSA key
//! exchange).

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, Error, NoTls};

use super::{SslMode, TlsConnector};

/// What drives a connection (to be spawned): it sends the payload of every notification to
/// the sender given to [`connect`], if any, and ends with the connection.
pub(crate) type Driver = BoxFuture<'static, Result<(), Error>>;

/// Connects with `config` over `tls`, retrying in plain text when `tls` is for `prefer` and
/// the TLS handshake failed.
pub(crate) async fn connect(
    config: &Config,
    tls: &TlsConnector,
    notifications: Option<UnboundedSender<String>>,
) -> Result<(Client, Driver), Error> {
    match config.connect(tls.clone()).await {
        Ok((client, connection)) => Ok((client, Box::pin(drive(connection, notifications)))),
        Err(e) if tls.mode() == SslMode::Prefer && is_handshake_failure(&e) => {
            tracing::debug!(
                error = %crate::error::with_sources(e.to_string(), std::error::Error::source(&e)),
                "sslmode=prefer: the TLS handshake failed, connecting without TLS as libpq does"
            );
            let mut plain = config.clone();
            plain.ssl_mode(DriverSslMode::Disable);
            let (client, connection) = plain.connect(NoTls).await?;
            Ok((client, Box::pin(drive(connection, notifications))))
        }
        Err(e) => Err(e),
    }
}

/// Whether `e` is a failed TLS handshake (tokio-postgres does not expose its error kinds;
/// its message for them is fixed).
fn is_handshake_failure(e: &Error) -> bool {
    e.to_string().starts_with("error performing TLS handshake")
        && !e.to_string().contains("server does not support TLS")
}

/// Polls `connection` until it ends, sending notifications' payloads to `notifications`.
async fn drive<S, T>(
    mut connection: Connection<S, T>,
    notifications: Option<UnboundedSender<String>>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(n)) => {
                if let Some(sender) = &notifications {
                    if sender.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The pools' way of connecting ([`connect`]), for deadpool.
#[derive(Debug)]
pub(super) struct PreferFallback(pub(super) TlsConnector);

impl deadpool_postgres::Connect for PreferFallback {
    fn connect(&self, config: &Config) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), Error>> {
        let config = config.clone();
        Box::pin(async move {
            let (client, driver) = connect(&config, &self.0, None).await?;
            // As deadpool's own connector does (it aborts the task when the client goes).
            let task = tokio::spawn(async move {
                if let Err(e) = driver.await {
                    tracing::warn!(target: "deadpool.postgres", "Connection error: {}", e);
                }
            });
            Ok((client, task))
        })
    }
}
