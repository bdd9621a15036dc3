//! How long a consumer stays without an owner when its owner goes away: after a graceful
//! shutdown, a SIGKILL and a SIGSTOP, on SQLite and PostgreSQL, with the default
//! ownership options (lease 1.5 s, renewed every 375 ms).
//!
//! ```text
//! DATABASE_URL=postgres://… cargo run --release --example takeover [-- --trials 10]
//! ```
//!
//! Two processes of this program run the same projection (a counter) while the parent
//! appends an event every 10 ms. Each trial stops the owner one way, measures from that
//! moment until the store names the other process as the owner, and starts a fresh
//! process in place of the one stopped. The parent reads ownership from the store every
//! millisecond, so the figures include the new owner's acquisition, not its first batch.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flext::application::ProjectionRunner;
use flext::ports::{EventStore, Instance, OwnershipStore, Projection, ProjectionStore};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext::{Error, EventId, ExpectedVersion, NewEvent, RecordedEvent, StreamId};

const CONSUMER: &str = "takeover.count";

/// The projection: counts events (at least once; the figures are about ownership).
#[derive(Default)]
struct Count(AtomicU64);

impl<T: Send> Projection<T> for Count {
    fn name(&self) -> &str {
        CONSUMER
    }
    async fn handle(&self, _tx: &mut T, _event: &RecordedEvent) -> Result<(), Error> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A child: runs the projection until its stdin closes, then shuts down gracefully.
async fn child<S>(store: S, name: &str)
where
    S: ProjectionStore + EventStore + flext::ports::WatchAppends + Clone,
    Count: Projection<S::Transaction>,
{
    let projections = ProjectionRunner::new(store)
        .with_instance(Instance::named(name))
        .register(Count::default())
        .expect("register")
        .start();
    // Wait for the parent to close stdin (a blocking read, off the runtime).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await;
    projections.shutdown().await;
}

fn spawn(kind: &str, target: &str, name: &str) -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .env("FLEXT_TAKEOVER_CHILD", format!("{kind}|{target}|{name}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn a child")
}

/// The owner's instance name, if the consumer is owned.
async fn owner<S: OwnershipStore>(store: &S) -> Option<String> {
    store
        .consumers()
        .await
        .ok()?
        .into_iter()
        .find(|r| r.consumer == CONSUMER && r.owned)
        .and_then(|r| r.owner.map(|o| o.name))
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Graceful,
    Kill,
    Pause,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn trials<S>(store: S, kind: &str, target: &str, n: usize)
where
    S: OwnershipStore + EventStore + Clone + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let stream = StreamId::new("takeover-load").expect("stream");
            while !stop.load(Ordering::SeqCst) {
                let e = NewEvent::new(EventId::new(), "tick", "{}");
                let _ = store.append(&stream, ExpectedVersion::Any, vec![e]).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut next = 0;
    let start = |name_of: &mut usize| {
        *name_of += 1;
        let name = format!("{kind}-{name_of}");
        (name.clone(), spawn(kind, target, &name))
    };
    let mut procs: Vec<(String, Child)> = vec![start(&mut next)];
    while owner(&store).await.is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    procs.push(start(&mut next));
    for how in [Stop::Graceful, Stop::Kill, Stop::Pause] {
        let mut took = Vec::new();
        for _ in 0..n {
            // Let the standby announce itself and settle.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let current = loop {
                if let Some(o) = owner(&store).await {
                    break o;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let at = procs
                .iter()
                .position(|(n, _)| *n == current)
                .expect("the owner is a child");
            let (name, mut victim) = procs.remove(at);
            let t0 = Instant::now();
            match how {
                Stop::Graceful => drop(victim.stdin.take()),
                Stop::Kill => victim.kill().expect("SIGKILL"),
                Stop::Pause => {
                    Command::new("kill")
                        .args(["-STOP", &victim.id().to_string()])
                        .status()
                        .expect("SIGSTOP");
                }
            }
            loop {
                match owner(&store).await {
                    Some(o) if o != name => break,
                    _ => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
            took.push(t0.elapsed());
            let _ = victim.kill();
            let _ = victim.wait();
            procs.push(start(&mut next));
        }
        took.sort();
        println!(
            "{kind:>10} {:>9}: p50 {:>6.0} ms, max {:>6.0} ms over {n} trials",
            format!("{how:?}"),
            percentile(&took, 0.5).as_secs_f64() * 1e3,
            took[took.len() - 1].as_secs_f64() * 1e3
        );
    }
    stop.store(true, Ordering::SeqCst);
    let _ = writer.await;
    for (_, mut c) in procs {
        drop(c.stdin.take());
        let _ = c.wait();
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(spec) = std::env::var("FLEXT_TAKEOVER_CHILD") {
        let parts: Vec<&str> = spec.split('|').collect();
        let [kind, target, name] = parts[..] else {
            eprintln!("bad FLEXT_TAKEOVER_CHILD {spec:?}");
            std::process::exit(2);
        };
        runtime.block_on(async {
            if kind == "sqlite" {
                let store = SqliteEventStore::open(target).await.expect("open");
                child(store, name).await
            } else {
                let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
                let store = PgEventStore::builder(url)
                    .schema(target)
                    .connect()
                    .await
                    .expect("connect");
                child(store, name).await
            }
        });
        return;
    }
    let n = std::env::args()
        .skip_while(|a| a != "--trials")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(10usize);
    runtime.block_on(async {
        println!("takeover latency, default ownership options (lease 1.5 s, renewal every 375 ms)");
        let path = std::env::temp_dir().join(format!("flext-takeover-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = SqliteEventStore::open(&path).await.expect("sqlite");
        trials(store, "sqlite", path.to_str().expect("utf-8 path"), n).await;
        match std::env::var("DATABASE_URL") {
            Ok(url) => {
                let schema = format!("flext_takeover_{}", std::process::id());
                let store = PgEventStore::builder(url.as_str())
                    .schema(schema.as_str())
                    .connect()
                    .await
                    .expect("postgres");
                trials(store.clone(), "postgresql", &schema, n).await;
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(store.pool())
                    .await;
            }
            Err(_) => println!("(DATABASE_URL unset: PostgreSQL skipped)"),
        }
        let _ = std::fs::remove_file(&path);
    });
}
