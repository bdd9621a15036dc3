//! The operator's model: what the admin console and the `flext` command line show and
//! do, read from any store that has the operator ports ([`OperatorStore`]).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::{CorrelationId, Error, EventId, Position, RecordedEvent};
use flext_ports::{
    ControlAction, ControlState, ControlStore, DeadLetter, EventStore, Instance, JobStore,
    OwnershipStore, RebuildFrom, SCHEDULER_CONSUMER, ScheduleStore, StoreInspect, StoreStats,
    mask_fields,
};
use serde::Serialize;
use serde_json::{Value, json};

/// Everything an operator's tool reads and does on a store: SQLite and PostgreSQL
/// stores are one.
pub trait OperatorStore:
    EventStore
    + ControlStore
    + StoreInspect
    + OwnershipStore
    + ScheduleStore
    + JobStore
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> OperatorStore for S where
    S: EventStore
        + ControlStore
        + StoreInspect
        + OwnershipStore
        + ScheduleStore
        + JobStore
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A time as operators read it: RFC 3339 to the second.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A stored payload as JSON when it is JSON (flext's default codec), else as
/// `{"base64": ...}` so nothing is hidden or mangled.
pub fn payload(bytes: &[u8]) -> Value {
    use base64::Engine as _;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// The payload fields the application marked personal, by event type; they are masked
/// in every view unless the operator asks for them.
#[derive(Debug, Clone, Default)]
pub struct Personal {
    fields: HashMap<String, Vec<String>>,
}

impl Personal {
    /// Masks nothing (`--show-personal`).
    pub fn none() -> Personal {
        Personal::default()
    }

    /// The fields marked in `store` (none when its schema predates the marks).
    pub async fn load<S: ControlStore>(store: &S) -> Personal {
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        if let Ok(rows) = store.personal_fields().await {
            for (event_type, field) in rows {
                fields.entry(event_type).or_default().push(field);
            }
        }
        Personal { fields }
    }

    /// Masks the personal fields of an event of type `event_type` in `payload`.
    pub fn mask(&self, event_type: &str, payload: &mut Value) {
        if let Some(fields) = self.fields.get(event_type) {
            mask_fields(payload, fields.iter().map(String::as_str));
        }
    }

    /// `e` as JSON (payload decoded, metadata) with its personal fields masked.
    pub fn event(&self, e: &RecordedEvent) -> Value {
        let mut v = event(e);
        self.mask(&e.event_type, &mut v["payload"]);
        v
    }
}

/// An event with its payload decoded and its metadata, nothing masked.
pub fn event(e: &RecordedEvent) -> Value {
    json!({
        "position": e.position.get(),
        "event_id": e.event_id.to_string(),
        "stream_id": e.stream_id.as_str(),
        "version": e.stream_version.0,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "recorded_at": e.recorded_at.to_rfc3339(),
        "correlation_id": e.metadata.correlation_id.map(|c| c.to_string()),
        "causation_id": e.metadata.causation_id.map(|c| c.to_string()),
        "headers": e.metadata.headers,
        "payload": payload(&e.payload),
    })
}

/// A dead letter, without its event's payload.
pub fn dead_letter(l: &DeadLetter) -> Value {
    json!({
        "projection": l.projection,
        "event_id": l.event_id.to_string(),
        "position": l.position.get(),
        "stream_id": l.stream_id.as_str(),
        "version": l.stream_version.0,
        "event_type": l.event_type,
        "error": l.error,
        "attempts": l.attempts,
        "parked_at": l.parked_at.to_rfc3339(),
    })
}

/// An event id an operator typed, or `INVALID_EVENT_ID` naming it.
pub fn parse_event_id(s: &str) -> Result<EventId, Error> {
    uuid::Uuid::parse_str(s.trim())
        .map(EventId::from_uuid)
        .map_err(|_| {
            Error::invalid_argument(
                "INVALID_EVENT_ID",
                format!(
                    "{:?} is not an event id (a UUID)",
                    s.chars().take(80).collect::<String>()
                ),
            )
        })
}

/// Where a rebuild starts, as an operator types it: `start`, a position, or an RFC 3339
/// time.
pub fn rebuild_from(s: &str) -> Result<RebuildFrom, Error> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("start") || s.is_empty() {
        return Ok(RebuildFrom::Start);
    }
    if let Ok(p) = s.parse::<u64>() {
        return Ok(RebuildFrom::Position(Position(p)));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| RebuildFrom::Time(t.with_timezone(&Utc)))
        .map_err(|_| {
            Error::invalid_argument(
                "INVALID_REBUILD_START",
                format!(
                    "{:?} is neither `start`, a position nor an RFC 3339 time",
                    s.chars().take(80).collect::<String>()
                ),
            )
        })
}

/// `NOT_FOUND` for a consumer the store does not know.
pub fn unknown_consumer(name: &str) -> Error {
    Error::not_found(
        "UNKNOWN_CONSUMER",
        format!("the store knows no consumer named {name:?} (see `flext projections list`)"),
    )
    .with_detail("consumer", name)
}

/// `NOT_FOUND` for an event id the store does not hold.
pub fn unknown_event(event_id: EventId) -> Error {
    Error::not_found(
        "EVENT_NOT_FOUND",
        format!("no event {event_id} in the store"),
    )
    .with_detail("event_id", event_id.to_string())
}

/// What a consumer is doing, as an operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerState {
    /// Paused by an operator.
    Paused,
    /// Events wait and its position has not moved for the stall threshold.
    Stalled,
    /// No instance holds its lease.
    Unowned,
    /// Owned and at the head.
    Running,
    /// Owned, with events to handle.
    CatchingUp,
}

impl ConsumerState {
    /// The state's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerState::Paused => "paused",
            ConsumerState::Stalled => "stalled",
            ConsumerState::Unowned => "unowned",
            ConsumerState::Running => "running",
            ConsumerState::CatchingUp => "catching_up",
        }
    }
}

/// A consumer (projection, reactor, process manager, the scheduler) measured now.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerView {
    /// Its name.
    pub name: String,
    /// `consumer`, or `scheduler` for the durable scheduler (whose work is messages due).
    pub kind: &'static str,
    /// What it is doing.
    pub state: ConsumerState,
    /// The instance that holds its lease (`name@host:pid`).
    pub owner: Option<String>,
    /// The lease's fencing epoch.
    pub epoch: u64,
    /// Its checkpoint in the global order.
    pub position: u64,
    /// Events after its checkpoint (messages due, for the scheduler).
    pub lag_events: u64,
    /// How long the oldest of those has waited.
    pub lag_seconds: f64,
    /// Events it parked.
    pub dead_letters: usize,
    /// Whether an operator paused it.
    pub paused: bool,
    /// Whether it is stalled.
    pub stalled: bool,
    /// When its checkpoint last moved.
    pub moved_at: Option<String>,
    /// When its owner's lease runs out.
    pub lease_expires_at: Option<String>,
}

/// Every consumer the store knows, measured now; stalled when events have waited and
/// its checkpoint has not moved for `stall_after`.
pub async fn consumers<S: OperatorStore>(
    store: &S,
    stall_after: Duration,
) -> Result<Vec<ConsumerView>, Error> {
    let records = store.consumers().await?;
    let paused = store.paused_consumers().await?;
    let moves = store.checkpoint_moves().await?;
    let now = store.clock_now().await?;
    let mut names: Vec<String> = records.iter().map(|r| r.consumer.clone()).collect();
    for p in &paused {
        if !names.contains(p) {
            names.push(p.clone());
        }
    }
    names.sort();
    let since = |t: DateTime<Utc>| (now - t).to_std().unwrap_or(Duration::ZERO);
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let record = records.iter().find(|r| r.consumer == name);
        let position = record.map_or(Position::START, |r| r.position);
        let scheduler = name == SCHEDULER_CONSUMER;
        let (lag_events, lag) = if scheduler {
            // Its work is the messages due now, not the global order.
            let due = store.due(now, 10_000).await?;
            let oldest = due.iter().map(|m| m.due_at).min();
            (due.len() as u64, oldest.map_or(Duration::ZERO, since))
        } else {
            let n = store.count_after(position).await?;
            let oldest = store.read_all(position, 1).await?;
            let lag = oldest
                .first()
                .map_or(Duration::ZERO, |e| since(e.recorded_at));
            (n, lag)
        };
        let dead = store.dead_letters(&name).await?.len();
        let is_paused = paused.contains(&name);
        let moved_at = moves
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, t)| *t)
            .or(record.and_then(|r| r.acquired_at));
        let still_for = moved_at.map(since);
        // Not moved for a while although events wait (and not paused on purpose).
        let stalled = !is_paused
            && lag_events > 0
            && lag >= stall_after
            && still_for.is_none_or(|d| d >= stall_after);
        let owned = record.is_some_and(|r| r.owned);
        let state = if is_paused {
            ConsumerState::Paused
        } else if stalled {
            ConsumerState::Stalled
        } else if !owned {
            ConsumerState::Unowned
        } else if lag_events == 0 {
            ConsumerState::Running
        } else {
            ConsumerState::CatchingUp
        };
        out.push(ConsumerView {
            name,
            kind: if scheduler { "scheduler" } else { "consumer" },
            state,
            owner: record
                .and_then(|r| r.owner.as_ref())
                .filter(|_| owned)
                .map(Instance::label),
            epoch: record.map_or(0, |r| r.epoch),
            position: position.get(),
            lag_events,
            lag_seconds: lag.as_secs_f64(),
            dead_letters: dead,
            paused: is_paused,
            stalled,
            moved_at: moved_at.map(time),
            lease_expires_at: record.and_then(|r| r.expires_at).map(time),
        });
    }
    Ok(out)
}

/// One consumer, measured now, or [`unknown_consumer`].
pub async fn consumer<S: OperatorStore>(
    store: &S,
    name: &str,
    stall_after: Duration,
) -> Result<ConsumerView, Error> {
    consumers(store, stall_after)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| unknown_consumer(name))
}

/// Up, degraded or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// All is well.
    Up,
    /// It works, but an operator should look (paused, unowned with work, dead letters).
    Degraded,
    /// A consumer is stalled.
    Down,
}

impl Status {
    /// `up`, `degraded` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Degraded => "degraded",
            Status::Down => "down",
        }
    }
}

/// One line of the health report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `store`, or `consumer:NAME`.
    pub name: String,
    /// Its status.
    pub status: Status,
    /// Why it is not up.
    pub message: Option<String>,
    /// What was measured.
    pub details: Value,
}

/// The store's and consumers' health.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// The worst of the checks.
    pub status: Status,
    /// Each check.
    pub checks: Vec<Check>,
}

/// The health report: the store answers, and each consumer's state (stalled is down;
/// paused, unowned with work waiting, or with dead letters is degraded).
pub async fn health<S: OperatorStore>(
    store: &S,
    kind: &str,
    stall_after: Duration,
) -> Result<Health, Error> {
    let stats = store.stats().await?;
    let consumers = consumers(store, stall_after).await?;
    Ok(health_of(kind, &stats, &consumers, stall_after))
}

/// The health report from what was measured ([`health`] measures it first).
pub fn health_of(
    kind: &str,
    stats: &StoreStats,
    consumers: &[ConsumerView],
    stall_after: Duration,
) -> Health {
    let mut checks = vec![Check {
        name: "store".to_owned(),
        status: Status::Up,
        message: None,
        details: json!({ "kind": kind, "events": stats.events, "head": stats.head.get() }),
    }];
    for c in consumers {
        let (status, why) = match c.state {
            ConsumerState::Stalled => (
                Status::Down,
                Some(format!(
                    "stalled: its position has not moved for {} s or more while {} events wait",
                    stall_after.as_secs(),
                    c.lag_events
                )),
            ),
            ConsumerState::Paused => (Status::Degraded, Some("paused by an operator".to_owned())),
            ConsumerState::Unowned if c.lag_events > 0 => (
                Status::Degraded,
                Some(format!(
                    "no instance runs it and {} events wait",
                    c.lag_events
                )),
            ),
            _ if c.dead_letters > 0 => (
                Status::Degraded,
                Some(match c.dead_letters {
                    1 => "1 dead letter".to_owned(),
                    n => format!("{n} dead letters"),
                }),
            ),
            _ => (Status::Up, None),
        };
        checks.push(Check {
            name: format!("consumer:{}", c.name),
            status,
            message: why,
            details: serde_json::to_value(c).unwrap_or(Value::Null),
        });
    }
    let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Up);
    Health { status, checks }
}

/// The business action `id` belongs to (an event id names its action; otherwise `id` is
/// the correlation id itself) as a causation tree ([`crate::tree::build`]).
pub async fn correlated<S: OperatorStore>(store: &S, id: EventId) -> Result<Value, Error> {
    let correlation = match store.event_by_id(id).await? {
        Some(e) => e
            .metadata
            .correlation_id
            .unwrap_or(CorrelationId::from_uuid(e.event_id.as_uuid())),
        None => CorrelationId::from_uuid(id.as_uuid()),
    };
    let events = store.read_correlated(correlation, 10_000).await?;
    if events.is_empty() {
        return Err(Error::not_found(
            "ACTION_NOT_FOUND",
            format!("no event has id or correlation id {id}"),
        )
        .with_detail("id", id.to_string()));
    }
    Ok(crate::tree::build(correlation.as_uuid(), &events))
}

/// Carries `action` out on consumer `name`: by its owner when one runs (a stored request,
/// waited for up to `timeout`), else (pause and resume only) by `me` under the consumer's
/// lease. The outcome is `{"consumer", "action", "request_id", "carried_out_by",
/// "result"}`; an owner's failure is its error; no answer in time is
/// `DEADLINE_EXCEEDED` `CONTROL_NOT_ANSWERED` (the request stays queued for the next
/// owner).
pub async fn control<S: OperatorStore>(
    store: &S,
    name: &str,
    action: &ControlAction,
    me: &Instance,
    timeout: Duration,
) -> Result<Value, Error> {
    let records = store.consumers().await?;
    let Some(record) = records.iter().find(|r| r.consumer == name) else {
        return Err(unknown_consumer(name));
    };
    if !record.owned && matches!(action, ControlAction::Pause | ControlAction::Resume) {
        // Nobody runs it: take its lease so no instance starts it meanwhile, set the
        // flag, give the lease back; the next owner reads the flag when it takes over.
        if let Some(lease) = store
            .acquire_lease(name, me, Duration::from_secs(15))
            .await?
        {
            let paused = matches!(action, ControlAction::Pause);
            let set = store.set_paused(name, paused, &me.label()).await;
            let released = store.release_lease(&lease).await;
            set?;
            released?;
            return Ok(json!({
                "consumer": name,
                "action": action.name(),
                "request_id": null,
                "carried_out_by": me.label(),
                "result": {},
            }));
        }
    }
    let stored = store.request_control(name, action, &me.label()).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut watcher = store.watch_consumers();
    loop {
        if let Some(r) = store.control_request(stored.id).await? {
            match r.state {
                ControlState::Done => {
                    return Ok(json!({
                        "consumer": name,
                        "action": action.name(),
                        "request_id": r.id.to_string(),
                        "carried_out_by": r.taken_by,
                        "result": r.result,
                    }));
                }
                ControlState::Failed => {
                    return Err(r.error.unwrap_or_else(|| {
                        Error::internal("CONTROL_FAILED", "the owner reported a failure")
                    }));
                }
                ControlState::Pending | ControlState::Running => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::deadline_exceeded(
                "CONTROL_NOT_ANSWERED",
                format!(
                    "no owner of {name:?} carried out the {} within {} s; the request {} stays \
                     queued and is carried out when an instance that runs {name:?} takes it",
                    action.name(),
                    timeout.as_secs(),
                    stored.id
                ),
            )
            .with_detail("consumer", name)
            .with_detail("request_id", stored.id.to_string()));
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), watcher.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_that_are_not_json_are_shown_whole_as_base64() {
        assert_eq!(payload(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(payload(&[0xff, 0x00]), json!({"base64": "/wA="}));
        assert_eq!(payload(b"\xffab"), json!({"base64": "/2Fi"}));
        assert_eq!(payload(b"\xff"), json!({"base64": "/w=="}));
    }

    #[test]
    fn event_ids_from_operators_are_checked() {
        assert!(parse_event_id(" 0190f5d2-0000-7000-8000-000000000001 ").is_ok());
        let e = parse_event_id("<script>").expect_err("not a uuid");
        assert_eq!(e.reason(), "INVALID_EVENT_ID");
    }
}
