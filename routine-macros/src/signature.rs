//! What a task function may look like, and what it declares.
//!
//! A task is a pure function of owned, serializable values: its arguments are
//! hashed into a key and may be sent to another process, its result is
//! stored. Every rule here follows from that, and each violation is reported
//! at the offending token with the reason.

use quote::ToTokens;
use syn::{FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Type};

use crate::attr::combine;

/// One argument: its name and type.
pub(crate) struct Argument {
    pub(crate) name: Ident,
    pub(crate) ty: Type,
    /// `#[routine(skip)]`: kept out of the key.
    pub(crate) skip: bool,
}

/// The checked signature.
pub(crate) struct TaskSignature {
    pub(crate) arguments: Vec<Argument>,
    /// The declared return type (`()` when none is written).
    pub(crate) output: Type,
    pub(crate) is_async: bool,
    /// Whether the return type is a `Result`, whose `Err` is not stored.
    pub(crate) returns_result: bool,
}

impl TaskSignature {
    pub(crate) fn check(item: &ItemFn) -> syn::Result<TaskSignature> {
        let sig = &item.sig;
        let mut errors: Option<syn::Error> = None;
        let mut fail = |tokens: &dyn ToTokens, message: &str| {
            combine(&mut errors, syn::Error::new_spanned(tokens, message))
        };

        if let Some(constness) = &sig.constness {
            fail(
                &constness,
                "a task cannot be a `const fn`: its calls go through the engine at run time",
            );
        }
        if let Some(unsafety) = &sig.unsafety {
            fail(
                &unsafety, "a task cannot be `unsafe`: it may be called from another process by name, where no caller can uphold its safety contract");
        }
        if let Some(abi) = &sig.abi {
            fail(&abi, "a task cannot have an `extern` ABI");
        }
        if let Some(variadic) = &sig.variadic {
            fail(&variadic, "a task cannot be variadic");
        }
        if !sig.generics.params.is_empty() {
            fail(
                &sig.generics.params,
                "a task cannot be generic: each name and version stores one concrete result type, and a worker must find one concrete function to run; write one task per type",
            );
        } else if let Some(clause) = &sig.generics.where_clause {
            fail(
                &clause,
                "a task cannot have a `where` clause: it has no generic parameters to constrain",
            );
        }

        let mut arguments = Vec::new();
        let mut option_errors = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(receiver) => fail(
                &receiver,
                    "a task cannot take `self`: it is a free function of its arguments, so that it can be keyed and run anywhere; pass the value as an ordinary argument",
                ),
                FnArg::Typed(typed) => {
                    let skip = match skipped(&typed.attrs) {
                        Ok(skip) => skip,
                        Err(error) => {
                            option_errors.push(error);
                            false
                        }
                    };
                    match &*typed.pat {
                        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                            arguments.push(Argument { name: pat.ident.clone(), ty: (*typed.ty).clone(), skip });
                        }
                        other => fail(
                &other,
                            "a task argument must be a plain name such as `data: Data`: patterns are not supported here; destructure inside the body instead",
                        ),
                    }
                    if !skip {
                        check_owned(&typed.ty, "argument", &mut fail);
                    }
                }
            }
        }

        let output = match &sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => {
                check_owned(ty, "result", &mut fail);
                (**ty).clone()
            }
        };
        let returns_result = is_result(&output);
        for error in option_errors {
            combine(&mut errors, error);
        }
        match errors {
            Some(errors) => Err(errors),
            None => Ok(TaskSignature {
                arguments,
                output,
                is_async: sig.asyncness.is_some(),
                returns_result,
            }),
        }
    }
}

/// Whether a parameter's attributes hold `#[routine(skip)]`; any other
/// `#[routine(..)]` is an error at its token.
fn skipped(attrs: &[syn::Attribute]) -> syn::Result<bool> {
    let mut skip = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("routine")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                skip = true;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown parameter option: `#[routine(skip)]` is the only one (it keeps the parameter out of the key)",
                ))
            }
        })?;
    }
    Ok(skip)
}

/// The function with its parameters' `#[routine(..)]` attributes removed,
/// which only this macro reads.
pub(crate) fn without_parameter_attributes(mut item: ItemFn) -> ItemFn {
    for input in &mut item.sig.inputs {
        if let FnArg::Typed(typed) = input {
            typed.attrs.retain(|a| !a.path().is_ident("routine"));
        }
    }
    item
}

/// Rejects borrowed and opaque types anywhere inside `ty`: a task's values
/// are hashed, stored and possibly sent to another process, so they must be
/// owned, nameable and serializable.
fn check_owned(ty: &Type, role: &str, fail: &mut impl FnMut(&dyn ToTokens, &str)) {
    match ty {
        Type::Reference(reference) => fail(
                reference,
            &format!(
                "a task {role} cannot be a reference: task values are hashed, stored and may be sent to another process, so they are taken by value; use an owned type (`String` for `&str`, `Vec<T>` for `&[T]`) or an `Arc<T>`"
            ),
        ),
        Type::ImplTrait(opaque) => fail(
                &opaque,
            &format!(
                "a task {role} cannot be `impl Trait`: the engine must know the concrete type to store and decode it; name the type"
            ),
        ),
        Type::Paren(inner) => check_owned(&inner.elem, role, fail),
        Type::Group(inner) => check_owned(&inner.elem, role, fail),
        Type::Array(array) => check_owned(&array.elem, role, fail),
        Type::Slice(slice) => check_owned(&slice.elem, role, fail),
        Type::Tuple(tuple) => tuple.elems.iter().for_each(|elem| check_owned(elem, role, fail)),
        Type::Path(path) => {
            for segment in &path.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        if let GenericArgument::Type(inner) = arg {
                            check_owned(inner, role, fail);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// `Result<T, E>` under any path (`std::result::Result`, `io::Result<T>`,
/// an alias named `Result`): its `Err` is returned to the caller, not stored.
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Result"),
        Type::Paren(inner) => is_result(&inner.elem),
        Type::Group(inner) => is_result(&inner.elem),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_type(text: &str) -> bool {
        is_result(&syn::parse_str(text).unwrap())
    }

    #[test]
    fn recognises_results_under_any_path() {
        assert!(result_type("Result<u8, String>"));
        assert!(result_type("std::io::Result<u8>"));
        assert!(result_type("anyhow::Result<Vec<u8>>"));
        assert!(!result_type("Option<Result<u8, u8>>"));
        assert!(!result_type("Vec<u8>"));
    }

    #[test]
    fn finds_references_deep_inside_types() {
        let item: ItemFn =
            syn::parse_str("async fn f(x: Vec<(u8, [&'static str; 2])>) {}").unwrap();
        let error = TaskSignature::check(&item)
            .err()
            .expect("a nested reference is refused");
        assert!(error.to_string().contains("cannot be a reference"));
    }
}
