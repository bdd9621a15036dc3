//! The console over HTTP, on a SQLite file and a PostgreSQL schema, while this process
//! owns the projection: who is let in, what each role may do, CSRF on every action,
//! hostile input escaped, personal fields masked, the pages' contents and the live
//! updates.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use flext::ports::sql::Sql;
use flext::ports::{ProjectionStore, WatchAppends};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext::{EventMetadata, ExpectedVersion, StreamId};
use flext_admin::ops::OperatorStore;
use flext_testkit::operator::{TOTALS, event, seed};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use common::{OPERATOR, OPERATOR_TOKEN, READ_TOKEN, VIEWER, caught_up, config, start};

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

fn with_token(path: &str, token: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request")
}

fn post(path: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut b =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(form.to_owned())).expect("request")
}

fn with_cookie(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .expect("request")
}

/// Signs in; the session cookie (`name=value`).
async fn sign_in(app: &Router, user: (&str, &str)) -> String {
    let a = send(
        app,
        post(
            "/admin/login",
            None,
            &format!("username={}&password={}", user.0, user.1.replace(' ', "+")),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.headers[header::LOCATION], "/admin");
    let set = a.headers[header::SET_COOKIE].to_str().expect("ascii");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().expect("pair").to_owned()
}

/// A page's text with HTML's character references decoded.
fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&#60;", "<")
        .replace("&gt;", ">")
        .replace("&#62;", ">")
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

/// The CSRF token a page put in its forms.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().expect("token").to_owned()
}

async fn the_console<S>(store: S)
where
    S: OperatorStore + ProjectionStore + WatchAppends,
    S::Transaction: Sql + Send,
{
    let data = seed(&store).await;
    // A payload that would run script if a page did not escape it.
    store
        .append(
            &StreamId::new("note-1").expect("id"),
            ExpectedVersion::Any,
            vec![event(
                "test.noted",
                json!({ "text": "<script>alert(1)</script>" }),
                EventMetadata::default(),
            )],
        )
        .await
        .expect("append");
    store
        .mark_personal("test.opened", &["owner"])
        .await
        .expect("mark");
    let healed = Arc::new(AtomicBool::new(false));
    let projections = start(&store, &healed);
    caught_up(&projections, &store).await;
    let app = Router::new().nest(
        "/admin",
        flext_admin::router(store.clone(), config("/admin")).expect("router"),
    );

    // Nobody is let in anonymously: 401 and the sign-in form, on pages and actions.
    for path in ["/admin", "/admin/streams", "/admin/live", "/admin/events/x"] {
        let a = send(&app, get(path)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            a.body.contains("id=\"sign-in\""),
            "{path}: the sign-in form"
        );
        assert!(a.headers.contains_key(header::WWW_AUTHENTICATE));
    }
    let a = send(
        &app,
        post(&format!("/admin/consumers/{TOTALS}/pause"), None, ""),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(&app, with_token("/admin", "not-a-token-at-all-0000")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "an unknown token");
    let a = send(
        &app,
        post("/admin/login", None, "username=ada&password=wrong+password"),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("Unknown user or wrong password."));
    assert!(!a.headers.contains_key(header::SET_COOKIE));

    // A read-only token sees the dashboard: the consumer, its dead letter, degraded.
    let a = send(&app, with_token("/admin", READ_TOKEN)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains(TOTALS), "{}", a.body);
    assert!(a.body.contains("id=\"status\">degraded<"), "{}", a.body);
    assert!(a.body.contains("consumer:test.totals: 1 dead letter<"));
    assert_eq!(a.headers[header::X_FRAME_OPTIONS], "DENY");
    assert!(
        !a.body.contains("Redrive"),
        "no actions for a read-only user"
    );
    // ... but may not act, whatever it sends.
    let mut req = post(&format!("/admin/consumers/{TOTALS}/pause"), None, "");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {READ_TOKEN}").parse().expect("header"),
    );
    assert_eq!(send(&app, req).await.status, StatusCode::FORBIDDEN);

    // Streams: a category, one stream, an event with its owner masked, hostile text
    // escaped, a bad id named.
    let a = send(&app, with_token("/admin/streams?category=acct", READ_TOKEN)).await;
    assert!(a.body.contains(">acct-1<") && a.body.contains(">acct-3<"));
    assert!(!a.body.contains(">other-1<"), "only the category");
    let a = send(&app, with_token("/admin/streams/acct-1", READ_TOKEN)).await;
    assert!(a.body.contains(&data.opened.to_string()));
    let a = send(
        &app,
        with_token(&format!("/admin/events/{}", data.opened), READ_TOKEN),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let text = unescape(&a.body);
    assert!(text.contains(r#""owner": "[REDACTED]""#), "{text}");
    assert!(!text.contains(r#""ada""#), "the owner's name is not shown");
    let note = store
        .list_streams(&flext::ports::StreamQuery {
            prefix: Some("note-".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(note.len(), 1);
    let noted = store
        .read_all(flext::Position(note[0].last_position.get() - 1), 1)
        .await
        .expect("read")
        .remove(0);
    let a = send(
        &app,
        with_token(&format!("/admin/events/{}", noted.event_id), READ_TOKEN),
    )
    .await;
    assert!(!a.body.contains("<script>alert"), "escaped");
    assert!(
        unescape(&a.body).contains("<script>alert(1)</script>"),
        "{}",
        a.body
    );
    let a = send(&app, with_token("/admin/events/%3Cb%3E", READ_TOKEN)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("INVALID_EVENT_ID") && !a.body.contains("<b>"));
    assert!(
        unescape(&a.body).contains(r#""<b>" is not an event id"#),
        "{}",
        a.body
    );
    let a = send(&app, with_token("/admin/streams/nobody-1", READ_TOKEN)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // The business action: the follow-up's tree holds both events; the follow-up's
    // causation is a command (no link), the opened event's page links its action.
    let a = send(
        &app,
        with_token(&format!("/admin/actions/{}", data.follow_up), READ_TOKEN),
    )
    .await;
    assert!(
        a.body.contains(&data.opened.to_string()) && a.body.contains(&data.follow_up.to_string())
    );
    assert!(a.body.contains("2 events"), "{}", a.body);
    // Search: an event id opens the event.
    let a = send(
        &app,
        with_token(&format!("/admin/search?q={}", data.poison), READ_TOKEN),
    )
    .await;
    assert_eq!(
        a.headers[header::LOCATION],
        format!("/admin/events/{}", data.poison).as_str()
    );

    // The live dashboard: server-sent events with the consumer's numbers.
    let res = app
        .clone()
        .oneshot(with_token("/admin/live", READ_TOKEN))
        .await
        .expect("live");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = res.into_body();
    let frame = body
        .frame()
        .await
        .expect("a first update")
        .expect("frame")
        .into_data()
        .expect("data");
    let text = String::from_utf8_lossy(&frame).into_owned();
    assert!(text.starts_with("event: dashboard\n"), "{text}");
    assert!(text.contains("\"c:test.totals:dead\":\"1\""), "{text}");
    // The next update counts what was appended since, without counting the store again.
    let events_in = |text: &str| -> u64 {
        let at = text.find("\"stat-events\":\"").expect("the events tile") + 15;
        text[at..]
            .split('"')
            .next()
            .expect("a number")
            .parse()
            .expect("a count")
    };
    let before = events_in(&text);
    store
        .append(
            &StreamId::new("note-2").expect("id"),
            ExpectedVersion::Any,
            vec![
                event("test.noted", json!({ "n": 1 }), EventMetadata::default()),
                event("test.noted", json!({ "n": 2 }), EventMetadata::default()),
            ],
        )
        .await
        .expect("append");
    let next = loop {
        let frame = body.frame().await.expect("an update").expect("frame");
        if let Ok(data) = frame.into_data() {
            let text = String::from_utf8_lossy(&data).into_owned();
            if text.starts_with("event: dashboard\n") {
                break text;
            }
        }
    };
    assert_eq!(events_in(&next), before + 2, "{next}");
    drop(body);

    // A read-only user signs in: no action forms, and its posts are refused.
    let viewer = sign_in(&app, VIEWER).await;
    let a = send(
        &app,
        with_cookie(&format!("/admin/consumers/{TOTALS}"), &viewer),
    )
    .await;
    assert!(!a.body.contains("id=\"pause\""));
    let csrf = csrf_of(&a.body);
    let a = send(
        &app,
        post(
            &format!("/admin/consumers/{TOTALS}/pause"),
            Some(&viewer),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // An operator: every action needs the session's CSRF token.
    let cookie = sign_in(&app, OPERATOR).await;
    let page = send(
        &app,
        with_cookie(&format!("/admin/consumers/{TOTALS}"), &cookie),
    )
    .await;
    assert!(page.body.contains("id=\"pause\""));
    let csrf = csrf_of(&page.body);
    for form in [
        String::new(),
        "csrf=".to_owned(),
        format!("csrf={}x", &csrf[1..]),
    ] {
        let a = send(
            &app,
            post(
                &format!("/admin/consumers/{TOTALS}/pause"),
                Some(&cookie),
                &form,
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "form {form:?}");
        assert!(a.body.contains("CSRF"));
    }
    assert!(
        !store
            .paused_consumers()
            .await
            .expect("paused")
            .contains(&TOTALS.to_owned())
    );
    let a = send(
        &app,
        post(
            &format!("/admin/consumers/{TOTALS}/pause"),
            Some(&cookie),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        store.paused_consumers().await.expect("paused"),
        vec![TOTALS.to_owned()]
    );
    let page = send(
        &app,
        with_cookie(&format!("/admin/consumers/{TOTALS}"), &cookie),
    )
    .await;
    assert!(
        page.body
            .contains("pause of test.totals: done (carried out by admin-test-owner@"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"resume\""));
    let a = send(
        &app,
        post(
            &format!("/admin/consumers/{TOTALS}/resume"),
            Some(&cookie),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(store.paused_consumers().await.expect("paused").is_empty());
    // A bad rebuild start is named; a token acts without a CSRF token.
    let a = send(
        &app,
        post(
            &format!("/admin/consumers/{TOTALS}/rebuild"),
            Some(&cookie),
            &format!("csrf={csrf}&from=yesterday"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("INVALID_REBUILD_START"));
    let mut req = post(
        &format!("/admin/dead-letters/{TOTALS}/{}/redrive", data.poison),
        None,
        "",
    );
    req.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {OPERATOR_TOKEN}").parse().expect("header"),
    );
    let a = send(&app, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("0 redriven, 1 still failing"), "{}", a.body);
    // Redrive all, from the consumer's page: still failing, still parked.
    let page = send(
        &app,
        with_cookie(&format!("/admin/consumers/{TOTALS}"), &cookie),
    )
    .await;
    assert!(page.body.contains("Redrive all 1"), "{}", page.body);
    let a = send(
        &app,
        post(
            &format!("/admin/consumers/{TOTALS}/redrive"),
            Some(&cookie),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let page = send(
        &app,
        with_cookie(&format!("/admin/consumers/{TOTALS}"), &cookie),
    )
    .await;
    assert!(
        page.body
            .contains("Redrive of test.totals: 0 redriven, 1 still failing"),
        "{}",
        page.body
    );
    assert_eq!(store.dead_letters(TOTALS).await.expect("letters").len(), 1);

    // Healed, the redrive from the page empties the dead letters.
    healed.store(true, Ordering::SeqCst);
    let a = send(
        &app,
        post(
            &format!("/admin/dead-letters/{TOTALS}/{}/redrive", data.poison),
            Some(&cookie),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let page = send(
        &app,
        with_cookie(&format!("/admin/consumers/{TOTALS}"), &cookie),
    )
    .await;
    assert!(
        page.body.contains("1 redriven, 0 still failing"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"no-letters\""));
    assert!(
        store
            .dead_letters(TOTALS)
            .await
            .expect("letters")
            .is_empty()
    );

    // Signing out ends the session.
    let a = send(
        &app,
        post("/admin/logout", Some(&cookie), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        send(&app, with_cookie("/admin", &cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Five wrong passwords lock a user out, even from the right one.
    for _ in 0..5 {
        let a = send(
            &app,
            post("/admin/login", None, "username=bob&password=guess+guess"),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let a = send(
        &app,
        post(
            "/admin/login",
            None,
            &format!(
                "username={}&password={}",
                VIEWER.0,
                VIEWER.1.replace(' ', "+")
            ),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!a.headers.contains_key(header::SET_COOKIE));
    // Another user is not affected.
    sign_in(&app, OPERATOR).await;
    projections.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_on_sqlite() {
    let path =
        std::env::temp_dir().join(format!("flext-admin-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    the_console(store.clone()).await;
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_on_postgres() {
    let store: PgEventStore = flext_testkit::harness::fresh_pg_store("admin").await;
    the_console(store).await;
}

#[tokio::test]
async fn a_console_nobody_may_use_is_refused() {
    let path =
        std::env::temp_dir().join(format!("flext-admin-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    let e = flext_admin::router(store.clone(), flext_admin::AdminConfig::new())
        .expect_err("nobody may use it");
    assert_eq!(e.reason(), "ADMIN_NO_CREDENTIALS");
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}
