//! The runtime of [routine](https://docs.rs/routine-engine): keys, entries,
//! stores, the registry and the engine. It knows no broker, no object store
//! and no command line: those crates build on this one.
//!
//! Users depend on the `routine-engine` facade (library name `routine`),
//! which re-exports this crate, the distributed and command-line crates
//! behind features, and the macros. The macros' output calls only public
//! items and the `#[doc(hidden)]` [`__private`] module.
//!
//! | module | idea | uses |
//! |---|---|---|
//! | [`id`] | routine IDs, fingerprints, run IDs, call outcomes | — |
//! | [`key`] | canonical SHA-256 of a call: name, version, arguments | — |
//! | [`codec`] | encoding of values (the only module naming bincode) | — |
//! | [`redact`] | credentials kept out of printed URLs | — |
//! | [`entry`] | the stored entry format: header, payload, checksums | id, key, codec |
//! | [`store`] | the `Store` trait and its local backends (files, a database, memory) | key, entry |
//! | [`arguments`] | hashing, encoding and decoding a task's arguments | key, codec, registry |
//! | [`code`] | `#[tracked]` items and the code fingerprint of each task | id |
//! | [`execution`] | a task's timeout, retries and concurrency limit | — |
//! | [`invoke`] | a task started from encoded arguments | id, key, slot |
//! | [`mailbox`] | how the units of a gang pass messages: inbox and mailbox | — |
//! | [`registry`] | every task and trigger of the program; a multi-unit task's units | id, code, arguments, execution, invoke, mailbox, slot |
//! | [`trigger`] | what a trigger is handed when a routine completes | id, key, arguments, registry |
//! | [`lineage`] | runs, run records, the call tree of a run | id, key, entry, store, registry |
//! | [`slot`] | a worker's slots, lent to the requests it runs | — |
//! | [`dispatch`] | the seam to a cluster: policy and the `Dispatch` trait | id, key, registry |
//! | [`engine`] | the runtime: scope, lookup, single-flight, storing | all of the above |
//! | [`explain`] | why a call hits or runs, from the store alone (`why`) | code, entry, engine, store |
//! | [`unit`](mod@unit) | multi-unit tasks: the unit handle, gangs in process and on workers | engine, dispatch, mailbox, registry, lineage |
#![warn(missing_docs)]

pub mod arguments;
pub mod blocking;
pub mod code;
pub mod codec;
pub mod dispatch;
pub mod engine;
pub mod entry;
mod error;
pub mod execution;
pub mod explain;
pub mod human;
pub mod id;
pub mod invoke;
pub mod key;
pub mod lineage;
pub mod mailbox;
pub mod redact;
pub mod registry;
pub mod slot;
pub mod store;
pub mod trace;
pub mod trigger;
pub mod unit;

pub use crate::engine::{spawn, CallReport, Engine, EngineBuilder, Stats};
pub use crate::error::Error;
pub use crate::id::{CallOutcome, Fingerprint, RoutineId, RunId};
pub use crate::key::Key;
pub use crate::registry::TaskSpec;
pub use crate::trigger::Completion;
pub use crate::unit::Unit;

/// What the macros expand to calls; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::arguments::typed::{
        argument, skipped_argument, ArgumentCodec, KeyBuilder, TaskArgument,
    };
    pub use crate::arguments::{ArgumentsDecoder, ArgumentsError};
    pub use crate::code::{ItemKind, OnCodeChange, TrackedItem};
    pub use crate::engine::call::{call, run_blocking};
    pub use crate::engine::outcome::{outcome_codec, Outcome, OutcomeCodec, Plain};
    pub use crate::execution::Execution;
    pub use crate::invoke::autoref::{
        Described, ErrorWire, Started, ViaDebug, ViaDisplay, ViaLocal, ViaMessage, ViaName,
        ViaSend, ViaSerde,
    };
    pub use crate::invoke::{Finished, Invocation};
    pub use crate::key::{Key, KeyError};
    pub use crate::registry::{Parameter, Registered, TaskSpec};
    pub use crate::trigger::{Occurrence, RegisteredTrigger, TriggerOutput, TriggerSpec};
    pub use crate::unit::{
        run_gang, run_units, unit_entry, UnitRunning, UnitStart, Units, UnitsSpec,
    };
    pub use inventory;
}
