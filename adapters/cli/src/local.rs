//! The service's own consumers, run by the command line inside the service's binary when
//! an action needs a consumer that no instance runs.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use flext_domain::Error;
use flext_ports::OwnershipStore;
use tokio::sync::Mutex;

use crate::store::{Db, on_store};

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How to start the service's consumers (projections, reactors, process managers) on the
/// store the command line opened. They take the leases of what nobody runs, as any
/// instance would; the command line's control request is then carried out by them.
pub struct LocalConsumers {
    start: Box<dyn Fn(Db) -> Boxed<Result<Running, Error>> + Send + Sync>,
}

impl LocalConsumers {
    /// `start` starts the consumers on the given store and says how to stop them.
    pub fn new<F, Fut>(start: F) -> LocalConsumers
    where
        F: Fn(Db) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Running, Error>> + Send + 'static,
    {
        LocalConsumers {
            start: Box::new(move |db| Box::pin(start(db))),
        }
    }
}

/// Consumers started by [`LocalConsumers`]: stopped (their leases given back) when the
/// command is done.
pub struct Running {
    stop: Box<dyn FnOnce() -> Boxed<()> + Send>,
}

impl Running {
    /// `stop` shuts the consumers down (e.g. `Projections::shutdown`).
    pub fn new<F, Fut>(stop: F) -> Running
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Running {
            stop: Box::new(move || Box::pin(stop())),
        }
    }
}

/// The consumers of one command-line run: started at most once, when first needed.
pub(crate) struct Local {
    consumers: LocalConsumers,
    db: Db,
    running: Mutex<Option<Running>>,
}

impl Local {
    pub(crate) fn new(consumers: LocalConsumers, db: Db) -> Local {
        Local {
            consumers,
            db,
            running: Mutex::new(None),
        }
    }

    /// Makes sure an instance owns consumer `name`: when none does, starts the service's
    /// consumers here and waits (up to `timeout`) until they hold its lease. When they do
    /// not run it either, the request stays queued as without them.
    pub(crate) async fn own(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let owned = |records: &[flext_ports::ConsumerRecord]| {
            records.iter().any(|r| r.consumer == name && r.owned)
        };
        if owned(&on_store!(&self.db, s => s.consumers().await)?) {
            return Ok(());
        }
        {
            let mut running = self.running.lock().await;
            if running.is_none() {
                eprintln!("no instance runs {name:?}: starting the service's consumers here");
                *running = Some((self.consumers.start)(self.db.clone()).await?);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut watcher = on_store!(&self.db, s => s.watch_consumers());
        while tokio::time::Instant::now() < deadline {
            if owned(&on_store!(&self.db, s => s.consumers().await)?) {
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), watcher.changed()).await;
        }
        Ok(())
    }

    /// Stops the consumers started here, if any.
    pub(crate) async fn stop(&self) {
        if let Some(running) = self.running.lock().await.take() {
            (running.stop)().await;
        }
    }
}
