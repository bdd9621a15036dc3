//! Ownership across real processes: 3 processes of one service on one PostgreSQL schema,
//! and 2 on one SQLite file, each running the same 6 projections, under an 8-writer load
//! from the parent. Asserted, per store:
//!
//! - distribution: every instance owns at least one projection, and all 6 are owned;
//! - failover: the owner of a projection is SIGKILLed; the survivors own all 6 within the
//!   bound (a replacement process then starts, as an orchestrator would);
//! - fencing: the owner of `p0` stops itself (SIGSTOP) in the middle of a batch; on
//!   PostgreSQL a peer takes `p0` over meanwhile, on SQLite (where the stopped process
//!   holds the file's one write lock, so nobody can write) its lease lapses; then it is
//!   SIGCONTed and its late commit is refused with `OWNERSHIP_LOST` (the child reports the
//!   refusal through the ownership metrics, and the test asserts it happened);
//! - in the end every projection equals the stored events and a fresh rebuild: 0 events
//!   applied twice (each model's table of applied event ids refuses a second
//!   application), 0 dead letters.
//!
//! This file has its own `main` (`harness = false`): run without arguments it is the
//! parent; with `FLEXT_OWNER_CHILD` set it is a child.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_application::{
    OwnershipOptions, ProjectionOptions, ProjectionRunner, SubscriptionOptions,
};
use flext_domain::{EventId, ExpectedVersion, NewEvent, StreamId};
use flext_ports::{
    ConsumerRecord, Instance, Labels, Metrics, OwnershipStore, Projection, ProjectionStore,
};
use support::{Backend, Model, expected};

const PROJECTIONS: usize = 6;
const WRITERS: usize = 8;

fn names() -> Vec<String> {
    (0..PROJECTIONS).map(|i| format!("p{i}")).collect()
}

fn options() -> ProjectionOptions {
    ProjectionOptions {
        batch_size: 50,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        subscription: SubscriptionOptions {
            poll_interval: Duration::from_millis(20),
            idle_recheck: Some(Duration::from_millis(20)),
        },
        ..ProjectionOptions::default()
    }
}

fn ownership() -> OwnershipOptions {
    OwnershipOptions {
        lease_ttl: Duration::from_millis(1_000),
        renew_every: Duration::from_millis(250),
        poll: Duration::from_millis(50),
        ..OwnershipOptions::default()
    }
}

/// The child's metrics: one stdout line per ownership event, for the parent to read.
struct Report;

impl Metrics for Report {
    fn count(&self, name: &str, _value: u64, labels: Labels<'_>) {
        let label = |k: &str| {
            labels
                .iter()
                .find(|(key, _)| *key == k)
                .map_or("", |(_, v)| *v)
        };
        if name == "flext.consumer.ownership_lost" {
            println!("lost {} {}", label("consumer"), label("cause"));
        }
    }
    fn observe(&self, _: &str, _: f64, _: Labels<'_>) {}
    fn gauge(&self, _: &str, _: f64, _: Labels<'_>) {}
}

/// A child: runs the 6 projections until killed.
async fn child<S: Backend>(store: S, instance: &str, marker: PathBuf)
where
    Model<S>: Projection<<S as ProjectionStore>::Transaction>,
{
    let mut runner = ProjectionRunner::new(store.clone())
        .with_instance(Instance::named(instance))
        .with_ownership_options(ownership())
        .with_metrics(Arc::new(Report));
    for name in names() {
        let model = store.model(&name).await;
        model.knobs.delay_us.store(200, Ordering::SeqCst);
        *model.knobs.pause_marker.lock().expect("knobs") = (name == "p0").then(|| marker.clone());
        runner = runner.register_with(model, options()).expect("register");
    }
    let _projections = runner.start();
    println!("running");
    tokio::time::sleep(Duration::from_secs(300)).await;
}

/// A child process and the lines it printed.
struct Proc {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

fn spawn(kind: &str, target: &str, name: &str, marker: &std::path::Path) -> Proc {
    let mut child = Command::new(std::env::current_exe().expect("own executable"))
        .env(
            "FLEXT_OWNER_CHILD",
            format!("{kind}|{target}|{name}|{}", marker.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a child");
    let out = child.stdout.take().expect("stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    Proc {
        name: name.to_owned(),
        child,
        lines,
    }
}

/// Who owns what: owner name -> consumers.
fn owners(records: &[ConsumerRecord]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.owned) {
        if let Some(o) = &r.owner {
            out.entry(o.name.clone())
                .or_default()
                .insert(r.consumer.clone());
        }
    }
    out
}

/// Polls `check` on the store's consumers until it holds, or panics after `within`.
async fn until<S: OwnershipStore>(
    store: &S,
    within: Duration,
    what: &str,
    mut check: impl FnMut(&[ConsumerRecord]) -> bool,
) -> Vec<ConsumerRecord> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let records = store.consumers().await.expect("consumers");
        if check(&records) {
            return records;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}: {:?}",
            owners(&records)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name in parentheses.
    stat.rsplit_once(") ")?.1.chars().next()
}

/// The parent, on one store with `n` child processes.
async fn parent<S: Backend + OwnershipStore>(store: S, kind: &str, target: &str, n: usize)
where
    Model<S>: Projection<<S as ProjectionStore>::Transaction>,
{
    let marker =
        std::env::temp_dir().join(format!("flext-pause-{}", uuid::Uuid::now_v7().simple()));
    for name in names() {
        store.model(&name).await;
    }
    let mut procs: Vec<Proc> = (0..n)
        .map(|i| spawn(kind, target, &format!("{kind}-{i}"), &marker))
        .collect();

    // The load: 8 writers appending until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let stream = StreamId::new(format!("acc-{w}-{}", i % 5)).expect("stream");
                let event = NewEvent::new(EventId::new(), "added", (i % 97).to_string());
                store
                    .append(&stream, ExpectedVersion::Any, vec![event])
                    .await
                    .expect("append");
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        }));
    }

    // Distribution: every instance owns at least one, all are owned.
    let records = until(&store, Duration::from_secs(30), "a fair share", |r| {
        let o = owners(r);
        o.len() == n && o.values().map(BTreeSet::len).sum::<usize>() == PROJECTIONS
    })
    .await;
    println!(
        "{kind}: shared out over {n} instances: {:?}",
        owners(&records)
    );

    // Failover after SIGKILL of p1's owner.
    let victim = owners(&records)
        .into_iter()
        .find(|(_, c)| c.contains("p1"))
        .map(|(o, _)| o)
        .expect("p1 has an owner");
    let at = procs
        .iter()
        .position(|p| p.name == victim)
        .expect("the owner is a child");
    let mut killed = procs.remove(at);
    killed.child.kill().expect("SIGKILL");
    killed.child.wait().expect("reap");
    let survivors: BTreeSet<String> = procs.iter().map(|p| p.name.clone()).collect();
    let records = until(
        &store,
        Duration::from_secs(10),
        "the takeover after SIGKILL",
        |r| {
            let o = owners(r);
            o.keys().all(|k| survivors.contains(k))
                && o.values().map(BTreeSet::len).sum::<usize>() == PROJECTIONS
        },
    )
    .await;
    println!(
        "{kind}: {victim} SIGKILLed; the others own all: {:?}",
        owners(&records)
    );
    procs.push(spawn(kind, target, &format!("{kind}-{n}"), &marker));

    // SIGSTOP in the middle of a batch of p0: the owner stops itself on the pause event.
    let before = records
        .iter()
        .find(|r| r.consumer == "p0")
        .map_or(0, |r| r.epoch);
    let events: Vec<NewEvent> = ["1", "2", "0", "3"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let kind = if i == 2 { "pause" } else { "added" };
            NewEvent::new(EventId::new(), kind, *p)
        })
        .collect();
    store
        .append(
            &StreamId::new("pause-1").expect("stream"),
            ExpectedVersion::Any,
            events,
        )
        .await
        .expect("append the pause");
    let pid: u32 = loop {
        if let Ok(s) = std::fs::read_to_string(&marker)
            && let Ok(pid) = s.trim().parse()
        {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    while process_state(pid) != Some('T') {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let paused = procs
        .iter()
        .position(|p| p.child.id() == pid)
        .expect("a child paused");
    let paused_name = procs[paused].name.clone();
    let records = if kind == "postgres" {
        until(
            &store,
            Duration::from_secs(10),
            "a peer taking p0 over",
            |r| {
                r.iter().any(|r| {
                    r.consumer == "p0"
                        && r.owned
                        && r.epoch > before
                        && r.owner.as_ref().is_some_and(|o| o.name != paused_name)
                })
            },
        )
        .await
    } else {
        // SQLite: nobody can write while it holds the write lock; its lease lapses.
        until(&store, Duration::from_secs(10), "p0's lease lapsing", |r| {
            r.iter().any(|r| r.consumer == "p0" && !r.owned)
        })
        .await
    };
    println!(
        "{kind}: {paused_name} stopped in a batch of p0; p0 now: {:?}",
        records.iter().find(|r| r.consumer == "p0").map(|r| (
            r.owner.as_ref().map(|o| o.name.clone()),
            r.epoch,
            r.owned
        ))
    );
    Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .expect("SIGCONT");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let refused = procs[paused]
            .lines
            .lock()
            .expect("lines")
            .iter()
            .any(|l| l == "lost p0 commit");
        if refused {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{paused_name}'s late commit of p0 was not refused: {:?}",
            procs[paused].lines.lock().expect("lines")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{kind}: {paused_name} resumed; its late commit was refused with OWNERSHIP_LOST");

    // Stop the load; every projection reaches the head.
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    let head = store
        .append(
            &StreamId::new("last").expect("stream"),
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new(), "added", "0")],
        )
        .await
        .expect("append")
        .last_position()
        .expect("position");
    until(&store, Duration::from_secs(60), "catching up", |r| {
        r.iter().filter(|r| r.position >= head).count() == PROJECTIONS
    })
    .await;
    for mut p in procs {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    let stored = expected(&store, &[]).await;
    let fresh = store.model("fresh").await;
    let rebuilt = ProjectionRunner::new(store.clone())
        .register_with(fresh.clone(), ProjectionOptions::default())
        .expect("register")
        .start();
    rebuilt
        .wait_for("fresh", head, Duration::from_secs(60))
        .await
        .expect("rebuilt");
    assert_eq!(
        store.totals(&fresh).await,
        stored,
        "rebuild == stored events"
    );
    for name in names() {
        let model = store.model(&name).await;
        assert_eq!(
            store.totals(&model).await,
            stored,
            "{name} == stored events == a fresh rebuild (none applied twice or lost)"
        );
        assert!(
            store.dead_letters(&name).await.expect("dl").is_empty(),
            "{name} parked nothing"
        );
    }
    rebuilt.shutdown().await;
    let _ = std::fs::remove_file(&marker);
    println!(
        "{kind}: {PROJECTIONS} projections equal the {} stored events and a fresh rebuild; 0 dead letters",
        stored.values().map(|t| t.0).sum::<i64>()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(spec) = std::env::var("FLEXT_OWNER_CHILD") {
        let parts: Vec<&str> = spec.split('|').collect();
        let [kind, target, name, marker] = parts[..] else {
            panic!("bad FLEXT_OWNER_CHILD {spec:?}")
        };
        let marker = PathBuf::from(marker);
        runtime.block_on(async {
            match kind {
                "sqlite" => {
                    let store = flext_sqlite::SqliteEventStore::open(target)
                        .await
                        .expect("open");
                    child(store, name, marker).await
                }
                _ => {
                    let store = flext_postgres::PgEventStore::builder(
                        flext_testkit::harness::database_url(),
                    )
                    .schema(target)
                    .connect()
                    .await
                    .expect("connect");
                    child(store, name, marker).await
                }
            }
        });
        return;
    }
    runtime.block_on(async {
        let store = support::postgres().await;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(store.pool())
            .await
            .expect("schema");
        parent(store, "postgres", &schema, 3).await;

        let path =
            std::env::temp_dir().join(format!("flext-owners-{}.db", uuid::Uuid::now_v7().simple()));
        let store = flext_sqlite::SqliteEventStore::open(&path)
            .await
            .expect("sqlite");
        let target = path.to_str().expect("utf-8 path").to_owned();
        parent(store, "sqlite", &target, 2).await;
    });
    println!("ownership_failover: ok");
}
