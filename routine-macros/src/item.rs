//! What every attribute of this crate does with the function it goes on:
//! parse it, check it and the attribute's arguments (reporting every problem
//! at once), then expand it; on any error, emit the function as written
//! plus the errors, so that IDEs and the rest of the crate keep seeing it
//! while the attribute is being fixed.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::ItemFn;

use crate::attr::combine;

/// Expands an attribute on a function. `misplaced` is the error for an item
/// that is not a function; `attr` is the attribute's parsed arguments;
/// `check` reads the function's shape; `wrap` writes the expansion.
pub(crate) fn expand_function<A, S>(
    item: TokenStream,
    misplaced: &str,
    attr: syn::Result<A>,
    check: impl FnOnce(&ItemFn) -> syn::Result<S>,
    wrap: impl FnOnce(A, S, ItemFn) -> TokenStream,
) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => return with_original(item, syn::Error::new(Span::call_site(), misplaced)),
    };
    match (attr, check(&function)) {
        (Ok(attr), Ok(shape)) => wrap(attr, shape, function),
        (attr, shape) => {
            let mut errors = None;
            for error in [attr.err(), shape.err()].into_iter().flatten() {
                combine(&mut errors, error);
            }
            with_original(item, errors.expect("one of them failed"))
        }
    }
}

fn with_original(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}
