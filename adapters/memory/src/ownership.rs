//! Leases and fenced checkpoints in memory: ownership among the runners of one process.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::{Error, Position};
use flext_ports::adapter::{chrono_ttl, refused_checkpoint};
use flext_ports::{AppendWatcher, ConsumerRecord, Instance, Lease, Member, OwnershipStore};

use crate::store::{InMemoryEventStore, State};

/// A consumer's checkpoint and lease.
#[derive(Debug, Default, Clone)]
pub(crate) struct Consumer {
    pub(crate) position: Position,
    epoch: u64,
    owner: Option<Instance>,
    acquired_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

impl Consumer {
    pub(crate) fn held(&self, now: DateTime<Utc>) -> bool {
        self.owner.is_some() && self.expires_at.is_some_and(|t| t > now)
    }

    fn current(&self, lease: &Lease, now: DateTime<Utc>) -> bool {
        self.held(now)
            && self.epoch == lease.epoch
            && self.owner.as_ref().map(|o| o.id) == Some(lease.owner)
    }
}

/// Whether a checkpoint write under `lease` may land; the error that refuses it otherwise.
pub(crate) fn check_fence(
    state: &State,
    lease: &Lease,
    position: Position,
    rewind: bool,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let row = state.consumers.get(&lease.consumer);
    let ok = row.is_some_and(|c| c.current(lease, now) && (rewind || c.position <= position));
    if ok {
        return Ok(());
    }
    Err(refused_checkpoint(
        lease,
        row.map(|c| {
            (
                c.epoch,
                c.owner.as_ref().map(|o| o.id),
                c.held(now),
                c.position,
            )
        }),
        position,
    ))
}

impl OwnershipStore for InMemoryEventStore {
    async fn acquire_lease(
        &self,
        consumer: &str,
        owner: &Instance,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        let now = self.clock.now();
        let mut state = self.lock();
        let c = state.consumers.entry(consumer.to_owned()).or_default();
        if c.held(now) {
            return Ok(None);
        }
        c.epoch += 1;
        c.owner = Some(owner.clone());
        c.acquired_at = Some(now);
        c.expires_at = Some(now + chrono_ttl(ttl));
        Ok(Some(Lease {
            consumer: consumer.to_owned(),
            owner: owner.id,
            epoch: c.epoch,
            expires_at: now + chrono_ttl(ttl),
        }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, Error> {
        let now = self.clock.now();
        let mut state = self.lock();
        match state.consumers.get_mut(&lease.consumer) {
            Some(c) if c.current(lease, now) => {
                let expires_at = now + chrono_ttl(ttl);
                c.expires_at = Some(expires_at);
                Ok(Lease {
                    expires_at,
                    ..lease.clone()
                })
            }
            other => Err(flext_ports::adapter::ownership_lost(
                lease,
                other.map(|c| c.epoch),
                "the lease expired or was taken",
            )),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), Error> {
        let now = self.clock.now();
        {
            let mut state = self.lock();
            if let Some(c) = state.consumers.get_mut(&lease.consumer)
                && c.current(lease, now)
            {
                c.owner = None;
                c.expires_at = Some(now);
            }
        }
        self.consumers_changed.pulse();
        Ok(())
    }

    async fn save_checkpoint_fenced(&self, lease: &Lease, position: Position) -> Result<(), Error> {
        let now = self.clock.now();
        {
            let mut state = self.lock();
            check_fence(&state, lease, position, false, now)?;
            state
                .consumers
                .entry(lease.consumer.clone())
                .or_default()
                .position = position;
        }
        self.consumers_changed.pulse();
        Ok(())
    }

    async fn consumers(&self) -> Result<Vec<ConsumerRecord>, Error> {
        let now = self.clock.now();
        let state = self.lock();
        let mut out: Vec<ConsumerRecord> = state
            .consumers
            .iter()
            .map(|(name, c)| ConsumerRecord {
                consumer: name.clone(),
                position: c.position,
                epoch: c.epoch,
                owner: c.owner.clone(),
                acquired_at: c.acquired_at,
                expires_at: c.expires_at,
                owned: c.held(now),
            })
            .collect();
        out.sort_by(|a, b| a.consumer.cmp(&b.consumer));
        Ok(out)
    }

    async fn announce(&self, instance: &Instance, ttl: Duration) -> Result<Vec<Member>, Error> {
        let now = self.clock.now();
        let mut state = self.lock();
        let member = state.members.entry(instance.id).or_insert_with(|| Member {
            instance: instance.clone(),
            started_at: now,
            expires_at: now,
        });
        member.expires_at = now + chrono_ttl(ttl);
        let mut live: Vec<Member> = state
            .members
            .values()
            .filter(|m| m.expires_at > now)
            .cloned()
            .collect();
        live.sort_by_key(|m| (m.started_at, m.instance.id));
        Ok(live)
    }

    async fn leave(&self, instance: &Instance) -> Result<(), Error> {
        self.lock().members.remove(&instance.id);
        Ok(())
    }

    async fn clock_now(&self) -> Result<DateTime<Utc>, Error> {
        Ok(self.clock.now())
    }

    fn watch_consumers(&self) -> AppendWatcher {
        self.consumers_changed.watcher()
    }
}
