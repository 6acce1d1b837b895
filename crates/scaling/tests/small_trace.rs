//! The committed synthetic trace: the adaptive policy must beat the fixed 10-minute
//! keep-alive on cold starts and on idle instance time at once.

use wisp_scaling::sim::{compare, trace_stats};
use wisp_scaling::{FIXED_10_MIN, Policy, trace};

#[test]
fn adaptive_beats_fixed_10_minutes_on_the_small_azure_like_trace() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/azure-like-small.csv");
    let file = std::fs::File::open(path).unwrap();
    let trace = trace::parse_csv(std::io::BufReader::new(file)).unwrap();
    let stats = trace_stats(&trace);
    assert_eq!((stats.functions, stats.invocations), (167, 98_086));
    let r = compare(&trace, &[Policy::default(), FIXED_10_MIN]);
    let (adaptive, fixed) = (&r[0], &r[1]);
    assert!(adaptive.cold_starts_vs_fixed_10m < 0.85, "{adaptive:?}");
    assert!(adaptive.idle_vs_fixed_10m < 1.0, "{adaptive:?}");
    assert!(adaptive.function_cold_pct_p50 < fixed.function_cold_pct_p50 / 2.0);
    assert!(adaptive.functions_always_cold_pct < fixed.functions_always_cold_pct);
}

/// The generator reproduces the committed file (same seed, same model).
#[test]
fn the_committed_trace_is_what_the_generator_makes() {
    use wisp_scaling::generate::{GenerateConfig, generate};
    let cfg = GenerateConfig {
        functions: 200,
        hours: 24.0,
        seed: 1,
        max_per_day: 2000.0,
    };
    let mut out = Vec::new();
    generate(&cfg).write_csv(&mut out).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/azure-like-small.csv");
    assert!(
        std::fs::read(path).unwrap() == out,
        "regenerate traces/azure-like-small.csv"
    );
}
