//! sqlx connection options from the core's tokio-postgres settings.

use sqlx::postgres::PgConnectOptions;
use tenant_schemas::tokio_postgres::config::Host;
use tenant_schemas::tokio_postgres::Config;

/// sqlx connection options for the database `config` points at (host or socket directory,
/// port, user, password, database), so a [`Tenancy`](tenant_schemas::Tenancy) and a
/// [`SqlxRouter`](crate::SqlxRouter) can be built from the same settings. TLS and other
/// options are not carried over: set them on the result.
#[must_use]
pub fn connect_options(config: &Config) -> PgConnectOptions {
    let mut options =
        PgConnectOptions::new().port(config.get_ports().first().copied().unwrap_or(5432));
    if let Some(user) = config.get_user() {
        options = options.username(user);
    }
    if let Some(dbname) = config.get_dbname() {
        options = options.database(dbname);
    }
    if let Some(password) = config.get_password() {
        options = options.password(&String::from_utf8_lossy(password));
    }
    match config.get_hosts().first() {
        Some(Host::Unix(dir)) => options.socket(dir),
        Some(Host::Tcp(host)) => options.host(host),
        None => options,
    }
}
