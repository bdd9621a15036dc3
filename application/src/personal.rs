//! Crypto-shredding: personal fields of events sealed with a per-subject data key, the
//! key wrapped by a master key, and `forget(subject)` destroying the key.
//!
//! Event types declare their personal data with `#[personal(subject)]` and `#[personal]`
//! fields ([`flext_domain::PersonalData`]). [`DataProtection`] seals those fields with
//! XChaCha20-Poly1305 under the subject's data key; [`Protected`] is a store that seals
//! what is appended, reveals what is read, and seals snapshots of streams holding
//! personal data under a key of the stream's that is destroyed with the subject's.
//! Payloads stay sealed everywhere else: in the event table, the archive, dead letters,
//! relayed and outboxed copies; a projection sees the clear values through
//! [`Revealing`]. Once a subject is forgotten, readers get each field's replacement
//! (`null` where none is declared) and the header [`FORGOTTEN_HEADER`] naming the
//! fields; a projection rebuilt afterwards holds no personal value.
//!
//! ```
//! use std::sync::Arc;
//! use flext::application::{DataProtection, MasterKey, Protected};
//! use flext::memory::InMemoryEventStore;
//! use flext::ports::{EventStore, ReadDirection};
//! use flext::{DomainEvent, EventId, ExpectedVersion, NewEvent, StreamId, StreamVersion};
//!
//! #[derive(serde::Serialize, serde::Deserialize, DomainEvent)]
//! #[event(name = "customer.registered")]
//! struct Registered {
//!     #[personal(subject)]
//!     customer: String,
//!     #[personal(replacement = "[erased]")]
//!     email: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flext::Error> {
//! let store = InMemoryEventStore::new();
//! let protection = Arc::new(
//!     DataProtection::new(store.clone(), MasterKey::from_bytes([7; 32])).protect::<Registered>()?,
//! );
//! let protected = Protected::new(store.clone(), protection.clone());
//! let stream = StreamId::new("customer-c1")?;
//! let payload = serde_json::to_vec(&Registered { customer: "c1".into(), email: "ada@example.com".into() })?;
//! let event = NewEvent::new(EventId::new(), "customer.registered", payload);
//! protected.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//!
//! // Stored sealed; read back in clear through the protected store.
//! let stored = store.read_stream(&stream, StreamVersion(1), 1, ReadDirection::Forward).await?;
//! assert!(!String::from_utf8_lossy(&stored[0].payload).contains("ada@example.com"));
//! let read = protected.read_stream(&stream, StreamVersion(1), 1, ReadDirection::Forward).await?;
//! assert!(String::from_utf8_lossy(&read[0].payload).contains("ada@example.com"));
//!
//! protection.forget("c1").await?;
//! let read = protected.read_stream(&stream, StreamVersion(1), 1, ReadDirection::Forward).await?;
//! assert!(String::from_utf8_lossy(&read[0].payload).contains("[erased]"));
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use flext_domain::{
    CorrelationId, DomainEvent, Error, EventId, EventRef, ExpectedVersion, NewEvent, PersonalData,
    Position, RecordedEvent, StreamId, StreamVersion,
};
use flext_ports::{
    AppendOutcome, EventStore, FilteredPage, KeyStore, Projection, ReadDirection, Snapshot,
    SnapshotStore,
};
use serde_json::Value;

/// The header a revealed event carries when fields were replaced because their subject
/// was forgotten: the fields' paths, comma-separated.
pub const FORGOTTEN_HEADER: &str = "flext-forgotten";

/// The reason of the error a sealed value gives that cannot be opened with its key (a
/// wrong master key, or bytes changed behind the store's back).
pub const SEALED_DATA_UNREADABLE: &str = "SEALED_DATA_UNREADABLE";

const FIELD_PREFIX: &str = "flext:sealed:v1:";
const SNAPSHOT_PREFIX: &[u8] = b"flext:sealed-snapshot:v1\0";
const NONCE_LEN: usize = 24;

/// The key that wraps every data key. Keep it out of the database (a secret store, an
/// environment variable): whoever holds it and the database can read every subject not
/// yet forgotten.
#[derive(Clone)]
pub struct MasterKey(XChaCha20Poly1305);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(XChaCha20Poly1305::new(&bytes.into()))
    }

    /// A master key from 64 hexadecimal digits (`INVALID_ARGUMENT`/`INVALID_MASTER_KEY`
    /// otherwise, without echoing the text).
    pub fn from_hex(hex: &str) -> Result<MasterKey, Error> {
        let bad = || {
            Error::invalid_argument(
                "INVALID_MASTER_KEY",
                "a master key is 64 hexadecimal digits (32 bytes)",
            )
        };
        let hex = hex.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(MasterKey::from_bytes(bytes))
    }
}

/// Seals and reveals personal data of the event types it protects, with data keys kept
/// (wrapped) in `K`.
pub struct DataProtection<K> {
    keys: K,
    master: MasterKey,
    specs: HashMap<&'static str, PersonalData>,
    /// (subject, stream) pairs already linked by this process.
    linked: Mutex<HashSet<(String, String)>>,
}

impl<K> std::fmt::Debug for DataProtection<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataProtection")
            .field("event_types", &self.specs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn subject_key(subject: &str) -> String {
    format!("subject:{subject}")
}

fn stream_key(stream: &str) -> String {
    format!("stream:{stream}")
}

fn unreadable(what: impl std::fmt::Display) -> Error {
    Error::data_loss(
        SEALED_DATA_UNREADABLE,
        format!("{what} cannot be opened with its key (a wrong master key, or changed bytes)"),
    )
}

/// A nonce from its 24 bytes.
fn nonce_of(bytes: &[u8]) -> Option<XNonce> {
    <[u8; NONCE_LEN]>::try_from(bytes).ok().map(XNonce::from)
}

/// The value at a dotted `path` of `v`.
fn at_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.').try_fold(v, |v, key| v.get_mut(key))
}

/// A nonce for one field of one event: the event id and a hash of the path. Deterministic,
/// so an exact retry of an append seals to the same bytes and is recognised as one; a
/// (key, nonce) pair is only ever used again for the same event id and field, which the
/// store refuses to hold twice.
fn field_nonce(event: EventId, path: &str) -> XNonce {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..16].copy_from_slice(event.as_uuid().as_bytes());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    nonce[16..].copy_from_slice(&h.to_be_bytes());
    nonce.into()
}

impl<K: KeyStore> DataProtection<K> {
    /// Protection with data keys kept in `keys`, wrapped by `master`; no event type yet.
    pub fn new(keys: K, master: MasterKey) -> DataProtection<K> {
        DataProtection {
            keys,
            master,
            specs: HashMap::new(),
            linked: Mutex::new(HashSet::new()),
        }
    }

    /// Protects the personal data `E` declares ([`DomainEvent::personal_data`]).
    /// `INVALID_ARGUMENT`/`INVALID_REPLACEMENT` when a declared replacement is not JSON.
    pub fn protect<E: DomainEvent>(mut self) -> Result<DataProtection<K>, Error> {
        for spec in E::personal_data() {
            for field in spec.fields {
                if let Some(json) = field.replacement
                    && serde_json::from_str::<Value>(json).is_err()
                {
                    return Err(Error::invalid_argument(
                        "INVALID_REPLACEMENT",
                        format!(
                            "the replacement of {:?} in {:?} is not JSON: {json}",
                            field.path, spec.event_type
                        ),
                    )
                    .with_detail("event_type", spec.event_type)
                    .with_detail("field", field.path));
                }
            }
            self.specs.insert(spec.event_type, *spec);
        }
        Ok(self)
    }

    /// The key store.
    pub fn keys(&self) -> &K {
        &self.keys
    }

    /// Whether events of `event_type` have personal fields here.
    pub fn protects(&self, event_type: &str) -> bool {
        self.specs.contains_key(event_type)
    }

    /// The data key named `name`, unwrapped; `None` when it does not exist.
    async fn key(&self, name: &str) -> Result<Option<XChaCha20Poly1305>, Error> {
        let Some(wrapped) = self.keys.data_key(name).await? else {
            return Ok(None);
        };
        self.unwrap_key(name, &wrapped).map(Some)
    }

    fn unwrap_key(&self, name: &str, wrapped: &[u8]) -> Result<XChaCha20Poly1305, Error> {
        if wrapped.len() < NONCE_LEN {
            return Err(unreadable(format_args!("the data key {name:?}")));
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce =
            nonce_of(nonce).ok_or_else(|| unreadable(format_args!("the data key {name:?}")))?;
        let key = self
            .master
            .0
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| unreadable(format_args!("the data key {name:?}")))?;
        XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| unreadable(format_args!("the data key {name:?}")))
    }

    /// The data key named `name`, created if it does not exist.
    async fn key_or_create(&self, name: &str) -> Result<XChaCha20Poly1305, Error> {
        if let Some(key) = self.key(name).await? {
            return Ok(key);
        }
        let fresh = XChaCha20Poly1305::generate_key(&mut OsRng);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .master
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: &fresh[..],
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| Error::internal("SEALING_FAILED", "wrapping a data key failed"))?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        let stored = self.keys.create_data_key(name, wrapped).await?;
        self.unwrap_key(name, &stored)
    }

    /// Destroys `subject`'s data key and the snapshot keys of the streams holding its
    /// data: from now on its personal fields read as their replacements, and those
    /// streams' snapshots are ignored (rebuilt from the events). Returns whether the
    /// subject had a key.
    pub async fn forget(&self, subject: &str) -> Result<bool, Error> {
        let n = self.keys.forget_data_key(&subject_key(subject)).await?;
        if let Ok(mut linked) = self.linked.lock() {
            linked.retain(|(s, _)| s != subject);
        }
        Ok(n > 0)
    }

    /// The subject of a payload of `spec`'s type.
    fn subject_of(spec: &PersonalData, payload: &mut Value) -> Result<String, Error> {
        match at_mut(payload, spec.subject) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(Error::invalid_argument(
                "PERSONAL_SUBJECT_MISSING",
                format!(
                    "an event {:?} with personal fields needs its subject at {:?} (a non-empty \
                     string or a number)",
                    spec.event_type, spec.subject
                ),
            )
            .with_detail("event_type", spec.event_type)
            .with_detail("field", spec.subject)),
        }
    }

    /// Seals the personal fields of `events` bound for `stream`; events of types without
    /// personal data pass unchanged.
    pub async fn seal(
        &self,
        stream: &StreamId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, Error> {
        let mut keys: HashMap<String, XChaCha20Poly1305> = HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        for mut e in events {
            let Some(spec) = self.specs.get(e.event_type.as_str()) else {
                out.push(e);
                continue;
            };
            let mut payload: Value = serde_json::from_slice(&e.payload).map_err(|err| {
                Error::invalid_argument(
                    "PERSONAL_PAYLOAD_NOT_JSON",
                    format!(
                        "an event {:?} with personal fields must be JSON: {err}",
                        e.event_type
                    ),
                )
                .with_detail("event_type", e.event_type.clone())
            })?;
            let subject = Self::subject_of(spec, &mut payload)?;
            let key = match keys.get(&subject) {
                Some(k) => k.clone(),
                None => {
                    let k = self.key_or_create(&subject_key(&subject)).await?;
                    self.link_stream(&subject, stream).await?;
                    keys.insert(subject.clone(), k.clone());
                    k
                }
            };
            for field in spec.fields {
                let Some(value) = at_mut(&mut payload, field.path) else {
                    continue;
                };
                if value.as_str().is_some_and(|s| s.starts_with(FIELD_PREFIX)) {
                    continue;
                }
                let clear = serde_json::to_vec(value)
                    .map_err(|err| Error::internal("SEALING_FAILED", err.to_string()))?;
                let aad = format!("{}\0{}\0{}", spec.event_type, field.path, subject);
                let nonce = field_nonce(e.event_id, field.path);
                let sealed = key
                    .encrypt(
                        &nonce,
                        Payload {
                            msg: &clear,
                            aad: aad.as_bytes(),
                        },
                    )
                    .map_err(|_| Error::internal("SEALING_FAILED", "sealing a field failed"))?;
                *value = Value::String(format!("{FIELD_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed)));
            }
            e.payload = Bytes::from(
                serde_json::to_vec(&payload)
                    .map_err(|err| Error::internal("SEALING_FAILED", err.to_string()))?,
            );
            out.push(e);
        }
        Ok(out)
    }

    /// Makes sure `stream` has a snapshot key destroyed with `subject`'s.
    async fn link_stream(&self, subject: &str, stream: &StreamId) -> Result<(), Error> {
        let pair = (subject.to_owned(), stream.as_str().to_owned());
        if self.linked.lock().is_ok_and(|l| l.contains(&pair)) {
            return Ok(());
        }
        let name = stream_key(stream.as_str());
        self.key_or_create(&name).await?;
        self.keys
            .link_data_key(&subject_key(subject), &name)
            .await?;
        if let Ok(mut linked) = self.linked.lock() {
            linked.insert(pair);
        }
        Ok(())
    }

    /// The clear payload of a stored event: sealed fields opened, or replaced when their
    /// subject was forgotten (with the fields' paths). Unchanged when the type has no
    /// personal data.
    async fn reveal_payload(
        &self,
        event_type: &str,
        event_id: EventId,
        payload: &Bytes,
        keys: &mut HashMap<String, Option<XChaCha20Poly1305>>,
    ) -> Result<Option<(Bytes, Vec<&'static str>)>, Error> {
        let Some(spec) = self.specs.get(event_type) else {
            return Ok(None);
        };
        let Ok(mut value) = serde_json::from_slice::<Value>(payload) else {
            // Not JSON: nothing of ours is sealed in it; the codec reports it.
            return Ok(None);
        };
        let Ok(subject) = Self::subject_of(spec, &mut value) else {
            return Ok(None);
        };
        let key = match keys.get(&subject) {
            Some(k) => k.clone(),
            None => {
                let k = self.key(&subject_key(&subject)).await?;
                keys.insert(subject.clone(), k.clone());
                k
            }
        };
        let mut forgotten = Vec::new();
        let mut changed = false;
        for field in spec.fields {
            let Some(slot) = at_mut(&mut value, field.path) else {
                continue;
            };
            let Some(sealed) = slot.as_str().and_then(|s| s.strip_prefix(FIELD_PREFIX)) else {
                continue;
            };
            changed = true;
            let what = || format!("field {:?} of event {event_id}", field.path);
            match &key {
                Some(key) => {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(sealed)
                        .map_err(|_| unreadable(what()))?;
                    let aad = format!("{}\0{}\0{}", spec.event_type, field.path, subject);
                    let clear = key
                        .decrypt(
                            &field_nonce(event_id, field.path),
                            Payload {
                                msg: &bytes,
                                aad: aad.as_bytes(),
                            },
                        )
                        .map_err(|_| unreadable(what()))?;
                    *slot = serde_json::from_slice(&clear).map_err(|_| unreadable(what()))?;
                }
                None => {
                    *slot = match field.replacement {
                        Some(json) => serde_json::from_str(json).unwrap_or(Value::Null),
                        None => Value::Null,
                    };
                    forgotten.push(field.path);
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        let bytes = serde_json::to_vec(&value)
            .map_err(|err| Error::internal("REVEALING_FAILED", err.to_string()))?;
        Ok(Some((Bytes::from(bytes), forgotten)))
    }

    /// `events` with their personal fields revealed.
    pub async fn reveal(
        &self,
        mut events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let mut keys = HashMap::new();
        for e in &mut events {
            self.reveal_one(e, &mut keys).await?;
        }
        Ok(events)
    }

    async fn reveal_one(
        &self,
        e: &mut RecordedEvent,
        keys: &mut HashMap<String, Option<XChaCha20Poly1305>>,
    ) -> Result<(), Error> {
        if let Some((payload, forgotten)) = self
            .reveal_payload(&e.event_type, e.event_id, &e.payload, keys)
            .await?
        {
            e.payload = payload;
            if !forgotten.is_empty() {
                e.metadata
                    .headers
                    .insert(FORGOTTEN_HEADER.to_owned(), forgotten.join(","));
            }
        }
        Ok(())
    }

    /// A snapshot's state sealed under its stream's key, when the stream holds personal
    /// data; unchanged otherwise.
    pub async fn seal_snapshot(&self, mut snapshot: Snapshot) -> Result<Snapshot, Error> {
        let Some(key) = self.key(&stream_key(snapshot.stream_id.as_str())).await? else {
            return Ok(snapshot);
        };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = key
            .encrypt(
                &nonce,
                Payload {
                    msg: &snapshot.state,
                    aad: snapshot.stream_id.as_str().as_bytes(),
                },
            )
            .map_err(|_| Error::internal("SEALING_FAILED", "sealing a snapshot failed"))?;
        let mut state = SNAPSHOT_PREFIX.to_vec();
        state.extend_from_slice(&nonce);
        state.extend_from_slice(&sealed);
        snapshot.state = Bytes::from(state);
        Ok(snapshot)
    }

    /// A snapshot opened; `None` when its stream's key was destroyed (its subject was
    /// forgotten): load from the events instead.
    pub async fn open_snapshot(&self, mut snapshot: Snapshot) -> Result<Option<Snapshot>, Error> {
        let Some(rest) = snapshot.state.strip_prefix(SNAPSHOT_PREFIX) else {
            return Ok(Some(snapshot));
        };
        let what = || format!("the snapshot of stream {:?}", snapshot.stream_id.as_str());
        if rest.len() < NONCE_LEN {
            return Err(unreadable(what()));
        }
        let Some(key) = self.key(&stream_key(snapshot.stream_id.as_str())).await? else {
            return Ok(None);
        };
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = nonce_of(nonce).ok_or_else(|| unreadable(what()))?;
        let clear = key
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: snapshot.stream_id.as_str().as_bytes(),
                },
            )
            .map_err(|_| unreadable(what()))?;
        snapshot.state = Bytes::from(clear);
        Ok(Some(snapshot))
    }
}

/// A store that seals personal fields on append, reveals them on every read, and seals
/// the snapshots of streams holding personal data. Give it to the repository; everything
/// stored through it (and everything that copies stored events: dead letters, the relay,
/// the archive) holds sealed values only.
///
/// Appends inside a store's own transaction (`PgWriteTransaction::append`, process
/// managers) and conditional appends do not pass through it: seal their events with
/// [`DataProtection::seal`] first.
pub struct Protected<S, K> {
    inner: S,
    protection: Arc<DataProtection<K>>,
}

impl<S: Clone, K> Clone for Protected<S, K> {
    fn clone(&self) -> Self {
        Protected {
            inner: self.inner.clone(),
            protection: self.protection.clone(),
        }
    }
}

impl<S, K> std::fmt::Debug for Protected<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protected").finish_non_exhaustive()
    }
}

impl<S, K> Protected<S, K> {
    /// `inner` behind `protection`.
    pub fn new(inner: S, protection: Arc<DataProtection<K>>) -> Protected<S, K> {
        Protected { inner, protection }
    }

    /// The store beneath (sealed values only).
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: EventStore, K: KeyStore + 'static> EventStore for Protected<S, K> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        let sealed = self.protection.seal(stream, events).await?;
        self.inner.append(stream, expected, sealed).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        direction: ReadDirection,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let events = self
            .inner
            .read_stream(stream, from, max_count, direction)
            .await?;
        self.protection.reveal(events).await
    }

    async fn read_all(
        &self,
        after: Position,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let events = self.inner.read_all(after, max_count).await?;
        self.protection.reveal(events).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, Error> {
        self.inner.stream_version(stream).await
    }

    /// Reads the events (with their ids: a sealed field's nonce needs it), reveals them,
    /// then feeds them.
    async fn replay_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        mut apply: F,
    ) -> Result<usize, Error>
    where
        F: FnMut(EventRef<'_>) -> Result<(), Error> + Send,
    {
        let events = self
            .read_stream(stream, from, max_count, ReadDirection::Forward)
            .await?;
        for e in &events {
            apply(e.as_event_ref())?;
        }
        Ok(events.len())
    }

    async fn read_all_withheld(&self, after: Position) -> Result<bool, Error> {
        self.inner.read_all_withheld(after).await
    }

    async fn read_all_of_types(
        &self,
        after: Position,
        max_count: usize,
        types: &[&str],
    ) -> Result<FilteredPage, Error> {
        let page = self
            .inner
            .read_all_of_types(after, max_count, types)
            .await?;
        Ok(FilteredPage {
            events: self.protection.reveal(page.events).await?,
            through: page.through,
        })
    }

    async fn read_correlated(
        &self,
        correlation: CorrelationId,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let events = self.inner.read_correlated(correlation, max_count).await?;
        self.protection.reveal(events).await
    }

    async fn count_after(&self, after: Position) -> Result<u64, Error> {
        self.inner.count_after(after).await
    }
}

impl<S: SnapshotStore, K: KeyStore + 'static> SnapshotStore for Protected<S, K> {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        let sealed = self.protection.seal_snapshot(snapshot).await?;
        self.inner.save_snapshot(sealed).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, Error> {
        match self.inner.load_snapshot(stream).await? {
            Some(s) => self.protection.open_snapshot(s).await,
            None => Ok(None),
        }
    }
}

/// A projection that sees events with their personal fields revealed (or replaced, once
/// forgotten) while the runner keeps the sealed event: a parked dead letter holds sealed
/// values only. Rebuild the projection after a `forget` and its read model holds no
/// personal value.
pub struct Revealing<P, K> {
    inner: P,
    protection: Arc<DataProtection<K>>,
}

impl<P, K> std::fmt::Debug for Revealing<P, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revealing").finish_non_exhaustive()
    }
}

impl<P, K> Revealing<P, K> {
    /// `inner`, handed revealed events.
    pub fn new(inner: P, protection: Arc<DataProtection<K>>) -> Revealing<P, K> {
        Revealing { inner, protection }
    }
}

impl<T: Send, P: Projection<T>, K: KeyStore + 'static> Projection<T> for Revealing<P, K> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, tx: &mut T, event: &RecordedEvent) -> Result<(), Error> {
        if !self.protection.protects(&event.event_type) {
            return self.inner.handle(tx, event).await;
        }
        let mut revealed = event.clone();
        self.protection
            .reveal_one(&mut revealed, &mut HashMap::new())
            .await?;
        self.inner.handle(tx, &revealed).await
    }

    async fn reset(&self, tx: &mut T) -> Result<(), Error> {
        self.inner.reset(tx).await
    }

    async fn setup(&self, tx: &mut T) -> Result<(), Error> {
        self.inner.setup(tx).await
    }

    fn migrations(&self) -> &[&str] {
        self.inner.migrations()
    }

    fn event_types(&self) -> Option<&[&str]> {
        self.inner.event_types()
    }
}
