//! The simulator: replays a [`Trace`] through a [`Policy`] with a virtual clock, using the
//! same [`Tracker`] the node uses.
//!
//! Model, per function and independently of the others:
//!
//! - An instance serves one invocation at a time. A call is **warm** if an instance is
//!   loaded and idle when it starts (the most recently used one is taken, as the node's
//!   pools do), else it is a **cold start** on a new instance. Execution time is the trace's either way (start-up latency
//!   is not modelled), and a pre-warmed instance is ready at its pre-warm time.
//! - When a call ends, its instance gets the tracker's [`Decision`](crate::Decision): stay
//!   loaded for `keep_alive`, or unload and come back (pre-warm) after `prewarm_after`,
//!   then stay for `keep_alive`. A call that arrives while an instance is unloaded and
//!   awaiting its pre-warm is a cold start that takes that instance's place (the pre-warm
//!   is not also done).
//! - **Idle instance time** ("wasted memory time" in the paper) is the time instances are
//!   loaded and not executing, counted up to the end of the trace (its last call's end).

use crate::policy::{FIXED_10_MIN, Policy, Reason};
use crate::trace::{Invocation, Trace};
use crate::tracker::Tracker;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;

/// What one function saw under one policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionResult {
    pub invocations: u64,
    pub cold_starts: u64,
    /// Instance-milliseconds loaded and not executing.
    pub idle_ms: u64,
    /// Most instances loaded at once (busy or idle).
    pub max_instances: u32,
    /// Decisions taken, indexed like [`Reason::ALL`].
    pub decisions: [u64; Reason::ALL.len()],
}

/// An instance that is not executing: loaded during `[from, until)`; `from` in the future
/// means unloaded and waiting for its pre-warm.
#[derive(Clone, Copy)]
struct Idle {
    from: u64,
    until: u64,
}

/// Replays one function's invocations (sorted by start) under `policy`; idle time is
/// counted up to `horizon_ms`.
pub fn simulate_function(policy: &Policy, invs: &[Invocation], horizon_ms: u64) -> FunctionResult {
    let mut r = FunctionResult::default();
    let mut tracker = Tracker::new(*policy);
    let mut idle: Vec<Idle> = Vec::new();
    let mut ends: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    let idle_time = |s: Idle, to: u64| to.min(s.until).min(horizon_ms).saturating_sub(s.from);
    let end = |at: u64, tracker: &mut Tracker, idle: &mut Vec<Idle>, r: &mut FunctionResult| {
        let d = tracker.on_end(at);
        r.decisions[Reason::ALL.iter().position(|x| *x == d.reason).unwrap_or(0)] += 1;
        let (from, until) = d.window_ms(at);
        if until > from {
            idle.push(Idle { from, until });
        }
    };
    for inv in invs {
        let t = inv.start_ms;
        // Ends at the very time of a start come first: that instance is reusable.
        while let Some(&Reverse(at)) = ends.peek()
            && at <= t
        {
            ends.pop();
            end(at, &mut tracker, &mut idle, &mut r);
        }
        idle.retain(|s| {
            let expired = s.until <= t;
            if expired {
                r.idle_ms += idle_time(*s, s.until);
            }
            !expired
        });
        tracker.on_start(t);
        r.invocations += 1;
        // The most recently used (or pre-warmed) idle instance, as the node's pools pick.
        // Not the one kept longest: that would hand the long keep-alive of a surplus
        // instance to the last one and let the surplus capacity lapse.
        let warm = (idle.iter().enumerate())
            .filter(|(_, s)| s.from <= t)
            .max_by_key(|(_, s)| s.from)
            .map(|(i, _)| i);
        if let Some(i) = warm {
            r.idle_ms += idle_time(idle.swap_remove(i), t);
        } else {
            r.cold_starts += 1;
            let pending = (idle.iter().enumerate()).min_by_key(|(_, s)| s.from);
            if let Some((i, _)) = pending {
                idle.swap_remove(i);
            }
        }
        ends.push(Reverse(inv.end_ms()));
        let loaded = idle.iter().filter(|s| s.from <= t).count() + ends.len();
        r.max_instances = r.max_instances.max(loaded as u32);
    }
    while let Some(Reverse(at)) = ends.pop() {
        end(at, &mut tracker, &mut idle, &mut r);
    }
    r.idle_ms += idle.iter().map(|s| idle_time(*s, u64::MAX)).sum::<u64>();
    r
}

/// Results of one policy over a whole trace.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub policy: String,
    pub functions: u64,
    pub invocations: u64,
    pub cold_starts: u64,
    pub cold_start_pct: f64,
    /// Instance-seconds loaded and not executing.
    pub idle_instance_seconds: f64,
    /// Per-function cold-start percentage: 50th, 75th, 90th percentile over functions.
    pub function_cold_pct_p50: f64,
    pub function_cold_pct_p75: f64,
    pub function_cold_pct_p90: f64,
    /// Share of functions (%) with no cold start but their first call.
    pub functions_only_first_cold_pct: f64,
    /// Share of functions (%) every call of which was cold.
    pub functions_always_cold_pct: f64,
    pub max_instances: u32,
    /// How many decisions each rule took.
    pub decisions: BTreeMap<&'static str, u64>,
    /// Cold starts and idle time as a multiple of the fixed 10-minute baseline's.
    pub cold_starts_vs_fixed_10m: f64,
    pub idle_vs_fixed_10m: f64,
    /// The functions' results, by function index (not serialised).
    #[serde(skip)]
    pub per_function: Vec<FunctionResult>,
}

/// Replays every function of the trace under `policy`.
pub fn simulate(trace: &Trace, policy: &Policy) -> Report {
    let horizon = trace.span_ms().1;
    let per_function: Vec<FunctionResult> = trace
        .per_function()
        .map(|(_, invs)| simulate_function(policy, invs, horizon))
        .collect();
    let sum = |f: fn(&FunctionResult) -> u64| per_function.iter().map(f).sum::<u64>();
    let (invocations, cold_starts) = (sum(|r| r.invocations), sum(|r| r.cold_starts));
    let mut pcts: Vec<f64> = (per_function.iter())
        .map(|r| 100.0 * r.cold_starts as f64 / r.invocations as f64)
        .collect();
    pcts.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&pcts, p);
    let n = per_function.len().max(1) as f64;
    let share = |f: fn(&FunctionResult) -> bool| {
        100.0 * per_function.iter().filter(|r| f(r)).count() as f64 / n
    };
    let mut decisions = BTreeMap::new();
    for (i, reason) in Reason::ALL.iter().enumerate() {
        let c: u64 = per_function.iter().map(|r| r.decisions[i]).sum();
        if c > 0 {
            decisions.insert(reason.as_str(), c);
        }
    }
    Report {
        policy: policy.to_string(),
        functions: per_function.len() as u64,
        invocations,
        cold_starts,
        cold_start_pct: 100.0 * cold_starts as f64 / invocations.max(1) as f64,
        idle_instance_seconds: sum(|r| r.idle_ms) as f64 / 1000.0,
        function_cold_pct_p50: pct(50.0),
        function_cold_pct_p75: pct(75.0),
        function_cold_pct_p90: pct(90.0),
        functions_only_first_cold_pct: share(|r| r.cold_starts == 1),
        functions_always_cold_pct: share(|r| r.cold_starts == r.invocations),
        max_instances: per_function
            .iter()
            .map(|r| r.max_instances)
            .max()
            .unwrap_or(0),
        decisions,
        cold_starts_vs_fixed_10m: f64::NAN,
        idle_vs_fixed_10m: f64::NAN,
        per_function,
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Simulates each policy (in parallel) and the fixed 10-minute baseline, and fills in the
/// ratios to the baseline. The baseline is appended if it is not among `policies`.
pub fn compare(trace: &Trace, policies: &[Policy]) -> Vec<Report> {
    let mut all = policies.to_vec();
    if !all.contains(&FIXED_10_MIN) {
        all.push(FIXED_10_MIN);
    }
    let mut reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = (all.iter())
            .map(|p| s.spawn(move || simulate(trace, p)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("simulation thread"))
            .collect()
    });
    let base = all.iter().position(|p| *p == FIXED_10_MIN).unwrap_or(0);
    let (bc, bi) = (
        reports[base].cold_starts,
        reports[base].idle_instance_seconds,
    );
    for r in &mut reports {
        r.cold_starts_vs_fixed_10m = ratio(r.cold_starts as f64, bc as f64);
        r.idle_vs_fixed_10m = ratio(r.idle_instance_seconds, bi);
    }
    reports
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        if a == 0.0 { 1.0 } else { f64::INFINITY }
    } else {
        a / b
    }
}

/// A summary of the trace itself.
#[derive(Clone, Debug, Serialize)]
pub struct TraceStats {
    pub functions: u64,
    pub invocations: u64,
    pub hours: f64,
    /// Share of functions (%) called at most once an hour / once a minute on average.
    pub at_most_hourly_pct: f64,
    pub at_most_minutely_pct: f64,
}

pub fn trace_stats(trace: &Trace) -> TraceStats {
    let (first, last) = trace.span_ms();
    let hours = (last - first).max(1) as f64 / 3_600_000.0;
    let counts: Vec<usize> = trace.per_function().map(|(_, i)| i.len()).collect();
    let n = counts.len().max(1) as f64;
    let share = |per_hour: f64| {
        100.0
            * counts
                .iter()
                .filter(|&&c| c as f64 <= per_hour * hours)
                .count() as f64
            / n
    };
    TraceStats {
        functions: counts.len() as u64,
        invocations: trace.invocations.len() as u64,
        hours,
        at_most_hourly_pct: share(1.0),
        at_most_minutely_pct: share(60.0),
    }
}

/// The comparison as a text table, one column per policy.
pub fn render_table(stats: &TraceStats, reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace: {} functions, {} invocations over {:.1} h; {:.0}% of functions called at most once an hour, {:.0}% at most once a minute\n",
        stats.functions,
        stats.invocations,
        stats.hours,
        stats.at_most_hourly_pct,
        stats.at_most_minutely_pct
    );
    type Row = (&'static str, fn(&Report) -> String);
    let rows: [Row; 11] = [
        ("cold starts", |r| r.cold_starts.to_string()),
        ("cold starts %", |r| format!("{:.2}", r.cold_start_pct)),
        ("  vs fixed:10m", |r| {
            format!("{:.3}x", r.cold_starts_vs_fixed_10m)
        }),
        ("fn cold % p50", |r| {
            format!("{:.1}", r.function_cold_pct_p50)
        }),
        ("fn cold % p75", |r| {
            format!("{:.1}", r.function_cold_pct_p75)
        }),
        ("fn cold % p90", |r| {
            format!("{:.1}", r.function_cold_pct_p90)
        }),
        ("fns only 1st cold %", |r| {
            format!("{:.1}", r.functions_only_first_cold_pct)
        }),
        ("fns always cold %", |r| {
            format!("{:.1}", r.functions_always_cold_pct)
        }),
        ("idle instance-s", |r| {
            format!("{:.0}", r.idle_instance_seconds)
        }),
        ("  vs fixed:10m", |r| format!("{:.3}x", r.idle_vs_fixed_10m)),
        ("max instances/fn", |r| r.max_instances.to_string()),
    ];
    let width = reports
        .iter()
        .map(|r| r.policy.len())
        .max()
        .unwrap_or(0)
        .max(12);
    let _ = write!(out, "{:<20}", "policy");
    for r in reports {
        let _ = write!(out, " {:>width$}", r.policy);
    }
    for (name, f) in rows {
        let _ = write!(out, "\n{name:<20}");
        for r in reports {
            let _ = write!(out, " {:>width$}", f(r));
        }
    }
    out.push_str("\n\ndecisions:");
    for r in reports {
        let d: Vec<String> = r
            .decisions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = write!(out, "\n  {}: {}", r.policy, d.join(", "));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    /// `n` calls every `period_ms` (with 0-2 s of jitter), each running 500 ms.
    fn periodic(period_ms: u64, n: u64) -> Vec<Invocation> {
        let invs = (0..n).map(|k| Invocation {
            function: 0,
            start_ms: k * period_ms + (k * 7919) % 2000,
            duration_ms: 500,
        });
        invs.collect()
    }
    fn run(p: &Policy, invs: &[Invocation]) -> FunctionResult {
        simulate_function(
            p,
            invs,
            invs.iter().map(Invocation::end_ms).max().unwrap_or(0),
        )
    }
    /// Cold starts after the first `skip` calls.
    fn cold_after(p: &Policy, invs: &[Invocation], skip: usize) -> u64 {
        run(p, invs).cold_starts - run(p, &invs[..skip]).cold_starts
    }

    #[test]
    fn periodic_functions_are_warm_and_cheap_under_the_adaptive_policy() {
        for n in [5, 10, 15, 20, 30, 45, 60] {
            let invs = periodic(n * MIN, 48 * 60 / n.max(1) + 10);
            let (a, f) = (run(&Policy::default(), &invs), run(&FIXED_10_MIN, &invs));
            // Learning takes min_samples ITs; after that, at least 90% warm.
            let late = (invs.len() - 8) as f64;
            let cold = cold_after(&Policy::default(), &invs, 8) as f64;
            assert!(
                cold <= 0.1 * late,
                "every {n} min: {cold} of {late} cold: {a:?}"
            );
            if n > 10 {
                assert_eq!(
                    f.cold_starts, f.invocations,
                    "fixed 10 min misses every {n}-min call"
                );
                // Pre-warmed 10% before the IT and kept until 10% after: the idle time per
                // call grows with the period (0.1 n + 1 min); at 60 min it is ~7 of fixed's 10.
                let limit = if n <= 30 { 0.5 } else { 0.8 };
                assert!(
                    (a.idle_ms as f64) < limit * f.idle_ms as f64,
                    "every {n} min: idle {} vs fixed {}",
                    a.idle_ms,
                    f.idle_ms
                );
            } else {
                assert!(a.idle_ms < f.idle_ms, "every {n} min: {a:?} vs {f:?}");
            }
        }
    }

    #[test]
    fn a_function_called_every_two_minutes_is_warm_under_both() {
        let invs = periodic(2 * MIN, 300);
        for p in [Policy::default(), FIXED_10_MIN] {
            assert_eq!(run(&p, &invs).cold_starts, 1, "{p}");
        }
    }

    #[test]
    fn concurrent_calls_need_more_instances_which_are_then_reused() {
        // Three calls at once every minute, each running 10 s.
        let invs: Vec<Invocation> = (0..30u64)
            .flat_map(|k| (0..3).map(move |j| (k, j)))
            .map(|(k, j)| Invocation {
                function: 0,
                start_ms: k * MIN + j,
                duration_ms: 10_000,
            })
            .collect();
        for p in [Policy::default(), FIXED_10_MIN] {
            let r = run(&p, &invs);
            assert_eq!((r.cold_starts, r.max_instances), (3, 3), "{p}: {r:?}");
        }
        // A call that ends exactly when the next starts hands its instance over.
        let back_to_back = [0, 1000].map(|s| Invocation {
            function: 0,
            start_ms: s,
            duration_ms: 1000,
        });
        assert_eq!(run(&FIXED_10_MIN, &back_to_back).max_instances, 1);
    }

    #[test]
    fn surplus_capacity_is_kept_like_the_fixed_baseline() {
        // Every minute; every third call runs 90 s and overlaps the next one, so a second
        // instance is needed every 3 minutes. The last instance's histogram window is short
        // (66 s), but the second instance must survive between overlaps as under fixed.
        let invs: Vec<Invocation> = (0..600u64)
            .map(|k| Invocation {
                function: 0,
                start_ms: k * MIN,
                duration_ms: if k % 3 == 0 { 90_000 } else { 20_000 },
            })
            .collect();
        let (a, f) = (run(&Policy::default(), &invs), run(&FIXED_10_MIN, &invs));
        assert_eq!(f.cold_starts, 2);
        assert!(a.cold_starts <= 3, "{a:?}");
        assert!(a.idle_ms <= f.idle_ms, "{a:?} {f:?}");
    }

    #[test]
    fn idle_time_is_counted_until_the_next_call_or_the_end_of_the_trace() {
        let invs = [0, 5 * MIN, 30 * MIN].map(|s| Invocation {
            function: 0,
            start_ms: s,
            duration_ms: 1000,
        });
        let r = simulate_function(&FIXED_10_MIN, &invs, 30 * MIN + 1000);
        // Reused after 5 min less 1 s; then idle 10 min and stopped; the last is cut off
        // by the end of the trace.
        assert_eq!(r.idle_ms, 5 * MIN - 1000 + 10 * MIN);
        assert_eq!((r.invocations, r.cold_starts), (3, 2));
        let r = simulate_function(&FIXED_10_MIN, &invs, 40 * MIN);
        assert_eq!(r.idle_ms, 5 * MIN - 1000 + 10 * MIN + 10 * MIN - 1000);
    }

    #[test]
    fn an_early_call_takes_the_place_of_the_pending_prewarm() {
        let mut invs = periodic(10 * MIN, 20);
        let last = invs.last().unwrap().end_ms();
        // Early (cold) at 2 min instead of 10, then one 8.5 min later: that one finds the
        // early call's pre-warmed instance, and no leftover of the pre-warm it replaced.
        for at in [last + 2 * MIN, last + 2 * MIN + 500 + 17 * MIN / 2] {
            invs.push(Invocation {
                function: 0,
                start_ms: at,
                duration_ms: 500,
            });
        }
        let r = run(&Policy::default(), &invs);
        assert_eq!(r.max_instances, 1);
        assert_eq!(
            r.cold_starts,
            run(&Policy::default(), &invs[..20]).cold_starts + 1
        );
    }

    #[test]
    fn compare_adds_the_baseline_and_normalises_to_it() {
        let trace = Trace::from_rows([("a", 0, 10), ("a", 20 * MIN, 10), ("b", 5, 10)]);
        let reports = compare(&trace, &[Policy::default()]);
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[1].policy, "fixed:10m");
        assert_eq!(
            (
                reports[1].cold_starts_vs_fixed_10m,
                reports[1].idle_vs_fixed_10m
            ),
            (1.0, 1.0)
        );
        assert_eq!(
            (
                reports[0].functions,
                reports[0].invocations,
                reports[0].cold_starts
            ),
            (2, 3, 3)
        );
        let table = render_table(&trace_stats(&trace), &reports);
        assert!(
            table.contains("cold starts %") && table.contains("adaptive"),
            "{table}"
        );
    }
}
