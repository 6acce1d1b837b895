//! Named queues: batch receive, visibility timeouts, delete, partial batch failure,
//! max_receive_count -> dead-letter queue, stats, batch windows. All on a manual clock.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use wisp_events::envelope::{BatchResponse, parse_batch_response};
use wisp_events::{
    BatchReceive, Clock, EventError, EventStore, ManualClock, MessageAttribute, QueueConfig,
    QueueStats, RedrivePolicy, StoreConfig,
};

fn t0() -> Timestamp {
    "2026-11-27T09:00:00Z".parse().unwrap()
}

fn open(dir: &tempfile::TempDir, clock: &ManualClock) -> EventStore {
    EventStore::open(
        dir.path().join("events.db"),
        Arc::new(clock.clone()),
        StoreConfig::default(),
    )
    .unwrap()
}

async fn setup() -> (tempfile::TempDir, ManualClock, EventStore) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let store = open(&dir, &clock);
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    assert!(store.create_queue("jobs", config).await.unwrap());
    (dir, clock, store)
}

async fn send_n(store: &EventStore, queue: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            store
                .send(queue, &format!("m{i}"), BTreeMap::new())
                .await
                .unwrap(),
        );
    }
    ids
}

#[tokio::test]
async fn batch_receive_returns_oldest_first_with_attributes() {
    let (_dir, clock, store) = setup().await;
    let attrs = BTreeMap::from([("kind".to_string(), MessageAttribute::string("thumb"))]);
    let first = store.send("jobs", "test", attrs.clone()).await.unwrap();
    clock.advance(Duration::from_millis(5));
    let ids = send_n(&store, "jobs", 14).await;
    clock.advance(Duration::from_millis(7));
    let batch = store.receive("jobs", 10, None).await.unwrap();
    assert_eq!(batch.len(), 10);
    assert_eq!(batch[0].message_id, first);
    assert_eq!(
        batch[1..]
            .iter()
            .map(|m| m.message_id.clone())
            .collect::<Vec<_>>(),
        ids[..9]
    );
    let m = &batch[0];
    assert_eq!(
        (m.body.as_str(), m.md5_of_body.as_str()),
        ("test", "098f6bcd4621d373cade4e832627b4f6")
    );
    assert_eq!(m.attributes.approximate_receive_count, 1);
    assert_eq!(m.attributes.sent_timestamp, t0());
    assert_eq!(
        m.attributes.approximate_first_receive_timestamp,
        clock.now()
    );
    assert_eq!(m.message_attributes, attrs);
    // The other 5 are still there; the 10 are invisible.
    assert_eq!(store.receive("jobs", 10, None).await.unwrap().len(), 5);
    assert!(store.receive("jobs", 10, None).await.unwrap().is_empty());
    assert!(matches!(
        store.receive("nope", 1, None).await,
        Err(EventError::NoSuchQueue(_))
    ));
    assert!(matches!(
        store.send("nope", "x", BTreeMap::new()).await,
        Err(EventError::NoSuchQueue(_))
    ));
}

#[tokio::test]
async fn visibility_expiry_redelivers_with_receive_count_incremented() {
    let (_dir, clock, store) = setup().await;
    let id = store.send("jobs", "x", BTreeMap::new()).await.unwrap();
    let first = store.receive("jobs", 1, None).await.unwrap().remove(0);
    clock.advance(Duration::from_millis(29_999));
    assert!(
        store.receive("jobs", 1, None).await.unwrap().is_empty(),
        "visible before its timeout"
    );
    clock.advance(Duration::from_millis(1));
    let second = store.receive("jobs", 1, None).await.unwrap().remove(0);
    assert_eq!(second.message_id, id);
    assert_eq!(second.attributes.approximate_receive_count, 2);
    assert_eq!(second.attributes.approximate_first_receive_timestamp, t0());
    assert_ne!(second.receipt_handle, first.receipt_handle);
    // The old receipt no longer deletes it; the new one does.
    assert!(!store.delete(&first.receipt_handle).await.unwrap());
    assert!(store.delete(&second.receipt_handle).await.unwrap());
    assert!(!store.delete(&second.receipt_handle).await.unwrap());
    clock.advance(Duration::from_secs(3600));
    assert!(
        store.receive("jobs", 1, None).await.unwrap().is_empty(),
        "a deleted message came back"
    );
}

#[tokio::test]
async fn change_visibility_and_per_receive_timeout() {
    let (_dir, clock, store) = setup().await;
    send_n(&store, "jobs", 1).await;
    let first = store
        .receive("jobs", 1, Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .remove(0);
    // The per-receive timeout (5 s) applies, not the queue's 30 s.
    clock.advance(Duration::from_millis(4_999));
    assert!(store.receive("jobs", 1, None).await.unwrap().is_empty());
    clock.advance(Duration::from_millis(1));
    let m = store.receive("jobs", 1, None).await.unwrap().remove(0);
    assert_eq!(m.message_id, first.message_id);
    assert!(
        store
            .change_visibility(&m.receipt_handle, Duration::ZERO)
            .await
            .unwrap()
    );
    let m = store.receive("jobs", 1, None).await.unwrap().remove(0);
    assert_eq!(m.attributes.approximate_receive_count, 3);
    assert!(
        store
            .change_visibility(&m.receipt_handle, Duration::from_secs(600))
            .await
            .unwrap()
    );
    clock.advance(Duration::from_secs(599));
    assert!(store.receive("jobs", 1, None).await.unwrap().is_empty());
    assert!(
        !store
            .change_visibility("bogus", Duration::ZERO)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn partial_batch_failure_deletes_only_the_successes() {
    let (_dir, clock, store) = setup().await;
    send_n(&store, "jobs", 5).await;
    let batch = store.receive("jobs", 10, None).await.unwrap();
    let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
    let response = format!(
        r#"{{"batchItemFailures":[{{"itemIdentifier":"{}"}},{{"itemIdentifier":"{}"}}]}}"#,
        ids[1], ids[3]
    );
    let BatchResponse::Failed(failed) = parse_batch_response(response.as_bytes(), &ids) else {
        panic!()
    };
    assert_eq!(failed, [ids[1], ids[3]]);
    assert_eq!(store.settle_batch(&batch, &failed).await.unwrap(), 3);
    clock.advance(Duration::from_secs(30));
    let back = store.receive("jobs", 10, None).await.unwrap();
    let mut back_ids: Vec<_> = back.iter().map(|m| m.message_id.clone()).collect();
    back_ids.sort();
    let mut want = vec![ids[1].to_string(), ids[3].to_string()];
    want.sort();
    assert_eq!(back_ids, want);
    assert!(
        back.iter()
            .all(|m| m.attributes.approximate_receive_count == 2)
    );
}

#[tokio::test]
async fn max_receive_count_moves_messages_to_the_dead_letter_queue() {
    let (_dir, clock, store) = setup().await;
    store
        .create_queue("jobs-dlq", QueueConfig::default())
        .await
        .unwrap();
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(10),
        redrive: Some(RedrivePolicy {
            dead_letter_queue: "jobs-dlq".into(),
            max_receive_count: 3,
        }),
        ..Default::default()
    };
    assert!(
        !store.create_queue("jobs", config).await.unwrap(),
        "updating an existing queue"
    );
    let id = store.send("jobs", "poison", BTreeMap::new()).await.unwrap();
    for n in 1..=3 {
        let m = store.receive("jobs", 1, None).await.unwrap();
        assert_eq!(
            (
                m[0].message_id.as_str(),
                m[0].attributes.approximate_receive_count
            ),
            (id.as_str(), n)
        );
        clock.advance(Duration::from_secs(10));
    }
    // The 4th receive moves it instead of delivering it.
    assert!(store.receive("jobs", 1, None).await.unwrap().is_empty());
    let stats = store.stats("jobs").await.unwrap();
    assert_eq!(
        (stats.depth, stats.in_flight, stats.dlq_depth),
        (0, 0, Some(1))
    );
    let dead = store.receive("jobs-dlq", 1, None).await.unwrap();
    assert_eq!(
        (dead[0].message_id.as_str(), dead[0].body.as_str()),
        (id.as_str(), "poison")
    );
    assert_eq!(dead[0].attributes.approximate_receive_count, 1);
    // Redrive back to the source queue.
    store
        .change_visibility(&dead[0].receipt_handle, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(store.redrive_queue("jobs-dlq", 10).await.unwrap(), 1);
    let m = store.receive("jobs", 1, None).await.unwrap();
    assert_eq!(
        (
            m[0].message_id.as_str(),
            m[0].attributes.approximate_receive_count
        ),
        (id.as_str(), 1)
    );
    // A dead-letter queue in use cannot be deleted; an unknown one is refused at create.
    assert!(store.delete_queue("jobs-dlq").await.is_err());
    let bad = QueueConfig {
        redrive: Some(RedrivePolicy {
            dead_letter_queue: "missing".into(),
            max_receive_count: 3,
        }),
        ..Default::default()
    };
    assert!(matches!(
        store.create_queue("other", bad).await,
        Err(EventError::NoSuchQueue(_))
    ));
    assert_eq!(store.list_queues().await.unwrap().len(), 2);
}

#[tokio::test]
async fn stats_and_retention() {
    let (_dir, clock, store) = setup().await;
    send_n(&store, "jobs", 3).await;
    clock.advance(Duration::from_secs(42));
    store.receive("jobs", 1, None).await.unwrap();
    assert_eq!(
        store.stats("jobs").await.unwrap(),
        QueueStats {
            depth: 2,
            in_flight: 1,
            oldest_age: Some(Duration::from_secs(42)),
            dlq_depth: None
        }
    );
    // Past the 4-day retention, messages are gone.
    clock.advance(Duration::from_secs(4 * 86_400));
    assert!(store.receive("jobs", 10, None).await.unwrap().is_empty());
    assert_eq!(store.maintenance().await.unwrap().messages_expired, 3);
    assert_eq!(store.stats("jobs").await.unwrap(), QueueStats::default());
}

#[tokio::test]
async fn batch_window_collects_until_full_or_window_ends() {
    let (_dir, clock, store) = setup().await;
    let opts = BatchReceive {
        max: 5,
        window: Duration::from_secs(10),
        wait: Duration::from_secs(60),
        visibility: None,
    };
    let receiver = {
        let (store, opts) = (store.clone(), opts.clone());
        tokio::spawn(async move { store.receive_batch("jobs", &opts).await.unwrap() })
    };
    // Waits (bounded, on real time) until the receiver holds `n` messages: then it has
    // seen them, and the clock may move.
    let taken = |n: u64| {
        let store = store.clone();
        async move {
            for _ in 0..500 {
                if store.stats("jobs").await.unwrap().in_flight == n {
                    return;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            panic!("the receiver never took {n} messages");
        }
    };
    assert!(
        !receiver.is_finished(),
        "returned with nothing in the queue"
    );
    send_n(&store, "jobs", 2).await; // first message starts the 10 s window
    taken(2).await;
    assert!(!receiver.is_finished(), "returned before the window ended");
    clock.advance(Duration::from_secs(6));
    send_n(&store, "jobs", 1).await;
    taken(3).await;
    assert!(!receiver.is_finished());
    clock.advance(Duration::from_secs(4));
    let batch = tokio::time::timeout(Duration::from_secs(5), receiver)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.len(), 3);
    store.settle_batch(&batch, &[]).await.unwrap();

    // A full batch returns at once, without the clock moving.
    send_n(&store, "jobs", 7).await;
    let batch = tokio::time::timeout(Duration::from_secs(5), store.receive_batch("jobs", &opts))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.len(), 5);
    store.settle_batch(&batch, &[]).await.unwrap();

    // Long poll with nothing arriving: empty after `wait`.
    let rest = store.receive("jobs", 10, None).await.unwrap();
    assert_eq!(store.settle_batch(&rest, &[]).await.unwrap(), 2);
    let waiting = {
        let (store, opts) = (store.clone(), opts.clone());
        tokio::spawn(async move { store.receive_batch("jobs", &opts).await.unwrap() })
    };
    for _ in 0..500 {
        if clock.sleepers() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(clock.sleepers() > 0, "the long poll never went to sleep");
    clock.advance(Duration::from_secs(60));
    assert!(
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn ensure_queue_creates_a_missing_queue_and_keeps_an_existing_ones_settings() {
    let (_dir, _clock, store) = setup().await;
    assert!(
        store
            .create_queue("dead", QueueConfig::default())
            .await
            .unwrap()
    );
    let custom = QueueConfig {
        visibility_timeout: Duration::from_secs(5),
        redrive: Some(RedrivePolicy {
            dead_letter_queue: "dead".into(),
            max_receive_count: 3,
        }),
        ..Default::default()
    };
    assert!(
        store
            .create_queue("failures", custom.clone())
            .await
            .unwrap()
    );
    assert!(!store.ensure_queue("failures").await.unwrap());
    assert!(store.ensure_queue("fresh").await.unwrap());
    assert!(!store.ensure_queue("fresh").await.unwrap());
    let queues = store.list_queues().await.unwrap();
    let config = |name: &str| {
        queues
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
            .unwrap()
    };
    assert_eq!(config("failures"), custom, "settings untouched");
    assert_eq!(config("fresh"), QueueConfig::default());
    store.send("fresh", "hello", BTreeMap::new()).await.unwrap();
    assert!(matches!(
        store.ensure_queue("no spaces").await,
        Err(EventError::InvalidName { .. })
    ));
    assert!(wisp_events::check_queue_name("failures").is_ok());
    assert!(wisp_events::check_queue_name("").is_err());
}
