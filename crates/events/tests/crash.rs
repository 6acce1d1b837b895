//! A real crash: a child process enqueues 10,000 events and is SIGKILLed mid-way. Every
//! event it reported as accepted (it prints the id after `enqueue` returned) must be in
//! the store when the parent reopens it.
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wisp_events::{EventStore, StoreConfig, SystemClock};

const CHILD_ENV: &str = "WISP_EVENTS_CRASH_CHILD_DB";
const TOTAL: usize = 10_000;
const KILL_AFTER: usize = 2_000;

/// The child's side: does nothing unless the parent test started this binary for it.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = EventStore::open(&path, Arc::new(SystemClock), StoreConfig::default()).unwrap();
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (store, next) = (store.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < TOTAL {
                        let id = store
                            .enqueue_invocation("f", b"payload", Default::default())
                            .await
                            .unwrap();
                        // Printed only once enqueue returned: the event is accepted.
                        println!("ACCEPTED {id}");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[tokio::test]
async fn sigkill_mid_way_loses_no_accepted_event() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = dir.path().join("events.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut accepted = HashSet::new();
    let mut line = String::new();
    let mut killed = false;
    while out.read_line(&mut line).unwrap() > 0 {
        // A line cut by the kill (no newline) is not a complete report.
        if let Some(id) = line
            .strip_prefix("ACCEPTED ")
            .and_then(|l| l.strip_suffix('\n'))
        {
            accepted.insert(id.to_string());
        }
        line.clear();
        if !killed && accepted.len() >= KILL_AFTER {
            child.kill().unwrap(); // SIGKILL: no destructors, no flush, no clean close
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the child was not killed: {status:?}"
    );
    assert!(
        accepted.len() < TOTAL,
        "the child finished before it was killed"
    );

    let store = EventStore::open(&db, Arc::new(SystemClock), StoreConfig::default()).unwrap();
    let stored: HashSet<String> = store
        .claim(2 * TOTAL)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    let lost: Vec<_> = accepted.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} accepted events lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    println!(
        "child killed after {} accepted events; {} in the store ({} committed but not yet reported)",
        accepted.len(),
        stored.len(),
        stored.len() - accepted.len()
    );
}
