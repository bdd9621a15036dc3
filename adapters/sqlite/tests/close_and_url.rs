//! `close()` leaves the database file whole (a copy of the `.db` alone holds every
//! event) and refuses later writes; `open_url` honours the URL's options.

use flext_domain::{ErrorCode, EventId, ExpectedVersion, NewEvent, Position, StreamId};
use flext_ports::EventStore;
use flext_sqlite::SqliteEventStore;

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("flext-{name}-{}.db", uuid::Uuid::now_v7().simple()))
}

fn event() -> Vec<NewEvent> {
    vec![NewEvent::new(EventId::new(), "t", &b"{}"[..])]
}

#[tokio::test]
async fn after_close_the_database_file_alone_holds_everything() {
    let path = temp("close");
    let store = SqliteEventStore::open(&path).await.expect("open");
    let stream = StreamId::new("s").expect("stream");
    for _ in 0..200 {
        store
            .append(&stream, ExpectedVersion::Any, event())
            .await
            .expect("append");
    }
    store.close().await.expect("close");
    let wal = std::fs::metadata(format!("{}-wal", path.display())).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the write-ahead log is truncated");
    let e = store
        .append(&stream, ExpectedVersion::Any, event())
        .await
        .expect_err("closed");
    assert_eq!(e.reason(), "STORE_CLOSED");
    assert_eq!(e.code(), ErrorCode::Unavailable);

    // The .db file alone, copied elsewhere, holds all 200 events.
    let copy = temp("copy");
    std::fs::copy(&path, &copy).expect("copy the .db alone");
    let reopened = SqliteEventStore::open(&copy).await.expect("open the copy");
    assert_eq!(
        reopened
            .read_all(Position::START, 1_000)
            .await
            .expect("read")
            .len(),
        200
    );
}

#[tokio::test]
async fn open_url_honours_memory_and_read_only() {
    // In memory: works, and nothing lands on disk.
    let cwd = std::env::current_dir().expect("cwd");
    let before: Vec<_> = std::fs::read_dir(&cwd).expect("ls").collect();
    let memory = SqliteEventStore::open_url("sqlite::memory:")
        .await
        .expect("in memory");
    let stream = StreamId::new("m").expect("stream");
    memory
        .append(&stream, ExpectedVersion::NoStream, event())
        .await
        .expect("append in memory");
    assert_eq!(
        memory
            .read_all(Position::START, 10)
            .await
            .expect("read")
            .len(),
        1,
        "readers and the writer share the one in-memory database"
    );
    let after: Vec<_> = std::fs::read_dir(&cwd).expect("ls").collect();
    assert_eq!(
        before.len(),
        after.len(),
        "no file created for an in-memory URL"
    );

    // Read-only: reads work, writes are refused.
    let path = temp("ro");
    let store = SqliteEventStore::open(&path).await.expect("open");
    store
        .append(&stream, ExpectedVersion::NoStream, event())
        .await
        .expect("append");
    store.close().await.expect("close");
    let ro = SqliteEventStore::open_url(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .expect("read-only");
    assert_eq!(
        ro.read_all(Position::START, 10).await.expect("read").len(),
        1
    );
    let e = ro
        .append(&stream, ExpectedVersion::Any, event())
        .await
        .expect_err("read-only");
    assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e:#}");
}
