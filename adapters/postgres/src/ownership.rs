//! Leases and fenced checkpoints on PostgreSQL, judged by the server's clock.
//!
//! A consumer's row in `flext_checkpoints` is its checkpoint and its lease. The fenced
//! checkpoint write is one `UPDATE ... WHERE owner_id = .. AND epoch = .. AND expires_at >
//! clock_timestamp()` inside the batch's transaction; under READ COMMITTED it waits for a
//! concurrent acquisition of the row and re-checks the row it committed, so a former
//! owner's late commit changes nothing. Acquisition locks the row with `SKIP LOCKED`: a
//! row locked by a commit in flight is not waited for (that owner is still current), so a
//! process stopped between its checkpoint write and its commit cannot hang its peers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::{Error, Position};
use flext_ports::adapter::{ownership_lost, refused_checkpoint};
use flext_ports::{AppendWatcher, ConsumerRecord, Instance, Lease, Member, OwnershipStore};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::store::{PgEventStore, db_error, to_i64};

fn micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2)
}

/// The fenced checkpoint write on `conn` (inside the caller's transaction or alone).
pub(crate) async fn fenced_on(
    conn: &mut PgConnection,
    lease: &Lease,
    position: Position,
    rewind: bool,
) -> Result<(), Error> {
    let done = sqlx::query(
        "UPDATE flext_checkpoints SET position = $1, \
         moved_at = CASE WHEN position <> $1 THEN clock_timestamp() ELSE moved_at END \
         WHERE name = $2 AND owner_id = $3 AND epoch = $4 AND expires_at > clock_timestamp() \
         AND ($5 OR position <= $1)",
    )
    .bind(to_i64(position.get()))
    .bind(&lease.consumer)
    .bind(lease.owner)
    .bind(to_i64(lease.epoch))
    .bind(rewind)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("writing a fenced checkpoint", e))?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    let row = sqlx::query(
        "SELECT epoch, owner_id, coalesce(expires_at > clock_timestamp(), false), position \
         FROM flext_checkpoints WHERE name = $1",
    )
    .bind(&lease.consumer)
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

fn record(row: &PgRow) -> Result<ConsumerRecord, Error> {
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
            pid: u32::try_from(row.try_get::<Option<i32>, _>(6).map_err(bad)?.unwrap_or(0))
                .unwrap_or(0),
        }),
        None => None,
    };
    Ok(ConsumerRecord {
        consumer: row.try_get(0).map_err(bad)?,
        position: Position(row.try_get::<i64, _>(1).map_err(bad)?.max(0) as u64),
        epoch: row.try_get::<i64, _>(2).map_err(bad)?.max(0) as u64,
        owner,
        acquired_at: row.try_get(7).map_err(bad)?,
        expires_at: row.try_get(8).map_err(bad)?,
        owned: row.try_get(9).map_err(bad)?,
    })
}

const ACQUIRE_SQL: &str = "\
WITH free AS (
    SELECT name FROM flext_checkpoints
    WHERE name = $1 AND (owner_id IS NULL OR expires_at IS NULL OR expires_at <= clock_timestamp())
    FOR UPDATE SKIP LOCKED
)
UPDATE flext_checkpoints c SET epoch = c.epoch + 1, owner_id = $2, owner_name = $3,
    owner_host = $4, owner_pid = $5, acquired_at = clock_timestamp(),
    expires_at = clock_timestamp() + $6 * interval '1 microsecond'
FROM free WHERE c.name = free.name
RETURNING c.epoch, c.expires_at";

const CREATE_SQL: &str = "\
INSERT INTO flext_checkpoints (name, position, epoch, owner_id, owner_name, owner_host,
    owner_pid, acquired_at, expires_at)
VALUES ($1, 0, 1, $2, $3, $4, $5, clock_timestamp(),
    clock_timestamp() + $6 * interval '1 microsecond')
ON CONFLICT ON CONSTRAINT flext_checkpoints_pkey DO NOTHING
RETURNING epoch, expires_at";

impl OwnershipStore for PgEventStore {
    async fn acquire_lease(
        &self,
        consumer: &str,
        owner: &Instance,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        let pid = i32::try_from(owner.pid).unwrap_or(i32::MAX);
        let acquire = |sql: &'static str| {
            sqlx::query_as::<_, (i64, DateTime<Utc>)>(sql)
                .bind(consumer)
                .bind(owner.id)
                .bind(&owner.name)
                .bind(&owner.host)
                .bind(pid)
                .bind(micros(ttl))
                .fetch_optional(&self.pool)
        };
        let mut row = acquire(ACQUIRE_SQL)
            .await
            .map_err(|e| db_error("acquiring a consumer", e))?;
        if row.is_none() {
            // Create the record only when there is none: an INSERT that meets the row of
            // a commit in flight would wait for it, which the SKIP LOCKED above avoids.
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM flext_checkpoints WHERE name = $1)",
            )
            .bind(consumer)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("looking up a consumer", e))?;
            if !exists {
                row = acquire(CREATE_SQL)
                    .await
                    .map_err(|e| db_error("acquiring a consumer", e))?;
            }
        }
        Ok(row.map(|(epoch, expires_at)| Lease {
            consumer: consumer.to_owned(),
            owner: owner.id,
            epoch: epoch.max(0) as u64,
            expires_at,
        }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, Error> {
        let renewed: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE flext_checkpoints \
             SET expires_at = clock_timestamp() + $1 * interval '1 microsecond' \
             WHERE name = $2 AND owner_id = $3 AND epoch = $4 AND expires_at > clock_timestamp() \
             RETURNING expires_at",
        )
        .bind(micros(ttl))
        .bind(&lease.consumer)
        .bind(lease.owner)
        .bind(to_i64(lease.epoch))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("renewing a lease", e))?;
        if let Some(expires_at) = renewed {
            return Ok(Lease {
                expires_at,
                ..lease.clone()
            });
        }
        let current: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM flext_checkpoints WHERE name = $1")
                .bind(&lease.consumer)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db_error("reading a consumer's lease", e))?;
        Err(ownership_lost(
            lease,
            current.map(|e| e.max(0) as u64),
            "the lease expired or was taken",
        ))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), Error> {
        sqlx::query(
            "UPDATE flext_checkpoints SET owner_id = NULL, owner_name = NULL, owner_host = NULL, \
             owner_pid = NULL, expires_at = clock_timestamp() \
             WHERE name = $1 AND owner_id = $2 AND epoch = $3",
        )
        .bind(&lease.consumer)
        .bind(lease.owner)
        .bind(to_i64(lease.epoch))
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("releasing a lease", e))?;
        self.notifications.consumers_changed();
        Ok(())
    }

    async fn save_checkpoint_fenced(&self, lease: &Lease, position: Position) -> Result<(), Error> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error("acquiring a connection", e))?;
        fenced_on(&mut conn, lease, position, false).await?;
        self.notifications.consumers_changed();
        Ok(())
    }

    async fn consumers(&self) -> Result<Vec<ConsumerRecord>, Error> {
        let rows = sqlx::query(
            "SELECT name, position, epoch, owner_id, owner_name, owner_host, owner_pid, \
             acquired_at, expires_at, \
             (owner_id IS NOT NULL AND coalesce(expires_at > clock_timestamp(), false)) \
             FROM flext_checkpoints ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing consumers", e))?;
        rows.iter().map(record).collect()
    }

    async fn announce(&self, instance: &Instance, ttl: Duration) -> Result<Vec<Member>, Error> {
        let rows = sqlx::query(
            "WITH me AS ( \
                 INSERT INTO flext_instances (id, name, host, pid, started_at, expires_at) \
                 VALUES ($1, $2, $3, $4, clock_timestamp(), \
                         clock_timestamp() + $5 * interval '1 microsecond') \
                 ON CONFLICT ON CONSTRAINT flext_instances_pkey DO UPDATE SET expires_at = excluded.expires_at \
                 RETURNING id, name, host, pid, started_at, expires_at) \
             SELECT id, name, host, pid, started_at, expires_at FROM me \
             UNION ALL \
             SELECT id, name, host, pid, started_at, expires_at FROM flext_instances \
             WHERE expires_at > clock_timestamp() AND id <> $1",
        )
        .bind(instance.id)
        .bind(&instance.name)
        .bind(&instance.host)
        .bind(i32::try_from(instance.pid).unwrap_or(i32::MAX))
        .bind(micros(ttl))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("announcing an instance", e))?;
        let mut members = rows
            .iter()
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
                        pid: u32::try_from(r.try_get::<i32, _>(3).map_err(bad)?).unwrap_or(0),
                    },
                    started_at: r.try_get(4).map_err(bad)?,
                    expires_at: r.try_get(5).map_err(bad)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        members.sort_by_key(|m| (m.started_at, m.instance.id));
        Ok(members)
    }

    async fn leave(&self, instance: &Instance) -> Result<(), Error> {
        sqlx::query("DELETE FROM flext_instances WHERE id = $1")
            .bind(instance.id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("withdrawing an instance", e))?;
        self.notifications.consumers_changed();
        Ok(())
    }

    async fn clock_now(&self) -> Result<DateTime<Utc>, Error> {
        sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("reading the server's clock", e))
    }

    fn watch_consumers(&self) -> AppendWatcher {
        self.notifications.watch_consumers()
    }
}
