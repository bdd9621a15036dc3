//! The inbox on a real NATS with JetStream, into SQLite and PostgreSQL stores: every
//! message's effects once though its first acknowledgement is lost, transient failures
//! delivered again after a backoff, refusals and exhausted messages sent to the
//! dead-letter subject and parked, commands routed to the command bus with the message's
//! id, the correlation id and trace context continued.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext::Error;
use flext::application::{Backoff, Inbox, InboxHandler, Pipeline, Registry, relay_headers};
use flext::ports::sql::{Sql, SqlExt, migrate};
use flext::ports::{
    Command, CommandHandler, Context, InboundMessage, InboxStore, Labels, MessageSource, Metrics,
    ProjectionStore, Settle, sql_args,
};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext_nats::{
    ConsumerOptions, DEAD_LETTER_ERROR_HEADER, DEAD_LETTER_SUBJECT_HEADER, JetStream, PullSource,
};

mod common;
use common::nats_url;

/// The W3C trace context the messages carry.
const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Counts the inbox's outcomes.
#[derive(Default)]
struct Outcomes(Mutex<BTreeMap<String, u64>>);

impl Metrics for Outcomes {
    fn count(&self, name: &'static str, value: u64, labels: Labels<'_>) {
        if name != "flext.inbox.messages" {
            return;
        }
        if let Some((_, outcome)) = labels.iter().find(|(k, _)| *k == "outcome") {
            *self
                .0
                .lock()
                .expect("lock")
                .entry((*outcome).to_owned())
                .or_default() += value;
        }
    }
}

impl Outcomes {
    fn get(&self, outcome: &str) -> u64 {
        self.0
            .lock()
            .expect("lock")
            .get(outcome)
            .copied()
            .unwrap_or(0)
    }
}

/// A source whose first acknowledgement of every message is lost (the broker is told
/// "deliver again now" instead), as when a consumer dies between its commit and its ack.
struct LosingFirstAcks {
    inner: PullSource,
    lost: Mutex<HashSet<String>>,
}

impl LosingFirstAcks {
    /// Durable consumer `inbox` of stream `name`.
    async fn on(nats: &JetStream, name: &str) -> LosingFirstAcks {
        LosingFirstAcks {
            inner: nats.consumer(name, "inbox", &[]).await.expect("consumer"),
            lost: Mutex::new(HashSet::new()),
        }
    }
}

impl MessageSource for LosingFirstAcks {
    type Receipt = (String, <PullSource as MessageSource>::Receipt);

    async fn fetch(&self, max: usize) -> Result<Vec<(InboundMessage, Self::Receipt)>, Error> {
        let got = self.inner.fetch(max).await?;
        Ok(got
            .into_iter()
            .map(|(m, r)| {
                let id = m.id.clone();
                (m, (id, r))
            })
            .collect())
    }

    async fn settle(&self, (id, receipt): Self::Receipt, how: Settle) -> Result<(), Error> {
        let how = match how {
            Settle::Ack if self.lost.lock().expect("lock").insert(id) => {
                Settle::Nak(Duration::ZERO)
            }
            other => other,
        };
        self.inner.settle(receipt, how).await
    }

    async fn dead_letter(&self, message: &InboundMessage, error: &Error) -> Result<(), Error> {
        self.inner.dead_letter(message, error).await
    }
}

/// Records each message it handles in table `effects` (no key: a second effect would be
/// a second row), with the correlation id it was handled under. A `Test-Fail` header
/// makes it fail: `refuse` always (not transiently), `transient:N` for the first `N`
/// deliveries.
struct Effects;

impl<T: Sql + Send> InboxHandler<T> for Effects {
    async fn handle(&self, tx: &mut T, m: &InboundMessage, ctx: &Context) -> Result<(), Error> {
        match m.header("Test-Fail") {
            Some("refuse") => return Err(Error::invalid_argument("REFUSED", "refused")),
            Some(t) => {
                let n: u32 = t
                    .strip_prefix("transient:")
                    .and_then(|n| n.parse().ok())
                    .expect("a Test-Fail header");
                if m.deliveries <= n {
                    return Err(Error::unavailable("DOWN", "down for now"));
                }
            }
            None => {}
        }
        migrate(
            &mut *tx,
            "effects",
            &[
                "CREATE TABLE effects (message_id TEXT NOT NULL, correlation TEXT NOT NULL, \
               trace TEXT NOT NULL)",
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO effects (message_id, correlation, trace) VALUES ($1, $2, $3)",
            sql_args![
                m.id.as_str(),
                ctx.correlation_id().to_string(),
                // What an event recorded here would carry on.
                ctx.event_metadata()
                    .headers
                    .get("traceparent")
                    .cloned()
                    .unwrap_or_default()
            ],
        )
        .await?;
        Ok(())
    }
}

/// A fresh stream `I_<id>` on subjects `i.<id>.>` and a dead-letter stream `D_<id>` on
/// `d.<id>`; the prefix and the names.
async fn streams(nats: &JetStream) -> (String, String, String) {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (name, dead, prefix) = (format!("I_{id}"), format!("D_{id}"), format!("i.{id}"));
    nats.ensure_stream(&name, &[&format!("{prefix}.>")], Duration::from_secs(120))
        .await
        .expect("stream");
    nats.ensure_stream(&dead, &[&format!("d.{id}")], Duration::from_secs(120))
        .await
        .expect("dead-letter stream");
    (name, dead, prefix)
}

async fn publish(nats: &JetStream, subject: String, id: &str, headers: &[(&str, &str)]) {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", id);
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    nats.context()
        .publish_with_headers(subject, h, bytes::Bytes::from_static(b"{}"))
        .await
        .expect("publish")
        .await
        .expect("ack");
}

/// Publishes `{"owner": "o<n>"}` to `subject` under each of `ids` in turn.
async fn publish_owners(nats: &JetStream, subject: String, ids: &[uuid::Uuid]) {
    for (n, id) in ids.iter().enumerate() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.to_string().as_str());
        let body =
            serde_json::to_vec(&serde_json::json!({ "owner": format!("o{n}") })).expect("json");
        nats.context()
            .publish_with_headers(subject.clone(), h, body.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
}

/// Waits until `done` holds, at most a minute.
async fn until<F: AsyncFnMut() -> bool>(mut done: F, what: &str) {
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within a minute: {what}");
}

async fn effects<S: ProjectionStore>(store: &S) -> Vec<(String, String, String)>
where
    S::Transaction: Sql,
{
    let mut tx = store.begin().await.expect("begin");
    tx.fetch(
        "SELECT message_id, correlation, trace FROM effects ORDER BY message_id",
        vec![],
    )
    .await
    .expect("the effects")
}

async fn once_though_every_first_ack_is_lost<S>(store: S)
where
    S: InboxStore + Clone,
    S::Transaction: Sql,
{
    let nats = JetStream::connect(&nats_url()).await.expect("connect");
    let (name, _, prefix) = streams(&nats).await;
    let correlation = uuid::Uuid::now_v7().to_string();
    for n in 0..100 {
        publish(
            &nats,
            format!("{prefix}.work.{n}"),
            &format!("m-{n:03}"),
            &[
                (relay_headers::CORRELATION_ID, &correlation),
                (relay_headers::TRACEPARENT, TRACE),
            ],
        )
        .await;
    }
    let source = LosingFirstAcks::on(&nats, &name).await;
    let outcomes = Arc::new(Outcomes::default());
    let inbox = Inbox::builder("test.inbox", store.clone(), source)
        .handle(&format!("{prefix}.work.*"), Effects)
        .metrics(outcomes.clone())
        .start()
        .expect("start");
    until(
        async || outcomes.get("duplicate") == 100,
        "every redelivery is seen",
    )
    .await;
    inbox.shutdown().await;
    let effects = effects(&store).await;
    let expected: Vec<(String, String, String)> = (0..100)
        .map(|n| (format!("m-{n:03}"), correlation.clone(), TRACE.to_owned()))
        .collect();
    assert_eq!(
        effects, expected,
        "each message once, under its correlation id and trace context"
    );
    assert_eq!(outcomes.get("handled"), 100);
    assert_eq!(outcomes.get("retried") + outcomes.get("dead"), 0);
    let _ = nats.context().delete_stream(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_has_its_effects_once_though_its_first_ack_is_lost_on_sqlite() {
    let path =
        std::env::temp_dir().join(format!("flext-inbox-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    once_though_every_first_ack_is_lost(store.clone()).await;
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_has_its_effects_once_though_its_first_ack_is_lost_on_postgres() {
    let store: PgEventStore = flext_testkit::harness::fresh_pg_store("inbox").await;
    once_though_every_first_ack_is_lost(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_and_refusals_dead_lettered() {
    let nats = JetStream::connect(&nats_url()).await.expect("connect");
    let (name, dead, prefix) = streams(&nats).await;
    let dead_subject = dead.replacen("D_", "d.", 1);
    let path =
        std::env::temp_dir().join(format!("flext-inbox-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    publish(
        &nats,
        format!("{prefix}.work.a"),
        "a",
        &[("Test-Fail", "transient:2")],
    )
    .await;
    publish(
        &nats,
        format!("{prefix}.work.b"),
        "b",
        &[("Test-Fail", "refuse")],
    )
    .await;
    publish(
        &nats,
        format!("{prefix}.work.c"),
        "c",
        &[("Test-Fail", "transient:99")],
    )
    .await;
    publish(&nats, format!("{prefix}.other"), "d", &[]).await;
    let source = nats
        .consumer_with(&name, "inbox", &[], ConsumerOptions::default())
        .await
        .expect("consumer")
        .dead_letters_to(dead_subject.clone());
    let outcomes = Arc::new(Outcomes::default());
    let inbox = Inbox::builder("test.inbox", store.clone(), source)
        .handle(&format!("{prefix}.work.*"), Effects)
        .max_deliveries(4)
        .backoff(Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        })
        .metrics(outcomes.clone())
        .start()
        .expect("start");
    until(
        async || outcomes.get("dead") == 3 && outcomes.get("handled") == 1,
        "a handled after its retries, b, c and d dead",
    )
    .await;
    inbox.shutdown().await;

    let effects = effects(&store).await;
    assert_eq!(
        effects
            .iter()
            .map(|(id, ..)| id.as_str())
            .collect::<Vec<_>>(),
        ["a"],
        "only a had an effect, once"
    );
    // a failed twice, c three times before its fourth and last delivery.
    assert_eq!(outcomes.get("retried"), 5);

    let letters = store
        .inbox_dead_letters("test.inbox")
        .await
        .expect("letters");
    let mut by_id: BTreeMap<&str, (&str, u32)> = BTreeMap::new();
    for l in &letters {
        by_id.insert(&l.message_id, (l.error.reason(), l.deliveries));
    }
    assert_eq!(
        by_id,
        BTreeMap::from([
            ("b", ("REFUSED", 1)),
            ("c", ("DOWN", 4)),
            ("d", ("NO_INBOX_ROUTE", 1)),
        ])
    );
    assert!(letters.iter().all(|l| l.payload == b"{}"));

    // The same three on the dead-letter subject, with why and where from.
    let stream = nats.context().get_stream(&dead).await.expect("stream");
    let mut on_subject = BTreeMap::new();
    for seq in 1..=3 {
        let m = stream.get_raw_message(seq).await.expect("dead letter");
        let header = |k: &str| m.headers.get(k).map(|v| v.as_str().to_owned());
        on_subject.insert(
            header("Nats-Msg-Id").expect("id"),
            (
                header(DEAD_LETTER_SUBJECT_HEADER).expect("subject"),
                header(DEAD_LETTER_ERROR_HEADER).expect("error"),
            ),
        );
    }
    assert_eq!(on_subject.len(), 3);
    assert_eq!(on_subject["b"].0, format!("{prefix}.work.b"));
    assert!(
        on_subject["b"].1.contains("REFUSED"),
        "{:?}",
        on_subject["b"]
    );
    assert!(on_subject["d"].1.contains("NO_INBOX_ROUTE"));
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
    let _ = nats.context().delete_stream(&name).await;
    let _ = nats.context().delete_stream(&dead).await;
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Notify {
    owner: String,
}

impl Command for Notify {
    type Output = ();
    const NAME: &'static str = "test.notify";
}

/// Records each command's message id.
#[derive(Clone, Default)]
struct Notified(Arc<Mutex<Vec<(String, uuid::Uuid)>>>);

impl CommandHandler<Notify> for Notified {
    async fn handle(&self, command: Notify, ctx: &Context) -> Result<(), Error> {
        self.0
            .lock()
            .expect("lock")
            .push((command.owner, ctx.message_id()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_dispatched_once_under_the_message_id() {
    let nats = JetStream::connect(&nats_url()).await.expect("connect");
    let (name, _, prefix) = streams(&nats).await;
    let path =
        std::env::temp_dir().join(format!("flext-inbox-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    let notified = Notified::default();
    let bus = Registry::new()
        .command(notified.clone())
        .command_bus(Pipeline::new())
        .expect("bus");
    let ids: Vec<uuid::Uuid> = (0..20).map(|_| uuid::Uuid::now_v7()).collect();
    publish_owners(&nats, format!("{prefix}.notify"), &ids).await;
    publish(&nats, format!("{prefix}.notify"), "garbled", &[]).await;
    let source = LosingFirstAcks::on(&nats, &name).await;
    let outcomes = Arc::new(Outcomes::default());
    let inbox = Inbox::builder("test.commands", store.clone(), source)
        .command::<Notify>(&format!("{prefix}.notify"), bus)
        .metrics(outcomes.clone())
        .start()
        .expect("start");
    until(
        async || outcomes.get("duplicate") == 20 && outcomes.get("dead") == 1,
        "every command and its redelivery",
    )
    .await;
    inbox.shutdown().await;
    let seen = notified.0.lock().expect("lock").clone();
    let expected: Vec<(String, uuid::Uuid)> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (format!("o{n}"), *id))
        .collect();
    assert_eq!(
        seen, expected,
        "each command once, in order, under its message id"
    );
    let letters = store
        .inbox_dead_letters("test.commands")
        .await
        .expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error.reason(), "UNREADABLE_MESSAGE");
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
    let _ = nats.context().delete_stream(&name).await;
}

/// A message id far longer than a database index entry (a hostile or careless sender) is
/// recorded by a digest: the message is handled once and its redelivery found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_a_very_long_id_is_handled_once_on_postgres() {
    let store: PgEventStore = flext_testkit::harness::fresh_pg_store("inbox").await;
    let nats = JetStream::connect(&nats_url()).await.expect("connect");
    let (name, _, prefix) = streams(&nats).await;
    // Random, so that PostgreSQL cannot compress it under its index entry limit.
    let long: String = (0..400)
        .map(|_| uuid::Uuid::now_v7().simple().to_string())
        .collect();
    publish(&nats, format!("{prefix}.work.long"), &long, &[]).await;
    let source = LosingFirstAcks::on(&nats, &name).await;
    let outcomes = Arc::new(Outcomes::default());
    let inbox = Inbox::builder("test.inbox", store.clone(), source)
        .handle(&format!("{prefix}.work.*"), Effects)
        .metrics(outcomes.clone())
        .start()
        .expect("start");
    until(
        async || outcomes.get("duplicate") == 1,
        "the redelivery is found",
    )
    .await;
    inbox.shutdown().await;
    let effects = effects(&store).await;
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].0, long, "the handler sees the id as sent");
    assert_eq!(outcomes.get("dead") + outcomes.get("retried"), 0);
    let _ = nats.context().delete_stream(&name).await;
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Notified2 {
    owner: String,
}

/// Records each event's owner and message id.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, uuid::Uuid)>>>);

impl flext::ports::EventHandler<Notified2> for Seen {
    async fn handle(&self, event: &Notified2, ctx: &Context) -> Result<(), Error> {
        self.0
            .lock()
            .expect("lock")
            .push((event.owner.clone(), ctx.message_id()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_on_the_event_bus_once_under_the_message_id() {
    let nats = JetStream::connect(&nats_url()).await.expect("connect");
    let (name, _, prefix) = streams(&nats).await;
    let path =
        std::env::temp_dir().join(format!("flext-inbox-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    let seen = Seen::default();
    let bus = Registry::new().event(seen.clone()).event_bus();
    let ids: Vec<uuid::Uuid> = (0..10).map(|_| uuid::Uuid::now_v7()).collect();
    publish_owners(&nats, format!("{prefix}.notified"), &ids).await;
    let source = LosingFirstAcks::on(&nats, &name).await;
    let outcomes = Arc::new(Outcomes::default());
    let inbox = Inbox::builder("test.events", store.clone(), source)
        .event::<Notified2>(&format!("{prefix}.notified"), bus)
        .metrics(outcomes.clone())
        .start()
        .expect("start");
    until(
        async || outcomes.get("duplicate") == 10,
        "every event and its redelivery",
    )
    .await;
    inbox.shutdown().await;
    let got = seen.0.lock().expect("lock").clone();
    let expected: Vec<(String, uuid::Uuid)> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (format!("o{n}"), *id))
        .collect();
    assert_eq!(
        got, expected,
        "each event once, in order, under its message id"
    );
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
    let _ = nats.context().delete_stream(&name).await;
}
