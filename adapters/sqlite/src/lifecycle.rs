//! Stream lifecycle on SQLite: every operation runs in one `BEGIN IMMEDIATE` transaction
//! of the store's one writer, so no append runs between its check and its change.

use flext_domain::{Error, ExpectedVersion, StreamId, StreamVersion};
use flext_ports::lifecycle::{StoredLife, check_delete, stream_deleted};
use flext_ports::{RetentionPolicy, StreamInfo, StreamLifecycle};
use sqlx::{Row, SqliteConnection};

use crate::store::{SqliteEventStore, db_error, to_i64};

/// Reads the stream's life on `conn`.
pub(crate) async fn load(
    conn: &mut SqliteConnection,
    stream: &StreamId,
) -> Result<StoredLife, Error> {
    let row = sqlx::query(
        "SELECT max(coalesce((SELECT max(version) FROM flext_events WHERE stream_id = ?1), 0), \
                    coalesce((SELECT max(version) FROM flext_archive WHERE stream_id = ?1), 0)), \
                coalesce(s.state, 0), coalesce(s.version, 0), coalesce(s.life_start, 1), \
                coalesce(s.truncated_before, 1), coalesce(s.archived_below, 1), \
                s.max_count, s.max_age_ms, coalesce(s.archive_expired, 0) \
         FROM (SELECT 1) LEFT JOIN flext_streams s ON s.stream_id = ?1",
    )
    .bind(stream.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error("reading a stream's lifecycle", e))?;
    let bad = |e: sqlx::Error| db_error("reading a stream's lifecycle", e);
    Ok(StoredLife {
        stored_version: row.try_get(0).map_err(bad)?,
        state: row.try_get(1).map_err(bad)?,
        version: row.try_get(2).map_err(bad)?,
        life_start: row.try_get(3).map_err(bad)?,
        truncated_before: row.try_get(4).map_err(bad)?,
        archived_below: row.try_get(5).map_err(bad)?,
        max_count: row.try_get(6).map_err(bad)?,
        max_age_ms: row.try_get(7).map_err(bad)?,
        archive_expired: row.try_get::<i64, _>(8).map_err(bad)? != 0,
    })
}

/// Writes the stream's lifecycle columns.
async fn save(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    life: &StoredLife,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO flext_streams (stream_id, state, version, life_start, truncated_before, \
                                    archived_below, max_count, max_age_ms, archive_expired) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (stream_id) DO UPDATE SET state = excluded.state, \
             version = excluded.version, life_start = excluded.life_start, \
             truncated_before = excluded.truncated_before, \
             archived_below = excluded.archived_below, max_count = excluded.max_count, \
             max_age_ms = excluded.max_age_ms, archive_expired = excluded.archive_expired",
    )
    .bind(stream.as_str())
    .bind(life.state)
    .bind(life.stored_version.max(life.version))
    .bind(life.life_start)
    .bind(life.truncated_before)
    .bind(life.archived_below)
    .bind(life.max_count)
    .bind(life.max_age_ms)
    .bind(i64::from(life.archive_expired))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("writing a stream's lifecycle", e))?;
    Ok(())
}

/// Removes the stream's events below version `below` from the log (with their tag rows)
/// and returns how many; first records the highest position given, so it is never given
/// again.
async fn remove_below(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    below: i64,
) -> Result<u64, Error> {
    let fail = |e| db_error("removing a stream's events", e);
    sqlx::query(
        "INSERT INTO flext_counters (name, value) \
         SELECT 'position', coalesce(max(position), 0) FROM flext_events WHERE true \
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
    )
    .execute(&mut *conn)
    .await
    .map_err(fail)?;
    sqlx::query(
        "DELETE FROM flext_event_tags WHERE position IN \
         (SELECT position FROM flext_events WHERE stream_id = ?1 AND version < ?2 \
          AND tags IS NOT NULL)",
    )
    .bind(stream.as_str())
    .bind(below)
    .execute(&mut *conn)
    .await
    .map_err(fail)?;
    let done = sqlx::query("DELETE FROM flext_events WHERE stream_id = ?1 AND version < ?2")
        .bind(stream.as_str())
        .bind(below)
        .execute(&mut *conn)
        .await
        .map_err(fail)?;
    Ok(done.rows_affected())
}

async fn remove_archived_below(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    below: i64,
) -> Result<u64, Error> {
    let done = sqlx::query("DELETE FROM flext_archive WHERE stream_id = ?1 AND version < ?2")
        .bind(stream.as_str())
        .bind(below)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("removing a stream's archived events", e))?;
    Ok(done.rows_affected())
}

async fn drop_snapshot(conn: &mut SqliteConnection, stream: &StreamId) -> Result<(), Error> {
    sqlx::query("DELETE FROM flext_snapshots WHERE stream_id = ?1")
        .bind(stream.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("removing a snapshot", e))?;
    Ok(())
}

impl SqliteEventStore {
    /// `STREAM_DELETED` when the stream's reads refuse.
    pub(crate) async fn readable(&self, stream: &StreamId) -> Result<(), Error> {
        let mut conn = self
            .reader_pool()
            .acquire()
            .await
            .map_err(|e| db_error("acquiring a reader", e))?;
        load(&mut conn, stream).await?.readable(stream)
    }
}

impl StreamLifecycle for SqliteEventStore {
    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, Error> {
        let mut conn = self
            .reader_pool()
            .acquire()
            .await
            .map_err(|e| db_error("acquiring a reader", e))?;
        Ok(load(&mut conn, stream).await?.info())
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<StreamVersion, Error> {
        let mut tx = self.transaction().await?;
        let conn = tx.connection();
        let mut life = load(conn, stream).await?;
        let info = life.info();
        if let Some(v) = check_delete(stream, &info, expected, false)? {
            life.state = StoredLife::DELETED;
            life.life_start = to_i64(v.0) + 1;
            save(conn, stream, &life).await?;
            drop_snapshot(conn, stream).await?;
        }
        tx.commit().await?;
        Ok(info.version)
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<StreamVersion, Error> {
        let mut tx = self.transaction().await?;
        let conn = tx.connection();
        let mut life = load(conn, stream).await?;
        let info = life.info();
        if let Some(v) = check_delete(stream, &info, expected, true)? {
            remove_below(conn, stream, i64::MAX).await?;
            remove_archived_below(conn, stream, i64::MAX).await?;
            life.state = StoredLife::TOMBSTONED;
            life.life_start = to_i64(v.0) + 1;
            (life.max_count, life.max_age_ms) = (None, None);
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
        let mut tx = self.transaction().await?;
        let conn = tx.connection();
        let mut life = load(conn, stream).await?;
        let info = life.target(stream)?;
        let before = to_i64(before.0.min(info.version.0 + 1));
        let n = remove_below(conn, stream, before).await?
            + remove_archived_below(conn, stream, before).await?;
        life.truncated_before = life.truncated_before.max(before);
        save(conn, stream, &life).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn archive_stream(&self, stream: &StreamId, before: StreamVersion) -> Result<u64, Error> {
        let mut tx = self.transaction().await?;
        let conn = tx.connection();
        let mut life = load(conn, stream).await?;
        let info = life.target(stream)?;
        let before = to_i64(before.0.min(info.version.0 + 1));
        sqlx::query(
            "INSERT INTO flext_archive SELECT position, event_id, stream_id, version, event_type, \
                 schema_version, payload, correlation_id, causation_id, headers, recorded_at, \
                 tags FROM flext_events WHERE stream_id = ?1 AND version < ?2",
        )
        .bind(stream.as_str())
        .bind(before)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("archiving a stream's events", e))?;
        let n = remove_below(conn, stream, before).await?;
        life.archived_below = life.archived_below.max(before);
        save(conn, stream, &life).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn set_retention(
        &self,
        stream: &StreamId,
        policy: Option<RetentionPolicy>,
    ) -> Result<(), Error> {
        if let Some(p) = &policy {
            p.validate()?;
        }
        let mut tx = self.transaction().await?;
        let conn = tx.connection();
        let mut life = load(conn, stream).await?;
        if life.state == StoredLife::TOMBSTONED {
            return Err(stream_deleted(stream, &life.info()));
        }
        life.set_retention(policy);
        save(conn, stream, &life).await?;
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
               AND stream_id > ?1 ORDER BY stream_id LIMIT ?2",
        )
        .bind(after.map_or("", |a| a.as_str()))
        .bind(i64::try_from(max_count).unwrap_or(i64::MAX))
        .fetch_all(self.reader_pool())
        .await
        .map_err(|e| db_error("listing retention policies", e))?;
        rows.iter()
            .map(|r| {
                let bad = |e: sqlx::Error| db_error("reading a retention policy", e);
                let id: String = r.try_get(0).map_err(bad)?;
                let archive: i64 = r.try_get(3).map_err(bad)?;
                let policy = RetentionPolicy::from_stored(
                    r.try_get(1).map_err(bad)?,
                    r.try_get(2).map_err(bad)?,
                    archive != 0,
                )
                .unwrap_or_default();
                Ok((StreamId::new(id)?, policy))
            })
            .collect()
    }
}
