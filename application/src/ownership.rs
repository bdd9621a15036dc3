//! Ownership of checkpointed consumers across processes: one coordinator per instance
//! announces the instance, takes a fair share of its consumers' leases, renews them by
//! heartbeat, hands extras over when instances join, and takes orphans when they leave.
//!
//! Runners (the projection runner, or a consumer of your own) [`Ownership::claim`] a
//! consumer and get a [`ConsumerSlot`]: they wait for [`Grant::Held`], run their batches
//! under its [`Lease`] (every checkpoint write fenced by it), finish the batch in hand and
//! [`ConsumerSlot::release`] on [`Grant::Release`], and go back to waiting when the store
//! refuses a write with `OWNERSHIP_LOST`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flext_domain::Error;
use flext_ports::{ConsumerRecord, Instance, Lease, Member, Metrics, OwnershipStore};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How the consumers are spread over the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distribution {
    /// Each instance takes a fair share (at most `ceil(P / N)` of P consumers among N
    /// live instances that claim consumers) and gives extras back when instances join
    /// (the default).
    #[default]
    Balanced,
    /// Hot/cold: the longest-running live instance runs every consumer; the others stand
    /// by and take over when it leaves or stops renewing.
    HotStandby,
}

/// How ownership is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnershipOptions {
    /// How long a lease lasts without renewal (default 1.5 s): a paused, cut-off or
    /// killed owner loses its consumers this long after its last renewal at most.
    pub lease_ttl: Duration,
    /// How often leases are renewed and the instance announced (default 375 ms, a
    /// quarter of the lease: three renewals may fail before a lease lapses).
    pub renew_every: Duration,
    /// How often the coordinator looks for consumers to take or give back, besides the
    /// store's notifications of releases (default 50 ms: a read of the consumers' rows;
    /// SQLite cannot notify other processes of a release).
    pub poll: Duration,
    /// How consumers are spread.
    pub distribution: Distribution,
}

impl Default for OwnershipOptions {
    fn default() -> Self {
        OwnershipOptions {
            lease_ttl: Duration::from_millis(1_500),
            renew_every: Duration::from_millis(375),
            poll: Duration::from_millis(50),
            distribution: Distribution::Balanced,
        }
    }
}

/// What this instance holds of one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Not held here: another instance owns it, or nobody yet.
    Vacant,
    /// Held under this lease: run.
    Held(Lease),
    /// Held, but to be handed over (a rebalance): finish the batch in hand, then
    /// [`ConsumerSlot::release`].
    Release(Lease),
}

impl Grant {
    /// The lease, if held.
    pub fn lease(&self) -> Option<&Lease> {
        match self {
            Grant::Vacant => None,
            Grant::Held(l) | Grant::Release(l) => Some(l),
        }
    }
}

struct Inner<S> {
    store: S,
    instance: Instance,
    options: OwnershipOptions,
    slots: Mutex<BTreeMap<String, watch::Sender<Grant>>>,
    wake: Notify,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<dyn Metrics>,
}

impl<S> Inner<S> {
    fn slots(&self) -> MutexGuard<'_, BTreeMap<String, watch::Sender<Grant>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owned_gauge(&self, consumer: &str, owned: bool) {
        self.metrics.gauge(
            "flext.consumer.owned",
            if owned { 1.0 } else { 0.0 },
            &[
                ("consumer", consumer),
                ("instance", self.instance.name.as_str()),
            ],
        );
    }
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        if let Some(t) = self
            .task
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

/// One instance's share of the consumers of a store; see the module docs. Clones share
/// the coordinator.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use flext::application::{Grant, Ownership, OwnershipOptions};
/// use flext::memory::InMemoryEventStore;
/// use flext::ports::{Instance, OwnershipStore};
///
/// let store = InMemoryEventStore::new();
/// let ownership = Ownership::start(store.clone(), Instance::named("a"), OwnershipOptions::default());
/// let mut slot = ownership.claim("mailer")?;
/// let lease = slot.acquired().await.expect("the only instance gets it");
/// // Checkpoints written under the lease are fenced by its epoch.
/// store.save_checkpoint_fenced(&lease, flext::Position(7)).await?;
/// slot.release(&lease).await?;
/// ownership.shutdown().await;
/// # Ok::<(), flext::Error>(()) }).unwrap();
/// ```
pub struct Ownership<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Ownership<S> {
    fn clone(&self) -> Self {
        Ownership {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> std::fmt::Debug for Ownership<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("instance", &self.inner.instance.name)
            .finish_non_exhaustive()
    }
}

impl<S> Ownership<S>
where
    S: OwnershipStore + Clone + 'static,
{
    /// Starts the coordinator of `instance` on `store` (inside a Tokio runtime).
    pub fn start(store: S, instance: Instance, options: OwnershipOptions) -> Self {
        Ownership::start_with_metrics(store, instance, options, Arc::new(()))
    }

    /// Starts it reporting to `metrics`: the gauge `flext.consumer.owned` (1 while held
    /// here, labels `consumer`, `instance`) and the counts `flext.consumer.acquired`,
    /// `flext.consumer.released` and `flext.consumer.ownership_lost` (label `cause`:
    /// `commit` when the store refused a write, `renewal` when a renewal found the lease
    /// gone).
    pub fn start_with_metrics(
        store: S,
        instance: Instance,
        options: OwnershipOptions,
        metrics: Arc<dyn Metrics>,
    ) -> Self {
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            store,
            instance,
            options,
            slots: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            shutdown,
            task: Mutex::new(None),
            metrics,
        });
        let task = tokio::spawn(coordinate(Arc::downgrade(&inner)));
        *inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ownership { inner }
    }

    /// This instance.
    pub fn instance(&self) -> &Instance {
        &self.inner.instance
    }

    /// The options.
    pub fn options(&self) -> &OwnershipOptions {
        &self.inner.options
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Takes part in the ownership of `consumer`: the coordinator acquires it when it is
    /// this instance's to run. A second claim of one name in one coordinator is an
    /// `AlreadyExists` error.
    pub fn claim(&self, consumer: &str) -> Result<ConsumerSlot<S>, Error> {
        let mut slots = self.inner.slots();
        if slots.contains_key(consumer) {
            return Err(Error::already_exists(
                "DUPLICATE_CONSUMER",
                format!("consumer {consumer:?} is already claimed by this instance"),
            )
            .with_detail("consumer", consumer));
        }
        let (tx, rx) = watch::channel(Grant::Vacant);
        slots.insert(consumer.to_owned(), tx);
        drop(slots);
        self.inner.wake.notify_one();
        Ok(ConsumerSlot {
            name: consumer.to_owned(),
            rx,
            inner: Arc::clone(&self.inner),
        })
    }

    /// Every consumer the store knows, with its owner, epoch and checkpoint (read from
    /// the store: the view every instance shares).
    pub async fn consumers(&self) -> Result<Vec<ConsumerRecord>, Error> {
        self.inner.store.consumers().await
    }

    /// Stops the coordinator, releases what is still held here and withdraws the
    /// instance. Runners should have released their consumers first (after the batch in
    /// hand); what they still hold is released as is.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send_replace(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = task {
            let _ = t.await;
        }
        let held: Vec<Lease> = self
            .inner
            .slots()
            .values()
            .filter_map(|g| g.borrow().lease().cloned())
            .collect();
        for lease in held {
            let _ = self.inner.store.release_lease(&lease).await;
        }
        let _ = self.inner.store.leave(&self.inner.instance).await;
    }

    /// Stops the coordinator without releasing anything, as a crash would: leases lapse
    /// when they expire. For tests of failover.
    pub fn abort(&self) {
        let _ = self.inner.shutdown.send_replace(true);
        if let Some(t) = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

/// One consumer's place in an [`Ownership`]: what this instance holds of it. Dropping it
/// withdraws the claim (a lease still held lapses or is released at shutdown).
pub struct ConsumerSlot<S> {
    name: String,
    rx: watch::Receiver<Grant>,
    inner: Arc<Inner<S>>,
}

impl<S> std::fmt::Debug for ConsumerSlot<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSlot")
            .field("name", &self.name)
            .field("grant", &*self.rx.borrow())
            .finish()
    }
}

impl<S> Drop for ConsumerSlot<S> {
    fn drop(&mut self) {
        self.inner.slots().remove(&self.name);
    }
}

impl<S: OwnershipStore> ConsumerSlot<S> {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance the slot belongs to.
    pub fn instance(&self) -> &Instance {
        &self.inner.instance
    }

    /// What this instance holds now.
    pub fn grant(&self) -> Grant {
        self.rx.borrow().clone()
    }

    /// Waits until this instance holds the consumer; `None` when the coordinator stopped.
    pub async fn acquired(&mut self) -> Option<Lease> {
        loop {
            if let Grant::Held(l) = &*self.rx.borrow_and_update() {
                return Some(l.clone());
            }
            if *self.inner.shutdown.borrow() {
                return None;
            }
            let mut stop = self.inner.shutdown.subscribe();
            tokio::select! {
                changed = self.rx.changed() => changed.ok()?,
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Waits until the grant changes (cancel-safe).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether `lease` is what this instance still holds to run with: false once the
    /// lease was lost, replaced or is to be handed over.
    pub fn runs_under(&self, lease: &Lease) -> bool {
        matches!(&*self.rx.borrow(), Grant::Held(l) if l.epoch == lease.epoch)
    }

    /// Gives the consumer up (after the batch in hand committed), so another instance
    /// takes it at once.
    pub async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.vacate(lease);
        let result = self.inner.store.release_lease(lease).await;
        self.inner.metrics.count(
            "flext.consumer.released",
            1,
            &[("consumer", self.name.as_str())],
        );
        self.inner.wake.notify_one();
        result
    }

    /// Says the store refused a write under `lease` (`OWNERSHIP_LOST`): the consumer is
    /// no longer held here; the coordinator may compete for it again later.
    pub fn lost(&self, lease: &Lease) {
        self.vacate(lease);
        self.inner.metrics.count(
            "flext.consumer.ownership_lost",
            1,
            &[("consumer", self.name.as_str()), ("cause", "commit")],
        );
        self.inner.wake.notify_one();
    }

    fn vacate(&self, lease: &Lease) {
        if let Some(tx) = self.inner.slots().get(&self.name) {
            tx.send_if_modified(|g| {
                if g.lease().is_some_and(|l| l.epoch == lease.epoch) {
                    *g = Grant::Vacant;
                    true
                } else {
                    false
                }
            });
        }
        self.inner.owned_gauge(&self.name, false);
    }
}

/// What this instance should do with its share of the consumers.
#[derive(Debug, PartialEq, Eq)]
struct Share {
    /// The most it should hold.
    target: usize,
    /// Give one back: another live instance holds fewer than its floor and this one
    /// holds the most (ties by id), so exactly one instance gives.
    give_one: bool,
    /// Leave free consumers to an instance below its floor.
    defer: bool,
}

fn share(
    distribution: Distribution,
    me: &Instance,
    members: &[Member],
    records: &[ConsumerRecord],
    total: usize,
    held: usize,
) -> Share {
    let n = members.len().max(1);
    match distribution {
        Distribution::HotStandby => {
            let leader = members.first().is_none_or(|m| m.instance.id == me.id);
            Share {
                target: if leader { total } else { 0 },
                give_one: false,
                defer: false,
            }
        }
        Distribution::Balanced => {
            let hi = total.div_ceil(n);
            let lo = total / n;
            let count = |id| {
                records
                    .iter()
                    .filter(|r| r.owned && r.owner.as_ref().is_some_and(|o| o.id == id))
                    .count()
            };
            let starving = members
                .iter()
                .any(|m| m.instance.id != me.id && count(m.instance.id) < lo);
            let richest = members
                .iter()
                .map(|m| (count(m.instance.id), std::cmp::Reverse(m.instance.id)))
                .max()
                .is_some_and(|(_, std::cmp::Reverse(id))| id == me.id);
            Share {
                target: hi,
                give_one: held > lo && starving && richest,
                defer: starving && held >= lo,
            }
        }
    }
}

/// The coordinator's loop: heartbeat (announce, renew), then take or give back.
async fn coordinate<S>(weak: std::sync::Weak<Inner<S>>)
where
    S: OwnershipStore + Clone + 'static,
{
    let (store, mut watcher, mut stop, options) = match weak.upgrade() {
        Some(inner) => (
            inner.store.clone(),
            inner.store.watch_consumers(),
            inner.shutdown.subscribe(),
            inner.options,
        ),
        None => return,
    };
    let mut members: Vec<Member> = Vec::new();
    let mut next_beat = tokio::time::Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if *stop.borrow() {
            return;
        }
        // An instance that claims no consumer does not announce itself: counted among
        // the members, it would lower everyone's share of consumers it never takes.
        let claims = !inner.slots().is_empty();
        if claims && tokio::time::Instant::now() >= next_beat {
            next_beat = tokio::time::Instant::now() + options.renew_every;
            if let Ok(m) = store.announce(&inner.instance, options.lease_ttl).await {
                members = m;
            }
            let held: Vec<(String, Lease)> = inner
                .slots()
                .iter()
                .filter_map(|(n, g)| g.borrow().lease().map(|l| (n.clone(), l.clone())))
                .collect();
            for (name, lease) in held {
                let renewed = store.renew_lease(&lease, options.lease_ttl).await;
                let slots = inner.slots();
                let Some(tx) = slots.get(&name) else { continue };
                match renewed {
                    Ok(l) => {
                        tx.send_if_modified(|g| match g {
                            Grant::Held(old) | Grant::Release(old) if old.epoch == l.epoch => {
                                old.expires_at = l.expires_at;
                                false
                            }
                            _ => false,
                        });
                    }
                    Err(e) if e.reason() == "OWNERSHIP_LOST" => {
                        tx.send_if_modified(|g| {
                            if g.lease().is_some_and(|old| old.epoch == lease.epoch) {
                                *g = Grant::Vacant;
                                true
                            } else {
                                false
                            }
                        });
                        drop(slots);
                        inner.owned_gauge(&name, false);
                        inner.metrics.count(
                            "flext.consumer.ownership_lost",
                            1,
                            &[("consumer", name.as_str()), ("cause", "renewal")],
                        );
                        tracing::warn!(consumer = %name, epoch = lease.epoch, "lease lost");
                    }
                    // A transient failure: the lease may still lapse; the fence guards.
                    Err(_) => {}
                }
            }
        }
        if let Ok(records) = store.consumers().await {
            rebalance(&inner, &store, &members, &records).await;
        }
        drop(inner);
        let wake = weak.upgrade();
        let Some(inner) = wake else { return };
        tokio::select! {
            _ = tokio::time::sleep(options.poll) => {}
            _ = watcher.changed() => {}
            _ = inner.wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn rebalance<S>(inner: &Inner<S>, store: &S, members: &[Member], records: &[ConsumerRecord])
where
    S: OwnershipStore,
{
    let (names, held): (Vec<String>, usize) = {
        let slots = inner.slots();
        let held = slots
            .values()
            .filter(|g| matches!(&*g.borrow(), Grant::Held(_)))
            .count();
        (slots.keys().cloned().collect(), held)
    };
    let Share {
        target,
        give_one,
        defer,
    } = share(
        inner.options.distribution,
        &inner.instance,
        members,
        records,
        names.len(),
        held,
    );
    let handing_over = inner
        .slots()
        .values()
        .any(|g| matches!(&*g.borrow(), Grant::Release(_)));
    if handing_over {
        return;
    }
    if held > target || give_one {
        let mut excess = if give_one { 1 } else { held - target };
        let slots = inner.slots();
        // Hand over the most recently acquired first (highest epoch is not comparable
        // across consumers; the name order is stable and as good).
        for tx in slots.values().rev() {
            if excess == 0 {
                break;
            }
            tx.send_if_modified(|g| match g {
                Grant::Held(l) => {
                    *g = Grant::Release(l.clone());
                    excess -= 1;
                    true
                }
                _ => false,
            });
        }
        return;
    }
    if held >= target || defer {
        return;
    }
    let mut want = target - held;
    let mut free: Vec<&String> = names
        .iter()
        .filter(|n| {
            let vacant = inner
                .slots()
                .get(*n)
                .is_some_and(|g| matches!(&*g.borrow(), Grant::Vacant));
            vacant && !records.iter().any(|r| &r.consumer == *n && r.owned)
        })
        .collect();
    fastrand::shuffle(&mut free);
    for name in free {
        if want == 0 {
            break;
        }
        // Taken by another instance meanwhile, or the store is away: next round.
        let Ok(Some(lease)) = store
            .acquire_lease(name, &inner.instance, inner.options.lease_ttl)
            .await
        else {
            continue;
        };
        let placed = inner.slots().get(name).is_some_and(|tx| {
            tx.send_replace(Grant::Held(lease.clone()));
            true
        });
        if placed {
            want -= 1;
            inner.owned_gauge(name, true);
            inner
                .metrics
                .count("flext.consumer.acquired", 1, &[("consumer", name.as_str())]);
            tracing::info!(consumer = %name, epoch = lease.epoch, "consumer acquired");
        } else {
            // Its claim was withdrawn meanwhile.
            let _ = store.release_lease(&lease).await;
        }
    }
}
