//! Schedule expressions: rate, AWS six-field cron, five-field cron, time zones and DST.
use jiff::Timestamp;
use proptest::prelude::*;
use wisp_events::schedule::{Schedule, next_after};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The first `n` ticks after `from`, as RFC 3339 UTC strings.
fn ticks(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
    let s = Schedule::parse(expr, tz).unwrap();
    let mut cur = t(from);
    let mut out = Vec::new();
    for _ in 0..n {
        cur = s.next_after(cur).unwrap();
        out.push(cur.to_string());
    }
    out
}

fn err(expr: &str) -> String {
    Schedule::parse(expr, "UTC").unwrap_err().to_string()
}

#[test]
fn rate_ticks_are_epoch_aligned_and_strictly_after() {
    assert_eq!(
        ticks("rate(5 minutes)", "UTC", "2026-11-27T09:02:10Z", 3),
        [
            "2026-11-27T09:05:00Z",
            "2026-11-27T09:10:00Z",
            "2026-11-27T09:15:00Z"
        ]
    );
    // Exactly on a tick: the next one, never the same.
    assert_eq!(
        ticks("rate(5 minutes)", "UTC", "2026-11-27T09:05:00Z", 1),
        ["2026-11-27T09:10:00Z"]
    );
    assert_eq!(
        ticks("rate(1 minute)", "UTC", "2026-11-27T09:05:59.999Z", 1),
        ["2026-11-27T09:06:00Z"]
    );
    assert_eq!(
        ticks("rate(1 hour)", "UTC", "2026-11-27T09:05:00Z", 1),
        ["2026-11-27T10:00:00Z"]
    );
    assert_eq!(
        ticks("rate(1 day)", "Europe/Berlin", "2026-11-27T09:05:00Z", 1),
        ["2026-11-28T00:00:00Z"]
    );
    assert_eq!(
        ticks(" rate( 2 days ) ", "UTC", "2026-11-27T09:05:00Z", 1).len(),
        1
    );
}

#[test]
fn rate_spelling_is_validated_like_aws() {
    assert!(
        err("rate(1 minutes)").contains("rate(1 minute)"),
        "{}",
        err("rate(1 minutes)")
    );
    assert!(
        err("rate(5 minute)").contains("rate(N minutes)"),
        "{}",
        err("rate(5 minute)")
    );
    assert!(err("rate(0 minutes)").contains("positive"));
    assert!(err("rate(-1 minutes)").contains("positive whole number"));
    assert!(err("rate(1.5 hours)").contains("positive whole number"));
    assert!(err("rate(5 weeks)").contains("minute(s), hour(s) or day(s)"));
    assert!(err("rate(5)").contains("value and a unit"));
    assert!(err("rate(99999999999999999999 days)").contains("too large"));
}

#[test]
fn aws_cron_six_fields_with_question_mark() {
    // Friday 09:00 -> Monday 09:00.
    assert_eq!(
        ticks("cron(0 9 ? * MON-FRI *)", "UTC", "2026-11-27T09:00:00Z", 2),
        ["2026-11-30T09:00:00Z", "2026-12-01T09:00:00Z"]
    );
    // AWS numbers days 1-7 from Sunday: 2-6 is MON-FRI.
    assert_eq!(
        ticks("cron(0 9 ? * 2-6 *)", "UTC", "2026-11-27T09:00:00Z", 2),
        ticks("cron(0 9 ? * MON-FRI *)", "UTC", "2026-11-27T09:00:00Z", 2)
    );
    assert_eq!(
        ticks("cron(0/15 * * * ? *)", "UTC", "2026-11-27T09:07:00Z", 3),
        [
            "2026-11-27T09:15:00Z",
            "2026-11-27T09:30:00Z",
            "2026-11-27T09:45:00Z"
        ]
    );
    assert_eq!(
        ticks("cron(0 0 1 1 ? 2030)", "UTC", "2026-11-27T09:00:00Z", 1),
        ["2030-01-01T00:00:00Z"]
    );
    assert_eq!(
        Schedule::parse("cron(0 0 1 1 ? 2020)", "UTC")
            .unwrap()
            .next_after(t("2026-01-01T00:00:00Z")),
        None
    );
    assert_eq!(
        ticks(
            "cron(0 0 1 1 ? 2027-2029/2)",
            "UTC",
            "2026-11-27T09:00:00Z",
            2
        ),
        ["2027-01-01T00:00:00Z", "2029-01-01T00:00:00Z"]
    );
}

#[test]
fn aws_cron_l_w_and_hash() {
    // L: last day of the month.
    assert_eq!(
        ticks("cron(0 12 L * ? *)", "UTC", "2026-02-10T00:00:00Z", 2),
        ["2026-02-28T12:00:00Z", "2026-03-31T12:00:00Z"]
    );
    // 6#3: the third Friday (6 = FRI in AWS numbering).
    assert_eq!(
        ticks("cron(0 10 ? * 6#3 *)", "UTC", "2026-11-01T00:00:00Z", 2),
        ["2026-11-20T10:00:00Z", "2026-12-18T10:00:00Z"]
    );
    assert_eq!(
        ticks("cron(0 10 ? * MON#1 *)", "UTC", "2026-11-01T00:00:00Z", 1),
        ["2026-11-02T10:00:00Z"]
    );
    // 6L: the last Friday.
    assert_eq!(
        ticks("cron(0 18 ? * 6L *)", "UTC", "2026-11-01T00:00:00Z", 1),
        ["2026-11-27T18:00:00Z"]
    );
    // L alone in day-of-week: Saturday.
    assert_eq!(
        ticks("cron(0 8 ? * L *)", "UTC", "2026-11-27T00:00:00Z", 1),
        ["2026-11-28T08:00:00Z"]
    );
    // 15W: 2026-08-15 is a Saturday -> Friday 14th; 2026-11-15 a Sunday -> Monday 16th.
    assert_eq!(
        ticks("cron(15 10 15W * ? *)", "UTC", "2026-08-01T00:00:00Z", 1),
        ["2026-08-14T10:15:00Z"]
    );
    assert_eq!(
        ticks("cron(15 10 15W * ? *)", "UTC", "2026-11-01T00:00:00Z", 1),
        ["2026-11-16T10:15:00Z"]
    );
    // 1W never leaves the month: 2026-11-01 is a Sunday -> Monday 2nd.
    assert_eq!(
        ticks("cron(0 0 1W * ? *)", "UTC", "2026-10-31T00:00:00Z", 1),
        ["2026-11-02T00:00:00Z"]
    );
    // LW: the last weekday; 2027-01-31 is a Sunday -> Friday 29th.
    assert_eq!(
        ticks("cron(0 8 LW * ? *)", "UTC", "2027-01-01T00:00:00Z", 1),
        ["2027-01-29T08:00:00Z"]
    );
}

#[test]
fn aws_cron_errors_say_what_is_wrong() {
    assert!(
        err("cron(0 9 * * MON *)")
            .contains("exactly one of day-of-month and day-of-week must be `?`")
    );
    assert!(err("cron(0 9 ? * ? *)").contains("exactly one"));
    assert!(err("cron(0 9 * * ?)").contains("six fields"));
    assert!(err("cron(60 9 * * ? *)").contains("minutes"));
    assert!(err("cron(0 9 ? * 0 *)").contains("day-of-week: \"0\" is not 1-7 or SUN-SAT"));
    assert!(err("cron(0 9 * * ? 1969)").contains("year"));
    assert!(err("cron(0 9 ? * 2#6 *)").contains("occurrence 1-5"));
    assert!(err("cron(0 ? * * ? *)").contains("`?` is only allowed"));
    assert!(err("cron(0 9 5-1 * ? *)").contains("backwards"));
    assert!(err("cron(*/0 9 * * ? *)").contains("step"));
    assert!(
        Schedule::parse("cron(0 9 * * ? *)", "Mars/Olympus")
            .unwrap_err()
            .to_string()
            .contains("unknown time zone")
    );
}

#[test]
fn five_field_cron() {
    assert_eq!(
        ticks("*/5 * * * *", "UTC", "2026-11-27T09:02:00Z", 2),
        ["2026-11-27T09:05:00Z", "2026-11-27T09:10:00Z"]
    );
    assert_eq!(
        ticks("0 9 * * MON-FRI", "UTC", "2026-11-27T09:00:00Z", 1),
        ["2026-11-30T09:00:00Z"]
    );
    // 0 and 7 are both Sunday; 2026-11-29 is a Sunday.
    assert_eq!(
        ticks("0 0 * * 7", "UTC", "2026-11-27T00:00:00Z", 1),
        ["2026-11-29T00:00:00Z"]
    );
    assert_eq!(
        ticks("0 0 * * 0", "UTC", "2026-11-27T00:00:00Z", 1),
        ["2026-11-29T00:00:00Z"]
    );
    // Both day fields restricted: either matches (Vixie). Fri 27th, Tue 1st, Fri 4th.
    assert_eq!(
        ticks("0 0 1,15 * FRI", "UTC", "2026-11-26T00:00:00Z", 3),
        [
            "2026-11-27T00:00:00Z",
            "2026-12-01T00:00:00Z",
            "2026-12-04T00:00:00Z"
        ]
    );
    assert_eq!(
        ticks("30 4 1 jan-mar,dec *", "UTC", "2026-11-27T00:00:00Z", 2),
        ["2026-12-01T04:30:00Z", "2027-01-01T04:30:00Z"]
    );
    assert_eq!(
        ticks("@hourly", "UTC", "2026-11-27T09:02:00Z", 1),
        ["2026-11-27T10:00:00Z"]
    );
    assert_eq!(
        ticks("@weekly", "UTC", "2026-11-27T09:02:00Z", 1),
        ["2026-11-29T00:00:00Z"]
    );
    assert_eq!(
        ticks("0 0 29 2 *", "UTC", "2026-11-27T00:00:00Z", 1),
        ["2028-02-29T00:00:00Z"]
    );
    assert_eq!(
        Schedule::parse("0 0 30 2 *", "UTC")
            .unwrap()
            .next_after(t("2026-01-01T00:00:00Z")),
        None
    );
    assert!(err("* * * *").contains("five-field"));
}

#[test]
fn time_zone_is_applied() {
    // 09:00 in New York is 14:00 UTC in winter.
    assert_eq!(
        next_after(
            "cron(0 9 * * ? *)",
            "America/New_York",
            t("2026-11-27T00:00:00Z")
        )
        .unwrap()
        .unwrap()
        .to_string(),
        "2026-11-27T14:00:00Z"
    );
}

#[test]
fn dst_in_europe_berlin() {
    // Daily 09:00 keeps local time: 08:00Z in CET, 07:00Z in CEST (2026-03-29 spring forward).
    assert_eq!(
        ticks(
            "cron(0 9 * * ? *)",
            "Europe/Berlin",
            "2026-03-28T00:00:00Z",
            2
        ),
        ["2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z"]
    );
    // 02:30 does not exist on 2026-03-29 (02:00 CET -> 03:00 CEST): skipped that day.
    assert_eq!(
        ticks("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 1),
        ["2026-03-30T00:30:00Z"]
    );
    // Every 30 minutes across the gap: 01:30 CET, then 03:00 CEST (one hour of wall clock gone).
    assert_eq!(
        ticks("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 2),
        ["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z"]
    );
    // 02:30 happens twice on 2026-10-25 (03:00 CEST -> 02:00 CET): it fires once, first time.
    assert_eq!(
        ticks("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    // Every 30 minutes across the fold: the repeated 02:00 and 02:30 (CET) do not fire again.
    assert_eq!(
        ticks("*/30 * * * *", "Europe/Berlin", "2026-10-24T23:45:00Z", 4),
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T02:00:00Z",
            "2026-10-25T02:30:00Z"
        ]
    );
    // Starting inside the second pass of the fold does not go back to the first one.
    assert_eq!(
        ticks("*/30 * * * *", "Europe/Berlin", "2026-10-25T01:10:00Z", 1),
        ["2026-10-25T02:00:00Z"]
    );
}

#[test]
fn latest_between_finds_the_last_missed_tick() {
    let s = Schedule::parse("cron(0 9 ? * MON-FRI *)", "UTC").unwrap();
    assert_eq!(
        s.latest_between(t("2026-01-01T00:00:00Z"), t("2026-11-29T12:00:00Z"))
            .unwrap()
            .to_string(),
        "2026-11-27T09:00:00Z"
    );
    assert_eq!(
        s.latest_between(t("2026-11-27T09:00:00Z"), t("2026-11-29T12:00:00Z")),
        None
    );
    let r = Schedule::parse("rate(5 minutes)", "UTC").unwrap();
    assert_eq!(
        r.latest_between(t("2020-01-01T00:00:00Z"), t("2026-11-27T09:07:00Z"))
            .unwrap()
            .to_string(),
        "2026-11-27T09:05:00Z"
    );
    let yearly = Schedule::parse("@yearly", "UTC").unwrap();
    assert_eq!(
        yearly
            .latest_between(t("2016-06-01T00:00:00Z"), t("2026-11-27T09:07:00Z"))
            .unwrap()
            .to_string(),
        "2026-01-01T00:00:00Z"
    );
}

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

fn field(max: u32, min: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (min..=max).prop_map(|v| v.to_string()),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (1..=max.max(1)).prop_map(|s| format!("*/{s}")),
        (min..=max, 1..=max.max(1)).prop_map(|(a, s)| format!("{a}/{s}")),
        prop::collection::vec(min..=max, 1..4).prop_map(|v| v
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")),
    ]
}

fn aws_expr() -> impl Strategy<Value = String> {
    let dom = prop_oneof![
        field(31, 1),
        Just("L".into()),
        Just("LW".into()),
        (1u32..=31).prop_map(|d| format!("{d}W"))
    ];
    let dow = prop_oneof![
        field(7, 1),
        Just("L".into()),
        (1u32..=7).prop_map(|d| format!("{d}L")),
        (1u32..=7, 1u32..=5).prop_map(|(d, n)| format!("{d}#{n}"))
    ];
    let days = prop_oneof![
        dom.prop_map(|d| (d, "?".to_string())),
        dow.prop_map(|w| ("?".to_string(), w))
    ];
    (field(59, 0), field(23, 0), days, field(12, 1))
        .prop_map(|(m, h, (dom, dow), mo)| format!("cron({m} {h} {dom} {mo} {dow} *)"))
}

fn unix_expr() -> impl Strategy<Value = String> {
    (
        field(59, 0),
        field(23, 0),
        field(31, 1),
        field(12, 1),
        field(7, 0),
    )
        .prop_map(|(m, h, d, mo, w)| format!("{m} {h} {d} {mo} {w}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn parse_never_panics(s in ".{0,40}", tz in prop::sample::select(&ZONES[..])) {
        let _ = Schedule::parse(&s, tz);
        let _ = Schedule::parse(&format!("cron({s})"), tz);
        let _ = Schedule::parse(&format!("rate({s})"), tz);
    }

    #[test]
    fn next_after_is_strictly_increasing(
        expr in prop_oneof![aws_expr(), unix_expr()],
        tz in prop::sample::select(&ZONES[..]),
        start in 631_152_000i64..5_000_000_000,
    ) {
        let s = Schedule::parse(&expr, tz).unwrap();
        let mut cur = Timestamp::from_second(start).unwrap();
        for _ in 0..12 {
            let Some(next) = s.next_after(cur) else { break };
            prop_assert!(next > cur, "{expr} in {tz}: {next} is not after {cur}");
            // Ticks fall on whole minutes in every zone here (all offsets are whole minutes).
            prop_assert_eq!(next.as_second() % 60, 0);
            cur = next;
        }
    }
}
