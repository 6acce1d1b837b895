//! Throughput and latency measurements, on disk with durability on (fsync per commit).
//! Ignored by default (timing, not correctness): run with
//! `cargo test -p wisp-events --test throughput -- --ignored --nocapture --test-threads=1`.
//! One check runs by default: concurrent enqueues share commits (group commit).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wisp_events::{
    Claimed, Dispatcher, DispatcherConfig, EventStore, InvokeOutcome, StoreConfig, SystemClock,
};

fn open() -> (tempfile::TempDir, EventStore) {
    // The target dir is on a real disk (not tmpfs), so fsync costs what it costs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = EventStore::open(
        dir.path().join("events.db"),
        Arc::new(SystemClock),
        StoreConfig::default(),
    )
    .unwrap();
    (dir, store)
}

async fn enqueue_concurrently(store: &EventStore, tasks: usize, per_task: usize) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    store
                        .enqueue_invocation("f", b"{\"hello\":\"world\"}", Default::default())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_commits() {
    let (_dir, store) = open();
    enqueue_concurrently(&store, 200, 5).await;
    let commits = store.commits();
    // 1000 durable enqueues; one commit each would be 1000.
    assert!(
        commits < 500,
        "{commits} commits for 1000 concurrent enqueues: no group commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_enqueue() {
    for (tasks, per_task) in [(1, 500), (16, 500), (256, 100), (1024, 40)] {
        let (_dir, store) = open();
        let n = tasks * per_task;
        let took = enqueue_concurrently(&store, tasks, per_task).await;
        println!(
            "enqueue: {tasks:>4} concurrent callers: {n:>6} events in {took:>9.2?} = {:>7.0}/s, {} commits ({:.1} events per fsync)",
            n as f64 / took.as_secs_f64(),
            store.commits(),
            n as f64 / store.commits() as f64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_claim_complete() {
    let (_dir, store) = open();
    const N: usize = 20_000;
    enqueue_concurrently(&store, 200, N / 200).await;
    let start = Instant::now();
    let mut done = 0;
    while done < N {
        let claimed = store.claim(256).await.unwrap();
        let completes: Vec<_> = claimed
            .into_iter()
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .complete(&c, InvokeOutcome::Success { response: vec![] })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for c in completes {
            c.await.unwrap();
            done += 1;
        }
    }
    let took = start.elapsed();
    println!(
        "claim(256) + concurrent complete: {N} events in {took:.2?} = {:.0}/s",
        N as f64 / took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_dispatch_latency() {
    let (_dir, store) = open();
    let started: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let invoke: wisp_events::InvokeFn = {
        let started = started.clone();
        Arc::new(move |c: Claimed| {
            started
                .lock()
                .unwrap()
                .push((String::from_utf8(c.payload).unwrap(), Instant::now()));
            Box::pin(async { InvokeOutcome::Success { response: vec![] } })
        })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(
        Dispatcher::new(store.clone(), invoke, DispatcherConfig::default()).run(async {
            let _ = stopped.await;
        }),
    );
    const N: usize = 1000;
    let mut sent = Vec::with_capacity(N);
    for i in 0..N {
        sent.push(Instant::now());
        store
            .enqueue_invocation("f", i.to_string().as_bytes(), Default::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    while started.lock().unwrap().len() < N {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    run.await.unwrap();
    let mut lat: Vec<Duration> = started
        .lock()
        .unwrap()
        .iter()
        .map(|(i, at)| at.duration_since(sent[i.parse::<usize>().unwrap()]))
        .collect();
    lat.sort();
    println!(
        "enqueue-to-start (no-op invoke, one enqueue every ~2 ms): p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        lat[N / 2],
        lat[N * 99 / 100],
        lat[N - 1]
    );
}
