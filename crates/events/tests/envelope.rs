//! Envelopes against the documented shapes, field by field.
use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};
use wisp_events::envelope::{
    BatchResponse, CLOUDEVENTS_JSON, CloudEvent, Condition, DestinationRecord, batch_outcome,
    event_traceparent, http_content_type, parse_batch_response, scheduled_event, sqs_event,
};
use wisp_events::{EventStore, ManualClock, MessageAttribute, StoreConfig};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[tokio::test]
async fn sqs_event_matches_lambdas_shape() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2018-12-17T21:37:29.183Z"));
    let store = EventStore::open(
        dir.path().join("e.db"),
        Arc::new(clock.clone()),
        StoreConfig::default(),
    )
    .unwrap();
    store
        .create_queue("my-queue", Default::default())
        .await
        .unwrap();
    let attrs = BTreeMap::from([(
        "myAttribute".to_string(),
        MessageAttribute::string("myValue"),
    )]);
    let id = store.send("my-queue", "test", attrs).await.unwrap();
    clock.set(t("2018-12-17T21:37:29.185Z"));
    let msgs = store.receive("my-queue", 10, None).await.unwrap();
    let v = serde_json::to_value(sqs_event(&msgs, "us-east-2")).unwrap();
    // The example in Lambda's "Using Lambda with Amazon SQS" (SenderId is our account id).
    let want = json!({
        "Records": [{
            "messageId": id,
            "receiptHandle": msgs[0].receipt_handle,
            "body": "test",
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1545082649183",
                "SenderId": "000000000000",
                "ApproximateFirstReceiveTimestamp": "1545082649185"
            },
            "messageAttributes": {
                "myAttribute": {
                    "stringValue": "myValue",
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": "String"
                }
            },
            "md5OfBody": "098f6bcd4621d373cade4e832627b4f6",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-2:000000000000:my-queue",
            "awsRegion": "us-east-2"
        }]
    });
    assert_eq!(v, want);
}

#[test]
fn batch_item_failures_parse_like_lambda() {
    let ids = ["a", "b", "c"];
    let p = |s: &str| parse_batch_response(s.as_bytes(), &ids);
    assert_eq!(
        p(r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#),
        BatchResponse::Failed(vec!["b".into()])
    );
    assert_eq!(
        p(r#"{"batchItemFailures":[]}"#),
        BatchResponse::AllSucceeded
    );
    assert_eq!(p(""), BatchResponse::AllSucceeded);
    assert_eq!(p("null"), BatchResponse::AllSucceeded);
    assert_eq!(p(r#"{"other":1}"#), BatchResponse::AllSucceeded);
    assert!(matches!(p("not json"), BatchResponse::AllFailed(_)));
    assert!(matches!(
        p(r#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#),
        BatchResponse::AllFailed(_)
    ));
    assert!(matches!(
        p(r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#),
        BatchResponse::AllFailed(_)
    ));
    assert!(matches!(
        p(r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#),
        BatchResponse::AllFailed(_)
    ));
    assert!(matches!(
        p(r#"{"batchItemFailures":"b"}"#),
        BatchResponse::AllFailed(_)
    ));
}

#[test]
fn destination_record_matches_lambdas_shape() {
    let r = DestinationRecord::new(
        "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
        "us-east-2",
        "my-function",
        Condition::RetriesExhausted,
        3,
        br#"{"ORDER_IDS":["9e07af03ce31c"]}"#,
        Some(br#"{"errorMessage":"RequestId: e4b46cbf Process exited before completing request"}"#),
        t("2019-11-14T18:16:05.568Z"),
    );
    // The example in Lambda's "Asynchronous invocation" destinations section.
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({
            "version": "1.0",
            "timestamp": "2019-11-14T18:16:05.568Z",
            "requestContext": {
                "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
                "functionArn": "arn:aws:lambda:us-east-2:000000000000:function:my-function:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": {"ORDER_IDS": ["9e07af03ce31c"]},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "RequestId: e4b46cbf Process exited before completing request"}
        })
    );
    let ok = DestinationRecord::new(
        "id",
        "r",
        "f",
        Condition::Success,
        1,
        b"plain text",
        None,
        t("2019-11-14T18:16:05Z"),
    );
    let v = serde_json::to_value(&ok).unwrap();
    assert_eq!(v["requestPayload"], "plain text");
    assert_eq!(v["timestamp"], "2019-11-14T18:16:05.000Z");
    assert_eq!(
        v["responseContext"],
        json!({"statusCode": 200, "executedVersion": "$LATEST"})
    );
    assert!(v.get("responsePayload").is_none());
}

#[test]
fn scheduled_event_matches_eventbridges_shape() {
    let v = scheduled_event(
        "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "my-schedule",
        t("2026-11-27T09:00:00Z"),
        "us-east-1",
    );
    assert_eq!(
        v,
        json!({
            "version": "0",
            "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "000000000000",
            "time": "2026-11-27T09:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:000000000000:rule/my-schedule"],
            "detail": {}
        })
    );
}

#[test]
fn cloudevents_json_format() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string();
    let ev = CloudEvent::new(
        "A234-1234-1234",
        "https://github.com/cloudevents/spec/pull",
        "com.github.pull_request.opened",
    )
    .with_subject("123")
    .with_time(t("2018-04-05T17:31:00Z"))
    .with_traceparent(Some(tp.clone()))
    .with_data("application/json", br#"{"x":1}"#);
    let v: Value = serde_json::from_slice(&ev.to_json()).unwrap();
    assert_eq!(
        v,
        json!({
            "specversion": "1.0",
            "id": "A234-1234-1234",
            "source": "https://github.com/cloudevents/spec/pull",
            "type": "com.github.pull_request.opened",
            "subject": "123",
            "time": "2018-04-05T17:31:00.000Z",
            "datacontenttype": "application/json",
            "data": {"x": 1},
            "traceparent": tp
        })
    );
    assert_eq!(CloudEvent::from_json(&ev.to_json()).unwrap(), ev);

    let bin =
        CloudEvent::new("1", "/s", "t").with_data("application/octet-stream", &[0, 159, 146, 150]);
    let v = serde_json::to_value(&bin).unwrap();
    assert_eq!(v["data_base64"], "AJ+Slg==");
    assert!(v.get("data").is_none());
    let text = CloudEvent::new("1", "/s", "t").with_data("text/plain; charset=utf-8", b"hi");
    assert_eq!(serde_json::to_value(&text).unwrap()["data"], "hi");
    let mut minimal = serde_json::to_value(CloudEvent::new("1", "/s", "t")).unwrap();
    // Every event has a time: now, unless the occurrence's time is set.
    let time = minimal["time"].take();
    let time: Timestamp = time.as_str().unwrap().parse().unwrap();
    assert!(
        time.duration_until(Timestamp::now()).as_secs().abs() < 60,
        "{time}"
    );
    assert_eq!(
        minimal,
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "time": null})
    );

    assert!(
        CloudEvent::from_json(br#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#)
            .is_err()
    );
    assert!(
        CloudEvent::from_json(br#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#)
            .is_err()
    );
    assert!(CloudEvent::from_json(br#"{"specversion":"1.0","id":"1","source":"/s"}"#).is_err());
}

#[test]
fn cloudevents_carry_the_trace_context_and_go_in_structured_mode() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let ev = CloudEvent::new("1", "/s", "t")
        .with_traceparent(Some(tp.into()))
        .with_tracestate(Some("congo=t61rcWkgMzE".into()))
        .with_json(json!({"x": 1}));
    let v: Value = serde_json::from_slice(&ev.to_json()).unwrap();
    assert_eq!(v["traceparent"], tp);
    assert_eq!(v["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(CloudEvent::from_json(&ev.to_json()).unwrap(), ev);
    let none = CloudEvent::new("1", "/s", "t").with_tracestate(Some(String::new()));
    assert!(
        serde_json::to_value(none)
            .unwrap()
            .get("tracestate")
            .is_none()
    );

    // The HTTP binding's structured mode: the SDKs look for exactly this content type.
    assert_eq!(
        CLOUDEVENTS_JSON,
        "application/cloudevents+json; charset=utf-8"
    );
    assert_eq!(http_content_type(&ev.to_json()), CLOUDEVENTS_JSON);
    let spaced = format!("  \n{}", String::from_utf8(ev.to_json()).unwrap());
    assert_eq!(http_content_type(spaced.as_bytes()), CLOUDEVENTS_JSON);
    // Any other payload, even one that looks a little like an event, stays JSON.
    for other in [
        &br#"{"x": 1}"#[..],
        br#"{"specversion": "0.3", "id": "1", "source": "/s", "type": "t"}"#,
        br#"{"specversion": "1.0", "id": "1", "source": "/s"}"#,
        br#"{"Records": [{"body": "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}"}]}"#,
        br#"["specversion"]"#,
        b"",
        b"not json",
    ] {
        assert_eq!(
            http_content_type(other),
            "application/json",
            "{}",
            String::from_utf8_lossy(other)
        );
    }

    // An event no traced call enqueued is its own trace: the id's UUID, its last 16 digits.
    let id: wisp_events::EventId = "0190b6c4-5e2a-7c3d-9f00-a1b2c3d4e5f6".parse().unwrap();
    assert_eq!(
        event_traceparent(id),
        "00-0190b6c45e2a7c3d9f00a1b2c3d4e5f6-9f00a1b2c3d4e5f6-01"
    );
}

#[test]
fn a_batch_is_processed_only_when_the_function_succeeded() {
    let ids = ["a", "b"];
    let o = |ok: Result<(), String>, status: Option<u16>, body: &str| {
        batch_outcome(ok, status, body.as_bytes(), &ids)
    };
    // A function error, or a 5xx answer, deletes nothing (Lambda returns the batch).
    assert!(matches!(
        o(Err("Runtime.ExitError".into()), None, ""),
        BatchResponse::AllFailed(_)
    ));
    assert_eq!(
        o(Ok(()), Some(500), r#"{"error":"database unavailable"}"#),
        BatchResponse::AllFailed("the function answered 500".into())
    );
    assert!(matches!(
        o(Ok(()), Some(503), ""),
        BatchResponse::AllFailed(_)
    ));
    // A successful plain-text answer processed the batch; it is not "invalid JSON".
    assert_eq!(o(Ok(()), Some(200), "ok"), BatchResponse::AllSucceeded);
    assert_eq!(o(Ok(()), None, "\"done\""), BatchResponse::AllSucceeded);
    // batchItemFailures keeps its meaning, over HTTP and from a native handler.
    assert_eq!(
        o(
            Ok(()),
            Some(200),
            r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#
        ),
        BatchResponse::Failed(vec!["b".into()])
    );
    assert!(matches!(
        o(
            Ok(()),
            None,
            r#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#
        ),
        BatchResponse::AllFailed(_)
    ));
}
