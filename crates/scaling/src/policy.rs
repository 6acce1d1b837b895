//! The keep-alive policy: [`Policy`] and its [`AdaptiveConfig`], the per-function
//! [`IdleHistogram`], and the [`Decision`] taken each time an instance goes idle.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How many of the most recent out-of-bounds idle times a histogram remembers for the
/// out-of-bounds predictor: few, so that the prediction follows a changed schedule quickly.
pub const RECENT_OOB: usize = 5;
/// Most bins a histogram may have (a week of 1-minute bins), so that no config or persisted
/// file can make one large.
pub const MAX_BINS: usize = 7 * 24 * 60;

/// How long to keep idle instances of a function, and when to start one ahead of a call.
///
/// Serialised with a `kind` tag and human durations, e.g. `{"kind": "fixed", "keep_alive":
/// "10m"}` or `{"kind": "adaptive", "margin": 0.1}` (missing adaptive fields take their
/// defaults). On the command line: `fixed`, `fixed:5m`, `adaptive`,
/// `adaptive:margin=0.2,fallback_keep_alive=20m` ([`FromStr`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Policy {
    /// Keep every idle instance for `keep_alive`, never pre-warm: what AWS Lambda (10 min)
    /// and Azure Functions (20 min) do.
    Fixed {
        #[serde(with = "crate::human")]
        keep_alive: Duration,
    },
    /// The hybrid-histogram policy of Shahrad et al., "Serverless in the Wild" (ATC '20).
    Adaptive(AdaptiveConfig),
}

impl Default for Policy {
    fn default() -> Self {
        Policy::Adaptive(AdaptiveConfig::default())
    }
}

/// The baseline every report is normalised to: a fixed 10-minute keep-alive.
pub const FIXED_10_MIN: Policy = Policy::Fixed {
    keep_alive: Duration::from_secs(600),
};

impl Policy {
    /// What to do with an instance that just went idle, given the function's idle-time
    /// histogram. Pure and cheap (one pass over the bins): call it on every invocation end.
    pub fn decide(&self, hist: &IdleHistogram) -> Decision {
        match self {
            Policy::Fixed { keep_alive } => Decision {
                prewarm_after: Duration::ZERO,
                keep_alive: *keep_alive,
                reason: Reason::Fixed,
            },
            Policy::Adaptive(c) => c.decide(hist),
        }
    }

    /// What to do with an instance that went idle while other invocations of its function
    /// are still running. The histogram models the function's idle times (nothing running),
    /// which say when the *last* instance is needed again, not when a second or tenth one
    /// is: those surplus instances get the fallback keep-alive (what the fixed baseline
    /// gives them) and are not pre-warmed.
    pub fn decide_concurrent(&self) -> Decision {
        match self {
            Policy::Fixed { .. } => self.decide(&IdleHistogram::default()),
            Policy::Adaptive(c) => Decision {
                prewarm_after: Duration::ZERO,
                keep_alive: c.fallback_keep_alive,
                reason: Reason::Concurrent,
            },
        }
    }

    /// An empty histogram of the shape this policy reads (the default shape for `Fixed`,
    /// so that switching to `Adaptive` later finds data).
    pub fn new_histogram(&self) -> IdleHistogram {
        match self {
            Policy::Fixed { .. } => IdleHistogram::default(),
            Policy::Adaptive(c) => IdleHistogram::new(c.bin, c.range),
        }
    }

    /// Checks the settings; [`Policy::decide`] never panics on bad ones, but they would
    /// make poor decisions.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Policy::Fixed { .. } => Ok(()),
            Policy::Adaptive(c) => c.validate(),
        }
    }
}

/// Settings of the adaptive policy; `Default` gives the paper's values where it has them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Width of a histogram bin (1 min).
    #[serde(with = "crate::human")]
    pub bin: Duration,
    /// Idle times up to this are binned; longer ones are out of bounds (4 h).
    #[serde(with = "crate::human")]
    pub range: Duration,
    /// The head percentile that sets the pre-warm window (5).
    pub prewarm_percentile: f64,
    /// The tail percentile that sets the end of the keep-alive window (99).
    pub keepalive_percentile: f64,
    /// Safety margin: the pre-warm window is shortened and the keep-alive window's end
    /// pushed out by this fraction (0.10).
    pub margin: f64,
    /// Fewer idle times than this (in range and out of bounds together) use
    /// `fallback_keep_alive` (5).
    pub min_samples: u32,
    /// A histogram whose bin counts have a coefficient of variation below this (after
    /// removing the part that sampling noise explains, see [`IdleHistogram::excess_cv`]) is
    /// not representative: its idle times are spread out rather than concentrated (2).
    pub cv_threshold: f64,
    /// What a function whose histogram is not representative gets.
    pub not_representative: NotRepresentative,
    /// The keep-alive used while the histogram cannot be trusted (10 min, the fixed
    /// baseline, so that an unknown function costs what it costs today).
    #[serde(with = "crate::human")]
    pub fallback_keep_alive: Duration,
    /// When at least this share of the idle times are out of bounds, the histogram says
    /// little and the out-of-bounds predictor is used (0.5).
    pub oob_threshold: f64,
    /// The out-of-bounds predictor's window: pre-warm at `(1 - m)` times the predicted idle
    /// time and keep for `2m` times it (0.15, the paper's margin for its ARIMA forecasts).
    pub oob_margin: f64,
}

/// What a function whose idle times are spread out (the histogram is not representative)
/// gets; it is never pre-warmed, since no head of the distribution is reliable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotRepresentative {
    /// Keep warm until the tail percentile (plus margin): few cold starts, as the paper's
    /// "standard keep-alive" (which keeps for the whole range), but no longer than the
    /// idle times actually observed.
    Tail,
    /// The fixed `fallback_keep_alive`: costs the same as the fixed baseline.
    #[default]
    Fallback,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            bin: Duration::from_secs(60),
            range: Duration::from_secs(4 * 3600),
            prewarm_percentile: 5.0,
            keepalive_percentile: 99.0,
            margin: 0.10,
            min_samples: 5,
            cv_threshold: 2.0,
            not_representative: NotRepresentative::default(),
            fallback_keep_alive: Duration::from_secs(600),
            oob_threshold: 0.5,
            oob_margin: 0.15,
        }
    }
}

impl AdaptiveConfig {
    /// See [`Policy::validate`].
    pub fn validate(&self) -> Result<(), String> {
        let bins = self.range.as_millis() / self.bin.as_millis().max(1);
        let checks = [
            (
                self.bin >= Duration::from_millis(1),
                "bin must be at least 1ms",
            ),
            (bins >= 1, "range must be at least one bin"),
            (
                bins <= MAX_BINS as u128,
                "range / bin must be at most 10080 bins",
            ),
            (
                0.0 <= self.prewarm_percentile
                    && self.prewarm_percentile < self.keepalive_percentile
                    && self.keepalive_percentile <= 100.0,
                "need 0 <= prewarm_percentile < keepalive_percentile <= 100",
            ),
            (
                (0.0..1.0).contains(&self.margin),
                "margin must be in [0, 1)",
            ),
            (
                (0.0..1.0).contains(&self.oob_margin),
                "oob_margin must be in [0, 1)",
            ),
            (self.cv_threshold >= 0.0, "cv_threshold must be >= 0"),
            (
                (0.0..=1.0).contains(&self.oob_threshold),
                "oob_threshold must be in [0, 1]",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err((*msg).to_string()),
            None => Ok(()),
        }
    }

    /// The hybrid-histogram decision; see the crate docs for the rules.
    pub fn decide(&self, h: &IdleHistogram) -> Decision {
        let keep = |keep_alive, reason| Decision {
            prewarm_after: Duration::ZERO,
            keep_alive,
            reason,
        };
        let fallback = |reason| keep(self.fallback_keep_alive, reason);
        let n = h.samples();
        if n == 0 || n < u64::from(self.min_samples) {
            return fallback(Reason::TooFewSamples);
        }
        if h.in_range() == 0 || h.out_of_bounds() as f64 >= self.oob_threshold * n as f64 {
            return match h.predict_out_of_bounds(self.oob_margin) {
                Some(predicted) => {
                    let m = self.oob_margin.clamp(0.0, 0.99);
                    Decision {
                        prewarm_after: ms(predicted as f64 * (1.0 - m)),
                        keep_alive: ms(predicted as f64 * 2.0 * m).max(h.bin()),
                        reason: Reason::OutOfBounds,
                    }
                }
                None => fallback(Reason::OutOfBounds),
            };
        }
        let bin = h.bin_ms as f64;
        let margin = self.margin.clamp(0.0, 0.99);
        let tail = h.percentile_bin(self.keepalive_percentile).unwrap_or(0);
        // Bin edges, not centres: pre-warm from the head bin's start and keep to the tail
        // bin's end, so that the whole of both bins is covered.
        let keep_until = (tail + 1) as f64 * bin * (1.0 + margin);
        if h.excess_cv() < self.cv_threshold {
            return match self.not_representative {
                NotRepresentative::Tail => keep(ms(keep_until), Reason::NotRepresentative),
                NotRepresentative::Fallback => fallback(Reason::NotRepresentative),
            };
        }
        let head = h.percentile_bin(self.prewarm_percentile).unwrap_or(0);
        let prewarm = head as f64 * bin * (1.0 - margin);
        Decision {
            prewarm_after: ms(prewarm),
            keep_alive: ms(keep_until - prewarm),
            reason: Reason::Histogram,
        }
    }
}

/// Milliseconds (possibly fractional, never negative in practice) to a `Duration`; the
/// float-to-int cast saturates, so this cannot panic.
fn ms(x: f64) -> Duration {
    Duration::from_millis(x.round() as u64)
}

/// What to do with an instance that finished its work and is now idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Zero: keep this instance warm now. Otherwise: stop it now and start a new one
    /// (pre-warm) this long from now.
    #[serde(with = "crate::human")]
    pub prewarm_after: Duration,
    /// Keep the instance (the current one, or the pre-warmed one once it is up) this long,
    /// then stop it. Zero: stop at once.
    #[serde(with = "crate::human")]
    pub keep_alive: Duration,
    /// Which rule decided, for logs and metrics.
    pub reason: Reason,
}

impl Decision {
    /// For an instance idle since `now_ms`: when it should be loaded (`now_ms` itself if it
    /// stays warm) and when it should be stopped. Saturating, never panics.
    pub fn window_ms(&self, now_ms: u64) -> (u64, u64) {
        let load = now_ms.saturating_add(duration_ms(self.prewarm_after));
        (load, load.saturating_add(duration_ms(self.keep_alive)))
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Which rule of the policy made a [`Decision`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The fixed policy.
    Fixed,
    /// The histogram: pre-warm at the head, keep until the tail.
    Histogram,
    /// Fewer than `min_samples` idle times: the fallback keep-alive.
    TooFewSamples,
    /// The idle times are spread out: see [`NotRepresentative`].
    NotRepresentative,
    /// Most idle times exceed the range: pre-warm around the predicted one if the recent
    /// ones agree, else the fallback keep-alive.
    OutOfBounds,
    /// Other invocations were still running: see [`Policy::decide_concurrent`].
    Concurrent,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Fixed,
        Reason::Histogram,
        Reason::TooFewSamples,
        Reason::NotRepresentative,
        Reason::OutOfBounds,
        Reason::Concurrent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Fixed => "fixed",
            Reason::Histogram => "histogram",
            Reason::TooFewSamples => "too few samples",
            Reason::NotRepresentative => "not representative",
            Reason::OutOfBounds => "out of bounds",
            Reason::Concurrent => "concurrent",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Idle times of one function: a range-limited histogram with fixed bins, a count of the
/// idle times beyond the range, and the last few of those.
///
/// Small (a few hundred bytes in memory, non-empty bins only when serialised) so that a
/// node can keep one per function and persist it across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "HistogramRepr", try_from = "HistogramRepr")]
pub struct IdleHistogram {
    bin_ms: u64,
    counts: Vec<u32>,
    in_range: u64,
    oob: u64,
    /// Oldest first.
    recent_oob_ms: Vec<u64>,
}

impl Default for IdleHistogram {
    /// 1-minute bins over 4 hours, as the default [`AdaptiveConfig`].
    fn default() -> Self {
        let c = AdaptiveConfig::default();
        IdleHistogram::new(c.bin, c.range)
    }
}

impl IdleHistogram {
    /// `range / bin` bins (at least 1, at most [`MAX_BINS`]); `bin` at least 1 ms.
    pub fn new(bin: Duration, range: Duration) -> Self {
        let bin_ms = duration_ms(bin).max(1);
        let bins = (duration_ms(range) / bin_ms).clamp(1, MAX_BINS as u64) as usize;
        IdleHistogram {
            bin_ms,
            counts: vec![0; bins],
            in_range: 0,
            oob: 0,
            recent_oob_ms: Vec::new(),
        }
    }

    /// Records one idle time.
    pub fn record(&mut self, idle: Duration) {
        self.record_ms(duration_ms(idle));
    }

    /// Records one idle time of `idle_ms` milliseconds.
    pub fn record_ms(&mut self, idle_ms: u64) {
        let i = idle_ms / self.bin_ms;
        match self.counts.get(i as usize) {
            Some(&c) => {
                if c == u32::MAX {
                    self.decay();
                }
                self.counts[i as usize] += 1;
                self.in_range += 1;
            }
            None => {
                self.oob += 1;
                if self.recent_oob_ms.len() == RECENT_OOB {
                    self.recent_oob_ms.remove(0);
                }
                self.recent_oob_ms.push(idle_ms);
            }
        }
    }

    /// Halves every count (rounding up, so that no seen bin disappears). Nothing calls this
    /// on a schedule: a node that wants old behaviour to fade can call it, e.g. daily.
    pub fn decay(&mut self) {
        for c in &mut self.counts {
            *c = c.div_ceil(2);
        }
        self.in_range = self.counts.iter().map(|&c| u64::from(c)).sum();
        self.oob = self.oob.div_ceil(2);
    }

    /// Idle times recorded: in range and out of bounds.
    pub fn samples(&self) -> u64 {
        self.in_range + self.oob
    }
    pub fn in_range(&self) -> u64 {
        self.in_range
    }
    pub fn out_of_bounds(&self) -> u64 {
        self.oob
    }
    pub fn bin(&self) -> Duration {
        Duration::from_millis(self.bin_ms)
    }
    pub fn range(&self) -> Duration {
        Duration::from_millis(self.bin_ms * self.counts.len() as u64)
    }
    /// The count of each bin; bin `i` holds idle times in `[i * bin, (i + 1) * bin)`.
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }
    /// The last few (at most [`RECENT_OOB`]) out-of-bounds idle times, oldest first.
    pub fn recent_out_of_bounds(&self) -> impl Iterator<Item = Duration> + '_ {
        self.recent_oob_ms.iter().map(|&m| Duration::from_millis(m))
    }

    /// The bin holding the `p`-th percentile (0-100) of the in-range idle times: the first
    /// bin whose cumulative count reaches `p%` of them. `None` when there are none.
    pub fn percentile_bin(&self, p: f64) -> Option<usize> {
        if self.in_range == 0 {
            return None;
        }
        let target = ((p.clamp(0.0, 100.0) / 100.0) * self.in_range as f64).ceil() as u64;
        let mut cum = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            cum += u64::from(c);
            if cum >= target.max(1) {
                return Some(i);
            }
        }
        Some(self.counts.len() - 1)
    }

    /// The coefficient of variation of the bin counts (all bins), as the paper computes it:
    /// high when the idle times pile up in a few bins, 0 when they are spread evenly.
    pub fn cv(&self) -> f64 {
        self.cv_squared().sqrt()
    }

    /// [`cv`](Self::cv) without the part that sampling noise explains. `n` idle times drawn
    /// evenly over `B` bins have an expected CV² of `(B - 1) / n` from Poisson noise alone:
    /// with few samples every histogram looks concentrated (e.g. 10 samples in 10 distinct
    /// bins of 240 have CV 4.8), so the paper's test would call any sparse histogram
    /// representative. `sqrt(max(0, CV² - (B - 1) / n))` removes that; it tends to the plain
    /// CV as samples accumulate.
    pub fn excess_cv(&self) -> f64 {
        if self.in_range == 0 {
            return 0.0;
        }
        let noise = (self.counts.len() - 1) as f64 / self.in_range as f64;
        (self.cv_squared() - noise).max(0.0).sqrt()
    }

    fn cv_squared(&self) -> f64 {
        if self.in_range == 0 {
            return 0.0;
        }
        // CV² = var / mean² = B * Σc² / (Σc)² - 1 over the B bins.
        let sum_sq: f64 = self
            .counts
            .iter()
            .map(|&c| f64::from(c) * f64::from(c))
            .sum();
        let n = self.in_range as f64;
        (self.counts.len() as f64 * sum_sq / (n * n) - 1.0).max(0.0)
    }

    /// The out-of-bounds predictor (the paper fits ARIMA here): the median of the recent
    /// out-of-bounds idle times, if there are at least two and all lie within `± margin` of
    /// it, i.e. the function has a long but regular period (a daily job). `None` otherwise.
    pub fn predict_out_of_bounds(&self, margin: f64) -> Option<u64> {
        if self.recent_oob_ms.len() < 2 {
            return None;
        }
        let mut v = self.recent_oob_ms.clone();
        v.sort_unstable();
        let median = v[v.len() / 2] as f64;
        let (lo, hi) = (v[0] as f64, v[v.len() - 1] as f64);
        (lo >= median * (1.0 - margin) && hi <= median * (1.0 + margin)).then_some(median as u64)
    }
}

/// The serialised form: only non-empty bins, as `[index, count]` pairs.
#[derive(Serialize, Deserialize)]
struct HistogramRepr {
    bin_ms: u64,
    bins: u32,
    counts: Vec<(u32, u32)>,
    oob: u64,
    recent_oob_ms: Vec<u64>,
}

impl From<IdleHistogram> for HistogramRepr {
    fn from(h: IdleHistogram) -> Self {
        HistogramRepr {
            bin_ms: h.bin_ms,
            bins: h.counts.len() as u32,
            counts: (h.counts.iter().enumerate())
                .filter(|(_, c)| **c > 0)
                .map(|(i, &c)| (i as u32, c))
                .collect(),
            oob: h.oob,
            recent_oob_ms: h.recent_oob_ms,
        }
    }
}

impl TryFrom<HistogramRepr> for IdleHistogram {
    type Error = String;
    fn try_from(r: HistogramRepr) -> Result<Self, String> {
        if r.bin_ms == 0 || r.bins == 0 || r.bins as usize > MAX_BINS {
            return Err(format!(
                "histogram needs bin_ms >= 1 and 1..={MAX_BINS} bins, got {} and {}",
                r.bin_ms, r.bins
            ));
        }
        let mut counts = vec![0u32; r.bins as usize];
        for (i, c) in r.counts {
            let slot = counts
                .get_mut(i as usize)
                .ok_or_else(|| format!("histogram bin {i} is beyond its {} bins", r.bins))?;
            *slot = slot.saturating_add(c);
        }
        let mut recent = r.recent_oob_ms;
        recent.drain(..recent.len().saturating_sub(RECENT_OOB));
        Ok(IdleHistogram {
            bin_ms: r.bin_ms,
            in_range: counts.iter().map(|&c| u64::from(c)).sum(),
            counts,
            oob: r.oob,
            recent_oob_ms: recent,
        })
    }
}

impl fmt::Display for Policy {
    /// `fixed:10m`, `adaptive`, or `adaptive:` followed by the settings that differ from
    /// the defaults (the form [`FromStr`] reads).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Policy::Fixed { keep_alive } => {
                write!(f, "fixed:{}", humantime::format_duration(*keep_alive))
            }
            Policy::Adaptive(c) => {
                f.write_str("adaptive")?;
                let def = serde_json::to_value(AdaptiveConfig::default()).unwrap_or_default();
                let cur = serde_json::to_value(c).unwrap_or_default();
                let (Some(def), Some(cur)) = (def.as_object(), cur.as_object()) else {
                    return Ok(());
                };
                let mut sep = ':';
                for (k, v) in cur {
                    if def.get(k) != Some(v) {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        write!(f, "{sep}{k}={v}")?;
                        sep = ',';
                    }
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Policy {
    type Err = String;
    /// `fixed` (10 min), `fixed:<duration>`, `adaptive`, or `adaptive:<field>=<value>,...`
    /// with [`AdaptiveConfig`]'s field names.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let policy = match kind.trim() {
            "fixed" if rest.is_empty() => FIXED_10_MIN,
            "fixed" => Policy::Fixed {
                keep_alive: humantime::parse_duration(rest.trim())
                    .map_err(|e| format!("policy {s:?}: keep-alive {rest:?}: {e}"))?,
            },
            "adaptive" => {
                let mut obj = serde_json::Map::new();
                for kv in rest.split(',').filter(|kv| !kv.trim().is_empty()) {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| format!("policy {s:?}: {kv:?} is not field=value"))?;
                    // Numbers stay numbers; anything else (durations, names) is a string.
                    let v = serde_json::from_str::<serde_json::Number>(v.trim())
                        .map(serde_json::Value::Number)
                        .unwrap_or_else(|_| serde_json::Value::String(v.trim().to_string()));
                    obj.insert(k.trim().to_string(), v);
                }
                Policy::Adaptive(
                    serde_json::from_value(serde_json::Value::Object(obj))
                        .map_err(|e| format!("policy {s:?}: {e}"))?,
                )
            }
            other => {
                return Err(format!(
                    "unknown policy {other:?}: use adaptive[:field=value,...] or fixed[:<duration>]"
                ));
            }
        };
        policy
            .validate()
            .map_err(|e| format!("policy {s:?}: {e}"))?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1000;
    const MIN: u64 = 60 * S;

    fn hist(its_ms: impl IntoIterator<Item = u64>) -> IdleHistogram {
        let mut h = IdleHistogram::default();
        its_ms.into_iter().for_each(|it| h.record_ms(it));
        h
    }
    fn adaptive(f: impl FnOnce(&mut AdaptiveConfig)) -> Policy {
        let mut c = AdaptiveConfig::default();
        f(&mut c);
        Policy::Adaptive(c)
    }
    fn mins(d: Duration) -> f64 {
        d.as_secs_f64() / 60.0
    }

    #[test]
    fn periodic_function_is_prewarmed_just_before_its_next_call() {
        // Every 10 min, 0.5-2.5 s of run time and jitter: ITs of 9m57.5s-9m59.5s.
        let its: Vec<u64> = (0..50).map(|i| 10 * MIN - 500 - (i * 37) % 2000).collect();
        let d = Policy::default().decide(&hist(its.iter().copied()));
        assert_eq!(d.reason, Reason::Histogram);
        // Head bin 9 (9-10 min) less 10%: 8.1 min; kept until 10 min + 10% = 11 min.
        assert!((8.0..=9.0).contains(&mins(d.prewarm_after)), "{d:?}");
        assert!(
            mins(d.keep_alive) <= 4.0,
            "short keep-alive, not 10 min: {d:?}"
        );
        let (up, down) = d.window_ms(0);
        assert!(
            its.iter().all(|&it| up <= it && it < down),
            "every IT is covered"
        );
    }

    #[test]
    fn spread_out_idle_times_are_not_representative_and_never_prewarmed() {
        // ITs spread evenly over 0-60 min: 10 per bin in 60 of 240 bins, CV 1.73.
        let h = hist((0..600).map(|i| i * 6 * S));
        assert!(
            h.cv() < 2.0 && h.excess_cv() < 2.0,
            "{} {}",
            h.cv(),
            h.excess_cv()
        );
        let d = Policy::default().decide(&h);
        assert_eq!(d.reason, Reason::NotRepresentative);
        assert_eq!(
            (d.prewarm_after, d.keep_alive),
            (Duration::ZERO, Duration::from_secs(600))
        );
        // With `Tail`: stay loaded until the 99th percentile's bin end (60 min) + 10%.
        let tail = adaptive(|c| c.not_representative = NotRepresentative::Tail);
        let d = tail.decide(&h);
        assert_eq!(d.reason, Reason::NotRepresentative);
        assert_eq!(d.prewarm_after, Duration::ZERO);
        assert!((65.0..=67.0).contains(&mins(d.keep_alive)), "{d:?}");
    }

    #[test]
    fn few_spread_samples_are_not_mistaken_for_a_pattern() {
        // 12 exponential-ish ITs with mean 1 h: each in its own bin, so the plain CV is
        // high (the paper's test would say "representative"); the noise-corrected one is not.
        let its = [3, 11, 17, 25, 38, 44, 52, 67, 81, 102, 140, 199].map(|m| m * MIN + 7 * S);
        let h = hist(its);
        assert!(
            h.cv() > 4.0 && h.excess_cv() < 2.0,
            "{} {}",
            h.cv(),
            h.excess_cv()
        );
        assert_eq!(
            Policy::default().decide(&h).reason,
            Reason::NotRepresentative
        );
    }

    #[test]
    fn hot_function_keeps_an_instance_about_a_minute() {
        let d = Policy::default().decide(&hist((0..1000).map(|i| (i * 7919) % (50 * S))));
        assert_eq!(d.reason, Reason::Histogram);
        assert_eq!(
            (d.prewarm_after, d.keep_alive),
            (Duration::ZERO, Duration::from_secs(66))
        );
    }

    #[test]
    fn too_few_samples_fall_back_to_the_fixed_keep_alive() {
        let h = hist([10 * MIN, 10 * MIN, 10 * MIN]);
        for (p, keep) in [
            (Policy::default(), 600),
            (
                adaptive(|c| c.fallback_keep_alive = Duration::from_secs(1200)),
                1200,
            ),
        ] {
            let d = p.decide(&h);
            assert_eq!(d.reason, Reason::TooFewSamples);
            assert_eq!(
                (d.prewarm_after, d.keep_alive),
                (Duration::ZERO, Duration::from_secs(keep))
            );
        }
        assert_eq!(
            Policy::default().decide(&IdleHistogram::default()).reason,
            Reason::TooFewSamples
        );
        let d = FIXED_10_MIN.decide(&h);
        assert_eq!(
            (d.reason, d.keep_alive),
            (Reason::Fixed, Duration::from_secs(600))
        );
    }

    #[test]
    fn out_of_bounds_regular_period_is_prewarmed_irregular_gets_the_fallback() {
        const H: u64 = 60 * MIN;
        // A daily job (one short IT in range, six ~24 h ones).
        let daily = hist([
            2 * S,
            24 * H - MIN,
            24 * H,
            24 * H + 2 * MIN,
            24 * H,
            24 * H,
            24 * H,
        ]);
        let d = Policy::default().decide(&daily);
        assert_eq!(d.reason, Reason::OutOfBounds);
        assert_eq!(d.prewarm_after, Duration::from_secs(24 * 3600 * 85 / 100));
        assert_eq!(d.keep_alive, Duration::from_secs(24 * 3600 * 30 / 100));
        // Irregular long gaps: no forecast worth hours of idle memory.
        let irregular = hist([5 * H, 9 * H, 20 * H, 7 * H, 13 * H, 30 * S]);
        let d = Policy::default().decide(&irregular);
        assert_eq!(d.reason, Reason::OutOfBounds);
        assert_eq!(
            (d.prewarm_after, d.keep_alive),
            (Duration::ZERO, Duration::from_secs(600))
        );
        // Below the out-of-bounds share the histogram rules: 4 of 10 beyond the range.
        let mixed = hist(
            [5, 5, 5, 5, 5, 5]
                .map(|m| m * MIN)
                .into_iter()
                .chain([5 * H; 4]),
        );
        assert_eq!(Policy::default().decide(&mixed).reason, Reason::Histogram);
        // Only the last RECENT_OOB out-of-bounds ITs count: a changed schedule is followed.
        let changed = hist([9 * H, 17 * H, 5 * H, 12 * H].into_iter().chain([6 * H; 5]));
        assert_eq!(changed.predict_out_of_bounds(0.15), Some(6 * H));
    }

    #[test]
    fn decay_halves_counts_but_keeps_every_seen_bin() {
        let mut h = hist([
            0,
            0,
            0,
            0,
            3 * MIN,
            5 * 60 * MIN,
            5 * 60 * MIN,
            5 * 60 * MIN,
        ]);
        h.decay();
        assert_eq!((h.counts()[0], h.counts()[3], h.out_of_bounds()), (2, 1, 2));
        assert_eq!(h.samples(), 5);
    }

    #[test]
    fn histogram_serde_round_trip_is_sparse_and_validated() {
        let mut h = hist([0, 30 * S, 10 * MIN, 10 * MIN + 1, 239 * MIN, 5 * 60 * MIN]);
        h.record(Duration::from_secs(6 * 3600));
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.len() < 200, "{json}");
        let back: IdleHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        assert_eq!(
            (back.samples(), back.in_range(), back.out_of_bounds()),
            (7, 5, 2)
        );
        for bad in [
            r#"{"bin_ms":60000,"bins":240,"counts":[[240,1]],"oob":0,"recent_oob_ms":[]}"#,
            r#"{"bin_ms":0,"bins":240,"counts":[],"oob":0,"recent_oob_ms":[]}"#,
            r#"{"bin_ms":1,"bins":99999999,"counts":[],"oob":0,"recent_oob_ms":[]}"#,
        ] {
            assert!(serde_json::from_str::<IdleHistogram>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_serialise_and_parse_from_strings() {
        let p: Policy =
            serde_json::from_str(r#"{"kind": "adaptive", "margin": 0.2, "range": "2h"}"#).unwrap();
        let Policy::Adaptive(c) = p else { panic!() };
        assert_eq!(
            (c.margin, c.range, c.bin),
            (0.2, Duration::from_secs(7200), Duration::from_secs(60))
        );
        for p in [Policy::default(), FIXED_10_MIN, p] {
            let back: Policy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            assert_eq!(back, p);
            assert_eq!(p.to_string().parse::<Policy>().unwrap(), p, "{p}");
        }
        assert_eq!("adaptive".parse::<Policy>().unwrap(), Policy::default());
        assert_eq!("fixed".parse::<Policy>().unwrap(), FIXED_10_MIN);
        assert_eq!(FIXED_10_MIN.to_string(), "fixed:10m");
        let p: Policy = "adaptive:margin=0.2,fallback_keep_alive=20m,not_representative=tail"
            .parse()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "adaptive:fallback_keep_alive=20m,margin=0.2,not_representative=tail"
        );
        for bad in [
            "fixed:soon",
            "adaptive:margin=2",
            "adaptive:nope=1",
            "lru",
            "adaptive:margin",
        ] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Policy>(r#"{"kind":"fixed","keep_alive":-1}"#).is_err());
    }

    proptest! {
        /// Any idle times under any sane config: a decision whose window stays within the
        /// longest idle time seen (plus margins), never a panic.
        #[test]
        fn decisions_are_bounded(
            its in proptest::collection::vec(
                prop_oneof![0u64..5 * MIN, 0u64..4 * 60 * MIN, 0u64..u64::MAX / 4], 0..60),
            margin in 0.0f64..0.5,
            min_samples in 0u32..10,
            tail in any::<bool>(),
        ) {
            let p = adaptive(|c| {
                c.margin = margin;
                c.min_samples = min_samples;
                if tail { c.not_representative = NotRepresentative::Tail; }
            });
            let h = hist(its.iter().copied());
            let d = p.decide(&h);
            let longest = its.iter().copied().max().unwrap_or(0);
            let (up, down) = d.window_ms(0);
            prop_assert!(up <= down);
            match d.reason {
                Reason::Histogram | Reason::NotRepresentative if d.keep_alive != Duration::from_secs(600) => {
                    prop_assert!(down as f64 <= (longest + MIN) as f64 * (1.0 + margin) + 1.0);
                    prop_assert!(up <= longest);
                }
                Reason::OutOfBounds if up > 0 => {
                    prop_assert!(down as f64 <= longest as f64 * 1.31);
                }
                _ => prop_assert_eq!(up, 0),
            }
        }
    }
}
