//! One service, written once, generic over the store, built and run on SQLite and on
//! PostgreSQL: the repository, the projection (its SQL and migrations), the query over
//! `ReadModels`, the `App` around them and `close` are the same code for both.
#![cfg(all(feature = "macros", feature = "sqlite", feature = "postgres"))]

use std::marker::PhantomData;

use flext::application::{App, Executed, Repository};
use flext::ports::sql::{ReadModels, Sql, SqlStore};
use flext::ports::{
    CommandHandler, Context, Decoded, EventProjection, EventStore, ProjectionStore, QueryHandler,
    SnapshotStore, WatchAppends, messages, sql_args,
};
use flext::sqlite::SqliteEventStore;
use flext::{Aggregate, DomainEvent, Error, EventId, Id, Position};
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct Counter;

#[derive(Clone, Serialize, Deserialize, DomainEvent)]
enum Counted {
    #[event(name = "counter.added")]
    Added(i64),
}

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Event = Counted;
    fn apply(&mut self, _: &Counted) {}
}

messages! {
    command Add(Id<Counter>, i64) -> Position = "counter.add";
    query Total() -> i64 = "counter.total";
}

struct Totals;
impl<T: Sql> EventProjection<T> for Totals {
    type Event = Counted;
    const NAME: &'static str = "counter.totals";
    const MIGRATIONS: &'static [&'static str] =
        &["CREATE TABLE totals (id TEXT PRIMARY KEY, n BIGINT NOT NULL)"];
    async fn apply(&self, tx: &mut T, e: Decoded<'_, Counted>) -> Result<(), Error> {
        let Counted::Added(n) = e.event;
        tx.execute(
            "INSERT INTO totals VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = totals.n + excluded.n",
            sql_args![e.stream_key(), n],
        )
        .await
        .map(drop)
    }
}

struct AddHandler<S>(Repository<Counter, S>);
impl<S: EventStore + SnapshotStore + Send + Sync + 'static> CommandHandler<Add> for AddHandler<S> {
    async fn handle(&self, c: Add, ctx: &Context) -> Result<Position, Error> {
        let done: Executed = self
            .0
            .execute(c.0, ctx, |_| Ok(vec![Counted::Added(c.1)]))
            .await?;
        Ok(done.into())
    }
}

struct TotalHandler(ReadModels, PhantomData<()>);
impl QueryHandler<Total> for TotalHandler {
    async fn handle(&self, _: Total, _: &Context) -> Result<i64, Error> {
        let (n,): (i64,) = self
            .0
            .fetch_one(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM totals",
                sql_args![],
            )
            .await?;
        Ok(n)
    }
}

/// The whole service, for any SQL store.
async fn service<S>(store: S) -> Result<i64, Error>
where
    S: EventStore + SnapshotStore + ProjectionStore + WatchAppends + SqlStore + Clone + Sync,
    S::Transaction: Sql,
{
    let (repo, read) = (Repository::new(store.clone()), store.read_models());
    let app = App::builder(store.clone())
        .projection(Totals)
        .registry(|r| {
            r.command::<Add, _>(AddHandler(repo))
                .query::<Total, _>(TotalHandler(read, PhantomData))
        })
        .start()?;
    let (a, b) = (Id::new(), Id::new());
    app.send(Add(a, 2)).await?;
    app.send(Add(b, 3)).await?;
    let last = app.send(Add(a, 5)).await?;
    let total = app.ask_after(Total(), last).await?;
    app.shutdown().await;
    Ok(total)
}

#[tokio::test]
async fn one_generic_service_runs_on_sqlite() {
    let path = std::env::temp_dir().join(format!("flext-generic-{}.db", EventId::new()));
    let store = SqliteEventStore::builder(&path)
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect()
        .await
        .expect("open");
    assert_eq!(service(store.clone()).await.expect("service"), 10);
    store.close().await.expect("close");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn one_generic_service_runs_on_postgres() {
    let store = flext_testkit::harness::fresh_pg_store("generic").await;
    assert_eq!(service(store.clone()).await.expect("service"), 10);
    store.close().await.expect("close");
}

/// With notifications off, the service still answers (its own appends wake its own
/// projection).
#[tokio::test]
async fn one_generic_service_runs_on_postgres_without_notifications() {
    let store = flext::postgres::PgEventStore::builder(flext_testkit::harness::database_url())
        .schema(format!(
            "flext_t_generic_quiet_{}",
            uuid::Uuid::now_v7().simple()
        ))
        .max_connections(2)
        .notifications(false)
        .connect()
        .await
        .expect("connect");
    assert_eq!(service(store.clone()).await.expect("service"), 10);
    assert_eq!(store.listener_backend_pid(), None, "no LISTEN connection");
    sqlx_drop_schema(&store).await;
    store.close().await.expect("close");
}

async fn sqlx_drop_schema(store: &flext::postgres::PgEventStore) {
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(store.pool())
        .await
        .expect("schema");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(store.pool())
    .await
    .expect("drop");
}
