//! The trace context a dispatched call carries: the W3C `traceparent` of
//! the caller's span, never part of the key. With the `telemetry` feature
//! the caller's span is read through tracing-opentelemetry, and the span a
//! worker runs the call in takes it as its parent, so that the worker's
//! spans join the caller's trace; without it nothing is carried and a
//! carried context is ignored.

/// The `traceparent` of `span`, if it is in a trace.
#[cfg(feature = "telemetry")]
pub(crate) fn traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

#[cfg(not(feature = "telemetry"))]
pub(crate) fn traceparent(_: &tracing::Span) -> Option<String> {
    None
}

/// Makes the caller's span, named by `traceparent`, the parent of `span`
/// (which must not have been entered yet).
#[cfg(feature = "telemetry")]
pub(crate) fn join(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    } else {
        tracing::warn!(traceparent, "a request carries a trace context that does not parse; its spans start a trace of their own");
    }
}

#[cfg(not(feature = "telemetry"))]
pub(crate) fn join(_: &tracing::Span, _: &str) {}

#[cfg(all(test, feature = "telemetry"))]
mod tests {
    use super::*;

    #[test]
    fn a_span_outside_any_trace_carries_nothing() {
        assert_eq!(traceparent(&tracing::Span::none()), None);
    }
}
