//! No password in any Debug, Display or error of the stores: each rendering of a
//! password-bearing URL is checked for the password.

use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;

const SECRET: &str = "hunter2-secret";

fn renderings(e: &flext::Error) -> [String; 3] {
    [format!("{e}"), format!("{e:?}"), format!("{e:#?}")]
}

fn assert_hidden(what: &str, shown: &str) {
    assert!(
        !shown.contains(SECRET),
        "{what} shows the password: {shown}"
    );
}

#[test]
fn the_postgres_builder_and_its_errors_hide_the_password() {
    let url = format!("postgres://root:{SECRET}@127.0.0.1:1/test?password={SECRET}");
    let builder = PgEventStore::builder(url.as_str()).schema("s");
    assert_hidden("Debug of the builder", &format!("{builder:?}"));
    assert!(
        format!("{builder:?}").contains("127.0.0.1"),
        "the host is still shown"
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Nothing listens on port 1: a connection error.
    let refused = runtime
        .block_on(PgEventStore::builder(url.as_str()).connect())
        .expect_err("nothing listens there");
    for shown in renderings(&refused) {
        assert_hidden("a connection error", &shown);
    }
    // An invalid URL: a parse error.
    let bad = format!("postgres://root:{SECRET}@127.0.0.1:notaport/test");
    let invalid = runtime
        .block_on(PgEventStore::builder(bad.as_str()).connect())
        .expect_err("not a URL");
    for shown in renderings(&invalid) {
        assert_hidden("a URL error", &shown);
    }
}

#[test]
fn the_sqlite_url_errors_hide_the_password() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("mysql://root:{SECRET}@db/x");
    let e = runtime
        .block_on(SqliteEventStore::open_url(&url))
        .expect_err("not a SQLite URL");
    assert_eq!(e.reason(), "INVALID_DATABASE_URL");
    for shown in renderings(&e) {
        assert_hidden("the SQLite URL error", &shown);
    }
}

#[test]
fn the_test_script_prints_the_database_url_without_its_password() {
    let script = std::fs::read_to_string("scripts/test").expect("scripts/test");
    let echo = script
        .lines()
        .find(|l| l.contains("PostgreSQL for the tests"))
        .expect("the line that prints the URL");
    let shown = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "DATABASE_URL='postgres://root:{SECRET}@h:5432/db'; {}",
            echo.trim().replace(">&2", "")
        ))
        .output()
        .expect("bash");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("postgres://root:***@h:5432/db"), "{shown}");
    assert_hidden("scripts/test", &shown);
}
