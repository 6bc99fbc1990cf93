//! The messages on the streams: requests on work streams, replies on reply
//! streams, as fields of stream entries.

use std::borrow::Cow;

use redis::streams::{StreamId, StreamReadReply};
use redis::Value;
use routine_core::key::Key;
use routine_core::unit::UnitEnd;
use routine_core::{RoutineId, RunId};

/// A request for a worker to run one routine call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) request: String,
    pub(crate) key: Key,
    pub(crate) task: String,
    pub(crate) version: String,
    pub(crate) arguments: Vec<Part>,
    pub(crate) reply_to: String,
    /// The run the call belongs to, and the call that awaits it: the
    /// worker records them with the result.
    pub(crate) run: Option<RunId>,
    pub(crate) parent: Option<Key>,
    /// The caller keeps a deadline from the routine's start: the worker
    /// tells it when the routine starts.
    pub(crate) notify_start: bool,
    /// The caller's trace context (W3C `traceparent`), when it exports
    /// traces: the worker's spans of the call join its trace.
    pub(crate) traceparent: Option<String>,
}

/// A request's encoded arguments, in order: in the message, or, for a
/// large argument, in the shared store under its SHA-256 (see `blobs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Inline(Vec<u8>),
    Stored(Key),
}

impl Part {
    /// The inline bytes of `parts`, and their layout for the message:
    /// empty when the arguments are all inline (one part), else one item
    /// per part, `<length>` inline or `@<sha-256>` stored.
    pub(crate) fn layout(parts: &[Part]) -> (Cow<'_, [u8]>, String) {
        if let [Part::Inline(bytes)] = parts {
            return (Cow::Borrowed(bytes), String::new());
        }
        let mut inline = Vec::new();
        let items: Vec<String> = parts
            .iter()
            .map(|part| match part {
                Part::Inline(bytes) => {
                    inline.extend_from_slice(bytes);
                    bytes.len().to_string()
                }
                Part::Stored(address) => format!("@{}", address.to_hex()),
            })
            .collect();
        (Cow::Owned(inline), items.join(","))
    }

    /// The one part a message's inline bytes and layout describe.
    fn parse_one(inline: Vec<u8>, layout: &str) -> Option<Part> {
        let mut parts = Part::parse(inline, layout)?;
        (parts.len() == 1).then(|| parts.remove(0))
    }

    /// The parts a message's inline bytes and layout describe.
    fn parse(inline: Vec<u8>, layout: &str) -> Option<Vec<Part>> {
        if layout.is_empty() {
            return Some(vec![Part::Inline(inline)]);
        }
        let mut rest = &inline[..];
        let parts = layout
            .split(',')
            .map(|item| match item.strip_prefix('@') {
                Some(address) => Key::from_hex(address).ok().map(Part::Stored),
                None => {
                    let len: usize = item.parse().ok()?;
                    let (part, after) = (rest.get(..len)?, rest.get(len..)?);
                    rest = after;
                    Some(Part::Inline(part.to_vec()))
                }
            })
            .collect::<Option<Vec<Part>>>()?;
        rest.is_empty().then_some(parts)
    }
}

/// How a worker answered a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) request: String,
    /// Done, with the stored entry when the result is small enough to
    /// travel with the reply; or the failure.
    pub(crate) outcome: Result<Option<Vec<u8>>, Failure>,
    pub(crate) worker: String,
}

/// Why a worker could not answer with a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What went wrong, for people.
    pub(crate) message: String,
    /// The `Err` the routine returned, encoded, when its type crosses the
    /// wire.
    pub(crate) error: Option<Vec<u8>>,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            error: None,
        }
    }
}

fn field_bytes(entry: &StreamId, name: &str) -> Option<Vec<u8>> {
    match entry.map.get(name)? {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(text) => Some(text.clone().into_bytes()),
        _ => None,
    }
}

fn field(entry: &StreamId, name: &str) -> Option<String> {
    field_bytes(entry, name).and_then(|b| String::from_utf8(b).ok())
}

impl Request {
    pub(crate) fn parse(entry: &StreamId) -> Option<Request> {
        Some(Request {
            request: field(entry, "request")?,
            key: Key::from_hex(&field(entry, "key")?).ok()?,
            task: field(entry, "task")?,
            version: field(entry, "version")?,
            arguments: Part::parse(
                field_bytes(entry, "args")?,
                &field(entry, "args_layout").unwrap_or_default(),
            )?,
            reply_to: field(entry, "reply")?,
            // Absent from requests of builds before lineage.
            run: field(entry, "run").and_then(|r| r.parse().ok()),
            parent: field(entry, "parent").and_then(|k| Key::from_hex(&k).ok()),
            notify_start: field(entry, "notify_start").is_some_and(|n| n == "1"),
            traceparent: field(entry, "traceparent").filter(|t| !t.is_empty()),
        })
    }

    pub(crate) fn routine_id(&self) -> RoutineId {
        RoutineId {
            project: None,
            name: self.task.clone(),
            version: self.version.clone(),
        }
    }
}

/// What a caller reads on its reply stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A worker started the routine of `request` (sent only when asked).
    Started { request: String, worker: String },
    /// A worker answered.
    Answered(Reply),
    /// A unit of a gang this caller coordinates ended.
    Unit(UnitNotice),
}

/// How one unit of a gang ended, for the gang's coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitNotice {
    /// The gang's attempt.
    pub(crate) gang: String,
    pub(crate) rank: usize,
    pub(crate) worker: String,
    /// How it ended.
    pub(crate) ended: UnitEnd,
    /// Why it failed the call: a panic, rank 0 without its output, an
    /// input it could not decode.
    pub(crate) error: Option<String>,
    /// Rank 0's output.
    pub(crate) output: Option<Part>,
    /// How long it ran.
    pub(crate) took: std::time::Duration,
}

impl Notice {
    pub(crate) fn parse(entry: &StreamId) -> Option<Notice> {
        match field(entry, "status")?.as_str() {
            "started" => Some(Notice::Started {
                request: field(entry, "request")?,
                worker: field(entry, "worker").unwrap_or_default(),
            }),
            "unit" => UnitNotice::parse(entry).map(Notice::Unit),
            _ => Reply::parse(entry).map(Notice::Answered),
        }
    }
}

impl UnitNotice {
    fn parse(entry: &StreamId) -> Option<UnitNotice> {
        let ended = match field(entry, "ended")?.as_str() {
            "returned" => UnitEnd::Returned,
            "panicked" => UnitEnd::Panicked,
            _ => UnitEnd::Dropped,
        };
        let output = match field(entry, "has_output")?.as_str() {
            "1" => Some(Part::parse_one(
                field_bytes(entry, "output")?,
                &field(entry, "output_layout").unwrap_or_default(),
            )?),
            _ => None,
        };
        Some(UnitNotice {
            gang: field(entry, "request")?,
            rank: field(entry, "rank")?.parse().ok()?,
            worker: field(entry, "worker").unwrap_or_default(),
            ended,
            error: field(entry, "error").filter(|e| !e.is_empty()),
            output,
            took: std::time::Duration::from_micros(field(entry, "took_us")?.parse().ok()?),
        })
    }
}

/// What a worker reads on its unit stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UnitEntry {
    /// Run a unit of a gang.
    Start(UnitOrder),
    /// A message for a unit of a gang it runs.
    Message {
        gang: String,
        from: usize,
        to: usize,
        key: String,
        body: Part,
    },
    /// A unit of a gang returned: it sends no more.
    Returned { gang: String, rank: usize },
    /// The gang's attempt ended: drop its units.
    End { gang: String },
}

/// One unit to run, as its start says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitOrder {
    pub(crate) gang: String,
    pub(crate) rank: usize,
    pub(crate) count: usize,
    /// The worker of each rank.
    pub(crate) workers: Vec<String>,
    pub(crate) task: String,
    pub(crate) version: String,
    /// The coordinator's reply stream.
    pub(crate) reply_to: String,
    pub(crate) run: RunId,
    pub(crate) call: Key,
    /// Rank 0's input.
    pub(crate) input: Option<Part>,
}

impl UnitEntry {
    pub(crate) fn parse(entry: &StreamId) -> Option<UnitEntry> {
        let gang = field(entry, "gang")?;
        let number = |name: &str| field(entry, name)?.parse::<usize>().ok();
        Some(match field(entry, "kind")?.as_str() {
            "start" => {
                let rank = number("rank")?;
                let workers: Vec<String> = field(entry, "workers")?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                let count = number("count")?;
                if workers.len() != count || rank >= count {
                    return None;
                }
                UnitEntry::Start(UnitOrder {
                    rank,
                    count,
                    workers,
                    task: field(entry, "task")?,
                    version: field(entry, "version")?,
                    reply_to: field(entry, "reply")?,
                    run: field(entry, "run")
                        .and_then(|r| r.parse().ok())
                        .unwrap_or_default(),
                    call: Key::from_hex(&field(entry, "call")?).ok()?,
                    input: match rank {
                        0 => Some(Part::parse_one(
                            field_bytes(entry, "input")?,
                            &field(entry, "input_layout").unwrap_or_default(),
                        )?),
                        _ => None,
                    },
                    gang,
                })
            }
            "message" => UnitEntry::Message {
                from: number("from")?,
                to: number("to")?,
                key: field(entry, "key")?,
                body: Part::parse_one(
                    field_bytes(entry, "body")?,
                    &field(entry, "body_layout").unwrap_or_default(),
                )?,
                gang,
            },
            "returned" => UnitEntry::Returned {
                rank: number("rank")?,
                gang,
            },
            "end" => UnitEntry::End { gang },
            _ => return None,
        })
    }
}

impl Reply {
    fn parse(entry: &StreamId) -> Option<Reply> {
        let outcome = match field(entry, "status")?.as_str() {
            "done" => Ok(field_bytes(entry, "entry").filter(|bytes| !bytes.is_empty())),
            _ => Err(Failure {
                message: field(entry, "error").unwrap_or_default(),
                error: field_bytes(entry, "error_value").filter(|bytes| !bytes.is_empty()),
            }),
        };
        Some(Reply {
            request: field(entry, "request")?,
            outcome,
            worker: field(entry, "worker").unwrap_or_default(),
        })
    }
}

/// Entries of a stream read reply, flattened with their stream names.
pub(super) fn entries(reply: Option<StreamReadReply>) -> Vec<(String, StreamId)> {
    reply
        .map(|r| {
            r.keys
                .into_iter()
                .flat_map(|k| {
                    let stream = k.key;
                    k.ids.into_iter().map(move |id| (stream.clone(), id))
                })
                .collect()
        })
        .unwrap_or_default()
}
