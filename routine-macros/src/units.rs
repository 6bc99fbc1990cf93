//! Multi-unit tasks. A function of its unit,
//!
//! ```text
//! #[task(name = "psort", version = "1.0.0", units = 4)]
//! async fn psort(unit: routine::Unit<In, Out>) { <body> }
//! ```
//!
//! is written as the task of its input that runs the gang, and is then
//! expanded as any task (key, store, options, registry), with two more
//! items in the task's wrapper, beside its `TaskSpec` (which names the
//! entry, so that a worker can run one unit):
//!
//! ```text
//! async fn psort(input: In) -> Out {
//!     <private>::run_gang(&__ROUTINE_TASK, input, __routine_unit).await
//! }
//! async fn __routine_unit(unit: routine::Unit<In, Out>) { <body> }
//! fn __routine_unit_entry(start: UnitStart) -> UnitRunning { <private>::unit_entry(start, __routine_unit) }
//! ```
//!
//! `In` and `Out` keep the user's tokens, so that a type lacking serde's
//! traits is reported at the user's type, as for any task.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, PathArguments, ReturnType, Type};

use crate::attr::{private_module, TaskAttr};
use crate::item::hygienic;

/// A multi-unit task written as the task of its input.
pub(crate) struct OfInput {
    /// The task of its input.
    pub(crate) item: TokenStream,
    /// The unit's function and its entry for workers, for the wrapper.
    pub(crate) unit_items: TokenStream,
    /// The function as the user wrote it: what its fingerprint covers.
    pub(crate) written: ItemFn,
}

/// The item the task attribute expands: a function of its unit written as
/// the task of its input (`Ok(Some)`); any other function as it is
/// (`Ok(None)`). `Err` holds what to emit instead: the function as
/// written, with the errors.
pub(crate) fn task_of_input(
    item: &TokenStream,
    attr: &syn::Result<TaskAttr>,
) -> Result<Option<OfInput>, TokenStream> {
    let item = item.clone();
    let Ok(function) = syn::parse2::<ItemFn>(item.clone()) else {
        // Not a function: the attribute says so.
        return Ok(None);
    };
    let of_a_unit = unit_parameter(&function).is_some();
    match attr {
        Ok(attr) => match (attr.units, of_a_unit) {
            (Some(_), _) => {}
            (None, false) => return Ok(None),
            (None, true) => {
                let error = syn::Error::new(
                    function.sig.inputs.span(),
                    "a task of a `routine::Unit` runs several units: say how many with \
                     `units = N` (or `units = MIN..=MAX`)",
                );
                return Err(with_error(item, error));
            }
        },
        // The attribute's errors are reported by the expansion; a function
        // of a unit still becomes a task of its input, so that its callers
        // see the signature they expect.
        Err(_) if of_a_unit => {}
        Err(_) => return Ok(None),
    }
    let private = private_module(attr.as_ref().ok().and_then(|a| a.krate.as_ref()));
    rewrite(function, &private)
        .map(Some)
        .map_err(|error| with_error(item, error))
}

fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}

/// The function's one parameter, if its type is `Unit<In, Out>` (by any
/// path): its pattern and the two types.
fn unit_parameter(function: &ItemFn) -> Option<(&syn::PatType, &Type, &Type)> {
    let mut inputs = function.sig.inputs.iter();
    let (Some(FnArg::Typed(parameter)), None) = (inputs.next(), inputs.next()) else {
        return None;
    };
    let Type::Path(path) = &*parameter.ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Unit" {
        return None;
    }
    let PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return None;
    };
    let mut types = arguments.args.iter().filter_map(|a| match a {
        syn::GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(input), Some(output), None) => Some((parameter, input, output)),
        _ => None,
    }
}

fn rewrite(function: ItemFn, private: &TokenStream) -> syn::Result<OfInput> {
    let mut errors: Option<syn::Error> = None;
    let mut fail = |error: syn::Error| crate::attr::combine(&mut errors, error);
    if function.sig.asyncness.is_none() {
        fail(syn::Error::new(
            function.sig.fn_token.span,
            "a multi-unit task is an `async fn`: its units await each other's messages",
        ));
    }
    if let ReturnType::Type(_, ty) = &function.sig.output {
        let unit = matches!(&**ty, Type::Tuple(tuple) if tuple.elems.is_empty());
        if !unit {
            fail(syn::Error::new(
                ty.span(),
                "a multi-unit task returns nothing: its rank 0 gives the call's output with \
                 `unit.send_output(..)`",
            ));
        }
    }
    let Some((parameter, input, output)) = unit_parameter(&function) else {
        let span = match function.sig.inputs.is_empty() {
            true => function.sig.ident.span(),
            false => function.sig.inputs.span(),
        };
        fail(syn::Error::new(
            span,
            "a multi-unit task takes one parameter, its unit: `unit: routine::Unit<In, Out>` \
             (one input, one output: wrap several in a struct)",
        ));
        return Err(errors.expect("failed above"));
    };
    if let Some(errors) = errors {
        return Err(errors);
    }
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &function;
    let ident = &sig.ident;
    let unit_body = hygienic("__routine_unit");
    let unit_entry = hygienic("__routine_unit_entry");
    let task = hygienic("__ROUTINE_TASK");
    let start = hygienic("__routine_start");
    let input_name = syn::Ident::new("input", Span::call_site());
    let run = quote_spanned!(sig.ident.span()=>
        #private::run_gang(&#task, #input_name, #unit_body).await
    );
    let item = quote! {
        #(#attrs)*
        #vis async fn #ident(#input_name: #input) -> #output {
            #run
        }
    };
    let unit_items = quote! {
        async fn #unit_body(#parameter) #block
        fn #unit_entry(#start: #private::UnitStart) -> #private::UnitRunning {
            #private::unit_entry(#start, #unit_body)
        }
    };
    Ok(OfInput {
        item,
        unit_items,
        written: function.clone(),
    })
}

/// Whether `function` is written as a function of its unit.
#[cfg(test)]
fn is_unit_function(function: &ItemFn) -> bool {
    unit_parameter(function).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_parameter_is_found_by_any_path() {
        for text in [
            "async fn f(unit: routine::Unit<Vec<u64>, u64>) {}",
            "async fn f(u: Unit<(u8, u8), String>) {}",
        ] {
            assert!(is_unit_function(&syn::parse_str(text).unwrap()), "{text}");
        }
        for text in [
            "async fn f(unit: Unit<u8>) {}",
            "async fn f(a: u8, unit: Unit<u8, u8>) {}",
            "async fn f(x: Vec<u8>) {}",
        ] {
            assert!(!is_unit_function(&syn::parse_str(text).unwrap()), "{text}");
        }
    }
}
