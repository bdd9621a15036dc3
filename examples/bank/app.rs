//! The bank: accounts, the transfer process, read models and the scenarios, written once
//! against flext's ports and run on SQLite or PostgreSQL. `main.rs` is the command line;
//! `tests/bank.rs` runs the same scenarios against both databases.

#![allow(dead_code)] // main.rs and the test each use a part
#![allow(unreachable_pub)] // `pub` marks what main.rs and the test use

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flext::application::{
    BoxFuture, CommandBus, Deliveries, Dep, Effects, Executed, Job, JobContext, JobWorkers,
    MetricsBehavior, Ownership, OwnershipOptions, Pipeline, PluginRegistry, ProcessManager,
    ProjectionOptions, ProjectionRunner, Projections, QueryBus, ReadYourWrites,
    ReadYourWritesBehavior, Registry, Repository, RetryBehavior, Scheduler, Services, Step,
    SubscriptionOptions, TimeoutBehavior, TracingBehavior, ValidationBehavior,
};
use flext::ports::{
    CheckpointStore, Command, Context, Decoded, EventStore, Instance, JobStore, Labels, Metrics,
    Plugin, ProcessStore, Projection, ProjectionStore, Query, SnapshotStore, WatchAppends,
};
use flext::postgres::{PgEventStore, PgWriteTransaction};
use flext::sqlite::{SqliteEventStore, SqliteWriteTransaction};
use flext::{
    Aggregate, DomainEvent, Error, ErrorCode, Id, Position, RecordedEvent, Validation,
    WRONG_EXPECTED_VERSION, command_handler, query_handler,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// The domain: an account decides; nothing here knows about storage.

/// One bank account.
#[derive(Debug, Default)]
pub struct Account {
    open: bool,
    closed: bool,
    owner: String,
    balance: i64,
    overdraft_limit: i64,
    /// Transfers this account has received, declined or been refunded: a follow-up
    /// command that arrives twice (a retried process step), or a decline after the
    /// receipt, decides nothing.
    settled: BTreeSet<Uuid>,
}

/// What happens to an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum AccountEvent {
    /// Opened for `owner`, who may go `overdraft_limit` below zero.
    #[event(name = "account.opened")]
    Opened { owner: String, overdraft_limit: i64 },
    /// Money paid in.
    #[event(name = "account.deposited")]
    Deposited { amount: i64 },
    /// Money taken out.
    #[event(name = "account.withdrawn")]
    Withdrawn { amount: i64 },
    /// The first leg of a transfer: debited here, on its way to `to`.
    #[event(name = "account.transfer_sent")]
    TransferSent {
        transfer: Uuid,
        to: Uuid,
        amount: i64,
    },
    /// The second leg: credited here, from `from`.
    #[event(name = "account.transfer_received")]
    TransferReceived {
        transfer: Uuid,
        from: Uuid,
        amount: i64,
    },
    /// The second leg declined here (the account is closed, or the transfer was not
    /// received in time): nothing credited; the transfer process refunds `from`. An
    /// account records a transfer's receipt or its decline, never both.
    #[event(name = "account.transfer_declined")]
    TransferDeclined {
        transfer: Uuid,
        from: Uuid,
        amount: i64,
        reason: String,
    },
    /// The compensation: the second leg failed, the money came back.
    #[event(name = "account.transfer_refunded")]
    TransferRefunded {
        transfer: Uuid,
        amount: i64,
        reason: String,
    },
    /// Closed; it takes no more money.
    #[event(name = "account.closed")]
    Closed,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Event = AccountEvent;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened {
                owner,
                overdraft_limit,
            } => {
                self.open = true;
                self.owner = owner.clone();
                self.overdraft_limit = *overdraft_limit;
            }
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } | AccountEvent::TransferSent { amount, .. } => {
                self.balance -= amount
            }
            AccountEvent::TransferReceived {
                transfer, amount, ..
            }
            | AccountEvent::TransferRefunded {
                transfer, amount, ..
            } => {
                self.balance += amount;
                self.settled.insert(*transfer);
            }
            AccountEvent::TransferDeclined { transfer, .. } => {
                self.settled.insert(*transfer);
            }
            AccountEvent::Closed => self.closed = true,
        }
    }
}

fn positive(amount: i64) -> Result<(), Error> {
    let mut v = Validation::new();
    v.ensure(
        amount > 0,
        "amount",
        "NOT_POSITIVE",
        "must be greater than 0",
    );
    v.finish()
}

impl Account {
    fn usable(&self) -> Result<(), Error> {
        if !self.open {
            return Err(Error::not_found(
                "ACCOUNT_NOT_FOUND",
                "no account is open under this id",
            ));
        }
        if self.closed {
            return Err(Error::failed_precondition(
                "ACCOUNT_CLOSED",
                format!("{}'s account is closed", self.owner),
            ));
        }
        Ok(())
    }

    /// Opens the account.
    pub fn open(&self, owner: &str, overdraft_limit: i64) -> Result<Vec<AccountEvent>, Error> {
        if self.open {
            return Err(Error::already_exists(
                "ACCOUNT_EXISTS",
                format!("{}'s account is already open", self.owner),
            ));
        }
        let mut v = Validation::new();
        v.ensure(
            !owner.trim().is_empty(),
            "owner",
            "REQUIRED",
            "must not be empty",
        );
        v.ensure(
            overdraft_limit >= 0,
            "overdraft_limit",
            "NEGATIVE",
            "must not be negative",
        );
        v.finish_with(|| {
            vec![AccountEvent::Opened {
                owner: owner.to_owned(),
                overdraft_limit,
            }]
        })
    }

    pub fn deposit(&self, amount: i64) -> Result<Vec<AccountEvent>, Error> {
        positive(amount)?;
        self.usable()?;
        Ok(vec![AccountEvent::Deposited { amount }])
    }

    /// The overdraft rule: the balance may not go below minus the overdraft limit.
    fn can_pay(&self, amount: i64) -> Result<(), Error> {
        if self.balance - amount < -self.overdraft_limit {
            return Err(Error::failed_precondition(
                "INSUFFICIENT_FUNDS",
                format!(
                    "{} has {} with an overdraft of {}: {} is too much",
                    self.owner, self.balance, self.overdraft_limit, amount
                ),
            )
            .with_detail("balance", self.balance)
            .with_detail("overdraft_limit", self.overdraft_limit));
        }
        Ok(())
    }

    pub fn withdraw(&self, amount: i64) -> Result<Vec<AccountEvent>, Error> {
        positive(amount)?;
        self.usable()?;
        self.can_pay(amount)?;
        Ok(vec![AccountEvent::Withdrawn { amount }])
    }

    pub fn send(&self, transfer: Uuid, to: Uuid, amount: i64) -> Result<Vec<AccountEvent>, Error> {
        positive(amount)?;
        self.usable()?;
        self.can_pay(amount)?;
        Ok(vec![AccountEvent::TransferSent {
            transfer,
            to,
            amount,
        }])
    }

    pub fn receive(
        &self,
        transfer: Uuid,
        from: Uuid,
        amount: i64,
    ) -> Result<Vec<AccountEvent>, Error> {
        if self.settled.contains(&transfer) {
            return Ok(Vec::new());
        }
        // A closed (or never opened) account declines: a fact the transfer process
        // refunds on, not an error it would have to tell from a passing failure.
        if let Err(e) = self.usable() {
            return self.decline(transfer, from, amount, e.message());
        }
        Ok(vec![AccountEvent::TransferReceived {
            transfer,
            from,
            amount,
        }])
    }

    /// Declines a transfer not yet received (its deadline passed); once received, or
    /// declined already, nothing.
    pub fn decline(
        &self,
        transfer: Uuid,
        from: Uuid,
        amount: i64,
        reason: &str,
    ) -> Result<Vec<AccountEvent>, Error> {
        if self.settled.contains(&transfer) {
            return Ok(Vec::new());
        }
        Ok(vec![AccountEvent::TransferDeclined {
            transfer,
            from,
            amount,
            reason: reason.to_owned(),
        }])
    }

    pub fn refund(
        &self,
        transfer: Uuid,
        amount: i64,
        reason: &str,
    ) -> Result<Vec<AccountEvent>, Error> {
        if self.settled.contains(&transfer) {
            return Ok(Vec::new());
        }
        // A refund goes back even to a closed account: the money was taken from it.
        Ok(vec![AccountEvent::TransferRefunded {
            transfer,
            amount,
            reason: reason.to_owned(),
        }])
    }

    pub fn close(&self) -> Result<Vec<AccountEvent>, Error> {
        self.usable()?;
        if self.balance != 0 {
            return Err(Error::failed_precondition(
                "BALANCE_NOT_ZERO",
                format!("{} still holds {}", self.owner, self.balance),
            ));
        }
        Ok(vec![AccountEvent::Closed])
    }
}

/// The account id of a customer name: the same in every run, so a second run finds the
/// accounts of the first.
pub fn account_id(name: &str) -> Id<Account> {
    // FNV-1a, 128 bits: stable across runs and platforms.
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in name.bytes() {
        hash ^= u128::from(b);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
    }
    // Shaped as a UUID v8 (custom), so it reads as one.
    let uuid = uuid::Builder::from_custom_bytes(hash.to_be_bytes()).into_uuid();
    Id::from_uuid(uuid)
}

// ---------------------------------------------------------------------------------------
// Commands and queries.

macro_rules! command {
    ($name:ident, $wire:literal) => {
        impl Command for $name {
            type Output = Position;
            const NAME: &'static str = $wire;
        }
    };
}

/// Open an account.
#[derive(Debug, Clone)]
pub struct OpenAccount {
    pub account: Id<Account>,
    pub owner: String,
    pub overdraft_limit: i64,
}
command!(OpenAccount, "bank.open_account");

/// Pay money in.
#[derive(Debug, Clone)]
pub struct Deposit {
    pub account: Id<Account>,
    pub amount: i64,
}
command!(Deposit, "bank.deposit");

/// Take money out, within the overdraft.
#[derive(Debug, Clone)]
pub struct Withdraw {
    pub account: Id<Account>,
    pub amount: i64,
}
command!(Withdraw, "bank.withdraw");

/// Move money: debits `from` now; the transfer process credits `to`, or refunds.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub transfer: Uuid,
    pub from: Id<Account>,
    pub to: Id<Account>,
    pub amount: i64,
}
command!(Transfer, "bank.transfer");

/// The second leg of a transfer (sent by the transfer process).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveTransfer {
    pub transfer: Uuid,
    pub from: Id<Account>,
    pub to: Id<Account>,
    pub amount: i64,
}
command!(ReceiveTransfer, "bank.receive_transfer");

/// The compensation of a transfer whose second leg failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundTransfer {
    pub transfer: Uuid,
    pub account: Id<Account>,
    pub amount: i64,
    pub reason: String,
}
command!(RefundTransfer, "bank.refund_transfer");

/// The transfer's deadline: the second leg was not received in time, so the target
/// declines it (unless it received it meanwhile).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeclineTransfer {
    pub transfer: Uuid,
    pub from: Id<Account>,
    pub to: Id<Account>,
    pub amount: i64,
    pub reason: String,
}
command!(DeclineTransfer, "bank.decline_transfer");

/// Close an account with a zero balance.
#[derive(Debug, Clone)]
pub struct CloseAccount {
    pub account: Id<Account>,
}
command!(CloseAccount, "bank.close_account");

/// An account as the balances read model has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub account: String,
    pub owner: String,
    pub balance: i64,
    pub overdraft_limit: i64,
    pub closed: bool,
}

/// One line of an account's history; `counterparty` is the other account's owner (or
/// the refund's reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    pub position: i64,
    pub kind: String,
    pub amount: i64,
    pub counterparty: Option<String>,
    pub correlation: Option<String>,
}

/// An account's balance (read your writes: give the context a `ReadYourWrites`).
#[derive(Debug, Clone)]
pub struct GetBalance {
    pub account: Id<Account>,
}
impl Query for GetBalance {
    type Output = Option<Balance>;
    const NAME: &'static str = "bank.get_balance";
}

/// An account's history, oldest first.
#[derive(Debug, Clone)]
pub struct GetHistory {
    pub account: Id<Account>,
}
impl Query for GetHistory {
    type Output = Vec<HistoryLine>;
    const NAME: &'static str = "bank.get_history";
}

// ---------------------------------------------------------------------------------------
// Handlers, registered by the attribute macros; their dependencies come from `Services`.

/// The account repository, whatever the store.
pub struct Ledger(Arc<dyn AccountRepository>);

/// What the handlers need of a repository (the store type erased).
pub trait AccountRepository: Send + Sync {
    /// Runs `decide` on the account and appends what it decided.
    fn execute<'a>(
        &'a self,
        id: Id<Account>,
        ctx: &'a Context,
        decide: &'a (dyn Fn(&Account) -> Result<Vec<AccountEvent>, Error> + Send + Sync),
    ) -> BoxFuture<'a, Result<Executed, Error>>;
}

impl<S: EventStore + SnapshotStore + 'static> AccountRepository for Repository<Account, S> {
    fn execute<'a>(
        &'a self,
        id: Id<Account>,
        ctx: &'a Context,
        decide: &'a (dyn Fn(&Account) -> Result<Vec<AccountEvent>, Error> + Send + Sync),
    ) -> BoxFuture<'a, Result<Executed, Error>> {
        Box::pin(async move { Repository::execute(self, id, ctx, decide).await })
    }
}

impl Ledger {
    async fn run(
        &self,
        id: Id<Account>,
        ctx: &Context,
        decide: impl Fn(&Account) -> Result<Vec<AccountEvent>, Error> + Send + Sync,
    ) -> Result<Position, Error> {
        let executed = self.0.execute(id, ctx, &decide).await?;
        Ok(executed.last_position().unwrap_or(Position::START))
    }
}

#[command_handler]
async fn open_account(
    c: OpenAccount,
    ctx: &Context,
    ledger: Dep<Ledger>,
) -> Result<Position, Error> {
    ledger
        .run(c.account, ctx, |a| a.open(&c.owner, c.overdraft_limit))
        .await
}

#[command_handler]
async fn deposit(c: Deposit, ctx: &Context, ledger: Dep<Ledger>) -> Result<Position, Error> {
    ledger.run(c.account, ctx, |a| a.deposit(c.amount)).await
}

#[command_handler]
async fn withdraw(c: Withdraw, ctx: &Context, ledger: Dep<Ledger>) -> Result<Position, Error> {
    ledger.run(c.account, ctx, |a| a.withdraw(c.amount)).await
}

#[command_handler]
async fn transfer(c: Transfer, ctx: &Context, ledger: Dep<Ledger>) -> Result<Position, Error> {
    if c.from == c.to {
        return Err(Error::invalid_argument(
            "SAME_ACCOUNT",
            "a transfer needs two accounts",
        ));
    }
    ledger
        .run(c.from, ctx, |a| {
            a.send(c.transfer, c.to.as_uuid(), c.amount)
        })
        .await
}

#[command_handler]
async fn receive_transfer(
    c: ReceiveTransfer,
    ctx: &Context,
    ledger: Dep<Ledger>,
) -> Result<Position, Error> {
    ledger
        .run(c.to, ctx, |a| {
            a.receive(c.transfer, c.from.as_uuid(), c.amount)
        })
        .await
}

#[command_handler]
async fn refund_transfer(
    c: RefundTransfer,
    ctx: &Context,
    ledger: Dep<Ledger>,
) -> Result<Position, Error> {
    ledger
        .run(c.account, ctx, |a| {
            a.refund(c.transfer, c.amount, &c.reason)
        })
        .await
}

#[command_handler]
async fn decline_transfer(
    c: DeclineTransfer,
    ctx: &Context,
    ledger: Dep<Ledger>,
) -> Result<Position, Error> {
    ledger
        .run(c.to, ctx, |a| {
            a.decline(c.transfer, c.from.as_uuid(), c.amount, &c.reason)
        })
        .await
}

#[command_handler]
async fn close_account(
    c: CloseAccount,
    ctx: &Context,
    ledger: Dep<Ledger>,
) -> Result<Position, Error> {
    ledger.run(c.account, ctx, |a| a.close()).await
}

/// The read side, whatever the database.
pub struct ReadSide(Arc<dyn ReadModel>);

#[query_handler]
async fn get_balance(
    q: GetBalance,
    _ctx: &Context,
    read: Dep<ReadSide>,
) -> Result<Option<Balance>, Error> {
    read.0.balance(q.account.to_string()).await
}

#[query_handler]
async fn get_history(
    q: GetHistory,
    _ctx: &Context,
    read: Dep<ReadSide>,
) -> Result<Vec<HistoryLine>, Error> {
    read.0.history(q.account.to_string()).await
}

// ---------------------------------------------------------------------------------------
// The transfer process: a process manager, one instance per transfer. The first leg
// (`TransferSent`) starts it: it sends the second leg to the target and sets a deadline.
// The target records either the receipt or a decline (closed account, or the deadline's
// `DeclineTransfer` came first), never both; a receipt ends the process, a decline makes
// it refund the source, and the refund ends it. Each step commits with the process's
// checkpoint; its commands go out through the scheduler under ids derived from the event.

/// A transfer in flight, as the transfer process keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferInFlight {
    pub from: Id<Account>,
    pub to: Id<Account>,
    pub amount: i64,
    /// Set once the target declined: the refund is on its way.
    pub refunding: bool,
}

/// The transfer process.
#[derive(Debug, Clone)]
pub struct TransferProcess {
    /// How long the target has to receive the second leg before it is declined.
    pub settle_within: Duration,
}

/// The transfer process's name (its checkpoint, ownership and instances).
pub const TRANSFER_PROCESS: &str = "bank.transfer_process";

/// The events the transfer process reads.
const TRANSFER_EVENTS: [&str; 4] = [
    "account.transfer_sent",
    "account.transfer_received",
    "account.transfer_declined",
    "account.transfer_refunded",
];

impl ProcessManager for TransferProcess {
    type Event = AccountEvent;
    type State = TransferInFlight;
    const NAME: &'static str = TRANSFER_PROCESS;

    fn event_types(&self) -> &'static [&'static str] {
        &TRANSFER_EVENTS
    }

    /// One instance per transfer: the transfer id in every event of its legs.
    fn associate(&self, event: &Decoded<'_, AccountEvent>) -> Option<String> {
        match &event.event {
            AccountEvent::TransferSent { transfer, .. }
            | AccountEvent::TransferReceived { transfer, .. }
            | AccountEvent::TransferDeclined { transfer, .. }
            | AccountEvent::TransferRefunded { transfer, .. } => Some(transfer.to_string()),
            _ => None,
        }
    }

    fn handle(
        &self,
        state: Option<TransferInFlight>,
        event: Decoded<'_, AccountEvent>,
        effects: &mut Effects,
    ) -> Result<Step<TransferInFlight>, Error> {
        let stream_key = event.stream_key();
        Ok(match (state, event.event) {
            (
                None,
                AccountEvent::TransferSent {
                    transfer,
                    to,
                    amount,
                },
            ) => {
                let from = Id::parse(stream_key)?;
                let to = Id::from_uuid(to);
                effects.send(
                    "receive",
                    &ReceiveTransfer {
                        transfer,
                        from,
                        to,
                        amount,
                    },
                )?;
                effects.deadline_after(
                    "settle",
                    self.settle_within,
                    &DeclineTransfer {
                        transfer,
                        from,
                        to,
                        amount,
                        reason: format!(
                            "not received within {} s",
                            self.settle_within.as_secs_f64()
                        ),
                    },
                )?;
                Step::Continue(TransferInFlight {
                    from,
                    to,
                    amount,
                    refunding: false,
                })
            }
            (Some(_), AccountEvent::TransferReceived { .. }) => {
                effects.cancel_deadline("settle");
                Step::End
            }
            (
                Some(t),
                AccountEvent::TransferDeclined {
                    transfer, reason, ..
                },
            ) => {
                effects.cancel_deadline("settle");
                effects.send(
                    "refund",
                    &RefundTransfer {
                        transfer,
                        account: t.from,
                        amount: t.amount,
                        reason,
                    },
                )?;
                Step::Continue(TransferInFlight {
                    refunding: true,
                    ..t
                })
            }
            (Some(_), AccountEvent::TransferRefunded { .. }) => Step::End,
            // A leg of a transfer this process does not hold (already ended): nothing.
            _ => Step::Ignore,
        })
    }

    fn commands(&self, deliveries: Deliveries) -> Deliveries {
        deliveries
            .command::<ReceiveTransfer>()
            .command::<DeclineTransfer>()
            .command::<RefundTransfer>()
    }
}

// ---------------------------------------------------------------------------------------
// The nightly statement: a recurring background job (cron, 02:00 UTC) that writes every
// account's balance of the day into `bank_statements`, run by one of the bank processes.

/// Writes the statement of the day the job was due.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NightlyStatements {}

impl Job for NightlyStatements {
    const KIND: &'static str = "bank.nightly_statements";
}

/// When the nightly statements are due: 02:00 UTC every day.
pub const STATEMENTS_CRON: &str = "0 0 2 * * *";

/// The statement of `day` from the balances read model, written in one transaction; run
/// again (a retry, a second delivery) it writes the same rows.
async fn write_statements<S: BankStore>(store: &S, day: String) -> Result<(), Error> {
    let mut tx = store.begin().await?;
    tx.exec(
        "INSERT INTO bank_statements (day, account, balance) \
         SELECT $1, account, balance FROM bank_balances WHERE true \
         ON CONFLICT (day, account) DO UPDATE SET balance = excluded.balance",
        vec![Arg::Text(day)],
    )
    .await?;
    store.commit(tx).await
}

/// The event types of [`AccountEvent`]: events of other types (other services sharing the
/// database) are not the bank's and are passed over.
const ACCOUNT_EVENTS: [&str; 8] = [
    "account.opened",
    "account.deposited",
    "account.withdrawn",
    "account.transfer_sent",
    "account.transfer_received",
    "account.transfer_refunded",
    "account.transfer_declined",
    "account.closed",
];

fn decode(event: &RecordedEvent) -> Result<Option<AccountEvent>, Error> {
    if !ACCOUNT_EVENTS.contains(&event.event_type.as_str()) {
        return Ok(None);
    }
    serde_json::from_slice(&event.payload)
        .map(Some)
        .map_err(|e| {
            Error::data_loss(
                "UNREADABLE_EVENT",
                format!(
                    "event {} ({}) at position {} does not decode: {e}",
                    event.event_id,
                    event.event_type,
                    event.position.get()
                ),
            )
        })
}

/// The account an event belongs to, from its stream id.
fn account_of(event: &RecordedEvent) -> Result<String, Error> {
    event
        .stream_id
        .as_str()
        .strip_prefix("account-")
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::data_loss(
                "NOT_AN_ACCOUNT_STREAM",
                format!("{} is not an account stream", event.stream_id),
            )
        })
}

// ---------------------------------------------------------------------------------------
// Read models: balances, history and (from the audit plugin) an audit trail, kept by
// projections in the store's own database, in the transaction that moves their
// checkpoint. The SQL is the same on SQLite and PostgreSQL; only the connection differs.

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    Text(String),
    Null,
}

/// Runs statements in a projection's transaction.
pub trait ReadModelTx: Send {
    fn exec<'a>(
        &'a mut self,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> BoxFuture<'a, Result<u64, Error>>;
}

/// Answers the queries from the read model tables.
pub trait ReadModel: Send + Sync {
    fn balance(&self, account: String) -> BoxFuture<'_, Result<Option<Balance>, Error>>;
    fn history(&self, account: String) -> BoxFuture<'_, Result<Vec<HistoryLine>, Error>>;
    fn audit_count(&self) -> BoxFuture<'_, Result<i64, Error>>;
    /// The statement of `day` (YYYY-MM-DD): (account, balance) by account.
    fn statements(&self, day: String) -> BoxFuture<'_, Result<Vec<(String, i64)>, Error>>;
    fn total_balance(&self) -> BoxFuture<'_, Result<i64, Error>>;
    fn snapshot(&self) -> BoxFuture<'_, Result<ReadSnapshot, Error>>;
    fn create_schema(&self) -> BoxFuture<'_, Result<(), Error>>;
}

fn db(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| Error::unavailable("READ_MODEL", format!("{what}: {e}"))
}

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS bank_balances (account TEXT PRIMARY KEY, owner TEXT NOT NULL, \
     balance BIGINT NOT NULL, overdraft_limit BIGINT NOT NULL, closed BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bank_history (position BIGINT PRIMARY KEY, account TEXT NOT NULL, \
     kind TEXT NOT NULL, amount BIGINT NOT NULL, counterparty TEXT, correlation TEXT)",
    "CREATE TABLE IF NOT EXISTS bank_audit (position BIGINT PRIMARY KEY, event_type TEXT NOT NULL, \
     stream TEXT NOT NULL, correlation TEXT, recorded_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bank_statements (day TEXT NOT NULL, account TEXT NOT NULL, \
     balance BIGINT NOT NULL, PRIMARY KEY (day, account))",
];

macro_rules! read_model_for {
    ($tx:ty, $pool:ty) => {
        impl ReadModelTx for $tx {
            fn exec<'a>(
                &'a mut self,
                sql: &'static str,
                args: Vec<Arg>,
            ) -> BoxFuture<'a, Result<u64, Error>> {
                Box::pin(async move {
                    let mut q = sqlx::query(sql);
                    for a in args {
                        q = match a {
                            Arg::Int(i) => q.bind(i),
                            Arg::Text(t) => q.bind(t),
                            Arg::Null => q.bind(None::<String>),
                        };
                    }
                    let done = q.execute(self.connection()).await.map_err(db(sql))?;
                    Ok(done.rows_affected())
                })
            }
        }

        impl ReadModel for $pool {
            fn balance(&self, account: String) -> BoxFuture<'_, Result<Option<Balance>, Error>> {
                Box::pin(async move {
                    let row: Option<(String, String, i64, i64, i64)> = sqlx::query_as(
                        "SELECT account, owner, balance, overdraft_limit, closed \
                         FROM bank_balances WHERE account = $1",
                    )
                    .bind(account)
                    .fetch_optional(self)
                    .await
                    .map_err(db("reading a balance"))?;
                    Ok(row.map(
                        |(account, owner, balance, overdraft_limit, closed)| Balance {
                            account,
                            owner,
                            balance,
                            overdraft_limit,
                            closed: closed != 0,
                        },
                    ))
                })
            }

            fn history(&self, account: String) -> BoxFuture<'_, Result<Vec<HistoryLine>, Error>> {
                Box::pin(async move {
                    let rows: Vec<(i64, String, i64, Option<String>, Option<String>)> =
                        sqlx::query_as(
                            "SELECT h.position, h.kind, h.amount, \
                             COALESCE(b.owner, h.counterparty), h.correlation \
                             FROM bank_history h \
                             LEFT JOIN bank_balances b ON b.account = h.counterparty \
                             WHERE h.account = $1 ORDER BY h.position",
                        )
                        .bind(account)
                        .fetch_all(self)
                        .await
                        .map_err(db("reading a history"))?;
                    Ok(rows
                        .into_iter()
                        .map(
                            |(position, kind, amount, counterparty, correlation)| HistoryLine {
                                position,
                                kind,
                                amount,
                                counterparty,
                                correlation,
                            },
                        )
                        .collect())
                })
            }

            fn statements(
                &self,
                day: String,
            ) -> BoxFuture<'_, Result<Vec<(String, i64)>, Error>> {
                Box::pin(async move {
                    sqlx::query_as(
                        "SELECT account, balance FROM bank_statements WHERE day = $1 \
                         ORDER BY account",
                    )
                    .bind(day)
                    .fetch_all(self)
                    .await
                    .map_err(db("reading statements"))
                })
            }

            fn audit_count(&self) -> BoxFuture<'_, Result<i64, Error>> {
                Box::pin(async move {
                    sqlx::query_scalar("SELECT count(*) FROM bank_audit")
                        .fetch_one(self)
                        .await
                        .map_err(db("counting the audit trail"))
                })
            }

            fn total_balance(&self) -> BoxFuture<'_, Result<i64, Error>> {
                Box::pin(async move {
                    let total: Option<i64> = sqlx::query_scalar(
                        "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM bank_balances",
                    )
                    .fetch_one(self)
                    .await
                    .map_err(db("adding up balances"))?;
                    Ok(total.unwrap_or(0))
                })
            }

            fn snapshot(&self) -> BoxFuture<'_, Result<ReadSnapshot, Error>> {
                Box::pin(async move {
                    // One statement, one snapshot: each model with the checkpoint it is at.
                    let (balances_at, balance_sum, history_at, history_rows): (i64, i64, i64, i64) =
                        sqlx::query_as(
                            "SELECT COALESCE((SELECT position FROM flext_checkpoints \
                                              WHERE name = 'bank.balances'), 0), \
                                    (SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM bank_balances), \
                                    COALESCE((SELECT position FROM flext_checkpoints \
                                              WHERE name = 'bank.history'), 0), \
                                    (SELECT CAST(count(*) AS BIGINT) FROM bank_history)",
                        )
                        .fetch_one(self)
                        .await
                        .map_err(db("reading the read models"))?;
                    Ok(ReadSnapshot {
                        balances_at: Position(balances_at.max(0) as u64),
                        balance_sum,
                        history_at: Position(history_at.max(0) as u64),
                        history_rows,
                    })
                })
            }

            fn create_schema(&self) -> BoxFuture<'_, Result<(), Error>> {
                Box::pin(async move {
                    for sql in SCHEMA {
                        sqlx::query(sql)
                            .execute(self)
                            .await
                            .map_err(db("creating the read model"))?;
                    }
                    Ok(())
                })
            }
        }
    };
}

read_model_for!(SqliteWriteTransaction, sqlx::SqlitePool);
read_model_for!(PgWriteTransaction, sqlx::PgPool);

/// The read models as one consistent snapshot, each with the checkpoint it is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSnapshot {
    pub balances_at: Position,
    pub balance_sum: i64,
    pub history_at: Position,
    pub history_rows: i64,
}

/// Whether the read models hold exactly what the stored events say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The money of every account event up to the balances projection's checkpoint.
    pub balances_expected: i64,
    /// The sum of the balances it holds.
    pub balances_held: i64,
    /// The account events up to the history projection's checkpoint.
    pub history_expected: i64,
    /// The rows it holds.
    pub history_rows: i64,
    /// Events parked by any projection.
    pub dead_letters: usize,
}

impl Verdict {
    /// The money adds up, every event has its history row, nothing was parked.
    pub fn holds(&self) -> bool {
        self.balances_expected == self.balances_held
            && self.history_expected == self.history_rows
            && self.dead_letters == 0
    }
}

/// What an account event does to its balance.
fn balance_change(e: &AccountEvent) -> i64 {
    match e {
        AccountEvent::Deposited { amount }
        | AccountEvent::TransferReceived { amount, .. }
        | AccountEvent::TransferRefunded { amount, .. } => *amount,
        AccountEvent::Withdrawn { amount } | AccountEvent::TransferSent { amount, .. } => -amount,
        AccountEvent::Opened { .. }
        | AccountEvent::Closed
        | AccountEvent::TransferDeclined { .. } => 0,
    }
}

/// The balances projection.
#[derive(Default)]
pub struct Balances;

/// The projection name of [`Balances`].
pub const BALANCES: &str = "bank.balances";

impl<T: ReadModelTx + 'static> Projection<T> for Balances {
    /// Its table, also in the shadow a `flext projections rebuild --verify` builds.
    fn migrations(&self) -> &[&str] {
        &SCHEMA[0..1]
    }

    fn name(&self) -> &str {
        BALANCES
    }

    async fn handle(&self, tx: &mut T, event: &RecordedEvent) -> Result<(), Error> {
        let Some(e) = decode(event)? else {
            return Ok(());
        };
        let account = account_of(event)?;
        let add = |amount: i64| {
            (
                "UPDATE bank_balances SET balance = balance + $1 WHERE account = $2",
                vec![Arg::Int(amount), Arg::Text(account.clone())],
            )
        };
        let (sql, args) = match e {
            AccountEvent::Opened {
                owner,
                overdraft_limit,
            } => (
                "INSERT INTO bank_balances (account, owner, balance, overdraft_limit, closed) \
                 VALUES ($1, $2, 0, $3, 0)",
                vec![
                    Arg::Text(account.clone()),
                    Arg::Text(owner),
                    Arg::Int(overdraft_limit),
                ],
            ),
            AccountEvent::Deposited { amount }
            | AccountEvent::TransferReceived { amount, .. }
            | AccountEvent::TransferRefunded { amount, .. } => add(amount),
            AccountEvent::Withdrawn { amount } | AccountEvent::TransferSent { amount, .. } => {
                add(-amount)
            }
            AccountEvent::Closed => (
                "UPDATE bank_balances SET closed = 1 WHERE account = $1",
                vec![Arg::Text(account.clone())],
            ),
            // Nothing credited.
            AccountEvent::TransferDeclined { .. } => return Ok(()),
        };
        tx.exec(sql, args).await.map(|_| ())
    }

    async fn reset(&self, tx: &mut T) -> Result<(), Error> {
        tx.exec("DELETE FROM bank_balances", Vec::new())
            .await
            .map(|_| ())
    }
}

/// The account-history projection.
#[derive(Default)]
pub struct History;

/// The projection name of [`History`].
pub const HISTORY: &str = "bank.history";

impl<T: ReadModelTx + 'static> Projection<T> for History {
    /// Its table, also in the shadow a `flext projections rebuild --verify` builds.
    fn migrations(&self) -> &[&str] {
        &SCHEMA[1..2]
    }

    fn name(&self) -> &str {
        HISTORY
    }

    async fn handle(&self, tx: &mut T, event: &RecordedEvent) -> Result<(), Error> {
        let Some(e) = decode(event)? else {
            return Ok(());
        };
        let (amount, counterparty) = match &e {
            AccountEvent::Opened { .. } | AccountEvent::Closed => (0, None),
            AccountEvent::Deposited { amount } => (*amount, None),
            AccountEvent::Withdrawn { amount } => (-amount, None),
            AccountEvent::TransferSent { to, amount, .. } => (-amount, Some(to.to_string())),
            AccountEvent::TransferReceived { from, amount, .. } => {
                (*amount, Some(from.to_string()))
            }
            AccountEvent::TransferRefunded { amount, reason, .. } => {
                (*amount, Some(reason.clone()))
            }
            AccountEvent::TransferDeclined { reason, .. } => (0, Some(reason.clone())),
        };
        let kind = event.event_type.trim_start_matches("account.").to_owned();
        tx.exec(
            "INSERT INTO bank_history (position, account, kind, amount, counterparty, correlation) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                Arg::Int(event.position.get() as i64),
                Arg::Text(account_of(event)?),
                Arg::Text(kind),
                Arg::Int(amount),
                counterparty.map_or(Arg::Null, Arg::Text),
                event
                    .metadata
                    .correlation_id
                    .map_or(Arg::Null, |c| Arg::Text(c.to_string())),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn reset(&self, tx: &mut T) -> Result<(), Error> {
        tx.exec("DELETE FROM bank_history", Vec::new())
            .await
            .map(|_| ())
    }
}

/// The audit trail: every event of the bank, whatever its type, with its correlation id.
/// Contributed by [`AuditPlugin`].
#[derive(Default, Clone)]
pub struct AuditTrail;

/// The projection name of [`AuditTrail`].
pub const AUDIT: &str = "bank.audit";

impl<T: ReadModelTx + 'static> Projection<T> for AuditTrail {
    /// Its table, also in the shadow a `flext projections rebuild --verify` builds.
    fn migrations(&self) -> &[&str] {
        &SCHEMA[2..3]
    }

    fn name(&self) -> &str {
        AUDIT
    }

    async fn handle(&self, tx: &mut T, event: &RecordedEvent) -> Result<(), Error> {
        tx.exec(
            "INSERT INTO bank_audit (position, event_type, stream, correlation, recorded_at) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                Arg::Int(event.position.get() as i64),
                Arg::Text(event.event_type.clone()),
                Arg::Text(event.stream_id.to_string()),
                event
                    .metadata
                    .correlation_id
                    .map_or(Arg::Null, |c| Arg::Text(c.to_string())),
                Arg::Text(event.recorded_at.to_rfc3339()),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn reset(&self, tx: &mut T) -> Result<(), Error> {
        tx.exec("DELETE FROM bank_audit", Vec::new())
            .await
            .map(|_| ())
    }
}

/// A plugin that contributes the audit trail projection.
pub struct AuditPlugin;

impl Plugin for AuditPlugin {
    fn name(&self) -> &str {
        "audit"
    }
    fn version(&self) -> &str {
        "1.0.0"
    }
    fn contribute(&self, contributions: &mut flext::ports::Contributions) {
        contributions.add(AuditTrail);
    }
}

// ---------------------------------------------------------------------------------------
// Counting commands through the metrics port (the MetricsBehavior reports to it).

/// Commands by outcome, from `flext.dispatch.count`.
#[derive(Default)]
pub struct CommandTally(Mutex<BTreeMap<String, u64>>);

impl Metrics for CommandTally {
    fn count(&self, name: &'static str, value: u64, labels: Labels<'_>) {
        if name != "flext.dispatch.count" || !labels.contains(&("kind", "command")) {
            return;
        }
        let outcome = labels
            .iter()
            .find(|(k, _)| *k == "outcome")
            .map_or("?", |(_, v)| *v);
        let mut tally = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *tally.entry(outcome.to_owned()).or_default() += value;
    }
}

impl CommandTally {
    /// (succeeded, refused).
    pub fn totals(&self) -> (u64, u64) {
        let tally = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let ok = tally.get("ok").copied().unwrap_or(0);
        (ok, tally.values().sum::<u64>() - ok)
    }
}

// ---------------------------------------------------------------------------------------
// The application: wiring, running, stopping.

/// What a store must offer the bank.
pub trait BankStore:
    EventStore
    + SnapshotStore
    + WatchAppends
    + CheckpointStore
    + ProjectionStore<Transaction: ReadModelTx>
    + ProcessStore
    + JobStore
    + Clone
    + Send
    + Sync
    + 'static
{
    /// `"SQLite"` or `"PostgreSQL"`.
    fn label(&self) -> &'static str;
    /// The read side on the same database.
    fn read_model(&self) -> Arc<dyn ReadModel>;
    /// How readers of the global order wait for new events.
    fn subscription(&self) -> SubscriptionOptions;
    /// Closes the store (SQLite: the `.db` file alone then holds everything).
    fn close_store(&self) -> BoxFuture<'_, Result<(), Error>>;
}

impl BankStore for SqliteEventStore {
    fn label(&self) -> &'static str {
        "SQLite"
    }
    fn read_model(&self) -> Arc<dyn ReadModel> {
        Arc::new(self.reader_pool().clone())
    }
    /// SQLite cannot tell one process about another's appends: with other bank
    /// processes on the file, look again every 50 ms when nothing was heard.
    fn subscription(&self) -> SubscriptionOptions {
        SubscriptionOptions {
            idle_recheck: Some(Duration::from_millis(50)),
            ..SubscriptionOptions::default()
        }
    }
    fn close_store(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.close())
    }
}

impl BankStore for PgEventStore {
    fn label(&self) -> &'static str {
        "PostgreSQL"
    }
    fn read_model(&self) -> Arc<dyn ReadModel> {
        Arc::new(self.pool().clone())
    }
    /// PostgreSQL notifies every process of every append.
    fn subscription(&self) -> SubscriptionOptions {
        SubscriptionOptions::default()
    }
    fn close_store(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.close())
    }
}

/// The running bank.
pub struct Bank<S: BankStore> {
    pub store: S,
    pub commands: CommandBus,
    pub queries: QueryBus,
    /// The projections and the transfer process (a reactor), on one runner.
    pub projections: Projections<S>,
    /// This instance's share of the consumers (projections and the transfer process),
    /// among every bank process on the same database.
    pub ownership: Ownership<S>,
    pub read: Arc<dyn ReadModel>,
    pub tally: Arc<CommandTally>,
    /// Delivers the transfer process's commands and deadlines (in one bank process at a
    /// time); `None` in a bank that runs no consumers.
    pub scheduler: Option<Scheduler>,
    /// Runs the nightly statements (and enqueues them at their time); `None` in a bank
    /// that runs no consumers.
    pub jobs: Option<JobWorkers<S>>,
    plugins: PluginRegistry,
    head_seen: AtomicU64,
    /// Whether the integration relay runs (and is waited for by `caught_up`).
    relays: bool,
}

/// Where the bank publishes its integration messages: a JetStream stream it is the only
/// writer of, and the subjects' prefix (`<prefix>.transfers.completed`,
/// `<prefix>.transfers.refunded`).
#[derive(Debug, Clone)]
pub struct Integration {
    /// The publisher into the stream.
    pub publisher: flext::nats::StreamPublisher,
    /// The subjects' first token(s), `bank` by default.
    pub prefix: String,
}

/// The integration relay's consumer name.
pub const INTEGRATION: &str = "bank.integration";

/// The relay of the bank's integration messages: a completed transfer (its second leg
/// received) and a refunded one, each as stored, to other services.
pub fn integration_relay(
    i: Integration,
) -> flext::application::Relay<flext::nats::StreamPublisher> {
    use flext::application::{Relay, Select};
    Relay::new(INTEGRATION, i.publisher)
        .route(
            Select::Type("account.transfer_received"),
            format!("{}.transfers.completed", i.prefix),
        )
        .route(
            Select::Type("account.transfer_refunded"),
            format!("{}.transfers.refunded", i.prefix),
        )
}

/// How a bank process runs.
#[derive(Debug, Clone)]
pub struct BankSettings {
    /// How long a transfer's target has to receive it before it is declined and the
    /// money goes back (30 s).
    pub settle_within: Duration,
    /// Whether this process takes part in running the projections, the transfer process
    /// and the scheduler (`false`: it only sends commands and asks queries, as a client
    /// of the bank processes that do).
    pub consumers: bool,
    /// Publish the integration messages through a relay (`None`: no broker).
    pub integration: Option<Integration>,
}

impl Default for BankSettings {
    fn default() -> Self {
        BankSettings {
            settle_within: Duration::from_secs(30),
            consumers: true,
            integration: None,
        }
    }
}

/// How long a query waits for its projection to catch up with the caller's writes.
const READ_YOUR_WRITES: Duration = Duration::from_secs(10);

impl<S: BankStore> Bank<S> {
    /// Wires everything on `store` and starts the projections and the transfer process,
    /// as an instance named after this host and process.
    pub async fn start(store: S) -> Result<Self, Error> {
        Bank::start_as(store, Instance::current()).await
    }

    /// Wires everything on `store` as `instance`: with other bank processes on the same
    /// database, each runs a fair share of the projections and the transfer process, and
    /// takes over what a stopped one ran.
    pub async fn start_as(store: S, instance: Instance) -> Result<Self, Error> {
        Bank::start_with(store, instance, BankSettings::default()).await
    }

    /// [`Bank::start_as`] with `settings`.
    pub async fn start_with(
        store: S,
        instance: Instance,
        settings: BankSettings,
    ) -> Result<Self, Error> {
        let read = store.read_model();
        read.create_schema().await?;
        // An account's owner is personal: operators' views (`flext`) mask it.
        store
            .mark_personal("account.opened", &["Opened.owner"])
            .await?;

        let mut plugins = PluginRegistry::new();
        plugins.register(AuditPlugin)?;
        plugins.start_all().await?;
        let mut contributed = plugins.contributions();

        let ownership = Ownership::start(store.clone(), instance, OwnershipOptions::default());
        let options = ProjectionOptions {
            subscription: store.subscription(),
            ..ProjectionOptions::default()
        };
        let services = Services::builder()
            // Cached: a warm command is one append (a conflict reloads and decides again).
            .singleton(Ledger(Arc::new(
                Repository::<Account, S>::new(store.clone()).with_cache(100_000),
            )))
            .singleton(ReadSide(read.clone()))
            .build();
        let registry = Registry::new().with_registered(&services);
        let mut runner = ProjectionRunner::new(store.clone()).with_ownership(ownership.clone());
        if settings.consumers {
            runner = runner
                .register_with(Balances, options)?
                .register_with(History, options)?
                .process_manager_with(
                    TransferProcess {
                        settle_within: settings.settle_within,
                    },
                    options,
                )?;
            for audit in contributed.take::<AuditTrail>() {
                runner = runner.register_with(audit, options)?;
            }
            if let Some(integration) = settings.integration.clone() {
                runner = runner.relay(integration_relay(integration))?;
            }
        }
        let relays = settings.consumers && settings.integration.is_some();
        let deliveries = runner.deliveries().clone();
        let projections = runner.start();
        let tally = Arc::new(CommandTally::default());
        let commands = registry.command_bus(
            Pipeline::new()
                .layer(TracingBehavior)
                .layer(MetricsBehavior::new(tally.clone()))
                .layer(TimeoutBehavior::new(Duration::from_secs(30)))
                .layer(RetryBehavior::default())
                .layer(ValidationBehavior),
        )?;
        let queries = registry.query_bus(
            Pipeline::new()
                .layer(TracingBehavior)
                .layer(ReadYourWritesBehavior::new(
                    projections.clone(),
                    READ_YOUR_WRITES,
                ))
                .layer(ValidationBehavior),
        )?;
        let scheduler = if settings.consumers {
            Some(
                Scheduler::builder(store.clone(), commands.clone())
                    .commands(&deliveries)
                    .with_ownership(ownership.clone())
                    .poll(Duration::from_millis(20))
                    .start()?,
            )
        } else {
            None
        };
        let jobs = if settings.consumers {
            let statements = store.clone();
            Some(
                JobWorkers::builder(store.clone())
                    .job(move |_: NightlyStatements, cx: JobContext| {
                        let store = statements.clone();
                        async move {
                            let day = cx.due_at().format("%Y-%m-%d").to_string();
                            write_statements(&store, day).await
                        }
                    })
                    .recurring(
                        "bank.nightly_statements",
                        STATEMENTS_CRON,
                        &NightlyStatements {},
                    )
                    .concurrency(2)
                    .start()?,
            )
        } else {
            None
        };
        Ok(Bank {
            store,
            commands,
            queries,
            projections,
            ownership,
            read,
            tally,
            scheduler,
            jobs,
            plugins,
            head_seen: AtomicU64::new(0),
            relays,
        })
    }

    /// Dispatches a command in a fresh business action; returns its context too.
    pub async fn run<C: Command<Output = Position>>(
        &self,
        command: C,
    ) -> (Context, Result<Position, Error>) {
        let ctx = Context::new();
        let result = self.commands.dispatch(command, &ctx).await;
        (ctx, result)
    }

    /// An account's balance once the balances projection has seen `after`.
    pub async fn balance(
        &self,
        account: Id<Account>,
        after: Position,
    ) -> Result<Option<Balance>, Error> {
        let ctx = Context::new().with_value(ReadYourWrites::new(BALANCES, after));
        self.queries.ask(GetBalance { account }, &ctx).await
    }

    /// An account's history once the history projection has seen `after`.
    pub async fn history(
        &self,
        account: Id<Account>,
        after: Position,
    ) -> Result<Vec<HistoryLine>, Error> {
        let ctx = Context::new().with_value(ReadYourWrites::new(HISTORY, after));
        self.queries.ask(GetHistory { account }, &ctx).await
    }

    /// The last position in the store: read forward from the last one seen (positions
    /// are sparse on PostgreSQL, so they cannot be counted).
    pub async fn head(&self) -> Result<Position, Error> {
        let mut last = Position(self.head_seen.load(Ordering::SeqCst));
        loop {
            let page = self.store.read_all(last, 10_000).await?;
            match page.last() {
                Some(e) => last = e.position,
                None => break,
            }
        }
        self.head_seen.fetch_max(last.get(), Ordering::SeqCst);
        Ok(last)
    }

    /// Waits until a transfer (the business action of `ctx`, first leg at `sent_at`) is
    /// settled: received, or declined and refunded. Returns the events of the whole
    /// business action, in order.
    pub async fn settled(
        &self,
        ctx: &Context,
        sent_at: Position,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.projections
            .wait_for(TRANSFER_PROCESS, sent_at, Duration::from_secs(30))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self
                .store
                .read_correlated(ctx.correlation_id(), 100)
                .await?;
            let done = events.iter().any(|e| {
                e.event_type == "account.transfer_received"
                    || e.event_type == "account.transfer_refunded"
            });
            if done {
                return Ok(events);
            }
            if Instant::now() > deadline {
                return Err(Error::deadline_exceeded(
                    "NOT_SETTLED",
                    format!(
                        "the transfer of {} did not settle in 30 s",
                        ctx.correlation_id()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether every transfer has settled: no transfer process instance runs and
    /// nothing is scheduled.
    pub async fn all_settled(&self) -> Result<bool, Error> {
        Ok(self.store.processes(TRANSFER_PROCESS).await?.is_empty()
            && self.store.next_due().await?.is_none())
    }

    /// Waits until the transfer process has settled everything up to `position` and
    /// what that wrote in turn (every transfer received or refunded, nothing left
    /// scheduled), and every projection has caught up with it all. The head is read
    /// again until it stands still: on PostgreSQL a read stops before an append still
    /// committing, so one reading of the head may fall short of a transfer already sent.
    pub async fn caught_up(&self, position: Position) -> Result<(), Error> {
        let mut target = position;
        loop {
            let relay = self.relays.then_some(INTEGRATION);
            for name in [TRANSFER_PROCESS, BALANCES, HISTORY, AUDIT]
                .into_iter()
                .chain(relay)
            {
                self.projections
                    .wait_for(name, target, Duration::from_secs(120))
                    .await?;
            }
            let head = self.head().await?;
            let withheld = self.store.read_all_withheld(head).await?;
            if head <= target {
                if !withheld && self.all_settled().await? {
                    return Ok(());
                }
                // Something is committing behind an append still in flight, or a
                // transfer is on its way through the scheduler.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            target = head.max(target);
        }
    }

    /// Compares the read models with the stored events, each up to the checkpoint its
    /// projection stands at (read in one snapshot, so other instances may go on writing).
    pub async fn verdict(&self) -> Result<Verdict, Error> {
        let snap = self.read.snapshot().await?;
        let upto = snap.balances_at.max(snap.history_at);
        let (mut money, mut rows) = (0i64, 0i64);
        let mut after = Position::START;
        'read: loop {
            let page = self.store.read_all(after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for event in &page {
                if event.position > upto {
                    break 'read;
                }
                let Some(e) = decode(event)? else { continue };
                if event.position <= snap.balances_at {
                    money += balance_change(&e);
                }
                if event.position <= snap.history_at {
                    rows += 1;
                }
            }
        }
        let mut dead_letters = 0;
        for name in [BALANCES, HISTORY, AUDIT] {
            dead_letters += self.projections.dead_letters(name).await?.len();
        }
        Ok(Verdict {
            balances_expected: money,
            balances_held: snap.balance_sum,
            history_expected: rows,
            history_rows: snap.history_rows,
            dead_letters,
        })
    }

    /// Stops the process and the projections, keeping their checkpoints, and the plugins.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.shutdown().await;
        }
        if let Some(jobs) = self.jobs.take() {
            jobs.shutdown().await;
        }
        self.projections.shutdown().await;
        self.ownership.shutdown().await;
        self.plugins.stop_all().await
    }
}

/// The bank's customers in the walkthrough.
pub const ALICE: &str = "alice";
pub const BOB: &str = "bob";
pub const CAROL: &str = "carol";

/// What a walkthrough saw, for the summary and the tests.
#[derive(Debug, Default)]
pub struct Walkthrough {
    pub resumed: bool,
    pub lines: Vec<String>,
    pub completed_transfer: Vec<RecordedEvent>,
    pub compensated_transfer: Vec<RecordedEvent>,
    pub balances: Vec<Balance>,
    pub alice_history: Vec<HistoryLine>,
    pub bridge_hex: String,
    pub elapsed: Duration,
    pub events_written: u64,
}

fn outcome_line(what: &str, result: &Result<Position, Error>) -> String {
    match result {
        Ok(p) if *p == Position::START => format!("{what}: nothing to do"),
        Ok(p) => format!("{what}: ok (position {})", p.get()),
        Err(e) => format!(
            "{what}: refused, {} {}: {}",
            e.code().as_str(),
            e.reason(),
            e.message()
        ),
    }
}

/// The walkthrough: three customers, deposits, an overdraft refused, a transfer that
/// completes, a transfer to a closed account that is refunded, queries that read their
/// writes, and one result handed over the bridge. `say` receives each line as it happens.
pub async fn walkthrough<S: BankStore>(
    bank: &Bank<S>,
    mut say: impl FnMut(&str),
) -> Result<Walkthrough, Error> {
    let mut w = Walkthrough::default();
    let start = Instant::now();
    let head_before = bank.head().await?;
    let mut lines = Vec::new();
    let mut line = |_: &mut (), s: String| {
        say(&s);
        lines.push(s);
    };
    let (alice, bob, carol) = (account_id(ALICE), account_id(BOB), account_id(CAROL));

    for (name, id, overdraft) in [(ALICE, alice, 100), (BOB, bob, 0), (CAROL, carol, 0)] {
        let (_, r) = bank
            .run(OpenAccount {
                account: id,
                owner: name.to_owned(),
                overdraft_limit: overdraft,
            })
            .await;
        if matches!(&r, Err(e) if e.code() == ErrorCode::AlreadyExists) {
            w.resumed = true;
        }
        line(
            &mut (),
            outcome_line(&format!("open {name} (overdraft {overdraft})"), &r),
        );
    }
    if w.resumed {
        line(
            &mut (),
            "  the accounts exist already: resuming from the stored state".to_owned(),
        );
    }

    let (_, r) = bank
        .run(Deposit {
            account: alice,
            amount: 500,
        })
        .await;
    line(&mut (), outcome_line("deposit 500 to alice", &r));
    let (_, r) = bank
        .run(Deposit {
            account: bob,
            amount: 200,
        })
        .await;
    line(&mut (), outcome_line("deposit 200 to bob", &r));
    let (_, r) = bank
        .run(Withdraw {
            account: alice,
            amount: 50,
        })
        .await;
    line(&mut (), outcome_line("withdraw 50 from alice", &r));
    let (_, r) = bank
        .run(Withdraw {
            account: bob,
            amount: 1_000,
        })
        .await;
    line(&mut (), outcome_line("withdraw 1000 from bob", &r));
    let (_, r) = bank
        .run(Deposit {
            account: bob,
            amount: -5,
        })
        .await;
    line(&mut (), outcome_line("deposit -5 to bob", &r));

    // A transfer that completes: alice -> bob.
    let (ctx, r) = bank
        .run(Transfer {
            transfer: Uuid::now_v7(),
            from: alice,
            to: bob,
            amount: 120,
        })
        .await;
    line(&mut (), outcome_line("transfer 120 alice -> bob", &r));
    let sent = r?;
    w.completed_transfer = bank.settled(&ctx, sent).await?;
    line(
        &mut (),
        format!(
            "  settled by the transfer process: {}",
            kinds(&w.completed_transfer)
        ),
    );

    // Carol closes her account; a transfer to it fails its second leg and is refunded.
    let (_, r) = bank.run(CloseAccount { account: carol }).await;
    line(&mut (), outcome_line("close carol", &r));
    let (ctx, r) = bank
        .run(Transfer {
            transfer: Uuid::now_v7(),
            from: alice,
            to: carol,
            amount: 40,
        })
        .await;
    line(&mut (), outcome_line("transfer 40 alice -> carol", &r));
    let sent = r?;
    w.compensated_transfer = bank.settled(&ctx, sent).await?;
    line(
        &mut (),
        format!(
            "  settled by the transfer process: {}",
            kinds(&w.compensated_transfer)
        ),
    );

    // Queries that read their writes: they wait until the projections have seen the
    // last event of the last transfer (the refund, written by the transfer process).
    let last_write = w
        .compensated_transfer
        .iter()
        .chain(&w.completed_transfer)
        .map(|e| e.position)
        .max()
        .unwrap_or(Position::START);
    let head = bank.head().await?.max(last_write);
    for (name, id) in [(ALICE, alice), (BOB, bob), (CAROL, carol)] {
        let Some(b) = bank.balance(id, head).await? else {
            return Err(Error::not_found(
                "NO_BALANCE",
                format!("{name} has no balance row"),
            ));
        };
        line(
            &mut (),
            format!(
                "balance of {name}: {}{} (overdraft {})",
                b.balance,
                if b.closed { ", closed" } else { "" },
                b.overdraft_limit
            ),
        );
        w.balances.push(b);
    }
    w.alice_history = bank.history(alice, head).await?;
    line(
        &mut (),
        format!(
            "history of alice ({} lines, last 6):",
            w.alice_history.len()
        ),
    );
    for h in w.alice_history.iter().rev().take(6).rev() {
        line(
            &mut (),
            format!(
                "  #{:<6} {:<18} {:>6}  {}",
                h.position,
                h.kind,
                h.amount,
                h.counterparty.as_deref().unwrap_or("")
            ),
        );
    }

    // One result over the bridge, as Python, Go or TypeScript would receive it.
    let mut metadata = BTreeMap::new();
    metadata.insert("position".to_owned(), head.get().to_string());
    let bytes = flext::bridge::msgpack::encode_ok(&w.balances[0], &metadata)?;
    w.bridge_hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    line(
        &mut (),
        format!(
            "alice's balance as a MessagePack envelope ({} bytes):",
            bytes.len()
        ),
    );
    line(&mut (), format!("  {}", w.bridge_hex));

    bank.caught_up(head).await?;
    w.lines = lines;
    w.events_written = bank.store.count_after(head_before).await?;
    w.elapsed = start.elapsed();
    Ok(w)
}

fn kinds(events: &[RecordedEvent]) -> String {
    events
        .iter()
        .map(|e| e.event_type.trim_start_matches("account."))
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// What a load run did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub transfers_sent: u64,
    pub transfers_refused: u64,
    /// Transfers given up after their retries lost every race for the account (other
    /// bank processes writing the same accounts).
    pub transfers_conflicted: u64,
    pub send_elapsed: Duration,
    pub settle_elapsed: Duration,
    pub events_written: u64,
    pub total_deposited: i64,
    pub interrupted: bool,
}

/// The load mode: `accounts` accounts with 1,000 each, then `transfers` random transfers
/// from `concurrency` tasks, then waits until every transfer is settled and every
/// projection has caught up. `stop` ends it early (Ctrl-C).
pub async fn load<S: BankStore>(
    bank: &Bank<S>,
    accounts: usize,
    transfers: usize,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> Result<LoadReport, Error> {
    let mut report = LoadReport::default();
    let head_before = bank.head().await?;
    let ids: Vec<Id<Account>> = (0..accounts)
        .map(|i| account_id(&format!("load-{i}")))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let (_, r) = bank
            .run(OpenAccount {
                account: *id,
                owner: format!("load-{i}"),
                overdraft_limit: 0,
            })
            .await;
        match r {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // Another bank process may be writing the same account: a conflict that outlasts
        // the retries is tried again.
        loop {
            let (_, r) = bank
                .run(Deposit {
                    account: *id,
                    amount: 1_000,
                })
                .await;
            match r {
                Ok(_) => break,
                Err(e) if e.reason() == WRONG_EXPECTED_VERSION => continue,
                Err(e) => return Err(e),
            }
        }
        report.total_deposited += 1_000;
    }
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let conflicted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (commands, ids, next, sent, refused, conflicted, stop) = (
            bank.commands.clone(),
            ids.clone(),
            next.clone(),
            sent.clone(),
            refused.clone(),
            conflicted.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // A small xorshift per worker: the pairs and amounts differ, no crate needed.
            let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (worker as u64 + 1);
            let mut rand = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            while next.fetch_add(1, Ordering::SeqCst) < transfers as u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let n = ids.len() as u64;
                let from = (rand() % n) as usize;
                let to = ((from as u64 + 1 + rand() % (n - 1).max(1)) % n) as usize;
                let amount = 1 + (rand() % 100) as i64;
                let command = Transfer {
                    transfer: Uuid::now_v7(),
                    from: ids[from],
                    to: ids[to],
                    amount,
                };
                match commands.dispatch(command, &Context::new()).await {
                    Ok(_) => sent.fetch_add(1, Ordering::SeqCst),
                    Err(e) if e.reason() == "INSUFFICIENT_FUNDS" => {
                        refused.fetch_add(1, Ordering::SeqCst)
                    }
                    Err(e) if e.reason() == WRONG_EXPECTED_VERSION => {
                        conflicted.fetch_add(1, Ordering::SeqCst)
                    }
                    Err(e) => return Err(e),
                };
            }
            Ok::<(), Error>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Error::internal("LOAD_TASK", e.to_string()))??;
    }
    report.send_elapsed = started.elapsed();
    report.transfers_sent = sent.load(Ordering::SeqCst);
    report.transfers_refused = refused.load(Ordering::SeqCst);
    report.transfers_conflicted = conflicted.load(Ordering::SeqCst);
    report.interrupted = stop.load(Ordering::SeqCst);
    let settle = Instant::now();
    let head = bank.head().await?;
    bank.caught_up(head).await?;
    report.settle_elapsed = settle.elapsed();
    report.events_written = bank.store.count_after(head_before).await?;
    Ok(report)
}

#[cfg(test)]
mod decisions {
    //! The account's business boundaries, decided with no store: each test sits on one
    //! side of a rule's edge, so moving the edge by one fails it.

    use super::*;

    fn account(history: &[AccountEvent]) -> Account {
        let mut a = Account::default();
        for e in history {
            a.apply(e);
        }
        a
    }

    fn opened(overdraft_limit: i64) -> AccountEvent {
        AccountEvent::Opened {
            owner: "alice".into(),
            overdraft_limit,
        }
    }

    fn deposited(amount: i64) -> AccountEvent {
        AccountEvent::Deposited { amount }
    }

    fn reason(r: Result<Vec<AccountEvent>, Error>) -> String {
        r.expect_err("refused").reason().to_owned()
    }

    #[test]
    fn the_overdraft_limit_can_be_reached_exactly_but_not_passed() {
        let a = account(&[opened(100), deposited(50)]);
        assert_eq!(
            a.withdraw(150).expect("down to -100 exactly"),
            [AccountEvent::Withdrawn { amount: 150 }]
        );
        assert_eq!(reason(a.withdraw(151)), "INSUFFICIENT_FUNDS");
        let to = Uuid::now_v7();
        let t = Uuid::now_v7();
        assert!(a.send(t, to, 150).is_ok());
        assert_eq!(reason(a.send(t, to, 151)), "INSUFFICIENT_FUNDS");
        let refused = a.withdraw(151).expect_err("refused");
        assert_eq!(refused.code(), ErrorCode::FailedPrecondition);
        assert_eq!(refused.details()["balance"], 50);
        assert_eq!(refused.details()["overdraft_limit"], 100);
    }

    #[test]
    fn without_an_overdraft_the_balance_can_be_emptied_but_not_overdrawn() {
        let a = account(&[opened(0), deposited(10)]);
        assert!(a.withdraw(10).is_ok());
        assert_eq!(reason(a.withdraw(11)), "INSUFFICIENT_FUNDS");
    }

    #[test]
    fn amounts_must_be_positive() {
        let a = account(&[opened(0), deposited(10)]);
        for amount in [0, -1] {
            assert_eq!(reason(a.deposit(amount)), "VALIDATION_FAILED");
            assert_eq!(reason(a.withdraw(amount)), "VALIDATION_FAILED");
            assert_eq!(
                reason(a.send(Uuid::now_v7(), Uuid::now_v7(), amount)),
                "VALIDATION_FAILED"
            );
        }
        assert_eq!(a.deposit(1).expect("1 is positive"), [deposited(1)]);
    }

    #[test]
    fn an_account_closes_only_at_a_zero_balance() {
        assert_eq!(
            reason(account(&[opened(0), deposited(1)]).close()),
            "BALANCE_NOT_ZERO"
        );
        assert_eq!(
            reason(account(&[opened(10), AccountEvent::Withdrawn { amount: 1 }]).close()),
            "BALANCE_NOT_ZERO"
        );
        assert_eq!(
            account(&[opened(0)]).close().expect("empty"),
            [AccountEvent::Closed]
        );
    }

    #[test]
    fn a_closed_or_unopened_account_takes_no_money() {
        let closed = account(&[opened(0), AccountEvent::Closed]);
        assert_eq!(reason(closed.deposit(1)), "ACCOUNT_CLOSED");
        assert_eq!(reason(closed.withdraw(1)), "ACCOUNT_CLOSED");
        assert_eq!(
            reason(closed.send(Uuid::now_v7(), Uuid::now_v7(), 1)),
            "ACCOUNT_CLOSED"
        );
        assert_eq!(reason(closed.close()), "ACCOUNT_CLOSED");
        // A transfer to it is declined (a fact the transfer process refunds on), once.
        let (t, from) = (Uuid::now_v7(), Uuid::now_v7());
        let declined = closed.receive(t, from, 1).expect("declined");
        assert_eq!(
            declined,
            [AccountEvent::TransferDeclined {
                transfer: t,
                from,
                amount: 1,
                reason: "alice's account is closed".into()
            }]
        );
        let mut after = account(&[opened(0), AccountEvent::Closed]);
        after.apply(&declined[0]);
        assert!(after.receive(t, from, 1).expect("nothing").is_empty());
        let never = Account::default();
        assert!(matches!(
            &never.receive(t, from, 1).expect("declined")[..],
            [AccountEvent::TransferDeclined { .. }]
        ));
        assert_eq!(reason(never.deposit(1)), "ACCOUNT_NOT_FOUND");
        assert_eq!(reason(never.withdraw(1)), "ACCOUNT_NOT_FOUND");
        // A refund goes back even to a closed account.
        let t = Uuid::now_v7();
        assert_eq!(
            closed.refund(t, 5, "gone").expect("refunded"),
            [AccountEvent::TransferRefunded {
                transfer: t,
                amount: 5,
                reason: "gone".into()
            }]
        );
    }

    /// The target records a transfer's receipt or its decline, never both, whichever
    /// comes first: the race between the second leg and the deadline.
    #[test]
    fn a_transfer_is_received_or_declined_never_both() {
        let (t, from) = (Uuid::now_v7(), Uuid::now_v7());
        let mut received = account(&[opened(0)]);
        let leg = received.receive(t, from, 7).expect("received");
        received.apply(&leg[0]);
        assert!(
            received
                .decline(t, from, 7, "late")
                .expect("nothing")
                .is_empty()
        );

        let mut declined = account(&[opened(0)]);
        let leg = declined.decline(t, from, 7, "late").expect("declined");
        assert!(matches!(&leg[..], [AccountEvent::TransferDeclined { .. }]));
        declined.apply(&leg[0]);
        assert!(declined.receive(t, from, 7).expect("nothing").is_empty());
        assert_eq!(declined.balance, 0, "nothing credited");
    }

    #[test]
    fn opening_needs_an_owner_and_a_limit_of_zero_or_more_once() {
        let new = Account::default();
        assert_eq!(
            new.open("bob", 0).expect("0 is allowed"),
            [AccountEvent::Opened {
                owner: "bob".into(),
                overdraft_limit: 0
            }]
        );
        assert_eq!(reason(new.open("bob", -1)), "VALIDATION_FAILED");
        assert_eq!(reason(new.open("  ", 0)), "VALIDATION_FAILED");
        assert_eq!(
            reason(account(&[opened(0)]).open("bob", 0)),
            "ACCOUNT_EXISTS"
        );
    }

    #[test]
    fn a_transfer_leg_is_settled_once() {
        let t = Uuid::now_v7();
        let from = Uuid::now_v7();
        let a = account(&[opened(0)]);
        let received = a.receive(t, from, 7).expect("first time");
        assert_eq!(
            received,
            [AccountEvent::TransferReceived {
                transfer: t,
                from,
                amount: 7
            }]
        );
        let after = account(&[opened(0), received[0].clone()]);
        assert_eq!(after.balance, 7);
        assert!(after.receive(t, from, 7).expect("again").is_empty());
        assert!(after.refund(t, 7, "late").expect("settled").is_empty());
        assert_eq!(
            after
                .receive(Uuid::now_v7(), from, 1)
                .expect("another")
                .len(),
            1
        );
    }

    #[test]
    fn events_move_the_balance_both_ways() {
        let t = Uuid::now_v7();
        let a = account(&[
            opened(0),
            deposited(100),
            AccountEvent::Withdrawn { amount: 30 },
            AccountEvent::TransferSent {
                transfer: t,
                to: Uuid::now_v7(),
                amount: 20,
            },
            AccountEvent::TransferRefunded {
                transfer: t,
                amount: 20,
                reason: "no".into(),
            },
        ]);
        assert_eq!(a.balance, 70);
        assert!(a.settled.contains(&t));
    }
}

#[cfg(test)]
mod transfer_process {
    //! The transfer process's decisions, given/when/then, with no store.

    use super::*;
    use flext::application::ProcessFixture;

    fn fixture() -> (
        ProcessFixture<TransferProcess>,
        Uuid,
        Id<Account>,
        Id<Account>,
    ) {
        let f = ProcessFixture::new(TransferProcess {
            settle_within: Duration::from_secs(30),
        });
        (f, Uuid::now_v7(), Id::new(), Id::new())
    }

    fn sent(transfer: Uuid, to: Id<Account>) -> AccountEvent {
        AccountEvent::TransferSent {
            transfer,
            to: to.as_uuid(),
            amount: 25,
        }
    }

    #[test]
    fn a_sent_transfer_sends_its_second_leg_with_a_deadline() {
        let (mut f, t, from, to) = fixture();
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        f.at(at);
        let then = f
            .when(&format!("account-{from}"), sent(t, to))
            .expect("sent");
        let legs = then.sent::<ReceiveTransfer>().expect("decode");
        assert_eq!(legs.len(), 1);
        assert_eq!(
            (legs[0].transfer, legs[0].from, legs[0].to, legs[0].amount),
            (t, from, to, 25)
        );
        assert_eq!(
            then.deadlines(),
            [(
                "settle",
                at + chrono::Duration::seconds(30),
                DeclineTransfer::NAME
            )]
        );
        let decline = then
            .deadline::<DeclineTransfer>("settle")
            .expect("decode")
            .expect("set");
        assert_eq!((decline.transfer, decline.to), (t, to));
        assert_eq!(then.association(), Some(t.to_string().as_str()));
    }

    #[test]
    fn a_received_transfer_ends_and_cancels_its_deadline() {
        let (mut f, t, from, to) = fixture();
        f.given(&format!("account-{from}"), [sent(t, to)])
            .expect("given");
        let then = f
            .when(
                &format!("account-{to}"),
                AccountEvent::TransferReceived {
                    transfer: t,
                    from: from.as_uuid(),
                    amount: 25,
                },
            )
            .expect("received");
        assert!(then.ended());
        assert_eq!(then.cancelled(), ["settle"]);
        assert!(then.sent::<RefundTransfer>().expect("decode").is_empty());
    }

    #[test]
    fn a_declined_transfer_is_refunded_then_ends() {
        let (mut f, t, from, to) = fixture();
        f.given(&format!("account-{from}"), [sent(t, to)])
            .expect("given");
        let then = f
            .when(
                &format!("account-{to}"),
                AccountEvent::TransferDeclined {
                    transfer: t,
                    from: from.as_uuid(),
                    amount: 25,
                    reason: "closed".into(),
                },
            )
            .expect("declined");
        assert_eq!(then.cancelled(), ["settle"]);
        let refunds = then.sent::<RefundTransfer>().expect("decode");
        assert_eq!(refunds.len(), 1);
        assert_eq!(
            (
                refunds[0].account,
                refunds[0].amount,
                refunds[0].reason.as_str()
            ),
            (from, 25, "closed")
        );
        assert!(then.state().is_some_and(|s| s.refunding));
        let then = f
            .when(
                &format!("account-{from}"),
                AccountEvent::TransferRefunded {
                    transfer: t,
                    amount: 25,
                    reason: "closed".into(),
                },
            )
            .expect("refunded");
        assert!(then.ended());
    }

    #[test]
    fn other_account_events_are_not_its_business() {
        let (mut f, _, from, _) = fixture();
        let then = f
            .when(
                &format!("account-{from}"),
                AccountEvent::Deposited { amount: 5 },
            )
            .expect("deposit");
        assert_eq!(then.association(), None);
        assert!(then.effects().is_empty());
    }
}
