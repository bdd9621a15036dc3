//! Crash recovery with a real process: a child process runs a projection (exactly once,
//! its read model in the store's database) and is killed with SIGKILL at random points,
//! 20 times per store, while the parent keeps appending. After a last, undisturbed run
//! the read model must equal a fresh rebuild and the totals of the stored events: no
//! event lost, none applied twice (the model's table of applied event ids would refuse a
//! second application, and a refused event would end up in the dead letters).
//!
//! This file has its own `main` (`harness = false`): run without arguments it is the
//! parent; with `FLEXT_CRASH_CHILD` set it is the child.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use flext_application::{
    OwnershipOptions, ProjectionOptions, ProjectionRunner, SubscriptionOptions,
};
use flext_domain::{EventId, ExpectedVersion, NewEvent, Position, StreamId};
use flext_ports::{EventStore, OwnershipStore, Projection, ProjectionStore};
use support::{Backend, Model, expected};

const KILLS: usize = 20;
const NAME: &str = "crash";

fn options() -> ProjectionOptions {
    ProjectionOptions {
        batch_size: 25,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        subscription: SubscriptionOptions {
            poll_interval: Duration::from_millis(20),
            idle_recheck: Some(Duration::from_millis(50)),
        },
        ..ProjectionOptions::default()
    }
}

async fn append_round<S: EventStore>(store: &S, round: i64, n: i64) -> Position {
    let mut last = Position::START;
    for i in 0..n {
        let amount = round * 1_000 + i;
        let stream = StreamId::new(format!("acc-{}", amount % 7)).expect("stream");
        let out = store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new(EventId::new(), "added", amount.to_string())],
            )
            .await
            .expect("append");
        last = out.last_position().expect("position");
    }
    last
}

/// The child: runs the projection until killed (or for 60 s, if its parent died).
async fn child<S: Backend>(store: S)
where
    Model<S>: Projection<<S as ProjectionStore>::Transaction>,
{
    let model = store.model(NAME).await;
    model.knobs.delay_us.store(500, Ordering::SeqCst);
    // A short lease: each child waits for its killed predecessor's lease to lapse.
    let _projections = ProjectionRunner::new(store.clone())
        .with_ownership_options(OwnershipOptions {
            lease_ttl: Duration::from_millis(200),
            renew_every: Duration::from_millis(50),
            poll: Duration::from_millis(10),
            ..OwnershipOptions::default()
        })
        .register_with(model, options())
        .expect("register")
        .start();
    println!("child running");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

fn spawn_child(kind: &str, target: &str) -> std::process::Child {
    Command::new(std::env::current_exe().expect("own executable"))
        .env("FLEXT_CRASH_CHILD", format!("{kind}:{target}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child")
}

/// The parent: kills children at random points, then checks the model.
async fn parent<S: Backend + OwnershipStore>(store: S, kind: &str, target: &str)
where
    Model<S>: Projection<<S as ProjectionStore>::Transaction>,
{
    let model = store.model(NAME).await;
    append_round(&store, 0, 400).await;
    let mut checkpoints = Vec::new();
    for round in 1..=KILLS {
        let mut child = spawn_child(kind, target);
        // The child runs once it holds the projection's lease (its killed predecessor's
        // lapses first).
        let pid = child.id();
        loop {
            let owned = store.consumers().await.expect("consumers").iter().any(|r| {
                r.consumer == NAME && r.owned && r.owner.as_ref().is_some_and(|o| o.pid == pid)
            });
            if owned {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Appends race the child; then a random moment to die.
        append_round(&store, round as i64, 60).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(10..120))).await;
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap");
        assert!(!status.success(), "the child died by the signal");
        let cp = store
            .load_checkpoint(NAME)
            .await
            .expect("checkpoint")
            .unwrap_or(Position::START);
        checkpoints.push(cp.get());
    }
    assert!(
        checkpoints.windows(2).all(|w| w[0] <= w[1]),
        "checkpoints never go back: {checkpoints:?}"
    );
    let head = append_round(&store, 99, 10).await;
    assert!(
        checkpoints.iter().any(|c| *c > 0 && *c < head.get()),
        "the kills landed while the projection was part-way: {checkpoints:?}"
    );
    // The last run, undisturbed, in this process.
    let projections = ProjectionRunner::new(store.clone())
        .register_with(model.clone(), options())
        .expect("register")
        .start();
    projections
        .wait_for(NAME, head, Duration::from_secs(60))
        .await
        .expect("the restarted projection catches up");
    assert!(
        projections.dead_letters(NAME).await.expect("dl").is_empty(),
        "no event was applied twice"
    );
    let fresh = store.model("fresh").await;
    let rebuilt = ProjectionRunner::new(store.clone())
        .register_with(fresh.clone(), ProjectionOptions::default())
        .expect("register")
        .start();
    rebuilt
        .wait_for("fresh", head, Duration::from_secs(60))
        .await
        .expect("rebuilt");
    let survived = store.totals(&model).await;
    assert_eq!(
        survived,
        store.totals(&fresh).await,
        "model == fresh rebuild"
    );
    assert_eq!(
        survived,
        expected(&store, &[]).await,
        "model == stored events"
    );
    println!(
        "{kind}: {KILLS} SIGKILLs, checkpoints after each: {checkpoints:?}; head {head}; \
         read model equals a fresh rebuild ({} streams)",
        survived.len()
    );
    projections.shutdown().await;
    rebuilt.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(spec) = std::env::var("FLEXT_CRASH_CHILD") {
        runtime.block_on(async {
            match spec.split_once(':') {
                Some(("sqlite", path)) => {
                    child(
                        flext_sqlite::SqliteEventStore::open(path)
                            .await
                            .expect("open"),
                    )
                    .await
                }
                Some(("postgres", schema)) => {
                    let store = flext_postgres::PgEventStore::builder(
                        flext_testkit::harness::database_url(),
                    )
                    .schema(schema)
                    .connect()
                    .await
                    .expect("connect");
                    child(store).await
                }
                _ => panic!("bad FLEXT_CRASH_CHILD {spec:?}"),
            }
        });
        return;
    }
    runtime.block_on(async {
        let sqlite_path =
            std::env::temp_dir().join(format!("flext-crash-{}.db", uuid::Uuid::now_v7().simple()));
        let store = flext_sqlite::SqliteEventStore::open(&sqlite_path)
            .await
            .expect("sqlite");
        let path = sqlite_path.to_str().expect("utf-8 path").to_owned();
        parent(store, "sqlite", &path).await;

        let store = support::postgres().await;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(store.pool())
            .await
            .expect("schema");
        parent(store, "postgres", &schema).await;
    });
    println!("projection_crash: ok");
}
