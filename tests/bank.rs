//! The bank example end to end, on a SQLite file and on PostgreSQL: the walkthrough's final
//! balances, the read models, the correlation of a transfer's events across its legs, the
//! compensation of a transfer whose second leg is refused, a second run that resumes from
//! the stored state, and a small load run whose money adds up.

#[path = "../examples/bank/app.rs"]
mod app;
mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use app::{ALICE, BOB, Balance, Bank, BankStore, CAROL, account_id};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext::{Position, RecordedEvent, StreamId};

fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

fn stream_of(name: &str) -> StreamId {
    StreamId::for_aggregate(account_id(name))
}

/// One walkthrough on `store`; `run` is 1 for the first on this database, 2 for the next.
async fn walkthrough_checks<S: BankStore>(store: S, run: i64) {
    let bank = Bank::start(store).await.expect("start");
    let w = app::walkthrough(&bank, |_| {}).await.expect("walkthrough");
    assert_eq!(w.resumed, run > 1, "{:#?}", w.lines);

    // Final balances, from the balances projection (read your writes).
    let by_owner = |owner: &str| -> &Balance {
        w.balances
            .iter()
            .find(|b| b.owner == owner)
            .unwrap_or_else(|| panic!("{owner} in {:?}", w.balances))
    };
    assert_eq!(by_owner(ALICE).balance, 330 * run);
    assert_eq!(by_owner(BOB).balance, 320 * run);
    assert_eq!(by_owner(CAROL).balance, 0);
    assert!(by_owner(CAROL).closed);
    assert!(!by_owner(ALICE).closed);

    // The completed transfer: one business action, two streams, one correlation id.
    assert_eq!(
        types(&w.completed_transfer),
        ["account.transfer_sent", "account.transfer_received"]
    );
    assert_eq!(w.completed_transfer[0].stream_id, stream_of(ALICE));
    assert_eq!(w.completed_transfer[1].stream_id, stream_of(BOB));
    let correlation = w.completed_transfer[0].metadata.correlation_id;
    assert!(correlation.is_some());
    assert!(
        w.completed_transfer
            .iter()
            .all(|e| e.metadata.correlation_id == correlation)
    );
    // The second leg was recorded by a follow-up command, not by the transfer itself.
    assert_ne!(
        w.completed_transfer[1].metadata.causation_id,
        w.completed_transfer[0].metadata.causation_id
    );

    // The compensated transfer: carol's account declined it, alice got her money back.
    assert_eq!(
        types(&w.compensated_transfer),
        [
            "account.transfer_sent",
            "account.transfer_declined",
            "account.transfer_refunded"
        ]
    );
    let streams: Vec<&StreamId> = w
        .compensated_transfer
        .iter()
        .map(|e| &e.stream_id)
        .collect();
    assert_eq!(
        streams,
        [&stream_of(ALICE), &stream_of(CAROL), &stream_of(ALICE)]
    );
    let compensation = w.compensated_transfer[0].metadata.correlation_id;
    assert!(compensation.is_some());
    assert_ne!(compensation, correlation);
    assert!(
        w.compensated_transfer
            .iter()
            .all(|e| e.metadata.correlation_id == compensation)
    );
    let refund: serde_json::Value =
        serde_json::from_slice(&w.compensated_transfer[2].payload).expect("json");
    assert_eq!(refund["TransferRefunded"]["amount"], 40);
    assert!(
        refund["TransferRefunded"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("closed")),
        "{refund}"
    );
    // Nothing was credited to carol: her account recorded the decline only.
    let carol = bank
        .store
        .read_stream(
            &stream_of(CAROL),
            flext::StreamVersion(1),
            100,
            flext::ports::ReadDirection::Forward,
        )
        .await
        .expect("carol");
    let mut expected = vec!["account.opened", "account.closed"];
    expected.extend(std::iter::repeat_n(
        "account.transfer_declined",
        run as usize,
    ));
    assert_eq!(types(&carol), expected, "one decline per run");

    // The history projection: alice's lines of this run, with their correlation ids.
    let mine: Vec<_> = w.alice_history.iter().rev().take(6).rev().collect();
    let kinds: Vec<&str> = mine.iter().map(|h| h.kind.as_str()).collect();
    if run == 1 {
        assert_eq!(
            kinds,
            [
                "opened",
                "deposited",
                "withdrawn",
                "transfer_sent",
                "transfer_sent",
                "transfer_refunded"
            ]
        );
        let amounts: Vec<i64> = mine.iter().map(|h| h.amount).collect();
        assert_eq!(amounts, [0, 500, -50, -120, -40, 40]);
    } else {
        assert_eq!(w.alice_history.len(), 6 + 5 * (run as usize - 1));
        // The previous run's refund, then this run's five lines (no second "opened").
        assert_eq!(
            kinds,
            [
                "transfer_refunded",
                "deposited",
                "withdrawn",
                "transfer_sent",
                "transfer_sent",
                "transfer_refunded"
            ]
        );
    }
    let last = mine.last().expect("a line");
    assert_eq!(
        last.correlation,
        compensation.map(|c| c.to_string()),
        "the refund line carries the transfer's correlation id"
    );

    // The audit trail holds every event of the database.
    let head = bank.head().await.expect("head");
    let all = bank
        .store
        .count_after(Position::START)
        .await
        .expect("count");
    assert_eq!(bank.read.audit_count().await.expect("audit"), all as i64);
    assert!(head > Position::START);

    // The bridge output decodes to the balance it was made from.
    let bytes: Vec<u8> = (0..w.bridge_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&w.bridge_hex[i..i + 2], 16).expect("hex"))
        .collect();
    let decoded = flext::bridge::msgpack::decode_result::<Balance>(&bytes).expect("an envelope");
    assert_eq!(decoded.result.expect("ok"), *by_owner(ALICE));
    assert_eq!(decoded.metadata["position"], head.get().to_string());

    assert!(bank.all_settled().await.expect("settled"));
    for name in [
        app::BALANCES,
        app::HISTORY,
        app::AUDIT,
        app::TRANSFER_PROCESS,
    ] {
        let status = bank.projections.status(name).await.expect("status");
        assert_eq!(status.dead_letters, 0, "{name}");
        assert_eq!(status.lag_events, 0, "{name}");
    }
    bank.shutdown().await.expect("shutdown");
}

async fn load_checks<S: BankStore>(store: S) {
    let bank = Bank::start(store).await.expect("start");
    let report = app::load(&bank, 12, 300, 4, Arc::new(AtomicBool::new(false)))
        .await
        .expect("load");
    assert_eq!(report.transfers_sent + report.transfers_refused, 300);
    assert!(report.transfers_sent > 0);
    // Money is neither made nor lost: what was deposited is what the accounts hold.
    assert_eq!(
        bank.read.total_balance().await.expect("total"),
        report.total_deposited
    );
    // Every first leg has exactly one second leg or refund, in the same business action.
    let mut events = Vec::new();
    let mut after = Position::START;
    loop {
        let page = bank.store.read_all(after, 1_000).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        events.extend(page);
    }
    let sent: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| e.event_type == "account.transfer_sent")
        .collect();
    assert_eq!(sent.len() as u64, report.transfers_sent);
    for s in sent {
        let settled: Vec<&RecordedEvent> = events
            .iter()
            .filter(|e| {
                e.metadata.correlation_id == s.metadata.correlation_id
                    && (e.event_type == "account.transfer_received"
                        || e.event_type == "account.transfer_refunded")
            })
            .collect();
        assert_eq!(
            settled.len(),
            1,
            "transfer at {} settled once",
            s.position.get()
        );
    }
    bank.shutdown().await.expect("shutdown");
}

fn temp_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flext-bank-e2e-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_on_sqlite_and_again_after_a_restart() {
    let path = temp_file("bank.db");
    walkthrough_checks(SqliteEventStore::open(&path).await.expect("open"), 1).await;
    walkthrough_checks(SqliteEventStore::open(&path).await.expect("reopen"), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_on_postgres_and_again_after_a_restart() {
    let store = flext_testkit::harness::fresh_pg_store("bank").await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(store.pool())
        .await
        .expect("schema");
    walkthrough_checks(store, 1).await;
    let again = PgEventStore::builder(flext_testkit::harness::database_url())
        .schema(schema)
        .connect()
        .await
        .expect("reconnect");
    walkthrough_checks(again, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_run_on_sqlite_keeps_the_money_and_settles_every_transfer() {
    load_checks(
        SqliteEventStore::open(temp_file("load.db"))
            .await
            .expect("open"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_run_on_postgres_keeps_the_money_and_settles_every_transfer() {
    load_checks(flext_testkit::harness::fresh_pg_store("bank_load").await).await;
}

/// The bank example's binary, built by `cargo test` next to this test's.
fn bank_binary() -> std::path::PathBuf {
    common::example_binary("bank")
}

/// Runs a set-up bank, then two bank load runs at once as two processes on one database:
/// both exit 0 with the verdict that the money adds up and nothing was parked.
fn two_instances_at_once(database: &[&str]) {
    let run = |instance: &str, transfers: &str| {
        std::process::Command::new(bank_binary())
            .args(database)
            .args([
                "--instance",
                instance,
                "--accounts",
                "12",
                "--transfers",
                transfers,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the bank")
    };
    let setup = run("setup", "10");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run("a", "300"));
        let b = s.spawn(|| run("b", "300"));
        (a.join().expect("a"), b.join().expect("b"))
    });
    for (name, out) in [("a", &a), ("b", &b)] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "instance {name} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("verdict: ok") && stdout.contains("0 dead letters"),
            "instance {name}:\n{stdout}"
        );
    }
}

#[test]
fn two_bank_processes_at_once_on_postgres() {
    let url = flext_testkit::harness::database_url();
    let schema = format!("bank_two_{}", uuid::Uuid::now_v7().simple());
    two_instances_at_once(&[&format!("--postgres={url}"), "--schema", &schema]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .expect("drop the schema");
    });
}

#[test]
fn two_bank_processes_at_once_on_sqlite() {
    let path = std::env::temp_dir().join(format!(
        "flext-bank-two-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let path = path.to_str().expect("utf-8 path");
    two_instances_at_once(&["--sqlite", path]);
}

/// What the stored events say of every transfer: per transfer id, how many first legs,
/// receipts, declines and refunds; and the money they moved in and out of all accounts.
#[derive(Debug, Default)]
struct Ledger {
    legs: std::collections::HashMap<String, [u32; 4]>,
    money: i64,
}

async fn ledger_of<S: BankStore>(store: &S) -> Ledger {
    let mut ledger = Ledger::default();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 5_000).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            let payload: serde_json::Value = serde_json::from_slice(&e.payload).expect("json");
            let (slot, key) = match e.event_type.as_str() {
                "account.transfer_sent" => (0, "TransferSent"),
                "account.transfer_received" => (1, "TransferReceived"),
                "account.transfer_declined" => (2, "TransferDeclined"),
                "account.transfer_refunded" => (3, "TransferRefunded"),
                "account.deposited" => {
                    ledger.money += payload["Deposited"]["amount"].as_i64().expect("amount");
                    continue;
                }
                _ => continue,
            };
            let body = &payload[key];
            let amount = body["amount"].as_i64().expect("amount");
            ledger.money += match slot {
                0 => -amount,
                1 | 3 => amount,
                _ => 0,
            };
            let transfer = body["transfer"].as_str().expect("transfer id").to_owned();
            ledger.legs.entry(transfer).or_default()[slot] += 1;
        }
    }
    ledger
}

/// Whether the transfer process has nothing in flight and has read everything stored.
async fn transfers_all_settled<S: BankStore>(store: &S) -> bool {
    let mut head = Position::START;
    loop {
        let page = store.read_all(head, 10_000).await.expect("read");
        match page.last() {
            Some(e) => head = e.position,
            None => break,
        }
    }
    let checkpoint = store
        .load_checkpoint(app::TRANSFER_PROCESS)
        .await
        .expect("checkpoint")
        .unwrap_or(Position::START);
    checkpoint >= head
        && store
            .processes(app::TRANSFER_PROCESS)
            .await
            .expect("processes")
            .is_empty()
        && store.next_due().await.expect("next").is_none()
}

/// The crash test of the transfer process: while this test sends transfers without
/// pause (as a bank client that runs no consumers), the bank process that runs the
/// transfer process (with the projections and the scheduler) is SIGKILLed at a random
/// moment and started again, 20 times; the deadline is 2 s, so transfers held up by a
/// dead process are declined and refunded while others complete. Then one last process
/// settles the rest. Every transfer sent is received once, or declined and refunded once,
/// never both, none missing, and the money adds up.
async fn the_transfer_process_survives_sigkills<S: BankStore>(store: S, database: Vec<String>) {
    const KILLS: usize = 20;
    let client = Bank::start_with(
        store.clone(),
        flext::ports::Instance::named("client"),
        app::BankSettings {
            consumers: false,
            ..app::BankSettings::default()
        },
    )
    .await
    .expect("client");
    let accounts: Vec<_> = (0..10).map(|i| account_id(&format!("crash-{i}"))).collect();
    // The last account is closed: transfers to it are declined and refunded.
    let open = accounts.len() - 1;
    for (i, id) in accounts.iter().enumerate() {
        client
            .run(app::OpenAccount {
                account: *id,
                owner: format!("crash-{i}"),
                overdraft_limit: 0,
            })
            .await
            .1
            .expect("open");
        if i == open {
            client
                .run(app::CloseAccount { account: *id })
                .await
                .1
                .expect("close");
            continue;
        }
        client
            .run(app::Deposit {
                account: *id,
                amount: 100_000,
            })
            .await
            .1
            .expect("deposit");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for worker in 0..4u64 {
        let (commands, accounts, stop) = (client.commands.clone(), accounts.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(worker + 1);
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let from = rng.usize(..open);
                let to = (from + 1 + rng.usize(..accounts.len() - 1)) % accounts.len();
                let transfer = app::Transfer {
                    transfer: uuid::Uuid::now_v7(),
                    from: accounts[from],
                    to: accounts[to],
                    amount: rng.i64(1..=100),
                };
                match commands
                    .dispatch(transfer, &flext::ports::Context::new())
                    .await
                {
                    Ok(_) => sent += 1,
                    Err(e) if e.reason() == flext::WRONG_EXPECTED_VERSION => {}
                    Err(e) => panic!("a transfer failed: {e:#}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(40)).await;
            }
            sent
        }));
    }
    let serve = |name: String| {
        std::process::Command::new(bank_binary())
            .args(&database)
            .args(["--serve", "--settle-within", "2", "--instance", &name])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(std::env::temp_dir().join(format!("flext-crash-{name}.log")))
                    .expect("log"),
            )
            .spawn()
            .expect("start a bank process")
    };
    let mut rng = fastrand::Rng::with_seed(42);
    for round in 0..KILLS {
        let mut child = serve(format!("serve-{round}"));
        // Long enough to take over from the last one killed (its lease lapses in 1.5 s)
        // and run a while; the kill falls anywhere in a batch.
        let millis = rng.u64(1_600..3_200);
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut sent = 0;
    for s in senders {
        sent += s.await.expect("sender");
    }
    let settling = std::time::Instant::now();
    let mut last = serve("serve-last".to_owned());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !transfers_all_settled(&store).await {
        if std::time::Instant::now() > deadline {
            panic!(
                "the transfers did not settle after the last restart: checkpoint {:?}, head {:?}, {} instances, next due {:?}",
                store.load_checkpoint(app::TRANSFER_PROCESS).await,
                store
                    .read_all(Position::START, 1_000_000)
                    .await
                    .map(|p| p.last().map(|e| e.position)),
                store
                    .processes(app::TRANSFER_PROCESS)
                    .await
                    .map(|p| p.len())
                    .unwrap_or(0),
                store.next_due().await,
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    last.kill().expect("SIGKILL");
    last.wait().expect("reaped");
    client.shutdown().await.expect("client shutdown");

    let ledger = ledger_of(&store).await;
    let (mut received, mut refunded) = (0u64, 0u64);
    for (transfer, [s, r, d, f]) in &ledger.legs {
        assert_eq!(*s, 1, "transfer {transfer} sent once: {:?}", [s, r, d, f]);
        match (r, d, f) {
            (1, 0, 0) => received += 1,
            (0, 1, 1) => refunded += 1,
            other => panic!(
                "transfer {transfer} settled wrongly: received, declined, refunded = {other:?}"
            ),
        }
    }
    assert_eq!(
        ledger.legs.len() as u64,
        sent,
        "every transfer sent is stored"
    );
    assert_eq!(sent, received + refunded, "sent = received + refunded");
    assert_eq!(ledger.money, 100_000 * open as i64, "no money made or lost");
    eprintln!(
        "{KILLS} SIGKILLs: {sent} transfers sent, {received} received, {refunded} declined and refunded; the last process settled the rest in {:.1} s",
        settling.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transfer_process_survives_20_sigkills_on_postgres() {
    let store = flext_testkit::harness::fresh_pg_store("bank_crash").await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(store.pool())
        .await
        .expect("schema");
    let url = flext_testkit::harness::database_url();
    the_transfer_process_survives_sigkills(
        store,
        vec![format!("--postgres={url}"), "--schema".to_owned(), schema],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transfer_process_survives_20_sigkills_on_sqlite() {
    let path = temp_file("crash.db");
    let store = SqliteEventStore::open(&path).await.expect("open");
    the_transfer_process_survives_sigkills(
        store,
        vec![
            "--sqlite".to_owned(),
            path.to_str().expect("utf-8").to_owned(),
        ],
    )
    .await;
}

/// The nightly statement, a recurring background job: run (here enqueued for a day
/// already past, as the cron schedule would at 02:00 UTC), it writes each account's
/// balance of that day, once.
async fn nightly_statements_checks<S: BankStore>(store: S) {
    let bank = Bank::start(store.clone()).await.expect("start");
    let (a, b) = (
        account_id(&format!("statement-a-{}", uuid::Uuid::now_v7())),
        account_id(&format!("statement-b-{}", uuid::Uuid::now_v7())),
    );
    for (id, amount) in [(a, 70), (b, 30)] {
        bank.run(app::OpenAccount {
            account: id,
            owner: "statement".into(),
            overdraft_limit: 0,
        })
        .await
        .1
        .expect("open");
        bank.run(app::Deposit {
            account: id,
            amount,
        })
        .await
        .1
        .expect("deposit");
    }
    let head = bank.head().await.expect("head");
    bank.caught_up(head).await.expect("caught up");
    let mut job =
        flext::application::new_job(&app::NightlyStatements {}, &flext::ports::Context::new())
            .expect("job");
    job.run_at = chrono::DateTime::parse_from_rfc3339("2026-11-30T02:00:00Z")
        .expect("time")
        .into();
    assert!(store.enqueue(&job).await.expect("enqueue"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let rows = loop {
        let rows = bank
            .read
            .statements("2026-11-30".into())
            .await
            .expect("statements");
        if !rows.is_empty() {
            break rows;
        }
        assert!(std::time::Instant::now() < deadline, "no statement written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let mine: Vec<(String, i64)> = rows
        .into_iter()
        .filter(|(account, _)| *account == a.to_string() || *account == b.to_string())
        .collect();
    let mut expected = vec![(a.to_string(), 70), (b.to_string(), 30)];
    expected.sort();
    assert_eq!(mine, expected);
    // The job's rows commit before the worker records its success: wait for the record.
    let nightly = loop {
        let stats = bank
            .jobs
            .as_ref()
            .expect("jobs")
            .stats()
            .await
            .expect("stats");
        let nightly = stats
            .into_iter()
            .find(|s| s.kind == "bank.nightly_statements")
            .expect("kind");
        if nightly.succeeded + nightly.dead > 0 {
            break nightly;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!((nightly.succeeded, nightly.dead), (1, 0));
    bank.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nightly_statement_job_on_sqlite() {
    nightly_statements_checks(
        SqliteEventStore::open(temp_file("statements.db"))
            .await
            .expect("open"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nightly_statement_job_on_postgres() {
    nightly_statements_checks(flext_testkit::harness::fresh_pg_store("bank_statements").await)
        .await;
}

/// `bank flext ...`: the command line inside the bank's binary. With no bank instance
/// running, a rebuild is carried out by the bank's consumers started for the command,
/// which give the lease back when it is done.
#[test]
fn the_command_line_inside_the_bank_rebuilds_with_nobody_running() {
    let path = std::env::temp_dir().join(format!(
        "flext-bank-cli-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let path = path.to_str().expect("utf-8 path");
    let setup = std::process::Command::new(bank_binary())
        .args(["--sqlite", path, "--accounts", "6", "--transfers", "10"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the bank");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let flext = |args: &[&str]| {
        std::process::Command::new(bank_binary())
            .args(["flext", "--database", path])
            .args(args)
            .env_remove("FLEXT_DATABASE_URL")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run bank flext")
    };
    let rebuilt = flext(&["projections", "rebuild", "bank.balances", "--timeout", "60"]);
    let stdout = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(
        rebuilt.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(
        stdout.contains("rebuilt bank.balances")
            && stdout.contains("carried out by bank-flext-cli@"),
        "{stdout}"
    );
    let status = flext(&["--json", "projections", "status", "bank.balances"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(
        status["owner"],
        serde_json::Value::Null,
        "the lease is given back"
    );
    assert_eq!(status["lag_events"], 0, "{status}");
    let _ = std::fs::remove_file(path);
}

/// The bank's integration messages: with a relay to NATS JetStream, a completed transfer
/// (its second leg received) and a refunded one (to a closed account) are published to
/// `<prefix>.transfers.completed` and `.refunded`, with the event id as message id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_publishes_completed_and_refunded_transfers_to_nats() {
    let url = std::env::var("FLEXT_NATS_URL").unwrap_or_else(|_| {
        panic!("FLEXT_NATS_URL is not set: run ./scripts/test, which finds or starts a NATS")
    });
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (name, prefix) = (format!("BANK_{id}"), format!("t{id}.bank"));
    let nats = flext::nats::JetStream::connect(&url)
        .await
        .expect("connect");
    nats.ensure_stream(
        &name,
        &[&format!("{prefix}.transfers.>")],
        std::time::Duration::from_secs(120),
    )
    .await
    .expect("stream");
    let store = SqliteEventStore::open(temp_file("integration.db"))
        .await
        .expect("open");
    let bank = Bank::start_with(
        store.clone(),
        flext::ports::Instance::named("integration"),
        app::BankSettings {
            integration: Some(app::Integration {
                publisher: nats.publisher(&name),
                prefix: prefix.clone(),
            }),
            ..app::BankSettings::default()
        },
    )
    .await
    .expect("start");
    let [a, b, closed] = ["int-a", "int-b", "int-closed"].map(account_id);
    for id in [a, b, closed] {
        bank.run(app::OpenAccount {
            account: id,
            owner: "integration".into(),
            overdraft_limit: 0,
        })
        .await
        .1
        .expect("open");
    }
    bank.run(app::Deposit {
        account: a,
        amount: 100,
    })
    .await
    .1
    .expect("deposit");
    bank.run(app::CloseAccount { account: closed })
        .await
        .1
        .expect("close");
    for to in [b, closed] {
        bank.run(app::Transfer {
            transfer: uuid::Uuid::now_v7(),
            from: a,
            to,
            amount: 10,
        })
        .await
        .1
        .expect("transfer");
    }
    let js = nats.context().get_stream(&name).await.expect("stream");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while js.get_info().await.expect("info").state.messages < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no integration messages"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut subjects = Vec::new();
    for seq in 1..=2 {
        let m = js.get_raw_message(seq).await.expect("message");
        let event_type = m
            .headers
            .get(flext::application::relay_headers::EVENT_TYPE)
            .expect("type")
            .as_str()
            .to_owned();
        subjects.push((m.subject.to_string(), event_type));
    }
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            (
                format!("{prefix}.transfers.completed"),
                "account.transfer_received".to_owned()
            ),
            (
                format!("{prefix}.transfers.refunded"),
                "account.transfer_refunded".to_owned()
            ),
        ]
    );
    bank.shutdown().await.expect("shutdown");
    nats.context().delete_stream(&name).await.expect("drop");
}

/// Kills a process when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two services as two processes: the bank publishing its transfers to JetStream, and the
/// notifier taking them in through its inbox into its own SQLite file. The notifier's
/// totals per account come out as the bank's stored events say: every completed and
/// refunded transfer counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_process_counts_the_bank_processes_transfers_once() {
    use flext::ports::EventStore;
    let url = std::env::var("FLEXT_NATS_URL").unwrap_or_else(|_| {
        panic!("FLEXT_NATS_URL is not set: run ./scripts/test, which finds or starts a NATS")
    });
    let stream = format!("NOTIFY{}", uuid::Uuid::now_v7().simple());
    let (bank_db, notifier_db) = (temp_file("bank.db"), temp_file("notifier.db"));
    let notifier_bin = common::example_binary("notifier");
    let _notifier = Killed(
        std::process::Command::new(&notifier_bin)
            .args(["--nats", &url, "--stream", &stream, "--sqlite"])
            .arg(&notifier_db)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the notifier"),
    );
    let bank = std::process::Command::new(bank_binary())
        .arg("--sqlite")
        .arg(&bank_db)
        .args(["--nats", &url, "--nats-stream", &stream])
        .args(["--accounts", "20", "--transfers", "300"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the bank");
    let stdout = String::from_utf8_lossy(&bank.stdout);
    assert!(
        bank.status.success() && stdout.contains("verdict: ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&bank.stderr)
    );

    // What the bank stored: per account, money received and refunded, and how often.
    let store = SqliteEventStore::open(&bank_db).await.expect("open");
    let mut expected = std::collections::BTreeMap::<String, (i64, i64, i64, i64)>::new();
    let mut after = Position::START;
    let mut sent = 0;
    loop {
        let page = store.read_all(after, 1_000).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            let value: serde_json::Value = serde_json::from_slice(&e.payload).expect("json");
            if value.get("TransferSent").is_some() {
                sent += 1;
            }
            let account = e
                .stream_id
                .as_str()
                .trim_start_matches("account-")
                .to_owned();
            let row = expected.entry(account).or_default();
            if let Some(amount) = value["TransferReceived"]["amount"].as_i64() {
                row.0 += amount;
                row.1 += 1;
            }
            if let Some(amount) = value["TransferRefunded"]["amount"].as_i64() {
                row.2 += amount;
                row.3 += 1;
            }
        }
    }
    expected.retain(|_, r| r.1 + r.3 > 0);
    let messages: i64 = expected.values().map(|r| r.1 + r.3).sum();
    assert!(sent > 0);
    assert_eq!(
        messages, sent,
        "every transfer sent was completed or refunded"
    );
    store.close().await.expect("close");

    // The notifier takes them all in; its totals are the bank's.
    let mut got = Vec::new();
    for _ in 0..600 {
        if notifier_db.exists() {
            let notifier = SqliteEventStore::open(&notifier_db).await.expect("open");
            got = notifier
                .read_models()
                .fetch::<(String, i64, i64, i64, i64)>(
                    "SELECT account, received, received_count, refunded, refunded_count \
                     FROM notifier_totals ORDER BY account",
                    vec![],
                )
                .await
                .unwrap_or_default();
            notifier.close().await.expect("close");
            if got.iter().map(|r| r.2 + r.4).sum::<i64>() >= messages {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got: std::collections::BTreeMap<String, (i64, i64, i64, i64)> = got
        .into_iter()
        .map(|(a, r, rc, f, fc)| (a, (r, rc, f, fc)))
        .collect();
    assert_eq!(
        got, expected,
        "the notifier's totals are the bank's, each transfer once"
    );
    if let Ok(nats) = flext::nats::JetStream::connect(&url).await {
        let _ = nats.context().delete_stream(&stream).await;
        let _ = nats
            .context()
            .delete_stream(format!("{stream}_NOTIFIER_DEAD"))
            .await;
    }
}

/// The schema gate: a golden stored payload of every bank event type (in
/// `tests/golden/bank-events/`) must still decode to `AccountEvent`. Changing an event's
/// shape without a new schema version and an upcaster fails here, before a store that
/// holds the old payloads meets the new code. New types or versions are recorded with
/// `FLEXT_SCHEMA_GATE=record cargo test --test bank schema_gate`.
#[test]
fn the_bank_events_pass_the_schema_gate() {
    use app::AccountEvent;
    let id = uuid::Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001);
    let samples = [
        AccountEvent::Opened {
            owner: "ann".into(),
            overdraft_limit: 50,
        },
        AccountEvent::Deposited { amount: 100 },
        AccountEvent::Withdrawn { amount: 30 },
        AccountEvent::TransferSent {
            transfer: id,
            to: id,
            amount: 10,
        },
        AccountEvent::TransferReceived {
            transfer: id,
            from: id,
            amount: 10,
        },
        AccountEvent::TransferDeclined {
            transfer: id,
            from: id,
            amount: 10,
            reason: "closed".into(),
        },
        AccountEvent::TransferRefunded {
            transfer: id,
            amount: 10,
            reason: "closed".into(),
        },
        AccountEvent::Closed,
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/bank-events");
    let report = flext_testkit::schema_gate::SchemaGate::new(dir)
        .check(&flext::ports::JsonCodec::new(), &samples)
        .unwrap_or_else(|failures| panic!("{failures}"));
    assert_eq!(report.checked, samples.len(), "a golden payload per type");
}
