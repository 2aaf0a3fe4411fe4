//! 5. Executor cost per HTTP call, natively, next to `futures::executor::LocalPool`.
//!
//! What is timed is one spawn→pend→wake→complete cycle of `proxy-async-executor`, and the same
//! cycle on `futures::executor::LocalPool`.
//!
//! One cycle is what the SDK does with the executor for a hook that makes one call:
//! 1. the reply handle is created (ours: `Registry::register(token)`, the token the host returned
//!    for the dispatched call; theirs: a `oneshot` channel), and a task awaiting it is spawned
//!    (both box the future and allocate their per-task waker state, as they always do);
//! 2. `run_until_stalled`: the task is polled once and pends on the reply;
//! 3. the reply is delivered from outside the executor, as the host's `on_http_call_response`
//!    callback does (ours: `Registry::complete(token, reply)`; theirs: `Sender::send`), which
//!    wakes the task;
//! 4. `run_until_stalled`: the task is polled again, finishes, and is freed.
//!
//! Both executors (and the registry) are created once and reused by every cycle, so what is
//! measured is the steady state: no slab, map or queue grows after the warm-up. The task's
//! future checks that it got its own reply and counts itself done; the tests check that count,
//! so a cycle that stops short of completing its task cannot go unnoticed.
//!
//! In the SDK the token is registered during the task's first poll (the hook dispatches the
//! call, then awaits it); here it is registered just before the spawn, like the `oneshot` is
//! created just before the spawn on the `LocalPool` side. The work done is the same, one map
//! insertion, and it keeps the two sides the same shape.
//!
//! Timing uses `std::time::Instant`: after one discarded warm-up sample per side, each sample
//! times `N` back-to-back cycles and divides by `N`; the two sides alternate which goes first in
//! each sample, so that drift (frequency scaling, a noisy neighbour) hits both alike.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;
use futures::executor::{LocalPool, LocalSpawner};
use futures::task::LocalSpawnExt;
use proxy_async_executor::{Executor, Owner, Registry};

/// Samples per side in a normal run.
const SAMPLES: usize = 30;
/// Samples per side in a `--quick` run.
const QUICK_SAMPLES: usize = 5;
/// Cycles timed by one sample in a normal run.
const CYCLES: usize = 100_000;
/// Cycles timed by one sample in a `--quick` run.
const QUICK_CYCLES: usize = 10_000;

/// The distribution of one side's samples, in nanoseconds per cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    /// The median sample.
    pub(crate) median_ns: f64,
    /// The 10th percentile (linear interpolation between the closest samples).
    pub(crate) p10_ns: f64,
    /// The 90th percentile (linear interpolation between the closest samples).
    pub(crate) p90_ns: f64,
    /// How many samples the figures are taken over.
    pub(crate) samples: usize,
}

/// The cost of one spawn→pend→wake→complete cycle on each executor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CycleResult {
    /// `proxy_async_executor::Executor` with a `Registry<u32>`.
    pub(crate) ours: Stats,
    /// `futures::executor::LocalPool` with a `futures::channel::oneshot`.
    pub(crate) local_pool: Stats,
    /// How many cycles each sample timed.
    pub(crate) cycles_per_sample: usize,
}

/// Measures both executors: 30 samples of 100,000 cycles each, or 5 of 10,000 when `quick`.
pub(crate) fn measure(quick: bool) -> CycleResult {
    let (samples, cycles) = if quick {
        (QUICK_SAMPLES, QUICK_CYCLES)
    } else {
        (SAMPLES, CYCLES)
    };
    let mut ours = Ours::new();
    let mut theirs = Theirs::new();

    // Warm-up: caches, branch predictors, and every allocation pool and collection sized.
    time(|| ours.cycles(cycles), cycles);
    time(|| theirs.cycles(cycles), cycles);

    let mut ours_ns = Vec::with_capacity(samples);
    let mut theirs_ns = Vec::with_capacity(samples);
    for sample in 0..samples {
        if sample % 2 == 0 {
            ours_ns.push(time(|| ours.cycles(cycles), cycles));
            theirs_ns.push(time(|| theirs.cycles(cycles), cycles));
        } else {
            theirs_ns.push(time(|| theirs.cycles(cycles), cycles));
            ours_ns.push(time(|| ours.cycles(cycles), cycles));
        }
    }
    black_box((ours.done.get(), theirs.done.get()));

    CycleResult {
        ours: stats(ours_ns),
        local_pool: stats(theirs_ns),
        cycles_per_sample: cycles,
    }
}

/// Runs `run` (which performs `cycles` cycles) once and returns its nanoseconds per cycle.
fn time(mut run: impl FnMut() -> usize, cycles: usize) -> f64 {
    let start = Instant::now();
    let work = run();
    let elapsed = start.elapsed();
    black_box(work);
    elapsed.as_secs_f64() * 1e9 / cycles.max(1) as f64
}

fn stats(mut samples: Vec<f64>) -> Stats {
    samples.sort_by(f64::total_cmp);
    Stats {
        median_ns: percentile(&samples, 0.5),
        p10_ns: percentile(&samples, 0.1),
        p90_ns: percentile(&samples, 0.9),
        samples: samples.len(),
    }
}

/// The `q` quantile of `sorted` (ascending), interpolating linearly between the two closest
/// samples; NaN for no samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let rank = q.clamp(0.0, 1.0) * last as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Our executor and the registry the SDK keeps beside it, reused by every cycle.
struct Ours {
    executor: Executor,
    calls: Registry<u32>,
    /// How many tasks finished with their own reply.
    done: Rc<Cell<u64>>,
    /// The next host token; hosts hand out distinct tokens.
    next_token: u32,
}

impl Ours {
    fn new() -> Self {
        Ours {
            executor: Executor::new(),
            calls: Registry::new(),
            done: Rc::new(Cell::new(0)),
            next_token: 1,
        }
    }

    /// Runs `n` cycles; returns how many polls the executor made (two per cycle: the one that
    /// pends and the one that finishes).
    fn cycles(&mut self, n: usize) -> usize {
        let mut polls = 0;
        for _ in 0..n {
            let token = self.next_token;
            self.next_token = token.wrapping_add(1);
            // Each cycle's future consumes its token before the next cycle starts, so the
            // registry never holds a token when it comes round again.
            let reply = self
                .calls
                .register(token)
                .expect("every token is consumed by its own cycle before it is reused");
            let done = Rc::clone(&self.done);
            // The stream's context id is the task's owner, as in the SDK.
            black_box(self.executor.spawn(Owner(token), async move {
                if reply.await == token {
                    done.set(done.get() + 1);
                }
            }));
            // The hook runs up to its await and pends.
            polls += self.executor.run_until_stalled();
            // The host's callback delivers the reply...
            black_box(self.calls.complete(token, black_box(token)));
            // ...and drains: the task finishes and is freed.
            polls += self.executor.run_until_stalled();
        }
        polls
    }
}

/// `futures`' single-threaded executor, reused by every cycle.
struct Theirs {
    pool: LocalPool,
    spawner: LocalSpawner,
    /// How many tasks finished with their own reply.
    done: Rc<Cell<u64>>,
    /// The value sent to the next task.
    next_token: u32,
}

impl Theirs {
    fn new() -> Self {
        let pool = LocalPool::new();
        let spawner = pool.spawner();
        Theirs {
            pool,
            spawner,
            done: Rc::new(Cell::new(0)),
            next_token: 1,
        }
    }

    /// Runs `n` cycles; returns how many replies were sent to a waiting receiver.
    fn cycles(&mut self, n: usize) -> usize {
        let mut sent = 0;
        for _ in 0..n {
            let token = self.next_token;
            self.next_token = token.wrapping_add(1);
            let (sender, receiver) = oneshot::channel::<u32>();
            let done = Rc::clone(&self.done);
            self.spawner
                .spawn_local(async move {
                    if receiver.await == Ok(token) {
                        done.set(done.get() + 1);
                    }
                })
                // Fails only once the pool is dropped, and `self` owns the pool.
                .expect("the LocalPool outlives its spawner");
            // The task runs up to its await and pends.
            self.pool.run_until_stalled();
            // The reply arrives from outside the pool...
            sent += usize::from(black_box(sender.send(black_box(token))).is_ok());
            // ...and the pool drains: the task finishes and is freed.
            self.pool.run_until_stalled();
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_cycle_pends_then_completes_and_frees_the_task() {
        let mut ours = Ours::new();
        let polls = ours.cycles(1_000);
        // Two polls per cycle: had the task not pended on its first poll, or not been woken by
        // `complete`, there would be one.
        assert_eq!(polls, 2_000);
        assert_eq!(ours.done.get(), 1_000, "every task got its own reply");
        assert!(ours.executor.is_empty(), "every finished task is freed");
        assert!(ours.calls.is_empty(), "every token is consumed");
    }

    #[test]
    fn local_pool_cycle_pends_then_completes_the_task() {
        let mut theirs = Theirs::new();
        // A send succeeds only while the receiver lives: the task had pended on it.
        assert_eq!(theirs.cycles(1_000), 1_000);
        assert_eq!(theirs.done.get(), 1_000, "every task got its own reply");
    }

    #[test]
    fn percentiles_interpolate_between_samples() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&sorted, 0.5), 3.0);
        assert!((percentile(&sorted, 0.1) - 1.4).abs() < 1e-9);
        assert!((percentile(&sorted, 0.9) - 4.6).abs() < 1e-9);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert!(percentile(&[], 0.5).is_nan());
        let stats = stats(vec![5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!((stats.median_ns, stats.samples), (3.0, 5));
    }

    #[test]
    fn quick_measure_reports_positive_finite_figures() {
        let result = measure(true);
        assert_eq!(result.cycles_per_sample, QUICK_CYCLES);
        for (side, stats) in [("ours", result.ours), ("LocalPool", result.local_pool)] {
            assert_eq!(stats.samples, QUICK_SAMPLES, "{side}");
            for figure in [stats.p10_ns, stats.median_ns, stats.p90_ns] {
                assert!(figure.is_finite() && figure > 0.0, "{side}: {stats:?}");
            }
            assert!(
                stats.p10_ns <= stats.median_ns && stats.median_ns <= stats.p90_ns,
                "{side}: {stats:?}"
            );
        }
    }
}
