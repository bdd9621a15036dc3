//! The console in a real browser: headless Chromium driven through ChromeDriver signs
//! in, opens a stream, an event, follows its correlation to the business action, and
//! redrives a dead letter the owner (this process) then handles; from the page, a
//! request without a session gets 401 and an action without the CSRF token 403.
//! Screenshots of each step land in `target/tmp/admin-screenshots/`.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`;
//! `./scripts/test` installs them). Their absence fails the test.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use flext::ports::{ControlStore, ProjectionStore};
use flext::sqlite::SqliteEventStore;
use flext_testkit::operator::{TOTALS, seed};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use common::{OPERATOR, caught_up, config, start};

/// The browser's driver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn program(env: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_owned()));
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium and chromium-driver (./scripts/test does), \
         or set {env}",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts ChromeDriver and a headless Chromium session.
async fn browser() -> (Driver, Client) {
    let chromedriver = program("FLEXT_CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = program("FLEXT_CHROMIUM", "/usr/bin/chromium");
    let port = free_port();
    let driver = Driver(
        Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--lang=en-US",
            ],
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("an object")
    };
    // ChromeDriver answers once it has started; try until then.
    let mut tries = 0;
    loop {
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps.clone());
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(client) => return (driver, client),
            Err(e) => {
                tries += 1;
                assert!(tries < 200, "ChromeDriver did not answer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Saves a screenshot of the page as `NN-name.png`.
async fn shot(client: &Client, name: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

async fn text(client: &Client) -> String {
    client
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text")
}

/// The status of a `fetch` the page makes (same origin, with its cookies).
async fn fetch_status(client: &Client, method: &str, path: &str, body: &str) -> u64 {
    client
        .execute_async(
            "const [method, path, body, done] = arguments; \
             fetch(path, { method, body: method === 'GET' ? undefined : body, \
               headers: method === 'GET' ? {} : { 'Content-Type': 'application/x-www-form-urlencoded' }, \
               redirect: 'manual' }) \
               .then(r => done(r.status), e => done(String(e)));",
            vec![json!(method), json!(path), json!(body)],
        )
        .await
        .expect("fetch")
        .as_u64()
        .expect("a status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_in_a_browser() {
    let path = std::env::temp_dir().join(format!(
        "flext-admin-browser-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let store = SqliteEventStore::open(&path).await.expect("open");
    let data = seed(&store).await;
    store
        .mark_personal("test.opened", &["owner"])
        .await
        .expect("mark");
    let healed = Arc::new(AtomicBool::new(false));
    let projections = start(&store, &healed);
    caught_up(&projections, &store).await;

    let app = axum::Router::new().nest(
        "/admin",
        flext_admin::router(store.clone(), config("/admin")).expect("router"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/admin", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (_driver, client) = browser().await;

    // Not signed in: the sign-in form, and 401 for the page itself.
    client.goto(&base).await.expect("open");
    client
        .wait()
        .for_element(Locator::Id("sign-in"))
        .await
        .expect("the sign-in form");
    assert_eq!(
        fetch_status(&client, "GET", "/admin/streams", "").await,
        401
    );
    shot(&client, "01-sign-in").await;

    // Sign in: the dashboard, with the consumer, its dead letter and the alert.
    client
        .find(Locator::Id("username"))
        .await
        .expect("user field")
        .send_keys(OPERATOR.0)
        .await
        .expect("type");
    client
        .find(Locator::Id("password"))
        .await
        .expect("password field")
        .send_keys(OPERATOR.1)
        .await
        .expect("type");
    client
        .find(Locator::Id("sign-in"))
        .await
        .expect("button")
        .click()
        .await
        .expect("sign in");
    client
        .wait()
        .for_element(Locator::Id("consumers"))
        .await
        .expect("the dashboard");
    let dashboard = text(&client).await;
    assert!(dashboard.contains(TOTALS), "{dashboard}");
    assert!(
        dashboard.contains("consumer:test.totals: 1 dead letter"),
        "{dashboard}"
    );
    // The live updates connect.
    let mut tries = 0;
    while client
        .find(Locator::Id("live"))
        .await
        .expect("live")
        .text()
        .await
        .expect("text")
        != "connected"
    {
        tries += 1;
        assert!(tries < 100, "the live updates never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(&client, "02-dashboard").await;

    // An action without the CSRF token, posted from the signed-in page: 403.
    assert_eq!(
        fetch_status(
            &client,
            "POST",
            &format!("/admin/consumers/{TOTALS}/pause"),
            ""
        )
        .await,
        403
    );
    assert!(store.paused_consumers().await.expect("paused").is_empty());

    // Streams → acct-1 → its event (owner masked) → the business action.
    client
        .find(Locator::LinkText("Streams"))
        .await
        .expect("nav")
        .click()
        .await
        .expect("click");
    client
        .find(Locator::LinkText("acct-1"))
        .await
        .expect("the stream")
        .click()
        .await
        .expect("click");
    client
        .wait()
        .for_element(Locator::Id("events"))
        .await
        .expect("the stream page");
    shot(&client, "03-stream").await;
    client
        .find(Locator::LinkText(&data.opened.to_string()))
        .await
        .expect("the event")
        .click()
        .await
        .expect("click");
    let payload = client
        .wait()
        .for_element(Locator::Id("payload"))
        .await
        .expect("the event page")
        .text()
        .await
        .expect("payload");
    assert!(payload.contains(r#""owner": "[REDACTED]""#), "{payload}");
    assert!(payload.contains(r#""limit": 100"#), "{payload}");
    shot(&client, "04-event").await;
    client
        .find(Locator::Id("correlation"))
        .await
        .expect("the correlation link")
        .click()
        .await
        .expect("click");
    let tree = client
        .wait()
        .for_element(Locator::Id("tree"))
        .await
        .expect("the action")
        .text()
        .await
        .expect("tree");
    assert!(
        tree.contains("test.opened on acct-1") && tree.contains("test.credited on acct-2"),
        "{tree}"
    );
    shot(&client, "05-business-action").await;

    // Dead letters → redrive, once the projection is fixed: gone from the page.
    healed.store(true, Ordering::SeqCst);
    client
        .find(Locator::LinkText("Dead letters"))
        .await
        .expect("nav")
        .click()
        .await
        .expect("click");
    let letters = client
        .wait()
        .for_element(Locator::Id("letters"))
        .await
        .expect("the dead letters")
        .text()
        .await
        .expect("letters");
    assert!(letters.contains("POISON"), "{letters}");
    shot(&client, "06-dead-letters").await;
    client
        .find(Locator::Css("button.redrive"))
        .await
        .expect("redrive")
        .click()
        .await
        .expect("click");
    let flash = client
        .wait()
        .for_element(Locator::Id("flash"))
        .await
        .expect("the outcome")
        .text()
        .await
        .expect("flash");
    assert!(flash.contains("1 redriven, 0 still failing"), "{flash}");
    // Back on the dead letters page, which has none left.
    let url = client.current_url().await.expect("url");
    assert!(url.path().ends_with("/admin/dead-letters"), "{url}");
    client
        .find(Locator::Id("no-letters"))
        .await
        .expect("no dead letters left");
    assert!(
        store
            .dead_letters(TOTALS)
            .await
            .expect("letters")
            .is_empty()
    );
    shot(&client, "07-redriven").await;

    client.close().await.expect("close the browser");
    server.abort();
    projections.shutdown().await;
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}
