//! Tenants in shared tables: the layout the first tenant's connect leaves, what the
//! database refuses, converting a schema that had no tenants, and a read model confined
//! the same way. (The whole conformance suite runs on this layout in
//! `conformance_shared.rs`.)

use flext_domain::{EventId, ExpectedVersion, NewEvent, Position, StreamId, TenantId};
use flext_ports::{EventStore, TenantStores};
use flext_postgres::{PgEventStore, PgSharedTenantStores};
use flext_testkit::harness::{database_url, fresh_shared_schema};

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("a valid tenant id")
}

fn one() -> Vec<NewEvent> {
    vec![NewEvent::new(EventId::new(), "t", &b"{}"[..])]
}

async fn admin() -> sqlx::PgPool {
    sqlx::PgPool::connect(&database_url())
        .await
        .expect("connect as the DATABASE_URL user")
}

async fn drop_schema(schema: &str) {
    let admin = admin().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&admin)
    .await
    .expect("drop the test schema");
}

/// Every flext table but the read models' migrations: a `tenant_id` column, every key
/// and B-tree index led by it, row-level security enabled and forced.
#[tokio::test]
async fn every_table_is_confined_and_every_index_led_by_the_tenant() {
    let (schema, url) = fresh_shared_schema("shared_layout").await;
    let tenants = PgSharedTenantStores::new(&url).schema(&schema);
    tenants.store(&tenant("acme")).await.unwrap();
    let admin = admin().await;
    let tables: Vec<(String, bool, bool, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                        AND a.attname = 'tenant_id'),
                EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
         FROM pg_class c WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r'
           AND starts_with(c.relname, 'flext_') ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(tables.len() >= 20, "{tables:?}");
    for (name, rls, forced, column, policy) in &tables {
        let shared = name == "flext_read_model_migrations";
        assert_eq!(
            (*rls, *forced, *column, *policy),
            (!shared, !shared, !shared, !shared),
            "{name}"
        );
    }
    let not_led: Vec<String> = sqlx::query_scalar(
        "SELECT ic.relname::text FROM pg_index i
         JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
         JOIN pg_am am ON am.oid = ic.relam
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
         WHERE t.relnamespace = $1::regnamespace AND starts_with(t.relname, 'flext_')
           AND t.relname <> 'flext_read_model_migrations' AND am.amname = 'btree'
           AND a.attname <> 'tenant_id'",
    )
    .bind(&schema)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(not_led.is_empty(), "{not_led:?}");
    // Converged: another tenant's first connect finds nothing left to change.
    let before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relnamespace = $1::regnamespace")
            .bind(&schema)
            .fetch_one(&admin)
            .await
            .unwrap();
    let later = PgEventStore::builder(&url)
        .schema(&schema)
        .tenant(tenant("globex"))
        .migrate(false)
        .connect()
        .await
        .unwrap();
    later.close().await.unwrap();
    tenants.store(&tenant("initech")).await.unwrap();
    let after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relnamespace = $1::regnamespace")
            .bind(&schema)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(before, after, "no index rebuilt by a later connect");
    tenants.close().await.unwrap();
    drop_schema(&schema).await;
}

/// Row-level security does not bind a superuser: a tenant's store refuses to connect as
/// one rather than share tables it could not keep apart.
#[tokio::test]
async fn a_role_that_bypasses_row_security_is_refused() {
    let (schema, _) = fresh_shared_schema("shared_super").await;
    let e = PgEventStore::builder(database_url())
        .schema(&schema)
        .tenant(tenant("acme"))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "TENANCY_NOT_ENFORCED", "{e}");
    assert!(e.message().contains("acme"), "{e}");
    drop_schema(&schema).await;
}

/// The pool a tenant's store hands out for SQL of one's own is confined too: it sees
/// only the tenant's rows, changes no other's, and cannot write a row for another.
/// A connection naming no tenant sees nothing and writes nothing.
#[tokio::test]
async fn raw_sql_through_a_tenants_pool_is_confined() {
    let (schema, url) = fresh_shared_schema("shared_raw").await;
    let tenants = PgSharedTenantStores::new(&url).schema(&schema);
    let (a, b) = (
        tenants.store(&tenant("acme")).await.unwrap(),
        tenants.store(&tenant("globex")).await.unwrap(),
    );
    let s = StreamId::new("order-1").unwrap();
    a.append(&s, ExpectedVersion::NoStream, one())
        .await
        .unwrap();
    a.append(&s, ExpectedVersion::Any, one()).await.unwrap();
    b.append(&s, ExpectedVersion::NoStream, one())
        .await
        .unwrap();

    let count = |store: PgEventStore| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM flext_events")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    assert_eq!(count(a.clone()).await, 2);
    assert_eq!(count(b.clone()).await, 1);
    let changed = sqlx::query("UPDATE flext_events SET payload = '\\x00'::bytea")
        .execute(b.pool())
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1, "only globex's own event");
    let e = sqlx::query(
        "INSERT INTO flext_checkpoints (tenant_id, name, position) VALUES ('acme', 'x', 0)",
    )
    .execute(b.pool())
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("row-level security"),
        "a row for another tenant is refused: {e}"
    );
    assert_eq!(
        a.read_all(Position::START, 10).await.unwrap()[0]
            .payload
            .as_ref(),
        b"{}",
        "acme's events untouched"
    );

    let untenanted = PgEventStore::builder(&url)
        .schema(&schema)
        .migrate(false)
        .connect()
        .await
        .unwrap();
    assert_eq!(count(untenanted.clone()).await, 0);
    let e = untenanted
        .append(&s, ExpectedVersion::Any, one())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("flext.tenant") || format!("{e:?}").contains("flext.tenant"),
        "{e:?}"
    );
    untenanted.close().await.unwrap();
    tenants.close().await.unwrap();
    drop_schema(&schema).await;
}

/// A schema that had no tenants is converted on the first tenant's connect: its rows stay
/// (under no tenant, so no tenant sees them) and the tenant starts empty. With migrations
/// off, a schema not yet converted is refused.
#[tokio::test]
async fn a_schema_without_tenants_is_converted_and_keeps_its_rows() {
    let (schema, url) = fresh_shared_schema("shared_convert").await;
    let plain = PgEventStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    let s = StreamId::new("order-1").unwrap();
    plain
        .append(&s, ExpectedVersion::NoStream, one())
        .await
        .unwrap();
    plain.close().await.unwrap();

    let e = PgEventStore::builder(&url)
        .schema(&schema)
        .tenant(tenant("acme"))
        .migrate(false)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "TENANCY_LAYOUT_MISSING", "{e}");

    let acme = PgEventStore::builder(&url)
        .schema(&schema)
        .tenant(tenant("acme"))
        .connect()
        .await
        .unwrap();
    assert!(acme.read_all(Position::START, 10).await.unwrap().is_empty());
    acme.append(&s, ExpectedVersion::NoStream, one())
        .await
        .unwrap();
    let admin = admin().await;
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT tenant_id, stream_id FROM \"{schema}\".flext_events ORDER BY position"
    )))
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (String::new(), "order-1".to_owned()),
            ("acme".to_owned(), "order-1".to_owned())
        ]
    );
    acme.close().await.unwrap();
    drop_schema(&schema).await;
}

/// A read model of one's own is confined the same way: a `tenant_id` column defaulting
/// to the connection's tenant and one policy (the recipe in `flext_postgres::shared`).
#[tokio::test]
async fn a_read_model_with_the_policy_is_confined_too() {
    let (schema, url) = fresh_shared_schema("shared_read_model").await;
    let tenants = PgSharedTenantStores::new(&url).schema(&schema);
    let (a, b) = (
        tenants.store(&tenant("acme")).await.unwrap(),
        tenants.store(&tenant("globex")).await.unwrap(),
    );
    for statement in [
        "CREATE TABLE balances (
             tenant_id TEXT NOT NULL DEFAULT current_setting('flext.tenant'),
             account TEXT NOT NULL, balance BIGINT NOT NULL,
             PRIMARY KEY (tenant_id, account))",
        "ALTER TABLE balances ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE balances FORCE ROW LEVEL SECURITY",
        "CREATE POLICY tenant ON balances
             USING (tenant_id = current_setting('flext.tenant', true))",
    ] {
        sqlx::query(statement).execute(a.pool()).await.unwrap();
    }
    let models = a.read_models();
    models
        .execute(
            "INSERT INTO balances (account, balance) VALUES ($1, $2)",
            vec!["acc-1".into(), 10i64.into()],
        )
        .await
        .unwrap();
    b.read_models()
        .execute(
            "INSERT INTO balances (account, balance) VALUES ($1, $2)",
            vec!["acc-1".into(), 99i64.into()],
        )
        .await
        .unwrap();
    let mine: Vec<(i64,)> = models
        .fetch("SELECT balance FROM balances", vec![])
        .await
        .unwrap();
    assert_eq!(mine, vec![(10,)], "acme sees its own balance only");
    tenants.close().await.unwrap();
    drop_schema(&schema).await;
}
