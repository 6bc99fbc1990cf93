//! The wrapper written around a task body.
//!
//! ```text
//! #[doc..] pub fn train(data: Data, epochs: u32) -> impl Future<Output = R> {
//!     async fn __routine_body(data: Data, epochs: u32) -> R { <the user's body> }
//!     static __ROUTINE_TASK: TaskSpec = ..;           name, version, fingerprint
//!     inventory::submit!(Registered(&__ROUTINE_TASK));
//!     <type assertions, spanned at the user's types>
//!     call(&__ROUTINE_TASK, (data, epochs), |(data, epochs)| async move { .. })
//! }
//! ```
//! The wrapper is a plain `fn` returning a future so that it captures the
//! current engine when the future is created, not when it is first polled:
//! `tokio::spawn(train(..))` inside a scope works.

use proc_macro2::{Delimiter, Ident, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::ItemFn;

use crate::attr::TaskAttr;
use crate::fingerprint;
use crate::item::expand_function;
use crate::signature::TaskSignature;

pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_function(
        item,
        "#[routine::task] goes on a free `async fn` or `fn`",
        TaskAttr::parse(attr),
        TaskSignature::check,
        |attr, signature, function| wrap(&attr, &signature, function),
    )
}

fn wrap(attr: &TaskAttr, signature: &TaskSignature, function: ItemFn) -> TokenStream {
    let fingerprint = fingerprint::of(&function);
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let ident = &sig.ident;
    let body_ident = format_ident!("__routine_body");
    let (name, version) = (&attr.name, &attr.version);
    let names: Vec<&Ident> = signature.arguments.iter().map(|a| &a.name).collect();
    let types: Vec<&syn::Type> = signature.arguments.iter().map(|a| &a.ty).collect();
    let output = &signature.output;
    let rendered = render_signature(ident, signature);

    let mut inner_sig = sig.clone();
    inner_sig.ident = body_ident.clone();

    // Every bound on the user's types is checked by a call spanned at that
    // type: a type lacking serde support is reported there, and only there
    // (`__private::call` itself has no bound on them).
    let output_span = match &sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => sig.ident.span(),
    };
    let outcome = if signature.returns_result {
        quote_spanned!(output_span=> #output)
    } else {
        quote_spanned!(output_span=> ::routine::__private::Plain<#output>)
    };
    let codec = quote_spanned!(output_span=> ::routine::__private::outcome_codec::<#outcome>());
    let parameter_names = names.iter().map(|name| name.to_string());
    let parameter_types = types.iter().map(|ty| render_tokens(ty.to_token_stream()));
    let parameter_count = names.len();
    let ttl = match attr.ttl {
        Some(ttl) => {
            let (secs, nanos) = (ttl.as_secs(), ttl.subsec_nanos());
            quote!(::core::option::Option::Some(::core::time::Duration::new(#secs, #nanos)))
        }
        None => quote!(::core::option::Option::None),
    };
    let argument_codecs = types
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> ::routine::__private::argument::<#ty>()));
    let indices: Vec<syn::Index> = (0..names.len()).map(syn::Index::from).collect();
    // A `Result` task's `Err`, described with the best of `Display`,
    // `Debug` or its type name: for workers, `run` and triggers.
    let (describe_failure, report, codec) = if signature.returns_result {
        (
            quote! {
                fn __routine_failure(__routine_output: &#output) -> ::core::option::Option<::std::string::String> {
                    match __routine_output {
                        ::core::result::Result::Ok(_) => ::core::option::Option::None,
                        #[allow(clippy::needless_borrow)]
                        ::core::result::Result::Err(__routine_error) => {
                            #[allow(unused_imports)]
                            use ::routine::__private::{ViaDebug as _, ViaDisplay as _, ViaName as _};
                            ::core::option::Option::Some((&&&::routine::__private::Described(__routine_error)).describe())
                        }
                    }
                }
            },
            quote! {
                match __routine_failure(&__routine_output) {
                    ::core::option::Option::None => ::core::result::Result::Ok(()),
                    ::core::option::Option::Some(__routine_error) => ::core::result::Result::Err(__routine_error),
                }
            },
            quote!(#codec.describing_failures(__routine_failure)),
        )
    } else {
        (quote!(), quote!(::core::result::Result::Ok(())), codec)
    };
    let wrap_result = |call: TokenStream| match signature.returns_result {
        true => call,
        false => quote!(::routine::__private::Plain(#call)),
    };
    let run = if signature.is_async {
        let result = wrap_result(quote!(#body_ident(#(#names),*).await));
        quote!(async move { #result })
    } else {
        let result = wrap_result(quote!(#body_ident(#(#names),*)));
        quote!(::routine::__private::run_blocking(move || #result))
    };

    let fingerprint_bytes = fingerprint.iter();

    quote! {
        #(#attrs)*
        #vis fn #ident(#(#names: #types),*) -> impl ::core::future::Future<Output = #output> {
            #inner_sig #block

            // Every bound on the argument and result types is checked here,
            // once.
            const __ROUTINE_ARGUMENTS: (#(::routine::__private::ArgumentCodec<#types>,)*) = (#(#argument_codecs,)*);
            #describe_failure
            const __ROUTINE_OUTCOME: ::routine::__private::OutcomeCodec<#outcome, #output> = #codec;
            static __ROUTINE_PARAMETERS: [::routine::__private::Parameter; #parameter_count] = [
                #(::routine::__private::Parameter::__new(
                    #parameter_names,
                    #parameter_types,
                    __ROUTINE_ARGUMENTS.#indices.from_json,
                    __ROUTINE_ARGUMENTS.#indices.to_json,
                ),)*
            ];

            /// Runs the task for a worker or a command line: stored (and
            /// given as JSON if asked), or the message of its `Err`.
            async fn __routine_run(
                #(#names: #types,)*
                __routine_json: bool,
            ) -> ::core::result::Result<::routine::__private::Finished, ::std::string::String> {
                let __routine_output = #ident(#(#names),*).await;
                let __routine_reported: ::core::result::Result<(), ::std::string::String> = #report;
                __routine_reported.map(|()| match __routine_json {
                    true => (__ROUTINE_OUTCOME.output_json)(&__routine_output),
                    false => ::routine::__private::Finished::Stored,
                })
            }

            /// Runs the task from encoded arguments: what a worker calls.
            fn __routine_invoke(
                __routine_encoded: &[u8],
                __routine_json: bool,
            ) -> ::core::result::Result<::routine::__private::Invocation, ::routine::__private::ArgumentsError> {
                let mut __routine_decoder = ::routine::__private::ArgumentsDecoder::new(__routine_encoded);
                #(let #names = (__ROUTINE_ARGUMENTS.#indices.decode)(&mut __routine_decoder)?;)*
                __routine_decoder.finish()?;
                #[allow(unused_imports)]
                use ::routine::__private::{ViaLocal as _, ViaSend as _};
                // `Send` routines run on any runtime thread (see `Started`).
                #[allow(clippy::needless_borrow)]
                let __routine_invocation = (&&::routine::__private::Started::new(__routine_run(#(#names,)* __routine_json))).invocation();
                ::core::result::Result::Ok(__routine_invocation)
            }

            static __ROUTINE_TASK: ::routine::__private::TaskSpec = ::routine::__private::TaskSpec::__new(
                #name,
                #version,
                [#(#fingerprint_bytes),*],
                #rendered,
                ::core::module_path!(),
                ::core::file!(),
                ::core::line!(),
                #ttl,
                &__ROUTINE_PARAMETERS,
                __routine_invoke,
                __ROUTINE_OUTCOME.describe_stored,
            );
            ::routine::__private::inventory::submit! {
                ::routine::__private::Registered(&__ROUTINE_TASK)
            }
            ::routine::__private::call(
                &__ROUTINE_TASK,
                (#(#names,)*),
                |(#(#names,)*): &(#(#types,)*), __routine_key: &mut ::routine::__private::KeyBuilder| {
                    #((__ROUTINE_ARGUMENTS.#indices.add)(#names, __routine_key)?;)*
                    ::core::result::Result::Ok(())
                },
                &__ROUTINE_OUTCOME,
                |(#(#names,)*)| #run,
            )
        }
    }
}

/// The signature as a person would write it:
/// `async fn train(data: Data, epochs: u32) -> Vec<Model>`.
fn render_signature(ident: &Ident, signature: &TaskSignature) -> String {
    let arguments: Vec<String> = signature
        .arguments
        .iter()
        .map(|a| format!("{}: {}", a.name, render_tokens(a.ty.to_token_stream())))
        .collect();
    let prefix = if signature.is_async { "async fn" } else { "fn" };
    format!(
        "{prefix} {ident}({}) -> {}",
        arguments.join(", "),
        render_tokens(signature.output.to_token_stream())
    )
}

/// Joins tokens with spaces only where Rust needs or people expect them.
fn render_tokens(tokens: TokenStream) -> String {
    let mut out = String::new();
    let mut previous_word = false;
    for token in tokens {
        let word = matches!(token, TokenTree::Ident(_) | TokenTree::Literal(_));
        match &token {
            TokenTree::Group(group) => {
                let inner = render_tokens(group.stream());
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                out.push_str(&inner);
                out.push_str(close);
            }
            TokenTree::Punct(punct) => {
                let c = punct.as_char();
                if c == '-' || (c == '=' && out.ends_with(' ')) {
                    // `->` and `=` stand apart: `dyn Fn(u8) -> u8`.
                    if !out.ends_with(' ') && !out.is_empty() {
                        out.push(' ');
                    }
                }
                out.push(c);
                if matches!(c, ',' | ';' | '>')
                    && punct.spacing() == proc_macro2::Spacing::Alone
                    && c != '>'
                {
                    out.push(' ');
                }
                if c == '>' && out.ends_with("->") {
                    out.push(' ');
                }
            }
            _ => {
                if previous_word {
                    out.push(' ');
                }
                out.push_str(&token.to_string());
            }
        }
        previous_word = word;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(text: &str) -> String {
        render_tokens(text.parse().unwrap())
    }

    #[test]
    fn types_render_as_people_write_them() {
        assert_eq!(rendered("Vec < HyperParams >"), "Vec<HyperParams>");
        assert_eq!(
            rendered("HashMap < String , Vec < u8 > >"),
            "HashMap<String, Vec<u8>>"
        );
        assert_eq!(
            rendered("std :: io :: Result < usize >"),
            "std::io::Result<usize>"
        );
        assert_eq!(rendered("(u32 , String)"), "(u32, String)");
        assert_eq!(rendered("[u8 ; 32]"), "[u8; 32]");
        assert_eq!(
            rendered("Box < dyn Fn (u8) -> u8 + Send >"),
            "Box<dyn Fn(u8) -> u8+Send>"
        );
    }

    #[test]
    fn errors_keep_the_original_item() {
        let item: TokenStream = "async fn f(x: &str) -> usize { x.len() }".parse().unwrap();
        let out = task("name = \"f\", version = \"1.0.0\"".parse().unwrap(), item).to_string();
        assert!(out.starts_with("async fn f"), "{out}");
        assert!(out.contains("compile_error"), "{out}");
    }
}
