//! Wall-clock time for message timestamps, cheaper than `SystemTime::now()`.
//!
//! Every message is stamped when it is made, so reading the clock is on the path of every
//! send. `SystemTime::now()` is a vDSO `clock_gettime` (a time-stamp-counter read, a seqlock
//! and a conversion), measured at 35 ns a call on the 2-core machines this project is built on,
//! about a sixth of a `tell`. Here each thread keeps an anchor (a TSC reading and the wall time
//! read with it) and turns later TSC readings into wall time with the measured rate of the
//! counter: one `rdtsc` and a multiplication, 9.6 ns. `cargo bench -p eventdriven-benches
//! --bench clock` compares the two.
//!
//! It is used only where it is sound: on x86_64, when the kernel itself keeps time with the
//! TSC (its clock source is `tsc`, which Linux selects only for an invariant counter that is
//! synchronised across cores). Anywhere else [`now_nanos`] reads `SystemTime`.
//!
//! Accuracy: a thread re-reads the system clock once a second, so a step of the wall clock
//! shows within a second; between anchors the error is the rate's, measured over at least
//! 10 ms at first and over a second from then on (the unit test holds it within a millisecond
//! of `SystemTime` over 60 ms). Until the rate is known (the first 10 ms of the process) every
//! call reads the system clock.

use std::time::SystemTime;

/// Nanoseconds since the Unix epoch from the system clock (0 before the epoch).
fn system_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Now, in nanoseconds since the Unix epoch.
#[inline]
pub(crate) fn now_nanos() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if let Some(nanos) = tsc::now_nanos() {
        return nanos;
    }
    system_nanos()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod tsc {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

    /// A thread reads the system clock again after this long.
    const REANCHOR_NS: u64 = 1_000_000_000;
    /// The shortest span over which the counter's rate is measured.
    const MIN_SPAN_NS: u64 = 10_000_000;
    /// A system-clock read that took longer than this many ticks (the thread was preempted
    /// in between, say) does not measure the rate.
    const MAX_READ_TICKS: u64 = 20_000;

    /// Whether the counter can be used: 0 not checked yet, 1 yes, 2 no.
    static USABLE: AtomicU8 = AtomicU8::new(0);
    /// Nanoseconds per tick, as `f64` bits; 0 until measured.
    static NS_PER_TICK: AtomicU64 = AtomicU64::new(0);

    #[derive(Clone, Copy)]
    struct Anchor {
        tsc: u64,
        nanos: u64,
    }

    thread_local! {
        static ANCHOR: Cell<Option<Anchor>> = const { Cell::new(None) };
    }

    #[inline]
    #[allow(unsafe_code)]
    fn rdtsc() -> u64 {
        // SAFETY: `rdtsc` only reads the time-stamp counter into registers; every x86_64 CPU
        // has the instruction, and it touches no memory. (The intrinsic is `unsafe` only as
        // all of `core::arch` is.)
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    #[inline]
    fn usable() -> bool {
        match USABLE.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => check(),
        }
    }

    /// Reads the kernel's clock source once.
    #[cold]
    fn check() -> bool {
        let tsc = std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|source| source.trim() == "tsc");
        USABLE.store(if tsc { 1 } else { 2 }, Ordering::Relaxed);
        tsc
    }

    /// Now from the counter, or `None` where the counter cannot be used.
    #[inline]
    pub(super) fn now_nanos() -> Option<u64> {
        if !usable() {
            return None;
        }
        let tsc = rdtsc();
        let rate = f64::from_bits(NS_PER_TICK.load(Ordering::Relaxed));
        let anchor = ANCHOR.with(Cell::get);
        if let Some(anchor) = anchor {
            if rate > 0.0 && tsc >= anchor.tsc {
                let elapsed = ((tsc - anchor.tsc) as f64 * rate) as u64;
                if elapsed < REANCHOR_NS {
                    return Some(anchor.nanos + elapsed);
                }
            }
        }
        Some(reanchor(anchor, rate))
    }

    /// Reads the system clock, anchors this thread to it, and measures the counter's rate
    /// against the previous anchor when that is far enough back.
    #[cold]
    fn reanchor(previous: Option<Anchor>, rate: f64) -> u64 {
        let before = rdtsc();
        let nanos = super::system_nanos();
        let after = rdtsc();
        let read = after.wrapping_sub(before);
        if after < before || read > MAX_READ_TICKS {
            // Preempted or migrated mid-read: the pair is not precise enough to anchor.
            return nanos;
        }
        let here = Anchor {
            tsc: before + read / 2,
            nanos,
        };
        let keep_previous = match previous {
            Some(prev) if here.tsc > prev.tsc && here.nanos > prev.nanos => {
                let span = here.nanos - prev.nanos;
                if span >= MIN_SPAN_NS {
                    let measured = span as f64 / (here.tsc - prev.tsc) as f64;
                    // Counters run between 10 MHz and 100 GHz; anything else is a clock step.
                    if (0.01..100.0).contains(&measured) {
                        NS_PER_TICK.store(measured.to_bits(), Ordering::Relaxed);
                    }
                    false
                } else {
                    // Too close to measure a rate: keep the older anchor until one is known.
                    rate == 0.0
                }
            }
            _ => false,
        };
        if !keep_previous {
            ANCHOR.with(|cell| cell.set(Some(here)));
        }
        nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_system_clock() {
        // Over more than the calibration span, the two clocks stay within a millisecond.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(60);
        let mut checked = 0;
        while std::time::Instant::now() < deadline {
            let (before, ours, after) = (system_nanos(), now_nanos(), system_nanos());
            assert!(
                ours + 1_000_000 >= before && ours <= after + 1_000_000,
                "clock {ours} outside [{before}, {after}] by more than 1 ms"
            );
            checked += 1;
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        assert!(checked > 10);
    }
}
