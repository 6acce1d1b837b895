//! [`Tracker`]: the per-function state a node (or the simulator) keeps.

use crate::policy::{Decision, IdleHistogram, Policy};

/// Follows one function's invocations and turns them into idle times and decisions.
///
/// Clock-free: every call takes `now_ms`, milliseconds since any epoch the caller likes
/// (the node's monotonic clock, the simulator's virtual one), as long as it is the same
/// epoch for the life of the tracker. A clock that goes backwards gives idle times of 0.
///
/// An idle time is the time from the end of the last running invocation to the start of
/// the next one, with no invocation running in between: overlapping invocations keep the
/// function busy and record nothing.
#[derive(Clone, Debug)]
pub struct Tracker {
    policy: Policy,
    hist: IdleHistogram,
    running: u32,
    idle_since_ms: Option<u64>,
}

impl Tracker {
    pub fn new(policy: Policy) -> Self {
        Tracker::with_histogram(policy, policy.new_histogram())
    }

    /// Resumes with a histogram persisted earlier. One of another shape than the policy's
    /// (its bin or range changed) is dropped for an empty one, since its bins cannot be
    /// mapped onto the new ones.
    pub fn with_histogram(policy: Policy, hist: IdleHistogram) -> Self {
        let fresh = policy.new_histogram();
        let hist = if (hist.bin(), hist.range()) == (fresh.bin(), fresh.range()) {
            hist
        } else {
            fresh
        };
        Tracker {
            policy,
            hist,
            running: 0,
            idle_since_ms: None,
        }
    }

    /// An invocation starts.
    pub fn on_start(&mut self, now_ms: u64) {
        // Set only when the last running invocation ended, so nothing runs now.
        if let Some(since) = self.idle_since_ms.take() {
            self.hist.record_ms(now_ms.saturating_sub(since));
        }
        self.running = self.running.saturating_add(1);
    }

    /// An invocation ended: its instance is now idle. Returns what to do with that instance:
    /// the histogram's decision if it was the last one running, else
    /// [`Policy::decide_concurrent`]'s.
    pub fn on_end(&mut self, now_ms: u64) -> Decision {
        self.running = self.running.saturating_sub(1);
        if self.running > 0 {
            return self.policy.decide_concurrent();
        }
        self.idle_since_ms = Some(now_ms);
        self.decision()
    }

    /// The decision the policy takes on the current histogram.
    pub fn decision(&self) -> Decision {
        self.policy.decide(&self.hist)
    }

    pub fn histogram(&self) -> &IdleHistogram {
        &self.hist
    }
    pub fn into_histogram(self) -> IdleHistogram {
        self.hist
    }
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    /// Invocations running now (starts not yet matched by ends).
    pub fn running(&self) -> u32 {
        self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AdaptiveConfig, FIXED_10_MIN, Reason};
    use std::time::Duration;

    const MIN: u64 = 60_000;

    #[test]
    fn overlapping_invocations_record_only_gaps_with_nothing_running() {
        let mut t = Tracker::new(Policy::default());
        t.on_start(0);
        t.on_start(1_000); // overlaps the first
        t.on_end(5_000); // the second is still running: not idle
        assert_eq!(t.histogram().samples(), 0);
        t.on_start(6_000); // starts while one runs: no idle time
        t.on_end(7_000);
        t.on_end(8_000); // now idle
        assert_eq!(t.running(), 0);
        assert_eq!(t.histogram().samples(), 0);
        t.on_start(8_000 + 3 * MIN);
        t.on_start(8_000 + 4 * MIN); // overlaps: no second idle time
        t.on_end(8_000 + 4 * MIN + 10);
        t.on_end(8_000 + 4 * MIN + 20);
        assert_eq!(t.histogram().samples(), 1);
        assert_eq!(t.histogram().counts()[3], 1, "idle 3 min from the last end");
    }

    #[test]
    fn an_instance_idle_while_others_run_gets_the_fallback() {
        let mut t = Tracker::new(Policy::default());
        for k in 0..20 {
            t.on_start(k * 10 * MIN);
            t.on_end(k * 10 * MIN + 100);
        }
        assert!(t.decision().prewarm_after > Duration::ZERO);
        t.on_start(200 * MIN);
        t.on_start(200 * MIN + 5);
        let d = t.on_end(200 * MIN + 10);
        assert_eq!(d.reason, Reason::Concurrent);
        assert_eq!(
            (d.prewarm_after, d.keep_alive),
            (Duration::ZERO, Duration::from_secs(600))
        );
        assert_eq!(t.on_end(200 * MIN + 20).reason, Reason::Histogram);
        assert_eq!(FIXED_10_MIN.decide_concurrent().reason, Reason::Fixed);
    }

    #[test]
    fn first_invocation_and_unmatched_end_record_nothing_and_do_not_panic() {
        let mut t = Tracker::new(FIXED_10_MIN);
        assert_eq!(t.on_end(5).reason, Reason::Fixed); // end without start
        t.on_start(1); // clock went backwards: idle 0
        assert_eq!(t.histogram().counts()[0], 1);
        t.on_start(u64::MAX);
        t.on_end(u64::MAX);
        assert_eq!(t.running(), 1);
    }

    #[test]
    fn periodic_calls_lead_to_a_prewarm_decision() {
        let mut t = Tracker::new(Policy::default());
        let mut d = None;
        for k in 0..20u64 {
            t.on_start(k * 10 * MIN);
            d = Some(t.on_end(k * 10 * MIN + 500));
        }
        let d = d.unwrap();
        assert_eq!(d.reason, Reason::Histogram);
        assert!(d.prewarm_after >= Duration::from_secs(8 * 60), "{d:?}");
    }

    #[test]
    fn a_histogram_of_another_shape_is_not_resumed() {
        let mut h = IdleHistogram::new(Duration::from_secs(30), Duration::from_secs(3600));
        h.record(Duration::from_secs(10));
        let t = Tracker::with_histogram(Policy::default(), h.clone());
        assert_eq!(t.histogram().samples(), 0);
        let cfg = AdaptiveConfig {
            bin: Duration::from_secs(30),
            range: Duration::from_secs(3600),
            ..AdaptiveConfig::default()
        };
        let t = Tracker::with_histogram(Policy::Adaptive(cfg), h);
        assert_eq!(t.histogram().samples(), 1);
    }
}
