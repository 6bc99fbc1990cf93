//! `#[routine::trigger(on = "train")]`: a function run when a routine
//! completes.
//!
//! ```text
//! async fn notify(done: Completion<Vec<Model>>) { <the user's body> }   kept as written
//! const _: () = {
//!     fn __routine_fire(occurrence: Occurrence) -> Pin<Box<dyn Future<..> + Send>> {
//!         Box::pin(async move { into_result(notify(occurrence.completion::<Vec<Model>>()?).await) })
//!     }
//!     static __ROUTINE_TRIGGER: TriggerSpec = TriggerSpec::__new("notify", "train", None, ..);
//!     inventory::submit!(RegisteredTrigger(&__ROUTINE_TRIGGER));
//! };
//! ```

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, LitBool, LitStr, PathArguments, ReturnType, Type};

use crate::attr::{check_name, check_version, option_name, private_module, set_crate, set_once};
use crate::item::{expand_function, hygienic, respanned};

struct TriggerAttr {
    name: LitStr,
    version: Option<LitStr>,
    hits: bool,
    failures: bool,
    krate: Option<syn::Path>,
}

const USAGE: &str =
    "write `#[routine::trigger(on = \"train\")]`, optionally with `hits = true` and `failures = true`";

pub(crate) fn trigger(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_function(
        item,
        "#[routine::trigger] goes on an `async fn` taking one `routine::Completion<T>`",
        parse_attr(attr),
        fallback,
        check,
        |attr, result_type, function| wrap(&attr, result_type, function),
    )
}

fn parse_attr(tokens: TokenStream) -> syn::Result<TriggerAttr> {
    let mut on: Option<LitStr> = None;
    let (mut hits, mut failures): (Option<LitBool>, Option<LitBool>) = (None, None);
    let mut krate: Option<syn::Path> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            set_crate(&meta, &mut krate)
        } else if meta.path.is_ident("on") {
            let expected = "a string literal: the routine's name, or name@version";
            set_once(&meta, &mut on, "on", expected)
        } else if meta.path.is_ident("hits") {
            set_once(&meta, &mut hits, "hits", "`true` or `false`")
        } else if meta.path.is_ident("failures") {
            set_once(&meta, &mut failures, "failures", "`true` or `false`")
        } else {
            let path = option_name(&meta);
            Err(meta.error(format_args!(
                "unknown trigger option `{path}`; a trigger takes `on`, `hits`, `failures` and `crate`"
            )))
        }
    });
    syn::parse::Parser::parse2(parser, tokens)?;
    let on = on.ok_or_else(|| {
        syn::Error::new(
            Span::call_site(),
            format!("missing `on`: name the routine; {USAGE}"),
        )
    })?;
    let text = on.value();
    let (name, version) = match text.split_once('@') {
        Some((name, version)) => (
            LitStr::new(name, on.span()),
            Some(LitStr::new(version, on.span())),
        ),
        None => (on.clone(), None),
    };
    check_name(&name)?;
    if let Some(version) = &version {
        check_version(version)?;
    }
    Ok(TriggerAttr {
        name,
        version,
        hits: hits.is_some_and(|b| b.value),
        failures: failures.is_some_and(|b| b.value),
        krate,
    })
}

/// What a trigger whose attribute is wrong expands with, beside the errors:
/// bound to its own name, so that it registers and compiles as usual.
fn fallback(function: &ItemFn) -> TriggerAttr {
    let span = function.sig.ident.span();
    TriggerAttr {
        name: LitStr::new(&function.sig.ident.to_string(), span),
        version: None,
        hits: false,
        failures: false,
        krate: None,
    }
}

/// Checks the function's shape; returns the `T` of its `Completion<T>`.
fn check(function: &ItemFn) -> syn::Result<Type> {
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "a trigger is an `async fn`: it runs as a task of its own, in an engine scope",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a trigger cannot be generic",
        ));
    }
    let inputs: Vec<&FnArg> = sig.inputs.iter().collect();
    let [FnArg::Typed(argument)] = inputs.as_slice() else {
        return Err(syn::Error::new(
            if inputs.is_empty() { sig.ident.span() } else { sig.inputs.span() },
            "a trigger takes exactly one argument, the completion: `done: routine::Completion<T>`, \
             where `T` is the routine's result type (the `Ok` type of a `Result`)",
        ));
    };
    completion_type(&argument.ty).ok_or_else(|| {
        syn::Error::new(
            argument.ty.span(),
            "a trigger's argument must be a `routine::Completion<T>`, where `T` is the routine's \
             result type (the `Ok` type of a `Result`)",
        )
    })
}

fn completion_type(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Completion" {
        return None;
    }
    let PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return None;
    };
    match arguments.args.iter().collect::<Vec<_>>().as_slice() {
        [GenericArgument::Type(inner)] => Some(inner.clone()),
        _ => None,
    }
}

fn wrap(attr: &TriggerAttr, result_type: Type, function: ItemFn) -> TokenStream {
    let private = private_module(attr.krate.as_ref());
    let routine_trigger = hygienic("__ROUTINE_TRIGGER");
    let routine_completion = hygienic("__routine_completion");
    let routine_fire = hygienic("__routine_fire");
    let routine_occurrence = hygienic("__routine_occurrence");
    let ident = &function.sig.ident;
    let trigger_name = ident.to_string();
    let name = &attr.name;
    let version = match &attr.version {
        Some(version) => quote!(::core::option::Option::Some(#version)),
        None => quote!(::core::option::Option::None),
    };
    let (hits, failures) = (attr.hits, attr.failures);
    // Spanned at the user's return type: a type a trigger cannot return is
    // reported there.
    let into_result = match &function.sig.output {
        ReturnType::Default => quote!(<() as #private::TriggerOutput>::into_result),
        ReturnType::Type(_, ty) => {
            let private = respanned(&private, ty.span());
            quote_spanned!(ty.span()=> <#ty as #private::TriggerOutput>::into_result)
        }
    };
    let decode =
        quote_spanned!(result_type.span()=> #routine_occurrence.completion::<#result_type>());
    quote! {
        #function

        const _: () = {
            fn #routine_fire(
                #routine_occurrence: #private::Occurrence,
            ) -> ::core::pin::Pin<::std::boxed::Box<dyn ::core::future::Future<Output = ::core::result::Result<(), ::std::string::String>> + ::core::marker::Send>> {
                ::std::boxed::Box::pin(async move {
                    let #routine_completion = #decode?;
                    #into_result(#ident(#routine_completion).await)
                })
            }
            static #routine_trigger: #private::TriggerSpec = #private::TriggerSpec::__new(
                #trigger_name,
                #name,
                #version,
                #hits,
                #failures,
                #routine_fire,
                ::core::file!(),
                ::core::line!(),
            );
            #private::inventory::submit! {
                #private::RegisteredTrigger(&#routine_trigger)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(attr: &str, item: &str) -> String {
        trigger(attr.parse().unwrap(), item.parse().unwrap()).to_string()
    }

    #[test]
    fn registers_the_function_and_keeps_it() {
        let out = expand(
            r#"on = "train@0.0.1", hits = true"#,
            "async fn notify(done: routine::Completion<Vec<u8>>) {}",
        );
        assert!(out.starts_with("async fn notify"), "{out}");
        assert!(out.contains("RegisteredTrigger"), "{out}");
        assert!(out.contains("\"train\""), "{out}");
        assert!(out.contains("\"0.0.1\""), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn rejects_what_cannot_be_a_trigger() {
        for (attr, item, message) in [
            ("", "async fn t(d: Completion<u8>) {}", "missing `on`"),
            (
                r#"on = "a b""#,
                "async fn t(d: Completion<u8>) {}",
                "not allowed",
            ),
            (
                r#"on = "a@1""#,
                "async fn t(d: Completion<u8>) {}",
                "semver",
            ),
            (
                r#"on = "a", every = true"#,
                "async fn t(d: Completion<u8>) {}",
                "unknown trigger option",
            ),
            (
                r#"on = "a""#,
                "fn t(d: Completion<u8>) {}",
                "is an `async fn`",
            ),
            (r#"on = "a""#, "async fn t() {}", "exactly one argument"),
            (
                r#"on = "a""#,
                "async fn t(d: u8) {}",
                "must be a `routine::Completion<T>`",
            ),
        ] {
            let out = expand(attr, item);
            assert!(out.contains("compile_error"), "{item}: {out}");
            assert!(out.contains(message), "{attr} {item}: {out}");
        }
    }
}
