//! OTLP export of invocation spans (`wisp up --otlp-endpoint URL`).
//!
//! Every metered invocation is a span (its W3C trace and span ids, its parent from the
//! caller's `traceparent`): the same records `wisp trace` reads. They are exported after
//! they are stored, in batches, over OTLP/HTTP (protobuf) with the OpenTelemetry SDK's
//! exporter, so any collector (OpenTelemetry Collector, Jaeger, Tempo...) can show them. A
//! slow or absent collector never slows invocations: batches that do not fit the queue
//! are dropped and counted in a warning.

use anyhow::{Context, Result};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};
use wisp_core::{Outcome, UsageRecord};
use wisp_invoker::UsageListener;

/// Batches of records waiting for the exporter.
const QUEUE: usize = 256;

/// The collector's traces URL: `http://host:4318` gets OTLP/HTTP's `/v1/traces`; a URL
/// with a path is used as it is.
pub fn traces_url(endpoint: &str) -> Result<String> {
    let url = reqwest::Url::parse(endpoint).with_context(|| {
        format!("--otlp-endpoint `{endpoint}` is not a URL: write e.g. http://127.0.0.1:4318")
    })?;
    match url.scheme() {
        "http" => {}
        "https" => anyhow::bail!(
            "--otlp-endpoint `{endpoint}`: https is not supported by this build; send to a local OpenTelemetry Collector (e.g. http://127.0.0.1:4318), which can forward over TLS"
        ),
        _ => anyhow::bail!(
            "--otlp-endpoint `{endpoint}` must be an http:// URL (OTLP/HTTP, protobuf), e.g. http://127.0.0.1:4318"
        ),
    }
    Ok(if url.path() == "/" || url.path().is_empty() {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_string()
    })
}

/// Starts the exporter task; the returned listener hands it each stored batch of usage
/// records. Must be called inside the tokio runtime.
pub fn start(endpoint: &str, node: &str) -> Result<UsageListener> {
    use opentelemetry_otlp::WithExportConfig;
    let url = traces_url(endpoint)?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .with_context(|| format!("setting up the OTLP exporter for {url}"))?;
    exporter.set_resource(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_service_name("wisp")
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("host.name", node.to_string()),
            ])
            .build(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<UsageRecord>>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let dropped_in_task = dropped.clone();
    tokio::spawn(async move {
        let mut failing = false;
        while let Some(batch) = rx.recv().await {
            let spans: Vec<SpanData> = batch.iter().filter_map(span_data).collect();
            if spans.is_empty() {
                continue;
            }
            let n = spans.len();
            match exporter.export(spans).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(%url, "OTLP export works again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(%url, spans = n, "OTLP export failed (logged once until it works again): {e}");
                }
                Err(_) => {}
            }
            let lost = dropped_in_task.swap(0, Ordering::Relaxed);
            if lost > 0 {
                tracing::warn!(%url, batches = lost, "OTLP export fell behind: span batches dropped");
            }
        }
    });
    Ok(Box::new(move |records: &[UsageRecord]| {
        if tx.try_send(records.to_vec()).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }))
}

/// One invocation as an OpenTelemetry span: a server span named after the function, with
/// Lambda's semantic-convention attributes (`faas.*`) and Wisp's metering.
pub fn span_data(r: &UsageRecord) -> Option<SpanData> {
    let trace_id = TraceId::from_hex(&r.span.trace_id).ok()?;
    let span_id = SpanId::from_hex(&r.span.span_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let parent = r
        .span
        .parent_span_id
        .as_deref()
        .and_then(|p| SpanId::from_hex(p).ok())
        .unwrap_or(SpanId::INVALID);
    let start = UNIX_EPOCH + Duration::from_millis(r.start_ms.max(0) as u64);
    let end = start + Duration::from_micros(r.duration_us);
    let trigger = match r.trigger {
        wisp_core::Trigger::Http => "http",
        wisp_core::Trigger::Api => "other",
        wisp_core::Trigger::Async => "pubsub",
        wisp_core::Trigger::Queue => "pubsub",
    };
    let mut attributes = vec![
        KeyValue::new("faas.name", r.function.clone()),
        KeyValue::new("faas.version", r.version.to_string()),
        KeyValue::new("faas.invocation_id", r.request_id.clone()),
        KeyValue::new("faas.trigger", trigger),
        KeyValue::new("faas.coldstart", r.cold_start),
        KeyValue::new("faas.max_memory", (r.memory_mb * 1024 * 1024) as i64),
        KeyValue::new("wisp.trigger", r.trigger.as_str()),
        KeyValue::new("wisp.billed_ms", r.billed_ms as i64),
        KeyValue::new("wisp.init_ms", r.init_us as f64 / 1000.0),
        KeyValue::new("wisp.outcome", r.outcome.as_str()),
    ];
    if let Some(cpu) = r.cpu_us {
        attributes.push(KeyValue::new("wisp.cpu_ms", cpu as f64 / 1000.0));
    }
    Some(SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: parent != SpanId::INVALID,
        span_kind: SpanKind::Server,
        name: r.function.clone().into(),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match r.outcome {
            Outcome::Success => Status::Unset,
            o => Status::error(o.as_str()),
        },
        instrumentation_scope: InstrumentationScope::builder("wisp")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_the_traces_path_when_it_has_none() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://otel.example/custom/traces").unwrap(),
            "http://otel.example/custom/traces"
        );
        assert!(traces_url("https://otel.example").is_err());
        assert!(traces_url("127.0.0.1:4318").is_err());
        assert!(traces_url("grpc://x:4317").is_err());
    }

    #[test]
    fn a_record_becomes_a_span_with_its_ids_and_times() {
        let r = UsageRecord {
            request_id: "req".into(),
            function: "resize".into(),
            version: 3,
            trigger: wisp_core::Trigger::Async,
            start_ms: 1_700_000_000_000,
            duration_us: 12_500,
            billed_ms: 13,
            memory_mb: 128,
            init_us: 0,
            cold_start: false,
            outcome: Outcome::Timeout,
            concurrency: 1,
            cpu_us: Some(4_000),
            span: wisp_core::SpanContext {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
                parent_span_id: Some("b7ad6b7169203331".into()),
            },
        };
        let s = span_data(&r).unwrap();
        assert_eq!(
            s.span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            s.parent_span_id,
            SpanId::from_hex("b7ad6b7169203331").unwrap()
        );
        assert_eq!(
            s.end_time.duration_since(s.start_time).unwrap(),
            Duration::from_micros(12_500)
        );
        assert_eq!(s.status, Status::error("timeout"));
        assert!(s.attributes.contains(&KeyValue::new("faas.name", "resize")));
        assert!(s.attributes.contains(&KeyValue::new("wisp.cpu_ms", 4.0)));
        let no_ids = UsageRecord {
            span: wisp_core::SpanContext::default(),
            ..r
        };
        assert!(span_data(&no_ids).is_none());
    }
}
