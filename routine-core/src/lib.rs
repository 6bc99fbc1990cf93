//! The runtime of [routine](https://docs.rs/routine): keys, entries, stores,
//! the registry and the engine.
//!
//! Users depend on the `routine` facade crate, which re-exports this crate and
//! the `#[task]` macro. The macro's output calls only public items and the
//! `#[doc(hidden)]` [`__private`] module.
//!
//! | module | idea |
//! |---|---|
//! | [`key`] | canonical SHA-256 of a call: name, version, arguments |
//! | [`codec`] | encoding of results (the only module naming bincode) |
//! | [`entry`] | the stored entry format: header, payload, checksums |
//! | [`store`] | the `Store` trait and its backends (files, memory) |
//! | [`registry`] | every task of the program, by name and version |
//! | [`invoke`] | running a task from encoded arguments, as a worker does |
//! | [`engine`] | the runtime: scope, lookup, single-flight, storing |
//! | [`lineage`] | runs, run records, the call tree of a run, where a result came from |
//! | [`trigger`] | functions run when a routine completes |
//! | [`redact`] | credentials kept out of printed URLs |
//! | `config` | (feature `cli`) settings from defaults, `routine.toml`, environment, flags |
//! | `cli` | (feature `cli`) the command line of `#[routine::main]` programs |
//! | `broker` | (feature `distributed`) Redis Streams between callers and workers |
//! | `worker` | (feature `distributed`) serving routines to other processes |
#![warn(missing_docs)]

mod blocking;
#[cfg(feature = "distributed")]
pub mod broker;
#[cfg(feature = "cli")]
pub mod cli;
pub mod codec;
#[cfg(feature = "cli")]
pub mod config;
pub mod engine;
pub mod entry;
mod error;
pub mod invoke;
pub mod key;
pub mod lineage;
pub mod redact;
pub mod registry;
pub mod store;
pub mod trigger;
#[cfg(feature = "distributed")]
pub mod worker;

pub use crate::engine::{spawn, CallOutcome, CallReport, Engine, EngineBuilder, Stats};
pub use crate::error::Error;
pub use crate::key::Key;
pub use crate::registry::{RoutineId, TaskSpec};
pub use crate::trigger::Completion;

/// What `#[task]` expands to calls; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::engine::{
        call, outcome_codec, run_blocking, KeyBuilder, Outcome, OutcomeCodec, Plain, TaskArgument,
    };
    pub use crate::invoke::{
        argument, ArgumentCodec, ArgumentsDecoder, ArgumentsError, Described, Finished, Invocation,
        Started, ViaDebug, ViaDisplay, ViaLocal, ViaName, ViaSend,
    };
    pub use crate::key::{Key, KeyError};
    pub use crate::registry::{Parameter, Registered, TaskSpec};
    pub use crate::trigger::{Occurrence, RegisteredTrigger, TriggerOutput, TriggerSpec};
    pub use inventory;

    /// What `#[main]` expands to calls.
    #[cfg(feature = "cli")]
    pub mod cli {
        pub use crate::cli::{main, MainOutput, Program};
    }
}
