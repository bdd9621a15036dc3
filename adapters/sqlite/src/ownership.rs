//! Leases and fenced checkpoints on SQLite, shared by every process that opens the file.
//!
//! A consumer's row in `flext_checkpoints` is its checkpoint and its lease. Every write
//! goes through the store's one writer, and SQLite lets one writer at a time hold the
//! file, so an acquisition and a fenced checkpoint write never interleave. Times are
//! microseconds from the store's clock: every process of one file runs on one machine.
//!
//! A process stopped (SIGSTOP) inside a batch keeps the file's write lock: no process can
//! write, take over included, until it resumes or dies. When it resumes after its lease
//! expired, the fence refuses its commit (`OWNERSHIP_LOST`), and a peer takes over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::{Error, Position};
use flext_ports::adapter::{ownership_lost, refused_checkpoint};
use flext_ports::{AppendWatcher, ConsumerRecord, Instance, Lease, Member, OwnershipStore};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use crate::store::{SqliteEventStore, db_error, to_i64};

fn micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2)
}

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// The fenced checkpoint write on `conn` (inside the caller's transaction or alone).
pub(crate) async fn fenced_on(
    conn: &mut SqliteConnection,
    lease: &Lease,
    position: Position,
    rewind: bool,
    now: i64,
) -> Result<(), Error> {
    let done = sqlx::query(
        "UPDATE flext_checkpoints SET position = ?1, \
         moved_at = CASE WHEN position <> ?1 THEN ?5 ELSE moved_at END \
         WHERE name = ?2 AND owner_id = ?3 AND epoch = ?4 AND expires_at > ?5 \
         AND (?6 OR position <= ?1)",
    )
    .bind(to_i64(position.get()))
    .bind(&lease.consumer)
    .bind(lease.owner)
    .bind(to_i64(lease.epoch))
    .bind(now)
    .bind(rewind)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("writing a fenced checkpoint", e))?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    let row = sqlx::query(
        "SELECT epoch, owner_id, coalesce(expires_at > ?2, 0), position \
         FROM flext_checkpoints WHERE name = ?1",
    )
    .bind(&lease.consumer)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error("reading a consumer's lease", e))?;
    let row = row.map(|r| {
        (
            r.try_get::<i64, _>(0).unwrap_or(0).max(0) as u64,
            r.try_get::<Option<Uuid>, _>(1).unwrap_or(None),
            r.try_get::<bool, _>(2).unwrap_or(false),
            Position(r.try_get::<i64, _>(3).unwrap_or(0).max(0) as u64),
        )
    });
    Err(refused_checkpoint(lease, row, position))
}

fn record(row: &SqliteRow, now: i64) -> Result<ConsumerRecord, Error> {
    let bad = |e: sqlx::Error| {
        Error::data_loss(
            "CORRUPTED_CONSUMER",
            format!("a consumer's record cannot be read: {e}"),
        )
    };
    let owner_id: Option<Uuid> = row.try_get(3).map_err(bad)?;
    let owner = match owner_id {
        Some(id) => Some(Instance {
            id,
            name: row
                .try_get::<Option<String>, _>(4)
                .map_err(bad)?
                .unwrap_or_default(),
            host: row
                .try_get::<Option<String>, _>(5)
                .map_err(bad)?
                .unwrap_or_default(),
            pid: u32::try_from(row.try_get::<Option<i64>, _>(6).map_err(bad)?.unwrap_or(0))
                .unwrap_or(0),
        }),
        None => None,
    };
    let expires: Option<i64> = row.try_get(8).map_err(bad)?;
    Ok(ConsumerRecord {
        consumer: row.try_get(0).map_err(bad)?,
        position: Position(row.try_get::<i64, _>(1).map_err(bad)?.max(0) as u64),
        epoch: row.try_get::<i64, _>(2).map_err(bad)?.max(0) as u64,
        owned: owner.is_some() && expires.is_some_and(|t| t > now),
        owner,
        acquired_at: row.try_get::<Option<i64>, _>(7).map_err(bad)?.map(time),
        expires_at: expires.map(time),
    })
}

impl OwnershipStore for SqliteEventStore {
    async fn acquire_lease(
        &self,
        consumer: &str,
        owner: &Instance,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        let now = self.clock.now().timestamp_micros();
        let expires = now.saturating_add(micros(ttl));
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let epoch: Option<i64> = sqlx::query_scalar(
            "INSERT INTO flext_checkpoints (name, position, epoch, owner_id, owner_name, \
             owner_host, owner_pid, acquired_at, expires_at) \
             VALUES (?1, 0, 1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (name) DO UPDATE SET epoch = flext_checkpoints.epoch + 1, \
             owner_id = excluded.owner_id, owner_name = excluded.owner_name, \
             owner_host = excluded.owner_host, owner_pid = excluded.owner_pid, \
             acquired_at = excluded.acquired_at, expires_at = excluded.expires_at \
             WHERE flext_checkpoints.owner_id IS NULL OR flext_checkpoints.expires_at IS NULL \
             OR flext_checkpoints.expires_at <= ?6 \
             RETURNING epoch",
        )
        .bind(consumer)
        .bind(owner.id)
        .bind(&owner.name)
        .bind(&owner.host)
        .bind(i64::from(owner.pid))
        .bind(now)
        .bind(expires)
        .fetch_optional(&mut writer.conn)
        .await
        .map_err(|e| db_error("acquiring a consumer", e))?;
        Ok(epoch.map(|epoch| Lease {
            consumer: consumer.to_owned(),
            owner: owner.id,
            epoch: epoch.max(0) as u64,
            expires_at: time(expires),
        }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, Error> {
        let now = self.clock.now().timestamp_micros();
        let expires = now.saturating_add(micros(ttl));
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let done = sqlx::query(
            "UPDATE flext_checkpoints SET expires_at = ?1 \
             WHERE name = ?2 AND owner_id = ?3 AND epoch = ?4 AND expires_at > ?5",
        )
        .bind(expires)
        .bind(&lease.consumer)
        .bind(lease.owner)
        .bind(to_i64(lease.epoch))
        .bind(now)
        .execute(&mut writer.conn)
        .await
        .map_err(|e| db_error("renewing a lease", e))?;
        if done.rows_affected() == 1 {
            return Ok(Lease {
                expires_at: time(expires),
                ..lease.clone()
            });
        }
        let current: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM flext_checkpoints WHERE name = ?")
                .bind(&lease.consumer)
                .fetch_optional(&mut writer.conn)
                .await
                .map_err(|e| db_error("reading a consumer's lease", e))?;
        Err(ownership_lost(
            lease,
            current.map(|e| e.max(0) as u64),
            "the lease expired or was taken",
        ))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), Error> {
        let now = self.clock.now().timestamp_micros();
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query(
            "UPDATE flext_checkpoints SET owner_id = NULL, owner_name = NULL, owner_host = NULL, \
             owner_pid = NULL, expires_at = ?1 WHERE name = ?2 AND owner_id = ?3 AND epoch = ?4",
        )
        .bind(now)
        .bind(&lease.consumer)
        .bind(lease.owner)
        .bind(to_i64(lease.epoch))
        .execute(&mut writer.conn)
        .await
        .map_err(|e| db_error("releasing a lease", e))?;
        drop(writer);
        self.consumers_changed.pulse();
        Ok(())
    }

    async fn save_checkpoint_fenced(&self, lease: &Lease, position: Position) -> Result<(), Error> {
        let now = self.clock.now().timestamp_micros();
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        fenced_on(&mut writer.conn, lease, position, false, now).await?;
        drop(writer);
        self.consumers_changed.pulse();
        Ok(())
    }

    async fn consumers(&self) -> Result<Vec<ConsumerRecord>, Error> {
        let now = self.clock.now().timestamp_micros();
        let rows = sqlx::query(
            "SELECT name, position, epoch, owner_id, owner_name, owner_host, owner_pid, \
             acquired_at, expires_at FROM flext_checkpoints ORDER BY name",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(|e| db_error("listing consumers", e))?;
        rows.iter().map(|r| record(r, now)).collect()
    }

    async fn announce(&self, instance: &Instance, ttl: Duration) -> Result<Vec<Member>, Error> {
        let now = self.clock.now().timestamp_micros();
        {
            let mut writer = self.writer.lock().await;
            writer.settle().await?;
            sqlx::query(
                "INSERT INTO flext_instances (id, name, host, pid, started_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
            )
            .bind(instance.id)
            .bind(&instance.name)
            .bind(&instance.host)
            .bind(i64::from(instance.pid))
            .bind(now)
            .bind(now.saturating_add(micros(ttl)))
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("announcing an instance", e))?;
        }
        let rows = sqlx::query(
            "SELECT id, name, host, pid, started_at, expires_at FROM flext_instances \
             WHERE expires_at > ? ORDER BY started_at, id",
        )
        .bind(now)
        .fetch_all(&self.readers)
        .await
        .map_err(|e| db_error("listing instances", e))?;
        rows.iter()
            .map(|r| {
                let bad = |e: sqlx::Error| {
                    Error::data_loss(
                        "CORRUPTED_INSTANCE",
                        format!("an instance's record cannot be read: {e}"),
                    )
                };
                Ok(Member {
                    instance: Instance {
                        id: r.try_get(0).map_err(bad)?,
                        name: r.try_get(1).map_err(bad)?,
                        host: r.try_get(2).map_err(bad)?,
                        pid: u32::try_from(r.try_get::<i64, _>(3).map_err(bad)?).unwrap_or(0),
                    },
                    started_at: time(r.try_get(4).map_err(bad)?),
                    expires_at: time(r.try_get(5).map_err(bad)?),
                })
            })
            .collect()
    }

    async fn leave(&self, instance: &Instance) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query("DELETE FROM flext_instances WHERE id = ?")
            .bind(instance.id)
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("withdrawing an instance", e))?;
        Ok(())
    }

    async fn clock_now(&self) -> Result<DateTime<Utc>, Error> {
        Ok(self.clock.now())
    }

    fn watch_consumers(&self) -> AppendWatcher {
        self.consumers_changed.watcher()
    }
}
