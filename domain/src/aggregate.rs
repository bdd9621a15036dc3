//! Aggregates: state that decides (pure methods returning events) and evolves (`apply`).

use crate::error::Error;
use crate::event::DomainEvent;
use crate::id::Id;
use crate::stream::{ExpectedVersion, StreamId, StreamVersion};

/// A consistency boundary rebuilt from its events.
///
/// An aggregate *evolves* with [`Aggregate::apply`], which must accept every event it ever
/// produced and never fail (a stored event is a fact). It *decides* with plain synchronous
/// methods of your own, `&self` + input -> `Result<Vec<Self::Event>, Error>`, that never
/// mutate and never do I/O; the [`AggregateRoot`] records what they return.
///
/// `Default` is the state before the first event.
pub trait Aggregate: Default {
    /// The stable aggregate type name, the prefix of its stream ids (e.g. `account`).
    const TYPE: &'static str;

    /// The events of this aggregate.
    type Event: DomainEvent;

    /// Evolves the state by one event.
    fn apply(&mut self, event: &Self::Event);

    /// The stream that holds aggregate `id`'s events: `{TYPE}-{id}` by default
    /// ([`StreamId::for_aggregate`]). Override it to name streams your own way (a tenant
    /// prefix, an existing naming scheme); the repository loads and appends through it.
    fn stream_id(id: Id<Self>) -> StreamId
    where
        Self: Sized,
    {
        StreamId::for_aggregate(id)
    }
}

/// One aggregate instance with its id, version and the events recorded but not yet saved.
///
/// `version()` counts every event applied, including the uncommitted ones;
/// `committed_version()` is the version the store holds, and so the expectation to append
/// with.
///
/// ```
/// use flext::{Aggregate, AggregateRoot, DomainEvent, Error, ExpectedVersion, Id};
///
/// #[derive(Default)]
/// struct Counter { value: u32 }
/// struct Incremented;
/// impl DomainEvent for Incremented {
///     fn event_type(&self) -> &'static str { "counter.incremented" }
/// }
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Event = Incremented;
///     fn apply(&mut self, _: &Incremented) { self.value += 1; }
/// }
/// impl Counter {
///     fn increment(&self) -> Result<Vec<Incremented>, Error> {
///         if self.value >= 2 { return Err(Error::failed_precondition("LIMIT", "at most 2")); }
///         Ok(vec![Incremented])
///     }
/// }
///
/// let mut root = AggregateRoot::<Counter>::new(Id::new());
/// root.execute(Counter::increment)?;
/// root.execute(Counter::increment)?;
/// assert!(root.execute(Counter::increment).is_err());
/// assert_eq!(root.state().value, 2);
/// assert_eq!(root.expected_version(), ExpectedVersion::NoStream);
/// assert_eq!(root.take_uncommitted().len(), 2);
/// assert_eq!(root.expected_version(), ExpectedVersion::Exact(root.version()));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AggregateRoot<A: Aggregate> {
    id: Id<A>,
    state: A,
    version: StreamVersion,
    uncommitted: Vec<A::Event>,
}

impl<A: Aggregate> AggregateRoot<A> {
    /// A new aggregate with no events (version 0).
    pub fn new(id: Id<A>) -> Self {
        AggregateRoot {
            id,
            state: A::default(),
            version: StreamVersion::INITIAL,
            uncommitted: Vec::new(),
        }
    }

    /// An aggregate rebuilt from its whole history, in order.
    pub fn from_history<'a>(id: Id<A>, events: impl IntoIterator<Item = &'a A::Event>) -> Self
    where
        A::Event: 'a,
    {
        let mut root = AggregateRoot::new(id);
        for event in events {
            root.apply(event);
        }
        root
    }

    /// An aggregate restored from a snapshot of its state taken at `version`.
    pub fn from_snapshot(id: Id<A>, state: A, version: StreamVersion) -> Self {
        AggregateRoot {
            id,
            state,
            version,
            uncommitted: Vec::new(),
        }
    }

    /// The aggregate's id.
    pub fn id(&self) -> Id<A> {
        self.id
    }

    /// Its stream: `{A::TYPE}-{id}`.
    pub fn stream_id(&self) -> StreamId {
        A::stream_id(self.id)
    }

    /// The current state.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The version including uncommitted events.
    pub fn version(&self) -> StreamVersion {
        self.version
    }

    /// The version the store holds: `version()` minus the uncommitted events.
    pub fn committed_version(&self) -> StreamVersion {
        StreamVersion(self.version.0 - self.uncommitted.len() as u64)
    }

    /// The expectation to append the uncommitted events with: `NoStream` for a new
    /// aggregate, else `Exact(committed_version())`.
    pub fn expected_version(&self) -> ExpectedVersion {
        match self.committed_version() {
            StreamVersion::INITIAL => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        }
    }

    /// Applies an already stored event (while loading): the state evolves and the version
    /// advances, nothing is recorded.
    pub fn apply(&mut self, event: &A::Event) {
        self.state.apply(event);
        self.version = self.version.advanced(1);
    }

    /// Applies a stored event that the store says has `version`; an event out of sequence
    /// (a gap or a repeat) is a `DataLoss` error with reason `VERSION_OUT_OF_SEQUENCE`, so
    /// a loader never skips an event silently.
    pub fn apply_at(&mut self, version: StreamVersion, event: &A::Event) -> Result<(), Error> {
        let expected = self.version.advanced(1);
        if version != expected {
            return Err(Error::data_loss(
                "VERSION_OUT_OF_SEQUENCE",
                format!(
                    "stream {:?} delivered version {version} where {expected} was next",
                    self.stream_id().as_str()
                ),
            )
            .with_detail("stream", self.stream_id().as_str())
            .with_detail("expected", expected.0)
            .with_detail("actual", version.0));
        }
        self.apply(event);
        Ok(())
    }

    /// Records a new event: applies it and keeps it as uncommitted.
    pub fn record(&mut self, event: A::Event) {
        self.apply(&event);
        self.uncommitted.push(event);
    }

    /// Runs a decision against the current state and records the events it returns, each
    /// applied before the next is recorded. On error nothing is recorded.
    pub fn execute<F>(&mut self, decide: F) -> Result<&[A::Event], Error>
    where
        F: FnOnce(&A) -> Result<Vec<A::Event>, Error>,
    {
        let events = decide(&self.state)?;
        let first = self.uncommitted.len();
        for event in events {
            self.record(event);
        }
        Ok(&self.uncommitted[first..])
    }

    /// The events recorded and not yet taken.
    pub fn uncommitted(&self) -> &[A::Event] {
        &self.uncommitted
    }

    /// Takes the uncommitted events to save them; afterwards they count as committed. If
    /// saving fails, drop this instance and load the aggregate again.
    pub fn take_uncommitted(&mut self) -> Vec<A::Event> {
        std::mem::take(&mut self.uncommitted)
    }

    /// The state, giving up the root.
    pub fn into_state(self) -> A {
        self.state
    }
}
