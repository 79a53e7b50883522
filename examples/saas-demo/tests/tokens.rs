//! The demo's API tokens over real HTTP: a token issued on acme's site works there and is
//! answered 403 on globex's, whose notes it neither reads nor writes; requests without a
//! token, and a token nobody issued, are served as anonymous.

#![allow(clippy::unwrap_used)]

use demo_support::DemoDatabase;
use tenant_schemas::testing::TenantClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_works_only_on_the_site_that_issued_it() {
    let db = DemoDatabase::from_env().await.unwrap();
    let tenancy = saas_demo::tenancy(&db).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, saas_demo::app(tenancy, addr.port())).await });
    let acme = TenantClient::new(addr, "acme.localhost");
    let globex = TenantClient::new(addr, "globex.localhost");

    let r = acme
        .post("/api/token", "application/json", b"")
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    let issued: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(issued["tenant"], "acme");
    let bearer = format!("Bearer {}", issued["token"].as_str().unwrap());
    let json = ("content-type", "application/json");

    let r = acme
        .send(
            "POST",
            "/api/notes",
            &[json, ("authorization", &bearer)],
            br#"{"body":"acme, with its token"}"#,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "acme's token on acme's site: {r:?}");
    let r = acme
        .send("GET", "/api/notes", &[("authorization", &bearer)], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("acme, with its token"), "{r:?}");

    let globex_before = globex.get("/api/notes").await.unwrap();
    assert_eq!(
        globex_before.status, 200,
        "no token: anonymous: {globex_before:?}"
    );
    let r = globex
        .send("GET", "/api/notes", &[("authorization", &bearer)], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "acme's token on globex's site: {r:?}");
    assert!(r.text().contains("another site"), "{r:?}");
    let r = globex
        .send(
            "POST",
            "/api/notes",
            &[json, ("authorization", &bearer)],
            br#"{"body":"written with acme's token"}"#,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        globex.get("/api/notes").await.unwrap().text(),
        globex_before.text()
    );

    let r = globex
        .send(
            "GET",
            "/api/notes",
            &[("authorization", "Bearer not-issued")],
            b"",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "a token nobody issued names nobody: {r:?}");
}
