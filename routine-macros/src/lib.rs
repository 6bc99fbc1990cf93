//! The `#[task]` attribute of routine: syntax in, tokens out.
//!
//! Use it through the `routine` crate (`#[routine::task]`), which documents it
//! with examples. This crate only reads the user's function, reports what is
//! wrong with it at the offending token, and writes the wrapper that hands
//! each call to the runtime in `routine-core`.
//!
//! | module | concern |
//! |---|---|
//! | `attr` | the attribute's arguments: `name`, `version` |
//! | `signature` | what a task function may look like |
//! | `fingerprint` | the compile-time hash of the body |
//! | `item` | what every attribute does with its function, errors included |
//! | `expand` | the wrapper written around the body |
//! | `tracked` | `#[tracked]`: code a task calls, fingerprinted |
//! | `references` | what code refers to, by name |
//! | `program` | `#[main]`: the entry point wrapped in routine's command line |
//! | `trigger` | `#[trigger]`: a function run when a routine completes |

mod attr;
mod expand;
mod fingerprint;
mod item;
mod program;
mod references;
mod signature;
mod tracked;
mod trigger;
mod units;

use proc_macro::TokenStream;

/// Turns a free `async fn` or `fn` into a memoized, versioned task. See the
/// `routine` crate for the full documentation.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}

/// Runs a function when a routine completes. See the `routine` crate for
/// the full documentation.
#[proc_macro_attribute]
pub fn trigger(attr: TokenStream, item: TokenStream) -> TokenStream {
    trigger::trigger(attr.into(), item.into()).into()
}

/// Makes `async fn main()` a routine program with a command line. See the
/// `routine` crate for the full documentation.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    program::main(attr.into(), item.into()).into()
}

/// Fingerprints a function, constant, static or `impl` block that tasks
/// call. See the `routine` crate for the full documentation.
#[proc_macro_attribute]
pub fn tracked(attr: TokenStream, item: TokenStream) -> TokenStream {
    tracked::tracked(attr.into(), item.into()).into()
}
