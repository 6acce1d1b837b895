//! How long to keep idle instances of a function warm, and when to start one before it is
//! called: the one place of this policy in Wisp. The node calls it for its warm instances
//! (WebAssembly instances, native runtime processes); the simulator ([`sim`], binary
//! `wisp-simulate`) replays traces through the very same code.
//!
//! Everything is pure and clock-free: times are passed in as milliseconds since any epoch.
//!
//! # Use
//!
//! ```
//! use wisp_scaling::{Policy, Tracker};
//! let mut t = Tracker::new(Policy::default()); // one per function
//! t.on_start(0);
//! let d = t.on_end(1_200); // the instance that ran it is now idle
//! // Keep it d.keep_alive; or, if d.prewarm_after > 0, stop it now and start one
//! // d.prewarm_after from now, kept for d.keep_alive.
//! assert_eq!(d.reason.as_str(), "too few samples");
//! ```
//!
//! A node persists [`IdleHistogram`]s (serde) across restarts and resumes them with
//! [`Tracker::with_histogram`].
//!
//! # The policies
//!
//! [`Policy::Fixed`] keeps every idle instance for a fixed time (Lambda: 10 min) and never
//! pre-warms. [`Policy::Adaptive`], the default, is the hybrid-histogram policy of Shahrad et
//! al., "Serverless in the Wild: Characterizing and Optimizing the Serverless Workload at a
//! Large Cloud Provider" (USENIX ATC '20). Per function, an [`IdleHistogram`] counts the
//! idle times (IT: from the end of the last running invocation to the next start) in 1-minute
//! bins over 4 hours. On each invocation end ([`AdaptiveConfig::decide`]), with `n` ITs
//! recorded:
//!
//! 1. `n < min_samples` (5): **too few samples**, keep for `fallback_keep_alive` (10 min,
//!    i.e. what the fixed baseline does).
//! 2. At least `oob_threshold` (half) of the ITs beyond the range: **out of bounds**. The
//!    paper forecasts the next IT with ARIMA; we use the median of the last 5 out-of-bounds
//!    ITs, but only when they all lie within ±`oob_margin` (15%) of it (a regular long
//!    period, such as a daily job): pre-warm at `0.85 ×` the prediction and keep for `0.3 ×`
//!    it, as the paper's ARIMA window. Irregular long gaps get the fallback keep-alive, since
//!    a wide window around a poor forecast would cost hours of idle memory per call.
//! 3. The bin counts' coefficient of variation, minus what sampling noise explains
//!    ([`IdleHistogram::excess_cv`]), below `cv_threshold` (2, as the paper's reference
//!    implementation): **not representative**, the ITs are spread out. No pre-warm, and
//!    by default the fallback keep-alive ([`NotRepresentative::Fallback`]). The paper
//!    keeps such functions for the whole range; [`NotRepresentative::Tail`] keeps them to
//!    the tail percentile instead, which on our synthetic traces cuts cold starts a little
//!    more but costs 3-7% more idle time than the fixed baseline, so it is not the default.
//! 4. Otherwise **histogram**: `head` = the bin of the 5th percentile, `tail` = the bin of
//!    the 99th. Pre-warm after `head_start × (1 - margin)` and keep until `tail_end × (1 +
//!    margin)` after the end of the invocation (margin 10%); so the keep-alive, counted
//!    from the pre-warm, is `1.1 × tail_end` less the pre-warm window. A head in the first
//!    bin means no pre-warm: stay loaded.
//!
//! Percentiles are of the in-range ITs only (out-of-bounds ones are few here, by rule 2).
//!
//! The paper models one instance per application. With concurrent invocations a function
//! has several; the histogram (time with *nothing* running) says when the last of them is
//! needed again, not when the second or tenth is. So only the instance that goes idle when
//! nothing else is running gets the rules above; one that goes idle while other invocations
//! still run gets the fallback keep-alive and no pre-warm (**concurrent**,
//! [`Policy::decide_concurrent`]), i.e. surplus capacity costs what it costs under the
//! fixed baseline. A pool should reuse its most recently used idle instance (as Wisp's
//! pools do), so that the short window of the last instance does not replace the longer
//! one of a surplus instance.
//!
//! Histograms do not age by themselves; [`IdleHistogram::decay`] halves them.
//!
//! # Simulator
//!
//! [`sim`] replays a CSV trace ([`trace`]) per function with a virtual clock through
//! [`Tracker`] and reports cold starts and idle instance time against the fixed
//! 10-minute keep-alive; [`generate`] makes Azure-like synthetic traces. The binary:
//! `wisp-simulate TRACE.csv [--policy P]... [--json]`, `wisp-simulate generate --functions N
//! --hours H --seed S > trace.csv`.
#![forbid(unsafe_code)]

pub mod generate;
mod human;
pub mod policy;
mod rng;
pub mod sim;
pub mod trace;
pub mod tracker;

pub use policy::{
    AdaptiveConfig, Decision, FIXED_10_MIN, IdleHistogram, NotRepresentative, Policy, Reason,
};
pub use tracker::Tracker;
