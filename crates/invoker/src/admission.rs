//! Admission: whether an invocation may start now, may wait for a bounded time in a
//! bounded queue, or is throttled. Two gates, in this order:
//!
//! 1. The function's own: at most `limits.concurrency()` at once (its reservation if it has
//!    one, else `max_concurrency`). A caller that finds it full waits in the function's
//!    queue (at most `queue_depth` waiters, at most `queue_wait`).
//! 2. The node's capacity, a memory budget in MiB: each running invocation holds its
//!    function's configured memory. Reserved concurrency is carved out of the budget up
//!    front (`reservation × memory`), so functions without a reservation share only what
//!    is left and can never take a reserved function's capacity; a reserved function does
//!    not use the shared part at all.
//!
//! The waits share one deadline. Nothing here knows about HTTP: the caller turns a refusal
//! into 429 (or, for async events, a retry later).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long and how many callers may wait for a busy function.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub wait: Duration,
    pub depth: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            wait: Duration::from_secs(10),
            depth: 1000,
        }
    }
}

/// A function's concurrency gate and its queue. Kept across versions while the
/// function's concurrency is unchanged, so a redeploy does not double it.
#[derive(Debug)]
pub struct Gate {
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) size: u32,
    queued: AtomicU32,
}

impl Gate {
    pub fn new(size: u32) -> Self {
        Gate {
            permits: Arc::new(Semaphore::new(size as usize)),
            size,
            queued: AtomicU32::new(0),
        }
    }

    /// Invocations running now.
    pub fn in_use(&self) -> u32 {
        self.size
            .saturating_sub(self.permits.available_permits() as u32)
    }

    /// Callers waiting now.
    pub fn queued(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }
}

/// The node's memory budget, in MiB.
#[derive(Debug)]
pub struct Capacity {
    budget_mb: u64,
    /// Set aside for functions with reserved concurrency.
    reserved_mb: AtomicU64,
    /// Held by running invocations of functions without a reservation.
    used_mb: AtomicU64,
    released: Notify,
}

/// Why an invocation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The function ran `limit` invocations and its queue was full or the wait ran out.
    Function { limit: u32, waited: Duration },
    /// The node's shared capacity was used up for the whole wait.
    Node { budget_mb: u64, shared_mb: u64 },
}

/// What an admitted invocation holds until it ends.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    _capacity: Option<CapacityGuard>,
}

#[derive(Debug)]
struct CapacityGuard {
    capacity: Arc<Capacity>,
    mb: u64,
}

impl Drop for CapacityGuard {
    fn drop(&mut self) {
        self.capacity.used_mb.fetch_sub(self.mb, Ordering::AcqRel);
        self.capacity.released.notify_waiters();
    }
}

impl Capacity {
    pub fn new(budget_mb: u64) -> Arc<Self> {
        Arc::new(Capacity {
            budget_mb,
            reserved_mb: AtomicU64::new(0),
            used_mb: AtomicU64::new(0),
            released: Notify::new(),
        })
    }

    /// The node's budget from `/proc/meminfo`: 90% of the machine's memory.
    pub fn default_budget_mb() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map(|kib| kib / 1024 * 9 / 10)
            .unwrap_or(4096)
    }

    pub fn budget_mb(&self) -> u64 {
        self.budget_mb
    }

    /// What functions without a reservation share.
    pub fn shared_mb(&self) -> u64 {
        self.budget_mb
            .saturating_sub(self.reserved_mb.load(Ordering::Acquire))
    }

    pub fn used_mb(&self) -> u64 {
        self.used_mb.load(Ordering::Acquire)
    }

    /// Sets the total reservation (on every registry change).
    pub fn set_reserved_mb(&self, mb: u64) {
        self.reserved_mb.store(mb, Ordering::Release);
        self.released.notify_waiters();
    }

    fn try_take(self: &Arc<Self>, mb: u64) -> Option<CapacityGuard> {
        let limit = self.shared_mb();
        self.used_mb
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + mb <= limit).then_some(used + mb)
            })
            .ok()
            .map(|_| CapacityGuard {
                capacity: self.clone(),
                mb,
            })
    }

    async fn take(self: &Arc<Self>, mb: u64, deadline: Instant) -> Option<CapacityGuard> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(g) = self.try_take(mb) {
                return Some(g);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.try_take(mb);
            }
        }
    }
}

/// Admits one invocation of a function with `memory_mb` of memory, or says why not.
pub async fn admit(
    gate: &Gate,
    capacity: &Arc<Capacity>,
    reserved: bool,
    memory_mb: u64,
    queue: QueueConfig,
) -> Result<Admission, Refusal> {
    let started = Instant::now();
    let deadline = started + queue.wait;
    let permit = match gate.permits.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            let refused = || Refusal::Function {
                limit: gate.size,
                waited: started.elapsed(),
            };
            if gate.queued.fetch_add(1, Ordering::AcqRel) >= queue.depth {
                gate.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(refused());
            }
            let waited =
                tokio::time::timeout_at(deadline, gate.permits.clone().acquire_owned()).await;
            gate.queued.fetch_sub(1, Ordering::AcqRel);
            match waited {
                Ok(Ok(p)) => p,
                _ => return Err(refused()),
            }
        }
    };
    let capacity_guard = if reserved {
        None
    } else {
        match capacity.take(memory_mb, deadline).await {
            Some(g) => Some(g),
            None => {
                return Err(Refusal::Node {
                    budget_mb: capacity.budget_mb,
                    shared_mb: capacity.shared_mb(),
                });
            }
        }
    };
    Ok(Admission {
        _permit: permit,
        _capacity: capacity_guard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(wait_ms: u64, depth: u32) -> QueueConfig {
        QueueConfig {
            wait: Duration::from_millis(wait_ms),
            depth,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_function_queues_then_refuses() {
        let gate = Arc::new(Gate::new(1));
        let cap = Capacity::new(1024);
        let first = admit(&gate, &cap, false, 128, q(100, 10)).await.unwrap();
        assert_eq!(gate.in_use(), 1);
        // The second waits in the queue until the first ends.
        let (g, c) = (gate.clone(), cap.clone());
        let second =
            tokio::spawn(async move { admit(&g, &c, false, 128, q(100, 10)).await.map(drop) });
        let waited = tokio::time::Instant::now();
        while gate.queued() != 1 && waited.elapsed() < Duration::from_secs(10) {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(gate.queued(), 1);
        drop(first);
        assert!(
            second.await.unwrap().is_ok(),
            "admitted once the first ended"
        );
        assert_eq!(gate.queued(), 0);
        // Hold it again: a waiter gives up after the wait.
        let _held = admit(&gate, &cap, false, 128, q(100, 10)).await.unwrap();
        let r = admit(&gate, &cap, false, 128, q(100, 10)).await;
        assert!(
            matches!(r, Err(Refusal::Function { limit: 1, waited }) if waited >= Duration::from_millis(100)),
            "{r:?}"
        );
        // A full queue refuses at once.
        let r = admit(&gate, &cap, false, 128, q(100, 0)).await;
        assert!(
            matches!(r, Err(Refusal::Function { waited, .. }) if waited < Duration::from_millis(1)),
            "{r:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_are_carved_out_of_the_shared_capacity() {
        let cap = Capacity::new(512);
        cap.set_reserved_mb(256);
        let busy = Gate::new(100);
        let a = admit(&busy, &cap, false, 128, q(10, 10)).await.unwrap();
        let b = admit(&busy, &cap, false, 128, q(10, 10)).await.unwrap();
        assert_eq!(cap.used_mb(), 256);
        let r = admit(&busy, &cap, false, 128, q(10, 10)).await;
        assert!(
            matches!(r, Err(Refusal::Node { shared_mb: 256, .. })),
            "{r:?}"
        );
        // A reserved function still runs, up to its own reservation.
        let reserved = Gate::new(2);
        let r1 = admit(&reserved, &cap, true, 128, q(10, 10)).await.unwrap();
        let r2 = admit(&reserved, &cap, true, 128, q(10, 10)).await.unwrap();
        assert!(admit(&reserved, &cap, true, 128, q(10, 10)).await.is_err());
        drop((a, b, r1, r2));
        assert_eq!(cap.used_mb(), 0);
    }
}
