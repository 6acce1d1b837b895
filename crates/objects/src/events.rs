//! Object events: what the store emits after an object is durably created or removed,
//! the AWS S3 event notification record a function receives, and filters that pick
//! the events a function is subscribed to.

use std::net::IpAddr;
use std::str::FromStr;

use serde_json::json;
use time::OffsetDateTime;

use crate::names::notification_encode;

/// How an object was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreatedKind {
    Put,
    Post,
    Copy,
    CompleteMultipartUpload,
}

/// How an object was removed. Without versioning only `Delete` happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemovedKind {
    Delete,
    DeleteMarkerCreated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    ObjectCreated(CreatedKind),
    ObjectRemoved(RemovedKind),
}

impl EventKind {
    /// The `eventName` of a notification record: `ObjectCreated:Put`, ...
    pub fn event_name(self) -> &'static str {
        match self {
            Self::ObjectCreated(CreatedKind::Put) => "ObjectCreated:Put",
            Self::ObjectCreated(CreatedKind::Post) => "ObjectCreated:Post",
            Self::ObjectCreated(CreatedKind::Copy) => "ObjectCreated:Copy",
            Self::ObjectCreated(CreatedKind::CompleteMultipartUpload) => {
                "ObjectCreated:CompleteMultipartUpload"
            }
            Self::ObjectRemoved(RemovedKind::Delete) => "ObjectRemoved:Delete",
            Self::ObjectRemoved(RemovedKind::DeleteMarkerCreated) => {
                "ObjectRemoved:DeleteMarkerCreated"
            }
        }
    }

    pub fn is_created(self) -> bool {
        matches!(self, Self::ObjectCreated(_))
    }
}

/// One object created or removed. Emitted only after the change is durable (data and
/// metadata synced), in commit order; `sequencer` grows with every event of a store,
/// across restarts too, and compares as a string (fixed-width uppercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub kind: EventKind,
    pub bucket: String,
    pub key: String,
    /// Size in bytes; 0 for removals.
    pub size: u64,
    /// The ETag without quotes; empty for removals.
    pub etag: String,
    pub sequencer: String,
    pub time: OffsetDateTime,
    /// The `x-amz-request-id` of the request that made the change.
    pub request_id: String,
    pub source_ip: Option<IpAddr>,
    /// The access key id that signed the request.
    pub principal: String,
}

/// Where events go. The node turns them into function invocations.
///
/// The request that made a change is answered only once the [`Ack`] that `send` returned
/// for each of its events has resolved: a sink that acknowledges only after it has stored
/// what the event triggers durably makes "200 OK" mean "the trigger will run" (at least
/// once). A failed acknowledgement fails the request with 503 `ServiceUnavailable`; the
/// change itself stands, and the client's retry emits the event again.
pub trait EventSink: Send + Sync {
    /// Called once the change is durable, with the store's commit lock held: must not
    /// block (hand slow work to a task and answer through [`Ack::pending`]).
    fn send(&self, event: ObjectEvent) -> Ack;
}

/// A sink's answer for one event, which the response to the request that made the
/// change waits for.
#[must_use = "the request's response must wait for the acknowledgement"]
#[derive(Debug)]
pub struct Ack(AckState);

#[derive(Debug)]
enum AckState {
    Ready(Result<(), String>),
    Pending(tokio::sync::oneshot::Receiver<Result<(), String>>),
}

/// Gives a pending [`Ack`] its answer. Dropping it unanswered fails the `Ack`.
#[derive(Debug)]
pub struct Acker(tokio::sync::oneshot::Sender<Result<(), String>>);

impl Ack {
    /// The event is handled (or there was nothing to do).
    pub fn done() -> Ack {
        Ack(AckState::Ready(Ok(())))
    }

    /// The event could not be handled; `reason` ends up in the node's log and the 503.
    pub fn failed(reason: impl Into<String>) -> Ack {
        Ack(AckState::Ready(Err(reason.into())))
    }

    /// An answer that comes later, through the returned [`Acker`].
    pub fn pending() -> (Acker, Ack) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Acker(tx), Ack(AckState::Pending(rx)))
    }

    /// Waits for the answer.
    pub async fn wait(self) -> Result<(), String> {
        match self.0 {
            AckState::Ready(r) => r,
            AckState::Pending(rx) => rx.await.unwrap_or_else(|_| {
                Err("the event's handler stopped before it acknowledged the event".into())
            }),
        }
    }
}

impl Acker {
    pub fn ack(self, result: Result<(), String>) {
        // The request may have gone (the client hung up); the event was handled anyway.
        let _ = self.0.send(result);
    }
}

/// Forwards events to a channel and acknowledges at once: for observers that need no
/// durability (tests, metrics). A closed receiver means nobody listens any more.
impl EventSink for tokio::sync::mpsc::UnboundedSender<ObjectEvent> {
    fn send(&self, event: ObjectEvent) -> Ack {
        let _ = tokio::sync::mpsc::UnboundedSender::send(self, event);
        Ack::done()
    }
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardEvents;

impl EventSink for DiscardEvents {
    fn send(&self, _event: ObjectEvent) -> Ack {
        Ack::done()
    }
}

/// The acknowledgements of one request's events.
#[derive(Debug, Default)]
#[must_use = "the request's response must wait for the acknowledgements"]
pub(crate) struct Acks(Vec<Ack>);

impl Acks {
    pub(crate) fn push(&mut self, ack: Ack) {
        self.0.push(ack);
    }

    /// Waits for all of them; the first failure, if any.
    pub(crate) async fn wait(self) -> Result<(), String> {
        let results = futures::future::join_all(self.0.into_iter().map(Ack::wait)).await;
        results.into_iter().collect()
    }
}

fn event_time(t: OffsetDateTime) -> String {
    crate::timefmt::iso8601_millis(t)
}

/// The `Records[]` entry AWS S3 sends for `event`, in `region`. The key is URL-encoded
/// as S3 does (form encoding, a space as `+`). `configurationId` is `"wisp"`; a caller
/// with named subscriptions overwrites `record["s3"]["configurationId"]`.
pub fn s3_notification_record(event: &ObjectEvent, region: &str) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("key".into(), json!(notification_encode(&event.key)));
    if event.kind.is_created() {
        object.insert("size".into(), json!(event.size));
        object.insert("eTag".into(), json!(event.etag));
    }
    object.insert("sequencer".into(), json!(event.sequencer));
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": event_time(event.time),
        "eventName": event.kind.event_name(),
        "userIdentity": { "principalId": event.principal },
        "requestParameters": {
            "sourceIPAddress": event.source_ip.map(|ip| ip.to_string()).unwrap_or_default()
        },
        "responseElements": {
            "x-amz-request-id": event.request_id,
            "x-amz-id-2": event.request_id
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "wisp",
            "bucket": {
                "name": event.bucket,
                "ownerIdentity": { "principalId": event.principal },
                "arn": format!("arn:aws:s3:::{}", event.bucket)
            },
            "object": serde_json::Value::Object(object)
        }
    })
}

/// An event type as S3 notification configurations name it: `s3:ObjectCreated:*`,
/// `s3:ObjectCreated:Put`, `s3:ObjectRemoved:*`, ... (the `s3:` is optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KindPattern {
    AnyCreated,
    AnyRemoved,
    Exact(EventKind),
}

impl KindPattern {
    pub fn matches(self, kind: EventKind) -> bool {
        match self {
            Self::AnyCreated => matches!(kind, EventKind::ObjectCreated(_)),
            Self::AnyRemoved => matches!(kind, EventKind::ObjectRemoved(_)),
            Self::Exact(k) => k == kind,
        }
    }
}

impl FromStr for KindPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let name = s.strip_prefix("s3:").unwrap_or(s);
        Ok(match name {
            "ObjectCreated:*" => Self::AnyCreated,
            "ObjectRemoved:*" => Self::AnyRemoved,
            "ObjectCreated:Put" => Self::Exact(EventKind::ObjectCreated(CreatedKind::Put)),
            "ObjectCreated:Post" => Self::Exact(EventKind::ObjectCreated(CreatedKind::Post)),
            "ObjectCreated:Copy" => Self::Exact(EventKind::ObjectCreated(CreatedKind::Copy)),
            "ObjectCreated:CompleteMultipartUpload" => Self::Exact(EventKind::ObjectCreated(
                CreatedKind::CompleteMultipartUpload,
            )),
            "ObjectRemoved:Delete" => Self::Exact(EventKind::ObjectRemoved(RemovedKind::Delete)),
            "ObjectRemoved:DeleteMarkerCreated" => {
                Self::Exact(EventKind::ObjectRemoved(RemovedKind::DeleteMarkerCreated))
            }
            _ => return Err(format!("unknown S3 event type {s:?}")),
        })
    }
}

/// Which events a subscriber wants. Empty `kinds` means every kind; `bucket: None`
/// means every bucket; prefix and suffix apply to the raw (not encoded) key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub bucket: Option<String>,
    pub prefix: String,
    pub suffix: String,
    pub kinds: Vec<KindPattern>,
}

impl EventFilter {
    pub fn matches(&self, event: &ObjectEvent) -> bool {
        self.bucket.as_ref().is_none_or(|b| *b == event.bucket)
            && event.key.starts_with(&self.prefix)
            && event.key.ends_with(&self.suffix)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k.matches(event.kind)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, key: &str) -> ObjectEvent {
        ObjectEvent {
            kind,
            bucket: "photos".into(),
            key: key.into(),
            size: 1024,
            etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
            sequencer: "0000000000000001".into(),
            time: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap(),
            request_id: "C3D13FE58DE4C810".into(),
            source_ip: Some("127.0.0.1".parse().unwrap()),
            principal: "AKIDEXAMPLE".into(),
        }
    }

    #[test]
    fn notification_record_has_the_aws_shape() {
        let r = s3_notification_record(
            &event(EventKind::ObjectCreated(CreatedKind::Put), "red flower.jpg"),
            "us-east-1",
        );
        let expected = json!({
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2023-11-14T22:13:20.123Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": { "principalId": "AKIDEXAMPLE" },
            "requestParameters": { "sourceIPAddress": "127.0.0.1" },
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "C3D13FE58DE4C810"
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "wisp",
                "bucket": {
                    "name": "photos",
                    "ownerIdentity": { "principalId": "AKIDEXAMPLE" },
                    "arn": "arn:aws:s3:::photos"
                },
                "object": {
                    "key": "red+flower.jpg",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "sequencer": "0000000000000001"
                }
            }
        });
        assert_eq!(r, expected);
    }

    #[test]
    fn removal_records_carry_no_size_or_etag() {
        let r = s3_notification_record(
            &event(EventKind::ObjectRemoved(RemovedKind::Delete), "a/b=c.txt"),
            "eu-west-1",
        );
        assert_eq!(r["eventName"], "ObjectRemoved:Delete");
        assert_eq!(r["awsRegion"], "eu-west-1");
        assert_eq!(
            r["s3"]["object"],
            json!({ "key": "a/b%3Dc.txt", "sequencer": "0000000000000001" })
        );
    }

    #[test]
    fn filters_match_bucket_prefix_suffix_and_kind() {
        let put = event(EventKind::ObjectCreated(CreatedKind::Put), "images/cat.jpg");
        let del = event(
            EventKind::ObjectRemoved(RemovedKind::Delete),
            "images/cat.jpg",
        );
        let all = EventFilter::default();
        assert!(all.matches(&put) && all.matches(&del));
        let f = EventFilter {
            bucket: Some("photos".into()),
            prefix: "images/".into(),
            suffix: ".jpg".into(),
            kinds: vec!["s3:ObjectCreated:*".parse().unwrap()],
        };
        assert!(f.matches(&put));
        assert!(!f.matches(&del));
        assert!(!f.matches(&event(
            EventKind::ObjectCreated(CreatedKind::Put),
            "images/cat.png"
        )));
        assert!(!f.matches(&event(
            EventKind::ObjectCreated(CreatedKind::Put),
            "docs/cat.jpg"
        )));
        let mut other = put.clone();
        other.bucket = "other".into();
        assert!(!f.matches(&other));
        let exact = EventFilter {
            kinds: vec!["ObjectCreated:CompleteMultipartUpload".parse().unwrap()],
            ..EventFilter::default()
        };
        assert!(!exact.matches(&put));
        assert!(exact.matches(&event(
            EventKind::ObjectCreated(CreatedKind::CompleteMultipartUpload),
            "x"
        )));
        assert!("s3:ObjectCreated:Bogus".parse::<KindPattern>().is_err());
    }
}
