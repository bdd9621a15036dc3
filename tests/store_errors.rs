//! Errors that tell the cause: a server that is away is UNAVAILABLE (retryable) and says
//! so fast; configuration mistakes get the fitting code and name what is wrong; `{:#}`
//! shows the cause chain.

use std::time::Duration;

use flext::ErrorCode;
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

fn url_with(database: &str, user: Option<&str>) -> String {
    let base = flext_testkit::harness::database_url();
    let (scheme_auth, rest) = base.split_once('@').expect("user@host in DATABASE_URL");
    let host = rest.split('/').next().expect("host");
    let auth = match user {
        Some(u) => format!("postgres://{u}"),
        None => scheme_auth.to_owned(),
    };
    format!("{auth}@{host}/{database}")
}

#[test]
fn postgres_errors_name_their_cause() {
    let rt = runtime();
    let connect = |url: String| {
        rt.block_on(
            PgEventStore::builder(url)
                .acquire_timeout(Duration::from_secs(2))
                .connect(),
        )
        .expect_err("refused")
    };
    let away = connect("postgres://root@127.0.0.1:1/test".into());
    assert_eq!(away.code(), ErrorCode::Unavailable, "{away:#}");
    assert!(away.is_transient());
    assert!(
        format!("{away:#}").len() > away.to_string().len(),
        "{{:#}} adds the cause: {away:#}"
    );

    let missing = connect(url_with("flext_no_such_database", None));
    assert_eq!(missing.code(), ErrorCode::NotFound, "{missing:#}");
    assert_eq!(missing.reason(), "DATABASE_NOT_FOUND");
    assert!(
        missing.message().contains("flext_no_such_database"),
        "{missing}"
    );

    let nobody = connect(url_with("test", Some("flext_no_such_role")));
    assert_eq!(nobody.code(), ErrorCode::PermissionDenied, "{nobody:#}");
    assert!(nobody.message().contains("flext_no_such_role"), "{nobody}");

    let mysql = connect("mysql://root@127.0.0.1/test".into());
    assert_eq!(mysql.code(), ErrorCode::InvalidArgument, "{mysql}");
    assert!(mysql.message().contains("mysql"), "{mysql}");
}

#[test]
fn sqlite_errors_name_their_cause() {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("flext-errors-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");

    let e = rt
        .block_on(SqliteEventStore::open(&dir))
        .expect_err("a directory");
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert_eq!(e.reason(), "PATH_IS_A_DIRECTORY");

    let e = rt
        .block_on(SqliteEventStore::open(
            dir.join("missing").join("events.db"),
        ))
        .expect_err("no such directory");
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert_eq!(e.reason(), "DIRECTORY_NOT_FOUND");

    let file = dir.join("ro.db");
    drop(rt.block_on(SqliteEventStore::open(&file)).expect("create"));
    let mut perms = std::fs::metadata(&file).expect("meta").permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&file, perms).expect("chmod");
    let e = rt
        .block_on(SqliteEventStore::open(&file))
        .expect_err("read-only");
    assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e}");

    let e = rt
        .block_on(SqliteEventStore::open_url("mysql://db/x"))
        .expect_err("not SQLite");
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
