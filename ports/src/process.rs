//! The process port: the state of process managers (sagas), kept per instance in the
//! store's database and written in the transaction that moves the manager's checkpoint,
//! together with the commands and deadlines the manager emits (as scheduled messages).

use std::future::Future;

use flext_domain::Error;
use serde::{Deserialize, Serialize};

use crate::{ProjectionStore, ScheduleStore, Scheduled};

/// One process instance's state as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProcess {
    /// The manager's state, as JSON.
    pub state: Vec<u8>,
    /// How many events the instance has handled (1 after the event that started it).
    pub version: u64,
}

/// A store that keeps process managers' state. Every write goes through the projection
/// transaction `tx`, so the state, the messages scheduled or cancelled by the step and the
/// manager's checkpoint commit together or not at all; a read through `tx` sees what
/// `tx` wrote. Every adapter keeps the same rules (the conformance suite checks them).
pub trait ProcessStore: ProjectionStore + ScheduleStore {
    /// The state of `manager`'s instance `association`, if it runs.
    fn load_process(
        &self,
        tx: &mut Self::Transaction,
        manager: &str,
        association: &str,
    ) -> impl Future<Output = Result<Option<StoredProcess>, Error>> + Send;

    /// Stores the state of `manager`'s instance `association` (starting it, or replacing
    /// its state).
    fn save_process(
        &self,
        tx: &mut Self::Transaction,
        manager: &str,
        association: &str,
        process: &StoredProcess,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Ends `manager`'s instance `association`: its state is removed (an event for it
    /// afterwards finds none, and may start a new instance).
    fn end_process(
        &self,
        tx: &mut Self::Transaction,
        manager: &str,
        association: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// [`ScheduleStore::schedule`] inside `tx`.
    fn schedule_in(
        &self,
        tx: &mut Self::Transaction,
        message: &Scheduled,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// [`ScheduleStore::cancel`] inside `tx`: whether something was pending.
    fn cancel_in(
        &self,
        tx: &mut Self::Transaction,
        key: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The running instances of `manager` (association and state), by association; read
    /// outside any transaction, for operators and tests.
    fn processes(
        &self,
        manager: &str,
    ) -> impl Future<Output = Result<Vec<(String, StoredProcess)>, Error>> + Send;
}

/// A process's state read back from a SQL store: a version no instance can have is a
/// `DataLoss` error naming the instance.
pub fn stored_process(
    manager: &str,
    association: &str,
    state: String,
    version: i64,
) -> Result<StoredProcess, Error> {
    let version = u64::try_from(version).map_err(|_| {
        Error::data_loss(
            "CORRUPTED_PROCESS",
            format!("process {manager:?}/{association:?} has an impossible version {version}"),
        )
    })?;
    Ok(StoredProcess {
        state: state.into_bytes(),
        version,
    })
}

/// A process's state as the SQL stores keep it: (state JSON text, version); a state that
/// is not UTF-8 is an `InvalidArgument` error.
pub fn process_row(
    manager: &str,
    association: &str,
    process: &StoredProcess,
) -> Result<(String, i64), Error> {
    let state = String::from_utf8(process.state.clone()).map_err(|_| {
        Error::invalid_argument(
            "INVALID_PROCESS_STATE",
            format!("the state of process {manager:?}/{association:?} is not UTF-8 JSON"),
        )
    })?;
    let version = i64::try_from(process.version).map_err(|_| {
        Error::invalid_argument(
            "INVALID_PROCESS_STATE",
            format!("the version of process {manager:?}/{association:?} exceeds i64"),
        )
    })?;
    Ok((state, version))
}
