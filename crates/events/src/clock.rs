//! Time for the engine: the system clock in production, a manual one in tests.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

/// A source of "now" that can also wait. Everything time-dependent in this crate (leases,
/// backoff, visibility timeouts, batch windows, schedules) reads it, so tests can jump
/// hours ahead without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// Resolves once `now() >= deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The wall clock, with tokio timers for waiting.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let wait = deadline.as_millisecond() - Timestamp::now().as_millisecond();
        Box::pin(tokio::time::sleep(Duration::from_millis(
            u64::try_from(wait).unwrap_or(0),
        )))
    }
}

/// A clock that moves only when told to; sleepers wake when it passes their deadline.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    pub fn set(&self, t: Timestamp) {
        self.now.send_replace(t);
    }

    pub fn advance(&self, d: Duration) {
        self.now.send_modify(|t| *t = add(*t, d));
    }

    /// How many sleeps are waiting on this clock now: a test can wait for a task to be
    /// asleep before it moves the clock, instead of hoping a pause was long enough.
    pub fn sleepers(&self) -> usize {
        self.now.receiver_count()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            while *rx.borrow_and_update() < deadline {
                if rx.changed().await.is_err() {
                    // The clock is gone: nothing will ever advance it.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

/// `t + d`, saturating at jiff's maximum (durations here are config values, never huge).
pub(crate) fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

pub(crate) fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX)
}

pub(crate) fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
