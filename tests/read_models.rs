//! One read model, one definition, both SQL stores: a typed projection generic over any
//! transaction that runs [`Sql`], its tables made by its `MIGRATIONS`, queried through
//! `ReadModels`, rebuilt, on a SQLite file and on PostgreSQL. Also: read-model errors are
//! typed (unique violation, bad SQL, a column type with no value of its own), and a
//! migration step edited after it ran is refused.
#![cfg(all(feature = "macros", feature = "sqlite", feature = "postgres"))]

use std::time::Duration;

use flext::application::{ProjectionRunner, RebuildFrom};
use flext::ports::sql::{ReadModels, Sql, SqlRow, migrate};
use flext::ports::{
    AppendEvents, Decoded, EventProjection, EventStore, ProjectionStore, WatchAppends, sql_args,
};
use flext::sqlite::SqliteEventStore;
use flext::{DomainEvent, Error, ErrorCode, EventId, EventMetadata, ExpectedVersion, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    #[event(name = "account.opened")]
    Opened { owner: String },
    #[event(name = "account.deposited")]
    Deposited { amount: i64 },
}

/// Balances by account: written once, for every store whose transaction runs SQL.
#[derive(Default)]
struct Balances;

impl<T: Sql + Send> EventProjection<T> for Balances {
    type Event = AccountEvent;

    const NAME: &'static str = "balances";

    const MIGRATIONS: &'static [&'static str] = &[
        "CREATE TABLE rm_balances (account TEXT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT NOT NULL)",
        "ALTER TABLE rm_balances ADD COLUMN deposits BIGINT NOT NULL DEFAULT 0",
    ];

    async fn apply(&self, tx: &mut T, e: Decoded<'_, AccountEvent>) -> Result<(), Error> {
        let account = e.stream_key();
        match e.event {
            AccountEvent::Opened { owner } => {
                tx.execute(
                    "INSERT INTO rm_balances (account, owner, balance) VALUES ($1, $2, 0)",
                    sql_args![account, owner],
                )
                .await?;
            }
            AccountEvent::Deposited { amount } => {
                tx.execute(
                    "UPDATE rm_balances SET balance = balance + $2, deposits = deposits + 1 WHERE account = $1",
                    sql_args![account, amount],
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut T) -> Result<(), Error> {
        tx.execute("DELETE FROM rm_balances", sql_args![]).await?;
        Ok(())
    }
}

#[derive(Debug, PartialEq, Deserialize)]
struct Balance {
    owner: String,
    balance: i64,
    deposits: i64,
}

async fn run<S>(store: S, read: ReadModels, expected_system: &str)
where
    S: EventStore + ProjectionStore + WatchAppends + Clone,
    S::Transaction: Sql,
{
    let none = EventMetadata::default();
    for (name, amounts) in [("alice", vec![10, 20]), ("bob", vec![5])] {
        let stream = StreamId::new(format!("account-{name}")).expect("id");
        let mut events = vec![AccountEvent::Opened {
            owner: name.to_uppercase(),
        }];
        events.extend(
            amounts
                .into_iter()
                .map(|amount| AccountEvent::Deposited { amount }),
        );
        store
            .append_events(&stream, ExpectedVersion::NoStream, &events, &none)
            .await
            .expect("append");
    }
    let head = store
        .append_events(
            &StreamId::new("account-alice").expect("id"),
            ExpectedVersion::Any,
            &[AccountEvent::Deposited { amount: 12 }],
            &none,
        )
        .await
        .expect("append")
        .last_position()
        .expect("position");
    let projections = ProjectionRunner::new(store.clone())
        .register(Balances)
        .expect("register")
        .start();
    projections
        .wait_for("balances", head, Duration::from_secs(30))
        .await
        .expect("caught up");

    // Tuples by position, structs by column name, a missing row as None.
    let rows: Vec<(String, i64)> = read
        .fetch(
            "SELECT account, balance FROM rm_balances ORDER BY account",
            sql_args![],
        )
        .await
        .expect("rows");
    assert_eq!(
        rows,
        [("alice".to_owned(), 42), ("bob".to_owned(), 5)],
        "{}",
        read.system()
    );
    let row: SqlRow = read
        .fetch_one(
            "SELECT owner, balance, deposits FROM rm_balances WHERE account = $1",
            sql_args!["alice"],
        )
        .await
        .expect("alice");
    assert_eq!(
        row.deserialize::<Balance>().expect("struct"),
        Balance {
            owner: "ALICE".into(),
            balance: 42,
            deposits: 3
        }
    );
    assert_eq!(row.get::<i64>("deposits").expect("by name"), 3);
    let missing: Option<(i64,)> = read
        .fetch_optional(
            "SELECT balance FROM rm_balances WHERE account = $1",
            sql_args!["carol"],
        )
        .await
        .expect("query");
    assert_eq!(missing, None);
    let (total,): (i64,) = read
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM rm_balances",
            sql_args![],
        )
        .await
        .expect("sum");
    assert_eq!(total, 47);

    // A rebuild from the start empties the model and builds the same thing again.
    projections
        .rebuild("balances", RebuildFrom::Start)
        .await
        .expect("rebuild");
    projections
        .wait_for("balances", head, Duration::from_secs(30))
        .await
        .expect("rebuilt");
    let again: Vec<(String, i64)> = read
        .fetch(
            "SELECT account, balance FROM rm_balances ORDER BY account",
            sql_args![],
        )
        .await
        .expect("rows");
    assert_eq!(again, rows);
    projections.shutdown().await;

    // Errors are flext errors that say what went wrong.
    let mut tx = store.begin().await.expect("tx");
    let e = tx
        .execute(
            "INSERT INTO rm_balances (account, owner, balance) VALUES ($1, $2, 0)",
            sql_args!["alice", "again"],
        )
        .await
        .expect_err("duplicate key");
    assert_eq!(
        (e.code(), e.reason()),
        (ErrorCode::AlreadyExists, "UNIQUE_VIOLATION"),
        "{e}"
    );
    drop(tx);
    let e = read
        .fetch::<(i64,)>("SELEC 1", sql_args![])
        .await
        .expect_err("bad SQL");
    assert_eq!(
        (e.code(), e.reason()),
        (ErrorCode::InvalidArgument, "BAD_SQL"),
        "{e}"
    );
    assert!(e.message().contains("SELEC 1"), "{e}");
    let e = read
        .fetch::<(String,)>("SELECT balance FROM rm_balances", sql_args![])
        .await
        .expect_err("an integer is not text");
    assert_eq!(e.reason(), "COLUMN_TYPE_MISMATCH", "{e}");
    assert!(e.message().contains("balance"), "{e}");

    // The handle names its database; statements report the rows they changed.
    let system = read.system();
    assert_eq!(system, expected_system);
    assert_eq!(format!("{read:?}"), format!("ReadModels({system:?})"));
    let changed = read
        .execute("UPDATE rm_balances SET deposits = deposits", sql_args![])
        .await
        .expect("update");
    assert_eq!(changed, 2, "both accounts' rows were touched");

    // Each step is recorded under its number, from 1.
    let steps: Vec<(i64,)> = read
        .fetch(
            "SELECT version FROM flext_read_model_migrations WHERE name = $1 ORDER BY version",
            sql_args!["balances"],
        )
        .await
        .expect("migrations");
    assert_eq!(steps, [(1,), (2,)]);

    // A step edited after it ran is refused; a step added runs once.
    let mut tx = store.begin().await.expect("tx");
    let e = migrate(
        &mut tx,
        "balances",
        &["CREATE TABLE rm_balances (account TEXT PRIMARY KEY)"],
    )
    .await
    .expect_err("edited");
    assert_eq!(e.reason(), "MIGRATION_CHANGED", "{e}");
    drop(tx);
}

#[tokio::test]
async fn one_read_model_definition_runs_on_sqlite() {
    let path = std::env::temp_dir().join(format!("flext-rm-{}.db", EventId::new()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    let read = store.read_models();
    run(store, read, "sqlite").await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn one_read_model_definition_runs_on_postgres() {
    let store = flext_testkit::harness::fresh_pg_store("read_models").await;
    let read = store.read_models();
    let e = read
        .fetch::<(i64,)>("SELECT CAST(1 AS NUMERIC)", sql_args![])
        .await
        .expect_err("NUMERIC has no value of its own");
    assert_eq!(e.reason(), "UNSUPPORTED_COLUMN_TYPE", "{e}");
    assert!(e.message().contains("CAST"), "{e}");
    run(store, read, "postgresql").await;
}
