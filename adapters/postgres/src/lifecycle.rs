//! Stream lifecycle on PostgreSQL (ADR 0007).
//!
//! Every operation runs in one transaction that first locks `flext_events` in
//! `SHARE ROW EXCLUSIVE` mode. That lock waits for every transaction that appended and
//! has not ended, and holds back every append until the operation commits; an append
//! that waited takes its statement snapshot after the lock is granted (in READ COMMITTED
//! the executor's snapshot is taken after the statement's locks), so it sees the
//! operation's result. Appends themselves take no lock of their own: they probe the
//! stream's `flext_streams` row inside their one statement.

use flext_domain::{Error, ExpectedVersion, StreamId, StreamVersion};
use flext_ports::lifecycle::{StoredLife, check_delete, stream_deleted};
use flext_ports::{RetentionPolicy, StreamInfo, StreamLifecycle};
use sqlx::{PgConnection, Row};

use crate::store::{PgEventStore, PgWriteTransaction, db_error, to_i64};

/// Reads the stream's life on `conn`.
pub(crate) async fn load(conn: &mut PgConnection, stream: &StreamId) -> Result<StoredLife, Error> {
    let row = sqlx::query(
        "SELECT greatest(coalesce((SELECT max(version) FROM flext_events WHERE stream_id = $1), 0), \
                         coalesce((SELECT max(version) FROM flext_archive WHERE stream_id = $1), 0)), \
                coalesce(s.state, 0), coalesce(s.version, 0), coalesce(s.life_start, 1), \
                coalesce(s.truncated_before, 1), coalesce(s.archived_below, 1), \
                s.max_count, s.max_age_ms, coalesce(s.archive_expired, false) \
         FROM (SELECT 1) one LEFT JOIN flext_streams s ON s.stream_id = $1",
    )
    .bind(stream.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error("reading a stream's lifecycle", e))?;
    let bad = |e: sqlx::Error| db_error("reading a stream's lifecycle", e);
    Ok(StoredLife {
        stored_version: row.try_get(0).map_err(bad)?,
        state: i64::from(row.try_get::<i32, _>(1).map_err(bad)?),
        version: row.try_get(2).map_err(bad)?,
        life_start: row.try_get(3).map_err(bad)?,
        truncated_before: row.try_get(4).map_err(bad)?,
        archived_below: row.try_get(5).map_err(bad)?,
        max_count: row.try_get(6).map_err(bad)?,
        max_age_ms: row.try_get(7).map_err(bad)?,
        archive_expired: row.try_get(8).map_err(bad)?,
    })
}

/// Writes the stream's lifecycle columns.
async fn save(conn: &mut PgConnection, stream: &StreamId, life: &StoredLife) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO flext_streams (stream_id, state, version, life_start, truncated_before, \
                                    archived_below, max_count, max_age_ms, archive_expired) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT ON CONSTRAINT flext_streams_pkey DO UPDATE SET state = excluded.state, \
             version = excluded.version, life_start = excluded.life_start, \
             truncated_before = excluded.truncated_before, \
             archived_below = excluded.archived_below, max_count = excluded.max_count, \
             max_age_ms = excluded.max_age_ms, archive_expired = excluded.archive_expired",
    )
    .bind(stream.as_str())
    .bind(i32::try_from(life.state).unwrap_or(0))
    .bind(life.stored_version.max(life.version))
    .bind(life.life_start)
    .bind(life.truncated_before)
    .bind(life.archived_below)
    .bind(life.max_count)
    .bind(life.max_age_ms)
    .bind(life.archive_expired)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("writing a stream's lifecycle", e))?;
    Ok(())
}

async fn remove_below(
    conn: &mut PgConnection,
    table: &'static str,
    stream: &StreamId,
    below: i64,
) -> Result<u64, Error> {
    let sql = match table {
        "flext_archive" => "DELETE FROM flext_archive WHERE stream_id = $1 AND version < $2",
        _ => "DELETE FROM flext_events WHERE stream_id = $1 AND version < $2",
    };
    let done = sqlx::query(sql)
        .bind(stream.as_str())
        .bind(below)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("removing a stream's events", e))?;
    Ok(done.rows_affected())
}

async fn drop_snapshot(conn: &mut PgConnection, stream: &StreamId) -> Result<(), Error> {
    sqlx::query("DELETE FROM flext_snapshots WHERE stream_id = $1")
        .bind(stream.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("removing a snapshot", e))?;
    Ok(())
}

impl PgEventStore {
    /// The stream's life, read on a pooled connection.
    pub(crate) async fn lifecycle(&self, stream: &StreamId) -> Result<StoredLife, Error> {
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(|e| db_error("acquiring a connection", e))?;
        load(&mut conn, stream).await
    }

    /// A transaction holding appends back, with the stream's life read after the lock.
    async fn exclusive(
        &self,
        stream: &StreamId,
    ) -> Result<(PgWriteTransaction, StoredLife), Error> {
        let mut tx = self.transaction().await?;
        sqlx::query("LOCK TABLE flext_events IN SHARE ROW EXCLUSIVE MODE")
            .execute(tx.connection())
            .await
            .map_err(|e| db_error("locking the events for a lifecycle operation", e))?;
        let life = load(tx.connection(), stream).await?;
        Ok((tx, life))
    }
}

impl StreamLifecycle for PgEventStore {
    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, Error> {
        Ok(self.lifecycle(stream).await?.info())
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<StreamVersion, Error> {
        let (mut tx, mut life) = self.exclusive(stream).await?;
        let info = life.info();
        if let Some(v) = check_delete(stream, &info, expected, false)? {
            life.state = StoredLife::DELETED;
            life.life_start = to_i64(v.0) + 1;
            save(tx.connection(), stream, &life).await?;
            drop_snapshot(tx.connection(), stream).await?;
        }
        tx.commit().await?;
        Ok(info.version)
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<StreamVersion, Error> {
        let (mut tx, mut life) = self.exclusive(stream).await?;
        let info = life.info();
        if let Some(v) = check_delete(stream, &info, expected, true)? {
            let conn = tx.connection();
            remove_below(conn, "flext_events", stream, i64::MAX).await?;
            remove_below(conn, "flext_archive", stream, i64::MAX).await?;
            life.state = StoredLife::TOMBSTONED;
            life.life_start = to_i64(v.0) + 1;
            life.set_retention(None);
            save(conn, stream, &life).await?;
            drop_snapshot(conn, stream).await?;
        }
        tx.commit().await?;
        Ok(info.version)
    }

    async fn truncate_stream(
        &self,
        stream: &StreamId,
        before: StreamVersion,
    ) -> Result<u64, Error> {
        let (mut tx, mut life) = self.exclusive(stream).await?;
        let info = life.target(stream)?;
        let before = to_i64(before.0.min(info.version.0 + 1));
        let conn = tx.connection();
        let n = remove_below(conn, "flext_events", stream, before).await?
            + remove_below(conn, "flext_archive", stream, before).await?;
        life.truncated_before = life.truncated_before.max(before);
        save(conn, stream, &life).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn archive_stream(&self, stream: &StreamId, before: StreamVersion) -> Result<u64, Error> {
        let (mut tx, mut life) = self.exclusive(stream).await?;
        let info = life.target(stream)?;
        let before = to_i64(before.0.min(info.version.0 + 1));
        let conn = tx.connection();
        let moved = sqlx::query(
            "WITH moved AS (DELETE FROM flext_events WHERE stream_id = $1 AND version < $2 \
                            RETURNING *) \
             INSERT INTO flext_archive (position, event_id, stream_id, version, event_type, \
                 schema_version, payload, correlation_id, causation_id, headers, recorded_at, \
                 tags) \
             SELECT position, event_id, stream_id, version, event_type, schema_version, \
                 payload, correlation_id, causation_id, headers, recorded_at, tags FROM moved",
        )
        .bind(stream.as_str())
        .bind(before)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("archiving a stream's events", e))?;
        life.archived_below = life.archived_below.max(before);
        save(conn, stream, &life).await?;
        tx.commit().await?;
        Ok(moved.rows_affected())
    }

    async fn set_retention(
        &self,
        stream: &StreamId,
        policy: Option<RetentionPolicy>,
    ) -> Result<(), Error> {
        if let Some(p) = &policy {
            p.validate()?;
        }
        // A policy changes no event: a row lock on the stream's row is enough.
        let mut tx = self.transaction().await?;
        sqlx::query("INSERT INTO flext_streams (stream_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(stream.as_str())
            .execute(tx.connection())
            .await
            .map_err(|e| db_error("writing a retention policy", e))?;
        sqlx::query("SELECT 1 FROM flext_streams WHERE stream_id = $1 FOR UPDATE")
            .bind(stream.as_str())
            .execute(tx.connection())
            .await
            .map_err(|e| db_error("writing a retention policy", e))?;
        let mut life = load(tx.connection(), stream).await?;
        if life.state == StoredLife::TOMBSTONED {
            return Err(stream_deleted(stream, &life.info()));
        }
        life.set_retention(policy);
        save(tx.connection(), stream, &life).await?;
        tx.commit().await
    }

    async fn retained_streams(
        &self,
        after: Option<&StreamId>,
        max_count: usize,
    ) -> Result<Vec<(StreamId, RetentionPolicy)>, Error> {
        let rows = sqlx::query(
            "SELECT stream_id, max_count, max_age_ms, archive_expired FROM flext_streams \
             WHERE state = 0 AND (max_count IS NOT NULL OR max_age_ms IS NOT NULL) \
               AND stream_id > $1 ORDER BY stream_id LIMIT $2",
        )
        .bind(after.map_or("", |a| a.as_str()))
        .bind(i64::try_from(max_count).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(|e| db_error("listing retention policies", e))?;
        rows.iter()
            .map(|r| {
                let bad = |e: sqlx::Error| db_error("reading a retention policy", e);
                let id: String = r.try_get(0).map_err(bad)?;
                let policy = RetentionPolicy::from_stored(
                    r.try_get(1).map_err(bad)?,
                    r.try_get(2).map_err(bad)?,
                    r.try_get(3).map_err(bad)?,
                )
                .unwrap_or_default();
                Ok((StreamId::new(id)?, policy))
            })
            .collect()
    }
}
