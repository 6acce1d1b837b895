//! W3C Trace Context (`traceparent`): parsed when a request brings one, created when not.

/// A `traceparent`: version 00, a 16-byte trace id, the 8-byte id of the parent span and
/// flags, all lowercase hex: `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: u8,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TraceParent {
    /// Parses a header value; `None` for anything malformed (the caller then starts a new
    /// trace, as the specification says).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if !is_hex(version, 2)
            || version == "ff"
            || !is_hex(trace_id, 32)
            || !is_hex(parent_id, 16)
            || !is_hex(flags, 2)
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if trace_id.bytes().all(|b| b == b'0') || parent_id.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceParent {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// A new trace (sampled) from 16 + 8 random bytes.
    pub fn new_root(trace: [u8; 16], span: [u8; 8]) -> TraceParent {
        let mut trace = trace;
        let mut span = span;
        // All-zero ids are invalid.
        if trace.iter().all(|b| *b == 0) {
            trace[15] = 1;
        }
        if span.iter().all(|b| *b == 0) {
            span[7] = 1;
        }
        TraceParent {
            trace_id: hex(&trace),
            parent_id: hex(&span),
            flags: 1,
        }
    }

    /// The same trace with `span` (8 random bytes) as the parent: what this hop passes on.
    pub fn child(&self, span: [u8; 8]) -> TraceParent {
        let mut span = span;
        if span.iter().all(|b| *b == 0) {
            span[7] = 1;
        }
        TraceParent {
            trace_id: self.trace_id.clone(),
            parent_id: hex(&span),
            flags: self.flags,
        }
    }

    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.parent_id, self.flags)
    }
}

impl TraceParent {
    /// Parses AWS X-Ray's `X-Amzn-Trace-Id` / `_X_AMZN_TRACE_ID` form,
    /// `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`, which
    /// Lambda handlers forward: the root's two parts are the W3C trace id. `None` without
    /// a valid root and parent.
    pub fn from_xray(value: &str) -> Option<TraceParent> {
        let (mut root, mut parent, mut sampled) = (None, None, true);
        for field in value.split(';') {
            let (k, v) = field.trim().split_once('=')?;
            match k.trim() {
                "Root" => root = Some(v.trim()),
                "Parent" => parent = Some(v.trim()),
                "Sampled" => sampled = v.trim() != "0",
                _ => {}
            }
        }
        let mut parts = root?.split('-');
        let (version, time, rest) = (parts.next()?, parts.next()?, parts.next()?);
        if version != "1" || parts.next().is_some() || !is_hex(time, 8) || !is_hex(rest, 24) {
            return None;
        }
        TraceParent::parse(&format!(
            "00-{time}{rest}-{}-{:02x}",
            parent?, sampled as u8
        ))
    }

    /// This context in X-Ray's form (what `Lambda-Runtime-Trace-Id` carries).
    pub fn xray_value(&self) -> String {
        format!(
            "Root=1-{}-{};Parent={};Sampled={}",
            &self.trace_id[..8],
            &self.trace_id[8..],
            self.parent_id,
            self.flags & 1
        )
    }
}

/// Where one invocation sits in its trace: its own span id, and the span that caused it
/// (the caller's, from an incoming `traceparent`) when there was one.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SpanContext {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
}

impl SpanContext {
    /// The context of an invocation caused by `incoming` (or the root of a new trace),
    /// with `span` (8 random bytes) as its span id and `trace` (16 random bytes) as the
    /// trace id of a new trace.
    pub fn start(incoming: Option<&TraceParent>, trace: [u8; 16], span: [u8; 8]) -> SpanContext {
        let (tp, parent) = match incoming {
            Some(p) => (p.child(span), Some(p.parent_id.clone())),
            None => (TraceParent::new_root(trace, span), None),
        };
        SpanContext {
            trace_id: tp.trace_id,
            span_id: tp.parent_id,
            parent_span_id: parent,
        }
    }

    /// The `traceparent` the function receives: this invocation's span as the parent of
    /// whatever it calls.
    pub fn traceparent(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id.clone(),
            parent_id: self.span_id.clone(),
            flags: 1,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let t = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id, "00f067aa0ba902b7");
        assert_eq!(t.flags, 1);
        assert_eq!(t.header_value(), EXAMPLE);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn children_keep_the_trace() {
        let root = TraceParent::new_root([7; 16], [0; 8]);
        assert!(TraceParent::parse(&root.header_value()).is_some());
        let child = root.child([9; 8]);
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.parent_id, root.parent_id);
    }

    #[test]
    fn xray_headers_map_to_w3c_and_back() {
        let t = TraceParent::from_xray(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        assert_eq!(t.trace_id, "5759e988bd862e3fe1be46a994272793");
        assert_eq!(t.parent_id, "53995c3f42cd8ad8");
        assert_eq!(t.flags, 1);
        assert_eq!(
            t.xray_value(),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        );
        let unsampled = TraceParent::from_xray(
            "Parent=53995c3f42cd8ad8; Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0",
        )
        .unwrap();
        assert_eq!(unsampled.flags, 0);
        for bad in [
            "",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a99427;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=xyz",
            "garbage",
        ] {
            assert!(TraceParent::from_xray(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_span_continues_its_callers_trace() {
        let caller = TraceParent::parse(EXAMPLE).unwrap();
        let s = SpanContext::start(Some(&caller), [1; 16], [2; 8]);
        assert_eq!(s.trace_id, caller.trace_id);
        assert_eq!(s.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(s.span_id, "0202020202020202");
        assert_eq!(
            s.traceparent().header_value(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0202020202020202-01"
        );
        let root = SpanContext::start(None, [1; 16], [2; 8]);
        assert_eq!(root.trace_id, "01".repeat(16));
        assert_eq!(root.parent_span_id, None);
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,80}") {
            let _ = TraceParent::parse(&s);
            let _ = TraceParent::from_xray(&s);
        }
    }
}
