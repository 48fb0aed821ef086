//! Transactions on the store's own database: see [`StoreTx`].

use super::memory::Staged;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use super::record::{db, NewEvent};
use super::{Appended, Backend, EventData, ExpectedVersion, Store, StoreResult};
use crate::message::MessageId;

/// The stream that [`StoreTx::enqueue`] appends to.
pub const OUTBOX_STREAM: &str = "$outbox";

/// An open transaction on a [`Store`], from [`Store::begin`]: appends, checkpoints, processed
/// ids, saga state and the caller's own SQL, committed together or not at all. Dropped without
/// [`commit`](Self::commit), it rolls back.
///
/// A projection that writes its read-model rows and its checkpoint in one `StoreTx` has
/// exactly-once effects; a handler that records the message id it processed in the same
/// transaction as its own writes is an idempotent consumer that cannot half-apply; and a
/// handler that appends events in its transaction uses the event store as its outbox (the
/// events are relayed to the bus only once the transaction committed).
///
/// The inbox pattern, in a subscriber whose effects live in the store's database: record the
/// message id in the same transaction as the effects, and roll back if it was already there.
///
/// ```ignore
/// #[subscribe]
/// async fn charge(&mut self, event: &PaymentRequested, ctx: &mut Context<Self>) -> anyhow::Result<()> {
///     let mut tx = self.store.begin().await?;
///     if !tx.record_processed("payments", ctx.metadata().id).await? {
///         return Ok(tx.rollback().await?); // a redelivery: its effects are already committed
///     }
///     sqlx::query("UPDATE balances SET due = due - $1 WHERE account = $2")
///         .bind(event.amount)
///         .bind(&event.account)
///         .execute(tx.postgres().expect("PostgreSQL"))
///         .await?;
///     Ok(tx.commit().await?)
/// }
/// ```
///
/// ```
/// use eventdriven::store::{EventData, ExpectedVersion, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), eventdriven::store::StoreError> {
/// let store = Store::memory();
/// let mut tx = store.begin().await?;
/// // With SQLite or PostgreSQL, the handler's own SQL goes here: `tx.sqlite()`, `tx.postgres()`.
/// let event = EventData::json("price.changed", 1, &serde_json::json!({ "sku": "w-1" }))?;
/// tx.append("outbox-catalog", ExpectedVersion::Any, vec![event]).await?;
/// tx.save_checkpoint("catalog-view", 42).await?;
/// tx.commit().await?;
/// assert_eq!(store.load_checkpoint("catalog-view").await?, Some(42));
/// assert_eq!(store.stream_version("outbox-catalog").await?, 1);
/// # Ok(())
/// # }
/// ```
///
/// On SQLite it holds the store's one write connection until it ends (writers are serialised
/// there anyway); on PostgreSQL an [`append`](Self::append) takes the store's append lock until
/// the transaction ends, so keep transactions that append short. The memory store stages the
/// changes and applies them at commit, all or nothing.
#[must_use = "a transaction not committed rolls back"]
pub struct StoreTx {
    store: Store,
    inner: Inner,
    appended: bool,
}

enum Inner {
    Memory(Staged),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl std::fmt::Debug for StoreTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTx")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Begins a transaction.
    pub async fn begin(&self) -> StoreResult<StoreTx> {
        let inner = match &self.inner.backend {
            Backend::Memory(_) => Inner::Memory(Staged::default()),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(store) => Inner::Sqlite(store.begin().await?),
            #[cfg(feature = "postgres")]
            Backend::Postgres(store) => Inner::Postgres(store.begin().await?),
        };
        Ok(StoreTx {
            store: self.clone(),
            inner,
            appended: false,
        })
    }
}

impl StoreTx {
    /// The store this transaction is on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Appends `events` to `stream` if it is at `expected`, as part of the transaction.
    ///
    /// On the memory store the positions are assigned at commit: `first_position` and
    /// `last_position` are 0 here.
    pub async fn append(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> StoreResult<Appended> {
        self.appended |= !events.is_empty();
        match &mut self.inner {
            Inner::Memory(staged) => match &self.store.inner.backend {
                Backend::Memory(memory) => memory.stage_append(staged, stream, expected, events),
                #[allow(unreachable_patterns)]
                _ => unreachable!("a memory transaction belongs to a memory store"),
            },
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(tx) => {
                let rows = encode(&events)?;
                match super::sqlite::append_in(tx, stream, expected, &rows).await {
                    Ok(appended) => Ok(appended),
                    Err(super::sqlite::AppendError::Store(e)) => Err(e),
                    Err(super::sqlite::AppendError::Taken) => {
                        let actual = self.store.stream_version(stream).await?;
                        Err(super::ConcurrencyConflict {
                            stream: stream.to_owned(),
                            expected,
                            actual,
                        }
                        .into())
                    }
                }
            }
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => {
                let rows = encode(&events)?;
                match super::postgres::append_in(tx, stream, expected, &rows).await {
                    Ok(appended) => Ok(appended),
                    Err(super::postgres::AppendError::Store(e)) => Err(e),
                    Err(super::postgres::AppendError::Taken) => {
                        let actual = self.store.stream_version(stream).await?;
                        Err(super::ConcurrencyConflict {
                            stream: stream.to_owned(),
                            expected,
                            actual,
                        }
                        .into())
                    }
                }
            }
        }
    }

    /// The standalone outbox, for handlers that keep state in the store's database without
    /// event sourcing: stores `event` in the stream [`OUTBOX_STREAM`] as part of the
    /// transaction, so it exists exactly when the handler's own writes committed; a
    /// [`Relay`](crate::projection::Relay) then publishes it on the bus (and, later, to
    /// bridges), at least once.
    pub async fn enqueue<E: crate::Event + serde::Serialize>(
        &mut self,
        event: &E,
        metadata: crate::Metadata,
    ) -> StoreResult<()> {
        let data = EventData::from_event_with(event, metadata)?;
        self.append(OUTBOX_STREAM, ExpectedVersion::Any, vec![data])
            .await
            .map(drop)
    }

    /// Records how far the reader `name` got, as part of the transaction.
    pub async fn save_checkpoint(&mut self, name: &str, position: u64) -> StoreResult<()> {
        match &mut self.inner {
            Inner::Memory(staged) => {
                staged.checkpoints.push((name.to_owned(), position));
                Ok(())
            }
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(tx) => super::sqlite::save_checkpoint_on(&mut **tx, name, position).await,
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => {
                super::postgres::save_checkpoint_on(&mut **tx, name, position).await
            }
        }
    }

    /// Stores a saga instance as part of the transaction (a process manager's state with the
    /// checkpoint of the event that changed it).
    pub async fn save_saga(&mut self, record: &super::SagaRecord) -> StoreResult<()> {
        match &mut self.inner {
            Inner::Memory(staged) => {
                staged.sagas.push(record.clone());
                Ok(())
            }
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(tx) => super::sqlite::save_saga_on(&mut **tx, record, true)
                .await
                .map(drop),
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => super::postgres::save_saga_on(&mut **tx, record, true)
                .await
                .map(drop),
        }
    }

    /// Claims the checkpoint `name` for this transaction: `true` if it is still at `expected`
    /// (a missing one counts as 0). On PostgreSQL the row stays locked until the transaction
    /// ends, so a second reader of the same name waits and then sees the checkpoint moved; on
    /// SQLite writers are serialised anyway; the memory store checks again at commit. A
    /// reader that gets `false` rolls back and starts again from the stored checkpoint: two
    /// copies of one projection never both apply an event.
    pub async fn claim_checkpoint(&mut self, name: &str, expected: u64) -> StoreResult<bool> {
        match &mut self.inner {
            Inner::Memory(staged) => {
                let actual = self.store.load_checkpoint(name).await?.unwrap_or(0);
                staged.claims.push((name.to_owned(), expected));
                Ok(actual == expected)
            }
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(tx) => super::sqlite::claim_checkpoint_on(tx, name, expected).await,
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => super::postgres::claim_checkpoint_on(tx, name, expected).await,
        }
    }

    /// How far the reader `name` got, as this transaction sees it.
    pub async fn load_checkpoint(&mut self, name: &str) -> StoreResult<Option<u64>> {
        match &mut self.inner {
            Inner::Memory(staged) => match staged.checkpoints.iter().rev().find(|(n, _)| n == name)
            {
                Some((_, position)) => Ok(Some(*position)),
                None => self.store.load_checkpoint(name).await,
            },
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(tx) => super::sqlite::load_checkpoint_on(&mut **tx, name).await,
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => super::postgres::load_checkpoint_on(&mut **tx, name).await,
        }
    }

    /// Records that `consumer` processed message `id`, as part of the transaction; `false` if
    /// it was already recorded (the caller should then roll back: it is a duplicate).
    pub async fn record_processed(&mut self, consumer: &str, id: MessageId) -> StoreResult<bool> {
        match &mut self.inner {
            Inner::Memory(staged) => {
                if staged
                    .processed
                    .iter()
                    .any(|(c, i)| c == consumer && *i == id)
                    || self.store.is_processed(consumer, id).await?
                {
                    return Ok(false);
                }
                staged.processed.push((consumer.to_owned(), id));
                Ok(true)
            }
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(tx) => super::sqlite::record_processed_on(&mut **tx, consumer, id).await,
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => {
                super::postgres::record_processed_on(&mut **tx, consumer, id).await
            }
        }
    }

    /// The SQLite connection of the transaction, for the caller's own statements; `None` on
    /// another backend.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(&mut self) -> Option<&mut sqlx::SqliteConnection> {
        match &mut self.inner {
            Inner::Sqlite(tx) => Some(&mut **tx),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The PostgreSQL connection of the transaction, for the caller's own statements; `None`
    /// on another backend.
    #[cfg(feature = "postgres")]
    pub fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        match &mut self.inner {
            Inner::Postgres(tx) => Some(&mut **tx),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Commits everything the transaction did, or nothing.
    pub async fn commit(self) -> StoreResult<()> {
        let appended = self.appended;
        match self.inner {
            Inner::Memory(staged) => match &self.store.inner.backend {
                Backend::Memory(memory) => memory.apply_staged(staged)?,
                #[allow(unreachable_patterns)]
                _ => unreachable!("a memory transaction belongs to a memory store"),
            },
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(tx) => tx.commit().await.map_err(db)?,
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => tx.commit().await.map_err(db)?,
        }
        if appended {
            self.store.inner.appended.notify_waiters();
        }
        Ok(())
    }

    /// Undoes everything the transaction did.
    pub async fn rollback(self) -> StoreResult<()> {
        match self.inner {
            Inner::Memory(_) => Ok(()),
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(tx) => tx.rollback().await.map_err(db),
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => tx.rollback().await.map_err(db),
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn encode(events: &[EventData]) -> StoreResult<Vec<NewEvent>> {
    events.iter().map(NewEvent::encode).collect()
}
