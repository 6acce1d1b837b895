//! Async invocations: retries with backoff, dead-lettering, destinations, redrive, maximum
//! event age, leases after a crash, throttling, and the dispatcher. All on a manual clock.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use wisp_events::{
    Claimed, Clock, Completion, DeadReason, Dispatcher, DispatcherConfig, EnqueueOptions,
    EventError, EventState, EventStore, InvokeOutcome, ManualClock, Redrive, RetryPolicy,
    StoreConfig, Target,
};

fn t0() -> Timestamp {
    "2026-11-27T09:00:00Z".parse().unwrap()
}

fn open(dir: &tempfile::TempDir, clock: &ManualClock) -> EventStore {
    open_with(dir, clock, StoreConfig::default())
}

fn open_with(dir: &tempfile::TempDir, clock: &ManualClock, config: StoreConfig) -> EventStore {
    EventStore::open(
        dir.path().join("events.db"),
        Arc::new(clock.clone()),
        config,
    )
    .unwrap()
}

fn fail(n: u32) -> InvokeOutcome {
    InvokeOutcome::Failure {
        error: format!("boom {n}"),
        response: Some(
            format!(r#"{{"errorMessage":"boom {n}","errorType":"Error"}}"#).into_bytes(),
        ),
    }
}

fn ms(d: jiff::SignedDuration) -> Duration {
    d.unsigned_abs()
}

#[tokio::test]
async fn failing_target_is_attempted_exactly_1_plus_max_retries_times_then_dead_lettered() {
    let policy = RetryPolicy::default();
    for max_retries in 0..=2u32 {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(t0());
        let store = open(&dir, &clock);
        store
            .create_queue("failures", Default::default())
            .await
            .unwrap();
        let opts = EnqueueOptions {
            max_retries,
            on_failure: Some(Target::Queue("failures".into())),
            ..Default::default()
        };
        let id = store
            .enqueue_invocation("thumbnail", br#"{"n":1}"#, opts)
            .await
            .unwrap();
        let mut attempts = 0;
        loop {
            let claimed = store.claim(10).await.unwrap();
            assert_eq!(
                claimed.len(),
                1,
                "attempt {} was not delivered",
                attempts + 1
            );
            attempts += 1;
            assert_eq!((claimed[0].id, claimed[0].attempt), (id, attempts));
            let failed_at = clock.now();
            match store.complete(&claimed[0], fail(attempts)).await.unwrap() {
                Completion::Retrying {
                    retry,
                    next_attempt_at,
                } => {
                    assert_eq!(retry, attempts);
                    let delay = ms(next_attempt_at.duration_since(failed_at));
                    // base 1 s x 2^(retry-1), +-50%: [0.5 s, 1.5 s], then [1 s, 3 s].
                    let (lo, hi) = (
                        Duration::from_millis(500) * 2u32.pow(retry - 1),
                        Duration::from_millis(1500) * 2u32.pow(retry - 1),
                    );
                    assert_eq!(policy.range(retry), (lo, hi));
                    assert!(
                        delay >= lo && delay <= hi,
                        "retry {retry} after {delay:?}, outside {lo:?}..{hi:?}"
                    );
                    // Not a millisecond early.
                    clock.set(
                        next_attempt_at
                            .checked_sub(Duration::from_millis(1))
                            .unwrap(),
                    );
                    assert!(store.claim(10).await.unwrap().is_empty());
                    clock.set(next_attempt_at);
                }
                Completion::DeadLettered { reason } => {
                    assert_eq!(reason, DeadReason::RetriesExhausted);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(attempts, 1 + max_retries);
        clock.advance(Duration::from_secs(3600));
        assert!(
            store.claim(10).await.unwrap().is_empty(),
            "a dead event was delivered again"
        );

        let dlq = store.dlq_list("thumbnail").await.unwrap();
        assert_eq!(dlq.len(), 1);
        let d = &dlq[0];
        assert_eq!(
            (d.id, d.reason, d.attempts),
            (id, DeadReason::RetriesExhausted, attempts)
        );
        assert_eq!(
            d.last_error.as_deref(),
            Some(format!("boom {attempts}").as_str())
        );
        assert_eq!(d.payload, br#"{"n":1}"#);
        assert_eq!((d.enqueued_at, d.first_attempt_at), (t0(), Some(t0())));
        assert!(
            d.last_attempt_at.unwrap() >= d.first_attempt_at.unwrap()
                && d.dead_at >= d.last_attempt_at.unwrap()
        );
        assert_eq!(store.dlq_get(id).await.unwrap().as_ref(), Some(d));
        assert_eq!(
            store.get(id).await.unwrap().unwrap().state,
            EventState::Dead(DeadReason::RetriesExhausted)
        );

        // The on-failure destination got one Lambda destination record.
        let records = store.receive("failures", 10, None).await.unwrap();
        assert_eq!(records.len(), 1);
        let r: Value = serde_json::from_str(&records[0].body).unwrap();
        assert_eq!(r["version"], "1.0");
        assert_eq!(r["requestContext"]["requestId"], id.to_string());
        assert_eq!(r["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(r["requestContext"]["approximateInvokeCount"], attempts);
        assert_eq!(
            r["requestContext"]["functionArn"],
            "arn:aws:lambda:us-east-1:000000000000:function:thumbnail:$LATEST"
        );
        assert_eq!(r["requestPayload"], json!({"n": 1}));
        assert_eq!(
            r["responseContext"],
            json!({"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"})
        );
        assert_eq!(
            r["responsePayload"]["errorMessage"],
            format!("boom {attempts}")
        );
    }
}

#[tokio::test]
async fn backoff_is_jittered() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let store = open(&dir, &clock);
    for _ in 0..40 {
        store
            .enqueue_invocation("f", b"x", Default::default())
            .await
            .unwrap();
    }
    let mut delays = Vec::new();
    for c in store.claim(100).await.unwrap() {
        let Completion::Retrying {
            next_attempt_at, ..
        } = store.complete(&c, fail(1)).await.unwrap()
        else {
            panic!()
        };
        delays.push(ms(next_attempt_at.duration_since(t0())));
    }
    let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
    // Uniform in [0.5 s, 1.5 s]: 40 draws all within 0.2 s of the middle is a ~1e-28 chance.
    assert!(
        *min < Duration::from_millis(900) && *max > Duration::from_millis(1100),
        "{min:?}..{max:?}"
    );
}

#[tokio::test]
async fn redrive_reprocesses_dead_letters_with_fresh_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let store = open(&dir, &clock);
    let opts = || EnqueueOptions {
        max_retries: 0,
        ..Default::default()
    };
    let a = store.enqueue_invocation("f", b"a", opts()).await.unwrap();
    let b = store.enqueue_invocation("f", b"b", opts()).await.unwrap();
    for c in store.claim(10).await.unwrap() {
        store.complete(&c, fail(1)).await.unwrap();
    }
    assert_eq!(store.dlq_list("f").await.unwrap().len(), 2);
    assert!(store.dlq_list("other").await.unwrap().is_empty());

    clock.advance(Duration::from_secs(7 * 3600)); // older than the max age: redrive resets it
    assert_eq!(store.redrive("f", Redrive::Ids(vec![b])).await.unwrap(), 1);
    let claimed = store.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].id, claimed[0].attempt, claimed[0].enqueued_at),
        (b, 1, clock.now())
    );
    assert_eq!(
        store
            .complete(&claimed[0], InvokeOutcome::Success { response: vec![] })
            .await
            .unwrap(),
        Completion::Succeeded
    );
    assert_eq!(
        store.get(b).await.unwrap().unwrap().state,
        EventState::Succeeded
    );

    assert_eq!(
        store
            .dlq_list("f")
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        [a]
    );
    assert_eq!(store.redrive("f", Redrive::All).await.unwrap(), 1);
    assert!(store.dlq_list("f").await.unwrap().is_empty());
    assert_eq!(store.claim(10).await.unwrap()[0].id, a);
    assert_eq!(store.redrive("f", Redrive::All).await.unwrap(), 0);
}

#[tokio::test]
async fn max_event_age_sends_old_events_to_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let store = open(&dir, &clock);
    store
        .create_queue("failures", Default::default())
        .await
        .unwrap();
    let opts = EnqueueOptions {
        max_event_age: Duration::from_secs(60),
        on_failure: Some(Target::Queue("failures".into())),
        ..Default::default()
    };
    // Never delivered in time (the node was down): dead on the first claim.
    let old = store
        .enqueue_invocation("f", b"old", opts.clone())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(61));
    assert!(store.claim(10).await.unwrap().is_empty());
    let d = store.dlq_get(old).await.unwrap().unwrap();
    assert_eq!((d.reason, d.attempts), (DeadReason::EventAgeExceeded, 0));

    // Failed close to the limit: the retry would be too late, so it is dead at once.
    let late = store.enqueue_invocation("f", b"late", opts).await.unwrap();
    clock.advance(Duration::from_millis(59_600));
    let c = store.claim(10).await.unwrap();
    assert_eq!(c[0].id, late);
    assert_eq!(
        store.complete(&c[0], fail(1)).await.unwrap(),
        Completion::DeadLettered {
            reason: DeadReason::EventAgeExceeded
        }
    );
    assert_eq!(
        store
            .dlq_get(late)
            .await
            .unwrap()
            .unwrap()
            .last_error
            .as_deref(),
        Some("boom 1")
    );
    let conditions: Vec<String> = store
        .receive("failures", 10, None)
        .await
        .unwrap()
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(&m.body).unwrap()["requestContext"]["condition"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(conditions, ["EventAgeExceeded", "EventAgeExceeded"]);
}

#[tokio::test]
async fn leases_redeliver_after_a_crash_and_nothing_is_lost() {
    const N: usize = 1000;
    const CLAIMED: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let lease = Duration::from_secs(60);
    let mut ids = HashSet::new();
    {
        let store = open(&dir, &clock);
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let opts = EnqueueOptions {
                        lease: Some(lease),
                        ..Default::default()
                    };
                    store
                        .enqueue_invocation("f", format!("{i}").as_bytes(), opts)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            ids.insert(t.await.unwrap());
        }
        let claimed = store.claim(CLAIMED).await.unwrap();
        assert_eq!(claimed.len(), CLAIMED);
        // The "crash": the store goes away with 300 events in flight, none completed.
    }
    let store = open(&dir, &clock);
    // Within the lease, only the unclaimed events are handed out.
    clock.advance(lease - Duration::from_millis(1));
    let fresh = store.claim(N).await.unwrap();
    assert_eq!(fresh.len(), N - CLAIMED);
    assert!(fresh.iter().all(|c| c.attempt == 1));
    // Once the lease is over, the 300 in flight at the crash come again, as attempt 2.
    clock.advance(Duration::from_millis(1));
    let again = store.claim(N).await.unwrap();
    assert_eq!(again.len(), CLAIMED);
    assert!(again.iter().all(|c| c.attempt == 2));
    // Every accepted event was delivered; the duplicates are recognisable by their attempt.
    let seen: HashSet<_> = fresh.iter().chain(&again).map(|c| c.id).collect();
    assert_eq!(seen, ids);
    let duplicates = fresh.iter().chain(&again).filter(|c| c.attempt > 1).count();
    assert_eq!(duplicates, CLAIMED);
    let all = again;
    // A lost lease does not use up a retry, and a late result for it is ignored.
    let c = &all[0];
    let stale = Claimed {
        attempt: c.attempt - 1,
        ..c.clone()
    };
    assert_eq!(
        store
            .complete(&stale, InvokeOutcome::Success { response: vec![] })
            .await
            .unwrap(),
        Completion::LeaseLost
    );
    assert_eq!(
        store
            .complete(c, InvokeOutcome::Success { response: vec![] })
            .await
            .unwrap(),
        Completion::Succeeded
    );
}

#[tokio::test]
async fn an_event_that_keeps_losing_its_lease_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let config = StoreConfig {
        max_lease_expiries: 2,
        ..Default::default()
    };
    let store = open_with(&dir, &clock, config);
    let id = store
        .enqueue_invocation(
            "f",
            b"poison",
            EnqueueOptions {
                lease: Some(Duration::from_secs(10)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for attempt in 1..=3 {
        let c = store.claim(1).await.unwrap();
        assert_eq!((c[0].id, c[0].attempt), (id, attempt));
        clock.advance(Duration::from_secs(11));
    }
    assert!(store.claim(1).await.unwrap().is_empty());
    let d = store.dlq_get(id).await.unwrap().unwrap();
    assert_eq!(d.reason, DeadReason::RetriesExhausted);
    assert!(
        d.last_error
            .unwrap()
            .contains("did not complete within its lease")
    );
}

#[tokio::test]
async fn throttled_attempts_do_not_use_up_retries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let store = open(&dir, &clock);
    let id = store
        .enqueue_invocation(
            "f",
            b"x",
            EnqueueOptions {
                max_retries: 0,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for _ in 0..5 {
        let c = store.claim(1).await.unwrap();
        assert_eq!(c[0].attempt, 1);
        let Completion::Requeued { next_attempt_at } = store
            .complete(&c[0], InvokeOutcome::Throttled)
            .await
            .unwrap()
        else {
            panic!()
        };
        clock.set(next_attempt_at);
    }
    let c = store.claim(1).await.unwrap();
    assert_eq!((c[0].id, c[0].attempt), (id, 1));
}

#[tokio::test]
async fn success_goes_to_the_on_success_destination() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let store = open(&dir, &clock);
    let opts = EnqueueOptions {
        on_success: Some(Target::Function("audit".into())),
        ..Default::default()
    };
    let id = store
        .enqueue_invocation("f", br#"{"order":7}"#, opts)
        .await
        .unwrap();
    let c = store.claim(10).await.unwrap();
    store
        .complete(
            &c[0],
            InvokeOutcome::Success {
                response: br#"{"ok":true}"#.to_vec(),
            },
        )
        .await
        .unwrap();
    let audit = store.claim(10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].function, "audit");
    let r: Value = serde_json::from_slice(&audit[0].payload).unwrap();
    assert_eq!(r["requestContext"]["condition"], "Success");
    assert_eq!(r["requestContext"]["requestId"], id.to_string());
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(r["requestPayload"], json!({"order": 7}));
    assert_eq!(r["responsePayload"], json!({"ok": true}));
    assert_eq!(
        r["responseContext"],
        json!({"statusCode": 200, "executedVersion": "$LATEST"})
    );
    assert_eq!(r["timestamp"], "2026-11-27T09:00:00.000Z");
}

#[tokio::test]
async fn enqueue_validates_and_is_idempotent_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let store = open_with(
        &dir,
        &clock,
        StoreConfig {
            max_payload: 10,
            ..Default::default()
        },
    );
    assert!(matches!(
        store
            .enqueue_invocation("f", &[0; 11], Default::default())
            .await,
        Err(EventError::PayloadTooLarge {
            size: 11,
            limit: 10
        })
    ));
    assert!(matches!(
        store
            .enqueue_invocation("no/slash", b"", Default::default())
            .await,
        Err(EventError::InvalidName { .. })
    ));
    let bad = EnqueueOptions {
        max_retries: 3,
        ..Default::default()
    };
    assert!(matches!(
        store.enqueue_invocation("f", b"", bad).await,
        Err(EventError::InvalidOption(_))
    ));
    let id = wisp_events::EventId::new();
    let opts = EnqueueOptions {
        id: Some(id),
        ..Default::default()
    };
    assert_eq!(
        store
            .enqueue_invocation("f", b"1", opts.clone())
            .await
            .unwrap(),
        id
    );
    assert_eq!(store.enqueue_invocation("f", b"2", opts).await.unwrap(), id);
    let c = store.claim(10).await.unwrap();
    assert_eq!((c.len(), c[0].payload.as_slice()), (1, &b"1"[..]));
    // Delay: not due before.
    let delayed = EnqueueOptions {
        delay: Duration::from_secs(5),
        ..Default::default()
    };
    store
        .enqueue(Target::Function("f".into()), b"later", delayed)
        .await
        .unwrap();
    assert!(store.claim(10).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(5));
    assert_eq!(store.claim(10).await.unwrap().len(), 1);
    assert_eq!(store.invocation_counts(Some("f")).await.unwrap(), (0, 2, 0));
}

#[tokio::test]
async fn dispatcher_runs_retries_and_completes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let store = open(&dir, &clock);
    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let invoke: wisp_events::InvokeFn = {
        let calls = calls.clone();
        Arc::new(move |c: Claimed| {
            let calls = calls.clone();
            Box::pin(async move {
                *calls.lock().unwrap().entry(c.id.to_string()).or_default() += 1;
                // The first attempt of each event fails, the retry succeeds.
                if c.attempt == 1 {
                    fail(1)
                } else {
                    InvokeOutcome::Success { response: vec![] }
                }
            })
        })
    };
    let config = DispatcherConfig {
        concurrency: 4,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(Dispatcher::new(store.clone(), invoke, config).run(async {
        let _ = stopped.await;
    }));
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            store
                .enqueue_invocation("f", format!("{i}").as_bytes(), Default::default())
                .await
                .unwrap(),
        );
    }
    // Drive the clock until every event succeeded (real waits of a few ms at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (pending, in_flight, dead) = store.invocation_counts(None).await.unwrap();
        if pending + in_flight == 0 {
            assert_eq!(dead, 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dispatcher stuck: {pending} pending, {in_flight} in flight"
        );
        clock.advance(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = stop.send(());
    run.await.unwrap();
    let calls = calls.lock().unwrap();
    for id in &ids {
        assert_eq!(calls[&id.to_string()], 2, "event {id}");
    }
}

#[tokio::test]
async fn one_functions_backlog_does_not_hold_back_another_functions_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let store = open(&dir, &clock);
    for _ in 0..300 {
        store
            .enqueue_invocation("runaway", b"{}", EnqueueOptions::default())
            .await
            .unwrap();
    }
    clock.advance(Duration::from_millis(5));
    store
        .enqueue_invocation("other", b"{}", EnqueueOptions::default())
        .await
        .unwrap();
    clock.advance(Duration::from_millis(5));
    // The first claim of 10 already carries the other function's event, though 300
    // older ones are due.
    let claimed = store.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 10);
    assert!(
        claimed.iter().any(|c| c.function == "other"),
        "{:?}",
        claimed.iter().map(|c| &c.function).collect::<Vec<_>>()
    );
    // With one function only, the claim is simply the oldest first.
    let next = store.claim(10).await.unwrap();
    assert_eq!(next.len(), 10);
    assert!(next.iter().all(|c| c.function == "runaway"));
}
