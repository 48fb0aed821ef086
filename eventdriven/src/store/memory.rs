//! The memory backend: every table a map behind one lock, never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{
    Appended, ConcurrencyConflict, EventData, ExpectedVersion, SagaRecord, Snapshot, StoreResult,
    StoredDeadLetter, StoredEvent, StoredSchedule,
};
use crate::message::{MessageId, Timestamp};

/// What a memory transaction will do at commit.
#[derive(Default)]
pub(crate) struct Staged {
    pub(crate) appends: Vec<(String, ExpectedVersion, Vec<EventData>)>,
    pub(crate) checkpoints: Vec<(String, u64)>,
    pub(crate) processed: Vec<(String, MessageId)>,
    pub(crate) sagas: Vec<SagaRecord>,
    /// Checkpoints that must still be where the transaction found them at commit.
    pub(crate) claims: Vec<(String, u64)>,
}

#[derive(Default)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// All events in position order; position `n` is at index `n - 1`.
    events: Vec<StoredEvent>,
    /// Each stream's events, as indexes into `events`.
    streams: HashMap<String, Vec<usize>>,
    snapshots: HashMap<String, Snapshot>,
    checkpoints: HashMap<String, u64>,
    processed: HashMap<(String, MessageId), Timestamp>,
    /// Keyed by (failed at, message id, recipient) so listing is oldest first.
    dead_letters: BTreeMap<(Timestamp, MessageId, String), StoredDeadLetter>,
    /// Keyed by (due, message id) so due ones come first.
    schedules: BTreeMap<(Timestamp, MessageId), StoredSchedule>,
    /// Keyed by (saga, id).
    sagas: BTreeMap<(String, String), SagaRecord>,
}

impl State {
    /// Appends `events` to `stream` (already checked); the stream's new version.
    fn push(&mut self, stream: &str, events: Vec<EventData>) -> u64 {
        let actual = self.streams.get(stream).map_or(0, |s| s.len() as u64);
        let indexes = self.streams.entry(stream.to_owned()).or_default();
        for (i, data) in events.into_iter().enumerate() {
            let mut metadata = data.metadata;
            metadata.attempt = 1;
            metadata.expires_at = None;
            indexes.push(self.events.len());
            self.events.push(StoredEvent {
                position: self.events.len() as u64 + 1,
                stream: stream.to_owned(),
                version: actual + i as u64 + 1,
                name: data.name,
                schema_version: data.schema_version,
                payload: data.payload,
                metadata,
            });
        }
        let version = indexes.len() as u64;
        if version == 0 {
            self.streams.remove(stream);
        }
        version
    }
}

impl MemoryStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a table half-written (each method
        // checks before it changes anything), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> StoreResult<Appended> {
        let mut state = self.state();
        let state = &mut *state;
        let actual = state.streams.get(stream).map_or(0, |s| s.len() as u64);
        if !expected.accepts(actual) {
            return Err(ConcurrencyConflict {
                stream: stream.to_owned(),
                expected,
                actual,
            }
            .into());
        }
        let first_position = state.events.len() as u64 + 1;
        let version = state.push(stream, events);
        Ok(Appended {
            version,
            first_position,
            last_position: state.events.len() as u64,
        })
    }

    /// Stages an append: checks `expected` against the stream as the transaction sees it
    /// (stored plus staged); the positions are assigned at commit.
    pub(crate) fn stage_append(
        &self,
        staged: &mut Staged,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> StoreResult<Appended> {
        let stored = self
            .state()
            .streams
            .get(stream)
            .map_or(0, |s| s.len() as u64);
        let pending: u64 = staged
            .appends
            .iter()
            .filter(|(s, _, _)| s == stream)
            .map(|(_, _, e)| e.len() as u64)
            .sum();
        let actual = stored + pending;
        if !expected.accepts(actual) {
            return Err(ConcurrencyConflict {
                stream: stream.to_owned(),
                expected,
                actual,
            }
            .into());
        }
        let version = actual + events.len() as u64;
        // Checked again at commit against what is stored then.
        staged
            .appends
            .push((stream.to_owned(), ExpectedVersion::Exact(actual), events));
        Ok(Appended {
            version,
            first_position: 0,
            last_position: 0,
        })
    }

    /// Applies a transaction, all or nothing: fails (changing nothing) if a stream moved since
    /// the transaction staged its append.
    pub(crate) fn apply_staged(&self, staged: Staged) -> StoreResult<()> {
        let mut state = self.state();
        for (name, expected) in &staged.claims {
            let actual = state.checkpoints.get(name).copied().unwrap_or(0);
            if actual != *expected {
                return Err(super::StoreError::CheckpointMoved {
                    name: name.clone(),
                    expected: *expected,
                    actual,
                });
            }
        }
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for (stream, expected, events) in &staged.appends {
            let actual = *versions
                .entry(stream)
                .or_insert_with(|| state.streams.get(stream).map_or(0, |s| s.len() as u64));
            if !expected.accepts(actual) {
                return Err(ConcurrencyConflict {
                    stream: stream.clone(),
                    expected: *expected,
                    actual,
                }
                .into());
            }
            versions.insert(stream, actual + events.len() as u64);
        }
        for (stream, _, events) in staged.appends {
            state.push(&stream, events);
        }
        for record in staged.sagas {
            state
                .sagas
                .insert((record.saga.clone(), record.id.clone()), record);
        }
        for (name, position) in staged.checkpoints {
            state.checkpoints.insert(name, position);
        }
        let now = Timestamp::now();
        for (consumer, id) in staged.processed {
            state.processed.entry((consumer, id)).or_insert(now);
        }
        Ok(())
    }

    pub(crate) async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let state = self.state();
        let Some(indexes) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from.saturating_sub(1) as usize;
        Ok(indexes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|&i| state.events[i].clone())
            .collect())
    }

    pub(crate) async fn stream_version(&self, stream: &str) -> StoreResult<u64> {
        Ok(self
            .state()
            .streams
            .get(stream)
            .map_or(0, |s| s.len() as u64))
    }

    pub(crate) async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let state = self.state();
        let start = (after as usize).min(state.events.len());
        Ok(state.events[start..].iter().take(limit).cloned().collect())
    }

    pub(crate) async fn head(&self) -> StoreResult<u64> {
        Ok(self.state().events.len() as u64)
    }

    pub(crate) async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        self.state()
            .snapshots
            .insert(snapshot.stream.clone(), snapshot);
        Ok(())
    }

    pub(crate) async fn load_snapshot(&self, stream: &str) -> StoreResult<Option<Snapshot>> {
        Ok(self.state().snapshots.get(stream).cloned())
    }

    pub(crate) async fn save_checkpoint(&self, name: &str, position: u64) -> StoreResult<()> {
        self.state().checkpoints.insert(name.to_owned(), position);
        Ok(())
    }

    pub(crate) async fn load_checkpoint(&self, name: &str) -> StoreResult<Option<u64>> {
        Ok(self.state().checkpoints.get(name).copied())
    }

    pub(crate) async fn record_processed(
        &self,
        consumer: &str,
        id: MessageId,
    ) -> StoreResult<bool> {
        let mut state = self.state();
        let key = (consumer.to_owned(), id);
        if state.processed.contains_key(&key) {
            return Ok(false);
        }
        state.processed.insert(key, Timestamp::now());
        Ok(true)
    }

    pub(crate) async fn is_processed(&self, consumer: &str, id: MessageId) -> StoreResult<bool> {
        Ok(self
            .state()
            .processed
            .contains_key(&(consumer.to_owned(), id)))
    }

    pub(crate) async fn processed_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<(String, MessageId)>> {
        let state = self.state();
        let mut recent: Vec<_> = state
            .processed
            .iter()
            .filter(|(_, at)| **at >= since)
            .map(|((consumer, id), at)| (*at, consumer.clone(), *id))
            .collect();
        recent.sort();
        Ok(recent
            .into_iter()
            .take(limit)
            .map(|(_, consumer, id)| (consumer, id))
            .collect())
    }

    pub(crate) async fn prune_processed(
        &self,
        consumer: &str,
        before: Timestamp,
    ) -> StoreResult<u64> {
        let mut state = self.state();
        let len = state.processed.len();
        state
            .processed
            .retain(|(c, _), at| c != consumer || *at >= before);
        Ok((len - state.processed.len()) as u64)
    }

    pub(crate) async fn put_dead_letter(&self, letter: StoredDeadLetter) -> StoreResult<()> {
        let mut state = self.state();
        let id = letter.message.metadata.id;
        state
            .dead_letters
            .retain(|(_, i, r), _| !(*i == id && *r == letter.recipient));
        state
            .dead_letters
            .insert((letter.failed_at, id, letter.recipient.clone()), letter);
        Ok(())
    }

    pub(crate) async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<StoredDeadLetter>> {
        Ok(self
            .state()
            .dead_letters
            .values()
            .take(limit)
            .cloned()
            .collect())
    }

    pub(crate) async fn remove_dead_letter(
        &self,
        id: MessageId,
        recipient: &str,
    ) -> StoreResult<bool> {
        let mut state = self.state();
        let len = state.dead_letters.len();
        state
            .dead_letters
            .retain(|(_, i, r), _| !(*i == id && r == recipient));
        Ok(state.dead_letters.len() < len)
    }

    pub(crate) async fn save_saga(&self, record: &SagaRecord) -> StoreResult<()> {
        self.state()
            .sagas
            .insert((record.saga.clone(), record.id.clone()), record.clone());
        Ok(())
    }

    pub(crate) async fn create_saga(&self, record: &SagaRecord) -> StoreResult<bool> {
        let mut state = self.state();
        let key = (record.saga.clone(), record.id.clone());
        if state.sagas.contains_key(&key) {
            return Ok(false);
        }
        state.sagas.insert(key, record.clone());
        Ok(true)
    }

    pub(crate) async fn load_saga(&self, saga: &str, id: &str) -> StoreResult<Option<SagaRecord>> {
        Ok(self
            .state()
            .sagas
            .get(&(saga.to_owned(), id.to_owned()))
            .cloned())
    }

    pub(crate) async fn list_sagas(
        &self,
        saga: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SagaRecord>> {
        Ok(self
            .state()
            .sagas
            .values()
            .filter(|r| saga.is_none_or(|s| r.saga == s))
            .take(limit)
            .cloned()
            .collect())
    }

    pub(crate) async fn put_schedule(&self, schedule: StoredSchedule) -> StoreResult<()> {
        let mut state = self.state();
        let id = schedule.message.metadata.id;
        state.schedules.retain(|(_, i), _| *i != id);
        state.schedules.insert((schedule.due, id), schedule);
        Ok(())
    }

    pub(crate) async fn due_schedules(
        &self,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<StoredSchedule>> {
        Ok(self
            .state()
            .schedules
            .values()
            .take_while(|s| s.due <= until)
            .take(limit)
            .cloned()
            .collect())
    }

    pub(crate) async fn remove_schedule(&self, id: MessageId) -> StoreResult<bool> {
        let mut state = self.state();
        let len = state.schedules.len();
        state.schedules.retain(|(_, i), _| *i != id);
        Ok(state.schedules.len() < len)
    }
}
