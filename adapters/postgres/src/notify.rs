//! Live delivery on PostgreSQL: LISTEN/NOTIFY, sent after commit and coalesced.
//!
//! A `NOTIFY` inside the appending transaction would take PostgreSQL's notification-queue
//! lock at every commit, serializing all writers: measured with pgbench on the 2-core
//! machine, 8 connections appending one row each fell from ~13,800 to ~5,400 commits/s
//! (1 connection: 5,600 -> 4,600). So the store appends without it and, after the commit
//! returned, a background task sends `SELECT pg_notify('flext_events', <schema>)` on its
//! own, at most once per [`NOTIFY_INTERVAL`] however many appends committed meanwhile:
//! writers never wait for the queue lock (8 writers next to a notifier sending 1,000
//! notifications/s: ~13,300 commits/s).
//!
//! Readers in this process are pulsed directly after each commit; a second background
//! task LISTENs on a connection of its own and pulses them for other processes' appends
//! (the payload, the store's schema, filters out other stores of the same database).
//! While that connection is down the signal says "not live" and readers poll; the task
//! reconnects with backoff and pulses once connected, so nothing sent meanwhile is missed.
//!
//! A process killed between its commit and its notification leaves the appended events
//! unannounced to other processes until the next append; a reader that must bound that
//! delay sets an idle recheck interval (the projection runner's `idle_recheck`).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_ports::{AppendSignal, AppendWatcher};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The channel every flext store notifies on; the payload names the schema.
pub(crate) const CHANNEL: &str = "flext_events";

/// The channel for consumers' records (a checkpoint moved, a lease released); the payload
/// names the schema. Waiters for another process's projection and instances waiting to
/// take over a released consumer listen to it.
pub(crate) const CONSUMERS_CHANNEL: &str = "flext_consumers";

/// The shortest time between two notifications of one store.
pub(crate) const NOTIFY_INTERVAL: Duration = Duration::from_millis(1);

const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// After this long without a notification the LISTEN connection is asked to answer
/// (`SELECT 1`): a half-open socket looks alive forever otherwise.
const LISTEN_HEARTBEAT: Duration = Duration::from_secs(2);
/// How long that answer may take before the connection is taken for dead.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// `d` scaled by a factor in [0.5, 1.5), so processes that lost the server together do
/// not reconnect in step.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.5 + f64::from(nanos % 1_000) / 1_000.0)
}

/// A store's notification machinery, shared by its clones; dropping the last clone stops
/// the background tasks.
pub(crate) struct Notifications {
    /// One connection of its own for NOTIFY (made when first needed), so notifying never
    /// takes a connection from the pool the user sized.
    pool: PgPool,
    /// Whether LISTEN/NOTIFY is on.
    enabled: bool,
    pub(crate) schema: Arc<str>,
    signal: AppendSignal,
    /// Pulsed for consumers' records, here and (through LISTEN) in other processes.
    consumers: AppendSignal,
    /// Wakes the sender task.
    trigger: Arc<Notify>,
    sender: TaskSlot,
    /// Wakes the consumers' sender task.
    consumers_trigger: Arc<Notify>,
    consumers_sender: TaskSlot,
    listener: TaskSlot,
    listener_pid: Arc<AtomicI32>,
}

impl Notifications {
    pub(crate) fn new(store_pool: &PgPool, schema: String, enabled: bool) -> Notifications {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(RECONNECT_MAX)
            .connect_lazy_with(store_pool.connect_options().as_ref().clone());
        let signal = AppendSignal::new();
        // Not live until the LISTEN connection is up.
        signal.set_live(false);
        let consumers = AppendSignal::new();
        consumers.set_live(false);
        Notifications {
            pool,
            enabled,
            schema: schema.into(),
            signal,
            consumers,
            trigger: Arc::new(Notify::new()),
            sender: TaskSlot::default(),
            consumers_trigger: Arc::new(Notify::new()),
            consumers_sender: TaskSlot::default(),
            listener: TaskSlot::default(),
            listener_pid: Arc::new(AtomicI32::new(0)),
        }
    }

    /// Called after a commit that appended: pulses local readers at once and has the
    /// sender task tell other processes.
    pub(crate) fn appended(&self) {
        self.signal.pulse();
        self.notify(&self.sender, &self.trigger, CHANNEL);
    }

    /// Called after a commit that moved a checkpoint or released a lease: pulses local
    /// waiters at once and has the sender task tell other processes.
    pub(crate) fn consumers_changed(&self) {
        self.consumers.pulse();
        self.notify(
            &self.consumers_sender,
            &self.consumers_trigger,
            CONSUMERS_CHANNEL,
        );
    }

    /// Starts `channel`'s sender task once, then wakes it.
    fn notify(&self, sender: &TaskSlot, trigger: &Arc<Notify>, channel: &'static str) {
        if !self.enabled {
            return;
        }
        sender.ensure(|| {
            let pool = self.pool.clone();
            let schema = Arc::clone(&self.schema);
            let trigger = Arc::clone(trigger);
            async move {
                loop {
                    trigger.notified().await;
                    // A failed notification only delays other processes' readers (they
                    // poll while their own LISTEN connection is down, and the next commit
                    // notifies again).
                    let _ = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(channel)
                        .bind(&*schema)
                        .execute(&pool)
                        .await;
                    tokio::time::sleep(NOTIFY_INTERVAL).await;
                }
            }
        });
        trigger.notify_one();
    }

    /// A watcher of consumers' records; starts the LISTEN task the first time.
    pub(crate) fn watch_consumers(&self) -> AppendWatcher {
        let watcher = self.consumers.watcher();
        self.start_listener();
        watcher
    }

    /// A watcher; starts the LISTEN task the first time (inside a Tokio runtime; outside
    /// one the signal stays not live and readers poll).
    pub(crate) fn watch(&self) -> AppendWatcher {
        let watcher = self.signal.watcher();
        self.start_listener();
        watcher
    }

    fn start_listener(&self) {
        if !self.enabled {
            return;
        }
        self.listener.ensure(|| {
            let options = self.pool.connect_options().as_ref().clone();
            let schema = Arc::clone(&self.schema);
            let signals = Signals {
                appends: self.signal.clone(),
                consumers: self.consumers.clone(),
            };
            let pid = Arc::clone(&self.listener_pid);
            listen(options, schema, signals, pid)
        });
    }

    pub(crate) fn listener_pid(&self) -> Option<i32> {
        match self.listener_pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }
}

impl Notifications {
    /// Stops the background tasks (the store is closing).
    pub(crate) fn stop(&self) {
        for slot in [&self.sender, &self.consumers_sender, &self.listener] {
            slot.abort();
        }
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One background task, started on first need and started again if it ended (a panic):
/// never marked started without running.
#[derive(Default)]
struct TaskSlot(Mutex<Option<JoinHandle<()>>>);

impl TaskSlot {
    /// Spawns `make()`'s task unless one is running (inside a Tokio runtime; outside one
    /// nothing starts, and the next call tries again).
    fn ensure<F: Future<Output = ()> + Send + 'static>(&self, make: impl FnOnce() -> F) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            *slot = Some(runtime.spawn(make()));
        }
    }

    fn abort(&self) {
        if let Some(t) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

/// The signals the LISTEN task pulses.
struct Signals {
    appends: AppendSignal,
    consumers: AppendSignal,
}

impl Signals {
    fn set_live(&self, live: bool) {
        self.appends.set_live(live);
        self.consumers.set_live(live);
    }
}

/// A LISTEN connection of its own. Each attempt gets a pool of its own too: a connection
/// given up (lost, or silent past its heartbeat) is closed on release, never pooled, and
/// its close (which may hang on a half-open socket) holds no slot a new attempt needs.
async fn connect(options: &PgConnectOptions) -> Result<(PgListener, i32), sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .after_release(|_, _| Box::pin(async { Ok(false) }))
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen_all([CHANNEL, CONSUMERS_CHANNEL]).await?;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut listener)
        .await?;
    Ok((listener, pid))
}

async fn listen(options: PgConnectOptions, schema: Arc<str>, signal: Signals, pid: Arc<AtomicI32>) {
    let mut backoff = RECONNECT_MIN;
    loop {
        let attempt = tokio::time::timeout(HEARTBEAT_TIMEOUT * 3, connect(&options)).await;
        if let Ok(Ok((mut listener, backend))) = attempt {
            backoff = RECONNECT_MIN;
            pid.store(backend, Ordering::Release);
            // Live again; the pulse makes readers re-read what was appended meanwhile.
            signal.set_live(true);
            signal.appends.pulse();
            signal.consumers.pulse();
            // `Ok(None)`: the connection was lost; sqlx would reconnect on the next call,
            // but we reconnect ourselves to know when LISTEN is in place again. A quiet
            // connection is asked to answer every LISTEN_HEARTBEAT: one that does not
            // within HEARTBEAT_TIMEOUT is dead (a half-open socket, a stalled path).
            loop {
                match tokio::time::timeout(LISTEN_HEARTBEAT, listener.try_recv()).await {
                    Ok(Ok(Some(n))) => {
                        if n.payload() == &*schema {
                            if n.channel() == CONSUMERS_CHANNEL {
                                signal.consumers.pulse();
                            } else {
                                signal.appends.pulse();
                            }
                        }
                    }
                    Ok(Ok(None) | Err(_)) => break,
                    Err(_) => {
                        let ping = sqlx::query("SELECT 1").execute(&mut listener);
                        match tokio::time::timeout(HEARTBEAT_TIMEOUT, ping).await {
                            Ok(Ok(_)) => {}
                            _ => break,
                        }
                    }
                }
            }
            pid.store(0, Ordering::Release);
        }
        signal.set_live(false);
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}
