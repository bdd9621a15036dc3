//! Stream lifecycle in memory: under the store's one mutex, so every operation is atomic
//! with respect to appends.

use flext_domain::{Error, ExpectedVersion, RecordedEvent, StreamId, StreamVersion};
use flext_ports::lifecycle::{check_delete, replay_start, stream_deleted, stream_not_found};
use flext_ports::{ReadDirection, RetentionPolicy, StreamInfo, StreamLifecycle, StreamStatus};
use std::collections::BTreeMap;

use crate::InMemoryEventStore;
use crate::store::{Slot, State};

pub(crate) const LIVE: u8 = 0;
pub(crate) const DELETED: u8 = 1;
pub(crate) const TOMBSTONED: u8 = 2;

/// A stream whose life changed or that has a policy.
#[derive(Debug, Clone)]
pub(crate) struct Life {
    pub(crate) state: u8,
    /// The first version of the current life (after a revival: the deleted version + 1).
    pub(crate) life_start: u64,
    /// The first version truncation kept.
    truncated_before: u64,
    /// Versions below this one are in `archive`.
    archived_below: u64,
    archive: BTreeMap<u64, RecordedEvent>,
    retention: Option<RetentionPolicy>,
}

impl Default for Life {
    fn default() -> Self {
        Life {
            state: LIVE,
            life_start: 1,
            truncated_before: 1,
            archived_below: 1,
            archive: BTreeMap::new(),
            retention: None,
        }
    }
}

impl State {
    pub(crate) fn info(&self, stream: &StreamId) -> StreamInfo {
        let version = self.version(stream);
        let life = self.lives.get(stream);
        let status = match life.map_or(LIVE, |l| l.state) {
            DELETED => StreamStatus::Deleted,
            TOMBSTONED => StreamStatus::Tombstoned,
            _ if version.0 == 0 => StreamStatus::Absent,
            _ => StreamStatus::Live,
        };
        StreamInfo {
            status,
            version,
            first_readable: StreamVersion(life.map_or(1, |l| l.life_start.max(l.truncated_before))),
            archived_below: StreamVersion(life.map_or(1, |l| l.archived_below)),
            retention: life.and_then(|l| l.retention),
        }
    }

    /// `Err(STREAM_DELETED)` when the stream's reads refuse.
    pub(crate) fn readable(&self, stream: &StreamId) -> Result<(), Error> {
        match self.lives.get(stream).map_or(LIVE, |l| l.state) {
            LIVE => Ok(()),
            _ => Err(stream_deleted(stream, &self.info(stream))),
        }
    }

    pub(crate) fn replay_start(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> Result<StreamVersion, Error> {
        self.readable(stream)?;
        match self.lives.get(stream) {
            None => Ok(from),
            Some(l) => replay_start(
                stream,
                from,
                StreamVersion(l.life_start),
                StreamVersion(l.truncated_before),
            ),
        }
    }

    /// The committed event of `stream` at `version`, from the log or the archive.
    fn at(&self, stream: &StreamId, life: Option<&Life>, version: u64) -> Option<RecordedEvent> {
        let index = *self.streams.get(stream)?.get(version as usize - 1)?;
        match &self.log[index] {
            Slot::Committed(e) => Some(e.clone()),
            Slot::Removed => life.and_then(|l| l.archive.get(&version).cloned()),
            _ => None,
        }
    }

    pub(crate) fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        direction: ReadDirection,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.readable(stream)?;
        let life = self.lives.get(stream);
        let first = life.map_or(1, |l| l.life_start.max(l.truncated_before));
        let last = self.streams.get(stream).map_or(0, |v| v.len() as u64);
        let versions: Box<dyn Iterator<Item = u64>> = match direction {
            ReadDirection::Forward => Box::new(from.0.max(first)..=last),
            ReadDirection::Backward => Box::new((first..=from.0.min(last)).rev()),
        };
        Ok(versions
            .filter_map(|v| self.at(stream, life, v))
            .take(max_count)
            .collect())
    }

    /// Marks the stream's committed events below version `below` removed (handing each
    /// to `keep`) and returns how many.
    fn remove(
        &mut self,
        stream: &StreamId,
        below: u64,
        mut keep: impl FnMut(RecordedEvent),
    ) -> u64 {
        let Some(indexes) = self.streams.get(stream) else {
            return 0;
        };
        let mut n = 0;
        for &i in indexes.iter().take(below.saturating_sub(1) as usize) {
            if let Slot::Committed(_) = self.log[i]
                && let Slot::Committed(e) = std::mem::replace(&mut self.log[i], Slot::Removed)
            {
                self.ids.remove(&e.event_id);
                keep(e);
                n += 1;
            }
        }
        n
    }

    fn lifecycle_target(&self, stream: &StreamId) -> Result<StreamInfo, Error> {
        let info = self.info(stream);
        match info.status {
            StreamStatus::Absent => Err(stream_not_found(stream)),
            StreamStatus::Deleted | StreamStatus::Tombstoned => Err(stream_deleted(stream, &info)),
            StreamStatus::Live => Ok(info),
        }
    }
}

impl StreamLifecycle for InMemoryEventStore {
    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, Error> {
        Ok(self.lock().info(stream))
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<StreamVersion, Error> {
        let mut state = self.lock();
        let info = state.info(stream);
        if let Some(v) = check_delete(stream, &info, expected, false)? {
            let life = state.lives.entry(stream.clone()).or_default();
            life.state = DELETED;
            life.life_start = v.0 + 1;
            state.snapshots.remove(stream);
        }
        Ok(info.version)
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<StreamVersion, Error> {
        let mut state = self.lock();
        let info = state.info(stream);
        if let Some(v) = check_delete(stream, &info, expected, true)? {
            state.remove(stream, u64::MAX, drop);
            let life = state.lives.entry(stream.clone()).or_default();
            life.state = TOMBSTONED;
            life.life_start = v.0 + 1;
            life.archive.clear();
            life.retention = None;
            state.snapshots.remove(stream);
        }
        Ok(info.version)
    }

    async fn truncate_stream(
        &self,
        stream: &StreamId,
        before: StreamVersion,
    ) -> Result<u64, Error> {
        let mut state = self.lock();
        let info = state.lifecycle_target(stream)?;
        let before = before.0.min(info.version.0 + 1);
        let mut n = state.remove(stream, before, drop);
        let life = state.lives.entry(stream.clone()).or_default();
        let archived = life.archive.len();
        life.archive = life.archive.split_off(&before);
        n += (archived - life.archive.len()) as u64;
        life.truncated_before = life.truncated_before.max(before);
        Ok(n)
    }

    async fn archive_stream(&self, stream: &StreamId, before: StreamVersion) -> Result<u64, Error> {
        let mut state = self.lock();
        let info = state.lifecycle_target(stream)?;
        let before = before.0.min(info.version.0 + 1);
        let mut moved = Vec::new();
        let n = state.remove(stream, before, |e| moved.push(e));
        let life = state.lives.entry(stream.clone()).or_default();
        for e in moved {
            life.archive.insert(e.stream_version.0, e);
        }
        life.archived_below = life.archived_below.max(before);
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
        let mut state = self.lock();
        let info = state.info(stream);
        if info.status == StreamStatus::Tombstoned {
            return Err(stream_deleted(stream, &info));
        }
        state.lives.entry(stream.clone()).or_default().retention = policy;
        Ok(())
    }

    async fn retained_streams(
        &self,
        after: Option<&StreamId>,
        max_count: usize,
    ) -> Result<Vec<(StreamId, RetentionPolicy)>, Error> {
        let state = self.lock();
        let mut out: Vec<(StreamId, RetentionPolicy)> = state
            .lives
            .iter()
            .filter(|(id, l)| l.state == LIVE && after.is_none_or(|a| id.as_str() > a.as_str()))
            .filter_map(|(id, l)| l.retention.map(|p| (id.clone(), p)))
            .collect();
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        out.truncate(max_count);
        Ok(out)
    }
}
