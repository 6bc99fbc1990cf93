//! The trace a run belongs to. routine-core knows no tracing backend: a
//! program that exports its spans (routine's `telemetry` feature, over
//! OpenTelemetry) installs how to read a span's trace id, and run records
//! keep it, so that a run's page can name its trace.
//!
//! ```
//! fn no_trace(_: &tracing::Span) -> Option<String> {
//!     None
//! }
//! routine_core::trace::read_trace_ids_with(no_trace);
//! assert_eq!(routine_core::trace::trace_id(&tracing::Span::current()), None);
//! ```

use std::sync::OnceLock;

/// Reads the trace id (32 hex digits) of a span, if it is in a trace.
pub type TraceIdOf = fn(&tracing::Span) -> Option<String>;

static READER: OnceLock<TraceIdOf> = OnceLock::new();

/// Installs how to read a span's trace id; the first one installed stays.
/// Returns whether this one was installed.
pub fn read_trace_ids_with(reader: TraceIdOf) -> bool {
    READER.set(reader).is_ok()
}

/// The trace id of `span`, when a reader is installed and the span is in
/// a trace.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    READER.get().and_then(|read| read(span))
}
