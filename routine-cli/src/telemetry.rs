//! Spans exported over OTLP/HTTP (feature `telemetry`): a
//! tracing-opentelemetry layer over a batch exporter to the configured
//! collector, and run records told how to read a span's trace id.

use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::failure::Failure;

/// Exports what is left when dropped (at the end of `main`).
pub(crate) struct Exporting(SdkTracerProvider);

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("warning: the last spans could not be exported: {e}");
        }
    }
}

/// The layer that exports spans to `endpoint` (a collector's base URL) as
/// service `service`, and what flushes it.
pub(crate) fn layer<S>(
    endpoint: &str,
    service: &str,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        Exporting,
    ),
    Failure,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()
        .map_err(|e| Failure::usage(format!("telemetry.otlp_endpoint `{endpoint}`: {e}")))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("routine");
    routine_core::trace::read_trace_ids_with(trace_id);
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Exporting(provider),
    ))
}

/// The trace id of `span`, if it is in a trace.
fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
