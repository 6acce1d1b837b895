//! Cold starts and throttles per function over the last hour, for `wisp ls`: one counter
//! pair per minute, touched only on those (rare) events.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

const WINDOW_MINUTES: i64 = 60;

/// (minute since the epoch, cold starts, throttles), oldest first.
type Minutes = VecDeque<(i64, u32, u32)>;

#[derive(Debug, Default)]
pub struct Recent {
    by_function: Mutex<HashMap<String, Minutes>>,
}

/// Counts over the last hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LastHour {
    pub cold_starts: u32,
    pub throttles: u32,
}

impl Recent {
    fn bump(&self, function: &str, now_ms: i64, cold: u32, throttled: u32) {
        let minute = now_ms / 60_000;
        let mut map = self.by_function.lock().unwrap_or_else(|p| p.into_inner());
        let q = map.entry(function.to_string()).or_default();
        match q.back_mut() {
            Some((m, c, t)) if *m == minute => {
                *c += cold;
                *t += throttled;
            }
            _ => q.push_back((minute, cold, throttled)),
        }
        while q
            .front()
            .is_some_and(|(m, _, _)| *m <= minute - WINDOW_MINUTES)
        {
            q.pop_front();
        }
    }

    pub fn cold_start(&self, function: &str, now_ms: i64) {
        self.bump(function, now_ms, 1, 0);
    }

    pub fn throttle(&self, function: &str, now_ms: i64) {
        self.bump(function, now_ms, 0, 1);
    }

    pub fn last_hour(&self, function: &str, now_ms: i64) -> LastHour {
        let minute = now_ms / 60_000;
        let map = self.by_function.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = LastHour::default();
        for (m, c, t) in map.get(function).into_iter().flatten() {
            if *m > minute - WINDOW_MINUTES {
                out.cold_starts += c;
                out.throttles += t;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fall_out_of_the_window_after_an_hour() {
        let r = Recent::default();
        let t0 = 1_000 * 60_000;
        r.cold_start("f", t0);
        r.cold_start("f", t0 + 1_000);
        r.throttle("f", t0 + 30 * 60_000);
        assert_eq!(
            r.last_hour("f", t0 + 30 * 60_000),
            LastHour {
                cold_starts: 2,
                throttles: 1
            }
        );
        assert_eq!(r.last_hour("f", t0 + 61 * 60_000).cold_starts, 0);
        assert_eq!(r.last_hour("f", t0 + 61 * 60_000).throttles, 1);
        assert_eq!(r.last_hour("g", t0), LastHour::default());
    }
}
