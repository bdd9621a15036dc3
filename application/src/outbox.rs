//! The outbox for messages that are not events: written with
//! [`OutboxStore::send_in`] in the transaction of the business data, published by an
//! [`OutboxRelay`] once that transaction committed, the same way a [`Relay`](crate::Relay)
//! publishes events: from a fenced checkpoint owned by one instance, the checkpoint moved
//! (and the published messages removed) only past what the broker acknowledged.

use std::time::Duration;

use flext_domain::{Error, Position};
use flext_ports::{Instance, OutboxStore, OwnershipStore, Publisher};
use tokio::sync::watch;

use crate::jobs::Backoff;
use crate::ownership::{ConsumerSlot, Ownership, OwnershipOptions};

/// Builds an [`OutboxRelay`].
pub struct OutboxRelayBuilder<S, P> {
    name: String,
    store: S,
    publisher: P,
    poll: Duration,
    batch: usize,
    instance: Instance,
    ownership: OwnershipOptions,
    shared: Option<Ownership<S>>,
    backoff: Backoff,
}

/// Publishes the outbox's messages as long as it runs; stop it with
/// [`OutboxRelay::shutdown`]. Messages that are not events are written with
/// [`OutboxStore::send_in`] in the transaction of the business data and published once
/// that transaction committed, the same way a [`Relay`](crate::Relay) publishes events:
/// from a fenced checkpoint owned by one instance, the checkpoint moved (and the published
/// messages removed) only past what the broker acknowledged.
///
/// ```no_run
/// # async fn demo<S, P>(store: S, publisher: P) -> Result<(), flext::Error>
/// # where S: flext::ports::OutboxStore + flext::ports::OwnershipStore + Clone,
/// #       P: flext::ports::Publisher {
/// use flext::application::OutboxRelay;
/// use flext::ports::{Context, OutboxMessage};
///
/// // In the transaction of the business data:
/// let mut tx = store.begin().await?;
/// let message = OutboxMessage::json("billing.invoice.requested", &serde_json::json!({"order": 7}), &Context::new())?;
/// store.send_in(&mut tx, &message).await?;
/// store.commit(tx).await?;
///
/// // Once per service: publishes what committed.
/// let relay = OutboxRelay::builder("billing.outbox", store, publisher).start()?;
/// # relay.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct OutboxRelay {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay").finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay named `name` (its checkpoint and lease are kept under the name) of
    /// `store`'s outbox into `publisher`.
    pub fn builder<S, P>(
        name: impl Into<String>,
        store: S,
        publisher: P,
    ) -> OutboxRelayBuilder<S, P> {
        OutboxRelayBuilder {
            name: name.into(),
            store,
            publisher,
            poll: Duration::from_millis(50),
            batch: 256,
            instance: Instance::current(),
            ownership: OwnershipOptions::default(),
            shared: None,
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
        }
    }

    /// Stops publishing (the batch in hand is finished) and releases the relay's lease.
    pub async fn shutdown(self) {
        let _ = self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

impl<S, P> OutboxRelayBuilder<S, P>
where
    S: OutboxStore + OwnershipStore + Clone,
    P: Publisher,
{
    /// How often it looks for new messages when the outbox is empty (default 50 ms).
    #[must_use]
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// How many messages it publishes at once, at most (default 256).
    #[must_use]
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// The instance it runs as (default [`Instance::current`]).
    #[must_use]
    pub fn instance(mut self, instance: Instance) -> Self {
        self.instance = instance;
        self
    }

    /// The ownership options of its lease.
    #[must_use]
    pub fn ownership(mut self, options: OwnershipOptions) -> Self {
        self.ownership = options;
        self
    }

    /// Competes for the relay's lease through the service's `ownership` instead of its
    /// own.
    #[must_use]
    pub fn shared_ownership(mut self, ownership: Ownership<S>) -> Self {
        self.shared = Some(ownership);
        self
    }

    /// The waits after failed publishes (default 100 ms doubling up to 5 s, jittered).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Starts it on the current Tokio runtime.
    pub fn start(mut self) -> Result<OutboxRelay, Error> {
        let (ownership, own) = match self.shared.take() {
            Some(shared) => (shared, false),
            None => (
                Ownership::start(self.store.clone(), self.instance.clone(), self.ownership),
                true,
            ),
        };
        let slot = ownership.claim(&self.name)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(self, ownership, own, slot, stopped));
        Ok(OutboxRelay { stop, task })
    }
}

/// Waits `wait`, or less when stopped or the lease changes; whether it was stopped.
async fn pause<S>(
    wait: Duration,
    slot: &mut ConsumerSlot<S>,
    stopped: &mut watch::Receiver<bool>,
) -> bool
where
    S: OwnershipStore + Clone + Send + Sync + 'static,
{
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = slot.changed() => false,
        _ = stopped.wait_for(|s| *s) => true,
    }
}

async fn run<S, P>(
    b: OutboxRelayBuilder<S, P>,
    ownership: Ownership<S>,
    own: bool,
    mut slot: ConsumerSlot<S>,
    mut stopped: watch::Receiver<bool>,
) where
    S: OutboxStore + OwnershipStore + Clone,
    P: Publisher,
{
    let mut failures = 0u32;
    'standby: loop {
        let lease = tokio::select! {
            l = slot.acquired() => match l {
                Some(l) => l,
                None => break,
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        let mut after = match b.store.load_checkpoint(&b.name).await {
            Ok(p) => p.map_or(0, |p| p.0),
            Err(e) => {
                tracing::warn!(relay = %b.name, error = %e, "the outbox relay cannot read its checkpoint");
                let _ = slot.release(&lease).await;
                failures = failures.saturating_add(1);
                if pause(b.backoff.jittered(failures), &mut slot, &mut stopped).await {
                    break;
                }
                continue;
            }
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
            let messages = match b.store.outbox_after(after, b.batch).await {
                Ok(m) if m.is_empty() => {
                    if pause(b.poll, &mut slot, &mut stopped).await {
                        let _ = slot.release(&lease).await;
                        break 'standby;
                    }
                    continue;
                }
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(relay = %b.name, error = %e, "the outbox relay cannot read the outbox");
                    failures = failures.saturating_add(1);
                    if pause(b.backoff.jittered(failures), &mut slot, &mut stopped).await {
                        let _ = slot.release(&lease).await;
                        break 'standby;
                    }
                    continue;
                }
            };
            let (sent, error) = match b.publisher.publish(&messages).await {
                Ok(()) => (messages.len(), None),
                Err((i, e)) => (i.min(messages.len()), Some(e)),
            };
            if let Some(last) = sent.checked_sub(1).and_then(|i| messages.get(i)) {
                let through = last.order;
                let moved = async {
                    let mut tx = b.store.begin().await?;
                    b.store
                        .set_checkpoint(&mut tx, &lease, Position(through))
                        .await?;
                    b.store.outbox_sent(&mut tx, through).await?;
                    b.store.commit(tx).await
                }
                .await;
                match moved {
                    Ok(()) => after = through,
                    Err(e) if e.reason() == "OWNERSHIP_LOST" => {
                        slot.lost(&lease);
                        continue 'standby;
                    }
                    Err(e) => {
                        // Published and not marked: published again, dropped by the
                        // broker's and the inbox's deduplication.
                        tracing::warn!(relay = %b.name, error = %e, "the outbox relay cannot move its checkpoint");
                    }
                }
            }
            match error {
                None => failures = 0,
                Some(e) => {
                    tracing::warn!(relay = %b.name, error = %e, "the outbox relay cannot publish");
                    failures = failures.saturating_add(1);
                    if pause(b.backoff.jittered(failures), &mut slot, &mut stopped).await {
                        let _ = slot.release(&lease).await;
                        break 'standby;
                    }
                }
            }
        }
    }
    drop(slot);
    if own {
        ownership.shutdown().await;
    }
}
