//! The idempotency behavior: a command id seen before returns its first outcome instead of
//! running the command again.

use std::any::TypeId;
use std::time::Duration;

use bytes::Bytes;
use flext_domain::{Error, ErrorCode};
use flext_ports::{Claim, Command, Context, IdempotencyRecord, IdempotencyStore};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::pipeline::{Behavior, BoxFuture, Message, Next, Reply};
use crate::typemap::TypeMap;

#[derive(Clone, Copy)]
struct OutputCodec {
    encode: fn(&Reply) -> Result<Bytes, Error>,
    decode: fn(&[u8]) -> Result<Reply, Error>,
    /// A digest of the command's value (its JSON), stored with its outcome.
    fingerprint: fn(&Message<'_>) -> Option<String>,
}

use flext_domain::reexport::uuid::Uuid;

/// The namespace of tenant-scoped command ids (UUID v5).
const TENANT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_5b1e_3c2a_4d8e_9a71_0c4f_2b6d_8e10);
/// The namespace of command fingerprints (UUID v5).
const FINGERPRINT_NAMESPACE: Uuid = Uuid::from_u128(0x2c9d_41a7_7e53_4f06_b8d2_5e19_a3c4_f771);

/// The key a command's outcome is kept under: its id within its tenant, so the same id
/// sent by two tenants is two commands (no tenant: the id itself).
fn scoped_id(tenant: Option<&str>, id: Uuid) -> Uuid {
    match tenant {
        None => id,
        Some(t) => Uuid::new_v5(
            &Uuid::new_v5(&TENANT_NAMESPACE, t.as_bytes()),
            id.as_bytes(),
        ),
    }
}

fn fingerprint<C: Command + Serialize>(message: &Message<'_>) -> Option<String> {
    let command = message.downcast_ref::<C>()?;
    let json = serde_json::to_vec(command).ok()?;
    Some(
        Uuid::new_v5(&FINGERPRINT_NAMESPACE, &json)
            .simple()
            .to_string(),
    )
}

fn encode<C: Command>(reply: &Reply) -> Result<Bytes, Error>
where
    C::Output: Serialize,
{
    let output = reply.downcast_ref::<C::Output>().ok_or_else(|| {
        Error::internal(
            "REPLY_TYPE_MISMATCH",
            format!("{} answered with another type", C::NAME),
        )
    })?;
    serde_json::to_vec(output).map(Bytes::from).map_err(|e| {
        Error::internal(
            "UNENCODABLE_OUTPUT",
            format!("the output of {} cannot be stored: {e}", C::NAME),
        )
    })
}

fn decode<C: Command>(bytes: &[u8]) -> Result<Reply, Error>
where
    C::Output: DeserializeOwned,
{
    serde_json::from_slice::<C::Output>(bytes)
        .map(Reply::new)
        .map_err(|e| {
            Error::data_loss(
                "CORRUPTED_IDEMPOTENCY_RECORD",
                format!("the stored output of {} cannot be read: {e}", C::NAME),
            )
        })
}

/// Whether an error must not become a command's stored outcome (its claim is released
/// instead): a transient one ([`ErrorCode::is_transient`], the domain's one rule) may go
/// away on a retry, and a cancelled, internal, unknown or data-loss one is no answer of
/// the command's own.
fn not_an_outcome(code: ErrorCode) -> bool {
    code.is_transient()
        || matches!(
            code,
            ErrorCode::Cancelled | ErrorCode::Internal | ErrorCode::Unknown | ErrorCode::DataLoss
        )
}

/// Runs each opted-in command at most once per command id (the context's message id): a
/// command sent again returns the first outcome, output or error, from the
/// [`IdempotencyStore`]. Transient failures (unavailable, conflict, deadline, internal...)
/// are not stored, so a retry runs the command again. While a first dispatch runs, a second
/// one with the same id gets `Aborted`/`COMMAND_IN_PROGRESS`; an id reused for another
/// command type is `AlreadyExists`/`COMMAND_ID_REUSED`. Commands not opted in pass through.
///
/// ```
/// use flext::application::{IdempotencyBehavior, Pipeline};
/// use flext::memory::InMemoryEventStore;
/// use flext::ports::Command;
///
/// #[derive(Clone, serde::Serialize)]
/// struct PlaceOrder;
/// impl Command for PlaceOrder {
///     type Output = u64;
///     const NAME: &'static str = "order.place";
/// }
///
/// let pipeline = Pipeline::new()
///     .layer(IdempotencyBehavior::new(InMemoryEventStore::new()).command::<PlaceOrder>());
/// # let _ = pipeline;
/// ```
pub struct IdempotencyBehavior<S> {
    store: S,
    stale_after: Duration,
    codecs: TypeMap<OutputCodec>,
    /// How long outcomes are kept; `None`: forever.
    retention: Option<Duration>,
    /// Claims since the last purge.
    claims: std::sync::atomic::AtomicU64,
}

/// A purge of expired records runs once per this many claims.
const PURGE_EVERY: u64 = 1_000;

/// Releases a claim when the dispatch holding it is dropped before its outcome is stored
/// (a deadline, a client that went away), so a retry runs at once instead of getting
/// `COMMAND_IN_PROGRESS` until the claim goes stale.
struct ClaimGuard<S: IdempotencyStore + Clone + 'static> {
    store: S,
    id: flext_domain::reexport::uuid::Uuid,
    armed: bool,
}

impl<S: IdempotencyStore + Clone + 'static> Drop for ClaimGuard<S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, id) = (self.store.clone(), self.id);
            runtime.spawn(async move {
                // Failing, the claim goes stale after `stale_after` as before.
                let _ = store.release(id).await;
            });
        }
    }
}

impl<S: IdempotencyStore + Clone + 'static> IdempotencyBehavior<S> {
    /// Records outcomes in `store`; a claim left unfinished for 5 minutes (its process
    /// died) may be taken over.
    pub fn new(store: S) -> Self {
        IdempotencyBehavior {
            store,
            stale_after: Duration::from_secs(300),
            codecs: TypeMap::default(),
            retention: None,
            claims: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Keeps outcomes for `retention` (measured from the claim), then forgets them: a
    /// retry of the same id after that runs again. Expired records are purged every
    /// 1,000 claims (in the background); [`IdempotencyBehavior::purge`] does it now.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Forgets the records older than the retention period now; how many.
    pub async fn purge(&self) -> Result<u64, Error> {
        match self.retention {
            Some(r) => self.store.purge(r).await,
            None => Ok(0),
        }
    }

    /// How long an unfinished claim blocks the same id.
    pub fn stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }

    /// Makes command `C` idempotent; its output is stored as JSON, with a fingerprint of
    /// the command's value: the same id sent again with another command (another type or
    /// another value) is refused with `COMMAND_ID_REUSED`, which says nothing of the other.
    pub fn command<C: Command + Serialize>(mut self) -> Self
    where
        C::Output: Serialize + DeserializeOwned,
    {
        self.codecs.insert(
            TypeId::of::<C>(),
            OutputCodec {
                encode: encode::<C>,
                decode: decode::<C>,
                fingerprint: fingerprint::<C>,
            },
        );
        self
    }
}

impl<S: IdempotencyStore + Clone + 'static> Behavior for IdempotencyBehavior<S> {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        let Some(codec) = self.codecs.get(&message.type_id()).copied() else {
            return next.run();
        };
        let sent = ctx.message_id();
        // Ids are scoped by tenant: another tenant's command of the same id is another.
        let id = scoped_id(ctx.tenant(), sent);
        let name = message.name();
        // What is stored is the type and the value's fingerprint: a retry must match both.
        let signature = match (codec.fingerprint)(&message) {
            Some(fp) => format!("{name}#{fp}"),
            None => name.to_owned(),
        };
        Box::pin(async move {
            if let Some(retention) = self.retention {
                let n = self
                    .claims
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n % PURGE_EVERY == PURGE_EVERY - 1
                    && let Ok(runtime) = tokio::runtime::Handle::try_current()
                {
                    let store = self.store.clone();
                    runtime.spawn(async move {
                        let _ = store.purge(retention).await;
                    });
                }
            }
            match self.store.claim(id, &signature, self.stale_after).await? {
                Claim::Done(record) if record.message_type != signature => {
                    Err(Error::already_exists(
                        "COMMAND_ID_REUSED",
                        format!(
                            "command id {sent} was already used for another command; send a new \
                             command with a new id"
                        ),
                    )
                    .with_detail("command_id", sent.to_string()))
                }
                Claim::Done(record) => match record.outcome {
                    Ok(bytes) => (codec.decode)(&bytes),
                    Err(e) => Err(e),
                },
                Claim::InProgress => Err(Error::conflict(
                    "COMMAND_IN_PROGRESS",
                    format!("{name} with command id {sent} is running now"),
                )
                .with_detail("command_id", sent.to_string())),
                Claim::Claimed => {
                    let mut guard = ClaimGuard {
                        store: self.store.clone(),
                        id,
                        armed: true,
                    };
                    let result = next.run().await;
                    let stored = match &result {
                        Ok(reply) => Some(Ok((codec.encode)(reply)?)),
                        Err(e) if not_an_outcome(e.code()) => None,
                        Err(e) => Some(Err(e.clone())),
                    };
                    match stored {
                        Some(outcome) => {
                            let record = IdempotencyRecord {
                                message_type: signature.clone(),
                                outcome,
                            };
                            self.store.complete(id, record).await?;
                        }
                        None => self.store.release(id).await?,
                    }
                    guard.armed = false;
                    result
                }
            }
        })
    }
}
