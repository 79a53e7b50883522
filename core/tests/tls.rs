//! Connections over TLS, against a throwaway PostgreSQL with `ssl = on` and a certificate
//! for `localhost`/127.0.0.1 signed by a CA the harness makes: each sslmode verifies what it
//! says, failures say why, and the pools and the change listener of a `Tenancy` built from a
//! `verify-full` URL all run encrypted.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tenant_schemas::testing::fixtures::{host, marker_and_notes, schema};
use tenant_schemas::testing::{TestCitusCluster, TestCluster, TestDatabase, DATABASE_URL_ENV};
use tenant_schemas::{ConnectionSettings, ErrorKind, NewTenant, Tenancy};

/// One TLS cluster for this test binary; `None` against an external server (which the
/// harness cannot configure), where these tests are skipped.
fn cluster() -> Option<&'static TestCluster> {
    static CLUSTER: OnceLock<Option<TestCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            if std::env::var_os(DATABASE_URL_ENV).is_some() {
                eprintln!("skipped: {DATABASE_URL_ENV} names an external server");
                return None;
            }
            Some(TestCluster::start_with_tls().unwrap())
        })
        .as_ref()
}

/// A fresh database on the TLS cluster, and a URL to it through `host` with `params`
/// (`{ca}` stands for the CA file).
async fn database(host: &str, params: &str) -> Option<(TestDatabase, String)> {
    let cluster = cluster()?;
    let db = cluster.create_database().await.unwrap();
    let ca = cluster.ca_cert().unwrap().display().to_string();
    let url = format!(
        "postgres://postgres@{host}:{}/{}?{}",
        cluster.port().unwrap(),
        db.name(),
        params.replace("{ca}", &ca)
    );
    Some((db, url))
}

/// Whether the pool's connection to `url` is encrypted, by the server's word.
async fn encrypted(url: &str) -> Result<bool, String> {
    let pool = ConnectionSettings::from_url(url)
        .map_err(|e| e.to_string())?
        .pool()
        .map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| {
        // What an application sees: the library's error for a failed checkout.
        tenant_schemas::Error::Pool {
            schema: tenant_schemas::SchemaName::public(),
            source: e,
        }
        .to_string()
    })?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_ca_connects_encrypted() {
    let Some((_db, url)) = database("localhost", "sslmode=verify-full&sslrootcert={ca}").await
    else {
        return;
    };
    assert_eq!(encrypted(&url).await, Ok(true));
    // The certificate names the address too.
    let by_ip = url.replace("@localhost:", "@127.0.0.1:");
    assert_eq!(encrypted(&by_ip).await, Ok(true));
    // libpq's key=value form reads the same.
    let settings = ConnectionSettings::from_url(&url).unwrap();
    let key_value = format!(
        "host=localhost port={} user=postgres dbname={} sslmode=verify-full sslrootcert='{}'",
        settings.config().get_ports()[0],
        settings.config().get_dbname().unwrap(),
        settings.get_root_cert().unwrap().display()
    );
    assert_eq!(encrypted(&key_value).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_host_name_the_certificate_does_not_hold() {
    // Connect to 127.0.0.1 while calling the server `db.invalid`: the name is checked
    // against the certificate (as libpq does with `hostaddr`).
    let Some((_db, url)) = database(
        "db.invalid",
        "hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}",
    )
    .await
    else {
        return;
    };
    let err = Tenancy::connect(&url).await.unwrap_err();
    let shown = err.to_string();
    println!("wrong host name: {shown}");
    assert!(
        shown.contains("the host name `db.invalid` does not match the server's certificate"),
        "{shown}"
    );
    // rustls' own words follow, naming what the certificate holds.
    assert!(shown.contains("localhost"), "{shown}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);

    // verify-ca checks the chain only: the same name passes.
    let chain_only = url.replace("verify-full", "verify-ca");
    assert_eq!(encrypted(&chain_only).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_without_the_ca_fails_as_an_unknown_issuer() {
    let Some((_db, url)) = database("localhost", "sslmode=verify-full").await else {
        return;
    };
    // Mozilla's roots do not know the harness' CA.
    let shown = encrypted(&url).await.unwrap_err();
    println!("no CA: {shown}");
    assert!(
        shown.contains("not issued by a trusted certificate authority (unknown issuer"),
        "{shown}"
    );
    assert!(shown.contains("sslrootcert"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_a_ca_and_disable_does_not_encrypt() {
    let Some((_db, url)) = database("localhost", "sslmode=require").await else {
        return;
    };
    assert_eq!(encrypted(&url).await, Ok(true));
    // `prefer` (the default) takes TLS when offered.
    let prefer = url.replace("?sslmode=require", "");
    assert_eq!(encrypted(&prefer).await, Ok(true));
    let plain = url.replace("require", "disable");
    assert_eq!(encrypted(&plain).await, Ok(false));

    // Past the handshake, the server's own refusal is what the error says.
    let (_, name) = url.rsplit_once('/').unwrap();
    let (name, _) = name.split_once('?').unwrap();
    let missing = url.replace(name, "no_such_database");
    let shown = Tenancy::connect(&missing).await.unwrap_err().to_string();
    assert!(
        shown.contains("database \"no_such_database\" does not exist"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenancy_from_a_verify_full_url_serves_and_listens_encrypted() {
    let Some((db, url)) = database("localhost", "sslmode=verify-full&sslrootcert={ca}").await
    else {
        return;
    };
    let instance = || async {
        Tenancy::builder_from_url(&url)
            .unwrap()
            .migrations(marker_and_notes())
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (instance().await, instance().await);
    let started = Instant::now();
    while !(a.is_listening() && b.is_listening()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never listening"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // b caches "no tenant" for acme.test (for 5 s); only the notification can make it see
    // the tenant a creates sooner.
    let acme = host("acme.test");
    assert_eq!(
        b.resolve(&acme).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    a.create_tenant(NewTenant::new(schema("acme")).domain(acme.clone()))
        .await
        .unwrap();
    let started = Instant::now();
    let tenant = loop {
        if let Ok(tenant) = b.resolve(&acme).await {
            break tenant;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "b never heard of acme"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // b's tenant connections work, over its own TLS pool.
    let notes: i64 = tenant_schemas::scope::run(tenant, async {
        let db = b.connection().await.unwrap();
        db.query_one("SELECT count(*) FROM notes", &[])
            .await
            .unwrap()
            .get(0)
    })
    .await;
    assert_eq!(notes, 0);

    // Every connection to this database is encrypted, the two listeners included.
    let admin = db.pool().get().await.unwrap(); // over the Unix socket: not counted
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE NOT s.ssl), \
                    count(*) FILTER (WHERE s.ssl AND a.query LIKE 'LISTEN%') \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = current_database() AND a.client_addr IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let (plain, listening): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(plain, 0, "connections without TLS");
    assert_eq!(listening, 2, "listeners over TLS");
}

/// Servers whose certificate is the self-signed X.509 version 1 certificate of
/// `tests/fixtures` (the kind `CREATE EXTENSION citus` makes): one speaking TLS 1.3 (rustls
/// checks the handshake's signature with the raw key), one at most TLS 1.2 (the library's
/// own check); none against an external server.
fn version_1_clusters() -> &'static [(TestCluster, &'static str)] {
    static CLUSTERS: OnceLock<Vec<(TestCluster, &'static str)>> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        if std::env::var_os(DATABASE_URL_ENV).is_some() {
            return Vec::new();
        }
        [
            (&[][..], "TLSv1.3"),
            (&["ssl_max_protocol_version=TLSv1.2"][..], "TLSv1.2"),
        ]
        .into_iter()
        .map(|(settings, version)| {
            let cluster = TestCluster::start_with_certificate(
                include_str!("fixtures/x509v1.crt"),
                include_str!("fixtures/x509v1.key"),
                settings,
            )
            .unwrap();
            (cluster, version)
        })
        .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_and_require_encrypt_to_a_version_1_certificate_and_the_verifying_modes_refuse_it() {
    for (cluster, version) in version_1_clusters() {
        let db = cluster.create_database().await.unwrap();
        let url = format!(
            "postgres://postgres@localhost:{}/{}",
            cluster.port().unwrap(),
            db.name()
        );
        // As libpq: prefer (the default) and require encrypt and judge nothing of the
        // certificate (rustls' verifier alone answers `UnsupportedCertVersion`).
        assert_eq!(encrypted(&url).await, Ok(true), "{version}");
        assert_eq!(encrypted(&format!("{url}?sslmode=prefer")).await, Ok(true));
        assert_eq!(encrypted(&format!("{url}?sslmode=require")).await, Ok(true));

        // A Tenancy from the bare URL serves a tenant over it.
        let tenancy = Tenancy::builder_from_url(&url)
            .unwrap()
            .migrations(marker_and_notes())
            .build()
            .await
            .unwrap();
        let acme = tenancy
            .create_tenant(NewTenant::new(schema("acme")))
            .await
            .unwrap();
        let (ssl, negotiated): (bool, String) = tenant_schemas::scope::run(acme.tenant(), async {
            let db = tenancy.connection().await.unwrap();
            let row = db
                .query_one(
                    "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        })
        .await;
        assert!(ssl, "the tenant's connection is not encrypted");
        assert_eq!(&negotiated, version);
        // So does its change listener.
        let started = Instant::now();
        while !tenancy.is_listening() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never listening"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let listeners: i64 = db
            .pool()
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = current_database() AND s.ssl AND a.query LIKE 'LISTEN%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(listeners, 1, "{version}: the listener over TLS");

        // The verifying modes refuse it, against the web's roots or the certificate itself,
        // and say why.
        let own = std::env::current_dir()
            .unwrap()
            .join("tests/fixtures/x509v1.crt");
        for params in [
            "sslmode=verify-ca".to_owned(),
            "sslmode=verify-full".to_owned(),
            format!("sslmode=verify-ca&sslrootcert={}", own.display()),
            format!("sslmode=require&sslrootcert={}", own.display()),
        ] {
            let shown = match encrypted(&format!("{url}?{params}")).await {
                Ok(ssl) => panic!("{params}: connected (ssl = {ssl})"),
                Err(shown) => shown,
            };
            println!("{version} {params}: {shown}");
            assert!(
                shown.contains("the server's certificate is not an X.509 version 3 certificate"),
                "{params}: {shown}"
            );
            assert!(shown.contains("sslmode=require"), "{params}: {shown}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_with_sslrootcert_system_is_refused_as_libpq_refuses_it() {
    let Some((_db, url)) = database("localhost", "sslmode=require&sslrootcert=system").await else {
        return;
    };
    let err = Tenancy::connect(&url).await.unwrap_err();
    let shown = err.to_string();
    println!("require + system: {shown}");
    assert!(
        shown.contains("weak sslmode \"require\" may not be used with sslrootcert=system"),
        "{shown}"
    );
    assert!(shown.contains("verify-full"), "{shown}");
    // sslrootcert=system alone means verify-full: against the harness' own CA, which no
    // system root vouches for, the connection is refused as an unknown issuer.
    let system_only = url.replace("sslmode=require&", "");
    let shown = encrypted(&system_only).await.unwrap_err();
    assert!(
        shown.contains("not issued by a trusted certificate authority"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_connects_in_plain_text_to_a_server_without_tls() {
    if std::env::var_os(DATABASE_URL_ENV).is_some() {
        return; // the harness cannot say whether an external server has TLS
    }
    // The shared cluster has no TLS (`ssl = off`).
    let cluster = TestCluster::shared().unwrap();
    let db = cluster.create_database().await.unwrap();
    let url = cluster.url(db.name()).unwrap();
    assert!(!url.contains("sslmode"), "{url}");
    assert_eq!(encrypted(&url).await, Ok(false));
    assert_eq!(encrypted(&format!("{url}?sslmode=prefer")).await, Ok(false));
    // require does not fall back.
    let shown = encrypted(&format!("{url}?sslmode=require"))
        .await
        .unwrap_err();
    assert!(shown.contains("TLS"), "{shown}");
    // Nor does a Tenancy from the bare URL fail: it serves, in plain text.
    let tenancy = Tenancy::connect(&url).await.unwrap();
    assert!(tenancy.registry().is_installed().await.unwrap());
    let public = tenancy.router().public().await.unwrap();
    let row = public
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
}

/// A Citus coordinator as Citus sets itself up (SSL turned on by `CREATE EXTENSION citus`,
/// with a self-signed version 1 certificate), reached with a URL without `sslmode`: the
/// Tenancy connects, encrypted, and serves a distributed tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citus_coordinator_url_without_sslmode_connects_encrypted() {
    if TestCitusCluster::skip_requested() || std::env::var_os(DATABASE_URL_ENV).is_some() {
        return;
    }
    let cluster = TestCitusCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let db = cluster.create_database().await.unwrap();
    let url = cluster.coordinator().url(db.name()).unwrap();
    assert!(!url.contains("sslmode"), "{url}");
    // The certificate Citus made is version 1: the verifying modes cannot read it.
    let shown = encrypted(&format!("{url}?sslmode=verify-ca"))
        .await
        .unwrap_err();
    assert!(
        shown.contains("not an X.509 version 3 certificate"),
        "{shown}"
    );

    let tenancy = Tenancy::builder_from_url(&url)
        .unwrap()
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    assert!(tenancy.registry().is_citus().await.unwrap());
    let acme = tenancy
        .create_tenant(NewTenant::new(schema("acme")))
        .await
        .unwrap();
    let (ssl, notes): (bool, i64) = tenant_schemas::scope::run(acme.tenant(), async {
        let db = tenancy.connection().await.unwrap();
        db.execute("INSERT INTO notes (body) VALUES ('over TLS')", &[])
            .await
            .unwrap();
        let ssl = db
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let notes = db
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .unwrap()
            .get(0);
        (ssl, notes)
    })
    .await;
    assert!(ssl, "the coordinator connection is not encrypted");
    assert_eq!(notes, 1);
    // The tenant is a distributed schema, placed on a worker.
    let distributed: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_dist_schema WHERE schemaid::regnamespace::text = 'acme'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distributed, 1);
}

/// A server whose TLS rustls cannot speak (TLS 1.2 with RSA key exchange only): as libpq
/// does with `prefer`, a failed handshake is retried in plain text, for the pools and the
/// change listener; `require` fails, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_retries_in_plain_text_when_the_tls_handshake_fails() {
    if std::env::var_os(DATABASE_URL_ENV).is_some() {
        return;
    }
    let cluster = TestCluster::start_with_certificate(
        include_str!("fixtures/x509v1.crt"),
        include_str!("fixtures/x509v1.key"),
        &["ssl_max_protocol_version=TLSv1.2", "ssl_ciphers=AES128-SHA"],
    )
    .unwrap();
    let db = cluster.create_database().await.unwrap();
    let url = format!(
        "postgres://postgres@localhost:{}/{}",
        cluster.port().unwrap(),
        db.name()
    );
    let shown = encrypted(&format!("{url}?sslmode=require"))
        .await
        .unwrap_err();
    println!("require: {shown}");
    assert!(shown.contains("TLS handshake"), "{shown}");
    assert_eq!(encrypted(&url).await, Ok(false));
    assert_eq!(encrypted(&format!("{url}?sslmode=prefer")).await, Ok(false));

    let tenancy = Tenancy::connect(&url).await.unwrap();
    let started = Instant::now();
    while !tenancy.is_listening() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never listening"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listeners: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = current_database() AND NOT s.ssl AND a.query LIKE 'LISTEN%' \
             AND a.client_addr IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(listeners, 1, "the listener in plain text");
}
