//! `flext`: inspect and operate a flext store on SQLite or PostgreSQL from a terminal.
//!
//! ```text
//! flext --database events.db streams list --category account
//! FLEXT_DATABASE_URL=postgres://... flext --schema flext_bank projections status balances
//! flext --database events.db --json health
//! ```
//!
//! The same command line runs inside a service's own binary with
//! [`main_with`] and [`LocalConsumers`]: there, an action that needs a consumer's code
//! (rebuild, verify, redrive) when no instance runs the consumer is carried out by the
//! service's consumers started in this process, under the consumer's lease.
//!
//! ```no_run
//! use flext_cli::{Db, LocalConsumers, Running};
//!
//! // In the service's `main`: `myservice flext projections rebuild balances`.
//! fn main() -> std::process::ExitCode {
//!     let local = LocalConsumers::new(|db: Db| async move {
//!         // Start the service's projections on `db` here; return how to stop them.
//!         let _ = db;
//!         Ok(Running::new(|| async {}))
//!     });
//!     flext_cli::main_with(std::env::args_os().skip(1), Some(local))
//! }
//! ```
//!
//! Exit codes: 0 success; 1 `health` degraded or `rebuild --verify` found differences;
//! 2 a usage error; 10 + N an error whose
//! google.rpc code is N (15 `NOT_FOUND`, 19 `FAILED_PRECONDITION`, 24 `UNAVAILABLE`, ...;
//! `health` down exits 24). With `--json` the error is printed as flext's error JSON.

mod commands;
mod local;
mod store;
mod view;

pub use local::{LocalConsumers, Running};
pub use store::Db;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use flext_domain::Error;

/// Inspect and operate a flext store (SQLite or PostgreSQL).
#[derive(Debug, Parser)]
#[command(name = "flext", version, about, long_about = None, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// The store: a PostgreSQL URL, a `sqlite:` URL or the path of a SQLite file. Prefer
    /// the environment variable, so a password is not in the process list.
    #[arg(
        long,
        env = "FLEXT_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    database: Option<String>,
    /// The PostgreSQL schema the store's tables are in.
    #[arg(long, env = "FLEXT_SCHEMA", global = true)]
    schema: Option<String>,
    /// The tenant to act for, in a PostgreSQL schema of tables shared by tenants (connect
    /// as the service's role: row-level security binds no superuser). A tenant with a
    /// schema of its own is `--schema`; one with a SQLite file of its own is its path.
    #[arg(long, env = "FLEXT_TENANT", global = true)]
    tenant: Option<String>,
    /// Print JSON instead of tables and text.
    #[arg(long, global = true)]
    json: bool,
    /// Show the payload fields the application marked personal (masked otherwise).
    #[arg(long, global = true)]
    show_personal: bool,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 health degraded or rebuild --verify \
found differences; 2 usage error; \
10 + N an error with google.rpc code N (15 not found, 19 failed precondition, \
24 unavailable: also health down).";

#[derive(Debug, Subcommand)]
enum Command {
    /// Streams: list, show, tail, info, delete, truncate, archive, retention.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// People whose personal data the events hold (crypto-shredding).
    #[command(subcommand)]
    Subjects(SubjectsCommand),
    /// Events: one by id, or a whole business action.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Projections and the other consumers (reactors, process managers, the scheduler).
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Events the consumers parked.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// Messages from other services an inbox gave up on.
    #[command(subcommand)]
    Inbox(InboxCommand),
    /// The store's schema migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// The store's and consumers' health; the exit code tells the status.
    Health(HealthArgs),
    /// Events, streams, events per type, storage size, jobs.
    Stats,
    /// The admin console in the browser.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Prints a completion script for a shell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum StreamsCommand {
    /// A page of streams in id order.
    List {
        /// Only streams whose id starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only streams of this category (the id's part before the first `-`).
        #[arg(long)]
        category: Option<String>,
        /// The page after this stream id (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Streams per page (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// A stream's events with their payloads and metadata.
    Show {
        /// The stream id.
        id: String,
        /// The first version to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// The most events to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The newest events of a stream, or of every stream with `--all`; `--follow` keeps
    /// printing new ones as they are stored.
    Tail {
        /// The stream id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every stream, in the global order.
        #[arg(long)]
        all: bool,
        /// How many of the newest events to print first.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: usize,
        /// Keep printing events as they are stored, until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// A stream's lifecycle: status, versions, what is archived, its retention policy.
    Info {
        /// The stream id.
        id: String,
    },
    /// Deletes a stream: soft by default (reads refuse, an append revives it, read-all
    /// keeps its events); `--hard` removes its events and refuses appends forever.
    Delete {
        /// The stream id.
        id: String,
        /// Remove the events and refuse every later append (a tombstone).
        #[arg(long)]
        hard: bool,
        /// Only if the stream is at this version.
        #[arg(long)]
        expected: Option<u64>,
    },
    /// Removes a stream's events below a version (loads from below it need a snapshot).
    Truncate {
        /// The stream id.
        id: String,
        /// The first version to keep.
        #[arg(long)]
        before: u64,
    },
    /// Moves a stream's events below a version to the archive (stream reads read
    /// through; read-all no longer returns them).
    Archive {
        /// The stream id.
        id: String,
        /// The first version to keep in the log.
        #[arg(long)]
        before: u64,
    },
    /// Sets or clears a stream's retention policy (applied by the service's retention
    /// task).
    Retention {
        /// The stream id.
        id: String,
        /// Keep at most this many of the newest events.
        #[arg(long)]
        max_count: Option<u64>,
        /// Keep events younger than this many seconds.
        #[arg(long)]
        max_age_secs: Option<u64>,
        /// Archive expired events instead of removing them.
        #[arg(long)]
        archive: bool,
        /// Remove the policy.
        #[arg(long, conflicts_with_all = ["max_count", "max_age_secs", "archive"])]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SubjectsCommand {
    /// Destroys a subject's data key (and its streams' snapshot keys): its personal
    /// fields read as their replacements from now on. Rebuild the projections that
    /// held them afterwards.
    Forget {
        /// The subject, as its events name it.
        subject: String,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// One event by id.
    Get {
        /// The event id.
        id: String,
    },
    /// The business action an event belongs to (or a correlation id names) as a causation
    /// tree: commands, the events they recorded, the commands those caused.
    Correlated {
        /// An event id or a correlation id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Every consumer with owner, position, lag, state and dead letters.
    List(StallArgs),
    /// One consumer in full.
    Status {
        /// The consumer's name.
        name: String,
        #[command(flatten)]
        stall: StallArgs,
    },
    /// Pauses a consumer after its batch in hand (its owner does it; with no owner
    /// running, the command line does it under the consumer's lease).
    Pause(ControlArgs),
    /// Resumes a paused (or failed) consumer.
    Resume(ControlArgs),
    /// Rebuilds a projection from the start, a position or a time, with a progress bar.
    Rebuild {
        #[command(flatten)]
        control: ControlArgs,
        /// `start`, a position, or an RFC 3339 time.
        #[arg(long, default_value = "start")]
        from: String,
        /// Do not wait for the rebuild to catch up (only for its owner to start it).
        #[arg(long)]
        no_wait: bool,
        /// Rebuild into a shadow (a schema or file of its own) up to the live checkpoint
        /// and report the rows that differ from the live read model; the live one is left
        /// as it is. Exits 1 when rows differ.
        #[arg(long, conflicts_with_all = ["from", "no_wait"])]
        verify: bool,
    },
}

#[derive(Debug, Subcommand)]
enum InboxCommand {
    /// The messages an inbox parked (after its deliveries, or refused), oldest first.
    #[command(name = "dead-letters")]
    DeadLetters {
        /// The inbox's name.
        inbox: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLettersCommand {
    /// Parked events, of one consumer or all.
    List {
        /// Only this consumer's.
        #[arg(long)]
        projection: Option<String>,
    },
    /// One parked event with its payload and error.
    Show {
        /// The consumer.
        projection: String,
        /// The event id.
        event_id: String,
    },
    /// Hands parked events to their consumer again (its owner does it).
    Redrive {
        #[command(flatten)]
        control: ControlArgs,
        /// The event id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        event_id: Option<String>,
        /// Every parked event of the consumer, in position order.
        #[arg(long)]
        all: bool,
    },
    /// Fixes a parked event's payload (in `$VISUAL`/`$EDITOR`, or from a file) and has
    /// its consumer's owner redrive it with the fix; the stored event keeps the original.
    Edit {
        #[command(flatten)]
        control: ControlArgs,
        /// The event id.
        event_id: String,
        /// Read the fixed payload (JSON) from this file instead of an editor.
        #[arg(long)]
        payload_file: Option<std::path::PathBuf>,
    },
    /// Removes a parked event without handling it (the event stays in the store).
    Discard {
        /// The consumer.
        projection: String,
        /// The event id.
        event_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateCommand {
    /// Which migrations are applied and which are not.
    Status,
    /// Applies the missing ones.
    Apply,
}

#[derive(Debug, Args)]
struct StallArgs {
    /// A consumer whose position has not moved for this many seconds while events wait
    /// is stalled.
    #[arg(long, default_value_t = 60)]
    stall_after: u64,
}

#[derive(Debug, Args)]
struct HealthArgs {
    #[command(flatten)]
    stall: StallArgs,
}

#[derive(Debug, Args)]
struct ControlArgs {
    /// The consumer's name.
    name: String,
    /// How long to wait for the owner to carry the request out, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

impl StallArgs {
    fn after(&self) -> Duration {
        Duration::from_secs(self.stall_after)
    }
}

/// What a command printed and how the process ends.
pub(crate) struct Done {
    /// 0, or 1 for a degraded health report (errors exit through `Err`).
    pub(crate) code: u8,
}

impl Done {
    pub(crate) const OK: Done = Done { code: 0 };
}

/// The exit code of an error: 10 plus its google.rpc code.
fn exit_code(e: &Error) -> u8 {
    u8::try_from(10 + e.code().as_i32()).unwrap_or(1)
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Serves the admin console until interrupted. Users come from FLEXT_ADMIN_USERS
    /// (`name:role:password`, comma-separated; role `read-only` or `operator`) and bearer
    /// tokens from FLEXT_ADMIN_TOKENS (`role:token`); at least one is needed.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The path to serve the console under (`/admin`), as behind a proxy.
    #[arg(long, default_value = "")]
    base_path: String,
    /// Seconds a consumer may stand still while events wait before it shows as stalled.
    #[arg(long, default_value_t = 60)]
    stall_after: u64,
    /// Mark the session cookie Secure (the console is reached over HTTPS).
    #[arg(long)]
    secure_cookies: bool,
}

/// `flext admin serve`: the console on `args.listen` until Ctrl-C.
async fn serve(db: &store::Db, args: ServeArgs) -> Result<Done, Error> {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let config = flext_admin::AdminConfig::new()
        .base_path(&args.base_path)
        .stall_after(Duration::from_secs(args.stall_after))
        .secure_cookies(args.secure_cookies)
        .with_credentials(&env("FLEXT_ADMIN_USERS"), &env("FLEXT_ADMIN_TOKENS"))?;
    let router = store::on_store!(db, s => flext_admin::router(s.clone(), config)?);
    let app = if args.base_path.trim_matches('/').is_empty() {
        router
    } else {
        axum::Router::new().nest(&format!("/{}", args.base_path.trim_matches('/')), router)
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            Error::unavailable(
                "LISTEN_FAILED",
                format!("cannot listen on {}: {e}", args.listen),
            )
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::unavailable("LISTEN_FAILED", format!("no local address: {e}")))?;
    // The first line says where it listens (`--listen 127.0.0.1:0` picks a free port).
    println!(
        "flext admin console on http://{local}{}/ (a {} store)",
        args.base_path.trim_end_matches('/'),
        db.kind()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::unavailable("SERVE_FAILED", format!("the console stopped: {e}")))?;
    Ok(Done::OK)
}

/// Runs the command line on `args` (the program's name first, as `std::env::args_os`
/// gives them) and returns its exit code. `local`: the service's own consumers, started
/// here when an action needs a consumer nobody runs ([`LocalConsumers`]).
pub fn main_with<I, T>(args: I, local: Option<LocalConsumers>) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    // The service's consumers get both cores; the command line alone needs one thread.
    let mut builder = if local.is_some() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flext: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli, local)) {
        Ok(done) => ExitCode::from(done.code),
        Err(e) => {
            if json {
                let text = serde_json::to_string_pretty(&serde_json::json!({ "error": e }))
                    .unwrap_or_else(|_| e.to_string());
                eprintln!("{text}");
            } else {
                eprintln!(
                    "flext: {} ({}): {}",
                    e.code().as_str(),
                    e.reason(),
                    e.message()
                );
                for cause in e.causes() {
                    eprintln!("  caused by: {cause}");
                }
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: Cli, local: Option<LocalConsumers>) -> Result<Done, Error> {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "flext", &mut std::io::stdout());
        return Ok(Done::OK);
    }
    let Some(url) = cli.database.as_deref() else {
        return Err(Error::invalid_argument(
            "DATABASE_MISSING",
            "no store given: pass --database or set FLEXT_DATABASE_URL",
        ));
    };
    let tenant = cli
        .tenant
        .as_deref()
        .map(flext_domain::TenantId::new)
        .transpose()?;
    let db = store::Db::open(url, cli.schema.as_deref(), tenant).await?;
    let personal = if cli.show_personal || matches!(cli.command, Command::Migrate(_)) {
        flext_admin::ops::Personal::none()
    } else {
        store::on_store!(&db, s => flext_admin::ops::Personal::load(s).await)
    };
    let out = commands::Out {
        json: cli.json,
        personal,
        local: local.map(|l| local::Local::new(l, db.clone())),
    };
    if !matches!(cli.command, Command::Migrate(_)) {
        commands::require_migrated(&db).await?;
    }
    let done = match cli.command {
        Command::Streams(StreamsCommand::List {
            prefix,
            category,
            after,
            limit,
        }) => {
            commands::streams_list(
                &db,
                &out,
                flext_ports::StreamQuery {
                    prefix,
                    category,
                    after,
                    limit,
                },
            )
            .await
        }
        Command::Streams(StreamsCommand::Show { id, from, limit }) => {
            commands::streams_show(&db, &out, &id, from, limit).await
        }
        Command::Streams(StreamsCommand::Tail {
            id,
            all: _,
            lines,
            follow,
        }) => commands::streams_tail(&db, &out, id.as_deref(), lines, follow).await,
        Command::Subjects(SubjectsCommand::Forget { subject }) => {
            commands::subjects_forget(&db, &out, &subject).await
        }
        Command::Streams(StreamsCommand::Info { id }) => {
            commands::streams_info(&db, &out, &id).await
        }
        Command::Streams(StreamsCommand::Delete { id, hard, expected }) => {
            commands::streams_delete(&db, &out, &id, hard, expected).await
        }
        Command::Streams(StreamsCommand::Truncate { id, before }) => {
            commands::streams_cut(&db, &out, &id, before, false).await
        }
        Command::Streams(StreamsCommand::Archive { id, before }) => {
            commands::streams_cut(&db, &out, &id, before, true).await
        }
        Command::Streams(StreamsCommand::Retention {
            id,
            max_count,
            max_age_secs,
            archive,
            clear,
        }) => {
            let policy = (!clear).then_some(flext_ports::RetentionPolicy {
                max_count,
                max_age: max_age_secs.map(std::time::Duration::from_secs),
                archive,
            });
            commands::streams_retention(&db, &out, &id, policy).await
        }
        Command::Events(EventsCommand::Get { id }) => commands::events_get(&db, &out, &id).await,
        Command::Events(EventsCommand::Correlated { id }) => {
            commands::events_correlated(&db, &out, &id).await
        }
        Command::Projections(ProjectionsCommand::List(stall)) => {
            commands::projections_list(&db, &out, stall.after()).await
        }
        Command::Projections(ProjectionsCommand::Status { name, stall }) => {
            commands::projections_status(&db, &out, &name, stall.after()).await
        }
        Command::Projections(ProjectionsCommand::Pause(c)) => {
            commands::control(
                &db,
                &out,
                &c.name,
                flext_ports::ControlAction::Pause,
                c.timeout,
            )
            .await
        }
        Command::Projections(ProjectionsCommand::Resume(c)) => {
            commands::control(
                &db,
                &out,
                &c.name,
                flext_ports::ControlAction::Resume,
                c.timeout,
            )
            .await
        }
        Command::Projections(ProjectionsCommand::Rebuild {
            control,
            verify: true,
            ..
        }) => commands::verify(&db, &out, &control.name, control.timeout).await,
        Command::Projections(ProjectionsCommand::Rebuild {
            control,
            from,
            no_wait,
            verify: false,
        }) => commands::rebuild(&db, &out, &control.name, &from, control.timeout, !no_wait).await,
        Command::Inbox(InboxCommand::DeadLetters { inbox }) => {
            commands::inbox_dead_letters(&db, &out, &inbox).await
        }
        Command::DeadLetters(DeadLettersCommand::List { projection }) => {
            commands::dead_letters_list(&db, &out, projection.as_deref()).await
        }
        Command::DeadLetters(DeadLettersCommand::Show {
            projection,
            event_id,
        }) => commands::dead_letters_show(&db, &out, &projection, &event_id).await,
        Command::DeadLetters(DeadLettersCommand::Redrive {
            control,
            event_id,
            all: _,
        }) => {
            let event_id = event_id
                .as_deref()
                .map(flext_admin::ops::parse_event_id)
                .transpose()?;
            commands::control(
                &db,
                &out,
                &control.name,
                flext_ports::ControlAction::Redrive { event_id },
                control.timeout,
            )
            .await
        }
        Command::DeadLetters(DeadLettersCommand::Edit {
            control,
            event_id,
            payload_file,
        }) => {
            commands::dead_letters_edit(
                &db,
                &out,
                &control.name,
                &event_id,
                payload_file.as_deref(),
                control.timeout,
            )
            .await
        }
        Command::DeadLetters(DeadLettersCommand::Discard {
            projection,
            event_id,
        }) => commands::dead_letters_discard(&db, &out, &projection, &event_id).await,
        Command::Migrate(MigrateCommand::Status) => commands::migrate_status(&db, &out).await,
        Command::Migrate(MigrateCommand::Apply) => commands::migrate_apply(&db, &out).await,
        Command::Health(h) => commands::health(&db, &out, h.stall.after()).await,
        Command::Stats => commands::stats(&db, &out).await,
        Command::Admin(AdminCommand::Serve(args)) => serve(&db, args).await,
        Command::Completions { .. } => Ok(Done::OK),
    };
    // The service's consumers started here stop, and give their leases back, whatever
    // the outcome.
    if let Some(local) = &out.local {
        local.stop().await;
    }
    done
}
