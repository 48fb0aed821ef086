//! Delivery machinery: retry policies with backoff, the dead-letter queue, idempotent
//! consumers and scheduled messages.

pub(crate) mod completion;
mod dead_letter;
pub(crate) mod durable;
pub(crate) mod idempotency;
mod retry;
pub(crate) mod schedule;

pub(crate) use dead_letter::{Crossed, NewDeadLetter};
pub use dead_letter::{DeadLetter, DeadLetterThresholdExceeded, DeadLetters, Filter, Reason};
pub use idempotency::{IdempotencyWindow, MemoryProcessedIds, ProcessedIds};
pub use retry::{parse_duration, Backoff, HandlerError, RetryPolicy};
pub use schedule::Scheduled;
