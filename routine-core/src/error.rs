//! The crate's error type for setting an engine up.

use crate::registry::RegistryError;
use crate::store::StoreError;

/// Why an engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The program's tasks are inconsistent (for example a duplicate name and
    /// version).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The configuration asks for what this program cannot do.
    #[error("{0}")]
    Config(String),
}
