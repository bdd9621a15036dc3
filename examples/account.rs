//! A bank account decided and evolved with the domain kernel alone: no store, no runtime.
//!
//! Run with `cargo run --example account`.

use flext::prelude::*;
use flext::{AggregateRoot, Error, Id, Validation};

/// An account's state, rebuilt from its events.
#[derive(Debug, Default)]
struct Account {
    owner: Option<String>,
    balance: i64,
    overdraft_limit: i64,
}

/// What can happen to an account.
#[derive(Debug, Clone, PartialEq)]
enum AccountEvent {
    Opened { owner: String, overdraft_limit: i64 },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "account.opened",
            AccountEvent::Deposited { .. } => "account.deposited",
            AccountEvent::Withdrawn { .. } => "account.withdrawn",
        }
    }
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
                self.owner = Some(owner.clone());
                self.overdraft_limit = *overdraft_limit;
            }
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

impl Account {
    fn open(&self, owner: &str, overdraft_limit: i64) -> Result<Vec<AccountEvent>, Error> {
        if self.owner.is_some() {
            return Err(Error::already_exists(
                "ACCOUNT_ALREADY_OPEN",
                "the account is open",
            ));
        }
        let mut v = Validation::new();
        v.ensure(
            !owner.trim().is_empty(),
            "owner",
            "REQUIRED",
            "must not be blank",
        );
        v.ensure(
            overdraft_limit >= 0,
            "overdraft_limit",
            "NEGATIVE",
            "must be 0 or more",
        );
        v.finish_with(|| {
            vec![AccountEvent::Opened {
                owner: owner.to_owned(),
                overdraft_limit,
            }]
        })
    }

    fn deposit(&self, amount: i64) -> Result<Vec<AccountEvent>, Error> {
        self.require_open()?;
        let mut v = Validation::new();
        v.ensure(
            amount > 0,
            "amount",
            "NOT_POSITIVE",
            "must be greater than 0",
        );
        v.finish_with(|| vec![AccountEvent::Deposited { amount }])
    }

    fn withdraw(&self, amount: i64) -> Result<Vec<AccountEvent>, Error> {
        self.require_open()?;
        let mut v = Validation::new();
        v.ensure(
            amount > 0,
            "amount",
            "NOT_POSITIVE",
            "must be greater than 0",
        );
        v.finish()?;
        if self.balance - amount < -self.overdraft_limit {
            return Err(Error::failed_precondition(
                "OVERDRAFT_LIMIT_EXCEEDED",
                format!(
                    "withdrawing {amount} would take the balance to {} below the limit of -{}",
                    self.balance - amount,
                    self.overdraft_limit
                ),
            )
            .with_detail("balance", self.balance)
            .with_detail("amount", amount));
        }
        Ok(vec![AccountEvent::Withdrawn { amount }])
    }

    fn require_open(&self) -> Result<(), Error> {
        match self.owner {
            Some(_) => Ok(()),
            None => Err(Error::failed_precondition(
                "ACCOUNT_NOT_OPEN",
                "open the account first",
            )),
        }
    }
}

type Decision = Box<dyn Fn(&Account) -> Result<Vec<AccountEvent>, Error>>;

fn main() {
    let mut account = AggregateRoot::<Account>::new(Id::new());
    println!("account stream {}", account.stream_id());

    let steps: Vec<(&str, Decision)> = vec![
        ("deposit 50 before opening", Box::new(|a| a.deposit(50))),
        (
            "open for Ada, overdraft 100",
            Box::new(|a| a.open("Ada", 100)),
        ),
        ("deposit 250", Box::new(|a| a.deposit(250))),
        ("withdraw 300", Box::new(|a| a.withdraw(300))),
        ("withdraw 100", Box::new(|a| a.withdraw(100))),
        ("withdraw -5", Box::new(|a| a.withdraw(-5))),
        (
            "open again with a blank owner",
            Box::new(|a| a.open(" ", -1)),
        ),
    ];

    for (what, decide) in steps {
        match account.execute(|a| decide(a)) {
            Ok(events) => println!("  {:<8}{what:<30} -> {events:?}", "ok"),
            Err(e) => println!("  {:<8}{what:<30} -> {e}", "refused"),
        }
    }

    let state = account.state();
    println!(
        "owner {:?}, balance {}, version {}, {} events to save (expect {})",
        state.owner.as_deref().unwrap_or("-"),
        state.balance,
        account.version(),
        account.uncommitted().len(),
        account.expected_version(),
    );

    let history = account.take_uncommitted();
    let replayed = AggregateRoot::<Account>::from_history(account.id(), &history);
    println!(
        "replayed {} events: balance {} (same as decided: {})",
        history.len(),
        replayed.state().balance,
        replayed.state().balance == account.state().balance
    );
}
