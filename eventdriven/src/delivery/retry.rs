//! Retry policies: how many attempts, how long between them, which errors are worth it.

use std::any::Any;
use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

/// A failed handler's error, as retry predicates see it.
///
/// `message` is the error's text (`{:#}`, so anyhow shows its chain); `downcast_ref` reaches
/// the error value the handler returned, to tell permanent errors from transient ones.
pub struct HandlerError {
    message: String,
    error: Option<Box<dyn Any + Send>>,
    panicked: bool,
    /// Already retried or dead-lettered by the handler's own arm (a command handler with a
    /// retry policy): the runtime only applies supervision.
    pub(crate) settled: bool,
}

impl HandlerError {
    /// An error from a handler's `Err` value.
    pub fn new<E: fmt::Display + Send + 'static>(error: E) -> Self {
        Self {
            message: format!("{error:#}"),
            error: Some(Box::new(error)),
            panicked: false,
            settled: false,
        }
    }

    /// An error known by its text only (a command's `Err` reply, which goes to its sender).
    pub(crate) fn text(message: String) -> Self {
        Self {
            message,
            error: None,
            panicked: false,
            settled: false,
        }
    }

    /// An error from a panic, with its text.
    pub(crate) fn panic(message: String) -> Self {
        Self {
            message,
            error: None,
            panicked: true,
            settled: false,
        }
    }

    /// The error's text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the handler panicked rather than returned an error.
    pub fn panicked(&self) -> bool {
        self.panicked
    }

    /// The error value the handler returned, if it is an `E` (for example `anyhow::Error`
    /// or your own error type).
    pub fn downcast_ref<E: 'static>(&self) -> Option<&E> {
        self.error.as_deref()?.downcast_ref()
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message)
            .field("panicked", &self.panicked)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Exponential backoff between attempts, `min` doubling up to `max`, with jitter.
///
/// With jitter (the default) the delay before retry `n` (1-based) is drawn uniformly from
/// `[d/2, d]` where `d = min(max, min * 2^(n-1))`: retries of many messages spread out instead
/// of hitting a recovering dependency together, and never come sooner than half the nominal
/// delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// Doubles from `min` up to `max`, with jitter.
    pub const fn exponential(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            jitter: true,
        }
    }

    /// The same delay every time.
    pub const fn fixed(delay: Duration) -> Self {
        Self {
            min: delay,
            max: delay,
            jitter: false,
        }
    }

    /// Turns jitter off (exact delays, for tests and for reasoning about schedules).
    pub const fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// Parses `"100ms..10s"` (or a single `"250ms"` for a fixed delay). Units: `ms`, `s`,
    /// `m`, `h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once("..") {
            Some((min, max)) => {
                let (min, max) = (parse_duration(min)?, parse_duration(max)?);
                if min > max {
                    return Err(format!(
                        "backoff `{text}`: the minimum is above the maximum"
                    ));
                }
                Ok(Self::exponential(min, max))
            }
            None => Ok(Self::fixed(parse_duration(text)?)),
        }
    }

    /// The nominal (jitter-free) delay before retry `retry` (1-based).
    pub fn nominal(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(31);
        self.min
            .checked_mul(1u32 << shift)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before retry `retry` (1-based), with jitter if enabled.
    pub fn delay(&self, retry: u32) -> Duration {
        let nominal = self.nominal(retry);
        if !self.jitter || nominal.is_zero() {
            return nominal;
        }
        let half = nominal / 2;
        let spread = (nominal - half).as_nanos() as u64;
        half + Duration::from_nanos(random_u64() % spread.saturating_add(1))
    }
}

/// Parses `"150ms"`, `"2s"`, `"5m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write `100ms`, `2s`, `5m` or `1h`"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "unknown unit `{unit}` in `{text}`: use `ms`, `s`, `m` or `h`"
        )),
    }
}

/// xorshift64*, seeded per thread from the OS-seeded `RandomState`; jitter needs spread, not
/// cryptographic quality.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

type Predicate = Arc<dyn Fn(&HandlerError) -> bool + Send + Sync>;

/// How a failed message is retried before it goes to the dead letters.
///
/// ```
/// use std::time::Duration;
/// use eventdriven::delivery::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::retries(5)
///     .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)))
///     .retry_if(|e| !e.message().starts_with("invalid"));
/// assert_eq!(policy.max_attempts(), 6);
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
    retryable: Option<Predicate>,
}

impl RetryPolicy {
    /// No retry: the first failure dead-letters the message.
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            backoff: Backoff::fixed(Duration::ZERO),
            retryable: None,
        }
    }

    /// Up to `retries` more attempts after the first (`#[subscribe(retry = N)]`), 100 ms
    /// doubling to 10 s by default.
    pub const fn retries(retries: u32) -> Self {
        Self {
            max_attempts: retries.saturating_add(1),
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)),
            retryable: None,
        }
    }

    /// Sets the backoff between attempts.
    pub const fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Retries only errors for which `predicate` is true; others are permanent and go to the
    /// dead letters at once.
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&HandlerError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retryable = Some(Arc::new(predicate));
        self
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff.
    pub fn backoff_schedule(&self) -> Backoff {
        self.backoff
    }

    /// The delay before the next attempt after `attempt` failed with `error`, or `None` when
    /// the message should be dead-lettered.
    pub fn next_delay(&self, attempt: u32, error: &HandlerError) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        if let Some(retryable) = &self.retryable {
            if !retryable(error) {
                return None;
            }
        }
        Some(self.backoff.delay(attempt))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("retry_if", &self.retryable.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let b = Backoff::parse("100ms..1s").unwrap().without_jitter();
        let delays: Vec<_> = (1..=6).map(|n| b.delay(n)).collect();
        assert_eq!(
            delays,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
    }

    #[test]
    fn jitter_stays_between_half_and_the_nominal_delay() {
        let b = Backoff::exponential(100 * MS, 10_000 * MS);
        for retry in 1..=10 {
            let nominal = b.nominal(retry);
            for _ in 0..100 {
                let d = b.delay(retry);
                assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
            }
        }
    }

    #[test]
    fn parse_rejects_nonsense_with_advice() {
        assert!(Backoff::parse("10s..1s")
            .unwrap_err()
            .contains("above the maximum"));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert_eq!(Backoff::parse("250ms").unwrap(), Backoff::fixed(250 * MS));
    }

    #[test]
    fn policy_counts_attempts_and_honours_the_predicate() {
        let policy = RetryPolicy::retries(2).retry_if(|e| e.message() != "permanent");
        let transient = HandlerError::new("flaky");
        assert!(policy.next_delay(1, &transient).is_some());
        assert!(policy.next_delay(2, &transient).is_some());
        assert!(policy.next_delay(3, &transient).is_none());
        assert!(policy
            .next_delay(1, &HandlerError::new("permanent"))
            .is_none());
        assert!(RetryPolicy::none().next_delay(1, &transient).is_none());
    }

    #[test]
    fn downcast_reaches_the_original_error() {
        #[derive(Debug)]
        struct Mine;
        impl fmt::Display for Mine {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("mine")
            }
        }
        let e = HandlerError::new(Mine);
        assert!(e.downcast_ref::<Mine>().is_some());
        assert!(e.downcast_ref::<String>().is_none());
    }
}
