//! A subscription to the global order: catch up from a position, then follow live.

use std::time::Duration;

use flext_domain::{Error, Position, RecordedEvent};
use flext_ports::{AppendWatcher, EventStore, FilteredPage, WatchAppends};

/// How a [`Subscription`] waits once it has caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// How often to read again while the store's notifications are down (PostgreSQL's
    /// LISTEN connection lost and reconnecting). Default 250 ms.
    pub poll_interval: Duration,
    /// Also read again after this long without a notification, even when they are up
    /// (default 30 s): bounds the delay after a writer that died between its commit and
    /// its notification, or a notification path that failed unnoticed. Set it shorter
    /// when writers in other processes cannot notify (several processes writing one
    /// SQLite file); `None` relies on notifications alone.
    pub idle_recheck: Option<Duration>,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions {
            poll_interval: Duration::from_millis(250),
            idle_recheck: Some(Duration::from_secs(30)),
        }
    }
}

/// Reads the global order after a position: every event once, in position order, first
/// what is stored (catch-up), then each new append as it commits (live), with no gap and
/// no duplicate between the two. It relies on the store's gap-safe `read_all`.
///
/// Live delivery waits on the store's append notifications (an in-process signal for
/// memory and SQLite, LISTEN/NOTIFY for PostgreSQL), polls only while they are down, and
/// reads again shortly while the store says events are withheld for gap safety.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use flext::application::Subscription;
/// use flext::{EventId, ExpectedVersion, NewEvent, Position, StreamId, StreamVersion};
/// use flext::memory::InMemoryEventStore;
/// use flext::ports::EventStore;
///
/// let store = InMemoryEventStore::new();
/// let stream = StreamId::new("order-1")?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::new(EventId::new(), "placed", "{}")]).await?;
/// let mut sub = Subscription::new(store.clone(), Position::START);
/// assert_eq!(sub.next_batch(100).await?.len(), 1); // caught up
/// let writer = store.clone();
/// tokio::spawn(async move {
///     let paid = NewEvent::new(EventId::new(), "paid", "{}");
///     writer.append(&stream, ExpectedVersion::Exact(StreamVersion(1)), vec![paid]).await
/// });
/// let live = sub.next_batch(100).await?; // waits for the append
/// assert_eq!(live[0].event_type, "paid");
/// # Ok::<(), flext::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct Subscription<S> {
    store: S,
    position: Position,
    watcher: AppendWatcher,
    options: SubscriptionOptions,
}

/// The first and longest waits while the store withholds events for gap safety.
const WITHHELD_FIRST: Duration = Duration::from_millis(2);
const WITHHELD_MAX: Duration = Duration::from_millis(200);

impl<S: EventStore + WatchAppends> Subscription<S> {
    /// Subscribes to the events after `after`.
    pub fn new(store: S, after: Position) -> Self {
        Subscription::with_options(store, after, SubscriptionOptions::default())
    }

    /// Subscribes with `options`.
    pub fn with_options(store: S, after: Position, options: SubscriptionOptions) -> Self {
        let watcher = store.watch_appends();
        Subscription {
            store,
            position: after,
            watcher,
            options,
        }
    }

    /// The position of the last event returned (or the start).
    pub fn position(&self) -> Position {
        self.position
    }

    /// Continues after `position` instead (a rebuild, a reloaded checkpoint).
    pub fn seek(&mut self, position: Position) {
        self.position = position;
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Up to `max` next events now, without waiting: empty when caught up.
    pub async fn poll_batch(&mut self, max: usize) -> Result<Vec<RecordedEvent>, Error> {
        Ok(self
            .poll_page(max, None)
            .await?
            .map(|page| page.events)
            .unwrap_or_default())
    }

    /// Up to `max` next events, waiting until there is at least one. Cancel-safe: a
    /// cancelled call returned nothing and moved nothing.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<RecordedEvent>, Error> {
        Ok(self.next_page(max, None).await?.events)
    }

    /// Up to `max` next events whose type is one of `types` (every event for `None`),
    /// now, without waiting, and how far the read looked; `None` when nothing new was
    /// there. A page may hold no events when all it looked at was of other types: the
    /// subscription has moved past them all the same. The SQL stores filter in their
    /// query ([`EventStore::read_all_of_types`]).
    pub async fn poll_page(
        &mut self,
        max: usize,
        types: Option<&[&str]>,
    ) -> Result<Option<FilteredPage>, Error> {
        let max = max.max(1);
        let page = match types {
            None => {
                let events = self.store.read_all(self.position, max).await?;
                let through = events.last().map_or(self.position, |e| e.position);
                FilteredPage { events, through }
            }
            Some(types) => {
                self.store
                    .read_all_of_types(self.position, max, types)
                    .await?
            }
        };
        if page.through <= self.position && page.events.is_empty() {
            return Ok(None);
        }
        self.position = page.through.max(self.position);
        Ok(Some(page))
    }

    /// [`Subscription::poll_page`], waiting until something new is there. Cancel-safe
    /// like [`Subscription::next_batch`].
    pub async fn next_page(
        &mut self,
        max: usize,
        types: Option<&[&str]>,
    ) -> Result<FilteredPage, Error> {
        let mut withheld_wait = WITHHELD_FIRST;
        loop {
            if let Some(page) = self.poll_page(max, types).await? {
                return Ok(page);
            }
            if self.store.read_all_withheld(self.position).await? {
                // Committed events wait behind an older open transaction, which may end
                // without notifying anyone: look again soon (or at the next append).
                let _ = tokio::time::timeout(withheld_wait, self.watcher.changed()).await;
                withheld_wait = (withheld_wait * 2).min(WITHHELD_MAX);
                continue;
            }
            withheld_wait = WITHHELD_FIRST;
            self.wait().await;
        }
    }

    async fn wait(&mut self) {
        let limit = if self.watcher.is_live() {
            self.options.idle_recheck
        } else {
            Some(self.options.poll_interval)
        };
        match limit {
            Some(t) => {
                let _ = tokio::time::timeout(t, self.watcher.changed()).await;
            }
            None => self.watcher.changed().await,
        }
    }
}
