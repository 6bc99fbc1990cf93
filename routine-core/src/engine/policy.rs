//! Where the routines awaited by a routine run.

use std::fmt;
use std::str::FromStr;

/// Where the routines awaited by a routine run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Everything runs in this process.
    #[default]
    Local,
    /// A routine started here (by `main` or, on a worker, by a request) runs
    /// here; the routines it awaits are sent to workers.
    SubRoutinesRemote,
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "local" => Ok(Policy::Local),
            "sub-routines-remote" | "remote" => Ok(Policy::SubRoutinesRemote),
            other => Err(format!(
                "unknown policy `{other}`: use `local` or `sub-routines-remote`"
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Local => "local",
            Policy::SubRoutinesRemote => "sub-routines-remote",
        })
    }
}
