//! The atomics that other threads touch in a slab's and a heap's records,
//! and the backoff of the remote-free protocol's waits: `core`'s normally,
//! loom's under `--cfg loom`, so that the protocol in `remote.rs` can be
//! model checked (`cargo xtask test` runs the loom models).
//!
//! ## Why a wait ends in sleeping
//! Every wait of the protocol is an owner waiting for a freer to leave a
//! window of a few instructions (BUSY set, the slab not yet announced). It
//! nearly always ends while spinning. But the freer may be preempted inside
//! the window, on the owner's own CPU: spinning then only burns the time
//! the freer needs. `sched_yield` helps a thread of equal priority; it does
//! not let a lower one run, so a `SCHED_FIFO` owner above a preempted
//! `SCHED_OTHER` freer would never give way by yielding alone (only the
//! kernel's real-time throttling, if it is on, would end that wait, after
//! up to 0.95 s). So after [`SPINS`] spins and [`YIELDS`] yields the
//! backoff sleeps, from 1 µs doubling up to [`MAX_SLEEP_NS`]: a sleeping
//! thread leaves the CPU to every other, whatever their priorities.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicUsize};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicUsize};

/// Steps of a wait that only spin (`core::hint::spin_loop`).
pub(crate) const SPINS: u32 = 64;
/// Steps after the spins that yield the CPU (`sched_yield`).
pub(crate) const YIELDS: u32 = 16;
/// The longest sleep of one step, in nanoseconds (1 ms).
pub(crate) const MAX_SLEEP_NS: u64 = 1_000_000;

/// What one step of a wait does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Spin,
    Yield,
    /// Sleep this many nanoseconds.
    Sleep(u64),
}

impl Step {
    /// The step number `n` (from 0) of a wait.
    pub(crate) const fn nth(n: u32) -> Step {
        if n < SPINS {
            Step::Spin
        } else if n < SPINS + YIELDS {
            Step::Yield
        } else {
            let doublings = n - SPINS - YIELDS;
            // 1 µs << 10 is past the cap already; larger shifts never run.
            if doublings >= 10 {
                Step::Sleep(MAX_SLEEP_NS)
            } else {
                let ns = 1000u64 << doublings;
                Step::Sleep(if ns < MAX_SLEEP_NS { ns } else { MAX_SLEEP_NS })
            }
        }
    }
}

/// A bounded spin, then yields, then sleeps: the wait of an owner for a
/// freer (see the module docs). Under loom every step is a yield, so the
/// model checker schedules the thread being waited for.
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(crate) const fn new() -> Self {
        Self { step: 0 }
    }

    /// Waits one step.
    #[inline]
    pub(crate) fn snooze(&mut self) {
        let step = Step::nth(self.step);
        self.step = self.step.saturating_add(1);
        #[cfg(loom)]
        {
            let _ = step;
            loom::thread::yield_now();
        }
        #[cfg(not(loom))]
        match step {
            Step::Spin => core::hint::spin_loop(),
            // SAFETY: sched_yield has no preconditions.
            Step::Yield => unsafe {
                libc::sched_yield();
            },
            Step::Sleep(ns) => {
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: ns as libc::c_long,
                };
                // An early wake-up by a signal only shortens the step.
                // SAFETY: `ts` is a valid timespec; no remainder asked for.
                unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Backoff, Step, MAX_SLEEP_NS, SPINS, YIELDS};

    #[test]
    fn a_wait_spins_a_bounded_time_then_yields_then_sleeps_longer_and_longer() {
        for n in 0..SPINS {
            assert_eq!(Step::nth(n), Step::Spin, "step {n}");
        }
        for n in SPINS..SPINS + YIELDS {
            assert_eq!(Step::nth(n), Step::Yield, "step {n}");
        }
        let mut last = 0;
        for n in SPINS + YIELDS..SPINS + YIELDS + 40 {
            let Step::Sleep(ns) = Step::nth(n) else {
                panic!("step {n} does not sleep");
            };
            assert!(ns >= last && ns <= MAX_SLEEP_NS, "step {n}: {ns} ns");
            last = ns;
        }
        assert_eq!(Step::nth(SPINS + YIELDS), Step::Sleep(1000));
        assert_eq!(last, MAX_SLEEP_NS);
        assert_eq!(Step::nth(u32::MAX), Step::Sleep(MAX_SLEEP_NS));
    }

    #[test]
    fn a_long_wait_neither_overflows_nor_stops_sleeping() {
        let mut b = Backoff { step: u32::MAX - 1 };
        b.snooze();
        b.snooze();
        assert_eq!(b.step, u32::MAX);
        assert_eq!(Step::nth(b.step), Step::Sleep(MAX_SLEEP_NS));
    }
}
