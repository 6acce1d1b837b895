//! Object events: emitted for put, multipart complete, copy and delete, in commit order,
//! only once the change is durable; and the store's state surviving a restart.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::{Client, Payload};
use md5::Digest;
use wisp_objects::{
    Ack, Acker, Config, CreatedKind, EventKind, EventSink, ObjectEvent, ObjectStore, RemovedKind,
    StaticCredentials, s3_notification_record,
};

/// Opens the store at `root` once the previous server on it has let go (its connection
/// tasks end shortly after the client closes them).
async fn reopen(root: &std::path::Path) -> ObjectStore {
    for _ in 0..100 {
        match ObjectStore::open(root, Config::default()) {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    panic!("the store at {} stayed locked", root.display());
}

/// Checks, at the moment an event is emitted, what a fresh reader of the disk would see:
/// the committed metadata row (through a separate SQLite connection) and the data files.
struct CheckingSink {
    root: PathBuf,
    forward: tokio::sync::mpsc::UnboundedSender<ObjectEvent>,
    problems: Mutex<Vec<String>>,
}

impl CheckingSink {
    fn check(&self, e: &ObjectEvent) -> Result<(), String> {
        let conn = rusqlite::Connection::open_with_flags(
            self.root.join("objects.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .map_err(|x| x.to_string())?;
        let row: Option<(String, i64, String)> = conn
            .query_row(
                "SELECT etag, size, segments FROM objects WHERE bucket = ?1 AND key = ?2",
                rusqlite::params![e.bucket, e.key.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ok();
        match (e.kind, row) {
            (EventKind::ObjectCreated(_), Some((etag, size, segments))) => {
                if etag != e.etag || size as u64 != e.size {
                    return Err(format!("{}: row {etag}/{size} vs event", e.key));
                }
                let segs: Vec<serde_json::Value> =
                    serde_json::from_str(&segments).map_err(|x| x.to_string())?;
                let mut on_disk = 0;
                for s in segs {
                    let id = s["blob"].as_str().unwrap_or("");
                    let path = self.root.join("blobs").join(&id[..2]).join(id);
                    on_disk += std::fs::metadata(&path)
                        .map_err(|x| format!("{}: {id}: {x}", e.key))?
                        .len();
                }
                if on_disk != e.size {
                    return Err(format!("{}: {on_disk} bytes on disk", e.key));
                }
                Ok(())
            }
            (EventKind::ObjectCreated(_), None) => Err(format!("{}: no committed row", e.key)),
            (EventKind::ObjectRemoved(_), Some(_)) => Err(format!("{}: row still there", e.key)),
            (EventKind::ObjectRemoved(_), None) => Ok(()),
        }
    }
}

impl EventSink for CheckingSink {
    fn send(&self, event: ObjectEvent) -> Ack {
        if let Err(p) = self.check(&event) {
            self.problems.lock().unwrap().push(p);
        }
        let _ = self.forward.send(event);
        Ack::done()
    }
}

/// Holds every acknowledgement until the test gives it: `Ok` or a failure reason.
#[derive(Default)]
struct HeldSink {
    pending: Mutex<Vec<(ObjectEvent, Acker)>>,
}

impl EventSink for HeldSink {
    fn send(&self, event: ObjectEvent) -> Ack {
        let (acker, ack) = Ack::pending();
        self.pending.lock().unwrap().push((event, acker));
        ack
    }
}

impl HeldSink {
    /// Waits until `n` events are held, then answers them all with `result`; their keys.
    async fn answer(&self, n: usize, result: Result<(), String>) -> Vec<String> {
        for _ in 0..200 {
            if self.pending.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let held: Vec<_> = self.pending.lock().unwrap().drain(..).collect();
        assert_eq!(held.len(), n, "events held");
        held.into_iter()
            .map(|(e, acker)| {
                acker.ack(result.clone());
                e.key
            })
            .collect()
    }
}

/// Sends `request`, checks that it is not answered while the sink holds its `n` events,
/// then answers them with `result`; the events' keys and the response.
async fn held_request(
    sink: &HeldSink,
    n: usize,
    result: Result<(), String>,
    request: impl std::future::Future<Output = common::Resp> + Send + 'static,
) -> (Vec<String>, common::Resp) {
    let task = tokio::spawn(request);
    // Not synchronisation: that no answer comes while the events are unacknowledged is
    // what is checked, and only a span of time without one can show it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "answered before the sink acknowledged");
    let mut keys = sink.answer(n, result).await;
    keys.sort();
    (keys, task.await.unwrap())
}

/// A request is answered only after the sink acknowledged each of its events; a failed
/// acknowledgement is a 503 (the change stands, so a retry triggers again).
#[tokio::test]
async fn responses_wait_for_the_sinks_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        min_part_size: 1,
        ..Config::default()
    };
    let store = Arc::new(ObjectStore::open(dir.path().join("objects"), config).unwrap());
    let sink = Arc::new(HeldSink::default());
    let creds = Arc::new(StaticCredentials::new().with(common::ACCESS_KEY, common::SECRET));
    let app = wisp_objects::router(store.clone(), creds, sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let c = Client::new(addr);
    c.create_bucket("held").await;

    // PutObject: stored at once, answered only after the acknowledgement.
    let (keys, r) = held_request(&sink, 1, Ok(()), {
        let (c, store) = (c.clone(), store.clone());
        async move {
            let r = c.put("/held/a.jpg", b"data").await;
            assert!(store.head_object("held", "a.jpg").unwrap().is_some());
            r
        }
    })
    .await;
    assert_eq!((keys, r.status), (vec!["a.jpg".to_string()], 200));

    // CopyObject.
    let (keys, r) = held_request(&sink, 1, Ok(()), {
        let c = c.clone();
        async move {
            c.send(
                "PUT",
                "/held/b.jpg",
                "",
                &[("x-amz-copy-source", "/held/a.jpg")],
                vec![],
                Payload::Signed,
            )
            .await
        }
    })
    .await;
    assert_eq!((keys, r.status), (vec!["b.jpg".to_string()], 200));

    // CompleteMultipartUpload (creating the upload and its part emit nothing).
    let r = c
        .send("POST", "/held/big", "uploads", &[], vec![], Payload::Signed)
        .await;
    let id = r.xml("UploadId").unwrap();
    let r = c
        .send(
            "PUT",
            "/held/big",
            &format!("partNumber=1&uploadId={id}"),
            &[],
            b"part".to_vec(),
            Payload::Signed,
        )
        .await;
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        r.header("etag").unwrap()
    );
    let (keys, r) = held_request(&sink, 1, Ok(()), {
        let c = c.clone();
        async move {
            c.send(
                "POST",
                "/held/big",
                &format!("uploadId={id}"),
                &[],
                doc.into_bytes(),
                Payload::Signed,
            )
            .await
        }
    })
    .await;
    assert_eq!(
        (keys, r.status),
        (vec!["big".to_string()], 200),
        "{}",
        r.text()
    );

    // DeleteObject, and DeleteObjects with one event per deleted key.
    let (keys, r) = held_request(&sink, 1, Ok(()), {
        let c = c.clone();
        async move { c.delete("/held/big").await }
    })
    .await;
    assert_eq!((keys, r.status), (vec!["big".to_string()], 204));
    let (keys, r) = held_request(&sink, 2, Ok(()), {
        let c = c.clone();
        async move {
            c.send(
                "POST",
                "/held",
                "delete",
                &[],
                b"<Delete><Object><Key>a.jpg</Key></Object><Object><Key>b.jpg</Key></Object></Delete>"
                    .to_vec(),
                Payload::Signed,
            )
            .await
        }
    })
    .await;
    assert_eq!(keys, ["a.jpg", "b.jpg"]);
    assert_eq!(r.status, 200);

    // A failed acknowledgement: 503 with the reason; the object itself stands.
    let (_, r) = held_request(&sink, 1, Err("the event store is closed".into()), {
        let c = c.clone();
        async move { c.put("/held/c.jpg", b"data").await }
    })
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.code(), "ServiceUnavailable");
    assert!(
        r.text().contains("the event store is closed"),
        "{}",
        r.text()
    );
    assert!(store.head_object("held", "c.jpg").unwrap().is_some());

    // An acknowledgement dropped unanswered fails the request as well.
    let task = tokio::spawn({
        let c = c.clone();
        async move { c.put("/held/d.jpg", b"data").await }
    });
    for _ in 0..200 {
        if !sink.pending.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(sink.pending.lock().unwrap().drain(..).collect::<Vec<_>>());
    let r = task.await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("stopped before it acknowledged"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn events_arrive_in_order_after_durable_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    // Small parts keep the multipart upload quick.
    let config = Config {
        min_part_size: 10,
        ..Config::default()
    };
    let store = Arc::new(ObjectStore::open(&root, config).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = Arc::new(CheckingSink {
        root: root.clone(),
        forward: tx,
        problems: Mutex::new(Vec::new()),
    });
    let creds = Arc::new(StaticCredentials::new().with(common::ACCESS_KEY, common::SECRET));
    let app = wisp_objects::router(store.clone(), creds, sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let c = Client::new(addr);
    c.create_bucket("events").await;
    // One store per root.
    assert!(ObjectStore::open(&root, Config::default()).is_err());

    let r = c.put("/events/photos/cat%20one.jpg", b"meow").await;
    assert_eq!(r.status, 200);
    let put_request = r.header("x-amz-request-id").unwrap().to_string();

    let r = c
        .send(
            "POST",
            "/events/big",
            "uploads",
            &[],
            vec![],
            Payload::Signed,
        )
        .await;
    let id = r.xml("UploadId").unwrap();
    let mut etags = Vec::new();
    for (n, part) in [b"first part!!".to_vec(), b"second".to_vec()]
        .into_iter()
        .enumerate()
    {
        let q = format!("partNumber={}&uploadId={id}", n + 1);
        let r = c
            .send("PUT", "/events/big", &q, &[], part, Payload::Signed)
            .await;
        etags.push(r.header("etag").unwrap().to_string());
    }
    let doc = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part><Part><PartNumber>2</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        etags[0], etags[1]
    );
    let r = c
        .send(
            "POST",
            "/events/big",
            &format!("uploadId={id}"),
            &[],
            doc.into_bytes(),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = c
        .send(
            "PUT",
            "/events/copy.jpg",
            "",
            &[("x-amz-copy-source", "/events/photos/cat%20one.jpg")],
            vec![],
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(c.delete("/events/photos/cat%20one.jpg").await.status, 204);
    // Deleting what does not exist changes nothing and emits nothing.
    assert_eq!(c.delete("/events/never-existed").await.status, 204);
    let r = c
        .send(
            "POST",
            "/events",
            "delete",
            &[],
            b"<Delete><Object><Key>copy.jpg</Key></Object><Object><Key>big</Key></Object></Delete>"
                .to_vec(),
            Payload::Signed,
        )
        .await;
    assert_eq!(r.status, 200);
    // Failed writes emit nothing.
    let r = c
        .send(
            "PUT",
            "/events/bad",
            "",
            &[],
            b"x".to_vec(),
            Payload::Tampered,
        )
        .await;
    assert_eq!(r.status, 400);

    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    let summary: Vec<(EventKind, &str)> = events.iter().map(|e| (e.kind, e.key.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (
                EventKind::ObjectCreated(CreatedKind::Put),
                "photos/cat one.jpg"
            ),
            (
                EventKind::ObjectCreated(CreatedKind::CompleteMultipartUpload),
                "big"
            ),
            (EventKind::ObjectCreated(CreatedKind::Copy), "copy.jpg"),
            (
                EventKind::ObjectRemoved(RemovedKind::Delete),
                "photos/cat one.jpg"
            ),
            (EventKind::ObjectRemoved(RemovedKind::Delete), "copy.jpg"),
            (EventKind::ObjectRemoved(RemovedKind::Delete), "big"),
        ]
    );
    assert!(
        sink.problems.lock().unwrap().is_empty(),
        "{:?}",
        sink.problems.lock().unwrap()
    );
    for w in events.windows(2) {
        assert!(w[0].sequencer < w[1].sequencer, "sequencers grow");
    }
    let put = &events[0];
    assert_eq!(put.size, 4);
    assert_eq!(put.etag, hex::encode(md5::Md5::digest(b"meow")));
    assert_eq!(put.request_id, put_request);
    assert_eq!(put.principal, common::ACCESS_KEY);
    assert_eq!(put.source_ip, Some("127.0.0.1".parse().unwrap()));
    assert!(events[1].etag.ends_with("-2"));
    assert_eq!(events[1].size, 18);
    assert_eq!(events[2].etag, put.etag);
    let record = s3_notification_record(put, "us-east-1");
    assert_eq!(record["s3"]["object"]["key"], "photos/cat+one.jpg");
    assert_eq!(record["eventName"], "ObjectCreated:Put");
    assert_eq!(record["s3"]["bucket"]["name"], "events");

    // Sequencers keep growing after a restart (a second store on the same root).
    let last = events.last().unwrap().sequencer.clone();
    assert_eq!(last.len(), 16);
    drop(c);
    server.abort();
    let _ = server.await;
    drop(store);
    let reopened = Arc::new(reopen(&root).await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ObjectEvent>();
    let creds = Arc::new(StaticCredentials::new().with(common::ACCESS_KEY, common::SECRET));
    let app = wisp_objects::router(reopened, creds, Arc::new(tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let c = Client::new(addr);
    assert_eq!(c.put("/events/after-restart", b"x").await.status, 200);
    let e = rx.recv().await.unwrap();
    assert!(e.sequencer > last, "{} > {last}", e.sequencer);
    assert_eq!(e.source_ip, None, "served without connect info");
}

#[tokio::test]
async fn objects_survive_a_restart_and_leftovers_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    {
        let store = Arc::new(ObjectStore::open(&root, Config::default()).unwrap());
        let creds = Arc::new(StaticCredentials::new().with(common::ACCESS_KEY, common::SECRET));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel::<ObjectEvent>();
        let app = wisp_objects::router(store.clone(), creds, Arc::new(tx));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let c = Client::new(addr);
        c.create_bucket("keep").await;
        assert_eq!(c.put("/keep/a", &data).await.status, 200);
        assert_eq!(c.put("/keep/b", b"replaced soon").await.status, 200);
        assert_eq!(c.put("/keep/b", b"final").await.status, 200);
        assert_eq!(c.put("/keep/gone", b"deleted").await.status, 200);
        assert_eq!(c.delete("/keep/gone").await.status, 204);
        task.abort();
        let _ = task.await;
    }
    // What a crash could leave: a temp file and a blob no row refers to.
    std::fs::write(root.join("tmp").join("partial-upload"), b"half").unwrap();
    let orphan = root
        .join("blobs")
        .join("ab")
        .join("ab000000000000000000000000000000");
    std::fs::write(&orphan, b"orphan").unwrap();
    let blob_count = |root: &std::path::Path| {
        std::fs::read_dir(root.join("blobs"))
            .unwrap()
            .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum::<usize>()
    };
    assert_eq!(
        blob_count(&root),
        3,
        "a, b and the orphan; replaced and deleted data are gone"
    );

    let store = reopen(&root).await;
    assert!(!orphan.exists());
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert_eq!(blob_count(&root), 2);
    let (info, mut reader) = store.open_object("keep", "a").unwrap().unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(info.etag, hex::encode(md5::Md5::digest(&data)));
    let (_, mut reader) = store.open_object("keep", "b").unwrap().unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut back).unwrap();
    assert_eq!(back, b"final");
    assert!(store.open_object("keep", "gone").unwrap().is_none());
    assert_eq!(store.list_buckets().unwrap().len(), 1);
}

#[tokio::test]
async fn a_reader_keeps_data_readable_while_the_object_is_replaced() {
    let server = common::start(Config::default()).await;
    let c = server.client();
    c.create_bucket("pins").await;
    let data = vec![b'1'; 2 * 1024 * 1024];
    assert_eq!(c.put("/pins/k", &data).await.status, 200);
    let (_, mut reader) = server.store.open_object("pins", "k").unwrap().unwrap();
    let mut first = vec![0u8; 10];
    std::io::Read::read_exact(&mut reader, &mut first).unwrap();
    assert_eq!(c.put("/pins/k", b"new").await.status, 200);
    assert_eq!(c.delete("/pins/k").await.status, 204);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    assert_eq!(rest.len() + 10, data.len());
    drop(reader);
    let blobs: usize = std::fs::read_dir(server.store.root().join("blobs"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(blobs, 0, "the old data is removed once its reader is done");
}
