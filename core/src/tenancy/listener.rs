//! Keeping the host caches of several processes coherent: every registry change is
//! announced with `NOTIFY` in its transaction ([`CHANNEL`]); each process keeps one
//! `LISTEN` connection and forgets what the change concerns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::caches::Caches;
use crate::connect::TlsConnector;
use crate::registry::notify::{self, Announcement, CHANNEL};

impl Caches {
    /// Forgets what the announced change (a payload on [`CHANNEL`]) concerns.
    async fn apply(&self, payload: &str) {
        match notify::read(payload) {
            Announcement::Change {
                schema,
                hosts,
                all_hosts,
            } => {
                tracing::debug!(schema = %schema, "registry change announced");
                self.forget(&schema, &hosts).await;
                if all_hosts {
                    self.forget_everything();
                }
            }
            // Not ours to understand: forget everything rather than keep something stale.
            Announcement::Unreadable => self.forget_everything(),
        }
    }
}

/// Listens until the task is aborted, reconnecting with backoff (100 ms doubling to 5 s);
/// connects over TLS as the pools do.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: TlsConnector,
    caches: Caches,
    listening: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&config, &tls, &caches, &listening).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => tracing::warn!(
                error = %crate::error::with_sources(e.to_string(), std::error::Error::source(&e)),
                "registry listener lost its connection"
            ),
        }
        listening.store(false, Ordering::Release);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &TlsConnector,
    caches: &Caches,
    listening: &AtomicBool,
) -> Result<(), tokio_postgres::Error> {
    let (sender, mut payloads) = tokio::sync::mpsc::unbounded_channel();
    // As the pools connect (`prefer` retried in plain text when the TLS handshake fails).
    // The connection must be polled for the client to work, and it is where notifications
    // arrive.
    let (client, driver) = crate::connect::fallback::connect(config, tls, Some(sender)).await?;
    let driver = tokio::spawn(driver);
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Whatever changed while nobody listened was not announced to us: start over.
    caches.forget_everything();
    listening.store(true, Ordering::Release);
    tracing::debug!("registry listener connected");
    while let Some(payload) = payloads.recv().await {
        caches.apply(&payload).await;
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
