//! The `flext` binary run as a real process against a SQLite file and a PostgreSQL schema,
//! while this test process owns the projection (an instance in another process, as an
//! operator meets it): every command, its `--json` shape and its exit code.

use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flext::application::{ProjectionOptions, ProjectionRunner, ProjectionState, Projections};
use flext::ports::sql::{Sql, SqlExt};
use flext::ports::{
    EventStore, Instance, KeyStore, ProjectionStore, StoreInspect, WatchAppends, sql_args,
};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext::{Error, EventMetadata, ExpectedVersion, Position, StreamId};
use flext_testkit::operator::{TOTALS, Totals, event, seed};
use serde_json::{Value, json};

/// Runs `flext` with the store's location and `args`.
async fn flext(db: &[String], args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flext"));
    // The URL goes through the environment, as an operator is told to.
    cmd.env_remove("FLEXT_DATABASE_URL");
    if !db[0].is_empty() {
        cmd.env("FLEXT_DATABASE_URL", &db[0]);
    }
    cmd.args(&db[1..]).args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run flext"))
        .await
        .expect("join")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "flext failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn start<S>(store: &S, healed: &Arc<AtomicBool>) -> Projections<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
    S::Transaction: Sql + Send,
{
    ProjectionRunner::new(store.clone())
        .with_instance(Instance::named("cli-test-owner"))
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

async fn head<S: EventStore>(store: &S) -> Position {
    let mut at = Position::START;
    loop {
        let page = store.read_all(at, 1_000).await.expect("read");
        match page.last() {
            Some(e) => at = e.position,
            None => return at,
        }
    }
}

async fn caught_up<S>(projections: &Projections<S>, store: &S)
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    let to = head(store).await;
    // Parked events below `to` make wait_for report them; reaching it is what counts.
    match projections
        .wait_for(TOTALS, to, Duration::from_secs(30))
        .await
    {
        Ok(()) => {}
        Err(e) if e.reason() == "EVENTS_PARKED" => {}
        Err(e) => panic!("the projection did not catch up: {e}"),
    }
}

async fn totals<S: Sql>(rows: &mut S) -> Vec<(String, i64)> {
    rows.fetch::<(String, i64)>("SELECT stream, n FROM totals ORDER BY stream", sql_args![])
        .await
        .expect("totals")
}

/// Every command against one store, with this process owning the projection.
async fn every_command<S>(store: S, db: Vec<String>, mut read: impl FnMut() -> S::Transaction)
where
    S: ProjectionStore + EventStore + WatchAppends + StoreInspect + KeyStore + Clone,
    S::Transaction: Sql + Send,
{
    let data = seed(&store).await;
    let healed = Arc::new(AtomicBool::new(false));
    let projections = start(&store, &healed);
    caught_up(&projections, &store).await;

    // Streams: a page, a category, paging, one stream, an unknown one.
    let list = json_of(&flext(&db, &["--json", "streams", "list"]).await);
    let ids: Vec<&str> = list["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["stream_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["acct-1", "acct-2", "acct-3", "other-1"]);
    assert_eq!(list["streams"][3]["version"], 2);
    let page = json_of(
        &flext(
            &db,
            &[
                "--json",
                "streams",
                "list",
                "--category",
                "acct",
                "--limit",
                "2",
            ],
        )
        .await,
    );
    assert_eq!(page["streams"].as_array().expect("page").len(), 2);
    assert_eq!(page["next_after"], "acct-2");
    let rest = json_of(
        &flext(
            &db,
            &[
                "--json",
                "streams",
                "list",
                "--category",
                "acct",
                "--after",
                "acct-2",
            ],
        )
        .await,
    );
    assert_eq!(rest["streams"][0]["stream_id"], "acct-3");
    assert_eq!(rest["next_after"], Value::Null);
    let shown = json_of(&flext(&db, &["--json", "streams", "show", "acct-1"]).await);
    assert_eq!(
        shown["events"][0]["payload"],
        json!({ "owner": "ada", "limit": 100 })
    );
    assert_eq!(shown["events"][0]["event_type"], "test.opened");
    assert!(shown["events"][0]["correlation_id"].is_string());
    let missing = flext(&db, &["streams", "show", "nobody-1"]).await;
    assert_eq!(code(&missing), 15, "NOT_FOUND is 10 + 5");
    let text = String::from_utf8_lossy(&flext(&db, &["streams", "show", "acct-1"]).await.stdout)
        .into_owned();
    assert!(text.contains("\"owner\": \"ada\""), "{text}");
    let tail = flext(&db, &["--json", "streams", "tail", "--all", "-n", "2"]).await;
    let tailed: Vec<Value> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(tailed.len(), 2, "the last two events");
    assert_eq!(tailed[1]["event_id"], data.poison.to_string());

    // Personal fields are masked unless asked for.
    store
        .mark_personal("test.opened", &["owner"])
        .await
        .expect("mark");
    let masked = json_of(&flext(&db, &["--json", "streams", "show", "acct-1"]).await);
    assert_eq!(
        masked["events"][0]["payload"],
        json!({ "owner": "[REDACTED]", "limit": 100 })
    );
    let get = flext(&db, &["events", "get", &data.opened.to_string()]).await;
    let text = String::from_utf8_lossy(&get.stdout).into_owned();
    // Quoted: "ada" bare can turn up inside an id's hex digits.
    assert!(!text.contains("\"ada\""), "{text}");
    assert!(text.contains("\"[REDACTED]\""), "{text}");
    let id = data.opened.to_string();
    let shown = json_of(&flext(&db, &["--json", "--show-personal", "events", "get", &id]).await);
    assert_eq!(shown["payload"]["owner"], "ada");

    // Events: one by id, a bad id, the business action as a tree.
    let got = json_of(&flext(&db, &["--json", "events", "get", &data.opened.to_string()]).await);
    assert_eq!(got["stream_id"], "acct-1");
    assert_eq!(
        code(&flext(&db, &["events", "get", "not-a-uuid"]).await),
        13
    );
    let tree = json_of(
        &flext(
            &db,
            &[
                "--json",
                "events",
                "correlated",
                &data.follow_up.to_string(),
            ],
        )
        .await,
    );
    assert_eq!(tree["events"], 2);
    let root = &tree["children"][0];
    assert_eq!(root["kind"], "command");
    let opened = &root["children"][0];
    assert_eq!(opened["id"], data.opened.to_string());
    assert_eq!(
        opened["children"][0]["kind"], "command",
        "the follow-up command"
    );
    assert_eq!(
        opened["children"][0]["children"][0]["id"],
        data.follow_up.to_string()
    );

    // Consumers: owned by this process, the poison parked; health degraded by it.
    let listed = json_of(&flext(&db, &["--json", "projections", "list"]).await);
    let totals_row = listed["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .find(|c| c["name"] == TOTALS)
        .expect("listed")
        .clone();
    assert_eq!(totals_row["dead_letters"], 1);
    assert_eq!(totals_row["lag_events"], 0);
    assert!(
        totals_row["owner"]
            .as_str()
            .expect("owner")
            .starts_with("cli-test-owner@"),
        "{totals_row}"
    );
    let status = json_of(&flext(&db, &["--json", "projections", "status", TOTALS]).await);
    assert_eq!(status["state"], "running");
    assert_eq!(
        code(&flext(&db, &["projections", "status", "nope"]).await),
        15
    );
    let health = flext(&db, &["--json", "health"]).await;
    assert_eq!(code(&health), 1, "degraded by a dead letter");
    let report: Value = serde_json::from_slice(&health.stdout).expect("health JSON");
    assert_eq!(report["status"], "degraded");

    // Dead letters: listed, shown with the event, redriven by the owner once healed.
    let letters = json_of(&flext(&db, &["--json", "dead-letters", "list"]).await);
    assert_eq!(
        letters["dead_letters"][0]["event_id"],
        data.poison.to_string()
    );
    assert_eq!(letters["dead_letters"][0]["error"]["reason"], "POISON");
    let one = json_of(
        &flext(
            &db,
            &[
                "--json",
                "dead-letters",
                "show",
                TOTALS,
                &data.poison.to_string(),
            ],
        )
        .await,
    );
    assert_eq!(one["event"]["payload"], json!({ "bad": true }));
    let failing =
        json_of(&flext(&db, &["--json", "dead-letters", "redrive", TOTALS, "--all"]).await);
    assert_eq!(failing["result"]["redriven"], 0, "still poison: {failing}");
    assert_eq!(
        failing["result"]["still_failing"],
        json!([data.poison.to_string()])
    );
    // Edit, then redrive: the fixed payload is handed over, the stored event stays.
    let fix = std::env::temp_dir().join(format!("flext-fix-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&fix, br#"{"bad": false}"#).expect("write the fix");
    let edited = json_of(
        &flext(
            &db,
            &[
                "--json",
                "dead-letters",
                "edit",
                TOTALS,
                &data.poison.to_string(),
                "--payload-file",
                &fix.display().to_string(),
            ],
        )
        .await,
    );
    let _ = std::fs::remove_file(&fix);
    let redriven = &edited["redrive"];
    assert_eq!(redriven["result"]["redriven"], 1, "{edited}");
    let original =
        json_of(&flext(&db, &["--json", "events", "get", &data.poison.to_string()]).await);
    assert_eq!(
        original["payload"],
        json!({ "bad": true }),
        "the stored event is unchanged"
    );
    let edit = store
        .dead_letter_edit(TOTALS, data.poison)
        .await
        .expect("edit")
        .expect("kept for audit");
    assert!(edit.edited_by.starts_with("flext-cli@"));
    // Shadow rebuilds below replay the stored (original) event.
    healed.store(true, Ordering::SeqCst);
    assert!(
        redriven["carried_out_by"]
            .as_str()
            .expect("by")
            .starts_with("cli-test-owner@"),
        "the owner carried it out: {redriven}"
    );
    assert_eq!(
        json_of(&flext(&db, &["--json", "dead-letters", "list"]).await)["dead_letters"],
        json!([])
    );
    assert_eq!(code(&flext(&db, &["health"]).await), 0, "up once redriven");

    // Pause and resume through the owner.
    json_of(&flext(&db, &["--json", "projections", "pause", TOTALS]).await);
    assert_eq!(
        projections.status(TOTALS).await.expect("status").state,
        ProjectionState::Paused
    );
    assert_eq!(store.paused_consumers().await.expect("paused"), [TOTALS]);
    let paused = json_of(&flext(&db, &["--json", "projections", "status", TOTALS]).await);
    assert_eq!(paused["state"], "paused");
    json_of(&flext(&db, &["--json", "projections", "resume", TOTALS]).await);
    assert!(store.paused_consumers().await.expect("paused").is_empty());
    assert_ne!(
        projections.status(TOTALS).await.expect("status").state,
        ProjectionState::Paused
    );

    // Verify: the read model matches a shadow rebuild; a row changed by hand is caught.
    let clean = json_of(
        &flext(
            &db,
            &["--json", "projections", "rebuild", TOTALS, "--verify"],
        )
        .await,
    );
    assert_eq!(clean["result"]["differences"], 0, "{clean}");
    assert_eq!(clean["result"]["events"], 5);
    let mut tx = read();
    tx.execute(
        "UPDATE totals SET n = 999 WHERE stream = 'other-1'",
        sql_args![],
    )
    .await
    .expect("tamper");
    store.commit(tx).await.expect("commit");
    let caught = flext(
        &db,
        &["--json", "projections", "rebuild", TOTALS, "--verify"],
    )
    .await;
    assert_eq!(code(&caught), 1, "differences exit 1");
    let caught: Value = serde_json::from_slice(&caught.stdout).expect("JSON");
    let table = &caught["result"]["tables"][0];
    assert_eq!(table["table"], "totals");
    assert_eq!(
        table["live_only"],
        json!([{ "stream": "other-1", "n": 999 }])
    );
    assert_eq!(
        table["rebuilt_only"],
        json!([{ "stream": "other-1", "n": 2 }])
    );
    let text = String::from_utf8_lossy(
        &flext(&db, &["projections", "rebuild", TOTALS, "--verify"])
            .await
            .stdout,
    )
    .into_owned();
    assert!(text.contains("2 row(s) differ"), "{text}");

    // Rebuild: the row changed by hand is right again after it.
    let rebuilt = json_of(&flext(&db, &["--json", "projections", "rebuild", TOTALS]).await);
    assert_eq!(rebuilt["restart_after"], 0);
    assert_eq!(rebuilt["events"], 5);
    caught_up(&projections, &store).await;
    let mut tx = read();
    assert_eq!(
        totals(&mut tx).await,
        [
            ("acct-1".to_owned(), 1),
            ("acct-2".to_owned(), 1),
            ("acct-3".to_owned(), 1),
            ("other-1".to_owned(), 2)
        ]
    );
    drop(tx);

    // Stall: a consumer held without moving while events wait is down.
    let lease = store
        .acquire_lease(
            "cli.stuck",
            &Instance::named("stuck"),
            Duration::from_secs(60),
        )
        .await
        .expect("acquire")
        .expect("free");
    let stalled = flext(&db, &["--json", "health", "--stall-after", "0"]).await;
    assert_eq!(code(&stalled), 24, "down exits as UNAVAILABLE");
    let report: Value = serde_json::from_slice(&stalled.stdout).expect("JSON");
    let stuck = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "consumer:cli.stuck")
        .expect("reported");
    assert_eq!(stuck["details"]["state"], "stalled");
    store.release_lease(&lease).await.expect("release");

    // Stats and migrations.
    let stats = json_of(&flext(&db, &["--json", "stats"]).await);
    assert_eq!(stats["stats"]["events"], 5);
    assert_eq!(stats["stats"]["streams"], 4);
    assert_eq!(
        stats["stats"]["by_type"][0],
        json!({ "event_type": "test.noted", "events": 2 })
    );
    assert!(stats["stats"]["storage_bytes"].as_u64().expect("size") > 0);
    let migrations = json_of(&flext(&db, &["--json", "migrate", "status"]).await);
    assert_eq!(migrations["pending"], 0);

    // With no owner running: a pause is carried out by the command line itself; a
    // rebuild waits for an owner and says so.
    projections.shutdown().await;
    let by_cli = json_of(&flext(&db, &["--json", "projections", "pause", TOTALS]).await);
    assert!(
        by_cli["carried_out_by"]
            .as_str()
            .expect("by")
            .starts_with("flext-cli@"),
        "{by_cli}"
    );
    assert_eq!(store.paused_consumers().await.expect("paused"), [TOTALS]);
    let queued = flext(&db, &["projections", "rebuild", TOTALS, "--timeout", "1"]).await;
    assert_eq!(code(&queued), 14, "DEADLINE_EXCEEDED is 10 + 4");
    assert!(
        String::from_utf8_lossy(&queued.stderr).contains("stays queued"),
        "{}",
        String::from_utf8_lossy(&queued.stderr)
    );
    // The next owner takes the queued request and stays paused as stored.
    let projections = start(&store, &healed);
    let pending = loop {
        let pending = store.pending_controls().await.expect("pending");
        if pending.is_empty() {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(pending.is_empty(), "the new owner took the queued rebuild");
    json_of(&flext(&db, &["--json", "projections", "resume", TOTALS]).await);
    caught_up(&projections, &store).await;
    projections.shutdown().await;

    // Stream lifecycle on `other-1` (two events).
    let info = json_of(&flext(&db, &["--json", "streams", "info", "other-1"]).await);
    assert_eq!(
        (info["status"].as_str(), info["version"].as_u64()),
        (Some("live"), Some(2))
    );
    let policy = json_of(
        &flext(
            &db,
            &[
                "--json",
                "streams",
                "retention",
                "other-1",
                "--max-count",
                "1",
                "--archive",
            ],
        )
        .await,
    );
    assert_eq!(policy["retention"]["max_count"], 1, "{policy}");
    assert_eq!(policy["retention"]["archive"], true, "{policy}");
    let no_bound = flext(&db, &["streams", "retention", "other-1"]).await;
    assert_eq!(code(&no_bound), 13, "INVALID_ARGUMENT is 10 + 3");
    let archived = json_of(
        &flext(
            &db,
            &["--json", "streams", "archive", "other-1", "--before", "2"],
        )
        .await,
    );
    assert_eq!(archived["archived"], 1, "{archived}");
    let shown = json_of(&flext(&db, &["--json", "streams", "show", "other-1"]).await);
    assert_eq!(
        shown["events"].as_array().map(Vec::len),
        Some(2),
        "read through: {shown}"
    );
    let truncated = json_of(
        &flext(
            &db,
            &["--json", "streams", "truncate", "other-1", "--before", "2"],
        )
        .await,
    );
    assert_eq!(truncated["removed"], 1, "{truncated}");
    let stale = flext(&db, &["streams", "delete", "other-1", "--expected", "1"]).await;
    assert_eq!(code(&stale), 20, "ABORTED is 10 + 10");
    let deleted = json_of(&flext(&db, &["--json", "streams", "delete", "other-1"]).await);
    assert_eq!(
        (deleted["version"].as_u64(), deleted["hard"].as_bool()),
        (Some(2), Some(false))
    );
    let info = json_of(&flext(&db, &["--json", "streams", "info", "other-1"]).await);
    assert_eq!(info["status"], "deleted");
    let refused = flext(&db, &["streams", "show", "other-1"]).await;
    assert_eq!(code(&refused), 15, "NOT_FOUND is 10 + 5");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("STREAM_DELETED"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    json_of(&flext(&db, &["--json", "streams", "delete", "other-1", "--hard"]).await);
    let info = json_of(&flext(&db, &["--json", "streams", "info", "other-1"]).await);
    assert_eq!(info["status"], "tombstoned");
    let unknown = flext(&db, &["streams", "delete", "nobody-1"]).await;
    assert_eq!(code(&unknown), 15);

    // Forgetting a subject destroys its key and its streams' snapshot keys.
    store
        .create_data_key("subject:c-9", vec![1; 72])
        .await
        .expect("key");
    store
        .create_data_key("stream:customer-9", vec![2; 72])
        .await
        .expect("key");
    store
        .link_data_key("subject:c-9", "stream:customer-9")
        .await
        .expect("link");
    let forgot = json_of(&flext(&db, &["--json", "subjects", "forget", "c-9"]).await);
    assert_eq!(forgot["keys_destroyed"], 2, "{forgot}");
    assert_eq!(store.data_key("subject:c-9").await.expect("read"), None);
    assert_eq!(
        store.data_key("stream:customer-9").await.expect("read"),
        None
    );
    let again = json_of(&flext(&db, &["--json", "subjects", "forget", "c-9"]).await);
    assert_eq!(again["keys_destroyed"], 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("flext-cli-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("events.db");
    let store = SqliteEventStore::open(&path).await.expect("open");
    let db = vec![path.display().to_string()];
    let reads = store.clone();
    every_command(store.clone(), db, move || futures_block(reads.begin())).await;
    store.close().await.expect("close");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_postgres() {
    let store: PgEventStore = flext_testkit::harness::fresh_pg_store("cli").await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(store.pool())
        .await
        .expect("schema");
    let db = vec![
        flext_testkit::harness::database_url(),
        "--schema".to_owned(),
        schema,
    ];
    let reads = store.clone();
    every_command(store.clone(), db, move || futures_block(reads.begin())).await;
}

/// Runs a store's `begin` to completion from synchronous code inside the runtime.
fn futures_block<T>(f: impl Future<Output = Result<T, Error>>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f)).expect("begin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_its_migrations_is_refused_until_migrated() {
    let dir = std::env::temp_dir().join(format!("flext-cli-m-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("empty.db");
    std::fs::write(&path, b"").expect("an empty file");
    let db = vec![path.display().to_string()];
    let refused = flext(&db, &["streams", "list"]).await;
    assert_eq!(code(&refused), 19, "FAILED_PRECONDITION is 10 + 9");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("flext migrate apply"));
    let status = json_of(&flext(&db, &["--json", "migrate", "status"]).await);
    let pending = status["pending"].as_u64().expect("pending");
    assert!(pending >= 10, "{status}");
    let applied = json_of(&flext(&db, &["--json", "migrate", "apply"]).await);
    assert_eq!(applied["applied"].as_u64(), Some(pending));
    let list = json_of(&flext(&db, &["--json", "streams", "list"]).await);
    assert_eq!(list["streams"], json!([]));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_and_completions() {
    let none: Vec<String> = vec![String::new()];
    let missing = flext(&none, &["stats"]).await;
    assert_eq!(code(&missing), 13, "no store: INVALID_ARGUMENT");
    let nowhere = flext(&["/nonexistent/flext.db".to_owned()], &["--json", "stats"]).await;
    assert_eq!(code(&nowhere), 15);
    let err: Value = serde_json::from_slice(&nowhere.stderr).expect("the error as JSON");
    assert_eq!(err["error"]["reason"], "DATABASE_NOT_FOUND");
    let bad = flext(&none, &["streams", "frobnicate"]).await;
    assert_eq!(code(&bad), 2, "clap's usage error");
    let bash = flext(&none, &["completions", "bash"]).await;
    assert_eq!(code(&bash), 0);
    assert!(String::from_utf8_lossy(&bash.stdout).contains("dead-letters"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follow_prints_events_as_they_are_stored() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("flext-cli-t-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("events.db");
    let store = SqliteEventStore::open(&path).await.expect("open");
    let stream = StreamId::new("acct-9").expect("id");
    let first = event("test.noted", json!({ "n": 1 }), EventMetadata::default());
    store
        .append(&stream, ExpectedVersion::Any, vec![first])
        .await
        .expect("append");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flext"))
        .env("FLEXT_DATABASE_URL", path.display().to_string())
        .args(["--json", "streams", "tail", "acct-9", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn flext");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = lines.recv().await.expect("the stored event");
    let v: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(v["payload"], json!({ "n": 1 }));
    // Appended by another process's store while the tail follows.
    let second = event("test.noted", json!({ "n": 2 }), EventMetadata::default());
    store
        .append(&stream, ExpectedVersion::Any, vec![second])
        .await
        .expect("append");
    let line = lines.recv().await.expect("the new event");
    let v: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(v["payload"], json!({ "n": 2 }));
    assert_eq!(v["version"], 2);
    child.kill().expect("stop the tail");
    let _ = child.wait();
    store.close().await.expect("close");
    let _ = std::fs::remove_dir_all(dir);
}

/// `flext inbox dead-letters NAME`: the messages an inbox parked, oldest first, without
/// their payloads (only their size: a foreign payload may hold personal data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_dead_letters_are_listed() {
    use flext::ports::{InboxDeadLetter, InboxStore};
    let dir = std::env::temp_dir().join(format!("flext-cli-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("events.db");
    let store = SqliteEventStore::open(&path).await.expect("open");
    let mut tx = store.begin().await.expect("begin");
    for (id, at) in [("m-2", 2), ("m-1", 1)] {
        let letter = InboxDeadLetter {
            consumer: "notifier".into(),
            message_id: id.into(),
            subject: "bank.transfers.completed".into(),
            headers: vec![(
                "Flext-Event-Type".into(),
                "account.transfer_received".into(),
            )],
            payload: b"{\"owner\":\"ann\"}".to_vec(),
            error: Error::invalid_argument("UNREADABLE_BANK_MESSAGE", "does not decode"),
            deliveries: 5,
            parked_at: chrono::DateTime::from_timestamp(1_700_000_000 + at, 0).expect("time"),
        };
        store.park_message(&mut tx, &letter).await.expect("park");
    }
    store.commit(tx).await.expect("commit");
    let db = vec![path.display().to_string()];
    let listed = json_of(&flext(&db, &["--json", "inbox", "dead-letters", "notifier"]).await);
    let letters = listed["dead_letters"].as_array().expect("a list");
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["message_id"], "m-1", "oldest first");
    assert_eq!(letters[0]["subject"], "bank.transfers.completed");
    assert_eq!(letters[0]["deliveries"], 5);
    assert_eq!(letters[0]["error"]["reason"], "UNREADABLE_BANK_MESSAGE");
    assert_eq!(letters[0]["payload_bytes"], 15);
    assert!(!listed.to_string().contains("ann"), "no payload shown");
    let text = flext(&db, &["inbox", "dead-letters", "notifier"]).await;
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("2 messages parked by inbox notifier"),
        "{text}"
    );
    let none = json_of(&flext(&db, &["--json", "inbox", "dead-letters", "other"]).await);
    assert_eq!(none["dead_letters"], json!([]));
    store.close().await.expect("close");
    let _ = std::fs::remove_dir_all(dir);
}

/// In a schema of tables shared by tenants, `--tenant` shows one tenant's data only
/// (connected as the service's role); a superuser is refused, as row-level security
/// would not bind it; SQLite has no shared tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_of_shared_tables_sees_its_own_streams() {
    use flext::ports::TenantStores;
    let (schema, url) = flext_testkit::harness::fresh_shared_schema("cli_shared").await;
    let tenants = flext::postgres::PgSharedTenantStores::new(&url).schema(&schema);
    let acme = tenants
        .store(&flext::TenantId::new("acme").expect("valid"))
        .await
        .expect("acme");
    let globex = tenants
        .store(&flext::TenantId::new("globex").expect("valid"))
        .await
        .expect("globex");
    for (store, streams) in [
        (&acme, &["order-1", "order-2"][..]),
        (&globex, &["order-1"]),
    ] {
        for s in streams {
            store
                .append(
                    &StreamId::new(*s).expect("valid"),
                    ExpectedVersion::NoStream,
                    vec![event("t", json!({}), EventMetadata::default())],
                )
                .await
                .expect("append");
        }
    }
    let db = |tenant: &str| {
        vec![
            url.clone(),
            "--schema".to_owned(),
            schema.clone(),
            "--tenant".to_owned(),
            tenant.to_owned(),
        ]
    };
    let list = json_of(&flext(&db("acme"), &["--json", "streams", "list"]).await);
    assert_eq!(
        list["streams"].as_array().expect("streams").len(),
        2,
        "{list}"
    );
    let list = json_of(&flext(&db("globex"), &["--json", "streams", "list"]).await);
    assert_eq!(
        list["streams"].as_array().expect("streams").len(),
        1,
        "{list}"
    );
    let mut as_root = db("acme");
    as_root[0] = flext_testkit::harness::database_url();
    let refused = flext(&as_root, &["--json", "streams", "list"]).await;
    assert_eq!(code(&refused), 19, "FAILED_PRECONDITION");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("TENANCY_NOT_ENFORCED"));
    let sqlite = flext(
        &[
            "sqlite::memory:".to_owned(),
            "--tenant".to_owned(),
            "acme".to_owned(),
        ],
        &["streams", "list"],
    )
    .await;
    assert_eq!(code(&sqlite), 13, "INVALID_ARGUMENT");
    tenants.close().await.expect("close");
    let admin = sqlx::PgPool::connect(&flext_testkit::harness::database_url())
        .await
        .expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&admin)
    .await
    .expect("drop");
}
