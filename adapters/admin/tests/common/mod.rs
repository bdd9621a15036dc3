//! What the console's tests share: the seeded store, a projection this process owns, and
//! the console's settings.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use flext::Position;
use flext::application::{ProjectionOptions, ProjectionRunner, Projections};
use flext::ports::sql::Sql;
use flext::ports::{EventStore, Instance, ProjectionStore, WatchAppends};
use flext_admin::{AdminConfig, Role};
use flext_testkit::operator::{TOTALS, Totals};

pub const OPERATOR: (&str, &str) = ("ada", "operator password");
pub const VIEWER: (&str, &str) = ("bob", "viewer password");
pub const READ_TOKEN: &str = "read-only-token-0123456789";
pub const OPERATOR_TOKEN: &str = "operator-token-0123456789";

/// The console's settings in the tests: two users, two tokens, actions waited for 20 s.
pub fn config(base: &str) -> AdminConfig {
    AdminConfig::new()
        .base_path(base)
        .user(OPERATOR.0, OPERATOR.1, Role::Operator)
        .user(VIEWER.0, VIEWER.1, Role::ReadOnly)
        .token(READ_TOKEN, Role::ReadOnly)
        .token(OPERATOR_TOKEN, Role::Operator)
        .action_timeout(Duration::from_secs(20))
}

/// Runs the totals projection here (an owner in another process, as the console sees
/// it), parking the poison event after one attempt.
pub fn start<S>(store: &S, healed: &Arc<AtomicBool>) -> Projections<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
    S::Transaction: Sql + Send,
{
    ProjectionRunner::new(store.clone())
        .with_instance(Instance::named("admin-test-owner"))
        .register_with(
            Totals {
                healed: Arc::clone(healed),
            },
            ProjectionOptions {
                max_attempts: 1,
                ..ProjectionOptions::default()
            },
        )
        .expect("register")
        .start()
}

/// Waits until the projection has seen every stored event (the poison parked).
pub async fn caught_up<S>(projections: &Projections<S>, store: &S)
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    let mut to = Position::START;
    loop {
        let page = store.read_all(to, 1_000).await.expect("read");
        match page.last() {
            Some(e) => to = e.position,
            None => break,
        }
    }
    match projections
        .wait_for(TOTALS, to, Duration::from_secs(30))
        .await
    {
        Ok(()) => {}
        Err(e) if e.reason() == "EVENTS_PARKED" => {}
        Err(e) => panic!("the projection did not catch up: {e}"),
    }
}
