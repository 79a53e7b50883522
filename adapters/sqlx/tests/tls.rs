//! One URL, one security level: the sqlx driver connects over TLS exactly when the core
//! does, with the same sslmode, against a server with a CA-signed certificate, one with a
//! self-signed X.509 version 1 certificate (the kind Citus makes) and one without TLS.

#![allow(clippy::unwrap_used)]

use sqlx::{Connection, PgConnection};
use tenant_schemas::testing::{TestCluster, DATABASE_URL_ENV};
use tenant_schemas::ConnectionSettings;
use tenant_schemas_sqlx::connect_options_from_settings;

/// Whether the core's pooled connection to `url` is encrypted, by the server's word.
async fn core_encrypted(url: &str) -> Result<bool, String> {
    let pool = ConnectionSettings::from_url(url)
        .and_then(|s| s.pool())
        .map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

/// Whether sqlx's connection to `url` is encrypted, by the server's word.
async fn sqlx_encrypted(url: &str) -> Result<bool, String> {
    let settings = ConnectionSettings::from_url(url).map_err(|e| e.to_string())?;
    let options = connect_options_from_settings(&settings).map_err(|e| e.to_string())?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(|e| e.to_string())?;
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    Ok(ssl)
}

/// Both drivers with `url`: both encrypted, both plain, or both refused.
async fn same_level(url: &str) -> Result<bool, (String, String)> {
    let (core, sqlx) = (core_encrypted(url).await, sqlx_encrypted(url).await);
    println!("{url}\n  core: {core:?}\n  sqlx: {sqlx:?}");
    match (core, sqlx) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{url}: core {a}, sqlx {b}");
            Ok(a)
        }
        (Err(a), Err(b)) => Err((a, b)),
        (core, sqlx) => panic!("{url}: core {core:?}, sqlx {sqlx:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_and_the_core_read_one_url_as_one_security_level() {
    if std::env::var_os(DATABASE_URL_ENV).is_some() {
        return; // the harness cannot configure TLS on an external server
    }
    // A certificate for localhost signed by the harness' CA.
    let signed = TestCluster::start_with_tls().unwrap();
    let ca = signed.ca_cert().unwrap().display().to_string();
    let base = format!(
        "postgres://postgres@localhost:{}/postgres",
        signed.port().unwrap()
    );
    for (params, expected) in [
        ("", true),
        ("?sslmode=prefer", true),
        ("?sslmode=require", true),
        ("?sslmode=disable", false),
        (&*format!("?sslmode=verify-ca&sslrootcert={ca}"), true),
        (&*format!("?sslmode=verify-full&sslrootcert={ca}"), true),
        (&*format!("?sslmode=require&sslrootcert={ca}"), true),
    ] {
        assert_eq!(
            same_level(&format!("{base}{params}")).await,
            Ok(expected),
            "{params}"
        );
    }
    // Without the CA the verifying modes refuse it, in both.
    assert!(same_level(&format!("{base}?sslmode=verify-full"))
        .await
        .is_err());
    // sslrootcert=system with a weaker mode: refused before connecting, in both.
    let (core, sqlx) = same_level(&format!("{base}?sslmode=require&sslrootcert=system"))
        .await
        .unwrap_err();
    for shown in [core, sqlx] {
        assert!(
            shown.contains("may not be used with sslrootcert=system"),
            "{shown}"
        );
    }

    // A self-signed X.509 version 1 certificate: prefer and require encrypt in both.
    let v1 = TestCluster::start_with_certificate(
        include_str!("../../../core/tests/fixtures/x509v1.crt"),
        include_str!("../../../core/tests/fixtures/x509v1.key"),
        &[],
    )
    .unwrap();
    let base = format!(
        "postgres://postgres@localhost:{}/postgres",
        v1.port().unwrap()
    );
    for params in ["", "?sslmode=require"] {
        assert_eq!(
            same_level(&format!("{base}{params}")).await,
            Ok(true),
            "{params}"
        );
    }

    // No TLS on the server: prefer falls back to plain text, require refuses, in both.
    let plain = TestCluster::shared().unwrap();
    let base = plain.url("postgres").unwrap();
    assert_eq!(same_level(&base).await, Ok(false));
    assert!(same_level(&format!("{base}?sslmode=require"))
        .await
        .is_err());
}
