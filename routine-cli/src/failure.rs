//! Why a command did not succeed, and the exit code that says so.

use std::io::Write;
use std::process::ExitCode;

use crate::config::ConfigError;
use crate::progress;

/// The routine or `main` failed.
pub(crate) const FAILED: u8 = 1;
/// The command line or the configuration is wrong, or a service it names
/// does not answer.
const USAGE: u8 = 2;
/// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

/// Why a command did not succeed: a message, perhaps how to fix it, and
/// its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
    hint: Option<String>,
}

impl Failure {
    /// The routine failed: exit code 1.
    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: FAILED,
            message: message.into(),
            hint: None,
        }
    }

    /// Stopped by Ctrl-C: exit code 130.
    pub(crate) fn interrupted(message: impl Into<String>) -> Failure {
        Failure {
            code: INTERRUPTED,
            message: message.into(),
            hint: None,
        }
    }

    /// Bad input or configuration: exit code 2.
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            message: message.into(),
            hint: None,
        }
    }
}

impl Failure {
    /// The same, saying how to fix it: printed on a `hint:` line.
    pub(crate) fn with_hint(mut self, hint: Option<&str>) -> Failure {
        self.hint = hint.map(str::to_owned);
        self
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::usage(e.to_string())
    }
}

/// Setting up an engine or a store fails on configuration: a store that
/// cannot be opened, a broker that does not answer.
impl From<routine_core::Error> for Failure {
    fn from(e: routine_core::Error) -> Self {
        match e {
            routine_core::Error::Store(e) => e.into(),
            e => Failure::usage(e.to_string()),
        }
    }
}

impl From<routine_core::store::StoreError> for Failure {
    fn from(e: routine_core::store::StoreError) -> Self {
        use routine_core::store::StoreError;
        let failure = match &e {
            // They say what they are: the store, and why.
            StoreError::ReadOnly { .. }
            | StoreError::Unusable { .. }
            | StoreError::OtherLayout { .. } => Failure::usage(e.to_string()),
            e => Failure::usage(format!("the store cannot be used: {e}")),
        };
        failure.with_hint(e.hint())
    }
}

/// Prints the failure and gives its exit code.
pub(crate) fn report(failure: Failure) -> ExitCode {
    progress::clear();
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {}", failure.message);
    if let Some(hint) = &failure.hint {
        let _ = writeln!(stderr, "hint: {hint}");
    }
    ExitCode::from(failure.code)
}
