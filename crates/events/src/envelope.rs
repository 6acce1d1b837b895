//! Event envelopes: CloudEvents 1.0 (JSON format) for WebAssembly functions and
//! destinations, and the Lambda shapes native runtimes expect (SQS events, async
//! destination records, EventBridge scheduled events, SQS partial batch responses).
use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ACCOUNT_ID;
use crate::invocations::{Claimed, EventId};
use crate::queues::Message;

/// `arn:aws:lambda:REGION:000000000000:function:NAME:$LATEST`
pub fn function_arn(region: &str, function: &str) -> String {
    format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function}:$LATEST")
}

/// `arn:aws:sqs:REGION:000000000000:NAME`
pub fn queue_arn(region: &str, queue: &str) -> String {
    format!("arn:aws:sqs:{region}:{ACCOUNT_ID}:{queue}")
}

/// `arn:aws:events:REGION:000000000000:rule/NAME`
pub fn rule_arn(region: &str, rule: &str) -> String {
    format!("arn:aws:events:{region}:{ACCOUNT_ID}:rule/{rule}")
}

/// A payload as JSON when it is JSON, else as a JSON string (lossy UTF-8).
pub fn payload_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// RFC 3339 in UTC with milliseconds, as AWS writes timestamps: `2019-11-14T18:16:05.568Z`.
pub fn rfc3339_millis(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The `Content-Type` of a CloudEvent sent in structured mode (the HTTP protocol binding):
/// the whole event, in the JSON format, is the body. (SDKs compare it as a string: the npm
/// `cloudevents` package knows `charset=utf-8`, not `charset=UTF-8`.)
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json; charset=utf-8";

/// The `Content-Type` a payload is delivered to a WebAssembly function with: a CloudEvent
/// in the JSON format (what the node makes for `s3:` and `schedule:` triggers) is an
/// event in structured mode, [`CLOUDEVENTS_JSON`]; anything else `application/json`.
pub fn http_content_type(payload: &[u8]) -> &'static str {
    let object = payload.trim_ascii_start().first() == Some(&b'{');
    // Only an object that names the spec version is parsed (and checked) as an event.
    let named = payload.windows(13).any(|w| w == b"\"specversion\"");
    if object && named && CloudEvent::from_json(payload).is_ok() {
        CLOUDEVENTS_JSON
    } else {
        "application/json"
    }
}

/// The W3C `traceparent` of the event `id` itself, for an event that no traced call
/// enqueued (a schedule tick, an object change): the trace id is the event's UUID, the
/// span id its last 16 hex digits. The event's invocations are spans under it (the
/// invoker derives the same for an event stored without a `traceparent`).
pub fn event_traceparent(id: EventId) -> String {
    let hex = id.0.simple().to_string();
    format!("00-{hex}-{}-01", &hex[16..])
}

/// A CloudEvents 1.0 event in the JSON event format, with the distributed-tracing
/// extension (`traceparent`, `tracestate`): the trace context the event was produced in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl CloudEvent {
    /// An event with the required attributes and `time` now (set it with
    /// [`CloudEvent::with_time`] to when the occurrence happened).
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            specversion: "1.0".into(),
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            subject: None,
            time: Some(rfc3339_millis(Timestamp::now())),
            datacontenttype: None,
            data: None,
            data_base64: None,
            traceparent: None,
            tracestate: None,
        }
    }

    pub fn with_time(mut self, t: Timestamp) -> Self {
        self.time = Some(rfc3339_millis(t));
        self
    }

    pub fn with_subject(mut self, s: impl Into<String>) -> Self {
        self.subject = Some(s.into());
        self
    }

    pub fn with_traceparent(mut self, tp: Option<String>) -> Self {
        self.traceparent = tp;
        self
    }

    pub fn with_tracestate(mut self, ts: Option<String>) -> Self {
        self.tracestate = ts.filter(|s| !s.is_empty());
        self
    }

    /// Sets the data the way the JSON format says: JSON content stays JSON (`data`), text
    /// becomes a JSON string, anything else goes base64-encoded into `data_base64`.
    pub fn with_data(mut self, content_type: &str, bytes: &[u8]) -> Self {
        let ct = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let is_json = ct == "application/json" || ct.ends_with("+json") || ct == "text/json";
        self.datacontenttype = Some(content_type.to_string());
        (self.data, self.data_base64) = match (is_json, std::str::from_utf8(bytes)) {
            (true, Ok(_)) if serde_json::from_slice::<Value>(bytes).is_ok() => {
                (serde_json::from_slice(bytes).ok(), None)
            }
            (_, Ok(text)) if ct.starts_with("text/") || is_json => {
                (Some(Value::String(text.into())), None)
            }
            _ => (None, Some(BASE64.encode(bytes))),
        };
        self
    }

    pub fn with_json(mut self, data: Value) -> Self {
        self.datacontenttype = Some("application/json".into());
        self.data = Some(data);
        self.data_base64 = None;
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks the required attributes (specversion 1.0, non-empty id, source, type).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let ev: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not a CloudEvent: {e}"))?;
        if ev.specversion != "1.0" {
            return Err(format!("specversion {:?} is not 1.0", ev.specversion));
        }
        if ev.id.is_empty() || ev.source.is_empty() || ev.ty.is_empty() {
            return Err("id, source and type must not be empty".into());
        }
        if ev.data.is_some() && ev.data_base64.is_some() {
            return Err("data and data_base64 are mutually exclusive".into());
        }
        Ok(ev)
    }

    /// An async invocation delivered to a WebAssembly function.
    pub fn for_invocation(c: &Claimed, content_type: &str) -> Self {
        Self::new(
            c.id.to_string(),
            format!("/wisp/functions/{}", c.function),
            "wisp.invocation.async",
        )
        .with_time(c.enqueued_at)
        .with_traceparent(c.traceparent.clone())
        .with_data(content_type, &c.payload)
    }

    /// A queue message delivered to a WebAssembly function (one event per message).
    pub fn for_message(m: &Message) -> Self {
        Self::new(
            m.message_id.clone(),
            format!("/wisp/queues/{}", m.queue),
            "wisp.queue.message",
        )
        .with_time(m.attributes.sent_timestamp)
        .with_data("text/plain", m.body.as_bytes())
    }
}

/// Lambda's SQS event: `{"Records": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SqsRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub attributes: SqsAttributes,
    pub message_attributes: BTreeMap<String, SqsMessageAttribute>,
    pub md5_of_body: String,
    pub event_source: String,
    #[serde(rename = "eventSourceARN")]
    pub event_source_arn: String,
    pub aws_region: String,
}

/// SQS system attributes: all strings, timestamps in epoch milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SqsAttributes {
    pub approximate_receive_count: String,
    pub sent_timestamp: String,
    pub sender_id: String,
    pub approximate_first_receive_timestamp: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsMessageAttribute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
    pub string_list_values: Vec<String>,
    pub binary_list_values: Vec<String>,
    pub data_type: String,
}

/// The SQS event for a batch of received messages.
pub fn sqs_event(messages: &[Message], region: &str) -> SqsEvent {
    let records = messages
        .iter()
        .map(|m| SqsRecord {
            message_id: m.message_id.clone(),
            receipt_handle: m.receipt_handle.clone(),
            body: m.body.clone(),
            attributes: SqsAttributes {
                approximate_receive_count: m.attributes.approximate_receive_count.to_string(),
                sent_timestamp: m.attributes.sent_timestamp.as_millisecond().to_string(),
                sender_id: ACCOUNT_ID.into(),
                approximate_first_receive_timestamp: m
                    .attributes
                    .approximate_first_receive_timestamp
                    .as_millisecond()
                    .to_string(),
            },
            message_attributes: m
                .message_attributes
                .iter()
                .map(|(k, v)| {
                    let attr = SqsMessageAttribute {
                        string_value: v.string_value.clone(),
                        binary_value: v.binary_value.as_ref().map(|b| BASE64.encode(b)),
                        string_list_values: vec![],
                        binary_list_values: vec![],
                        data_type: v.data_type.clone(),
                    };
                    (k.clone(), attr)
                })
                .collect(),
            md5_of_body: m.md5_of_body.clone(),
            event_source: "aws:sqs".into(),
            event_source_arn: queue_arn(region, &m.queue),
            aws_region: region.into(),
        })
        .collect();
    SqsEvent { records }
}

/// How a function answered an SQS batch, with `ReportBatchItemFailures` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchResponse {
    /// Empty or null response, or an empty `batchItemFailures`: delete every message.
    AllSucceeded,
    /// Keep these message ids (they come back after their visibility timeout); delete the rest.
    Failed(Vec<String>),
    /// Lambda treats the whole batch as failed when the response is unusable: not JSON,
    /// an empty or null `itemIdentifier`, or an id not in the batch.
    AllFailed(String),
}

/// How a queue batch's invocation went, as the subscriber settles it. Only a successful
/// invocation can delete messages (Lambda returns the whole batch to the queue on any
/// function error): `succeeded` is whether the function ran to completion, `status` its
/// HTTP status where it answered over HTTP (a WebAssembly function; 5xx is a failure, as
/// for async events). A successful answer that is JSON with `batchItemFailures` keeps
/// those messages; any other successful answer (a plain-text `200 ok`) processed them all.
pub fn batch_outcome(
    succeeded: Result<(), String>,
    status: Option<u16>,
    response: &[u8],
    batch_ids: &[&str],
) -> BatchResponse {
    if let Err(why) = succeeded {
        return BatchResponse::AllFailed(why);
    }
    if let Some(s) = status
        && s >= 500
    {
        return BatchResponse::AllFailed(format!("the function answered {s}"));
    }
    let text = std::str::from_utf8(response).unwrap_or_default().trim();
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) if o.contains_key("batchItemFailures") => {
            parse_batch_response(response, batch_ids)
        }
        _ => BatchResponse::AllSucceeded,
    }
}

/// Parses `{"batchItemFailures":[{"itemIdentifier":"id"}]}` against the batch's ids.
pub fn parse_batch_response(response: &[u8], batch_ids: &[&str]) -> BatchResponse {
    let text = std::str::from_utf8(response).unwrap_or_default().trim();
    if text.is_empty() || text == "null" {
        return BatchResponse::AllSucceeded;
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return BatchResponse::AllFailed("the response is not JSON".into());
    };
    let failures = match v.get("batchItemFailures") {
        None | Some(Value::Null) => return BatchResponse::AllSucceeded,
        Some(Value::Array(a)) => a,
        Some(_) => return BatchResponse::AllFailed("batchItemFailures is not a list".into()),
    };
    if failures.is_empty() {
        return BatchResponse::AllSucceeded;
    }
    let known: HashSet<&str> = batch_ids.iter().copied().collect();
    let mut ids = Vec::new();
    for f in failures {
        match f.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if known.contains(id) => ids.push(id.to_string()),
            Some("") | None => {
                return BatchResponse::AllFailed("an itemIdentifier is empty or missing".into());
            }
            Some(id) => {
                return BatchResponse::AllFailed(format!(
                    "itemIdentifier {id:?} is not in the batch"
                ));
            }
        }
    }
    ids.dedup();
    BatchResponse::Failed(ids)
}

/// The condition of a Lambda destination record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

/// Lambda's asynchronous invocation record, sent to on-success / on-failure destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRecord {
    pub version: String,
    pub timestamp: String,
    pub request_context: RequestContext,
    pub request_payload: Value,
    pub response_context: ResponseContext,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_payload: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    pub request_id: String,
    pub function_arn: String,
    pub condition: Condition,
    pub approximate_invoke_count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    pub status_code: u16,
    pub executed_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_error: Option<String>,
}

impl DestinationRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        request_id: &str,
        region: &str,
        function: &str,
        condition: Condition,
        invoke_count: u32,
        request: &[u8],
        response: Option<&[u8]>,
        at: Timestamp,
    ) -> Self {
        Self {
            version: "1.0".into(),
            timestamp: rfc3339_millis(at),
            request_context: RequestContext {
                request_id: request_id.into(),
                function_arn: function_arn(region, function),
                condition,
                approximate_invoke_count: invoke_count,
            },
            request_payload: payload_value(request),
            response_context: ResponseContext {
                status_code: 200,
                executed_version: "$LATEST".into(),
                function_error: (condition != Condition::Success).then(|| "Unhandled".into()),
            },
            response_payload: response.map(payload_value),
        }
    }
}

/// EventBridge's "Scheduled Event" for a rule named `rule` firing at `time`.
pub fn scheduled_event(id: &str, rule: &str, time: Timestamp, region: &str) -> Value {
    json!({
        "version": "0",
        "id": id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": region,
        "resources": [rule_arn(region, rule)],
        "detail": {},
    })
}
