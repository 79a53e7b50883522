//! The demo as a person uses it, in headless Chromium driven over WebDriver: sign up
//! through the form, follow the link to the new tenant's own site, add a note there, and
//! find it absent from another tenant's site; the operator view lists the new tenant.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `scripts/test` installs them).

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use demo_support::DemoDatabase;
use fantoccini::{Client, ClientBuilder, Locator};

/// `chromedriver`, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
        .map(|p| (*p).to_owned())
}

fn start_driver() -> Driver {
    let bin =
        find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]).unwrap_or_else(|| {
            panic!(
                "chromedriver not found: install Chromium and its WebDriver \
             (`apt-get install chromium chromium-driver`; scripts/test does)"
            )
        });
    // A port held until chromedriver is started on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

async fn browser(driver: &Driver) -> Client {
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"])
        .expect("chromium not found (`apt-get install chromium`)");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

/// The text of the first element matching `css` once `done` holds for it: a click that
/// submits a form or follows a link returns before the next page is there, so every check
/// waits (up to 15 s) rather than reading whatever page is current.
async fn wait_text(client: &Client, css: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if done(&text) {
                    return text;
                }
                last = text;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "`{css}` never matched; last text: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the browser is at `url`.
async fn wait_url(client: &Client, url: &str) {
    let started = Instant::now();
    loop {
        let now = client.current_url().await.unwrap();
        if now.as_str() == url {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still at {now}, not {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_add_a_note_and_see_it_only_on_the_own_site() {
    let db = DemoDatabase::from_env().await.unwrap();
    let tenancy = saas_demo::tenancy(&db).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, saas_demo::app(tenancy, port)).await });

    let driver = start_driver();
    let client = browser(&driver).await;
    let outcome = async {
        // The public site: sign up through the form.
        client
            .goto(&format!("http://localhost:{port}/"))
            .await
            .unwrap();
        let slug = client.find(Locator::Css("input[name=slug]")).await.unwrap();
        slug.send_keys("initech").await.unwrap();
        let name = client.find(Locator::Css("input[name=name]")).await.unwrap();
        name.send_keys("Initech").await.unwrap();
        client
            .find(Locator::Css("form[action='/signup'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(&client, "h1", |t| t == "Tenant created").await;

        // The link is a real link to the tenant's own host.
        client
            .find(Locator::Css("a#site"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_url(&client, &format!("http://initech.localhost:{port}/")).await;
        wait_text(&client, "h1", |t| t == "Initech").await;

        // A note added through the tenant's form shows on its page.
        let body = client.find(Locator::Css("input[name=body]")).await.unwrap();
        body.send_keys("initech's launch plan").await.unwrap();
        client
            .find(Locator::Css("form[action='/notes'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(&client, "ul#notes", |t| t.contains("initech's launch plan")).await;

        // Another tenant's site does not show it.
        client
            .goto(&format!("http://acme.localhost:{port}/"))
            .await
            .unwrap();
        wait_text(&client, "h1", |t| t == "Acme Inc.").await;
        let page = wait_text(&client, "body", |_| true).await;
        assert!(!page.contains("launch plan"), "{page}");

        // The operator view on the public site lists the new tenant with its schema,
        // domain, migration version and state; the tenant links carry the port.
        client
            .goto(&format!("http://localhost:{port}/"))
            .await
            .unwrap();
        let operator = wait_text(&client, "table#operator", |t| t.contains("initech")).await;
        let row = operator
            .lines()
            .find(|l| l.starts_with("initech"))
            .unwrap_or_else(|| panic!("no initech row:\n{operator}"));
        assert!(row.contains("initech.localhost"), "{row}");
        assert!(row.contains("active"), "{row}");
        assert!(row.contains(" 1 "), "{row}");
        // Its schema's size (a table with a note, its index and the history): measured.
        assert!(
            row.trim_end().ends_with("kB") && !row.contains(" 0 kB"),
            "{row}"
        );
        let link = client
            .find(Locator::Css("ul#tenants a[href*='initech']"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap();
        assert_eq!(
            link.as_deref(),
            Some(format!("http://initech.localhost:{port}/").as_str())
        );
    };
    // Close the browser whatever happened, then report.
    let result = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    client.close().await.ok();
    drop(driver);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
