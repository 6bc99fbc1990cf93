//! What `#[routine::main]` hands over ([`Program`]) and what its `main` may
//! return ([`MainOutput`]).

use std::fmt;
use std::process::ExitCode;

use crate::failure::FAILED;
use crate::progress;

/// What `#[routine::main]` knows of the program.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// The program's name: `project = ".."` or the binary's name.
    pub project: &'static str,
    /// The doc comment of `main`, shown by `--help`.
    pub about: &'static str,
    /// The crate's version.
    pub version: &'static str,
    /// The git commit the program was built from: `ROUTINE_GIT_COMMIT` at
    /// build time (a build script may set it), if set.
    pub commit: Option<&'static str>,
}

/// What `main` may return: `()`, `Result<(), E>` with a displayable `E`,
/// or an [`ExitCode`].
#[diagnostic::on_unimplemented(
    message = "`#[routine::main]` cannot end the program with a `{Self}`",
    note = "return `()`, `Result<(), E>` where `E` implements `Display` (such as `Box<dyn Error>`), or `std::process::ExitCode`"
)]
pub trait MainOutput {
    /// The process's exit code; an error is printed first.
    fn exit_code(self) -> ExitCode;
}

impl MainOutput for () {
    fn exit_code(self) -> ExitCode {
        ExitCode::SUCCESS
    }
}

impl MainOutput for ExitCode {
    fn exit_code(self) -> ExitCode {
        self
    }
}

impl<E: fmt::Display> MainOutput for Result<(), E> {
    fn exit_code(self) -> ExitCode {
        match self {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                progress::clear();
                eprintln!("error: {e}");
                ExitCode::from(FAILED)
            }
        }
    }
}
