//! Process managers (sagas): long-running business processes driven by stored events.
//!
//! A [`ProcessManager`] keeps a state per instance, found by an association (the
//! correlation id by default, or a field of the event). An event may start an instance,
//! advance it, or end it; in handling it the manager emits [`Effects`]: commands to send,
//! deadlines (commands to send at a time unless cancelled) and cancellations. The
//! manager runs in the [`ProjectionRunner`](crate::ProjectionRunner) like a projection
//! (one fenced owner among all processes, retries, dead letters, status), and what one
//! event does — the instance's new state, the messages scheduled, the deadlines
//! cancelled — is written in the transaction that moves its checkpoint: on SQLite and
//! PostgreSQL (and in memory) each event changes the state exactly once, crash or not.
//! Commands are stored as scheduled messages due at once and delivered by the
//! [`Scheduler`](crate::Scheduler) under a message id derived from the event's id and the
//! step, so the idempotency behavior makes their effect exactly once too. Why a state
//! table and not an event-sourced stream: `docs/adr/0005-process-manager-state.md`.
//!
//! The decision is a plain function of the state and the event, so a
//! [`ProcessFixture`] tests it in given/when/then form without a store.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::{
    CorrelationId, DomainEvent, Error, EventId, EventMetadata, Position, RecordedEvent, StreamId,
    StreamVersion,
};
use flext_ports::{
    Command, Context, Decoded, EventCodec, JsonCodec, ProcessStore, Projection, Scheduled,
    StoredProcess,
};
use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::pipeline::BoxFuture;
use crate::scheduler::Deliveries;

/// A process manager: reacts to events of type [`ProcessManager::Event`] with a state per
/// instance.
///
/// ```
/// use flext::application::{Effects, ProcessFixture, ProcessManager, Step};
/// use flext::ports::Decoded;
/// use flext::ports::Command;
/// use flext::{DomainEvent, Error};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
/// enum OrderEvent {
///     #[event(name = "order.placed")]
///     Placed { order: String },
///     #[event(name = "order.paid")]
///     Paid { order: String },
/// }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct CancelOrder { order: String }
/// impl Command for CancelOrder {
///     type Output = ();
///     const NAME: &'static str = "order.cancel";
/// }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct Awaiting { order: String }
///
/// struct Payment;
///
/// impl ProcessManager for Payment {
///     type Event = OrderEvent;
///     type State = Awaiting;
///     const NAME: &'static str = "payment";
///
///     fn associate(&self, event: &Decoded<'_, OrderEvent>) -> Option<String> {
///         match &event.event {
///             OrderEvent::Placed { order } | OrderEvent::Paid { order } => Some(order.clone()),
///         }
///     }
///
///     fn handle(
///         &self,
///         state: Option<Awaiting>,
///         event: Decoded<'_, OrderEvent>,
///         effects: &mut Effects,
///     ) -> Result<Step<Awaiting>, Error> {
///         Ok(match (state, event.event) {
///             (None, OrderEvent::Placed { order }) => {
///                 // Unpaid after an hour: cancelled.
///                 let cancel = CancelOrder { order: order.clone() };
///                 effects.deadline_after("unpaid", std::time::Duration::from_secs(3600), &cancel)?;
///                 Step::Continue(Awaiting { order })
///             }
///             (Some(_), OrderEvent::Paid { .. }) => {
///                 effects.cancel_deadline("unpaid");
///                 Step::End
///             }
///             _ => Step::Ignore,
///         })
///     }
///
///     fn commands(&self, deliveries: flext::application::Deliveries) -> flext::application::Deliveries {
///         deliveries.command::<CancelOrder>()
///     }
/// }
///
/// let mut fixture = ProcessFixture::new(Payment);
/// fixture.given("order-7", [OrderEvent::Placed { order: "7".into() }])?;
/// let then = fixture.when("order-7", OrderEvent::Paid { order: "7".into() })?;
/// assert!(then.ended());
/// assert_eq!(then.cancelled(), ["unpaid"]);
/// # Ok::<(), Error>(())
/// ```
pub trait ProcessManager: Send + Sync + 'static {
    /// The events it handles (an enum of one aggregate's events, or of several: variants
    /// named by the types it reads); the runner reads only these types' names.
    type Event: DomainEvent + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// An instance's state, stored as JSON.
    type State: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The manager's name: its checkpoint, ownership, status, dead letters and stored
    /// instances go by it.
    const NAME: &'static str;

    /// The name, [`ProcessManager::NAME`] by default.
    fn name(&self) -> &str {
        Self::NAME
    }

    /// The event type names it is handed (the SQL stores select them in their query):
    /// every type of [`ProcessManager::Event`] by default; narrow it to the types the
    /// manager acts on when its event type is a whole aggregate's.
    fn event_types(&self) -> &'static [&'static str] {
        Self::Event::event_types()
    }

    /// The instance an event belongs to, `None` if it is none of this manager's business.
    /// By default the event's correlation id (one instance per business action).
    fn associate(&self, event: &Decoded<'_, Self::Event>) -> Option<String> {
        Some(
            Context::for_event(event.record)
                .correlation_id()
                .to_string(),
        )
    }

    /// Handles one event: `state` is the instance's (`None` when it does not run); the
    /// [`Step`] says whether the state is left as it is, replaced (which starts an
    /// instance that did not run) or the instance ended. What `effects` collects is
    /// stored with the step, in the same transaction. An error is handled as a
    /// projection's is (transient: retried without limit; otherwise retried up to the
    /// runner's `max_attempts`, then the poison policy); nothing of a failed step is kept.
    fn handle(
        &self,
        state: Option<Self::State>,
        event: Decoded<'_, Self::Event>,
        effects: &mut Effects,
    ) -> Result<Step<Self::State>, Error>;

    /// The commands it sends or schedules, so the [`Scheduler`](crate::Scheduler) can
    /// deliver them (`deliveries.command::<A>().command::<B>()`). Sending a command not
    /// listed here is an error of the step (`UNDELIVERABLE_COMMAND`).
    fn commands(&self, deliveries: Deliveries) -> Deliveries;

    /// The codec that decodes and upcasts its events: JSON without upcasters by default.
    fn codec(&self) -> &dyn EventCodec<Self::Event> {
        static PLAIN: LazyLock<JsonCodec> = LazyLock::new(JsonCodec::new);
        &*PLAIN
    }
}

/// What a [`ProcessManager`] does with an instance after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<S> {
    /// Leaves the state as it is (or no instance, if none runs): nothing is written.
    Ignore,
    /// Stores this state: starts the instance, or advances it.
    Continue(S),
    /// Ends the instance: its state is removed.
    End,
}

/// One thing a step does besides changing the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A command to send now, stored as a scheduled message due at once.
    Send(Scheduled),
    /// A command to send at a time unless cancelled first: the deadline `name`.
    Deadline {
        /// The deadline's name within the instance.
        name: String,
        /// The stored message.
        message: Scheduled,
    },
    /// The deadline `name` cancelled (if pending).
    Cancel {
        /// The deadline's name within the instance.
        name: String,
        /// Its key in the schedule.
        key: String,
    },
}

/// The key under which `manager`'s instance `association` keeps its deadline `name` in
/// the schedule (what [`ScheduleStore::cancel`](flext_ports::ScheduleStore::cancel)
/// takes, to cancel it from elsewhere).
pub fn deadline_key(manager: &str, association: &str, name: &str) -> String {
    format!("process/{manager}/{association}/deadline/{name}")
}

/// What a step emits: commands, deadlines, cancellations. Commands and deadlines carry
/// the event's business action (correlation, tenant, trace) with the event as their
/// causation, and message ids derived from the event's id and the step or deadline
/// name, so handling the same event again would emit the same ids.
#[derive(Debug)]
pub struct Effects {
    manager: String,
    association: String,
    ctx: Context,
    at: DateTime<Utc>,
    done: Vec<Effect>,
}

impl Effects {
    fn new(manager: &str, association: &str, event: &RecordedEvent) -> Self {
        Effects {
            manager: manager.to_owned(),
            association: association.to_owned(),
            ctx: Context::for_event(event),
            at: event.recorded_at,
            done: Vec::new(),
        }
    }

    /// The instance's association.
    pub fn association(&self) -> &str {
        &self.association
    }

    /// The context of the event being handled.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// When the event being handled was recorded: the time deadlines count from (so a
    /// step decides the same whenever it runs).
    pub fn recorded_at(&self) -> DateTime<Utc> {
        self.at
    }

    fn message<C: Command + Serialize>(
        &self,
        key: String,
        step: &str,
        due_at: DateTime<Utc>,
        command: &C,
    ) -> Result<Scheduled, Error> {
        let child = self.ctx.child_for(step);
        Ok(Scheduled {
            id: child.message_id(),
            key,
            due_at,
            message: C::NAME.to_owned(),
            payload: serde_json::to_vec(command)?,
            metadata: self.ctx.event_metadata(),
        })
    }

    /// Sends `command` as this event's follow-up `step` (name each of one event's
    /// commands by its own step). It is delivered by the scheduler once the step has
    /// committed.
    pub fn send<C: Command + Serialize>(&mut self, step: &str, command: &C) -> Result<(), Error> {
        let id = self.ctx.child_for(step).message_id();
        let key = format!("process/{}/{}/send/{id}", self.manager, self.association);
        let message = self.message(key, step, self.at, command)?;
        self.done.push(Effect::Send(message));
        Ok(())
    }

    /// Schedules `command` as the instance's deadline `name`, due at `due_at`, replacing
    /// a deadline of that name still pending.
    pub fn deadline<C: Command + Serialize>(
        &mut self,
        name: &str,
        due_at: DateTime<Utc>,
        command: &C,
    ) -> Result<(), Error> {
        let key = deadline_key(&self.manager, &self.association, name);
        let message = self.message(key, &format!("deadline/{name}"), due_at, command)?;
        self.done.push(Effect::Deadline {
            name: name.to_owned(),
            message,
        });
        Ok(())
    }

    /// [`Effects::deadline`] due `after` the event was recorded.
    pub fn deadline_after<C: Command + Serialize>(
        &mut self,
        name: &str,
        after: Duration,
        command: &C,
    ) -> Result<(), Error> {
        let after = chrono::Duration::from_std(after).map_err(|_| {
            Error::invalid_argument(
                "INVALID_DEADLINE",
                format!("deadline {name:?} lies too far ahead: {after:?}"),
            )
        })?;
        let due = self.at.checked_add_signed(after).ok_or_else(|| {
            Error::invalid_argument(
                "INVALID_DEADLINE",
                format!("deadline {name:?} lies beyond the last representable time"),
            )
        })?;
        self.deadline(name, due, command)
    }

    /// Cancels the instance's deadline `name`, if it is pending (an awaited event came).
    pub fn cancel_deadline(&mut self, name: &str) {
        self.done.push(Effect::Cancel {
            name: name.to_owned(),
            key: deadline_key(&self.manager, &self.association, name),
        });
    }

    /// What the step has emitted so far, in order.
    pub fn effects(&self) -> &[Effect] {
        &self.done
    }
}

/// A step of a manager whose types are erased: state as JSON.
enum ErasedStep {
    Ignore,
    Continue(Vec<u8>),
    End,
}

/// One event's decision.
struct Decision {
    association: String,
    /// The instance's version before the event (0: it did not run).
    version: u64,
    step: ErasedStep,
    effects: Effects,
}

/// Where a decision reads an instance's state: the store's transaction, or the fixture.
trait StateSource: Send {
    fn load<'b>(
        &'b mut self,
        manager: &'b str,
        association: &'b str,
    ) -> BoxFuture<'b, Result<Option<StoredProcess>, Error>>;
}

/// A [`ProcessManager`] with its types erased, as the runner and the fixture hold it.
trait ErasedManager: Send + Sync {
    fn name(&self) -> &str;
    fn event_types(&self) -> &'static [&'static str];
    fn deliveries(&self) -> Deliveries;
    /// Decodes the event, finds its instance, reads its state and hands both to the
    /// manager; `None`: the event is not the manager's business.
    fn decide<'a>(
        &'a self,
        event: &'a RecordedEvent,
        states: &'a mut dyn StateSource,
    ) -> BoxFuture<'a, Result<Option<Decision>, Error>>;
}

struct Erased<P>(P);

impl<P: ProcessManager> ErasedManager for Erased<P> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn event_types(&self) -> &'static [&'static str] {
        self.0.event_types()
    }
    fn deliveries(&self) -> Deliveries {
        self.0.commands(Deliveries::default())
    }
    fn decide<'a>(
        &'a self,
        event: &'a RecordedEvent,
        states: &'a mut dyn StateSource,
    ) -> BoxFuture<'a, Result<Option<Decision>, Error>> {
        Box::pin(async move {
            let name = self.0.name();
            let decoded = Decoded {
                event: self.0.codec().decode(event.as_event_ref())?,
                record: event,
            };
            let Some(association) = self.0.associate(&decoded) else {
                return Ok(None);
            };
            let stored = states.load(name, &association).await?;
            let state = stored
                .as_ref()
                .map(|s| {
                    serde_json::from_slice::<P::State>(&s.state).map_err(|e| {
                        Error::data_loss(
                            "UNREADABLE_PROCESS_STATE",
                            format!(
                                "the state of process {name:?}/{association:?} does not decode: {e}"
                            ),
                        )
                    })
                })
                .transpose()?;
            let mut effects = Effects::new(name, &association, event);
            let step = match self.0.handle(state, decoded, &mut effects)? {
                Step::Ignore => ErasedStep::Ignore,
                Step::Continue(s) => ErasedStep::Continue(serde_json::to_vec(&s)?),
                Step::End => ErasedStep::End,
            };
            Ok(Some(Decision {
                association,
                version: stored.map_or(0, |s| s.version),
                step,
                effects,
            }))
        })
    }
}

/// Refuses a step that sends a command the manager does not list in
/// [`ProcessManager::commands`]: the scheduler could not deliver it.
fn check_deliverable(
    manager: &str,
    deliveries: &Deliveries,
    effects: &Effects,
) -> Result<(), Error> {
    for effect in &effects.done {
        let (Effect::Send(m) | Effect::Deadline { message: m, .. }) = effect else {
            continue;
        };
        if !deliveries.delivers(&m.message) {
            return Err(Error::failed_precondition(
                "UNDELIVERABLE_COMMAND",
                format!(
                    "process manager {manager:?} sends {:?}, which it does not list in \
                     `ProcessManager::commands`, so no scheduler would deliver it",
                    m.message
                ),
            )
            .with_detail("process_manager", manager));
        }
    }
    Ok(())
}

/// A process manager as the runner holds it: a projection over the store's transaction.
pub(crate) struct Managed<S> {
    manager: Arc<dyn ErasedManager>,
    deliveries: Deliveries,
    store: S,
}

impl<S> Managed<S> {
    pub(crate) fn new<P: ProcessManager>(manager: P, store: S) -> Self {
        Managed::erased(ErasedProcessManager(Arc::new(Erased(manager))), store)
    }

    pub(crate) fn erased(manager: ErasedProcessManager, store: S) -> Self {
        Managed {
            deliveries: manager.0.deliveries(),
            manager: manager.0,
            store,
        }
    }

    /// The commands its scheduler must deliver.
    pub(crate) fn deliveries(&self) -> &Deliveries {
        &self.deliveries
    }
}

/// The store's transaction as a [`StateSource`].
struct InTransaction<'t, S: ProcessStore> {
    store: &'t S,
    tx: &'t mut S::Transaction,
}

impl<S: ProcessStore> StateSource for InTransaction<'_, S> {
    fn load<'b>(
        &'b mut self,
        manager: &'b str,
        association: &'b str,
    ) -> BoxFuture<'b, Result<Option<StoredProcess>, Error>> {
        Box::pin(self.store.load_process(self.tx, manager, association))
    }
}

impl<S: ProcessStore + Clone> Projection<S::Transaction> for Managed<S> {
    fn name(&self) -> &str {
        self.manager.name()
    }

    fn event_types(&self) -> Option<&[&str]> {
        Some(self.manager.event_types())
    }

    async fn handle(&self, tx: &mut S::Transaction, event: &RecordedEvent) -> Result<(), Error> {
        let name = self.manager.name();
        let decision = {
            let mut source = InTransaction {
                store: &self.store,
                tx: &mut *tx,
            };
            self.manager.decide(event, &mut source).await?
        };
        let Some(d) = decision else { return Ok(()) };
        check_deliverable(name, &self.deliveries, &d.effects)?;
        match d.step {
            ErasedStep::Ignore => {}
            ErasedStep::Continue(state) => {
                let process = StoredProcess {
                    state,
                    version: d.version + 1,
                };
                self.store
                    .save_process(tx, name, &d.association, &process)
                    .await?;
            }
            ErasedStep::End => {
                self.store.end_process(tx, name, &d.association).await?;
            }
        }
        for effect in &d.effects.done {
            match effect {
                Effect::Send(m) | Effect::Deadline { message: m, .. } => {
                    self.store.schedule_in(tx, m).await?;
                }
                Effect::Cancel { key, .. } => {
                    self.store.cancel_in(tx, key).await?;
                }
            }
        }
        Ok(())
    }
}

/// Tests a [`ProcessManager`]'s decisions in given/when/then form, without a store:
/// `given` events build the instances' state as the runner would, `when` hands one more
/// event over and returns what the step did ([`Then`]). Events are recorded one after
/// the other in one business action (one correlation id, unless
/// [`ProcessFixture::correlation`] changes it) at the fixture's time
/// ([`ProcessFixture::at`]).
pub struct ProcessFixture<P: ProcessManager> {
    manager: Erased<P>,
    deliveries: Deliveries,
    states: HashMap<String, StoredProcess>,
    versions: HashMap<String, u64>,
    position: u64,
    at: DateTime<Utc>,
    correlation: CorrelationId,
}

impl<P: ProcessManager> std::fmt::Debug for ProcessFixture<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessFixture")
            .field("manager", &self.manager.name())
            .field("instances", &self.states.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

struct InMap<'m>(&'m HashMap<String, StoredProcess>);

impl StateSource for InMap<'_> {
    fn load<'b>(
        &'b mut self,
        _manager: &'b str,
        association: &'b str,
    ) -> BoxFuture<'b, Result<Option<StoredProcess>, Error>> {
        let found = self.0.get(association).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}

/// What a step did, as [`ProcessFixture::when`] reports it.
#[derive(Debug)]
pub struct Then<S> {
    association: Option<String>,
    state: Option<S>,
    ended: bool,
    effects: Vec<Effect>,
}

impl<S> Then<S> {
    /// The instance the event went to (`None`: not the manager's business).
    pub fn association(&self) -> Option<&str> {
        self.association.as_deref()
    }

    /// The instance's state after the step (`None` if it does not run).
    pub fn state(&self) -> Option<&S> {
        self.state.as_ref()
    }

    /// Whether the step ended the instance.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Everything the step emitted, in order.
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }

    /// The commands of type `C` sent now, decoded.
    pub fn sent<C: Command + DeserializeOwned>(&self) -> Result<Vec<C>, Error> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send(m) if m.message == C::NAME => Some(m),
                _ => None,
            })
            .map(|m| Ok(serde_json::from_slice(&m.payload)?))
            .collect()
    }

    /// The deadlines set: (name, due time, command name).
    pub fn deadlines(&self) -> Vec<(&str, DateTime<Utc>, &str)> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Deadline { name, message } => {
                    Some((name.as_str(), message.due_at, message.message.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    /// The command of the deadline `name`, decoded, if it was set as a `C`.
    pub fn deadline<C: Command + DeserializeOwned>(&self, name: &str) -> Result<Option<C>, Error> {
        self.effects
            .iter()
            .find_map(|e| match e {
                Effect::Deadline { name: n, message }
                    if n == name && message.message == C::NAME =>
                {
                    Some(message)
                }
                _ => None,
            })
            .map(|m| serde_json::from_slice(&m.payload).map_err(Error::from))
            .transpose()
    }

    /// The names of the deadlines cancelled.
    pub fn cancelled(&self) -> Vec<&str> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Cancel { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl<P: ProcessManager> ProcessFixture<P> {
    /// A fixture for `manager`, at 2026-01-01T00:00:00Z, with no instance running.
    pub fn new(manager: P) -> Self {
        let manager = Erased(manager);
        ProcessFixture {
            deliveries: manager.deliveries(),
            manager,
            states: HashMap::new(),
            versions: HashMap::new(),
            position: 0,
            at: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            correlation: CorrelationId::new(),
        }
    }

    /// Records the following events at `at`.
    pub fn at(&mut self, at: DateTime<Utc>) -> &mut Self {
        self.at = at;
        self
    }

    /// Records the following events in the business action `correlation`.
    pub fn correlation(&mut self, correlation: CorrelationId) -> &mut Self {
        self.correlation = correlation;
        self
    }

    /// Hands `events` (recorded on `stream`) to the manager, keeping what they do to the
    /// state; an error of a step is returned.
    pub fn given(
        &mut self,
        stream: &str,
        events: impl IntoIterator<Item = P::Event>,
    ) -> Result<&mut Self, Error> {
        for event in events {
            self.when(stream, event)?;
        }
        Ok(self)
    }

    /// Hands one event (recorded on `stream`) to the manager and returns what the step
    /// did; the state it leaves is kept for the next.
    pub fn when(&mut self, stream: &str, event: P::Event) -> Result<Then<P::State>, Error> {
        let record = self.record(stream, &event)?;
        let decision = {
            let mut source = InMap(&self.states);
            self.manager
                .decide(&record, &mut source)
                .now_or_never()
                .unwrap_or_else(|| {
                    Err(Error::internal(
                        "FIXTURE_PENDING",
                        "a decision of the fixture did not complete at once",
                    ))
                })?
        };
        let Some(d) = decision else {
            return Ok(Then {
                association: None,
                state: None,
                ended: false,
                effects: Vec::new(),
            });
        };
        check_deliverable(self.manager.name(), &self.deliveries, &d.effects)?;
        let mut ended = false;
        match d.step {
            ErasedStep::Ignore => {}
            ErasedStep::Continue(state) => {
                self.states.insert(
                    d.association.clone(),
                    StoredProcess {
                        state,
                        version: d.version + 1,
                    },
                );
            }
            ErasedStep::End => {
                self.states.remove(&d.association);
                ended = true;
            }
        }
        Ok(Then {
            state: self.state(&d.association)?,
            association: Some(d.association),
            ended,
            effects: d.effects.done,
        })
    }

    /// The state of instance `association`, if it runs.
    pub fn state(&self, association: &str) -> Result<Option<P::State>, Error> {
        self.states
            .get(association)
            .map(|s| Ok(serde_json::from_slice(&s.state)?))
            .transpose()
    }

    fn record(&mut self, stream: &str, event: &P::Event) -> Result<RecordedEvent, Error> {
        let version = self.versions.entry(stream.to_owned()).or_insert(0);
        *version += 1;
        self.position += 1;
        Ok(RecordedEvent {
            event_id: EventId::new(),
            stream_id: StreamId::new(stream)?,
            stream_version: StreamVersion(*version),
            position: Position(self.position),
            recorded_at: self.at,
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            payload: bytes::Bytes::from(serde_json::to_vec(event)?),
            metadata: EventMetadata {
                correlation_id: Some(self.correlation),
                ..EventMetadata::default()
            },
            tags: event.tags(),
        })
    }
}

/// A process manager with its types erased, as a [`ProcessManagerRegistration`] makes it.
#[derive(Clone)]
pub struct ErasedProcessManager(Arc<dyn ErasedManager>);

impl std::fmt::Debug for ErasedProcessManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ErasedProcessManager")
            .field(&self.0.name())
            .finish()
    }
}

/// A process manager registered by `#[process_manager]`, which
/// `ProjectionRunner::with_registered_process_managers` adds.
pub struct ProcessManagerRegistration {
    /// Makes the manager.
    pub make: fn() -> ErasedProcessManager,
    /// The manager's type, for messages.
    pub type_name: &'static str,
    /// Where `#[process_manager]` was written.
    pub site: crate::Site,
}

inventory::collect!(ProcessManagerRegistration);

/// Makes a `P` (by `Default`) for a [`ProcessManagerRegistration`]; what
/// `#[process_manager]` generates calls it.
pub fn erase_process_manager<P: ProcessManager + Default>() -> ErasedProcessManager {
    ErasedProcessManager(Arc::new(Erased(P::default())))
}
