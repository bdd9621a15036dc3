//! Crypto-shredding end to end, on a SQLite file and a PostgreSQL schema: append,
//! snapshot, project, park a dead letter, archive, outbox, idempotency record; forget two
//! subjects; rebuild. Then a scan of every table (PostgreSQL) and every byte of the
//! database files (SQLite) finds none of the forgotten subjects' personal values, while
//! the subject that was not forgotten reads back whole and every other field is intact.

use std::sync::Arc;
use std::time::Duration;

use flext_application::{
    DataProtection, FORGOTTEN_HEADER, MasterKey, PoisonPolicy, ProjectionOptions, ProjectionRunner,
    Protected, Repository, Revealing,
};
use flext_domain::{Aggregate, Error, EventMetadata, Id, RecordedEvent, StreamVersion};
use flext_ports::sql::{Sql, SqlStore, migrate};
use flext_ports::{
    Claim, Context, EventStore, IdempotencyRecord, IdempotencyStore, KeyStore, OutboxMessage,
    OutboxStore, Projection, ProjectionStore, ReadDirection, RebuildFrom, SnapshotStore,
    StreamLifecycle, WatchAppends, sql_args,
};
use flext_postgres::PgEventStore;
use flext_sqlite::SqliteEventStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flext::DomainEvent)]
enum CustomerEvent {
    #[event(name = "customer.registered")]
    Registered {
        #[personal(subject)]
        customer: String,
        #[personal(replacement = "[erased]")]
        email: String,
        #[personal(replacement = "[erased]")]
        name: String,
        plan: String,
    },
    #[event(name = "customer.email_changed")]
    EmailChanged {
        #[personal(subject)]
        customer: String,
        #[personal(replacement = "[erased]")]
        email: String,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Customer {
    email: String,
    name: String,
    plan: String,
}

impl Aggregate for Customer {
    const TYPE: &'static str = "customer";
    type Event = CustomerEvent;
    fn apply(&mut self, e: &CustomerEvent) {
        match e {
            CustomerEvent::Registered {
                email, name, plan, ..
            } => {
                self.email = email.clone();
                self.name = name.clone();
                self.plan = plan.clone();
            }
            CustomerEvent::EmailChanged { email, .. } => self.email = email.clone(),
        }
    }
}

/// A read model of customers; registrations on the plan "poison" fail (and are parked).
struct Customers;

impl<T: Sql + Send> Projection<T> for Customers {
    fn name(&self) -> &str {
        "customers"
    }

    async fn setup(&self, tx: &mut T) -> Result<(), Error> {
        migrate(
            tx,
            "customers",
            &[
                "CREATE TABLE customers (id TEXT PRIMARY KEY, email TEXT NOT NULL, \
               name TEXT NOT NULL, plan TEXT NOT NULL)",
            ],
        )
        .await
    }

    async fn reset(&self, tx: &mut T) -> Result<(), Error> {
        tx.execute("DELETE FROM customers", vec![])
            .await
            .map(|_| ())
    }

    async fn handle(&self, tx: &mut T, event: &RecordedEvent) -> Result<(), Error> {
        let e: CustomerEvent = serde_json::from_slice(&event.payload)
            .map_err(|e| Error::data_loss("BAD_EVENT", e.to_string()))?;
        match e {
            CustomerEvent::Registered { plan, .. } if plan == "poison" => Err(
                Error::failed_precondition("POISON_PLAN", "this plan cannot be projected"),
            ),
            CustomerEvent::Registered {
                customer,
                email,
                name,
                plan,
            } => tx
                .execute(
                    "INSERT INTO customers (id, email, name, plan) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO UPDATE SET email = excluded.email, \
                     name = excluded.name, plan = excluded.plan",
                    sql_args![customer, email, name, plan],
                )
                .await
                .map(|_| ()),
            CustomerEvent::EmailChanged { customer, email } => tx
                .execute(
                    "UPDATE customers SET email = $1 WHERE id = $2",
                    sql_args![email, customer],
                )
                .await
                .map(|_| ()),
        }
    }
}

fn register(customer: &str, email: &str, name: &str, plan: &str) -> CustomerEvent {
    CustomerEvent::Registered {
        customer: customer.into(),
        email: email.into(),
        name: name.into(),
        plan: plan.into(),
    }
}

/// The personal values of the subjects the test forgets.
const FORGOTTEN: [&str; 8] = [
    "ada.lovelace@example.org",
    "ada@analytical.example",
    "Ada Lovelace",
    "cy.poison@example.org",
    "Cyrus Poisoned",
    "dee.archived@example.org",
    "dee.moved@example.org",
    "Dee Archer",
];
/// Bob's, kept.
const KEPT: [&str; 2] = ["bob.babbage@example.org", "Bob Babbage"];

async fn scenario<S>(store: S, scan: impl AsyncFn(&S) -> String)
where
    S: EventStore
        + SnapshotStore
        + KeyStore
        + StreamLifecycle
        + IdempotencyStore
        + OutboxStore
        + ProjectionStore
        + WatchAppends
        + SqlStore
        + Clone
        + 'static,
    <S as ProjectionStore>::Transaction: Sql + Send,
{
    let protection = Arc::new(
        DataProtection::new(store.clone(), MasterKey::from_bytes([42; 32]))
            .protect::<CustomerEvent>()
            .expect("protect"),
    );
    let repo = Repository::<Customer, _>::new(Protected::new(store.clone(), protection.clone()))
        .with_snapshots(2, 1);
    let meta = EventMetadata::default();
    let (ada, bob, cy, dee) = (Id::new(), Id::new(), Id::new(), Id::new());
    let decide = |e: CustomerEvent| move |_: &Customer| Ok(vec![e.clone()]);
    repo.execute_with_metadata(
        ada,
        &meta,
        decide(register("c-ada", FORGOTTEN[0], FORGOTTEN[2], "gold")),
    )
    .await
    .expect("ada");
    repo.execute_with_metadata(
        ada,
        &meta,
        decide(CustomerEvent::EmailChanged {
            customer: "c-ada".into(),
            email: FORGOTTEN[1].into(),
        }),
    )
    .await
    .expect("ada's email");
    repo.execute_with_metadata(
        bob,
        &meta,
        decide(register("c-bob", KEPT[0], KEPT[1], "silver")),
    )
    .await
    .expect("bob");
    repo.execute_with_metadata(
        dee,
        &meta,
        decide(register("c-dee", FORGOTTEN[5], FORGOTTEN[7], "bronze")),
    )
    .await
    .expect("dee");
    repo.execute_with_metadata(
        dee,
        &meta,
        decide(CustomerEvent::EmailChanged {
            customer: "c-dee".into(),
            email: FORGOTTEN[6].into(),
        }),
    )
    .await
    .expect("dee's email");
    let last = repo
        .execute_with_metadata(
            cy,
            &meta,
            decide(register("c-cy", FORGOTTEN[3], FORGOTTEN[4], "poison")),
        )
        .await
        .expect("cy");
    let ada_stream = Customer::stream_id(ada);
    assert!(
        store
            .load_snapshot(&ada_stream)
            .await
            .expect("snapshot")
            .is_some(),
        "ada's stream was snapshotted"
    );

    // Project (in clear through `Revealing`); cy's registration is parked.
    let options = ProjectionOptions {
        max_attempts: 1,
        backoff: Duration::from_millis(1),
        on_poison: PoisonPolicy::Park,
        ..ProjectionOptions::default()
    };
    let projections = ProjectionRunner::new(store.clone())
        .register_with(Revealing::new(Customers, protection.clone()), options)
        .expect("register")
        .start();
    let head = last.last_position().expect("a position");
    let parked = projections
        .wait_for("customers", head, Duration::from_secs(20))
        .await
        .expect_err("cy's registration is parked");
    assert_eq!(parked.reason(), "EVENTS_PARKED");
    let letters = projections
        .dead_letters("customers")
        .await
        .expect("letters");
    assert_eq!(letters.len(), 1);

    // Archive dee's first event; an outbox message carrying ada's stored (sealed) event,
    // as a relay would forward it; an idempotency record of ada's command.
    let dee_stream = Customer::stream_id(dee);
    store
        .archive_stream(&dee_stream, StreamVersion(2))
        .await
        .expect("archive");
    let stored = store
        .read_stream(&ada_stream, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect("read sealed");
    let mut tx = store.begin().await.expect("tx");
    let message = OutboxMessage::json(
        "crm.customer.changed",
        &serde_json::from_slice::<serde_json::Value>(&stored[1].payload).expect("json"),
        &Context::new(),
    )
    .expect("message");
    store.send_in(&mut tx, &message).await.expect("outbox");
    store.commit(tx).await.expect("commit");
    let command = uuid::Uuid::now_v7();
    assert!(matches!(
        store
            .claim(command, "customer.change_email", Duration::from_secs(30))
            .await
            .expect("claim"),
        Claim::Claimed
    ));
    store
        .complete(
            command,
            IdempotencyRecord {
                message_type: "customer.change_email".into(),
                outcome: Ok(br#"{"customer":"c-ada","version":2}"#.to_vec().into()),
            },
        )
        .await
        .expect("complete");

    // Before forgetting: the read model holds ada's email in clear (the scan can see it).
    let before = scan(&store).await;
    assert!(before.contains(FORGOTTEN[1]), "the scan finds clear values");

    assert!(protection.forget("c-ada").await.expect("forget ada"));
    assert!(protection.forget("c-cy").await.expect("forget cy"));
    assert!(protection.forget("c-dee").await.expect("forget dee"));
    assert!(!protection.forget("c-nobody").await.expect("forget nobody"));
    projections
        .rebuild("customers", RebuildFrom::Start)
        .await
        .expect("rebuild");
    let _ = projections
        .wait_for("customers", head, Duration::from_secs(20))
        .await;
    projections.shutdown().await;

    // Readers get the replacements (with the header naming them); bob reads whole.
    let fresh = Repository::<Customer, _>::new(Protected::new(store.clone(), protection.clone()))
        .with_snapshots(2, 1);
    let a = fresh.load(ada).await.expect("ada loads");
    assert_eq!(
        a.state(),
        &Customer {
            email: "[erased]".into(),
            name: "[erased]".into(),
            plan: "gold".into()
        }
    );
    assert_eq!(a.version(), StreamVersion(2));
    let b = fresh.load(bob).await.expect("bob loads");
    assert_eq!([b.state().email.as_str(), b.state().name.as_str()], KEPT);
    let read = Protected::new(store.clone(), protection.clone())
        .read_stream(&dee_stream, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(read.len(), 2, "read through the archive");
    assert_eq!(
        read[0]
            .metadata
            .headers
            .get(FORGOTTEN_HEADER)
            .map(String::as_str),
        Some("Registered.email,Registered.name")
    );
    let rows = store.read_models();
    let model: Vec<(String, String, String, String)> = rows
        .fetch(
            "SELECT id, email, name, plan FROM customers ORDER BY id",
            vec![],
        )
        .await
        .expect("model");
    // Dee's registration was archived: the rebuilt model never sees it (documented).
    assert_eq!(
        model,
        [
            (
                "c-ada".into(),
                "[erased]".into(),
                "[erased]".into(),
                "gold".into()
            ),
            (
                "c-bob".into(),
                KEPT[0].into(),
                KEPT[1].into(),
                "silver".into()
            ),
        ]
    );

    let after = scan(&store).await;
    for value in FORGOTTEN {
        assert!(!after.contains(value), "{value:?} survived in clear");
        assert!(
            !after.contains(&hex(value)),
            "{value:?} survived in clear (hex)"
        );
    }
    assert!(
        after.contains(KEPT[0]),
        "bob's read model row is still there"
    );
}

/// What a bytea column shows of `text` in PostgreSQL's text output.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_subjects_leave_no_clear_value_in_a_sqlite_file() {
    let dir =
        std::env::temp_dir().join(format!("flext-personal-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("events.db");
    let store = SqliteEventStore::open(&path).await.expect("open");
    let scan_dir = dir.clone();
    scenario(store.clone(), async move |s: &SqliteEventStore| {
        // Every byte of every file of the store: the database, its write-ahead log and
        // shared memory, as they are on disk now, after `scrub` (the log keeps earlier
        // page images until a checkpoint; the file zeroes what is deleted).
        s.scrub().await.expect("scrub");
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&scan_dir).expect("dir") {
            all.extend(std::fs::read(entry.expect("entry").path()).expect("file"));
        }
        String::from_utf8_lossy(&all).into_owned()
    })
    .await;
    // Closed (the log checkpointed into the file): the file alone, scanned again.
    store.close().await.expect("close");
    let bytes = std::fs::read(&path).expect("db");
    let text = String::from_utf8_lossy(&bytes);
    for value in FORGOTTEN {
        assert!(
            !text.contains(value),
            "{value:?} survived in the closed file"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_subjects_leave_no_clear_value_in_a_postgres_schema() {
    let store: PgEventStore = flext_testkit::harness::fresh_pg_store("personal").await;
    scenario(store, async |s: &PgEventStore| {
        // Every row of every table of the store's schema, as text (bytea as hex).
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT quote_ident(table_name) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
        )
        .fetch_all(s.pool())
        .await
        .expect("tables");
        assert!(tables.len() > 20, "{tables:?}");
        let mut all = String::new();
        for t in tables {
            let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT string_agg(t::text, E'\\n') FROM {t} t"
            )))
            .fetch_one(s.pool())
            .await
            .expect("rows");
            all.push_str(&rows.unwrap_or_default());
            all.push('\n');
        }
        all
    })
    .await;
}

mod errors {
    use super::*;
    use flext_domain::{ErrorCode, EventId, ExpectedVersion, NewEvent, Position, StreamId};
    use flext_memory::InMemoryEventStore;

    fn registration(customer: serde_json::Value) -> NewEvent {
        NewEvent::new(
            EventId::new(),
            "customer.registered",
            serde_json::to_vec(&serde_json::json!({"Registered": {
                "customer": customer, "email": "e@example.org", "name": "N", "plan": "p"
            }}))
            .expect("json"),
        )
    }

    fn protection(store: &InMemoryEventStore, key: u8) -> Arc<DataProtection<InMemoryEventStore>> {
        Arc::new(
            DataProtection::new(store.clone(), MasterKey::from_bytes([key; 32]))
                .protect::<CustomerEvent>()
                .expect("protect"),
        )
    }

    #[tokio::test]
    async fn bad_input_and_bad_keys_are_typed_errors_and_store_nothing() {
        let store = InMemoryEventStore::new();
        let protected = Protected::new(store.clone(), protection(&store, 1));
        let s = StreamId::new("customer-x").expect("id");
        for (event, reason) in [
            (
                registration(serde_json::Value::Null),
                "PERSONAL_SUBJECT_MISSING",
            ),
            (
                registration(serde_json::json!("")),
                "PERSONAL_SUBJECT_MISSING",
            ),
            (
                NewEvent::new(
                    EventId::new(),
                    "customer.registered",
                    b"\xff not json".to_vec(),
                ),
                "PERSONAL_PAYLOAD_NOT_JSON",
            ),
        ] {
            let e = protected
                .append(&s, ExpectedVersion::Any, vec![event])
                .await
                .expect_err("refused");
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
            assert_eq!(e.reason(), reason, "{e}");
        }
        assert_eq!(
            store
                .read_all(Position::START, 10)
                .await
                .expect("read")
                .len(),
            0
        );

        // A number names a subject too; an exact retry seals to the same bytes and gets the
        // first outcome back.
        let event = registration(serde_json::json!(7));
        let first = protected
            .append(&s, ExpectedVersion::NoStream, vec![event.clone()])
            .await
            .expect("append");
        let again = protected
            .append(&s, ExpectedVersion::NoStream, vec![event])
            .await
            .expect("an exact retry");
        assert_eq!(again, first);

        // Opened with another master key: a typed error, never garbage.
        let other = Protected::new(store.clone(), protection(&store, 2));
        let e = other
            .read_stream(&s, StreamVersion(1), 1, ReadDirection::Forward)
            .await
            .expect_err("wrong master key");
        assert_eq!(e.code(), ErrorCode::DataLoss, "{e}");
        assert_eq!(e.reason(), flext_application::SEALED_DATA_UNREADABLE, "{e}");

        // A sealed field changed behind the store's back names the field and the event.
        let stored = store
            .read_stream(&s, StreamVersion(1), 1, ReadDirection::Forward)
            .await
            .expect("read")
            .remove(0);
        let mut payload: serde_json::Value = serde_json::from_slice(&stored.payload).expect("json");
        let sealed = payload["Registered"]["email"]
            .as_str()
            .expect("sealed")
            .to_owned();
        assert!(sealed.starts_with("flext:sealed:v1:"), "{sealed}");
        payload["Registered"]["email"] =
            serde_json::json!(format!("{}AA", &sealed[..sealed.len() - 2]));
        store.overwrite_payload(
            &s,
            StreamVersion(1),
            serde_json::to_vec(&payload).expect("json").into(),
        );
        let e = protected
            .read_stream(&s, StreamVersion(1), 1, ReadDirection::Forward)
            .await
            .expect_err("tampered");
        assert_eq!(e.reason(), flext_application::SEALED_DATA_UNREADABLE, "{e}");
        assert!(e.message().contains("Registered.email"), "{e}");
        assert!(e.message().contains(&stored.event_id.to_string()), "{e}");
    }

    #[tokio::test]
    async fn unprotected_types_pass_unchanged_and_master_keys_are_checked() {
        let store = InMemoryEventStore::new();
        let protected = Protected::new(store.clone(), protection(&store, 1));
        let s = StreamId::new("other-1").expect("id");
        let plain = NewEvent::new(
            EventId::new(),
            "other.happened",
            br#"{"email":"x@y"}"#.to_vec(),
        );
        protected
            .append(&s, ExpectedVersion::NoStream, vec![plain.clone()])
            .await
            .expect("append");
        let stored = store
            .read_stream(&s, StreamVersion(1), 1, ReadDirection::Forward)
            .await
            .expect("read");
        assert_eq!(stored[0].payload, plain.payload);
        for bad in ["", "zz", &"g".repeat(64), &"0".repeat(63)] {
            let e = MasterKey::from_hex(bad).expect_err("bad key");
            assert_eq!(e.reason(), "INVALID_MASTER_KEY");
            assert!(bad.is_empty() || !e.to_string().contains(bad), "{e}");
        }
        MasterKey::from_hex(&"0a".repeat(32)).expect("64 hex digits");
        let e = DataProtection::new(store.clone(), MasterKey::from_bytes([1; 32]))
            .protect::<BadReplacement>()
            .expect_err("not JSON");
        assert_eq!(e.reason(), "INVALID_REPLACEMENT", "{e}");
        assert_eq!(e.detail("field"), Some(&serde_json::json!("email")), "{e}");
    }

    #[derive(serde::Serialize, flext::DomainEvent)]
    #[event(name = "bad.replacement")]
    struct BadReplacement {
        #[personal(subject)]
        customer: String,
        #[personal(replacement_json = "{not json")]
        email: String,
    }
}
