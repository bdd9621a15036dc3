//! The owned background task that applies streams' retention policies.

use std::sync::Arc;
use std::time::Duration;

use flext_domain::Error;
use flext_ports::{Clock, Metrics, RetentionReport, StreamLifecycle, SystemClock};
use tokio::sync::watch;

/// Applies every stream's [`RetentionPolicy`](flext_ports::RetentionPolicy) (a maximum
/// count, a maximum age) every `every`, with
/// [`StreamLifecycle::apply_retention`], until [`RetentionTask::shutdown`] or drop.
///
/// A pass is idempotent (it truncates or archives below a version it computes again each
/// time), so every instance of a service may run one: they do the same work and leave the
/// same result, no ownership needed. A failed pass is logged (`tracing`, warn) and counted
/// (`flext.retention.failures`), and the next one runs as planned; each pass records
/// `flext.retention.removed` and `flext.retention.archived`.
///
/// ```
/// use std::time::Duration;
/// use flext::application::RetentionTask;
/// use flext::memory::InMemoryEventStore;
/// use flext::ports::{RetentionPolicy, StreamLifecycle};
/// use flext::StreamId;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), flext::Error> {
/// let store = InMemoryEventStore::new();
/// store
///     .set_retention(&StreamId::new("telemetry-1")?, Some(RetentionPolicy::max_count(1_000)))
///     .await?;
/// let task = RetentionTask::builder(store).every(Duration::from_secs(60)).start();
/// task.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct RetentionTask {
    stop: watch::Sender<bool>,
    passes: watch::Receiver<Option<Result<RetentionReport, Error>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RetentionTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionTask").finish_non_exhaustive()
    }
}

/// Builds a [`RetentionTask`].
pub struct RetentionTaskBuilder<S> {
    store: S,
    every: Duration,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
}

impl<S> std::fmt::Debug for RetentionTaskBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionTaskBuilder")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl RetentionTask {
    /// A task over `store`, passing every minute by the system clock.
    pub fn builder<S>(store: S) -> RetentionTaskBuilder<S> {
        RetentionTaskBuilder {
            store,
            every: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            metrics: Arc::new(()),
        }
    }

    /// The outcome of the latest pass (`None` before the first), to watch.
    pub fn passes(&self) -> watch::Receiver<Option<Result<RetentionReport, Error>>> {
        self.passes.clone()
    }

    /// Stops the task (a pass in hand finishes first).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send_replace(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for RetentionTask {
    fn drop(&mut self) {
        let _ = self.stop.send_replace(true);
    }
}

impl<S> RetentionTaskBuilder<S>
where
    S: StreamLifecycle + Send + Sync + 'static,
{
    /// How often it passes (at least a millisecond; every minute by default). The first
    /// pass runs at once.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every.max(Duration::from_millis(1));
        self
    }

    /// The clock whose `now` ages are measured against.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Where it records its counters.
    pub fn metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Starts the task on the current tokio runtime.
    pub fn start(self) -> RetentionTask {
        let (stop, mut stopped) = watch::channel(false);
        let (report, passes) = watch::channel(None);
        let RetentionTaskBuilder {
            store,
            every,
            clock,
            metrics,
        } = self;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
                let pass = store.apply_retention(clock.now()).await;
                match &pass {
                    Ok(r) => {
                        metrics.count("flext.retention.removed", r.removed, &[]);
                        metrics.count("flext.retention.archived", r.archived, &[]);
                    }
                    Err(e) => {
                        metrics.count("flext.retention.failures", 1, &[]);
                        tracing::warn!(error = %e, "a retention pass failed");
                    }
                }
                report.send_replace(Some(pass));
            }
        });
        RetentionTask { stop, passes, task }
    }
}
