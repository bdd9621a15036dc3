//! The flext bank: a small event-sourced service on SQLite (no set-up) or PostgreSQL.
//!
//! ```text
//! cargo run --example bank                          # SQLite file flext-bank.db
//! cargo run --example bank -- --postgres            # PostgreSQL at DATABASE_URL
//! cargo run --example bank -- --postgres=postgres://user@host/db
//! cargo run --release --example bank -- --accounts 1000 --transfers 20000   # load mode
//! cargo run --example bank -- --postgres --serve     # run the consumers until stopped
//! cargo run --example bank -- flext --database flext-bank.db projections rebuild bank.balances
//! ```
//!
//! `bank flext ...` is the `flext` command line inside the bank's binary: with no bank
//! instance running, a rebuild, verify or redrive is carried out by the bank's consumers
//! started for the command.
//!
//! Accounts are opened, paid into and drawn on (an overdraft rule refuses what is too
//! much); transfers debit one account, and the transfer process (a process manager)
//! sends the second leg to the other, with a deadline: the target records the receipt,
//! or a decline (closed account, or not received in time), and a decline is refunded;
//! a recurring background job writes each account's statement nightly; projections keep balances,
//! histories and (from a plugin) an audit trail in the same database; queries read their
//! own writes; one result goes over the bridge as MessagePack. Running it again resumes
//! from what is stored; Ctrl-C stops it cleanly.

mod app;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use app::{AUDIT, BALANCES, Bank, BankSettings, BankStore, HISTORY};
use flext::Error;
use flext::ports::Instance;
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;

/// The bank keeps its events and read models in a schema of its own.
const PG_SCHEMA: &str = "flext_bank";

/// The database the command line or the environment asks for.
enum Choice {
    Sqlite(PathBuf),
    Postgres(String),
}

struct Args {
    choice: Choice,
    accounts: Option<usize>,
    transfers: usize,
    concurrency: usize,
    instance: Option<String>,
    schema: String,
    serve: bool,
    settle_within: std::time::Duration,
    nats: Option<String>,
    nats_stream: String,
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}");
    eprintln!(
        "usage: bank [--sqlite PATH | --postgres[=URL]] [--instance NAME] [--accounts N --transfers M [--concurrency C]]\n\
         \x20 --sqlite PATH      the SQLite file (default flext-bank.db)\n\
         \x20 --postgres[=URL]   PostgreSQL instead, at URL or DATABASE_URL\n\
         \x20 --schema NAME      the PostgreSQL schema (default flext_bank)\n\
         \x20 --instance NAME    this process's name among several bank processes on one database\n\
         \x20 --accounts N       load mode: N accounts ...\n\
         \x20 --transfers M      ... and M random transfers between them (default 10000)\n\
         \x20 --concurrency C    load mode: C concurrent senders (default 16)\n\
         \x20 --nats URL         publish transfers completed and refunded to NATS JetStream\n\
         \x20                    (stream BANK, subjects bank.transfers.completed|refunded)\n\
         \x20 --nats-stream NAME the stream instead (subjects <name in lower case>.transfers.*)\n\
         \x20 --serve            run the projections, the transfer process and the scheduler\n\
         \x20                    (a share of them, with other bank processes) until stopped\n\
         \x20 --settle-within S  seconds a transfer's target has to receive it (default 30)"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut args = Args {
        choice: Choice::Sqlite(PathBuf::from("flext-bank.db")),
        accounts: None,
        transfers: 10_000,
        concurrency: 16,
        instance: None,
        schema: PG_SCHEMA.to_owned(),
        serve: false,
        settle_within: std::time::Duration::from_secs(30),
        nats: None,
        nats_stream: "BANK".into(),
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> usize {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage(&format!("{flag} needs a number")))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sqlite" => {
                let path = it.next().unwrap_or_else(|| usage("--sqlite needs a path"));
                args.choice = Choice::Sqlite(PathBuf::from(path));
            }
            "--postgres" => {
                let url = std::env::var("DATABASE_URL")
                    .unwrap_or_else(|_| usage("--postgres needs DATABASE_URL or --postgres=URL"));
                args.choice = Choice::Postgres(url);
            }
            s if s.starts_with("--postgres=") => {
                args.choice = Choice::Postgres(s["--postgres=".len()..].to_owned());
            }
            "--accounts" => args.accounts = Some(number(it.next(), "--accounts")),
            "--transfers" => args.transfers = number(it.next(), "--transfers"),
            "--concurrency" => args.concurrency = number(it.next(), "--concurrency"),
            "--schema" => args.schema = it.next().unwrap_or_else(|| usage("--schema needs a name")),
            "--instance" => {
                args.instance = Some(
                    it.next()
                        .unwrap_or_else(|| usage("--instance needs a name")),
                );
            }
            "--serve" => args.serve = true,
            "--nats" => args.nats = Some(it.next().unwrap_or_else(|| usage("--nats needs a URL"))),
            "--nats-stream" => {
                args.nats_stream = it
                    .next()
                    .unwrap_or_else(|| usage("--nats-stream needs a name"))
            }
            "--settle-within" => {
                args.settle_within = it
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
                    .unwrap_or_else(|| usage("--settle-within needs seconds"));
            }
            "-h" | "--help" => usage("the flext bank"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if args.accounts.is_some_and(|n| n < 2) {
        usage("--accounts needs at least 2");
    }
    args
}

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("flext") {
        return flext_cli::main_with(std::env::args_os().skip(1), Some(local_consumers()));
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(bank_main()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The bank's consumers, for the command line to run when no bank instance does.
fn local_consumers() -> flext_cli::LocalConsumers {
    async fn start<S: BankStore>(store: S) -> Result<flext_cli::Running, Error> {
        let bank = Bank::start_with(
            store,
            Instance::named("bank-flext-cli"),
            BankSettings::default(),
        )
        .await?;
        Ok(flext_cli::Running::new(move || async move {
            if let Err(e) = bank.shutdown().await {
                eprintln!("the bank's consumers stopped with an error: {e:#}");
            }
        }))
    }
    flext_cli::LocalConsumers::new(|db| async move {
        match db {
            flext_cli::Db::Sqlite(store) => start(store).await,
            flext_cli::Db::Pg(store) => start(store).await,
        }
    })
}

async fn bank_main() -> std::process::ExitCode {
    let args = parse();
    let result = match &args.choice {
        Choice::Sqlite(path) => {
            println!("flext bank on SQLite, file {}", path.display());
            match SqliteEventStore::open(path).await {
                Ok(store) => run(store, &args).await,
                Err(e) => Err(e),
            }
        }
        Choice::Postgres(url) => {
            println!("flext bank on PostgreSQL, schema {}", args.schema);
            match PgEventStore::builder(url.as_str())
                .schema(args.schema.as_str())
                .connect()
                .await
            {
                Ok(store) => run(store, &args).await,
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = result {
        // `{:#}`: the error with its causes (a lost connection, the server's own words).
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

async fn run<S: BankStore>(store: S, args: &Args) -> Result<(), Error> {
    let started = Instant::now();
    let instance = match &args.instance {
        Some(name) => Instance::named(name.as_str()),
        None => Instance::current(),
    };
    println!("instance {}", instance.name);
    let integration = match &args.nats {
        Some(url) => {
            let nats = flext::nats::JetStream::connect(url).await?;
            let (stream, prefix) = (&args.nats_stream, args.nats_stream.to_lowercase());
            nats.ensure_stream(
                stream,
                &[&format!("{prefix}.transfers.>")],
                std::time::Duration::from_secs(120),
            )
            .await?;
            println!(
                "integration messages to NATS at {url}, JetStream stream {stream} ({prefix}.transfers.completed, {prefix}.transfers.refunded)"
            );
            Some(app::Integration {
                publisher: nats.publisher(stream),
                prefix,
            })
        }
        None => None,
    };
    let settings = BankSettings {
        settle_within: args.settle_within,
        integration,
        ..BankSettings::default()
    };
    let bank = Bank::start_with(store, instance, settings).await?;
    let stored = bank.head().await?;
    println!(
        "store head at position {}; projections {BALANCES}, {HISTORY}, {AUDIT} (from the audit plugin), the transfer process and the nightly statement job ({}, UTC) started\n",
        stored.get(),
        app::STATEMENTS_CRON
    );

    // Ctrl-C: stop sending, let the process and projections finish what they hold.
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(tokio::sync::Notify::new());
    let (flag, notify) = (stop.clone(), interrupted.clone());
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nCtrl-C: finishing what is in hand, then stopping (again to quit now)");
            flag.store(true, Ordering::SeqCst);
            notify.notify_one();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            // Nothing is lost: appends are atomic and every checkpoint commits with its
            // work; the next run goes on from there.
            eprintln!("second Ctrl-C: quitting at once");
            std::process::exit(130);
        }
    });

    let work = async {
        if args.serve {
            println!("serving until Ctrl-C");
            interrupted.notified().await;
            return Ok(());
        }
        match args.accounts {
            None => {
                // Interrupted, the step in hand is dropped: a command not yet appended
                // leaves nothing behind, and the process and projections stop below.
                let w = tokio::select! {
                    w = app::walkthrough(&bank, |line| println!("{line}")) => w?,
                    _ = interrupted.notified() => {
                        println!("(interrupted by Ctrl-C)");
                        return Ok(());
                    }
                };
                println!(
                    "\nsummary: {} events written in {:.2} s",
                    w.events_written,
                    w.elapsed.as_secs_f64()
                );
                Ok::<(), Error>(())
            }
            Some(accounts) => {
                println!(
                    "load: {accounts} accounts, {} transfers from {} concurrent senders",
                    args.transfers, args.concurrency
                );
                let r = app::load(
                    &bank,
                    accounts,
                    args.transfers,
                    args.concurrency,
                    stop.clone(),
                )
                .await?;
                let secs = r.send_elapsed.as_secs_f64();
                println!(
                    "transfers: {} sent, {} refused by the overdraft rule, in {secs:.2} s: {:.0} transfer commands/s",
                    r.transfers_sent,
                    r.transfers_refused,
                    (r.transfers_sent + r.transfers_refused) as f64 / secs
                );
                if r.transfers_conflicted > 0 {
                    println!(
                        "{} transfers given up: their account was written by another bank process through every retry",
                        r.transfers_conflicted
                    );
                }
                println!(
                    "settling (second legs, refunds) and projections caught up {:.2} s after the last send",
                    r.settle_elapsed.as_secs_f64()
                );
                let total = bank.read.total_balance().await?;
                println!(
                    "money: {} deposited this run, {} held by all accounts in the balances projection",
                    r.total_deposited, total
                );
                if r.interrupted {
                    println!("(interrupted by Ctrl-C)");
                }
                let v = bank.verdict().await?;
                if v.holds() {
                    println!(
                        "verdict: ok: the balances hold {} = the money of the stored events; {} history rows = {} events; 0 dead letters",
                        v.balances_held, v.history_rows, v.history_expected
                    );
                    Ok(())
                } else {
                    println!(
                        "verdict: FAILED: balances hold {} but the events say {} (difference {}); {} history rows for {} events (difference {}); {} dead letters",
                        v.balances_held,
                        v.balances_expected,
                        v.balances_held - v.balances_expected,
                        v.history_rows,
                        v.history_expected,
                        v.history_rows - v.history_expected,
                        v.dead_letters
                    );
                    Err(Error::data_loss(
                        "VERDICT_FAILED",
                        "the read models do not match the stored events",
                    ))
                }
            }
        }
    };
    let outcome = work.await;

    let (ok, refused) = bank.tally.totals();
    let head = bank.head().await?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "\ncommands run: {} ({ok} ok, {refused} refused) in {elapsed:.2} s: {:.0} commands/s",
        ok + refused,
        (ok + refused) as f64 / elapsed
    );
    println!(
        "events in the store: {} new this run, head at position {}",
        bank.store.count_after(stored).await?,
        head.get()
    );
    for name in [BALANCES, HISTORY, AUDIT] {
        let s = bank.projections.status(name).await?;
        println!(
            "projection {name}: at {}, lag {} events ({} ms), {} dead letters",
            s.position.get(),
            s.lag_events,
            s.lag.as_millis(),
            s.dead_letters
        );
    }
    println!(
        "audit trail: {} events recorded",
        bank.read.audit_count().await?
    );
    let store = bank.store.clone();
    bank.shutdown().await?;
    // SQLite: the write-ahead log goes into the file, so a copy of the .db alone is whole.
    store.close_store().await?;
    println!("stopped cleanly; run it again to resume from the stored state");
    outcome
}
