//! Metering: what one invocation costs, and what a period of usage costs under a price sheet.

use serde::{Deserialize, Serialize};

use crate::{Outcome, Trigger};

/// One invocation, metered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub function: String,
    pub version: u32,
    pub trigger: Trigger,
    /// Unix time in milliseconds when the invocation started.
    pub start_ms: i64,
    /// Wall-clock duration in microseconds.
    pub duration_us: u64,
    /// Duration rounded up to the next millisecond (at least 1 ms).
    pub billed_ms: u64,
    /// The function's configured memory, in MiB.
    pub memory_mb: u64,
    /// Time the invocation spent loading the function's code first (0 when warm).
    pub init_us: u64,
    pub cold_start: bool,
    pub outcome: Outcome,
    /// Invocations running on the node when this one started, itself included.
    pub concurrency: u32,
    /// CPU time the function used (user + system), in microseconds, where the executor
    /// measures it: the sandbox's cgroup for native functions, the executing threads for
    /// WebAssembly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us: Option<u64>,
    /// The invocation's span in its W3C trace: `wisp trace` and OTLP export read it.
    #[serde(flatten)]
    pub span: crate::SpanContext,
}

/// Billed milliseconds for a wall-clock duration: rounded up to the next 1 ms, at least 1.
pub fn billed_ms(duration_us: u64) -> u64 {
    duration_us.div_ceil(1000).max(1)
}

/// GB-seconds for `memory_mb` held for `billed_ms` (1 GB = 1024 MiB, as AWS Lambda bills).
pub fn gb_seconds(memory_mb: u64, billed_ms: u64) -> f64 {
    (memory_mb as f64 / 1024.0) * (billed_ms as f64 / 1000.0)
}

/// Prices, in USD. The defaults are AWS Lambda's published x86 prices and monthly free tier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceSheet {
    pub per_million_requests: f64,
    pub per_gb_second: f64,
    pub free_requests: u64,
    pub free_gb_seconds: f64,
    /// Hourly price of one always-on server, for the comparison.
    pub server_hourly: f64,
    /// Concurrent invocations one such server handles.
    pub server_concurrency: u32,
}

impl Default for PriceSheet {
    fn default() -> Self {
        PriceSheet {
            per_million_requests: 0.20,
            per_gb_second: 0.000_016_666_7,
            free_requests: 1_000_000,
            free_gb_seconds: 400_000.0,
            server_hourly: 0.0416,
            server_concurrency: 10,
        }
    }
}

/// The bill for a period, and what always-on servers would have cost instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bill {
    pub requests: u64,
    pub gb_seconds: f64,
    pub request_cost: f64,
    pub compute_cost: f64,
    pub total: f64,
    pub peak_concurrency: u32,
    pub servers: u32,
    pub hours: f64,
    pub always_on_cost: f64,
    /// How much cheaper pay-per-use is than always-on, as a fraction (0.8 = 80% cheaper;
    /// negative when always-on would be cheaper).
    pub savings: f64,
}

/// Prices `requests` and `gb_seconds` used over `hours`, with the free tier applied once
/// (the caller prices one month at a time for a monthly free tier).
pub fn bill(
    prices: &PriceSheet,
    requests: u64,
    gb_seconds: f64,
    peak_concurrency: u32,
    hours: f64,
    free_tier: bool,
) -> Bill {
    let (free_req, free_gbs) = if free_tier {
        (prices.free_requests, prices.free_gb_seconds)
    } else {
        (0, 0.0)
    };
    let request_cost =
        requests.saturating_sub(free_req) as f64 / 1_000_000.0 * prices.per_million_requests;
    let compute_cost = (gb_seconds - free_gbs).max(0.0) * prices.per_gb_second;
    let total = request_cost + compute_cost;
    let servers = if peak_concurrency == 0 {
        0
    } else {
        peak_concurrency.div_ceil(prices.server_concurrency.max(1))
    };
    let always_on_cost = servers as f64 * prices.server_hourly * hours;
    let savings = if always_on_cost > 0.0 {
        1.0 - total / always_on_cost
    } else {
        0.0
    };
    Bill {
        requests,
        gb_seconds,
        request_cost,
        compute_cost,
        total,
        peak_concurrency,
        servers,
        hours,
        always_on_cost,
        savings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_rounds_up_to_the_millisecond() {
        assert_eq!(billed_ms(0), 1);
        assert_eq!(billed_ms(1), 1);
        assert_eq!(billed_ms(1000), 1);
        assert_eq!(billed_ms(1001), 2);
        assert_eq!(billed_ms(50_200), 51);
        assert!((gb_seconds(128, 1000) - 0.125).abs() < 1e-12);
        assert!((gb_seconds(1024, 51) - 0.051).abs() < 1e-12);
    }

    #[test]
    fn a_synthetic_month_with_and_without_the_free_tier() {
        let p = PriceSheet::default();
        // 3M requests of 120 ms at 512 MiB: 180,000 GB-s.
        let requests = 3_000_000;
        let gbs = gb_seconds(512, 120) * requests as f64;
        assert!((gbs - 180_000.0).abs() < 1e-6);
        let hours = 30.0 * 24.0;
        let with = bill(&p, requests, gbs, 25, hours, true);
        // 2M billable requests = $0.40; the compute is inside the 400,000 GB-s free tier.
        assert!((with.request_cost - 0.40).abs() < 1e-9, "{with:?}");
        assert_eq!(with.compute_cost, 0.0);
        let without = bill(&p, requests, gbs, 25, hours, false);
        assert!((without.request_cost - 0.60).abs() < 1e-9);
        assert!((without.compute_cost - 180_000.0 * 0.000_016_666_7).abs() < 1e-9);
        // Peak 25 concurrent → 3 servers of 10, always on for the month.
        assert_eq!(without.servers, 3);
        assert!((without.always_on_cost - 3.0 * 0.0416 * hours).abs() < 1e-9);
        assert!(without.savings > 0.0 && without.savings < 1.0);
    }

    #[test]
    fn nothing_used_costs_nothing() {
        let b = bill(&PriceSheet::default(), 0, 0.0, 0, 24.0, true);
        assert_eq!(
            (b.total, b.servers, b.always_on_cost, b.savings),
            (0.0, 0, 0.0, 0.0)
        );
    }
}
