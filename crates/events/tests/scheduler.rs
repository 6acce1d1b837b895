//! Firing schedules: one enqueue per tick across restarts, missed ticks, payloads.
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use wisp_events::schedule::Schedule;
use wisp_events::{
    EventStore, ManualClock, MissedTicks, ScheduleDef, StoreConfig, TickPayload, run_schedules,
};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn open(dir: &tempfile::TempDir, clock: &ManualClock) -> EventStore {
    EventStore::open(
        dir.path().join("events.db"),
        Arc::new(clock.clone()),
        StoreConfig::default(),
    )
    .unwrap()
}

fn def(expr: &str) -> ScheduleDef {
    ScheduleDef::new("nightly", Schedule::parse(expr, "UTC").unwrap(), "report")
}

async fn pending(store: &EventStore) -> u64 {
    store.invocation_counts(Some("report")).await.unwrap().0
}

#[tokio::test]
async fn at_most_one_enqueue_per_tick_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-11-27T09:00:30Z"));
    let d = def("rate(5 minutes)");
    {
        let store = open(&dir, &clock);
        // A new schedule starts from now: nothing is back-filled.
        assert_eq!(store.fire_schedule(&d).await.unwrap(), None);
        clock.set(t("2026-11-27T09:05:10Z"));
        let fired = store.fire_schedule(&d).await.unwrap().unwrap();
        assert_eq!(
            (fired.tick, fired.catch_up),
            (t("2026-11-27T09:05:00Z"), false)
        );
        assert_eq!(
            store.fire_schedule(&d).await.unwrap(),
            None,
            "same tick fired twice"
        );
        // Firing concurrently (two loops racing) still enqueues nothing more.
        let (a, b) = tokio::join!(store.fire_schedule(&d), store.fire_schedule(&d));
        assert_eq!((a.unwrap(), b.unwrap()), (None, None));
    }
    // Restart within the same tick.
    let store = open(&dir, &clock);
    assert_eq!(
        store.schedule_last_tick("nightly").await.unwrap(),
        Some(t("2026-11-27T09:05:00Z"))
    );
    assert_eq!(
        store.fire_schedule(&d).await.unwrap(),
        None,
        "a restart re-fired the tick"
    );
    assert_eq!(pending(&store).await, 1);
    clock.set(t("2026-11-27T09:10:00Z"));
    assert_eq!(
        store.fire_schedule(&d).await.unwrap().unwrap().tick,
        t("2026-11-27T09:10:00Z")
    );
    assert_eq!(pending(&store).await, 2);
    assert!(store.remove_schedule("nightly").await.unwrap());
}

async fn down_for_two_hours(
    policy: MissedTicks,
) -> (
    EventStore,
    ManualClock,
    Option<wisp_events::Fired>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-11-27T09:00:30Z"));
    let mut d = def("cron(*/5 * * * ? *)");
    d.missed = policy;
    {
        let store = open(&dir, &clock);
        store.fire_schedule(&d).await.unwrap();
        clock.set(t("2026-11-27T09:05:01Z"));
        assert!(store.fire_schedule(&d).await.unwrap().is_some());
    }
    // Down from 09:05 to 11:02: 23 ticks missed.
    clock.set(t("2026-11-27T11:02:00Z"));
    let store = open(&dir, &clock);
    let fired = store.fire_schedule(&d).await.unwrap();
    assert_eq!(store.fire_schedule(&d).await.unwrap(), None);
    assert_eq!(
        store.schedule_last_tick("nightly").await.unwrap(),
        Some(t("2026-11-27T11:00:00Z"))
    );
    // Back to normal: the next tick fires on time.
    clock.set(t("2026-11-27T11:05:00Z"));
    let next = store.fire_schedule(&d).await.unwrap().unwrap();
    assert_eq!(
        (next.tick, next.catch_up),
        (t("2026-11-27T11:05:00Z"), false)
    );
    (store, clock, fired, dir)
}

#[tokio::test]
async fn missed_ticks_run_once() {
    let (store, _clock, fired, _dir) = down_for_two_hours(MissedTicks::RunOnce).await;
    let fired = fired.expect("RunOnce fires at start");
    assert_eq!(
        (fired.tick, fired.catch_up),
        (t("2026-11-27T11:00:00Z"), true)
    );
    assert_eq!(pending(&store).await, 3); // 09:05, the catch-up, 11:05
}

#[tokio::test]
async fn missed_ticks_skip() {
    let (store, _clock, fired, _dir) = down_for_two_hours(MissedTicks::Skip).await;
    assert_eq!(fired, None);
    assert_eq!(pending(&store).await, 2); // 09:05, 11:05
}

#[tokio::test]
async fn tick_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-11-27T08:59:00Z"));
    let store = open(&dir, &clock);
    let mut d = def("cron(0 9 * * ? *)");
    // A fixed id in the options must not turn later ticks into duplicates of the first.
    d.options.id = Some(wisp_events::EventId::new());
    store.fire_schedule(&d).await.unwrap();
    clock.set(t("2026-11-27T09:00:00.250Z"));
    let fired = store.fire_schedule(&d).await.unwrap().unwrap();
    let c = store.claim(1).await.unwrap().remove(0);
    assert_eq!((c.id, c.function.as_str()), (fired.event_id, "report"));
    let v: Value = serde_json::from_slice(&c.payload).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "version": "0",
            "id": fired.event_id.to_string(),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "000000000000",
            "time": "2026-11-27T09:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:000000000000:rule/nightly"],
            "detail": {}
        })
    );
    d.payload = TickPayload::CloudEvent;
    clock.set(t("2026-11-28T09:00:01Z"));
    let second = store.fire_schedule(&d).await.unwrap().unwrap();
    assert_ne!(second.event_id, fired.event_id);
    let c = store.claim(1).await.unwrap().remove(0);
    assert_eq!(c.id, second.event_id);
    let v: Value = serde_json::from_slice(&c.payload).unwrap();
    assert_eq!(v["specversion"], "1.0");
    assert_eq!(v["type"], "wisp.schedule.tick");
    assert_eq!(v["source"], "/wisp/schedules/nightly");
    assert_eq!(v["time"], "2026-11-28T09:00:00.000Z");
    assert_eq!(v["data"]["tick"], "2026-11-28T09:00:00Z");
    // The tick's own trace, in the event (distributed-tracing extension) and for its runs.
    let tp = wisp_events::envelope::event_traceparent(second.event_id);
    assert_eq!(v["traceparent"], tp.as_str());
    assert_eq!(c.traceparent.as_deref(), Some(tp.as_str()));
    assert_eq!(
        wisp_events::envelope::http_content_type(&c.payload),
        wisp_events::envelope::CLOUDEVENTS_JSON
    );
}

#[tokio::test]
async fn run_schedules_fires_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-11-27T09:00:30Z"));
    let store = open(&dir, &clock);
    let (_defs_tx, defs) = tokio::sync::watch::channel(vec![def("rate(1 minute)")]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(run_schedules(store.clone(), defs, async {
        let _ = stopped.await;
    }));
    let settle = || tokio::time::sleep(Duration::from_millis(20));
    // The scheduler has computed its next tick once it sleeps on the clock: only then may
    // the clock move (a tick computed from the moved clock would be a minute later).
    let asleep = || async {
        let mut waited = 0;
        while clock.sleepers() == 0 && waited < 1000 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            waited += 1;
        }
        assert!(clock.sleepers() > 0, "the scheduler never went to sleep");
    };
    asleep().await;
    for minute in 1..=3 {
        clock.set(t(&format!("2026-11-27T09:0{minute}:00Z")));
        // The scheduler task reacts on its own time: poll (bounded) rather than trust a
        // fixed pause on a loaded machine.
        let mut waited = 0;
        while pending(&store).await < minute && waited < 100 {
            settle().await;
            waited += 1;
        }
        assert_eq!(pending(&store).await, minute);
        asleep().await;
    }
    let _ = stop.send(());
    run.await.unwrap();
}
