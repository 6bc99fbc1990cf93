//! placeholder
pub use routine_core::*;
pub use routine_macros::task;
