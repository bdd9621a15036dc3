//! The durable scheduler on memory, SQLite and PostgreSQL: a due command is delivered
//! once, under the schedule's id, and not again after a restart; a cancelled one never;
//! one scheduled again under its key is delivered as replaced; one due later waits.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use flext_application::{CommandBus, OwnershipOptions, Pipeline, Registry, Scheduler, schedule};
use flext_domain::Error;
use flext_ports::{Command, CommandHandler, Context, OwnershipStore, ScheduleStore};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remind {
    n: u64,
}

impl Command for Remind {
    type Output = ();
    const NAME: &'static str = "test.remind";
}

/// What was delivered: (n, message id), in order.
type Seen = Arc<Mutex<Vec<(u64, Uuid)>>>;

struct Reminder(Seen);

impl CommandHandler<Remind> for Reminder {
    async fn handle(&self, command: Remind, ctx: &Context) -> Result<(), Error> {
        self.0
            .lock()
            .expect("seen")
            .push((command.n, ctx.message_id()));
        Ok(())
    }
}

fn bus(seen: &Seen) -> CommandBus {
    Registry::new()
        .command::<Remind, _>(Reminder(seen.clone()))
        .command_bus(Pipeline::new())
        .expect("bus")
}

fn start<S>(store: &S, seen: &Seen, name: &str) -> Scheduler
where
    S: ScheduleStore + OwnershipStore + Clone + Send + Sync + 'static,
{
    Scheduler::builder(store.clone(), bus(seen))
        .command::<Remind>()
        .instance(flext_ports::Instance::named(name))
        .poll(Duration::from_millis(10))
        .ownership_options(OwnershipOptions {
            lease_ttl: Duration::from_secs(30),
            renew_every: Duration::from_secs(1),
            ..OwnershipOptions::default()
        })
        .start()
        .expect("scheduler")
}

async fn until_seen(seen: &Seen, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.lock().expect("seen").iter().any(|(m, _)| *m == n) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} was not delivered: {:?}",
            seen.lock().expect("seen")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn a_due_command_is_delivered_once_across_a_restart<S>(store: S)
where
    S: ScheduleStore + OwnershipStore + Clone + Send + Sync + 'static,
{
    let ctx = Context::new();
    let past = Utc::now() - chrono::Duration::seconds(1);
    let first = schedule(&store, "a", past, &Remind { n: 1 }, &ctx)
        .await
        .expect("schedule");
    schedule(&store, "b", past, &Remind { n: 2 }, &ctx)
        .await
        .expect("schedule");
    assert!(store.cancel("b").await.expect("cancel"), "b was pending");
    assert!(!store.cancel("nothing").await.expect("cancel"));
    schedule(&store, "c", past, &Remind { n: 4 }, &ctx)
        .await
        .expect("schedule");
    schedule(&store, "c", past, &Remind { n: 5 }, &ctx)
        .await
        .expect("schedule again under the same key");
    let later = Utc::now() + chrono::Duration::hours(1);
    schedule(&store, "later", later, &Remind { n: 3 }, &ctx)
        .await
        .expect("schedule");

    let seen: Seen = Arc::default();
    let a = start(&store, &seen, "a");
    until_seen(&seen, 1).await;
    until_seen(&seen, 5).await;
    a.shutdown().await;

    // A restart: a new scheduler; a sentinel due after the others tells when it has
    // looked at everything due.
    let sentinel_due = Utc::now() - chrono::Duration::milliseconds(1);
    schedule(&store, "sentinel", sentinel_due, &Remind { n: 9 }, &ctx)
        .await
        .expect("schedule");
    let b = start(&store, &seen, "b");
    until_seen(&seen, 9).await;
    b.shutdown().await;

    let seen = seen.lock().expect("seen").clone();
    let mut numbers: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        [1, 5, 9],
        "once each; 2 cancelled, 4 replaced, 3 not due"
    );
    assert_eq!(
        seen.iter().find(|(n, _)| *n == 1).map(|(_, id)| *id),
        Some(first.id),
        "delivered under the schedule's id"
    );
    let pending = store.next_due().await.expect("next");
    assert_eq!(
        pending.map(|d| d.timestamp_micros()),
        Some(later.timestamp_micros()),
        "only the later one is left"
    );
    assert!(store.due(Utc::now(), 10).await.expect("due").is_empty());
}

macro_rules! on_stores {
    ($($case:ident),*) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(flext_memory::InMemoryEventStore::new()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::postgres().await).await;
                }
            )*
        }
    };
}

on_stores!(a_due_command_is_delivered_once_across_a_restart);
