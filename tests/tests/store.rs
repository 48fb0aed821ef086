//! The store conformance suite: one set of tests, written once and run against every backend
//! (memory, SQLite, and PostgreSQL with the `postgres` feature), the way Watermill tests its
//! pub/sub adapters. The memory backend is the reference; the others must match it.
//!
//! Every test gets a fresh store: a new temp directory for SQLite, a new database for
//! PostgreSQL (dropped at the end, also when the test fails).
//!
//! The PostgreSQL tests need a server: run them through `scripts/with-postgres.sh`, which
//! starts a throwaway one and sets `EVENTDRIVEN_POSTGRES_URL`, or set that variable to a
//! server where the user may create databases. Without it they fail, unless
//! `EVENTDRIVEN_SKIP_POSTGRES=1` is set, in which case they print a skip line and pass.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod stores;

use eventdriven::store::{
    Appended, ConcurrencyConflict, EventData, ExpectedVersion, SagaRecord, Snapshot, Store,
    StoreError, StoreResult, StoredDeadLetter, StoredEvent, StoredSchedule,
};
use eventdriven::{MessageId, Metadata, Timestamp};
use serde_json::json;

// The harness is in `stores/mod.rs`, shared with the other per-backend suites.
use stores::{Harness, GAP_TIMEOUT};

fn saga(saga: &str, id: &str, status: &str, step: u32) -> SagaRecord {
    SagaRecord {
        saga: saga.into(),
        id: id.into(),
        status: status.into(),
        step,
        data: json!({ "order": id, "items": [1, 2] }),
        error: None,
        started_at: at(10),
        updated_at: at(11),
        deadline: None,
    }
}

async fn sagas(h: Harness) {
    let store = h.open().await;
    assert_eq!(store.load_saga("fulfilment", "o1").await.unwrap(), None);
    let mut first = saga("fulfilment", "o1", "running", 0);
    store.save_saga(&first).await.unwrap();
    store
        .save_saga(&saga("fulfilment", "o2", "running", 1))
        .await
        .unwrap();
    store
        .save_saga(&saga("billing", "b1", "completed", 3))
        .await
        .unwrap();
    // Replaced as a whole.
    first.status = "compensating".into();
    first.step = 2;
    first.error = Some("card declined".into());
    first.deadline = Some(at(99));
    first.updated_at = at(12);
    store.save_saga(&first).await.unwrap();
    assert_eq!(
        store.load_saga("fulfilment", "o1").await.unwrap(),
        Some(first.clone())
    );

    let ids = |records: Vec<SagaRecord>| -> Vec<(String, String)> {
        records.into_iter().map(|r| (r.saga, r.id)).collect()
    };
    assert_eq!(
        ids(store.list_sagas(Some("fulfilment"), 10).await.unwrap()),
        [
            ("fulfilment".into(), "o1".into()),
            ("fulfilment".into(), "o2".into())
        ]
    );
    assert_eq!(store.list_sagas(None, 10).await.unwrap().len(), 3);
    assert_eq!(store.list_sagas(None, 2).await.unwrap().len(), 2);

    // Created only if absent.
    assert!(!store
        .create_saga(&saga("fulfilment", "o1", "running", 0))
        .await
        .unwrap());
    assert!(store
        .create_saga(&saga("fulfilment", "o3", "running", 0))
        .await
        .unwrap());

    // Durable across reopening.
    let again = h.open().await;
    assert_eq!(
        again.load_saga("fulfilment", "o1").await.unwrap(),
        Some(first)
    );
}

stores::per_backend!(
    sagas,
    append_no_stream,
    append_exact,
    append_any,
    batch_is_all_or_nothing,
    empty_batch,
    read_stream_from_and_limit,
    read_all_pages,
    metadata_round_trips,
    payloads_round_trip,
    stream_version_and_head,
    snapshots_replace,
    checkpoints,
    processed_ids,
    dead_letters,
    schedules,
    durable_across_reopen,
    concurrent_opens,
    concurrent_appends_to_one_stream,
    concurrent_appends_with_retries,
    read_all_never_skips_under_concurrent_appends,
);

// --- helpers ----------------------------------------------------------------------------------

fn event(name: &str, n: u64) -> EventData {
    EventData::json(name, 1, &json!({ "n": n })).unwrap()
}

fn events(name: &str, count: u64) -> Vec<EventData> {
    (1..=count).map(|n| event(name, n)).collect()
}

fn conflict_of<T: std::fmt::Debug>(result: StoreResult<T>) -> ConcurrencyConflict {
    match result {
        Err(StoreError::Conflict(conflict)) => conflict,
        other => panic!("expected a concurrency conflict, got {other:?}"),
    }
}

fn ids(events: &[StoredEvent]) -> Vec<MessageId> {
    events.iter().map(|e| e.metadata.id).collect()
}

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + seconds * 1_000_000_000)
}

/// Every event of the store, paging by `page`.
async fn all_events(store: &Store, page: usize) -> Vec<StoredEvent> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let batch = store.read_all(after, page).await.unwrap();
        assert!(batch.len() <= page, "read_all returned more than its limit");
        let Some(last) = batch.last() else {
            return all;
        };
        after = last.position;
        all.extend(batch);
    }
}

// --- appends ----------------------------------------------------------------------------------

async fn append_no_stream(h: Harness) {
    let store = h.open().await;
    let appended = store
        .append("s", ExpectedVersion::NoStream, events("a", 2))
        .await
        .unwrap();
    assert_eq!(appended.version, 2);
    assert_eq!(appended.last_position - appended.first_position, 1);

    let conflict = conflict_of(
        store
            .append("s", ExpectedVersion::NoStream, events("b", 1))
            .await,
    );
    assert_eq!(
        conflict,
        ConcurrencyConflict {
            stream: "s".to_owned(),
            expected: ExpectedVersion::NoStream,
            actual: 2,
        }
    );
    assert_eq!(store.stream_version("s").await.unwrap(), 2);
    // Another stream is new whatever the first one holds.
    let other = store
        .append("t", ExpectedVersion::NoStream, events("a", 1))
        .await
        .unwrap();
    assert_eq!(other.version, 1);
    assert_eq!(other.first_position, appended.last_position + 1);
}

async fn append_exact(h: Harness) {
    let store = h.open().await;
    // A missing stream is at version 0: only Exact(0) matches it.
    let conflict = conflict_of(
        store
            .append("s", ExpectedVersion::Exact(5), events("a", 1))
            .await,
    );
    assert_eq!(conflict.actual, 0);
    assert_eq!(conflict.expected, ExpectedVersion::Exact(5));
    assert_eq!(
        store
            .append("s", ExpectedVersion::Exact(0), events("a", 2))
            .await
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        store
            .append("s", ExpectedVersion::Exact(2), events("b", 3))
            .await
            .unwrap()
            .version,
        5
    );
    for stale in [0, 1, 2, 4, 6] {
        let conflict = conflict_of(
            store
                .append("s", ExpectedVersion::Exact(stale), events("c", 1))
                .await,
        );
        assert_eq!(
            conflict,
            ConcurrencyConflict {
                stream: "s".to_owned(),
                expected: ExpectedVersion::Exact(stale),
                actual: 5,
            }
        );
    }
    let stored = store.read_stream("s", 1, 100).await.unwrap();
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    let names: Vec<&str> = stored.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "a", "b", "b", "b"]);
}

async fn append_any(h: Harness) {
    let store = h.open().await;
    let first = store
        .append("s", ExpectedVersion::Any, events("a", 2))
        .await
        .unwrap();
    assert_eq!(first.version, 2);
    let second = store
        .append("s", ExpectedVersion::Any, events("b", 1))
        .await
        .unwrap();
    assert_eq!(
        second,
        Appended {
            version: 3,
            first_position: first.last_position + 1,
            last_position: first.last_position + 1,
        }
    );
    assert_eq!(store.stream_version("s").await.unwrap(), 3);
}

async fn batch_is_all_or_nothing(h: Harness) {
    let store = h.open().await;
    let batch = events("a", 5);
    let batch_ids: Vec<MessageId> = batch.iter().map(|e| e.metadata.id).collect();
    let appended = store
        .append("s", ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    assert_eq!(appended.version, 5);
    assert_eq!(appended.last_position - appended.first_position, 4);
    let stored = store.read_stream("s", 1, 100).await.unwrap();
    assert_eq!(ids(&stored), batch_ids);
    // One batch: consecutive versions, increasing positions from first to last.
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.version, i as u64 + 1);
        assert_eq!(e.position, appended.first_position + i as u64);
    }

    let head = store.head().await.unwrap();
    let conflict = conflict_of(
        store
            .append("s", ExpectedVersion::Exact(3), events("b", 4))
            .await,
    );
    assert_eq!(conflict.actual, 5);
    // Nothing of the conflicting batch is stored.
    assert_eq!(store.stream_version("s").await.unwrap(), 5);
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(store.read_stream("s", 1, 100).await.unwrap().len(), 5);
    assert_eq!(all_events(&store, 100).await.len(), 5);
}

async fn empty_batch(h: Harness) {
    let store = h.open().await;
    // On a missing stream: checks the expectation, creates nothing.
    let appended = store
        .append("s", ExpectedVersion::Any, Vec::new())
        .await
        .unwrap();
    assert_eq!(
        appended,
        Appended {
            version: 0,
            first_position: 1,
            last_position: 0,
        }
    );
    assert_eq!(store.stream_version("s").await.unwrap(), 0);
    let appended = store
        .append("s", ExpectedVersion::NoStream, Vec::new())
        .await
        .unwrap();
    assert_eq!(appended.version, 0);

    let written = store
        .append("s", ExpectedVersion::NoStream, events("a", 3))
        .await
        .unwrap();
    let appended = store
        .append("s", ExpectedVersion::Exact(3), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        appended,
        Appended {
            version: 3,
            first_position: written.last_position + 1,
            last_position: written.last_position,
        }
    );
    // An empty batch still checks the expectation.
    let conflict = conflict_of(
        store
            .append("s", ExpectedVersion::NoStream, Vec::new())
            .await,
    );
    assert_eq!(conflict.actual, 3);
    assert_eq!(store.head().await.unwrap(), written.last_position);
}

// --- reads ------------------------------------------------------------------------------------

async fn read_stream_from_and_limit(h: Harness) {
    let store = h.open().await;
    for n in 0..10 {
        // Interleaved with another stream, so positions and versions differ.
        store
            .append("s", ExpectedVersion::Exact(n), vec![event("s", n + 1)])
            .await
            .unwrap();
        store
            .append("other", ExpectedVersion::Any, vec![event("o", n + 1)])
            .await
            .unwrap();
    }
    let all = store.read_stream("s", 1, 100).await.unwrap();
    assert_eq!(all.len(), 10);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.stream, "s");
        assert_eq!(e.version, i as u64 + 1);
        assert_eq!(e.payload, json!({ "n": i + 1 }));
    }
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));

    let versions = |events: Vec<StoredEvent>| events.iter().map(|e| e.version).collect::<Vec<_>>();
    assert_eq!(
        versions(store.read_stream("s", 4, 3).await.unwrap()),
        [4, 5, 6]
    );
    assert_eq!(
        versions(store.read_stream("s", 9, 100).await.unwrap()),
        [9, 10]
    );
    assert_eq!(versions(store.read_stream("s", 10, 1).await.unwrap()), [10]);
    // 0 reads like 1.
    assert_eq!(
        versions(store.read_stream("s", 0, 2).await.unwrap()),
        [1, 2]
    );
    assert!(store.read_stream("s", 11, 100).await.unwrap().is_empty());
    assert!(store.read_stream("s", 1, 0).await.unwrap().is_empty());
    assert!(store
        .read_stream("s", u64::MAX, usize::MAX)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.read_stream("s", 1, usize::MAX).await.unwrap().len(),
        10
    );
    assert!(store
        .read_stream("missing", 1, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn read_all_pages(h: Harness) {
    let store = h.open().await;
    assert!(store.read_all(0, 100).await.unwrap().is_empty());
    let mut appended_ids = Vec::new();
    for round in 0..7u64 {
        for stream in ["a", "b", "c"] {
            let batch = events(stream, round % 3 + 1);
            appended_ids.extend(batch.iter().map(|e| e.metadata.id));
            store
                .append(stream, ExpectedVersion::Any, batch)
                .await
                .unwrap();
        }
    }
    let total = appended_ids.len();
    let everything = store.read_all(0, 1000).await.unwrap();
    assert_eq!(
        ids(&everything),
        appended_ids,
        "read_all is in append order"
    );
    assert!(everything.windows(2).all(|w| w[0].position < w[1].position));
    for page in [1, 4, 5, 50] {
        assert_eq!(
            ids(&all_events(&store, page).await),
            appended_ids,
            "page {page}"
        );
    }
    // `after` is exclusive.
    let from_third = store.read_all(everything[2].position, 3).await.unwrap();
    assert_eq!(ids(&from_third), appended_ids[3..6]);
    let head = store.head().await.unwrap();
    assert_eq!(head, everything[total - 1].position);
    assert!(store.read_all(head, 10).await.unwrap().is_empty());
    assert!(store.read_all(u64::MAX, 10).await.unwrap().is_empty());
    assert!(store.read_all(0, 0).await.unwrap().is_empty());
    assert_eq!(store.read_all(0, usize::MAX).await.unwrap().len(), total);
    // Each event carries its stream and version.
    let c_versions: Vec<u64> = everything
        .iter()
        .filter(|e| e.stream == "c")
        .map(|e| e.version)
        .collect();
    assert_eq!(
        c_versions,
        (1..=c_versions.len() as u64).collect::<Vec<_>>()
    );
}

async fn metadata_round_trips(h: Harness) {
    let store = h.open().await;
    let cause = Metadata::new();
    let mut meta = Metadata::caused_by(&cause);
    meta.headers.insert("tenant", "acme");
    meta.headers.insert("trace", "00-abc-01");
    meta.headers.insert("émoji", "✓ \"quoted\" \\ back");
    meta.attempt = 4;
    meta.expires_at = Some(meta.timestamp + Duration::from_secs(60));
    meta.timestamp = Timestamp::from_unix_nanos(1_700_000_000_123_456_789);
    let with_meta = EventData {
        metadata: meta.clone(),
        ..event("rich", 1)
    };
    let plain = event("plain", 2);
    let plain_meta = plain.metadata.clone();
    store
        .append("s", ExpectedVersion::NoStream, vec![with_meta, plain])
        .await
        .unwrap();

    for stored in [
        store.read_stream("s", 1, 10).await.unwrap(),
        store.read_all(0, 10).await.unwrap(),
    ] {
        let (rich, bare) = (&stored[0].metadata, &stored[1].metadata);
        assert_eq!(rich.id, meta.id);
        assert_eq!(rich.correlation_id, cause.correlation_id);
        assert_eq!(rich.causation_id, Some(cause.id));
        assert_eq!(rich.timestamp, meta.timestamp);
        assert_eq!(rich.headers, meta.headers);
        // A stored event is a fact, not a delivery: attempt 1, no expiry.
        assert_eq!(rich.attempt, 1);
        assert_eq!(rich.expires_at, None);

        assert_eq!(bare.id, plain_meta.id);
        assert_eq!(bare.correlation_id, plain_meta.id);
        assert_eq!(bare.causation_id, None);
        assert_eq!(bare.timestamp, plain_meta.timestamp);
        assert!(bare.headers.is_empty());
    }
}

async fn payloads_round_trip(h: Harness) {
    let store = h.open().await;
    let payloads = [
        json!({ "n": 1 }),
        json!({
            "text": "naïve ☃ \"quotes\" \\ and\nnewlines\t",
            "big": u64::MAX,
            "negative": i64::MIN,
            "float": 3.25,
            "null": null,
            "nested": { "list": [1, "two", [3.5, false], { "deep": { "er": true } }] },
            "empty": {},
            "none": [],
        }),
        json!([1, 2, 3]),
        json!("just a string"),
        json!(42),
        json!(null),
    ];
    let batch: Vec<EventData> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| EventData::json("payload", i as u32 + 7, payload).unwrap())
        .collect();
    store
        .append("s", ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    let stored = store.read_stream("s", 1, 100).await.unwrap();
    assert_eq!(stored.len(), payloads.len());
    for (i, (e, payload)) in stored.iter().zip(&payloads).enumerate() {
        assert_eq!(&e.payload, payload);
        assert_eq!(e.name, "payload");
        assert_eq!(e.schema_version, i as u32 + 7);
    }
    let first: serde_json::Value = stored[1].decode().unwrap();
    assert_eq!(first["big"], u64::MAX);
    // The largest schema version a u32 holds survives too.
    let max = EventData::json("max", u32::MAX, &json!({})).unwrap();
    store
        .append("m", ExpectedVersion::Any, vec![max])
        .await
        .unwrap();
    assert_eq!(
        store.read_stream("m", 1, 1).await.unwrap()[0].schema_version,
        u32::MAX
    );
}

async fn stream_version_and_head(h: Harness) {
    let store = h.open().await;
    assert_eq!(store.head().await.unwrap(), 0);
    assert_eq!(store.stream_version("s").await.unwrap(), 0);
    let a = store
        .append("s", ExpectedVersion::Any, events("a", 3))
        .await
        .unwrap();
    assert_eq!(store.head().await.unwrap(), a.last_position);
    let b = store
        .append("t", ExpectedVersion::Any, events("b", 2))
        .await
        .unwrap();
    assert_eq!(store.head().await.unwrap(), b.last_position);
    assert!(b.first_position > a.last_position);
    assert_eq!(store.stream_version("s").await.unwrap(), 3);
    assert_eq!(store.stream_version("t").await.unwrap(), 2);
    assert_eq!(store.stream_version("u").await.unwrap(), 0);
}

// --- snapshots and checkpoints ----------------------------------------------------------------

async fn snapshots_replace(h: Harness) {
    let store = h.open().await;
    assert!(store.load_snapshot("s").await.unwrap().is_none());
    store
        .save_snapshot(Snapshot {
            stream: "s".to_owned(),
            version: 3,
            schema_version: 1,
            state: json!({ "balance": 30 }),
            taken_at: at(1),
        })
        .await
        .unwrap();
    store
        .save_snapshot(Snapshot {
            stream: "t".to_owned(),
            version: 1,
            schema_version: 1,
            state: json!({ "balance": 1 }),
            taken_at: at(2),
        })
        .await
        .unwrap();
    let loaded = store.load_snapshot("s").await.unwrap().unwrap();
    assert_eq!(
        (
            loaded.stream.as_str(),
            loaded.version,
            loaded.schema_version
        ),
        ("s", 3, 1)
    );
    assert_eq!(loaded.state, json!({ "balance": 30 }));
    assert_eq!(loaded.taken_at, at(1));

    store
        .save_snapshot(Snapshot {
            stream: "s".to_owned(),
            version: 7,
            schema_version: 2,
            state: json!({ "balance": 70, "owner": "ada" }),
            taken_at: at(3),
        })
        .await
        .unwrap();
    let loaded = store.load_snapshot("s").await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.schema_version), (7, 2));
    assert_eq!(loaded.state, json!({ "balance": 70, "owner": "ada" }));
    assert_eq!(loaded.taken_at, at(3));
    // The other stream's is untouched.
    let other = store.load_snapshot("t").await.unwrap().unwrap();
    assert_eq!((other.version, other.taken_at), (1, at(2)));
}

async fn checkpoints(h: Harness) {
    let store = h.open().await;
    assert_eq!(store.load_checkpoint("projection").await.unwrap(), None);
    store.save_checkpoint("projection", 5).await.unwrap();
    store.save_checkpoint("relay", 9).await.unwrap();
    assert_eq!(store.load_checkpoint("projection").await.unwrap(), Some(5));
    // Saving replaces, also with a smaller position (a reader rewound).
    store.save_checkpoint("projection", 3).await.unwrap();
    assert_eq!(store.load_checkpoint("projection").await.unwrap(), Some(3));
    store.save_checkpoint("projection", 0).await.unwrap();
    assert_eq!(store.load_checkpoint("projection").await.unwrap(), Some(0));
    assert_eq!(store.load_checkpoint("relay").await.unwrap(), Some(9));
    let big = i64::MAX as u64;
    store.save_checkpoint("big", big).await.unwrap();
    assert_eq!(store.load_checkpoint("big").await.unwrap(), Some(big));
}

// --- delivery tables --------------------------------------------------------------------------

async fn processed_ids(h: Harness) {
    let store = h.open().await;
    let (a, b, c) = (MessageId::new(), MessageId::new(), MessageId::new());
    assert!(!store.is_processed("orders", a).await.unwrap());
    assert!(store.record_processed("orders", a).await.unwrap());
    assert!(!store.record_processed("orders", a).await.unwrap());
    assert!(store.is_processed("orders", a).await.unwrap());
    // Per consumer.
    assert!(!store.is_processed("billing", a).await.unwrap());
    assert!(store.record_processed("billing", a).await.unwrap());
    assert!(store.record_processed("orders", b).await.unwrap());

    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.record_processed("orders", c).await.unwrap());

    assert_eq!(store.prune_processed("orders", cutoff).await.unwrap(), 2);
    assert!(!store.is_processed("orders", a).await.unwrap());
    assert!(!store.is_processed("orders", b).await.unwrap());
    assert!(store.is_processed("orders", c).await.unwrap());
    // Another consumer's ids are not pruned.
    assert!(store.is_processed("billing", a).await.unwrap());
    assert_eq!(store.prune_processed("orders", cutoff).await.unwrap(), 0);
    // Pruned ids can be recorded again.
    assert!(store.record_processed("orders", a).await.unwrap());
    let everything = Timestamp::from_unix_nanos(u64::MAX);
    assert_eq!(
        store.prune_processed("orders", everything).await.unwrap(),
        2
    );
}

fn message(id: u128, name: &str) -> EventData {
    // Deterministic, so that a message built twice compares equal field by field.
    let mut meta = Metadata::new();
    meta.id = MessageId::from_u128(id);
    meta.correlation_id = MessageId::from_u128(id ^ 0xC0);
    meta.causation_id = Some(MessageId::from_u128(id ^ 0xCA));
    meta.timestamp = at(0);
    meta.attempt = 3;
    meta.headers.insert("tenant", "acme");
    meta.expires_at = Some(at(1000));
    EventData {
        metadata: meta,
        ..EventData::json(name, 2, &json!({ "for": name })).unwrap()
    }
}

fn letter(id: u128, recipient: &str, reason: &str, failed_at: Timestamp) -> StoredDeadLetter {
    StoredDeadLetter {
        message: message(id, "order.placed"),
        recipient: recipient.to_owned(),
        reason: reason.to_owned(),
        failed_at,
    }
}

fn letter_key(letter: &StoredDeadLetter) -> (u128, &str) {
    (
        letter.message.metadata.id.as_u128(),
        letter.recipient.as_str(),
    )
}

async fn dead_letters(h: Harness) {
    let store = h.open().await;
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    let high = u128::MAX - 5; // ids order as numbers, also past the sign bit
    store
        .put_dead_letter(letter(7, "billing", "boom", at(20)))
        .await
        .unwrap();
    store
        .put_dead_letter(letter(9, "billing", "late", at(10)))
        .await
        .unwrap();
    store
        .put_dead_letter(letter(high, "alpha", "tie", at(15)))
        .await
        .unwrap();
    store
        .put_dead_letter(letter(3, "alpha", "tie", at(15)))
        .await
        .unwrap();
    // Same id, two recipients: two letters, ordered byte-wise by recipient ("Z" < "a").
    store
        .put_dead_letter(letter(3, "Zed", "tie", at(15)))
        .await
        .unwrap();

    let listed = store.dead_letters(10).await.unwrap();
    let keys: Vec<(u128, &str)> = listed.iter().map(letter_key).collect();
    assert_eq!(
        keys,
        [
            (9, "billing"),
            (3, "Zed"),
            (3, "alpha"),
            (high, "alpha"),
            (7, "billing"),
        ]
    );
    // Everything round-trips, the whole metadata included.
    let first = &listed[0];
    let expected = letter(9, "billing", "late", at(10));
    assert_eq!(first.reason, "late");
    assert_eq!(first.failed_at, at(10));
    assert_eq!(first.message.name, "order.placed");
    assert_eq!(first.message.schema_version, 2);
    assert_eq!(first.message.payload, json!({ "for": "order.placed" }));
    let (meta, want) = (&first.message.metadata, &expected.message.metadata);
    assert_eq!(meta.id, want.id);
    assert_eq!(meta.correlation_id, want.correlation_id);
    assert_eq!(meta.causation_id, want.causation_id);
    assert_eq!(meta.timestamp, want.timestamp);
    assert_eq!(meta.attempt, 3);
    assert_eq!(meta.headers.get("tenant"), Some("acme"));
    assert_eq!(meta.expires_at, Some(at(1000)));

    let two = store.dead_letters(2).await.unwrap();
    assert_eq!(
        two.iter().map(letter_key).collect::<Vec<_>>(),
        [(9, "billing"), (3, "Zed")]
    );
    assert!(store.dead_letters(0).await.unwrap().is_empty());

    // Putting the same (id, recipient) again replaces it, and it moves to its new place.
    store
        .put_dead_letter(letter(9, "billing", "again", at(30)))
        .await
        .unwrap();
    let listed = store.dead_letters(10).await.unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(letter_key(&listed[4]), (9, "billing"));
    assert_eq!(listed[4].reason, "again");
    assert_eq!(listed[4].failed_at, at(30));

    assert!(store
        .remove_dead_letter(MessageId::from_u128(3), "alpha")
        .await
        .unwrap());
    assert!(!store
        .remove_dead_letter(MessageId::from_u128(3), "alpha")
        .await
        .unwrap());
    assert!(!store
        .remove_dead_letter(MessageId::from_u128(7), "nobody")
        .await
        .unwrap());
    let keys: Vec<(u128, String)> = store
        .dead_letters(10)
        .await
        .unwrap()
        .iter()
        .map(|l| (l.message.metadata.id.as_u128(), l.recipient.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            (3, "Zed".to_owned()),
            (high, "alpha".to_owned()),
            (7, "billing".to_owned()),
            (9, "billing".to_owned()),
        ]
    );
}

fn schedule(id: u128, kind: &str, due: Timestamp) -> StoredSchedule {
    StoredSchedule {
        message: message(id, "reminder"),
        kind: kind.to_owned(),
        due,
    }
}

fn schedule_ids(schedules: &[StoredSchedule]) -> Vec<u128> {
    schedules
        .iter()
        .map(|s| s.message.metadata.id.as_u128())
        .collect()
}

async fn schedules(h: Harness) {
    let store = h.open().await;
    assert!(store.due_schedules(at(100), 10).await.unwrap().is_empty());
    store
        .put_schedule(schedule(1, "publish", at(30)))
        .await
        .unwrap();
    store
        .put_schedule(schedule(2, "tell", at(10)))
        .await
        .unwrap();
    store
        .put_schedule(schedule(3, "publish", at(20)))
        .await
        .unwrap();
    store
        .put_schedule(schedule(5, "publish", at(20)))
        .await
        .unwrap();
    store
        .put_schedule(schedule(4, "publish", at(50)))
        .await
        .unwrap();

    assert!(store.due_schedules(at(5), 10).await.unwrap().is_empty());
    // Due at or before `until`, earliest first (ties by id).
    let due = store.due_schedules(at(20), 10).await.unwrap();
    assert_eq!(schedule_ids(&due), [2, 3, 5]);
    assert_eq!(due[0].kind, "tell");
    assert_eq!(due[0].due, at(10));
    assert_eq!(due[0].message.name, "reminder");
    assert_eq!(due[0].message.schema_version, 2);
    assert_eq!(due[0].message.payload, json!({ "for": "reminder" }));
    assert_eq!(due[0].message.metadata.attempt, 3);
    assert_eq!(due[0].message.metadata.expires_at, Some(at(1000)));
    assert_eq!(due[0].message.metadata.headers.get("tenant"), Some("acme"));
    assert_eq!(
        schedule_ids(&store.due_schedules(at(100), 2).await.unwrap()),
        [2, 3]
    );
    assert_eq!(
        schedule_ids(
            &store
                .due_schedules(Timestamp::from_unix_nanos(u64::MAX), 100)
                .await
                .unwrap()
        ),
        [2, 3, 5, 1, 4]
    );
    assert!(store.due_schedules(at(100), 0).await.unwrap().is_empty());

    // Same id again: replaced (new time, new kind), not added.
    store
        .put_schedule(schedule(2, "publish", at(40)))
        .await
        .unwrap();
    let all = store.due_schedules(at(100), 10).await.unwrap();
    assert_eq!(schedule_ids(&all), [3, 5, 1, 2, 4]);
    assert_eq!(all[3].kind, "publish");
    assert_eq!(all[3].due, at(40));

    assert!(store
        .remove_schedule(MessageId::from_u128(3))
        .await
        .unwrap());
    assert!(!store
        .remove_schedule(MessageId::from_u128(3))
        .await
        .unwrap());
    assert!(!store
        .remove_schedule(MessageId::from_u128(99))
        .await
        .unwrap());
    assert_eq!(
        schedule_ids(&store.due_schedules(at(100), 10).await.unwrap()),
        [5, 1, 2, 4]
    );
}

// --- durability -------------------------------------------------------------------------------

async fn durable_across_reopen(h: Harness) {
    let id = MessageId::new();
    let appended_ids;
    {
        let store = h.open().await;
        let batch = events("a", 3);
        appended_ids = batch.iter().map(|e| e.metadata.id).collect::<Vec<_>>();
        store
            .append("s", ExpectedVersion::NoStream, batch)
            .await
            .unwrap();
        store
            .save_snapshot(Snapshot {
                stream: "s".to_owned(),
                version: 3,
                schema_version: 1,
                state: json!({ "kept": true }),
                taken_at: at(1),
            })
            .await
            .unwrap();
        store.save_checkpoint("projection", 2).await.unwrap();
        assert!(store.record_processed("orders", id).await.unwrap());
        store
            .put_dead_letter(letter(11, "billing", "boom", at(5)))
            .await
            .unwrap();
        store
            .put_schedule(schedule(12, "publish", at(6)))
            .await
            .unwrap();
    }
    // Opening runs the migrations again: they must find everything applied.
    let store = h.open().await;
    let stored = store.read_stream("s", 1, 10).await.unwrap();
    assert_eq!(ids(&stored), appended_ids);
    assert_eq!(ids(&store.read_all(0, 10).await.unwrap()), appended_ids);
    assert_eq!(store.stream_version("s").await.unwrap(), 3);
    let head = store.head().await.unwrap();
    assert_eq!(head, stored[2].position);
    let snapshot = store.load_snapshot("s").await.unwrap().unwrap();
    assert_eq!(
        (snapshot.version, snapshot.state),
        (3, json!({ "kept": true }))
    );
    assert_eq!(store.load_checkpoint("projection").await.unwrap(), Some(2));
    assert!(store.is_processed("orders", id).await.unwrap());
    assert!(!store.record_processed("orders", id).await.unwrap());
    let letters = store.dead_letters(10).await.unwrap();
    assert_eq!(
        letters.iter().map(letter_key).collect::<Vec<_>>(),
        [(11, "billing")]
    );
    let due = store.due_schedules(at(100), 10).await.unwrap();
    assert_eq!(schedule_ids(&due), [12]);

    // Appending goes on where it stopped.
    let conflict = conflict_of(
        store
            .append("s", ExpectedVersion::NoStream, events("b", 1))
            .await,
    );
    assert_eq!(conflict.actual, 3);
    let more = store
        .append("s", ExpectedVersion::Exact(3), events("b", 1))
        .await
        .unwrap();
    assert_eq!(more.version, 4);
    assert!(more.first_position > head);
}

// --- concurrency ------------------------------------------------------------------------------

/// Four stores opened at once on a new place (as four processes starting together would):
/// the migrations run once, and every store works.
async fn concurrent_opens(h: Harness) {
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.open().await })
        })
        .collect();
    let mut stores = Vec::new();
    for store in opening {
        stores.push(
            tokio::time::timeout(Duration::from_secs(30), store)
                .await
                .expect("opening hung")
                .unwrap(),
        );
    }
    for (i, store) in stores.iter().enumerate() {
        store
            .append(
                "s",
                ExpectedVersion::Exact(i as u64),
                vec![event("open", i as u64)],
            )
            .await
            .unwrap();
    }
    for store in &stores {
        assert_eq!(store.stream_version("s").await.unwrap(), 4);
    }
}

/// 8 tasks append to one stream at once, each expecting the same version, for 10 rounds:
/// each round exactly one wins, the others see the winner's version.
async fn concurrent_appends_to_one_stream(h: Harness) {
    const TASKS: usize = 8;
    const ROUNDS: u64 = 10;
    let store = h.open().await;
    let mut winners = Vec::new();
    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let data = event("race", task as u64);
                    let id = data.metadata.id;
                    barrier.wait().await;
                    let result = store
                        .append("race", ExpectedVersion::Exact(round), vec![data])
                        .await;
                    (id, result)
                })
            })
            .collect();
        let mut won = Vec::new();
        for task in tasks {
            let (id, result) = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("an append hung")
                .unwrap();
            match result {
                Ok(appended) => {
                    assert_eq!(appended.version, round + 1);
                    won.push(id);
                }
                Err(StoreError::Conflict(conflict)) => {
                    assert_eq!(conflict.expected, ExpectedVersion::Exact(round));
                    assert_eq!(conflict.actual, round + 1, "round {round}");
                }
                Err(e) => panic!("round {round}: an append failed: {e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: one winner");
        winners.extend(won);
    }
    let stored = store.read_stream("race", 1, 100).await.unwrap();
    assert_eq!(ids(&stored), winners);
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=ROUNDS).collect::<Vec<_>>());
}

/// 8 tasks append 15 events each to one stream, reading its version and retrying on
/// conflicts: every event is stored once, with consecutive versions.
async fn concurrent_appends_with_retries(h: Harness) {
    const TASKS: u64 = 8;
    const EACH: u64 = 15;
    let store = h.open().await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut conflicts = 0;
                for n in 0..EACH {
                    let data = event("retry", task * 100 + n);
                    mine.push(data.metadata.id);
                    loop {
                        let version = store.stream_version("shared").await.unwrap();
                        match store
                            .append(
                                "shared",
                                ExpectedVersion::Exact(version),
                                vec![data.clone()],
                            )
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::Conflict(c)) => {
                                assert!(c.actual > version, "a conflict went backwards");
                                conflicts += 1;
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("an append failed: {e}"),
                        }
                    }
                }
                (mine, conflicts)
            })
        })
        .collect();
    let mut appended = HashSet::new();
    for task in tasks {
        let (mine, _conflicts) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a writer hung")
            .unwrap();
        appended.extend(mine);
    }
    let stored = store.read_stream("shared", 1, 1000).await.unwrap();
    assert_eq!(stored.len() as u64, TASKS * EACH);
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=TASKS * EACH).collect::<Vec<_>>());
    assert_eq!(
        stored.iter().map(|e| e.metadata.id).collect::<HashSet<_>>(),
        appended
    );
}

/// THE GAP TEST: 8 writers append ~250 events each (batches of 1 to 10, to streams of their
/// own) while a reader pages through `read_all(after, 50)`. The reader must see every event
/// exactly once, in strictly increasing positions: an event that commits after a later
/// position was read would be skipped for ever.
async fn read_all_never_skips_under_concurrent_appends(h: Harness) {
    const WRITERS: u64 = 8;
    const EACH: u64 = 250;
    let store = h.open().await;
    let writers_done = Arc::new(AtomicBool::new(false));

    let reader = {
        let store = store.clone();
        let writers_done = writers_done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            loop {
                // Read the flag first: an empty page after the writers finished means the
                // reader has caught up with everything.
                let done = writers_done.load(Ordering::SeqCst);
                let page = store.read_all(after, 50).await.unwrap();
                if page.is_empty() {
                    if done {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                for e in page {
                    assert!(
                        e.position > after,
                        "position {} after {after}: not strictly increasing",
                        e.position
                    );
                    after = e.position;
                    seen.push((e.position, e.metadata.id));
                }
            }
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut appended = Vec::new();
                let mut versions: HashMap<String, u64> = HashMap::new();
                // A small deterministic generator: batch sizes 1..=10, streams 0..4.
                let mut state = writer.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                while (appended.len() as u64) < EACH {
                    let size = (next() % 10 + 1).min(EACH - appended.len() as u64);
                    let stream = format!("gap-{writer}-{}", next() % 4);
                    let batch = events("gap", size);
                    appended.extend(batch.iter().map(|e| e.metadata.id));
                    let version = versions.entry(stream.clone()).or_default();
                    let expected = if *version == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(*version)
                    };
                    let result = store.append(&stream, expected, batch).await.unwrap();
                    assert_eq!(result.version, *version + size);
                    *version = result.version;
                }
                appended
            })
        })
        .collect();

    let checked = async {
        let mut appended = Vec::new();
        for writer in writers {
            appended.extend(writer.await.unwrap());
        }
        writers_done.store(true, Ordering::SeqCst);
        (appended, reader.await.unwrap())
    };
    let (appended, seen) = tokio::time::timeout(GAP_TIMEOUT, checked)
        .await
        .unwrap_or_else(|_| panic!("the reader did not see every event within {GAP_TIMEOUT:?}"));

    assert_eq!(appended.len() as u64, WRITERS * EACH);
    let appended_set: HashSet<MessageId> = appended.iter().copied().collect();
    assert_eq!(
        appended_set.len(),
        appended.len(),
        "appended ids are unique"
    );
    let mut seen_set = HashSet::new();
    for (position, id) in &seen {
        assert!(
            seen_set.insert(*id),
            "id {id} at position {position} seen twice"
        );
    }
    let missed: Vec<&MessageId> = appended_set.difference(&seen_set).collect();
    assert!(
        missed.is_empty(),
        "the reader skipped {} of {} events (committed behind a position it had read); \
         the first few: {:?}",
        missed.len(),
        appended.len(),
        &missed[..missed.len().min(5)]
    );
    assert_eq!(
        seen.len(),
        appended.len(),
        "the reader saw events nobody appended"
    );
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    // And a fresh read afterwards agrees.
    let everything = all_events(&store, 500).await;
    assert_eq!(everything.len(), appended.len());
}
