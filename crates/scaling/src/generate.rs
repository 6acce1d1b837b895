//! Synthetic traces shaped after the Azure Functions 2019 trace as characterised in
//! "Serverless in the Wild" (ATC '20). Deterministic for a seed.
//!
//! Each function is one of three kinds:
//!
//! | kind | share | arrivals |
//! |---|---|---|
//! | timer | 30% | every `period` (1, 2, 5, 10, 15, 30, 60, 120, 240, 360, 720 or 1440 min, see [`TIMER_PERIODS_MIN`]) from a random phase, each firing 0-2 s late |
//! | poisson | 45% | Poisson (HTTP-like), the rate following a daily sine (amplitude 0-80%, random peak hour) |
//! | bursty | 25% | bursts (queue/event-like) arriving like `poisson`; a burst has a geometric number of calls (mean 2-20) with exponential gaps (mean 0.2-30 s, log-uniform) |
//!
//! The daily rate of `poisson` and `bursty` functions is log-normal: `log10(rate/day) ~
//! N(1.5, 2.0)`, capped at `max_per_day` (the real trace's hottest functions, ~10⁸/day,
//! would make a trace file huge, and any function called more than about once a minute is
//! warm under every policy anyway). With the timers this puts about 45% of functions at
//! most once an hour and about 85% at most once a minute on average, against 45% and 81%
//! for the apps of the Azure trace, and spans 8 orders of magnitude before the cap.
//!
//! Execution times are log-normal, as the paper fits them: each function's median is
//! `exp(N(-0.38, 2.36))` seconds (median 0.68 s, a third under 0.25 s, 10% over 14 s), and
//! each call varies around it with `sigma = 0.5` (our choice); every duration is clamped to
//! 1 ms-10 min.

use crate::rng::Rng;
use crate::trace::{self, Trace};
use std::io::{self, Write};

const DAY_MS: f64 = 86_400_000.0;
/// Timer periods in minutes, and how often each is drawn (weights).
pub const TIMER_PERIODS_MIN: [(u64, f64); 12] = [
    (1, 12.0),
    (2, 4.0),
    (5, 16.0),
    (10, 8.0),
    (15, 14.0),
    (30, 10.0),
    (60, 16.0),
    (120, 4.0),
    (240, 4.0),
    (360, 3.0),
    (720, 4.0),
    (1440, 5.0),
];

/// Parameters of [`generate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateConfig {
    pub functions: u32,
    pub hours: f64,
    pub seed: u64,
    /// Cap on a `poisson` or `bursty` function's average daily rate.
    pub max_per_day: f64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            functions: 200,
            hours: 24.0,
            seed: 1,
            max_per_day: 10_000.0,
        }
    }
}

/// How a generated function is invoked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Timer { period_ms: u64 },
    Poisson { per_day: f64 },
    Bursty { per_day: f64 },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Timer { .. } => "timer",
            Kind::Poisson { .. } => "poisson",
            Kind::Bursty { .. } => "bursty",
        }
    }
}

/// A generated trace: each function's kind, and the rows sorted by start time.
pub struct Synthetic {
    pub names: Vec<String>,
    pub kinds: Vec<Kind>,
    /// `(function index, start ms, duration ms)`, by start time.
    pub rows: Vec<(u32, u64, u64)>,
}

impl Synthetic {
    pub fn write_csv(&self, w: impl Write) -> io::Result<()> {
        let rows = self.rows.iter();
        trace::write_csv(
            w,
            rows.map(|&(f, s, d)| (self.names[f as usize].as_str(), s, d)),
        )
    }

    pub fn to_trace(&self) -> Trace {
        let rows = self.rows.iter();
        Trace::from_rows(rows.map(|&(f, s, d)| (self.names[f as usize].as_str(), s, d)))
    }

    /// How many functions of each kind there are, e.g. `timer 61, poisson 88, bursty 51`.
    pub fn kind_summary(&self) -> String {
        ["timer", "poisson", "bursty"]
            .map(|k| {
                format!(
                    "{k} {}",
                    self.kinds.iter().filter(|x| x.name() == k).count()
                )
            })
            .join(", ")
    }
}

/// Generates `cfg.functions` functions over `cfg.hours` hours. Function `i`'s invocations
/// depend only on the seed and `i`, so a larger trace extends a smaller one.
pub fn generate(cfg: &GenerateConfig) -> Synthetic {
    let horizon = (cfg.hours.max(0.0) * 3_600_000.0) as u64;
    let width = cfg.functions.saturating_sub(1).to_string().len();
    let mut out = Synthetic {
        names: Vec::new(),
        kinds: Vec::new(),
        rows: Vec::new(),
    };
    for i in 0..cfg.functions {
        let mut rng = Rng::new(cfg.seed ^ u64::from(i).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let (kind, starts) = function(&mut rng, horizon, cfg.max_per_day);
        let median_ms = (rng.log_normal(-0.38, 2.36) * 1000.0).clamp(1.0, 600_000.0);
        for start in starts {
            let d = (median_ms * rng.log_normal(0.0, 0.5)).clamp(1.0, 600_000.0) as u64;
            out.rows.push((i, start, d));
        }
        out.names.push(format!("f{i:0width$}"));
        out.kinds.push(kind);
    }
    out.rows.sort_unstable_by_key(|&(f, s, _)| (s, f));
    out
}

/// One function's kind and start times in `[0, horizon)`.
fn function(rng: &mut Rng, horizon: u64, max_per_day: f64) -> (Kind, Vec<u64>) {
    let roll = rng.unit();
    let mut starts = Vec::new();
    if roll < 0.30 {
        let weights = TIMER_PERIODS_MIN.map(|(_, w)| w);
        let period_ms = TIMER_PERIODS_MIN[rng.weighted(&weights)].0 * 60_000;
        let mut t = rng.uniform(0.0, period_ms as f64) as u64;
        while t < horizon {
            starts.push(t + rng.uniform(0.0, 2000.0) as u64);
            t += period_ms;
        }
        starts.retain(|&s| s < horizon);
        return (Kind::Timer { period_ms }, starts);
    }
    let per_day = 10f64.powf(1.5 + 2.0 * rng.normal()).min(max_per_day);
    let amplitude = rng.uniform(0.0, 0.8);
    let phase = rng.uniform(0.0, std::f64::consts::TAU);
    // Diurnal Poisson process by thinning: candidates at the peak rate, each kept with
    // probability rate(t) / peak.
    let peak_per_ms = per_day * (1.0 + amplitude) / DAY_MS;
    let arrivals = |mean_size: f64, rng: &mut Rng| {
        let mut v = Vec::new();
        let mut t = rng.exponential(mean_size / peak_per_ms);
        while t < horizon as f64 {
            let rate = 1.0 + amplitude * (std::f64::consts::TAU * t / DAY_MS + phase).sin();
            if rng.unit() * (1.0 + amplitude) < rate {
                v.push(t);
            }
            t += rng.exponential(mean_size / peak_per_ms);
        }
        v
    };
    if roll < 0.75 {
        starts = arrivals(1.0, rng).into_iter().map(|t| t as u64).collect();
        return (Kind::Poisson { per_day }, starts);
    }
    let mean_size = rng.uniform(2.0, 20.0);
    let mean_gap_ms = 10f64.powf(rng.uniform(200f64.log10(), 30_000f64.log10()));
    for burst in arrivals(mean_size, rng) {
        // Geometric number of calls, at least one, with mean `mean_size`.
        let size = 1 + (rng.unit().ln() / (1.0 - 1.0 / mean_size).ln()) as u64;
        let mut t = burst;
        for _ in 0..size.min(10_000) {
            if t >= horizon as f64 {
                break;
            }
            starts.push(t as u64);
            t += rng.exponential(mean_gap_ms);
        }
    }
    (Kind::Bursty { per_day }, starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_trace_and_another_does_not() {
        let cfg = GenerateConfig {
            functions: 30,
            hours: 6.0,
            ..GenerateConfig::default()
        };
        let (a, b) = (generate(&cfg), generate(&cfg));
        assert_eq!(a.rows, b.rows);
        let c = generate(&GenerateConfig { seed: 2, ..cfg });
        assert_ne!(a.rows, c.rows);
        // A larger trace extends a smaller one.
        let d = generate(&GenerateConfig {
            functions: 40,
            ..cfg
        });
        let d: Vec<_> = d.rows.into_iter().filter(|r| r.0 < 30).collect();
        assert_eq!(a.rows, d);
    }

    #[test]
    fn shares_of_rare_and_frequent_functions_look_like_azure() {
        let cfg = GenerateConfig {
            functions: 2000,
            hours: 24.0,
            seed: 7,
            max_per_day: 2000.0,
        };
        let s = generate(&cfg);
        let mut counts = vec![0u64; s.names.len()];
        for r in &s.rows {
            counts[r.0 as usize] += 1;
        }
        let share = |max: u64| counts.iter().filter(|&&c| c <= max).count() as f64 / 2000.0;
        // At most once an hour / once a minute on average over the day (0 calls included:
        // those functions exist but were not called that day).
        let (hourly, minutely) = (share(24), share(1440));
        assert!((0.38..0.55).contains(&hourly), "{hourly}");
        assert!((0.75..0.92).contains(&minutely), "{minutely}");
        let timers = s.kinds.iter().filter(|k| k.name() == "timer").count();
        assert!((500..700).contains(&timers), "{timers}");
        assert!(
            s.rows.windows(2).all(|w| w[0].1 <= w[1].1),
            "sorted by start"
        );
        assert!(
            s.rows
                .iter()
                .all(|r| r.1 < 86_400_000 && (1..=600_000).contains(&r.2))
        );
    }
}
