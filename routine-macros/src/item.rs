//! What every attribute of this crate does with the function it goes on:
//! parse it, check it and the attribute's arguments (reporting every problem
//! at once), then expand it. When only the attribute is wrong, the function
//! is still expanded, with a fallback configuration, beside the errors (as
//! tokio's attributes do): its callers keep the signature they expect, and
//! one mistake does not cascade into an error at every call. When the
//! function itself is wrong, it is emitted as written with the errors.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::ItemFn;

use crate::attr::combine;

/// Expands an attribute on a function. `misplaced` is the error for an item
/// that is not a function; `attr` is the attribute's parsed arguments, and
/// `fallback` the configuration to expand with when they are wrong;
/// `check` reads the function's shape; `wrap` writes the expansion.
pub(crate) fn expand_function<A, S>(
    item: TokenStream,
    misplaced: &str,
    attr: syn::Result<A>,
    fallback: impl FnOnce(&ItemFn) -> A,
    check: impl FnOnce(&ItemFn) -> syn::Result<S>,
    wrap: impl FnOnce(A, S, ItemFn) -> TokenStream,
) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => return with_original(item, syn::Error::new(Span::call_site(), misplaced)),
    };
    match (attr, check(&function)) {
        (Ok(attr), Ok(shape)) => wrap(attr, shape, function),
        (Err(error), Ok(shape)) => {
            let attr = fallback(&function);
            let expanded = wrap(attr, shape, function);
            let error = error.to_compile_error();
            quote!(#expanded #error)
        }
        (attr, Err(shape)) => {
            let mut errors = attr.err();
            combine(&mut errors, shape);
            // Without the parameters' `#[routine(..)]`, which only the
            // macro reads: the compiler would report them too.
            let function = crate::signature::without_parameter_attributes(function);
            with_original(
                function.into_token_stream(),
                errors.expect("the shape failed"),
            )
        }
    }
}

fn with_original(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}

/// A name the expansion defines: hygienic (`Span::mixed_site`), so that it
/// can neither capture nor shadow a local name of the user's code.
pub(crate) fn hygienic(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// `tokens` with every token spanned at `span`: a path into the runtime
/// placed in a call spanned at the user's type, so that an unmet bound is
/// reported at that type.
pub(crate) fn respanned(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut inner = Group::new(group.delimiter(), respanned(&group.stream(), span));
                inner.set_span(span);
                TokenTree::Group(inner)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}
