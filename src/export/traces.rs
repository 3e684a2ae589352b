//! Span encoding: [`Span`]s as an OTLP `ExportTraceServiceRequest` (`/v1/traces`).
//!
//! In: spans from the batch and the resource. Out: the protobuf request, all spans under one
//! resource and loupe's scope. Pure; the encoder compresses and sizes it like the other signals.

use crate::export::otlp::{kv, scope};
use crate::export::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::export::proto::resource::v1::Resource;
use crate::export::proto::trace::v1::{
    ResourceSpans, ScopeSpans, Span as ProtoSpan, Status, span::SpanKind as ProtoKind,
    status::StatusCode,
};
use crate::trace::{Span, SpanKind};

/// W3C trace flags: sampled.
const FLAG_SAMPLED: u32 = 0x01;

pub fn traces_request(resource: &Resource, spans: &[Span]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans: spans.iter().map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn span(s: &Span) -> ProtoSpan {
    ProtoSpan {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: if s.sampled { FLAG_SAMPLED } else { 0 },
        name: s.name.clone(),
        kind: match s.kind {
            SpanKind::Server => ProtoKind::Server,
            SpanKind::Internal => ProtoKind::Internal,
        } as i32,
        start_time_unix_nano: s.start_unix_nano,
        end_time_unix_nano: s.end_unix_nano,
        attributes: s.attributes.iter().map(|(k, v)| kv(k, v.clone())).collect(),
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(match &s.error {
            Some(message) => Status {
                message: message.clone(),
                code: StatusCode::Error as i32,
            },
            None => Status {
                message: String::new(),
                code: StatusCode::Unset as i32,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AttrValue;
    use prost::Message;

    fn sample() -> Span {
        Span {
            trace_id: [7; 16],
            span_id: [3; 8],
            parent_span_id: Some([9; 8]),
            name: "checkout".into(),
            kind: SpanKind::Server,
            start_unix_nano: 10,
            end_unix_nano: 25,
            error: Some("error: PaymentFailed".into()),
            sampled: true,
            attributes: vec![("enduser.id".into(), AttrValue::Str("u-7".into()))],
        }
    }

    #[test]
    fn round_trip_through_protobuf() {
        let mut child = sample();
        child.kind = SpanKind::Internal;
        child.error = None;
        child.sampled = false;
        child.parent_span_id = None;
        let req = traces_request(&Resource::default(), &[sample(), child]);
        let bytes = req.encode_to_vec();
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
        let spans = &back.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        let s = &spans[0];
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![3; 8]);
        assert_eq!(s.parent_span_id, vec![9; 8]);
        assert_eq!(s.kind, ProtoKind::Server as i32);
        assert_eq!(s.flags, FLAG_SAMPLED);
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (10, 25));
        let status = s.status.as_ref().expect("status");
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "error: PaymentFailed");
        assert_eq!(s.attributes[0].key, "enduser.id");
        let c = &spans[1];
        assert_eq!(c.kind, ProtoKind::Internal as i32);
        assert!(c.parent_span_id.is_empty());
        assert_eq!(c.flags, 0);
        assert_eq!(
            c.status.as_ref().map(|s| s.code),
            Some(StatusCode::Unset as i32)
        );
    }
}
