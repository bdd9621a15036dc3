//! The durable scheduler: commands (deadlines among them) stored with a due time in the
//! store's database, delivered at least once by the one instance that owns the schedule,
//! under the schedule's id as message id, so the idempotency behavior makes a repeated
//! delivery's effect exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::Error;
use flext_ports::{
    Clock, Command, Context, Instance, Metrics, OwnershipStore, ScheduleStore, Scheduled,
    SystemClock,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use uuid::Uuid;

use crate::bus::CommandBus;
use crate::ownership::{Ownership, OwnershipOptions};
use crate::pipeline::BoxFuture;

/// The scheduler's consumer name: one instance among all that share the store delivers.
pub const SCHEDULER: &str = flext_ports::SCHEDULER_CONSUMER;

/// Stores `command` to be dispatched at `due_at` under `key` (replacing what was pending
/// under it), in the business action of `ctx`. Returns the scheduled message; its id is
/// the message id the command will carry.
pub async fn schedule<S, C>(
    store: &S,
    key: &str,
    due_at: DateTime<Utc>,
    command: &C,
    ctx: &Context,
) -> Result<Scheduled, Error>
where
    S: ScheduleStore,
    C: Command + Serialize,
{
    let message = Scheduled {
        id: Uuid::now_v7(),
        key: key.to_owned(),
        due_at,
        message: C::NAME.to_owned(),
        payload: serde_json::to_vec(command)?,
        metadata: ctx.event_metadata(),
    };
    store.schedule(&message).await?;
    Ok(message)
}

/// Sends one kind of stored command.
type Deliver = Arc<
    dyn Fn(CommandBus, Vec<u8>, Context) -> BoxFuture<'static, Result<(), Error>> + Send + Sync,
>;

/// The commands a [`Scheduler`] can deliver, by name: each is decoded from its stored
/// JSON into its type and dispatched on the command bus.
#[derive(Clone, Default)]
pub struct Deliveries {
    by_name: HashMap<String, Deliver>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        f.debug_set().entries(names).finish()
    }
}

impl Deliveries {
    /// Adds the commands of type `C` (by `C::NAME`).
    #[must_use]
    pub fn command<C: Command + DeserializeOwned>(mut self) -> Self {
        let deliver: Deliver = Arc::new(|bus: CommandBus, payload: Vec<u8>, ctx: Context| {
            Box::pin(async move {
                let command: C = serde_json::from_slice(&payload).map_err(|e| {
                    Error::data_loss(
                        "UNREADABLE_SCHEDULED_COMMAND",
                        format!("a scheduled {} does not decode: {e}", C::NAME),
                    )
                })?;
                bus.dispatch(command, &ctx).await.map(drop)
            })
        });
        self.by_name.insert(C::NAME.to_owned(), deliver);
        self
    }

    /// Adds every command `other` delivers.
    #[must_use]
    pub fn merge(mut self, other: &Deliveries) -> Self {
        for (name, deliver) in &other.by_name {
            self.by_name.insert(name.clone(), Arc::clone(deliver));
        }
        self
    }

    /// Whether it delivers the command named `name`.
    pub fn delivers(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The names of the commands it delivers, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Builds a [`Scheduler`]: which commands it may deliver, how often it looks.
pub struct SchedulerBuilder<S> {
    store: S,
    commands: CommandBus,
    deliver: Deliveries,
    poll: Duration,
    concurrency: usize,
    instance: Instance,
    ownership: OwnershipOptions,
    shared: Option<Ownership<S>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
}

impl<S> std::fmt::Debug for SchedulerBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("commands", &self.deliver)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

/// Delivers scheduled commands when they are due. Runs in one instance at a time (it
/// owns the consumer [`SCHEDULER`]); a message is removed once its command has an
/// outcome (success or a refusal, which is final); a transient failure leaves it to be
/// delivered again at the next look. Lateness (delivery time minus due time) is
/// recorded as `flext.scheduler.lateness` (seconds).
pub struct Scheduler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler on `store` dispatching on `commands`.
    pub fn builder<S>(store: S, commands: CommandBus) -> SchedulerBuilder<S> {
        SchedulerBuilder {
            store,
            commands,
            deliver: Deliveries::default(),
            poll: Duration::from_millis(100),
            concurrency: 16,
            instance: Instance::current(),
            ownership: OwnershipOptions::default(),
            shared: None,
            clock: Arc::new(SystemClock),
            metrics: Arc::new(()),
        }
    }

    /// Stops delivering (a delivery in hand finishes) and releases the schedule.
    pub async fn shutdown(self) {
        let _ = self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

impl<S> SchedulerBuilder<S>
where
    S: ScheduleStore + OwnershipStore + Clone + Send + Sync + 'static,
{
    /// Delivers stored commands of type `C` (by `C::NAME`).
    pub fn command<C: Command + DeserializeOwned>(mut self) -> Self {
        self.deliver = self.deliver.command::<C>();
        self
    }

    /// Delivers every command of `deliveries` (a process manager's, say).
    pub fn commands(mut self, deliveries: &Deliveries) -> Self {
        self.deliver = self.deliver.merge(deliveries);
        self
    }

    /// How often it looks for due messages when none is due sooner (100 ms by default).
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// How many due messages it delivers at once (at least 1; 16 by default). Messages
    /// due together are delivered concurrently, so their commands may run in any order;
    /// 1 delivers them one by one, earliest first.
    pub fn concurrency(mut self, at_once: usize) -> Self {
        self.concurrency = at_once.max(1);
        self
    }

    /// This process's name among the instances (for ownership).
    pub fn instance(mut self, instance: Instance) -> Self {
        self.instance = instance;
        self
    }

    /// The lease options of its ownership.
    pub fn ownership_options(mut self, options: OwnershipOptions) -> Self {
        self.ownership = options;
        self
    }

    /// Runs under `ownership`, shared with the other consumers of this process (one
    /// instance, one fair share), instead of a coordinator of its own.
    pub fn with_ownership(mut self, ownership: Ownership<S>) -> Self {
        self.shared = Some(ownership);
        self
    }

    /// The clock that says what is due (the system's by default).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where lateness and deliveries are recorded.
    pub fn metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Starts it (inside a Tokio runtime).
    pub fn start(mut self) -> Result<Scheduler, Error> {
        let (ownership, own) = match self.shared.take() {
            Some(shared) => (shared, false),
            None => (
                Ownership::start(self.store.clone(), self.instance.clone(), self.ownership),
                true,
            ),
        };
        let slot = ownership.claim(SCHEDULER)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(self, ownership, own, slot, stopped));
        Ok(Scheduler { stop, task })
    }
}

async fn run<S>(
    builder: SchedulerBuilder<S>,
    ownership: Ownership<S>,
    own: bool,
    mut slot: crate::ownership::ConsumerSlot<S>,
    mut stopped: watch::Receiver<bool>,
) where
    S: ScheduleStore + OwnershipStore + Clone + Send + Sync + 'static,
{
    'standby: loop {
        let lease = tokio::select! {
            l = slot.acquired() => match l {
                Some(l) => l,
                None => break,
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        loop {
            if !slot.runs_under(&lease) {
                let _ = slot.release(&lease).await;
                continue 'standby;
            }
            if *stopped.borrow() {
                let _ = slot.release(&lease).await;
                break 'standby;
            }
            let wait = match deliver_due(&builder).await {
                // A full page: more may be due at once.
                Ok(Pass { full: true, .. }) => Duration::ZERO,
                Ok(Pass {
                    delivered,
                    next: Some(next),
                    ..
                }) => match (next - builder.clock.now()).to_std() {
                    Ok(until) if !until.is_zero() => until.min(builder.poll),
                    // Due already: fell due during this pass, so look again now; but what
                    // stays due after a pass that delivered nothing failed for the moment
                    // or has no delivery here, and is looked at after the poll interval.
                    _ if delivered > 0 => Duration::ZERO,
                    _ => builder.poll,
                },
                Ok(Pass { next: None, .. }) => builder.poll,
                Err(e) => {
                    tracing::warn!(error = %e, "the scheduler could not read its schedule");
                    builder.poll
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = slot.changed() => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
        }
    }
    drop(slot);
    if own {
        ownership.shutdown().await;
    }
}

/// How many due messages one look delivers at most.
const PAGE: usize = 100;

/// What one look did.
struct Pass {
    /// Messages removed (delivered or refused).
    delivered: usize,
    /// Whether a whole page was due.
    full: bool,
    /// When the next pending message is due.
    next: Option<DateTime<Utc>>,
}

/// Delivers what is due now.
async fn deliver_due<S>(b: &SchedulerBuilder<S>) -> Result<Pass, Error>
where
    S: ScheduleStore,
{
    use futures_util::StreamExt;
    let now = b.clock.now();
    let due = b.store.due(now, PAGE).await?;
    let full = due.len() >= PAGE;
    let outcomes: Vec<Result<bool, Error>> = futures_util::stream::iter(due)
        .map(|message| deliver_one(b, message))
        .buffer_unordered(b.concurrency)
        .collect()
        .await;
    let mut delivered = 0;
    for outcome in outcomes {
        if outcome? {
            delivered += 1;
        }
    }
    Ok(Pass {
        delivered,
        full,
        next: b.store.next_due().await?,
    })
}

/// Delivers one due message: whether it was removed (delivered or refused for good).
async fn deliver_one<S>(b: &SchedulerBuilder<S>, message: Scheduled) -> Result<bool, Error>
where
    S: ScheduleStore,
{
    let Some(deliver) = b.deliver.by_name.get(&message.message) else {
        // Kept: a scheduler that knows the command may deliver it.
        tracing::error!(key = %message.key, message = %message.message, "no delivery for a scheduled message of this name");
        return Ok(false);
    };
    let lateness = (b.clock.now() - message.due_at)
        .to_std()
        .unwrap_or_default();
    let ctx = Context::from_metadata(message.id, &message.metadata);
    let outcome = deliver(b.commands.clone(), message.payload.clone(), ctx).await;
    match outcome {
        Err(e) if e.is_transient() => {
            tracing::warn!(key = %message.key, error = %e, "a scheduled command failed; it stays scheduled");
            Ok(false)
        }
        done => {
            if let Err(e) = &done {
                tracing::warn!(key = %message.key, error = %e, "a scheduled command was refused");
            }
            b.store.delivered(&message).await?;
            let outcome = if done.is_ok() { "ok" } else { "refused" };
            b.metrics.observe(
                "flext.scheduler.lateness",
                lateness.as_secs_f64(),
                &[("message", message.message.as_str()), ("outcome", outcome)],
            );
            Ok(true)
        }
    }
}
