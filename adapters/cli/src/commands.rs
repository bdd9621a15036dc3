//! The commands: each reads or acts through the store's ports and prints a table, text or
//! JSON.

use std::time::Duration;

use flext_domain::{Error, EventId, Position, StreamId, StreamVersion};
use flext_ports::{
    CheckpointStore, ControlAction, ControlStore, EventStore, Instance, JobStore, OwnershipStore,
    ProjectionStore, ReadDirection, StoreInspect, StreamQuery, WatchAppends,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::Done;
use crate::store::{Db, on_store};
use crate::view;
use flext_admin::ops::{self, Personal, parse_event_id, unknown_consumer};

/// How to print.
pub(crate) struct Out {
    pub(crate) json: bool,
    /// The personal fields to mask (none with `--show-personal`).
    pub(crate) personal: Personal,
    /// The service's own consumers, when the command line runs inside its binary.
    pub(crate) local: Option<crate::local::Local>,
}

impl Out {
    /// An event as JSON with its personal fields masked.
    fn event(&self, e: &flext_domain::RecordedEvent) -> Value {
        self.personal.event(e)
    }

    /// Prints `value` as pretty JSON.
    fn json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }
}

/// Refuses to work on a store whose schema lacks migrations (`flext migrate apply`).
pub(crate) async fn require_migrated(db: &Db) -> Result<(), Error> {
    let missing: Vec<_> = on_store!(db, s => s.migrations().await)?
        .into_iter()
        .filter(|m| !m.applied)
        .collect();
    if let Some(first) = missing.first() {
        return Err(Error::failed_precondition(
            "MIGRATIONS_PENDING",
            format!(
                "the store's schema lacks {} migration(s) from {} ({}); run `flext migrate apply`",
                missing.len(),
                first.version,
                first.description
            ),
        )
        .with_detail("pending", missing.len()));
    }
    Ok(())
}

pub(crate) async fn streams_list(db: &Db, out: &Out, query: StreamQuery) -> Result<Done, Error> {
    let page = on_store!(db, s => s.list_streams(&query).await)?;
    let next = (page.len() >= query.page_size())
        .then(|| page.last().map(|s| s.stream_id.clone()))
        .flatten();
    if out.json {
        out.json(&json!({ "streams": page, "next_after": next }));
        return Ok(Done::OK);
    }
    let mut t = view::table(&[
        "stream",
        "version",
        "last position",
        "first event",
        "last event",
    ]);
    for s in &page {
        t.add_row(vec![
            s.stream_id.clone(),
            s.version.to_string(),
            s.last_position.get().to_string(),
            ops::time(s.first_recorded_at),
            ops::time(s.last_recorded_at),
        ]);
    }
    println!("{t}");
    match next {
        Some(n) => println!("\n{} streams; next page: --after {n}", page.len()),
        None => println!("\n{} streams", page.len()),
    }
    Ok(Done::OK)
}

fn stream_id(s: &str) -> Result<StreamId, Error> {
    StreamId::new(s)
}

pub(crate) async fn streams_show(
    db: &Db,
    out: &Out,
    id: &str,
    from: u64,
    limit: usize,
) -> Result<Done, Error> {
    let stream = stream_id(id)?;
    let events = on_store!(db, s => s.read_stream(&stream, StreamVersion(from.max(1)), limit.clamp(1, 10_000), ReadDirection::Forward).await)?;
    if events.is_empty() {
        let version = on_store!(db, s => s.stream_version(&stream).await)?;
        if version.0 == 0 {
            return Err(Error::not_found(
                "STREAM_NOT_FOUND",
                format!("no stream {id:?} in the store"),
            )
            .with_detail("stream", id));
        }
    }
    let values: Vec<Value> = events.iter().map(|e| out.event(e)).collect();
    if out.json {
        out.json(&json!({ "stream_id": id, "events": values }));
    } else {
        for v in &values {
            print_event(v);
        }
    }
    Ok(Done::OK)
}

/// An event as text: a heading line, metadata, the payload pretty-printed.
fn print_event(v: &Value) {
    println!(
        "#{} {} v{}  {}  (event {}, position {}, {})",
        v["version"],
        v["stream_id"].as_str().unwrap_or(""),
        v["version"],
        v["event_type"].as_str().unwrap_or(""),
        v["event_id"].as_str().unwrap_or(""),
        v["position"],
        v["recorded_at"].as_str().unwrap_or("")
    );
    if let Some(c) = v["correlation_id"].as_str() {
        println!("  correlation {c}");
    }
    if let Some(c) = v["causation_id"].as_str() {
        println!("  causation   {c}");
    }
    if let Some(h) = v["headers"].as_object() {
        for (k, val) in h {
            println!("  {k}: {}", view::cell(val));
        }
    }
    let payload = serde_json::to_string_pretty(&v["payload"]).unwrap_or_default();
    for line in payload.lines() {
        println!("  {line}");
    }
    println!();
}

pub(crate) async fn streams_tail(
    db: &Db,
    out: &Out,
    id: Option<&str>,
    lines: usize,
    follow: bool,
) -> Result<Done, Error> {
    let emit = |e: &flext_domain::RecordedEvent| {
        let v = out.event(e);
        if out.json {
            // One JSON document per line, so a follower can be piped.
            println!("{v}");
        } else {
            print_event(&v);
        }
    };
    match id {
        Some(id) => {
            let stream = stream_id(id)?;
            let mut last = on_store!(db, s => s.read_stream(&stream, StreamVersion(u64::MAX), lines, ReadDirection::Backward).await)?;
            last.reverse();
            let mut version = last.last().map_or(0, |e| e.stream_version.0);
            for e in &last {
                emit(e);
            }
            if !follow {
                return Ok(Done::OK);
            }
            let mut watcher = on_store!(db, s => s.watch_appends());
            loop {
                let page = on_store!(db, s => s.read_stream(&stream, StreamVersion(version + 1), 500, ReadDirection::Forward).await)?;
                for e in &page {
                    emit(e);
                    version = e.stream_version.0;
                }
                if page.is_empty() {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), watcher.changed()).await;
                }
            }
        }
        None => {
            // The newest `lines` events of the global order: positions may be sparse
            // (PostgreSQL), so the last ones are found by the streams' heads.
            let head = on_store!(db, s => s.stats().await)?.head;
            let mut after = tail_start(db, head, lines).await?;
            let mut watcher = on_store!(db, s => s.watch_appends());
            loop {
                let page = on_store!(db, s => s.read_all(after, 500).await)?;
                for e in &page {
                    emit(e);
                    after = e.position;
                }
                if page.is_empty() {
                    if !follow {
                        return Ok(Done::OK);
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), watcher.changed()).await;
                }
                if !follow && after >= head {
                    return Ok(Done::OK);
                }
            }
        }
    }
}

/// The position after which the last `lines` events up to `head` lie.
async fn tail_start(db: &Db, head: Position, lines: usize) -> Result<Position, Error> {
    if lines == 0 {
        return Ok(head);
    }
    // Step back in windows until the window holds enough events.
    let mut window = (lines as u64).saturating_mul(4).max(64);
    loop {
        let from = Position(head.get().saturating_sub(window));
        let n = on_store!(db, s => s.count_after(from).await)?;
        if n >= lines as u64 || from == Position::START {
            let skip = n.saturating_sub(lines as u64);
            let mut after = from;
            let mut left = skip;
            while left > 0 {
                let page = on_store!(db, s => s.read_all(after, left.min(1_000) as usize).await)?;
                let Some(last) = page.last() else { break };
                left -= page.len() as u64;
                after = last.position;
            }
            return Ok(after);
        }
        window = window.saturating_mul(8);
    }
}

pub(crate) async fn events_get(db: &Db, out: &Out, id: &str) -> Result<Done, Error> {
    let event_id = parse_event_id(id)?;
    let event = on_store!(db, s => s.event_by_id(event_id).await)?.ok_or_else(|| {
        Error::not_found(
            "EVENT_NOT_FOUND",
            format!("no event {event_id} in the store"),
        )
        .with_detail("event_id", event_id.to_string())
    })?;
    let v = out.event(&event);
    if out.json {
        out.json(&v);
    } else {
        print_event(&v);
    }
    Ok(Done::OK)
}

pub(crate) async fn events_correlated(db: &Db, out: &Out, id: &str) -> Result<Done, Error> {
    let given = parse_event_id(id)?;
    let tree = on_store!(db, s => ops::correlated(s, given).await)?;
    if out.json {
        out.json(&tree);
    } else {
        print!("{}", flext_admin::tree::render(&tree));
    }
    Ok(Done::OK)
}

/// Every consumer as operators see it, measured now, as JSON.
async fn consumers(db: &Db, stall_after: Duration) -> Result<Vec<Value>, Error> {
    let list = on_store!(db, s => ops::consumers(s, stall_after).await)?;
    Ok(list
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect())
}

pub(crate) async fn projections_list(db: &Db, out: &Out, stall: Duration) -> Result<Done, Error> {
    let list = consumers(db, stall).await?;
    if out.json {
        out.json(&json!({ "consumers": list }));
        return Ok(Done::OK);
    }
    let mut t = view::table(&[
        "name",
        "state",
        "owner",
        "position",
        "lag",
        "lag (s)",
        "dead letters",
    ]);
    for c in &list {
        t.add_row(vec![
            view::cell(&c["name"]),
            view::cell(&c["state"]),
            view::cell(&c["owner"]),
            view::cell(&c["position"]),
            view::cell(&c["lag_events"]),
            format!("{:.1}", c["lag_seconds"].as_f64().unwrap_or(0.0)),
            view::cell(&c["dead_letters"]),
        ]);
    }
    println!("{t}");
    Ok(Done::OK)
}

async fn one_consumer(db: &Db, name: &str, stall: Duration) -> Result<Value, Error> {
    consumers(db, stall)
        .await?
        .into_iter()
        .find(|c| c["name"] == name)
        .ok_or_else(|| unknown_consumer(name))
}

pub(crate) async fn projections_status(
    db: &Db,
    out: &Out,
    name: &str,
    stall: Duration,
) -> Result<Done, Error> {
    let c = one_consumer(db, name, stall).await?;
    if out.json {
        out.json(&c);
    } else if let Some(fields) = c.as_object() {
        for (k, v) in fields {
            println!("{:<18} {}", format!("{k}:"), view::cell(v));
        }
    }
    Ok(Done::OK)
}

/// Who the command line acts as: `flext-cli` on this host, with this process's id.
fn operator() -> Instance {
    Instance::named("flext-cli")
}

/// Carries `action` out on consumer `name`: by its owner when one runs (a stored request,
/// waited for up to `timeout_s`), else (pause and resume) here under the consumer's lease.
pub(crate) async fn control(
    db: &Db,
    out: &Out,
    name: &str,
    action: ControlAction,
    timeout_s: u64,
) -> Result<Done, Error> {
    let result = request(db, out, name, &action, timeout_s).await?;
    if out.json {
        out.json(&result);
    } else {
        let by = result["carried_out_by"].as_str().unwrap_or("");
        match &action {
            ControlAction::Redrive { .. } => println!(
                "redrive of {name}: {} redriven, {} still failing (carried out by {by})",
                result["result"]["redriven"],
                result["result"]["still_failing"]
                    .as_array()
                    .map_or(0, Vec::len)
            ),
            other => println!("{} of {name}: done (carried out by {by})", other.name()),
        }
    }
    Ok(Done::OK)
}

/// The request's outcome as `{"consumer", "action", "request_id", "carried_out_by",
/// "result"}` ([`ops::control`]).
async fn request(
    db: &Db,
    out: &Out,
    name: &str,
    action: &ControlAction,
    timeout_s: u64,
) -> Result<Value, Error> {
    if let Some(local) = &out.local
        && !matches!(action, ControlAction::Pause | ControlAction::Resume)
    {
        // Inside the service's binary, an action that needs the consumer's code is
        // carried out here when no instance runs the consumer.
        local.own(name, Duration::from_secs(timeout_s)).await?;
    }
    let me = operator();
    let timeout = Duration::from_secs(timeout_s);
    on_store!(db, s => ops::control(s, name, action, &me, timeout).await)
}

pub(crate) async fn rebuild(
    db: &Db,
    out: &Out,
    name: &str,
    from: &str,
    timeout_s: u64,
    wait: bool,
) -> Result<Done, Error> {
    let from = ops::rebuild_from(from)?;
    let started = request(db, out, name, &ControlAction::Rebuild { from }, timeout_s).await?;
    let restart = Position(started["result"]["restart_after"].as_u64().unwrap_or(0));
    if !wait {
        if out.json {
            out.json(&started);
        } else {
            println!("rebuild of {name} started after position {}", restart.get());
        }
        return Ok(Done::OK);
    }
    // Progress: the events between the restart point and the head, as the checkpoint
    // moves through them.
    let total = on_store!(db, s => s.count_after(restart).await)?;
    let bar = if out.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events, {rate}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} events/s", state.per_sec());
                },
            )
            .progress_chars("=> "),
    );
    bar.set_message(format!("rebuilding {name}"));
    let mut watcher = on_store!(db, s => s.watch_consumers());
    let began = tokio::time::Instant::now();
    let mut stuck_since = tokio::time::Instant::now();
    let mut last_left = u64::MAX;
    loop {
        let at = on_store!(db, s => s.load_checkpoint(name).await)?.unwrap_or(Position::START);
        let left = on_store!(db, s => s.count_after(at).await)?;
        if left < last_left {
            last_left = left;
            stuck_since = tokio::time::Instant::now();
        }
        // New events may grow the work while it runs.
        let done = total.saturating_sub(left.min(total));
        bar.set_length(total.max(done + left));
        bar.set_position(done);
        if left == 0 {
            break;
        }
        if stuck_since.elapsed() > Duration::from_secs(timeout_s) {
            bar.abandon();
            return Err(Error::deadline_exceeded(
                "REBUILD_STALLED",
                format!(
                    "the rebuild of {name:?} has not moved for {timeout_s} s ({left} events left)"
                ),
            )
            .with_detail("consumer", name)
            .with_detail("left", left));
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), watcher.changed()).await;
    }
    bar.finish();
    let took = began.elapsed();
    if out.json {
        out.json(&json!({
            "consumer": name,
            "action": "rebuild",
            "request_id": started["request_id"],
            "carried_out_by": started["carried_out_by"],
            "restart_after": restart.get(),
            "events": total,
            "seconds": took.as_secs_f64(),
        }));
    } else {
        println!(
            "rebuilt {name}: {total} events in {:.1} s (carried out by {})",
            took.as_secs_f64(),
            started["carried_out_by"].as_str().unwrap_or("")
        );
    }
    Ok(Done::OK)
}

pub(crate) async fn verify(db: &Db, out: &Out, name: &str, timeout_s: u64) -> Result<Done, Error> {
    let done = request(db, out, name, &ControlAction::Verify, timeout_s).await?;
    let result = &done["result"];
    let differences = result["differences"].as_u64().unwrap_or(0);
    if out.json {
        out.json(&done);
    } else {
        println!(
            "verified {name}: rebuilt {} events into a shadow up to position {}; {}",
            result["events"],
            result["checkpoint"],
            if differences == 0 {
                "the live read model matches it".to_owned()
            } else {
                format!("{differences} row(s) differ")
            }
        );
        for t in result["tables"].as_array().into_iter().flatten() {
            println!("\ntable {}:", t["table"].as_str().unwrap_or(""));
            for row in t["live_only"].as_array().into_iter().flatten() {
                println!("  - live only:    {row}");
            }
            for row in t["rebuilt_only"].as_array().into_iter().flatten() {
                println!("  + rebuilt only: {row}");
            }
        }
    }
    Ok(if differences == 0 {
        Done::OK
    } else {
        Done { code: 1 }
    })
}

pub(crate) async fn dead_letters_list(
    db: &Db,
    out: &Out,
    projection: Option<&str>,
) -> Result<Done, Error> {
    let names: Vec<String> = match projection {
        Some(p) => vec![p.to_owned()],
        None => on_store!(db, s => s.consumers().await)?
            .into_iter()
            .map(|r| r.consumer)
            .collect(),
    };
    let mut letters = Vec::new();
    for n in &names {
        letters.extend(on_store!(db, s => s.dead_letters(n).await)?);
    }
    if out.json {
        out.json(
            &json!({ "dead_letters": letters.iter().map(ops::dead_letter).collect::<Vec<_>>() }),
        );
        return Ok(Done::OK);
    }
    let mut t = view::table(&[
        "projection",
        "event",
        "position",
        "type",
        "attempts",
        "error",
        "parked",
    ]);
    for l in &letters {
        t.add_row(vec![
            l.projection.clone(),
            l.event_id.to_string(),
            l.position.get().to_string(),
            l.event_type.clone(),
            l.attempts.to_string(),
            format!("{}: {}", l.error.reason(), l.error.message()),
            ops::time(l.parked_at),
        ]);
    }
    println!("{t}");
    println!("\n{} dead letters", letters.len());
    Ok(Done::OK)
}

pub(crate) async fn inbox_dead_letters(db: &Db, out: &Out, inbox: &str) -> Result<Done, Error> {
    use flext_ports::InboxStore;
    let letters = on_store!(db, s => s.inbox_dead_letters(inbox).await)?;
    if out.json {
        let rows: Vec<serde_json::Value> = letters
            .iter()
            .map(|l| {
                json!({
                    "inbox": l.consumer,
                    "message_id": l.message_id,
                    "subject": l.subject,
                    "headers": l.headers,
                    // Its size only: a foreign payload may hold personal data.
                    "payload_bytes": l.payload.len(),
                    "error": { "code": l.error.code().to_string(), "reason": l.error.reason(), "message": l.error.message() },
                    "deliveries": l.deliveries,
                    "parked_at": ops::time(l.parked_at),
                })
            })
            .collect();
        out.json(&json!({ "inbox": inbox, "dead_letters": rows }));
        return Ok(Done::OK);
    }
    let mut t = view::table(&["message", "subject", "deliveries", "error", "parked"]);
    for l in &letters {
        t.add_row(vec![
            l.message_id.clone(),
            l.subject.clone(),
            l.deliveries.to_string(),
            format!("{}: {}", l.error.reason(), l.error.message()),
            ops::time(l.parked_at),
        ]);
    }
    println!("{t}");
    println!("\n{} messages parked by inbox {inbox}", letters.len());
    Ok(Done::OK)
}

async fn find_letter(
    db: &Db,
    projection: &str,
    event_id: EventId,
) -> Result<flext_ports::DeadLetter, Error> {
    on_store!(db, s => s.dead_letters(projection).await)?
        .into_iter()
        .find(|l| l.event_id == event_id)
        .ok_or_else(|| {
            Error::not_found(
                "UNKNOWN_DEAD_LETTER",
                format!("{projection:?} has no dead letter for event {event_id}"),
            )
            .with_detail("projection", projection)
            .with_detail("event_id", event_id.to_string())
        })
}

pub(crate) async fn dead_letters_show(
    db: &Db,
    out: &Out,
    projection: &str,
    event_id: &str,
) -> Result<Done, Error> {
    let event_id = parse_event_id(event_id)?;
    let letter = find_letter(db, projection, event_id).await?;
    let event = on_store!(db, s => s.event_by_id(event_id).await)?;
    let edit = on_store!(db, s => s.dead_letter_edit(projection, event_id).await)?;
    let v = json!({
        "dead_letter": ops::dead_letter(&letter),
        "event": event.as_ref().map(|e| out.event(e)),
        "fixed_payload": edit.as_ref().map(|f| json!({
            "payload": ops::payload(&f.payload),
            "edited_by": f.edited_by,
            "edited_at": ops::time(f.edited_at),
        })),
    });
    if out.json {
        out.json(&v);
    } else {
        println!(
            "{} parked event {} after {} attempt(s) at {}",
            letter.projection,
            letter.event_id,
            letter.attempts,
            ops::time(letter.parked_at)
        );
        println!(
            "error: {} ({}): {}\n",
            letter.error.code().as_str(),
            letter.error.reason(),
            letter.error.message()
        );
        if let Some(e) = &v["event"].as_object().map(|_| &v["event"]) {
            print_event(e);
        }
        if let Some(f) = v["fixed_payload"].as_object() {
            println!(
                "fixed payload (by {}, at {}), handed to the consumer on redrive:",
                view::cell(&f["edited_by"]),
                view::cell(&f["edited_at"])
            );
            println!(
                "{}",
                serde_json::to_string_pretty(&f["payload"]).unwrap_or_default()
            );
        }
    }
    Ok(Done::OK)
}

/// Fixes the payload of a parked event (from `payload_file`, else in `$VISUAL`/`$EDITOR`)
/// and has the owner redrive it with the fix; the stored event stays the original.
pub(crate) async fn dead_letters_edit(
    db: &Db,
    out: &Out,
    projection: &str,
    event_id: &str,
    payload_file: Option<&std::path::Path>,
    timeout_s: u64,
) -> Result<Done, Error> {
    let event_id = parse_event_id(event_id)?;
    find_letter(db, projection, event_id).await?;
    let current = match on_store!(db, s => s.dead_letter_edit(projection, event_id).await)? {
        Some(edit) => edit.payload,
        None => on_store!(db, s => s.event_by_id(event_id).await)?
            .map(|e| e.payload.to_vec())
            .ok_or_else(|| {
                Error::data_loss(
                    "DEAD_LETTER_EVENT_MISSING",
                    format!("the parked event {event_id} is not in the store"),
                )
            })?,
    };
    let text = match payload_file {
        Some(path) => std::fs::read(path).map_err(|e| {
            Error::invalid_argument(
                "PAYLOAD_FILE_UNREADABLE",
                format!("cannot read {}: {e}", path.display()),
            )
        })?,
        None => edit_in_editor(&current)?,
    };
    let fixed: Value = serde_json::from_slice(&text).map_err(|e| {
        Error::invalid_argument(
            "INVALID_PAYLOAD",
            format!("the fixed payload is not JSON: {e}"),
        )
    })?;
    let bytes = serde_json::to_vec(&fixed).map_err(|e| {
        Error::internal("PAYLOAD_UNSERIALIZABLE", "the payload did not serialize").with_source(e)
    })?;
    if serde_json::from_slice::<Value>(&current).ok().as_ref() == Some(&fixed) {
        if !out.json {
            println!("the payload is unchanged: nothing stored, nothing redriven");
        } else {
            out.json(&json!({ "changed": false }));
        }
        return Ok(Done::OK);
    }
    on_store!(db, s => s.edit_dead_letter(projection, event_id, &bytes, &operator().label()).await)?;
    let result = request(
        db,
        out,
        projection,
        &ControlAction::Redrive {
            event_id: Some(event_id),
        },
        timeout_s,
    )
    .await?;
    if out.json {
        out.json(&json!({ "changed": true, "redrive": result }));
    } else {
        println!(
            "fixed the payload of {event_id} for {projection} (the stored event keeps the original); redrive: {} redriven, {} still failing",
            result["result"]["redriven"],
            result["result"]["still_failing"]
                .as_array()
                .map_or(0, Vec::len)
        );
    }
    Ok(Done::OK)
}

/// Opens `payload` pretty-printed in the operator's editor and returns what was saved.
fn edit_in_editor(payload: &[u8]) -> Result<Vec<u8>, Error> {
    let pretty = serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .ok_or_else(|| {
            Error::failed_precondition(
                "PAYLOAD_NOT_JSON",
                "the stored payload is not JSON; give the fixed one with --payload-file",
            )
        })?;
    let path = std::env::temp_dir().join(format!("flext-payload-{}.json", uuid::Uuid::now_v7()));
    let io = |e: std::io::Error| {
        Error::unavailable("EDITOR_FAILED", format!("editing the payload failed: {e}"))
    };
    std::fs::write(&path, pretty).map_err(io)?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_owned());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .map_err(io);
    let text = std::fs::read(&path).map_err(io);
    let _ = std::fs::remove_file(&path);
    if !status?.success() {
        return Err(Error::cancelled(
            "EDITOR_FAILED",
            format!("{editor} exited with an error: nothing stored"),
        ));
    }
    text
}

pub(crate) async fn dead_letters_discard(
    db: &Db,
    out: &Out,
    projection: &str,
    event_id: &str,
) -> Result<Done, Error> {
    let event_id = parse_event_id(event_id)?;
    find_letter(db, projection, event_id).await?;
    let removed = on_store!(db, s => s.discard_dead_letter(projection, event_id).await)?;
    if out.json {
        out.json(&json!({ "projection": projection, "event_id": event_id.to_string(), "discarded": removed }));
    } else {
        println!(
            "discarded the dead letter of {projection} for event {event_id} (the event stays in the store)"
        );
    }
    Ok(Done::OK)
}

pub(crate) async fn migrate_status(db: &Db, out: &Out) -> Result<Done, Error> {
    let list = on_store!(db, s => s.migrations().await)?;
    let pending = list.iter().filter(|m| !m.applied).count();
    if out.json {
        out.json(&json!({ "store": db.kind(), "migrations": list, "pending": pending }));
        return Ok(Done::OK);
    }
    let mut t = view::table(&["version", "description", "applied"]);
    for m in &list {
        t.add_row(vec![
            m.version.to_string(),
            m.description.clone(),
            m.applied_at.map_or_else(|| "pending".to_owned(), ops::time),
        ]);
    }
    println!("{t}");
    println!("\n{} applied, {pending} pending", list.len() - pending);
    Ok(Done::OK)
}

pub(crate) async fn migrate_apply(db: &Db, out: &Out) -> Result<Done, Error> {
    let ran = match db {
        Db::Sqlite(s) => s.apply_migrations().await?,
        Db::Pg(s) => s.apply_migrations().await?,
    };
    if out.json {
        out.json(&json!({ "applied": ran }));
    } else {
        println!("applied {ran} migration(s)");
    }
    Ok(Done::OK)
}

pub(crate) async fn health(db: &Db, out: &Out, stall: Duration) -> Result<Done, Error> {
    let report = on_store!(db, s => ops::health(s, db.kind(), stall).await)?;
    let worst = match report.status {
        ops::Status::Up => 0,
        ops::Status::Degraded => 1,
        ops::Status::Down => 2,
    };
    let status = report.status.as_str();
    let checks: Vec<Value> = report
        .checks
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect();
    if out.json {
        out.json(&json!({ "status": status, "checks": checks }));
    } else {
        println!("{status}");
        let mut t = view::table(&["check", "status", "message"]);
        for c in &checks {
            t.add_row(vec![
                view::cell(&c["name"]),
                view::cell(&c["status"]),
                view::cell(&c["message"]),
            ]);
        }
        println!("{t}");
    }
    match worst {
        0 => Ok(Done::OK),
        1 => Ok(Done { code: 1 }),
        _ => Ok(Done {
            code: u8::try_from(10 + flext_domain::ErrorCode::Unavailable.as_i32()).unwrap_or(1),
        }),
    }
}

pub(crate) async fn stats(db: &Db, out: &Out) -> Result<Done, Error> {
    let stats = on_store!(db, s => s.stats().await)?;
    let jobs = on_store!(db, s => s.job_stats().await)?;
    if out.json {
        out.json(&json!({ "store": db.kind(), "stats": stats, "jobs": jobs }));
        return Ok(Done::OK);
    }
    println!("store:    {}", db.kind());
    println!("events:   {}", stats.events);
    println!("streams:  {}", stats.streams);
    println!("head:     {}", stats.head.get());
    if let Some(t) = stats.last_recorded_at {
        println!("newest:   {}", ops::time(t));
    }
    println!("storage:  {}", view::bytes(stats.storage_bytes));
    println!();
    let mut t = view::table(&["event type", "events"]);
    for c in &stats.by_type {
        t.add_row(vec![c.event_type.clone(), c.events.to_string()]);
    }
    println!("{t}");
    if !jobs.is_empty() {
        println!();
        let mut t = view::table(&[
            "job kind",
            "queued",
            "retrying",
            "running",
            "succeeded",
            "dead",
        ]);
        for j in &jobs {
            t.add_row(vec![
                j.kind.clone(),
                j.queued.to_string(),
                j.retrying.to_string(),
                j.running.to_string(),
                j.succeeded.to_string(),
                j.dead.to_string(),
            ]);
        }
        println!("{t}");
    }
    Ok(Done::OK)
}

/// A stream's lifecycle as JSON.
fn info_json(id: &str, info: &flext_ports::StreamInfo) -> Value {
    json!({
        "stream_id": id,
        "status": format!("{:?}", info.status).to_lowercase(),
        "version": info.version.0,
        "first_readable": info.first_readable.0,
        "archived_below": info.archived_below.0,
        "retention": info.retention.map(|p| json!({
            "max_count": p.max_count,
            "max_age_secs": p.max_age.map(|a| a.as_secs_f64()),
            "archive": p.archive,
        })),
    })
}

pub(crate) async fn streams_info(db: &Db, out: &Out, id: &str) -> Result<Done, Error> {
    use flext_ports::StreamLifecycle;
    let stream = stream_id(id)?;
    let info = on_store!(db, s => s.stream_info(&stream).await)?;
    let v = info_json(id, &info);
    if out.json {
        out.json(&v);
    } else {
        let mut t = view::table(&["field", "value"]);
        for key in [
            "status",
            "version",
            "first_readable",
            "archived_below",
            "retention",
        ] {
            t.add_row(vec![key.to_owned(), view::cell(&v[key])]);
        }
        println!("{t}");
    }
    Ok(Done::OK)
}

pub(crate) async fn streams_delete(
    db: &Db,
    out: &Out,
    id: &str,
    hard: bool,
    expected: Option<u64>,
) -> Result<Done, Error> {
    use flext_ports::StreamLifecycle;
    let stream = stream_id(id)?;
    let expected = expected.map_or(flext_domain::ExpectedVersion::Any, |v| {
        flext_domain::ExpectedVersion::Exact(flext_domain::StreamVersion(v))
    });
    let version = if hard {
        on_store!(db, s => s.tombstone_stream(&stream, expected).await)?
    } else {
        on_store!(db, s => s.delete_stream(&stream, expected).await)?
    };
    if out.json {
        out.json(&json!({ "stream_id": id, "version": version.0, "hard": hard }));
    } else if hard {
        println!("tombstoned {id} at version {version}: its events are gone and it takes no more");
    } else {
        println!(
            "deleted {id} at version {version} (an append revives it; read-all keeps its events)"
        );
    }
    Ok(Done::OK)
}

pub(crate) async fn streams_cut(
    db: &Db,
    out: &Out,
    id: &str,
    before: u64,
    archive: bool,
) -> Result<Done, Error> {
    use flext_ports::StreamLifecycle;
    let stream = stream_id(id)?;
    let before = flext_domain::StreamVersion(before);
    let n = if archive {
        on_store!(db, s => s.archive_stream(&stream, before).await)?
    } else {
        on_store!(db, s => s.truncate_stream(&stream, before).await)?
    };
    let verb = if archive { "archived" } else { "removed" };
    if out.json {
        out.json(&json!({ "stream_id": id, "before": before.0, verb: n }));
    } else {
        println!("{verb} {n} events of {id} below version {before}");
    }
    Ok(Done::OK)
}

pub(crate) async fn streams_retention(
    db: &Db,
    out: &Out,
    id: &str,
    policy: Option<flext_ports::RetentionPolicy>,
) -> Result<Done, Error> {
    use flext_ports::StreamLifecycle;
    let stream = stream_id(id)?;
    if policy.is_some_and(|p| p.max_count.is_none() && p.max_age.is_none()) {
        return Err(Error::invalid_argument(
            "INVALID_RETENTION",
            "give --max-count, --max-age-secs or both (or --clear)",
        ));
    }
    on_store!(db, s => s.set_retention(&stream, policy).await)?;
    let info = on_store!(db, s => s.stream_info(&stream).await)?;
    if out.json {
        out.json(&info_json(id, &info));
    } else if policy.is_some() {
        println!("set the retention policy of {id}; the service's retention task applies it");
    } else {
        println!("cleared the retention policy of {id}");
    }
    Ok(Done::OK)
}

pub(crate) async fn subjects_forget(db: &Db, out: &Out, subject: &str) -> Result<Done, Error> {
    use flext_ports::KeyStore;
    // The name `flext_application::DataProtection` keeps a subject's key under.
    let name = format!("subject:{subject}");
    let destroyed = on_store!(db, s => s.forget_data_key(&name).await)?;
    if out.json {
        out.json(&json!({ "subject": subject, "keys_destroyed": destroyed }));
    } else if destroyed == 0 {
        println!("{subject} has no data key (never stored, or already forgotten)");
    } else {
        println!(
            "forgot {subject}: destroyed {destroyed} keys; rebuild the projections that held              its personal data"
        );
    }
    Ok(Done::OK)
}
